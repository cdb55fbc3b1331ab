"""bnlab.BatchRenorm (Ioffe 2017): BN when r and d cannot move, the clipped closed form, r and d as
constants in the backward pass, and the point of it all: training outputs that depend less on the
rest of the batch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from bn_testing import forward_backward, max_err, random_bn_input, share_affine
from torch import nn

import bnlab.layers as L
from bnlab.reference import batchnorm_backward, batchnorm_forward

TOL = 1e-10  # float64 everywhere in this file


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """The tensors here are small: a second thread costs more than it gives, and on a loaded
    machine much more (a 0.2 s test took 12 s)."""
    torch.set_num_threads(1)

# (ours, torch's, an input shape both accept)
PAIRS = [
    (L.BatchRenorm1d, nn.BatchNorm1d, (6, 3)),
    (L.BatchRenorm1d, nn.BatchNorm1d, (4, 3, 5)),
    (L.BatchRenorm2d, nn.BatchNorm2d, (4, 3, 5, 4)),
    (L.BatchRenorm, nn.BatchNorm3d, (2, 3, 3, 4, 2)),
]
PAIR_IDS = [f"{o.__name__}-{len(s)}d" for o, _, s in PAIRS]


def make_pair(ours_cls, torch_cls, num_features, seed=0, affine=True, momentum=0.1, **renorm_kwargs):
    """BatchRenorm and torch's BN in float64 with the same random weight and bias."""
    ours = ours_cls(num_features, momentum=momentum, affine=affine, dtype=torch.float64, **renorm_kwargs)
    theirs = torch_cls(num_features, momentum=momentum, affine=affine, dtype=torch.float64)
    if affine:
        share_affine((ours, theirs), num_features, seed)
    return ours, theirs


def assert_same_running_stats(ours, theirs, what=""):
    for name in ("running_mean", "running_var"):
        err = max_err(getattr(ours, name), getattr(theirs, name))
        assert err <= TOL, f"{what} {name} differs by {err:.3g}"
    assert ours.num_batches_tracked.item() == theirs.num_batches_tracked.item(), what


def channel_view(x):
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


# ----------------------------------------------------------------------------- BN as a special case
@pytest.mark.parametrize("kwargs", [dict(r_max=1.0, d_max=0.0), dict(warmup_steps=10)],
                         ids=["r_max=1,d_max=0", "warmup"])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["m0.1", "cumulative"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS, ids=PAIR_IDS)
def test_equals_torch_batchnorm_when_r_and_d_cannot_move(ours_cls, torch_cls, shape, affine, momentum, kwargs):
    """r_max=1, d_max=0 (or during warm-up) is plain BN: same outputs, gradients, running stats and
    counter as torch.nn.BatchNorm over several training steps, and the same eval output afterwards."""
    ours, theirs = make_pair(ours_cls, torch_cls, shape[1], affine=affine, momentum=momentum, **kwargs)
    for step in range(4):
        # each batch from a different distribution, so the running stats lag the batch's
        x = random_bn_input(shape, seed=step)
        grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(100 + step), dtype=torch.float64)
        (o1, g1), (o2, g2) = forward_backward(ours, x, grad_out), forward_backward(theirs, x, grad_out)
        assert max_err(o1, o2) <= TOL, f"step {step}: output differs by {max_err(o1, o2):.3g}"
        for name, a, b in zip(("input", "weight", "bias"), g1, g2):
            assert max_err(a, b) <= TOL, f"step {step}: grad {name} differs by {max_err(a, b):.3g}"
        assert_same_running_stats(ours, theirs, f"step {step}")
    ours.eval(), theirs.eval()
    x = random_bn_input(shape, seed=50)
    grad_out = torch.randn(shape, dtype=torch.float64)
    (o1, g1), (o2, g2) = forward_backward(ours, x, grad_out), forward_backward(theirs, x, grad_out)
    assert max_err(o1, o2) <= TOL
    assert all(max_err(a, b) <= TOL for a, b in zip(g1, g2))
    assert_same_running_stats(ours, theirs, "eval")


