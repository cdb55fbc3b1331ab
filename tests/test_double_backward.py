"""Second derivatives of bnlab.batch_norm (create_graph=True): gradgradcheck on both kernel paths, and
Hessian-vector products against torch.nn.functional.batch_norm's, for lesson 09's curvature probes.

BatchNormFunction's fast backward treats its saved mu, sigma and x - mu as constants; with
create_graph=True it recomputes them from x in plain ops, so the graph of dL/dx reaches x.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bn_testing import assert_close, random_bn_input
from torch import nn

import bnlab
from bnlab import functional
from bnlab.models import conv_net, mlp

needs_compiler = pytest.mark.skipif(functional._compiler_missing() is not None,
                                    reason=f"torch.compile unavailable: {functional._compiler_missing()}")
SHAPES = [(5, 3), (3, 2, 2, 3)]  # (N, C) and (N, C, H, W)


def _force_path(monkeypatch, path):
    """These shapes take the few-ops path; SMALL_INPUT = 0 sends them to the blocked one, and a tiny
    BLOCK_BYTES cuts them into several blocks (one row of dim 0 each), as large inputs are."""
    if path == "large":
        monkeypatch.setattr(functional, "SMALL_INPUT", 0)
        monkeypatch.setattr(functional, "BLOCK_BYTES", 1)


def _case(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = random_bn_input(shape, seed=seed, mean_range=2.0, log10_scale=0.5)
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    b = torch.randn(c, generator=g, dtype=torch.float64)
    rm = torch.randn(c, generator=g, dtype=torch.float64)
    rv = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    return x, w, b, rm, rv


@pytest.mark.parametrize("path", ["small", "large"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("shape", SHAPES, ids=["2d", "4d"])
def test_gradgradcheck(monkeypatch, path, training, affine, shape):
    """torch.autograd.gradgradcheck (float64 finite differences of the first derivatives, with
    respect to the input, weight, bias and the incoming gradient)."""
    _force_path(monkeypatch, path)
    x, w, b, rm, rv = _case(shape)
    leaves = (x, w, b) if affine else (x,)
    leaves = tuple(t.clone().requires_grad_() for t in leaves)

    def fn(x, w=None, b=None):
        # fresh copies: gradgradcheck calls fn many times and training updates the stats in place
        return bnlab.batch_norm(x, rm.clone(), rv.clone(), w, b, training=training, eps=1e-5)

    assert torch.autograd.gradgradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def _loss(y, r):
    # nonlinear in y, so the Hessian has both the loss's curvature and BN's own
    return (torch.sin(y) * r).sum() + (y * y).mean()


def _hvp(bn, x, w, b, r, vectors):
    """(dL/d(x, w, b), H v) of L = _loss(bn(x, w, b), r), H the Hessian in (x, w, b) and v given."""
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    grads = torch.autograd.grad(_loss(bn(*leaves), r), leaves, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vectors))
    return [g.detach() for g in grads], torch.autograd.grad(dot, leaves)


@pytest.mark.parametrize("path", ["small", "large"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 3, 4)], ids=["2d", "4d"])
def test_hessian_vector_products_match_torch(monkeypatch, path, training, shape):
    _force_path(monkeypatch, path)
    x, w, b, rm, rv = _case(shape, seed=1)
    g = torch.Generator().manual_seed(2)
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    vectors = [torch.randn(t.shape, generator=g, dtype=torch.float64) for t in (x, w, b)]
    runs = {}
    for name, fn in (("ours", bnlab.batch_norm), ("torch", F.batch_norm)):
        stats = (rm.clone(), rv.clone())
        runs[name] = _hvp(lambda x, w, b: fn(x, *stats, w, b, training=training, momentum=0.1, eps=1e-5),
                          x, w, b, r, vectors)
    for which, ours, ref in zip(("grad", "hvp"), runs["ours"], runs["torch"]):
        for name, o, t in zip(("input", "weight", "bias"), ours, ref):
            assert_close(o, t, torch.float64, f"{which} {name}")
    # not trivially equal: the product has a part through BN's statistics (zero in eval)
    assert float(runs["ours"][1][0].abs().max()) > 1e-3


@pytest.mark.parametrize("path", ["small", "large"])
def test_graph_backward_gives_the_fast_backwards_gradients(monkeypatch, path):
    """create_graph=True runs the other backward: its first derivatives are the fast kernel's (float64
    and float32 far from zero, where the residual-mean correction matters)."""
    _force_path(monkeypatch, path)
    for dtype, offset in ((torch.float64, 0.0), (torch.float32, 1e3)):
        x, w, b, rm, rv = (t.to(dtype) for t in _case((4, 3, 2, 3), seed=3))
        x = x + offset
        dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=dtype)
        grads = {}
        for create_graph in (False, True):
            leaves = [t.clone().requires_grad_() for t in (x, w, b)]
            out = bnlab.batch_norm(leaves[0], rm.clone(), rv.clone(), *leaves[1:], training=True)
            grads[create_graph] = torch.autograd.grad(out, leaves, dy, create_graph=create_graph)
            # (dL/dbias = sum dy has no graph with a constant dy)
            assert grads[create_graph][0].requires_grad == create_graph
        tol = 1e-12 if dtype == torch.float64 else 1e-4
        for name, fast, graph in zip(("input", "weight", "bias"), grads[False], grads[True]):
            scale = max(1.0, float(fast.abs().max()))
            assert float((fast - graph.detach()).abs().max()) <= tol * scale, f"{dtype} {name}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", ["small", "large"])
def test_mixed_precision_double_backward_reaches_the_input(monkeypatch, path, dtype):
    """float16/bfloat16 input with float32 parameters: the graph runs through the float32 copy back
    to the half-precision input, and its HVP is float64's within the precision of the input."""
    _force_path(monkeypatch, path)
    x, w, b, rm, rv = _case((4, 3, 2, 2), seed=5)
    x = x.to(dtype)
    r = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    v = [torch.ones_like(x, dtype=torch.float64), torch.ones_like(w), torch.ones_like(b)]

    leaves = [x.clone().requires_grad_(), w.float().requires_grad_(), b.float().requires_grad_()]
    out = bnlab.batch_norm(leaves[0], rm.float(), rv.float(), *leaves[1:], training=True)
    assert out.dtype == dtype
    grads = torch.autograd.grad(_loss(out.double(), r), leaves, create_graph=True)
    assert grads[0].dtype == dtype and grads[1].dtype == torch.float32
    hv = torch.autograd.grad(sum((gr.double() * vv).sum() for gr, vv in zip(grads, v)), leaves)
    # float64 from the same (rounded) input
    _, ref = _hvp(lambda x, w, b: bnlab.batch_norm(x, rm.clone(), rv.clone(), w, b, training=True),
                  x.double(), w, b, r, v)
    for name, o, t in zip(("input", "weight", "bias"), hv, ref):
        err = float((o.double() - t).abs().max())
        assert err <= 0.05 * max(1.0, float(t.abs().max())), f"{name}: {err}"


