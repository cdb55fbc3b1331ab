"""bnlab.batch_norm_compiled (torch.compile of bnlab's own formula) against torch.nn.functional.batch_norm.

One tiny shape, float64, so each test compiles once or twice (seconds, not minutes).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from bn_testing import assert_close, random_bn_input

import bnlab
from bnlab import functional

needs_compiler = pytest.mark.skipif(functional._compiler_missing() is not None,
                                    reason=f"torch.compile unavailable: {functional._compiler_missing()}")
SHAPE = (4, 3, 5, 5)


def _step(fn, x, w, b, rm, rv, training, grad_out):
    x, w, b = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    out = fn(x, rm, rv, w, b, training=training, momentum=0.3, eps=1e-5)
    out.backward(grad_out)
    return out.detach(), x.grad, w.grad, b.grad


def _compare(training, steps):
    g = torch.Generator().manual_seed(0)
    c = SHAPE[1]
    w = torch.randn(c, generator=g, dtype=torch.float64) + 1
    b = torch.randn(c, generator=g, dtype=torch.float64)
    stats = {who: (torch.full((c,), 0.5, dtype=torch.float64), torch.full((c,), 2.0, dtype=torch.float64))
             for who in ("ours", "torch")}
    for step in range(steps):
        x = random_bn_input(SHAPE, seed=step)
        grad_out = torch.randn(SHAPE, generator=g, dtype=torch.float64)
        ours = _step(bnlab.batch_norm_compiled, x, w, b, *stats["ours"], training, grad_out)
        ref = _step(F.batch_norm, x, w, b, *stats["torch"], training, grad_out)
        for name, o, r in zip(("output", "grad input", "grad weight", "grad bias"), ours, ref):
            assert_close(o, r, torch.float64, f"step {step} {name}")
        for name, o, r in zip(("running_mean", "running_var"), stats["ours"], stats["torch"]):
            assert_close(o, r, torch.float64, f"step {step} {name}")
    return stats["ours"]


@needs_compiler
def test_compiled_training_matches_torch():
    """Two training steps: output, grads of input/weight/bias and the in-place running stats."""
    rm, rv = _compare(training=True, steps=2)
    assert float((rm - 0.5).abs().max()) > 1e-3  # the running stats moved, in the caller's tensors


@needs_compiler
def test_compiled_eval_matches_torch():
    """Eval: normalized with the running stats, which stay as they were."""
    rm, rv = _compare(training=False, steps=1)
    assert torch.equal(rm, torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.equal(rv, torch.full((3,), 2.0, dtype=torch.float64))


def test_compiled_rejects_bad_input_before_compiling():
    with pytest.raises(ValueError, match=r"weight has shape \(4,\).*3 channels"):
        bnlab.batch_norm_compiled(torch.randn(4, 3), None, None, torch.ones(4), training=True)


def test_without_a_compiler_it_warns_and_runs_eager(monkeypatch):
    """No C++ compiler (or no torch.compile): a RuntimeWarning naming why, then batch_norm's results."""
    monkeypatch.setattr(functional, "_compiled_formula", None)
    monkeypatch.setattr(functional, "_compiler_missing", lambda: "no C++ compiler (test)")
    x = random_bn_input((6, 3, 2), seed=3)
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        out = bnlab.batch_norm_compiled(x, None, None, training=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        again = bnlab.batch_norm_compiled(x, None, None, training=True)
    assert_close(out, F.batch_norm(x, None, None, training=True), torch.float64, "output")
    assert_close(again, out, torch.float64, "second call")
