"""bnlab.RangeBatchNorm (Banner et al. 2018): the range correction C(n) against tables and
simulation, the closed form, closeness to BN on large Gaussian batches, running statistics,
gradients, eval and state_dict, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bn_testing import max_err, random_bn_input
from torch import nn

import bnlab.layers as L

TOL = 1e-10  # float64


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """The tensors here are small: a second thread costs more than it gives, and on a loaded
    machine much more (a 0.2 s test took 12 s)."""
    torch.set_num_threads(1)


def gaussian_ranges(n, reps, seed=0):
    """max - min of reps independent draws of n standard normal values."""
    x = torch.randn(reps, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.amax(1) - x.amin(1)


# ----------------------------------------------------------------------------- C(n)
def test_expected_range_matches_closed_forms_and_tables():
    """d2(2) = 2/sqrt(pi) and d2(3) = 3/sqrt(pi) exactly; larger n against the published
    quality-control table of d2 (3 decimals); d2(1) = 0."""
    assert abs(L.expected_gaussian_range(2) - 2 / math.sqrt(math.pi)) < 1e-12
    assert abs(L.expected_gaussian_range(3) - 3 / math.sqrt(math.pi)) < 1e-12
    table = {4: 2.059, 5: 2.326, 6: 2.534, 10: 3.078, 15: 3.472, 20: 3.735, 25: 3.931}
    for n, d2 in table.items():
        assert abs(L.expected_gaussian_range(n) - d2) < 6e-4, n
    assert L.expected_gaussian_range(1) == 0.0


@pytest.mark.parametrize("n", [7, 1000, 20000])
def test_expected_range_matches_simulation(n):
    ranges = gaussian_ranges(n, reps=max(200, 2_000_000 // n), seed=n)
    standard_error = float(ranges.std()) / math.sqrt(len(ranges))
    assert abs(float(ranges.mean()) - L.expected_gaussian_range(n)) < 4 * standard_error


@pytest.mark.parametrize("n,paper_ratio", [(2, 0.96), (10, 1.43), (100, 1.65), (10_000, 1.80)])
def test_paper_constant_estimates_more_than_sigma(n, paper_ratio):
    """What the docstrings claim, by simulation: with C(n) = 1/sqrt(2 ln n), E[C(n) range] / sigma
    is 0.96 at n=2 and then grows towards 2; with the Gaussian correction it is 1 at every n."""
    ranges = gaussian_ranges(n, reps=max(400, 2_000_000 // n), seed=1)
    se = float(ranges.std()) / math.sqrt(len(ranges))
    assert abs(float(ranges.mean()) / math.sqrt(2 * math.log(n)) - paper_ratio) < 0.005 + 4 * se
    assert L.range_correction(n, "paper") == pytest.approx(1 / math.sqrt(2 * math.log(n)), rel=1e-15)
    assert abs(float(ranges.mean()) * L.range_correction(n) - 1) < 4 * se * L.range_correction(n)


# ----------------------------------------------------------------------------- closed form
@pytest.mark.parametrize("correction", ["gaussian", "paper"])
def test_training_forward_and_running_update_match_numpy(correction):
    """n = 3 values per channel, where the Gaussian C(3) = sqrt(pi)/3 is known in closed form:
    output and running statistics equal an independent NumPy computation."""
    x = random_bn_input((3, 4), seed=2)
    eps, momentum = 1e-3, 0.25
    m = L.RangeBatchNorm1d(4, eps=eps, momentum=momentum, dtype=torch.float64, correction=correction)
    g = np.random.default_rng(1)
    gamma, beta = g.normal(size=4) + 1, g.normal(size=4)
    rm, rv = g.normal(size=4), g.uniform(0.5, 2, size=4)
    with torch.no_grad():
        for name, v in (("weight", gamma), ("bias", beta), ("running_mean", rm), ("running_var", rv)):
            getattr(m, name).copy_(torch.from_numpy(v))
        out = m(x)
    xn = x.numpy()
    c3 = math.sqrt(math.pi) / 3 if correction == "gaussian" else 1 / math.sqrt(2 * math.log(3))
    mu = xn.mean(0)
    s = c3 * (xn.max(0) - xn.min(0))
    y = gamma * (xn - mu) / np.sqrt(s**2 + eps) + beta
    assert max_err(out, torch.from_numpy(y)) <= TOL
    assert max_err(m.running_mean, torch.from_numpy((1 - momentum) * rm + momentum * mu)) <= TOL
    assert max_err(m.running_var, torch.from_numpy((1 - momentum) * rv + momentum * s**2)) <= TOL
    assert m.num_batches_tracked.item() == 1


@pytest.mark.parametrize("correction,c2", [("gaussian", math.sqrt(math.pi) / 2),
                                            ("paper", 1 / math.sqrt(2 * math.log(2)))])
def test_two_values_per_channel_give_plus_minus_one_over_2_c2(correction, c2):
    """With n = 2, x - mu = +-(x1 - x2)/2 and range = |x1 - x2|: x_hat = +-1/(2 C(2)) whatever
    the values (eps = 0), as BN gives +-1."""
    x = random_bn_input((2, 5), seed=3)
    m = L.RangeBatchNorm1d(5, eps=0.0, affine=False, dtype=torch.float64, correction=correction)
    out = m(x)
    expected = torch.sign(x - x.mean(0)) / (2 * c2)
    assert max_err(out, expected) <= TOL


# ----------------------------------------------------------------------------- against BN
def test_output_is_close_to_batchnorm_on_large_gaussian_batches():
    """n = 64*16*16 = 16384 values per channel: the range-based scale is within a few percent of
    the standard deviation, so the output is BN's up to that factor. (The range is a noisy
    estimate, about 5.5% per channel at this n; averaged over 32 channels, about 1%.)"""
    shape = (64, 32, 16, 16)
    x = random_bn_input(shape, seed=4)
    with torch.no_grad():
        ours = L.RangeBatchNorm2d(32, dtype=torch.float64)(x)
        bn = nn.BatchNorm2d(32, dtype=torch.float64)(x)
    # per channel, ours = bn * sigma / s: one ratio per channel
    ratio = (ours * bn).sum((0, 2, 3)) / (bn * bn).sum((0, 2, 3))
    assert abs(float(ratio.mean()) - 1) < 0.03, ratio
    assert float((ratio - 1).abs().max()) < 0.2, ratio
    assert float((ours - bn).norm() / bn.norm()) < 0.1
    # ... and with the paper's constant it is far from BN: s is about 1.8 sigma at this n
    with torch.no_grad():
        paper = L.RangeBatchNorm2d(32, dtype=torch.float64, correction="paper")(x)
    paper_ratio = (paper * bn).sum((0, 2, 3)) / (bn * bn).sum((0, 2, 3))
    assert 1 / 2.0 < float(paper_ratio.mean()) < 1 / 1.6


def test_running_statistics_approach_the_true_mean_and_variance():
    """Cumulative averages (momentum=None) over 200 Gaussian batches of 4096 values per channel:
    running_mean and running_var within a few percent of the distribution's mean and variance
    (E[s^2] is 1.004 sigma^2 at this n)."""
    c = 8
    g = torch.Generator().manual_seed(5)
    mean = torch.linspace(-5, 5, c, dtype=torch.float64)
    std = torch.logspace(-1, 1, c, dtype=torch.float64)
    m = L.RangeBatchNorm2d(c, momentum=None, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(200):
            m(torch.randn(256, c, 4, 4, generator=g, dtype=torch.float64) * std.view(1, c, 1, 1)
              + mean.view(1, c, 1, 1))
    assert float(((m.running_var / std**2) - 1).abs().max()) < 0.05, m.running_var / std**2
    assert float(((m.running_mean - mean) / std).abs().max()) < 0.01
    assert m.num_batches_tracked.item() == 200


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("track", [True, False], ids=["running", "no-running"])
def test_gradcheck(track):
    """Autograd through mean, max and min is the derivative (float64; distinct values, so the
    arg-max and arg-min do not change under gradcheck's perturbations)."""
    shape = (4, 3, 2, 2)
    x = random_bn_input(shape, seed=6).requires_grad_(True)
    weight = (torch.randn(3, dtype=torch.float64) + 1).requires_grad_(True)
    bias = torch.randn(3, dtype=torch.float64).requires_grad_(True)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)

    def f(x, weight, bias):
        return L.range_batch_norm(x, rm.clone() if track else None, rv.clone() if track else None,
                                  weight, bias, training=True, eps=1e-5)

    assert torch.autograd.gradcheck(f, (x, weight, bias), eps=1e-6, atol=1e-7)


