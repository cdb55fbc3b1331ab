"""Plots label their axes, use the course colours and return the figure."""

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bnlab import plots  # noqa: E402
from bnlab.data import gaussian_blobs  # noqa: E402
from bnlab.models import mlp  # noqa: E402
from bnlab.train import train_classifier  # noqa: E402


def test_before_after_uses_variant_colours_and_labels():
    fig = plots.plot_before_after(np.arange(10.0), np.linspace(-1, 1, 10))
    left, right = fig.axes
    assert to_hex(left.patches[0].get_facecolor()) == plots.COLORS["plain"]
    assert to_hex(right.patches[0].get_facecolor()) == plots.COLORS["bn"]
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_accuracy_by_batching_draws_one_bar_per_variant_and_batching():
    results = {"a": {"bn": 0.9, "mistake": 0.5}, "b": {"bn": 0.9, "mistake": 0.3}}
    fig = plots.plot_accuracy_by_batching(results, chance=0.25)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 3) for p in ax.patches)
    assert heights == [0.3, 0.5, 0.9, 0.9]
    assert ax.get_xlabel() and ax.get_ylabel()


def test_untracked_figure_for_widgets():
    import matplotlib.pyplot as plt
    n = len(plt.get_fignums())
    fig, axes = plots.new_figure(2, pyplot=False)
    assert len(axes) == 2 and len(plt.get_fignums()) == n


# ----------------------------------------------------------------------------- probes (lessons 04, 05)
@pytest.fixture(scope="module")
def runs():
    """{variant: History} of two short probed runs (5 records of 2 sigmoid layers)."""
    data = gaussian_blobs(n_per_class=40, seed=0)
    out = {}
    for key, norm in (("plain", None), ("bn", "bn")):
        torch.manual_seed(0)
        net = mlp(data.num_features, (12, 12), data.num_classes, norm=norm, activation="sigmoid")
        out[key] = train_classifier(net, data, steps=9, batch_size=16, lr=0.1, eval_every=3, device="cpu",
                                    progress=False, probe=dict(every=2))
    return out


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def labelled(ax):
    return bool(ax.get_xlabel()) and bool(ax.get_ylabel()) and bool(ax.get_title())


def test_shades_run_light_to_the_variant_colour():
    from matplotlib.colors import to_rgb

    colours = plots.shades("bn", 4)
    assert len(colours) == 4
    np.testing.assert_allclose(colours[-1], to_rgb(plots.COLORS["bn"]))
    brightness = [sum(c) for c in colours]
    assert brightness == sorted(brightness, reverse=True) and brightness[0] > brightness[-1]
    np.testing.assert_allclose(plots.shades("no such variant", 2)[-1], (0, 0, 0))


def test_percentile_bands_one_labelled_axis_per_variant_in_its_colour():
    steps = np.arange(0, 50, 10)
    p = np.stack([np.full(5, -1.0), np.zeros(5), np.full(5, 1.0)], axis=1)
    fig = plots.plot_percentile_bands({"plain": (steps, p), "bn": (steps, 2 * p)})
    assert isinstance(fig, Figure) and len(fig.axes) == 2 and fig.get_suptitle()
    for ax, key in zip(fig.axes, ("plain", "bn")):
        assert labelled(ax)
        assert to_hex(ax.lines[0].get_color()) == plots.COLORS[key]
        assert to_hex(ax.collections[0].get_facecolor()[0]) == plots.COLORS[key]
        np.testing.assert_array_equal(ax.lines[0].get_ydata(), np.zeros(5))
        assert ax.get_ylim() == pytest.approx((-2.1, 2.1))  # shared range across variants


