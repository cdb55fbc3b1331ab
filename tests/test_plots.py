"""Plots label their axes, use the course colours and return the figure."""

import matplotlib
import numpy as np

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402

from bnlab import plots  # noqa: E402


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