def test_renormalization_starts_after_warmup():
    """With warmup_steps=2 the first two steps are BN's, the third is not (the running stats still
    lag the batch, so r and d are far from 1 and 0)."""
    shape = (8, 3, 4, 4)
    ours, theirs = make_pair(L.BatchRenorm2d, nn.BatchNorm2d, 3, warmup_steps=2)
    for step in range(3):
        x = random_bn_input(shape, seed=step)
        with torch.no_grad():
            err = max_err(ours(x), theirs(x))
        if step < 2:
            assert err <= TOL, f"step {step} (warm-up) differs from BN by {err:.3g}"
        else:
            assert err > 1e-2, f"step {step} (after warm-up) still equals BN ({err:.3g})"
    assert_same_running_stats(ours, theirs, "running stats are BN's either way")


# ----------------------------------------------------------------------------- eval and state_dict
@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS, ids=PAIR_IDS)
def test_bn_state_dict_loads_and_eval_equals_bn_eval(ours_cls, torch_cls, shape):
    """A trained torch BN's state_dict loads strictly (same keys in the same order); eval output and
    input gradient are then BN's. And back: BatchRenorm's state_dict loads into torch's BN."""
    bn, _ = make_pair(torch_cls, torch_cls, shape[1], seed=1)
    with torch.no_grad():
        for i in range(3):
            bn(random_bn_input(shape, seed=10 + i))
    ours = ours_cls(shape[1], dtype=torch.float64)
    assert list(ours.state_dict()) == list(bn.state_dict())
    ours.load_state_dict(bn.state_dict())
    ours.eval(), bn.eval()
    x, grad_out = random_bn_input(shape, seed=99), torch.randn(shape, dtype=torch.float64)
    (o1, g1), (o2, g2) = forward_backward(ours, x, grad_out), forward_backward(bn, x, grad_out)
    assert max_err(o1, o2) <= TOL
    assert all(max_err(a, b) <= TOL for a, b in zip(g1, g2))
    assert bn.running_mean.abs().max() > 0.1  # the stats compared were not the fresh zeros/ones

    back = torch_cls(shape[1], dtype=torch.float64)
    back.load_state_dict(ours.state_dict())
    back.eval()
    with torch.no_grad():
        assert max_err(back(x), o1) <= TOL


def test_eval_does_not_update_running_stats():
    m = L.BatchRenorm2d(3, dtype=torch.float64).eval()
    m(random_bn_input((4, 3, 2, 2)))
    assert m.num_batches_tracked.item() == 0
    assert torch.equal(m.running_mean, torch.zeros(3, dtype=torch.float64))


# ----------------------------------------------------------------------------- the closed form
def numpy_renorm(x, running_mean, running_var, gamma, beta, eps, r_max, d_max, momentum):
    """Independent NumPy forward of batch renormalization: (y, r, d, raw r, raw d, new running stats)."""
    axes = (0,) + tuple(range(2, x.ndim))
    view = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes)
    var = ((x - mu.reshape(view)) ** 2).mean(axis=axes)
    sigma_b = np.sqrt(var + eps)
    sigma = np.sqrt(running_var + eps)
    r_raw, d_raw = sigma_b / sigma, (mu - running_mean) / sigma
    r, d = np.clip(r_raw, 1 / r_max, r_max), np.clip(d_raw, -d_max, d_max)
    x_hat = (x - mu.reshape(view)) / sigma_b.reshape(view) * r.reshape(view) + d.reshape(view)
    y = gamma.reshape(view) * x_hat + beta.reshape(view)
    new_mean = (1 - momentum) * running_mean + momentum * mu
    new_var = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    return y, r, d, r_raw, d_raw, new_mean, new_var


def far_off_running_stats(x):
    """Running stats (per channel) that make r and d clip in both directions in some channels and
    stay inside the limits in one (channel 0), given the batch x with 5 channels."""
    xn = x.numpy()
    axes = (0,) + tuple(range(2, xn.ndim))
    mu, var = xn.mean(axis=axes), xn.var(axis=axes)
    # channel: 0 inside, 1 r and d high, 2 r and d low, 3 r high, d low, 4 r low, d high
    var_factor = np.array([1.5, 1e-3, 1e3, 1e-2, 1e2])   # running_var = var * factor: r ~ 1/sqrt(factor)
    d_target = np.array([0.5, 40.0, -40.0, -30.0, 30.0])  # (mu - running_mean) / sigma before clipping
    running_var = var * var_factor
    running_mean = mu - d_target * np.sqrt(running_var)
    return running_mean, running_var


