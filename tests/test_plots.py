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
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["without BN", "with BN", "bn, lr 0.1"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(1, 7))


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