def test_histogram_grid_one_axis_per_layer(runs):
    recording = runs["bn"].probe
    for gradients in (False, True):
        fig = plots.plot_histogram_grid(recording, 2, "bn", gradients=gradients)
        assert isinstance(fig, Figure) and len(fig.axes) == len(recording.layers) == 2
        assert "step 4" in fig.get_suptitle()
        for ax, layer in zip(fig.axes, recording.layers):
            assert labelled(ax) and ax.get_title() == layer
            patch = ax.patches[0]
            assert to_hex(patch.get_facecolor()) == plots.COLORS["bn"]
            record = recording[layer]
            np.testing.assert_allclose(patch.get_data().values, (record.grad_hist if gradients else record.hist)[2])
        assert ("log10" in fig.axes[0].get_xlabel()) == gradients


def test_histogram_heatmap_is_an_image_over_steps(runs):
    recording = runs["plain"].probe
    record = recording["hidden1"]
    fig = plots.plot_histogram_heatmap(record, recording.steps, mark_step=4)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and labelled(ax) and len(ax.images) == 1
    assert ax.images[0].get_array().shape == (record.hist.shape[1], len(recording))
    left, right, bottom, top = ax.images[0].get_extent()
    assert (left, right) == (0, 8) and (bottom, top) == (record.edges[0], record.edges[-1])
    assert [line.get_xdata()[0] for line in ax.lines] == [4]
    fig = plots.plot_histogram_heatmap(record, recording.steps, gradients=True, title="mine")
    assert "log10" in fig.axes[0].get_ylabel() and fig.axes[0].get_title() == "mine" and not fig.axes[0].lines


def test_gradient_flow_log_scale_colours_by_variant():
    norms = {"plain": np.logspace(-8, 0, 6), "bn": np.ones(6), "bn, lr 0.1": np.full(6, 2.0)}
    fig = plots.plot_gradient_flow(norms)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and labelled(ax) and ax.get_yscale() == "log"
    assert [to_hex(line.get_color()) for line in ax.lines] == [plots.COLORS["plain"], plots.COLORS["bn"],
                                                                plots.COLORS["bn"]]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["without BN", "with BN", "with BN, lr 0.1"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(1, 7))
    # the finding: plain's first layer gets 1e-8 of the last one's gradient, the largest change
    assert "without BN" in ax.get_title() and "1e-08" in ax.get_title()


def test_gradient_flow_same_variant_gets_one_colour_and_different_line_styles():
    """Lesson 05: 'bn, relu' and 'bn, tanh' were one blue; step 0 and step 295 one line style."""
    norms = {"plain, relu": np.ones(4), "bn, relu": np.ones(4), "bn, tanh": np.ones(4), "bn, sigmoid": np.ones(4)}
    ax = plots.plot_gradient_flow(norms, title="t").axes[0]
    colours = [to_hex(line.get_color()) for line in ax.lines]
    styles = [line.get_linestyle() for line in ax.lines]
    assert colours == [plots.COLORS["plain"]] + [plots.COLORS["bn"]] * 3
    assert len(set(styles[1:])) == 3                      # three activations of BN: three styles
    assert styles[0] == styles[1]                         # the same activation: the same style
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["without BN, relu", "with BN, relu", "with BN, tanh",
                                                          "with BN, sigmoid"]
    assert [h.get_linestyle() for h in legend.legend_handles] == styles   # the legend shows the styles too
    no_markers = plots.plot_gradient_flow({"bn, step 0": np.ones(3), "bn, step 295": np.ones(3)}, markers=False)
    lines = no_markers.axes[0].lines
    assert lines[0].get_linestyle() != lines[1].get_linestyle() and lines[0].get_marker() in ("None", None, "")


def test_update_ratio_one_line_per_weight_in_shades_of_the_variant(runs):
    recording = runs["bn"].probe
    fig = plots.plot_update_ratio(recording, "bn")
    ax = fig.axes[0]
    weights = [n for n in recording.params if n.endswith("weight")]
    assert isinstance(fig, Figure) and labelled(ax)
    assert [line.get_label() for line in ax.lines[:-1]] == weights
    assert [line.get_color() for line in ax.lines[:-1]] == plots.shades("bn", len(weights))
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(-3)  # the 1e-3 reference
    everything = plots.plot_update_ratio(recording, "bn", weights_only=False).axes[0]
    assert len(everything.lines) - 1 == len(recording.params) > len(weights)