@pytest.mark.parametrize("shape", [(16, 5), (4, 5, 3, 3)], ids=["1d", "2d"])
def test_clipped_r_and_d_match_numpy_closed_form(shape):
    """With running statistics far off, r and d are clipped to [1/r_max, r_max] and [-d_max, d_max]:
    output and running-statistics update equal an independent NumPy computation that uses the old
    running statistics for r and d."""
    cls = L.BatchRenorm1d if len(shape) == 2 else L.BatchRenorm2d
    r_max, d_max, momentum, eps = 3.0, 5.0, 0.3, 1e-3
    x = random_bn_input(shape, seed=3)
    running_mean, running_var = far_off_running_stats(x)
    m = cls(5, eps=eps, momentum=momentum, r_max=r_max, d_max=d_max, dtype=torch.float64)
    g = np.random.default_rng(0)
    gamma, beta = g.normal(size=5) + 1, g.normal(size=5)
    with torch.no_grad():
        m.running_mean.copy_(torch.from_numpy(running_mean))
        m.running_var.copy_(torch.from_numpy(running_var))
        m.weight.copy_(torch.from_numpy(gamma))
        m.bias.copy_(torch.from_numpy(beta))
        out = m(x)
    y, r, d, r_raw, d_raw, new_mean, new_var = numpy_renorm(
        x.numpy(), running_mean, running_var, gamma, beta, eps, r_max, d_max, momentum)
    # the case is what it claims to be: both clip limits of r and d are hit, and channel 0 is free
    assert r_raw[1] > r_max and r_raw[2] < 1 / r_max and r_raw[3] > r_max and r_raw[4] < 1 / r_max
    assert d_raw[1] > d_max and d_raw[2] < -d_max and d_raw[3] < -d_max and d_raw[4] > d_max
    assert 1 / r_max < r_raw[0] < r_max and abs(d_raw[0]) < d_max and abs(r_raw[0] - 1) > 0.1
    assert max_err(out, torch.from_numpy(y)) <= TOL
    assert max_err(m.running_mean, torch.from_numpy(new_mean)) <= TOL
    assert max_err(m.running_var, torch.from_numpy(new_var)) <= TOL
    assert m.num_batches_tracked.item() == 1


def test_unclipped_training_output_is_the_eval_output():
    """Inside the limits, x_hat = (x - mu_B)/sigma_B * sigma_B/sigma + (mu_B - running_mean)/sigma
    = (x - running_mean)/sigma: training gives exactly what eval gives with the same (old) running
    statistics, whatever else is in the batch."""
    shape = (4, 3, 2, 2)
    m = L.BatchRenorm2d(3, r_max=1e6, d_max=1e6, dtype=torch.float64)
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
        m.running_var.copy_(torch.tensor([0.2, 30.0, 4.0], dtype=torch.float64))
        m.weight.copy_(torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64))
        m.bias.copy_(torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64))
    x = random_bn_input(shape, seed=4)
    evaluated = copy.deepcopy(m).eval()(x)
    trained = m(x)
    assert max_err(trained, evaluated) <= TOL
    # and it is not BN's output: the batch statistics alone would give something else
    bn = nn.BatchNorm2d(3, dtype=torch.float64)
    bn.load_state_dict(m.state_dict())
    assert max_err(trained, bn(x)) > 0.1


# ----------------------------------------------------------------------------- gradients
def functional_of(x_shape, running_mean, running_var, r_max, d_max, eps=1e-5):
    """batch_renorm(x, weight, bias) in training mode on copies of the running stats, so that
    gradcheck's many calls all see the same old statistics."""
    def f(x, weight, bias):
        return L.batch_renorm(x, running_mean.clone(), running_var.clone(), weight, bias,
                              training=True, momentum=0.1, eps=eps, r_max=r_max, d_max=d_max)
    return f


@pytest.mark.parametrize("regime", ["clipped", "r_max=1,d_max=0"])
def test_gradcheck_where_r_and_d_are_constant(regime):
    """Where r and d are locally constant (clipped, or pinned by r_max=1, d_max=0), treating them
    as constants is the exact derivative, and gradcheck (finite differences) must agree."""
    shape = (4, 5, 2, 2)
    x = random_bn_input(shape, seed=5)
    if regime == "clipped":
        rm, rv = far_off_running_stats(x)
        rm, rv = torch.from_numpy(rm)[1:], torch.from_numpy(rv)[1:]  # channels 1-4: all clipped
        x = x[:, 1:].contiguous()
        r_max, d_max = 3.0, 5.0
    else:
        rm, rv = torch.randn(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64) + 0.5
        r_max, d_max = 1.0, 0.0
    c = x.shape[1]
    weight = (torch.randn(c, dtype=torch.float64) + 1).requires_grad_(True)
    bias = torch.randn(c, dtype=torch.float64).requires_grad_(True)
    f = functional_of(x.shape, rm, rv, r_max, d_max)
    assert torch.autograd.gradcheck(f, (x.clone().requires_grad_(True), weight, bias), eps=1e-6, atol=1e-7)


