"""Shared helpers for the bnlab unit tests: hypothesis strategies for BN input shapes, random data, tolerances.

A plain module (not conftest.py) so tests can import it by name: `from bn_testing import ...`.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from hypothesis import strategies as st
from torch import nn

# torch >= 2.10 has BatchNorm(..., *, bias=True). Ours has it with every torch; comparisons of
# bias=False against torch's module need a torch that has it too.
TORCH_BN_HAS_BIAS = "bias" in inspect.signature(nn.BatchNorm2d.__init__).parameters
needs_torch_bn_bias = pytest.mark.skipif(not TORCH_BN_HAS_BIAS,
                                         reason="torch's BatchNorm(bias=...) needs torch >= 2.10")


@st.composite
def bn_shapes(draw, training: bool = True, min_dims: int = 2, max_dims: int = 5):
    """(N, C, *spatial) with N in 1..8, C in 1..6, 0 to 3 spatial sizes in 1..5.

    With training=True every channel gets at least 2 values (N >= 2 or a spatial size > 1),
    since batch statistics of a single value are undefined (torch raises).
    """
    ndim = draw(st.integers(min_dims, max_dims))
    n = draw(st.integers(1, 8))
    c = draw(st.integers(1, 6))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim - 2, max_size=ndim - 2)))
    if training and n * math.prod(spatial) < 2:
        n = draw(st.integers(2, 8))
    return (n, c) + spatial


def random_bn_input(shape, dtype=torch.float64, seed=0, mean_range=5.0, log10_scale=1.0):
    """Data with a random mean in [-mean_range, mean_range] and a random scale in
    [10**-log10_scale, 10**log10_scale] per channel, so the normalization has work to do."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    mean = (torch.rand(c, generator=g, dtype=torch.float64) * 2 - 1) * mean_range
    scale = 10.0 ** ((torch.rand(c, generator=g, dtype=torch.float64) * 2 - 1) * log10_scale)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * scale.view(view) + mean.view(view)
    return x.to(dtype)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def assert_close(ours: torch.Tensor, ref: torch.Tensor, dtype, what: str = "", slack: float = 0.0) -> None:
    """float64: max |ours - ref| <= 1e-10 (values here are O(1) to O(100)).
    float32: max |ours - ref| <= 1e-5 * max(1, max |ref|), i.e. 1e-5 absolute on
    standard-normal-scale data and relative where the values are larger (sums, large gradients).
    slack is added to the tolerance (e.g. the reference's own known error)."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    err = max_err(ours, ref)
    if dtype == torch.float64:
        tol = 1e-10
    else:
        tol = 1e-5 * max(1.0, float(ref.detach().abs().max()) if ref.numel() else 1.0)
    tol += slack
    assert err <= tol, f"{what}: max |difference| {err:.3g} > {tol:.3g}"


def share_affine(modules, num_features: int, seed: int = 0) -> None:
    """Give every module the same random weight (around 1) and bias, in place, so that two
    implementations can be compared with parameters that are not the trivial 1 and 0."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(num_features, generator=g, dtype=torch.float64) + 1
    b = torch.randn(num_features, generator=g, dtype=torch.float64)
    with torch.no_grad():
        for m in modules:
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.copy_(b)


def forward_backward(module, x, grad_out, fn=None):
    """The output of fn(x) (default: module(x)) and the gradients of <output, grad_out> w.r.t. x, then
    module's weight and bias (when it has them); the module's parameter gradients are reset after."""
    x = x.clone().requires_grad_(True)
    out = (fn or module)(x)
    out.backward(grad_out)
    params = [p for p in (module.weight, module.bias) if p is not None]
    grads = [x.grad] + [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out.detach(), grads
