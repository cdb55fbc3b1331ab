"""Explorers redraw from recorded data when a control moves, and never train anything.
(ActivationExplorer and GradientFlowExplorer draw in the browser: tests/test_explorer_activations.py,
tests/test_explorer_gradient_flow.py.)"""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from bnlab.widgets import (  # noqa: E402
    GradientCoupling,
    MaskExplorer,
    MomentumExplorer,
    SweepExplorer,
    base_sample,
    ramp_lag,
)


def bar_heights(ax):
    return np.array([p.get_height() for p in ax.patches])


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


# ----------------------------------------------------------------------------- lesson 02: the three terms
@pytest.mark.parametrize("pattern", GradientCoupling.PATTERNS)
@pytest.mark.parametrize("batch_size, gamma", [(2, 1.0), (7, 0.5), (20, 2.5)])
def test_gradient_coupling_terms_add_up_to_the_reference_dx(pattern, batch_size, gamma):
    from bnlab.reference import batchnorm_backward, batchnorm_forward

    g = GradientCoupling()
    terms = g.terms(batch_size, pattern, gamma)
    assert list(terms) == list(GradientCoupling.TERMS)
    x = g.x[:batch_size, None]
    _, cache = batchnorm_forward(x, np.array([gamma]), np.array([0.0]), {"mode": "train"})
    dy = g.upstream(batch_size, pattern, cache["x_hat"][:, 0])
    dx = batchnorm_backward(dy[:, None], cache)[0][:, 0]
    np.testing.assert_allclose(sum(terms.values()), dx, rtol=1e-10, atol=1e-13)
    # the terms by their definitions, with the prefactor gamma / (m sqrt(var + eps)) from x itself
    k = gamma / (batch_size * np.sqrt(x.var() + 1e-5))
    x_hat = (x[:, 0] - x.mean()) / np.sqrt(x.var() + 1e-5)
    own, mean, scale = terms.values()
    np.testing.assert_allclose(own, k * batch_size * dy, rtol=1e-10)
    np.testing.assert_allclose(mean, np.full(batch_size, -k * dy.sum()), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(scale, -k * x_hat * (dy * x_hat).sum(), rtol=1e-8, atol=1e-15)


def test_gradient_coupling_patterns():
    g = GradientCoupling()
    np.testing.assert_array_equal(g.upstream(4, "two samples"), [1, -1, 0, 0])
    largest = g.upstream(10, "only the largest sample")
    assert largest.sum() == 1 and largest[np.argmax(g.x[:10])] == 1
    np.testing.assert_array_equal(g.upstream(5, "random"), g.noise[:5])
    with pytest.raises(ValueError, match="pattern"):
        g.upstream(4, "all of them")
    with pytest.raises(ValueError, match="batch_size"):
        g.terms(65, "constant", 1.0)


def test_gradient_coupling_second_panel_shows_the_terms_and_the_readout_their_sum():
    g = GradientCoupling()
    g.controls["pattern"].value = "two samples"
    g.controls["batch_size"].value = 6
    left, right = g.axes
    assert len(left.patches) == 12 and len(right.patches) == 18      # 2 bars / 3 terms per sample
    dx_bn, _, _ = g.compute(6, "two samples", 1.0)
    np.testing.assert_allclose(right.lines[0].get_ydata(), dx_bn)     # the dots are dx
    terms = g.terms(6, "two samples", 1.0)
    heights = np.array([p.get_height() for p in right.patches]).reshape(3, 6)
    np.testing.assert_allclose(heights, np.stack(list(terms.values())))
    assert set(t.get_text() for t in right.get_legend().get_texts()) == {*GradientCoupling.TERMS, "their sum dx_i"}
    assert "Σ dx = " in g.readout.value and "(≈ 0)" in g.readout.value


# ----------------------------------------------------------------------------- every explorer: nothing clipped
def sweep_runs():
    from bnlab.train import History

    return {(norm, lr): History(loss=[2.0, 1.0 / (i + 1)], eval_steps=[0, 5], test_accuracy=[0.1, 0.9 - 0.2 * i])
            for norm in (None, "bn") for i, lr in enumerate((0.01, 0.1, 1.0))}


def mask_explorer():
    rng = np.random.default_rng(0)
    images, masks = rng.normal(size=(4, 1, 8, 8)), rng.integers(0, 3, size=(4, 8, 8))
    snapshots = {"plain": {0: masks, 10: masks}, "bn": {0: masks, 10: masks}}
    return MaskExplorer(images, masks, snapshots, ("background", "a", "b"))


@pytest.fixture(scope="module")
def explorers():
    return {"GradientCoupling": GradientCoupling(), "MomentumExplorer": MomentumExplorer(steps=200),
            "SweepExplorer": SweepExplorer(sweep_runs()), "MaskExplorer": mask_explorer()}


def text_px(text: str) -> float:
    """Width in pixels of text in a 13 px sans font (JupyterLab's widget labels), measured with DejaVu
    Sans, which is wider than the Helvetica/Arial a browser uses: an upper bound."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = RendererAgg(10, 10, 96)
    return renderer.get_text_width_height_descent(text, FontProperties(family="DejaVu Sans", size=13 * 72 / 96),
                                                  ismath=False)[0]


@pytest.mark.parametrize("name", ["GradientCoupling", "MomentumExplorer", "SweepExplorer", "MaskExplorer"])
def test_control_descriptions_fit_their_width(explorers, name):
    """Lesson 01's playground showed 'input m…': a description wider than description_width is cut."""
    for control in explorers[name].controls.values():
        width = control.style.description_width
        assert width.endswith("px"), (name, control.description, width)
        # the label keeps a few pixels of margin to the slider
        assert text_px(control.description) + 8 <= float(width[:-2]), (name, control.description, width)


def assert_inside(explorer, state):
    """Every drawn artist (labels, tick labels, titles, colour bars) lies inside the rendered figure."""
    renderer = explorer.canvas.get_renderer()
    width, height = explorer.fig.get_size_inches()
    slack = 1.0 / explorer.fig.dpi
    box = explorer.fig.get_tightbbox(renderer)
    assert box.x0 >= -slack and box.y0 >= -slack and box.x1 <= width + slack and box.y1 <= height + slack, \
        (type(explorer).__name__, state, box.bounds, (width, height))
    for ax in explorer.fig.axes:
        for label in (ax.xaxis.label, ax.yaxis.label):
            if label.get_visible() and label.get_text():
                extent = label.get_window_extent(renderer)
                assert extent.x0 >= -1 and extent.y0 >= -1, (state, label.get_text())
                assert extent.x1 <= explorer.fig.bbox.x1 + 1 and extent.y1 <= explorer.fig.bbox.y1 + 1, \
                    (state, label.get_text())


@pytest.mark.parametrize("name", ["GradientCoupling", "MomentumExplorer", "SweepExplorer", "MaskExplorer"])
def test_every_explorer_keeps_its_labels_inside(explorers, name):
    e = explorers[name]
    assert_inside(e, "as built")
    for control_name, control in e.controls.items():
        options = getattr(control, "options", None)
        values = list(options)[-1:] if options else [control.max] if hasattr(control, "max") else []
        for value in values:
            control.value = value
            assert_inside(e, (control_name, value))