@pytest.mark.parametrize("quantity", ["test_accuracy", "loss"])
def test_curves_colour_by_variant_or_given_colours(runs, quantity):
    fig = plots.plot_curves(runs, quantity=quantity)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and labelled(ax)
    assert [to_hex(line.get_color()) for line in ax.lines] == [plots.COLORS["plain"], plots.COLORS["bn"]]
    if quantity == "loss":
        assert ax.get_yscale() == "log" and "loss" in ax.get_ylabel()
        np.testing.assert_array_equal(ax.lines[1].get_ydata(), runs["bn"].loss)
    else:
        np.testing.assert_array_equal(ax.lines[1].get_xdata(), [0, 3, 6, 9])
    fig = plots.plot_curves({"bn, lr 0.1": runs["bn"], "x": runs["plain"]}, quantity=quantity,
                            colors={"x": "#123456"})
    assert [to_hex(line.get_color()) for line in fig.axes[0].lines] == [plots.COLORS["bn"], "#123456"]


def test_curves_reject_an_unknown_quantity(runs):
    with pytest.raises(ValueError, match="quantity"):
        plots.plot_curves(runs, quantity="accuracy")


def test_curves_give_runs_of_one_variant_shades_of_its_colour(runs):
    """Lesson 07: plain at three learning rates were three identical greys."""
    histories = {"plain, lr 0.03": runs["plain"], "plain, lr 0.1": runs["plain"], "plain, lr 0.3": runs["plain"],
                 "bn, lr 0.1": runs["bn"]}
    ax = plots.plot_curves(histories).axes[0]
    colours = [line.get_color() for line in ax.lines]
    assert len({to_hex(c) for c in colours[:3]}) == 3
    assert [to_hex(c) for c in colours[:3]] == [to_hex(c) for c in plots.shades("plain", 3)]
    assert to_hex(colours[3]) == plots.COLORS["bn"]       # a single run keeps the full colour
    # the shades keep the grey hue: equal r, g, b
    assert all(max(c) - min(c) < 1e-9 for c in colours[:3])
    assert [t.get_text() for t in ax.get_legend().get_texts()][0] == "without BN, lr 0.03"


@pytest.mark.parametrize("quantity", ["test_accuracy", "loss"])
def test_curves_mark_a_diverged_run(quantity):
    from bnlab.train import History

    nan = float("nan")
    diverged = History(loss=[2.0, 5.0, nan], eval_steps=[0], test_accuracy=[0.1], diverged_at=3)
    fine = History(loss=[2.0, 1.0, 0.5, 0.4], eval_steps=[0, 2, 4], test_accuracy=[0.1, 0.5, 0.8])
    ax = plots.plot_curves({"plain, lr 1": diverged, "bn, lr 1": fine}, quantity).axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["without BN, lr 1 (diverged at step 3)", "with BN, lr 1"]
    marks = [line for line in ax.lines if line.get_marker() not in ("None", None, "")]
    assert len(marks) == 1
    mark = marks[0]
    assert list(mark.get_xdata()) == [3] and to_hex(mark.get_color()) == plots.COLORS["plain"]
    # drawn inside the axis, on its bottom edge, whatever the y scale
    ax.figure.canvas.draw()
    x, y = ax.transAxes.inverted().transform(mark.get_transform().transform((3, mark.get_ydata()[0])))
    assert 0 <= y < 0.1
    assert "with BN" in ax.get_title()   # the default title names the best run