def _flat_hessian(model, x, target):
    """The full Hessian of the cross-entropy in all parameters, column by column from HVPs."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), target)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([gr.reshape(-1) for gr in grads])
    columns = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat[i], params, retain_graph=True)])
               for i in range(flat.numel())]
    return torch.stack(columns)


@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_network_hessian_matches_torch_bn(net, training):
    """Lesson 09's use: the Hessian of a small net's loss (bnlab.layers.BatchNorm1d/2d inside) in its
    parameters equals the one with torch's BN layers, and so do its top eigenvalue and eigenvector."""
    torch.manual_seed(0)
    if net == "mlp":
        build = lambda norm: mlp(3, (4,), 3, norm=norm, activation="tanh").double()  # noqa: E731
        x = torch.randn(8, 3, dtype=torch.float64)
    else:
        build = lambda norm: conv_net(1, 3, widths=(2,), norm=norm, image_size=4).double()  # noqa: E731
        x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    ours, ref = build("bn"), build("torch_bn")
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():  # BN parameters away from 1 and 0, and running stats not the identity map
        for a, t in zip(ours.modules(), ref.modules()):
            if isinstance(a, bnlab.BatchNorm):
                for src, dst in ((a.weight, t.weight), (a.bias, t.bias), (a.running_mean, t.running_mean),
                                 (a.running_var, t.running_var)):
                    src.copy_(torch.rand_like(src) + 0.5 if src is a.running_var else torch.randn_like(src))
                    dst.copy_(src)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in ref.modules())
    target = torch.arange(x.shape[0]) % 3
    ours.train(training), ref.train(training)
    h_ours, h_ref = _flat_hessian(ours, x, target), _flat_hessian(ref, x, target)
    assert_close(h_ours, h_ref, torch.float64, "Hessian")
    assert_close(h_ours, h_ours.T, torch.float64, "symmetry")
    top_ours, top_ref = torch.linalg.eigvalsh(h_ours)[-1], torch.linalg.eigvalsh(h_ref)[-1]
    assert abs(float(top_ours - top_ref)) <= 1e-10 and float(top_ours) > 1e-3


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_compiled_formula_run_eagerly_is_twice_differentiable(training):
    """What batch_norm_compiled runs past dynamo's recompile limit: the formula, eagerly."""
    x, w, b, rm, rv = _case((3, 2, 2, 3))
    leaves = tuple(t.clone().requires_grad_() for t in (x, w, b))

    def fn(x, w, b):
        return functional._batch_norm_formula(x, rm.clone(), rv.clone(), w, b, training, 0.1, 1e-5)

    assert torch.autograd.gradgradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_compiled_without_a_compiler_falls_back_to_the_twice_differentiable_kernel(monkeypatch):
    monkeypatch.setattr(functional, "_compiled_formula", None)
    monkeypatch.setattr(functional, "_compiler_missing", lambda: "no C++ compiler (test)")
    x, w, b, rm, rv = _case((5, 3))
    leaves = tuple(t.clone().requires_grad_() for t in (x, w, b))
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        bnlab.batch_norm_compiled(x, None, None, training=True)
    assert torch.autograd.gradgradcheck(
        lambda x, w, b: bnlab.batch_norm_compiled(x, rm.clone(), rv.clone(), w, b, training=True),
        leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@needs_compiler
def test_compiled_refuses_double_backward_by_name():
    """Compiled, the first derivatives with create_graph=True are right; differentiating them raises
    aot_autograd's RuntimeError (torch.compile has no double backward) instead of a wrong answer."""
    x, w, b, rm, rv = _case((4, 3, 5, 5))
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    out = bnlab.batch_norm_compiled(leaves[0], rm.clone(), rv.clone(), *leaves[1:], training=True)
    r = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    grads = torch.autograd.grad(_loss(out, r), leaves, create_graph=True)
    ref, _ = _hvp(lambda x, w, b: F.batch_norm(x, rm.clone(), rv.clone(), w, b, training=True),
                  x, w, b, r, [torch.zeros_like(t) for t in (x, w, b)])
    for name, o, t in zip(("input", "weight", "bias"), grads, ref):
        assert_close(o.detach(), t, torch.float64, name)
    with pytest.raises(RuntimeError, match="does not currently support double backward"):
        torch.autograd.grad(sum(gr.sum() for gr in grads), leaves)