def test_gradient_matches_the_closed_form():
    """y = (x - mu) / s with s = C(n) (max - min), eps = 0. For L = sum(v * y):
        dL/dx_i = (v_i - mean v) / s - sum(v * (x - mu)) / s^2 * C(n) * ([i = argmax] - [i = argmin])
    so the scale's gradient reaches only the two extreme values. Checked in NumPy per channel."""
    x = random_bn_input((7, 2), seed=7).requires_grad_(True)
    v = torch.randn(7, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    out = L.range_batch_norm(x, None, None, training=True, eps=0.0)
    out.backward(v)
    c = L.range_correction(7)
    xn, vn = x.detach().numpy(), v.numpy()
    for ch in range(2):
        xc, vc = xn[:, ch], vn[:, ch]
        s = c * (xc.max() - xc.min())
        expected = (vc - vc.mean()) / s
        pull = (vc * (xc - xc.mean())).sum() / s**2 * c
        expected[xc.argmax()] -= pull
        expected[xc.argmin()] += pull
        assert np.abs(x.grad[:, ch].numpy() - expected).max() <= TOL
        assert abs(pull) > 1e-2  # the extremes' extra term was really exercised


# ----------------------------------------------------------------------------- eval, state_dict
def test_eval_uses_running_statistics_and_updates_nothing():
    m = L.RangeBatchNorm2d(3, dtype=torch.float64)
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
        m.running_var.copy_(torch.tensor([4.0, 0.25, 9.0], dtype=torch.float64))
        m.weight.copy_(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
        m.bias.copy_(torch.tensor([0.3, 0.0, -1.0], dtype=torch.float64))
    m.eval()
    x = random_bn_input((5, 3, 2, 2), seed=8)
    with torch.no_grad():
        out = m(x)
        alone = m(x[:1])  # one example: no batch statistics needed or used
    v = (1, 3, 1, 1)
    expected = m.weight.view(v) * (x - m.running_mean.view(v)) / torch.sqrt(m.running_var.view(v) + m.eps) \
        + m.bias.view(v)
    assert max_err(out, expected) <= TOL
    assert max_err(alone, out[:1]) <= TOL
    assert m.num_batches_tracked.item() == 0


def test_without_running_statistics_eval_uses_the_batch():
    m = L.RangeBatchNorm1d(3, track_running_stats=False, dtype=torch.float64)
    assert m.running_mean is None and m.num_batches_tracked is None
    x = random_bn_input((10, 3), seed=9)
    with torch.no_grad():
        trained = m(x)
        evaluated = m.eval()(x)
    assert max_err(trained, evaluated) <= TOL
    assert max_err(evaluated.mean(0), torch.zeros(3, dtype=torch.float64)) <= TOL


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track", [True, False])
def test_state_dict_keys_are_batchnorms_and_a_bn_state_dict_loads(affine, track):
    ours = L.RangeBatchNorm2d(4, affine=affine, track_running_stats=track, dtype=torch.float64)
    bn = nn.BatchNorm2d(4, affine=affine, track_running_stats=track, dtype=torch.float64)
    assert list(ours.state_dict()) == list(bn.state_dict())
    with torch.no_grad():
        bn(random_bn_input((8, 4, 3, 3), seed=10))
        if affine:
            bn.weight.add_(0.5), bn.bias.sub_(0.2)
    ours.load_state_dict(bn.state_dict())  # strict
    if track:  # then eval is BN's eval
        ours.eval(), bn.eval()
        x = random_bn_input((3, 4, 3, 3), seed=11)
        with torch.no_grad():
            assert max_err(ours(x), bn(x)) <= TOL


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs,match", [
    (dict(correction="chebyshev"), "correction must be one of"),
    (dict(eps=-1.0), "eps must be >= 0"),
    (dict(momentum=-0.5), r"momentum must be in \[0, 1\]"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.RangeBatchNorm2d(3, **kwargs)


@pytest.mark.parametrize("num_features", [0, 2.5, True])
def test_bad_num_features_is_rejected(num_features):
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        L.RangeBatchNorm(num_features)


@pytest.mark.parametrize("cls,bad_shape,match", [
    (L.RangeBatchNorm2d, (2, 3, 4), "expected 4D input, got 3D"),
    (L.RangeBatchNorm1d, (2, 3, 4, 4), "expected 2D or 3D input, got 4D"),
    (L.RangeBatchNorm1d, (5, 4), r"expected 3 channels.*\(5, 4\)"),
    (L.RangeBatchNorm1d, (1, 3), "more than 1 value per channel"),
])
def test_bad_input_is_rejected_and_leaves_the_module_unchanged(cls, bad_shape, match):
    m = cls(3)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(bad_shape))
    assert m.num_batches_tracked.item() == 0


@pytest.mark.parametrize("n", [1, 0, 2.0])
def test_range_correction_needs_two_values(n):
    with pytest.raises(ValueError, match="n >= 2"):
        L.range_correction(n)


def test_integer_input_is_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        L.RangeBatchNorm1d(3)(torch.ones(4, 3, dtype=torch.long))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_mixed_precision_returns_the_input_dtype(training):
    """bfloat16 input with float32 parameters and statistics: bfloat16 out, as torch's BN."""
    m = L.RangeBatchNorm2d(3).train(training)
    with torch.no_grad():
        m.running_mean.fill_(0.5), m.running_var.fill_(2.0), m.weight.fill_(1.5)
    reference = L.RangeBatchNorm2d(3).train(training)
    reference.load_state_dict(m.state_dict())
    x = random_bn_input((4, 3, 4, 4), dtype=torch.float32, seed=12).to(torch.bfloat16)
    with torch.no_grad():
        # the reference sees the same (rounded) values; only the output's rounding may differ
        out, expected = m(x), reference(x.float())
    assert out.dtype == torch.bfloat16 and m.running_var.dtype == torch.float32
    assert max_err(out, expected) <= 2**-8 * float(expected.abs().max())
