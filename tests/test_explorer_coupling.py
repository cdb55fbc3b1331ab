"""Lesson 02's GradientCoupling, an explorer that draws in the browser: what it sends (the recorded
batch and noise, once and exactly), its per-move numbers in Python (compute, terms, upstream), which
tests/js/gradient_coupling.test.mjs holds the view's JavaScript to, and its snapshot figure."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from figure_testing import assert_inside

from bnlab import plots, widgets
from bnlab.reference import batchnorm_backward, batchnorm_forward
from bnlab.widgets import GradientCoupling, bundle


@pytest.fixture(scope="module")
def coupling():
    return GradientCoupling()


def test_it_sends_the_recorded_batch_and_noise_once_and_exactly(coupling):
    data = coupling.data
    rng = np.random.default_rng(0)
    x, noise = 2.0 + 1.5 * rng.normal(size=64), rng.normal(size=64)
    # exact float64 values: the view's forward and terms must give the numbers compute() gives
    np.testing.assert_array_equal(np.array(data["x"]), x)
    np.testing.assert_array_equal(np.array(data["noise"]), noise)
    np.testing.assert_array_equal(coupling.x, x)
    assert data["eps"] == 1e-5 and data["patterns"] == list(GradientCoupling.PATTERNS)
    assert data["terms"] == list(GradientCoupling.TERMS) and data["legend"] == GradientCoupling.LABELS
    assert data["initial"] == GradientCoupling.INITIAL == {"batch_size": 8, "pattern": "only sample 0", "gamma": 1.0}
    assert data["limits"] == {"batch_size": [2, 32, 1], "gamma": [0.1, 3.0, 0.1]}
    assert data["colors"]["plain"] == plots.COLORS["plain"] and data["term_colors"] == list(plots.TERM_COLORS)
    assert coupling.payload_bytes < 6_000
    assert GradientCoupling._esm == bundle("gradient_coupling.js")
    assert (widgets.STATIC / GradientCoupling.VIEW).is_file()
    assert repr(coupling) == repr(GradientCoupling(seed=1)) and "0x" not in repr(coupling)


def test_other_starting_settings_and_bad_ones():
    g = GradientCoupling(batch_size=20, pattern="random", gamma=2.5)
    assert g.data["initial"] == {"batch_size": 20, "pattern": "random", "gamma": 2.5}
    with pytest.raises(ValueError, match=r"unknown settings \['gama'\]"):
        GradientCoupling(gama=2.0)
    with pytest.raises(ValueError, match="batch_size must be in 2..32"):
        GradientCoupling(batch_size=40)       # beyond its slider, though in the recorded batch
    with pytest.raises(ValueError, match="gamma must be in 0.1..3.0"):
        GradientCoupling(gamma=0.0)
    with pytest.raises(ValueError, match="pattern must be one of"):
        GradientCoupling(pattern="all of them")


def test_gradients_sum_to_zero_in_training_only(coupling):
    for pattern in GradientCoupling.PATTERNS:
        dx_bn, dx_fixed, x_hat = coupling.compute(batch_size=12, pattern=pattern, gamma=1.5)
        assert abs(dx_bn.sum()) < 1e-12
    dx_bn, dx_fixed, x_hat = coupling.compute(batch_size=12, pattern="only sample 0", gamma=1.0)
    assert np.count_nonzero(dx_fixed) == 1 and abs(dx_fixed.sum()) > 0.1
    assert np.count_nonzero(np.abs(dx_bn) > 1e-6) == 12
    # sample 0's own gradient shrinks by 1 - 1/m - x_hat_0^2 / m (lesson 02's check)
    assert dx_bn[0] / dx_fixed[0] == pytest.approx(1 - 1 / 12 - x_hat[0] ** 2 / 12, abs=1e-4)


@pytest.mark.parametrize("pattern", GradientCoupling.PATTERNS)
@pytest.mark.parametrize("batch_size, gamma", [(2, 1.0), (7, 0.5), (20, 2.5), (64, 0.1)])
def test_the_terms_add_up_to_the_reference_dx(coupling, pattern, batch_size, gamma):
    terms = coupling.terms(batch_size, pattern, gamma)
    assert list(terms) == list(GradientCoupling.TERMS)
    x = coupling.x[:batch_size, None]
    _, cache = batchnorm_forward(x, np.array([gamma]), np.array([0.0]), {"mode": "train"})
    dy = coupling.upstream(batch_size, pattern, cache["x_hat"][:, 0])
    dx = batchnorm_backward(dy[:, None], cache)[0][:, 0]
    np.testing.assert_allclose(sum(terms.values()), dx, rtol=1e-10, atol=1e-13)
    # the terms by their definitions, with the prefactor gamma / (m sqrt(var + eps)) from x itself
    k = gamma / (batch_size * np.sqrt(x.var() + 1e-5))
    x_hat = (x[:, 0] - x.mean()) / np.sqrt(x.var() + 1e-5)
    own, mean, scale = terms.values()
    np.testing.assert_allclose(own, k * batch_size * dy, rtol=1e-10)
    np.testing.assert_allclose(mean, np.full(batch_size, -k * dy.sum()), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(scale, -k * x_hat * (dy * x_hat).sum(), rtol=1e-8, atol=1e-15)
    # summed over the batch, own and mean cancel and the scale term is 0 on its own (sum x_hat = 0)
    assert abs(own.sum() + mean.sum()) < 1e-12 * np.abs(own).sum() + 1e-15
    assert abs(scale.sum()) < 1e-12 * max(np.abs(scale).sum(), 1.0)


@pytest.mark.parametrize("pattern", GradientCoupling.PATTERNS)
def test_both_gradients_are_torchs(coupling, pattern):
    """dx with batch statistics is autograd's through F.batch_norm in training; with statistics held
    fixed it is autograd's in eval mode with the batch's own statistics as running ones."""
    m, gamma = 10, 1.7
    dx_bn, dx_fixed, x_hat = coupling.compute(m, pattern, gamma)
    dy = torch.tensor(coupling.upstream(m, pattern, x_hat))[:, None]
    weight = torch.tensor([gamma], dtype=torch.float64)
    for training, expected in ((True, dx_bn), (False, dx_fixed)):
        x = torch.tensor(coupling.x[:m, None], requires_grad=True)
        stats = (None, None) if training else (x.detach().mean(0), x.detach().var(0, unbiased=False))
        F.batch_norm(x, *stats, weight, None, training=training, eps=1e-5).backward(dy)
        np.testing.assert_allclose(x.grad[:, 0].numpy(), expected, rtol=1e-9, atol=1e-12)


def test_upstream_patterns(coupling):
    np.testing.assert_array_equal(coupling.upstream(4, "two samples"), [1, -1, 0, 0])
    largest = coupling.upstream(10, "only the largest sample")
    assert largest.sum() == 1 and largest[np.argmax(coupling.x[:10])] == 1
    np.testing.assert_array_equal(coupling.upstream(5, "random"), coupling.noise[:5])
    dx_const, _, _ = coupling.compute(8, "constant", 1.0)
    dx_prop, _, _ = coupling.compute(8, "proportional to x_hat", 1.0)
    assert np.abs(dx_const).max() < 1e-12 and np.abs(dx_prop).max() < 1e-4   # lesson 02's checks
    with pytest.raises(ValueError, match="pattern"):
        coupling.upstream(4, "all of them")
    with pytest.raises(ValueError, match="batch_size"):
        coupling.terms(65, "constant", 1.0)


def test_the_snapshot_shows_both_gradients_and_the_terms(coupling):
    fig = coupling.figure(pattern="two samples", batch_size=6)
    left, right = fig.axes
    assert len(left.patches) == 12 and len(right.patches) == 18      # 2 bars / 3 terms per sample
    dx_bn, dx_fixed, _ = coupling.compute(6, "two samples", 1.0)
    heights = np.array([p.get_height() for p in left.patches]).reshape(2, 6)
    np.testing.assert_allclose(heights, np.stack([dx_fixed, dx_bn]))
    np.testing.assert_allclose(right.lines[0].get_ydata(), dx_bn)     # the dots are dx
    terms = coupling.terms(6, "two samples", 1.0)
    heights = np.array([p.get_height() for p in right.patches]).reshape(3, 6)
    np.testing.assert_allclose(heights, np.stack(list(terms.values())))
    assert {t.get_text() for t in right.get_legend().get_texts()} == {*GradientCoupling.TERMS, "their sum dx_i"}
    assert {t.get_text() for t in left.get_legend().get_texts()} == set(GradientCoupling.LABELS.values())
    assert len(coupling.figure().axes[0].patches) == 2 * GradientCoupling.INITIAL["batch_size"]


@pytest.mark.parametrize("settings", [{}, {"batch_size": 32, "pattern": "random", "gamma": 3.0},
                                      {"batch_size": 2, "pattern": "proportional to x_hat", "gamma": 0.1}])
def test_the_snapshot_keeps_its_labels_inside(coupling, settings):
    assert_inside(coupling.figure(**settings), settings)