def test_histogram_heatmap_has_a_labelled_colour_bar(runs):
    recording = runs["plain"].probe
    record = recording["hidden1"]
    fig = plots.plot_histogram_heatmap(record, recording.steps)
    ax, bar = fig.axes
    assert "log10" in bar.get_ylabel()
    assert bar.get_ylim() == pytest.approx(plots.HEATMAP_RANGE)
    # drawing into the same axis again reuses the colour bar
    plots.plot_histogram_heatmap(record, recording.steps, ax=ax, mark_step=2)
    assert len(fig.axes) == 2
    plots.remove_colorbar(ax)
    assert fig.axes == [ax]
    # two heatmaps, one shared colour bar
    fig, axes = plots.new_figure(2)
    for a in axes:
        plots.plot_histogram_heatmap(record, recording.steps, a, colorbar=False)
    assert len(fig.axes) == 2
    plots.shared_colorbar(axes)
    assert len(fig.axes) == 3 and "log10" in fig.axes[2].get_ylabel()
    with pytest.raises(ValueError, match="heatmap"):
        plots.shared_colorbar(plots.new_figure(1)[1])


def test_layer_histogram_is_the_record_with_percentiles(runs):
    recording = runs["bn"].probe
    record = recording["hidden2"]
    fig = plots.plot_layer_histogram(record, 1, "bn", percentiles={15: -1.0, 50: 0.0, 85: 1.0}, title="x")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.patches[0].get_data().values, record.hist[1])
    assert to_hex(ax.patches[0].get_facecolor()) == plots.COLORS["bn"]
    assert [line.get_xdata()[0] for line in ax.lines] == [-1.0, 0.0, 1.0]
    assert [line.get_linestyle() for line in ax.lines] == ["--", "-", "--"]
    ax.figure.canvas.draw()
    assert all(t.get_text().count(".") == 1 and len(t.get_text().split(".")[1]) == 2
               for t in ax.get_yticklabels() if t.get_text())   # fixed two-decimal fractions


def test_image_grid_one_grey_scale_and_titles():
    rng = np.random.default_rng(0)
    images = torch.tensor(rng.normal(size=(5, 1, 8, 8)))
    images[2] += 10.0   # one bright image: the common scale must include it
    titles = [f"{i}  mean {im.mean():.1f}" for i, im in enumerate(images)]
    fig = plots.plot_image_grid(images, titles, title="Each scan its own brightness")
    assert isinstance(fig, Figure) and len(fig.axes) == 5 and fig.get_suptitle() == "Each scan its own brightness"
    scale = (float(images.min()), float(images.max()))
    for ax, text, image in zip(fig.axes, titles, images):
        assert ax.get_title() == text and not ax.axison
        assert ax.images[0].get_clim() == pytest.approx(scale)
        np.testing.assert_allclose(ax.images[0].get_array(), image[0].numpy())
    fixed = plots.plot_image_grid(images[:, 0].numpy(), vmin=-1.5, vmax=4)
    assert all(ax.images[0].get_clim() == (-1.5, 4) for ax in fixed.axes) and not fixed.get_suptitle()
    with pytest.raises(ValueError, match="titles"):
        plots.plot_image_grid(images, titles[:2])
    with pytest.raises(ValueError, match="shape"):
        plots.plot_image_grid(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="vmin < vmax"):
        plots.plot_image_grid(images, vmin=1, vmax=1)


def test_gradient_terms_bars_and_their_sum():
    terms = {"a": np.array([1.0, 2.0]), "b": np.array([-1.0, -1.0]), "c": np.array([0.5, -0.5])}
    ax = plots.plot_gradient_terms(terms, dx=np.array([0.5, 0.5])).axes[0]
    assert len(ax.patches) == 6 and labelled(ax)
    np.testing.assert_allclose(sorted(p.get_height() for p in ax.patches), [-1, -1, -0.5, 0.5, 1, 2])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.5, 0.5])
    with pytest.raises(ValueError, match="term"):
        plots.plot_gradient_terms({"a": np.ones(3)}, dx=np.ones(2))