def test_gradients_treat_r_and_d_as_constants():
    """Inside the clip limits: dL/dx = r * (BN's dL/dx), with BN's closed form from the NumPy
    reference, and dL/dgamma, dL/dbeta from x_hat; also equal to autograd through a torch
    re-implementation with r and d detached, and clearly not the full derivative (r and d live)."""
    shape = (6, 3, 2, 2)
    x = random_bn_input(shape, seed=6)
    dims, view = [0, 2, 3], channel_view(x)
    mu, var = x.mean(dims), x.var(dims, unbiased=False)
    # running stats near, but not at, the batch's: r and d inside the limits and far from 1, 0
    rm = mu + torch.tensor([0.5, -0.8, 0.3], dtype=torch.float64) * var.sqrt()
    rv = var * torch.tensor([2.0, 0.4, 1.3], dtype=torch.float64)
    gamma = torch.tensor([1.3, -0.7, 2.0], dtype=torch.float64)
    beta = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    eps = 1e-5

    m = L.BatchRenorm2d(3, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        m.running_mean.copy_(rm), m.running_var.copy_(rv), m.weight.copy_(gamma), m.bias.copy_(beta)
    out, (dx, dgamma, dbeta) = forward_backward(m, x, grad_out)

    # closed form: r * BN's backward (NumPy), with r and x_hat from the NumPy forward
    _, r, d, r_raw, d_raw, _, _ = numpy_renorm(x.numpy(), rm.numpy(), rv.numpy(), gamma.numpy(),
                                               beta.numpy(), eps, 3.0, 5.0, 0.1)
    assert np.allclose(r, r_raw) and np.allclose(d, d_raw) and np.abs(r - 1).min() > 0.1
    _, cache = batchnorm_forward(x.numpy(), gamma.numpy(), beta.numpy(), {"mode": "train", "eps": eps})
    dx_bn, _, dbeta_ref = batchnorm_backward(grad_out.numpy(), cache)
    x_hat = (out - beta.view(view)) / gamma.view(view)
    assert max_err(dx, torch.from_numpy(dx_bn * r.reshape(view))) <= TOL
    assert max_err(dgamma, (grad_out * x_hat).sum(dims)) <= TOL
    assert max_err(dbeta, torch.from_numpy(dbeta_ref)) <= TOL

    def reimplementation(x, detach):
        mu_b = x.mean(dims)
        sigma_b = torch.sqrt(x.var(dims, unbiased=False) + eps)
        sigma = torch.sqrt(rv + eps)
        r_t = (sigma_b / sigma).clamp(1 / 3, 3)
        d_t = ((mu_b - rm) / sigma).clamp(-5, 5)
        if detach:
            r_t, d_t = r_t.detach(), d_t.detach()
        x_hat = (x - mu_b.view(view)) / sigma_b.view(view) * r_t.view(view) + d_t.view(view)
        return gamma.view(view) * x_hat + beta.view(view)

    grads = {}
    for detach in (True, False):
        xi = x.clone().requires_grad_(True)
        y = reimplementation(xi, detach)
        assert max_err(y, out) <= TOL
        y.backward(grad_out)
        grads[detach] = xi.grad
    assert max_err(dx, grads[True]) <= TOL
    assert max_err(dx, grads[False]) > 1e-2, "gradient equals the full derivative: r and d were not constants"


# ----------------------------------------------------------------------------- why it exists
def test_training_output_of_a_pair_is_close_to_eval_output_once_running_stats_converged():
    """The paper's point: with running statistics that have converged on the data, an example's
    training-mode output in a batch of 2 is close to its eval-mode output under BatchRenorm, while
    BN's is not (BN maps any pair to about -1 and +1 in each feature)."""
    torch.manual_seed(0)
    c = 4
    mean = torch.tensor([3.0, -2.0, 0.0, 10.0], dtype=torch.float64)
    std = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=torch.float64)

    def batch(n):
        return torch.randn(n, c, dtype=torch.float64) * std + mean

    renorm = L.BatchRenorm1d(c, dtype=torch.float64)
    bn = nn.BatchNorm1d(c, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(300):
            x = batch(32)
            renorm(x), bn(x)
    assert max_err(renorm.running_mean, mean) < 0.3 * float(std.max())  # converged
    assert max_err(renorm.running_var.sqrt() / std, torch.ones(c, dtype=torch.float64)) < 0.15
    frozen = {}
    for name, m in (("renorm", renorm), ("bn", bn)):
        m.momentum = 0.0  # keep the converged statistics fixed while measuring
        frozen[name] = (m, copy.deepcopy(m).eval())
    gaps = {}
    with torch.no_grad():
        pairs = [batch(2) for _ in range(400)]
        for name, (train_mode, eval_mode) in frozen.items():
            gaps[name] = float(torch.stack([(train_mode(p) - eval_mode(p)).abs().mean() for p in pairs]).mean())
    assert gaps["bn"] > 0.5, gaps
    assert gaps["renorm"] < 0.2 * gaps["bn"], gaps


# ----------------------------------------------------------------------------- errors and plumbing
@pytest.mark.parametrize("kwargs,match", [
    (dict(r_max=0.5), r"r_max must be a number >= 1"),
    (dict(r_max=float("nan")), r"r_max must be a number >= 1"),
    (dict(d_max=-1.0), r"d_max must be a number >= 0"),
    (dict(eps=-1e-5), r"eps must be >= 0"),
    (dict(momentum=1.5), r"momentum must be in \[0, 1\]"),
    (dict(warmup_steps=-1), r"warmup_steps must be an int >= 0"),
    (dict(warmup_steps=2.5), r"warmup_steps must be an int >= 0"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.BatchRenorm2d(3, **kwargs)


def test_bad_clip_limits_set_later_are_rejected_at_forward():
    """r_max and d_max may be changed between steps (the paper's schedule), but not to nonsense."""
    m = L.BatchRenorm1d(3)
    m.r_max = 0.2
    with pytest.raises(ValueError, match="r_max must be a number >= 1"):
        m(torch.randn(4, 3))


@pytest.mark.parametrize("cls,bad_shape,match", [
    (L.BatchRenorm2d, (2, 3, 4), "expected 4D input, got 3D"),
    (L.BatchRenorm1d, (2, 3, 4, 4), "expected 2D or 3D input, got 4D"),
    (L.BatchRenorm, (3,), "got 1D"),
    (L.BatchRenorm2d, (2, 4, 3, 3), r"expected 3 channels.*\(2, 4, 3, 3\)"),
    (L.BatchRenorm1d, (1, 3), "more than 1 value per channel"),
])
def test_bad_input_is_rejected_and_leaves_the_module_unchanged(cls, bad_shape, match):
    m = cls(3)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(bad_shape))
    assert m.num_batches_tracked.item() == 0 and torch.equal(m.running_mean, torch.zeros(3))


def test_functional_needs_running_stats():
    with pytest.raises(ValueError, match="needs running_mean and running_var"):
        L.batch_renorm(torch.randn(4, 3), None, None, training=True)


def test_repr_names_the_clip_limits():
    assert repr(L.BatchRenorm2d(3, r_max=2.0, d_max=1.0, warmup_steps=5)) == (
        "BatchRenorm2d(3, eps=1e-05, momentum=0.1, affine=True, r_max=2.0, d_max=1.0, warmup_steps=5)")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_mixed_precision_returns_the_input_dtype(training):
    """bfloat16 input with float32 parameters and statistics (autocast's case): bfloat16 out, as
    torch's BN, close to the float32 result; the running statistics stay float32."""
    m = L.BatchRenorm2d(3).train(training)
    with torch.no_grad():
        m.running_mean.fill_(0.5), m.running_var.fill_(2.0), m.weight.fill_(1.5)
    reference = copy.deepcopy(m)
    x = random_bn_input((4, 3, 4, 4), dtype=torch.float32, seed=12).to(torch.bfloat16)
    with torch.no_grad():
        # the reference sees the same (rounded) values; only the output's rounding may differ
        out, expected = m(x), reference(x.float())
    assert out.dtype == torch.bfloat16 and m.running_mean.dtype == torch.float32
    assert max_err(out, expected) <= 2**-8 * float(expected.abs().max())
