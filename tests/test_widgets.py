"""Explorers redraw from recorded data when a control moves, and never train anything."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from bnlab.widgets import ForwardPlayground, GradientCoupling, MomentumExplorer, base_sample, ramp_lag  # noqa: E402


def bar_heights(ax):
    return np.array([p.get_height() for p in ax.patches])


def test_forward_playground_redraws_from_the_same_sample():
    p = ForwardPlayground()
    assert p.redraws == 1
    before = bar_heights(p.axes[1]).copy()
    png = bytes(p.image.value)
    assert png.startswith(b"\x89PNG")
    p.controls["gamma"].value = 2.0
    assert p.redraws == 2 and bytes(p.image.value) != png
    x, y, mu, var = p.compute(**p.values)
    # gamma = 2 doubles the output's std; the input sample is the recorded one, not a new draw
    assert y.std() == pytest.approx(2.0, rel=1e-4)
    np.testing.assert_allclose(x, 5.0 + 3.0 * p.samples["skewed"][:64])
    assert "std" in p.readout.value and "2.000" in p.readout.value
    # same histogram counts (same x_hat), drawn over new bin edges
    np.testing.assert_array_equal(np.sort(bar_heights(p.axes[1])), np.sort(before))


def test_forward_playground_flags_eps_dominating():
    p = ForwardPlayground()
    p.controls["scale"].value = 1e-3
    p.controls["eps"].value = 0.1
    assert "ε dominates" in p.readout.value
    _, y, _, _ = p.compute(**p.values)
    assert y.std() < 0.01


def test_gradient_coupling_sums_to_zero_in_training_only():
    g = GradientCoupling()
    for pattern in GradientCoupling.PATTERNS:
        dx_bn, dx_fixed, x_hat = g.compute(batch_size=12, pattern=pattern, gamma=1.5)
        assert abs(dx_bn.sum()) < 1e-12
    dx_bn, dx_fixed, _ = g.compute(batch_size=12, pattern="only sample 0", gamma=1.0)
    assert np.count_nonzero(dx_fixed) == 1 and abs(dx_fixed.sum()) > 0.1
    g.controls["batch_size"].value = 20
    assert len(g.axes[0].patches) == 40  # two bars per sample


def test_momentum_explorer_lag_matches_theory_for_a_ramp():
    m = MomentumExplorer(steps=400, drift=0.02)
    batch_means, running, true = m.compute(0.1, "ramp")
    assert ramp_lag(true, running) == pytest.approx(0.02 * 0.9 / 0.1, abs=0.03)
    recorded = m.recorded["ramp"].copy()
    m.controls["momentum"].value = 0.01
    np.testing.assert_array_equal(m.recorded["ramp"], recorded)  # redraw only; the data stay
    assert "behind the true mean" in m.readout.value


def test_base_sample_is_standardized_and_rejects_unknown_shapes():
    for shape in ("normal", "skewed", "bimodal"):
        z = base_sample(shape, 300)
        assert abs(z.mean()) < 1e-12 and z.std() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        base_sample("uniform")
