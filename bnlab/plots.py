"""Plots of the course, in one style: one colour per variant in every lesson, labelled axes, and
titles that state the finding.

Each function draws into axes it is given (or a new figure) and returns the Figure, so a widget can
keep the figure and redraw it, and a test can look at what was drawn.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "COLORS",
    "LABELS",
    "new_figure",
    "plot_before_after",
    "plot_eps_gain",
    "plot_sample_gradients",
    "plot_running_mean",
    "plot_accuracy_by_batching",
]

# One colour per variant, across all lessons.
COLORS = {
    "plain": "#7f7f7f",    # without BN: grey
    "bn": "#1f77b4",       # batch norm: blue
    "ln": "#9467bd",       # layer norm: purple
    "gn": "#2ca02c",       # group norm: green
    "mistake": "#d62728",  # a formula from an article that gets it wrong: red
    "running": "#ff7f0e",  # running (inference-time) statistics: orange
}
LABELS = {
    "plain": "without BN",
    "bn": "with BN",
    "ln": "layer norm",
    "gn": "group norm",
    "mistake": "wrong formula",
    "running": "running statistics",
}


def new_figure(ncols: int = 1, width: float = 4.5, height: float = 3.2, pyplot: bool = True):
    """A figure with ncols axes side by side. pyplot=False gives a figure that pyplot does not track,
    so a widget can own it without the inline backend showing a stray copy at the end of the cell."""
    size = (width * ncols, height)
    if pyplot:
        fig, axes = plt.subplots(1, ncols, figsize=size, layout="constrained", squeeze=False)
    else:
        fig = Figure(figsize=size, layout="constrained")
        axes = np.array([fig.subplots(1, ncols, squeeze=False)[0]])
    return fig, list(axes[0])


def _axis(ax, width: float):
    """The given axis and its figure, or a new one-axis figure of the given width."""
    if ax is None:
        fig, (ax,) = new_figure(1, width=width)
        return fig, ax
    return ax.figure, ax


def _hist_bins(values, bins=30):
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def plot_before_after(x, y, axes=None, title: str | None = None) -> Figure:
    """Histograms of one feature before (x) and after (y) batch normalization, each on its own axis."""
    x, y = np.ravel(x), np.ravel(y)
    if axes is None:
        fig, axes = new_figure(2)
    else:
        fig = axes[0].figure
    for ax, values, key, name in ((axes[0], x, "plain", "input x"), (axes[1], y, "bn", "output y")):
        ax.clear()
        ax.hist(values, bins=_hist_bins(values), color=COLORS[key], alpha=0.85)
        ax.axvline(values.mean(), color="k", lw=1, ls="--", label=f"mean {values.mean():.2f}")
        ax.set_xlabel(f"{name} (units of the feature)")
        ax.set_ylabel("count in the batch")
        ax.set_title(f"{name}: std {values.std():.2f}")
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "BN moves the batch to mean beta and std about |gamma|")
    return fig


def plot_eps_gain(input_std, output_std_by_eps: dict, ax=None) -> Figure:
    """Output std against input std (log-log), one line per eps: eps caps the gain 1/sqrt(var + eps)."""
    fig, ax = _axis(ax, width=5.5)
    shades = plt.cm.Blues(np.linspace(0.45, 1.0, len(output_std_by_eps)))
    for shade, (eps, out_std) in zip(shades, output_std_by_eps.items()):
        ax.loglog(input_std, out_std, color=shade, lw=2, label=f"eps = {eps:g}")
        ax.axvline(np.sqrt(eps), color=shade, lw=0.8, ls=":")
    ax.set_xlabel("input std sigma (units of the feature)")
    ax.set_ylabel("output std of x_hat")
    ax.set_title("Below sigma = sqrt(eps), BN stops amplifying")
    ax.legend(fontsize=8)
    return fig


def plot_sample_gradients(dx_by_variant: dict, ax=None, title: str | None = None,
                          labels: dict | None = None) -> Figure:
    """Bar chart of dL/dx per sample (one feature), side by side for each variant ('plain', 'bn', ...).
    labels overrides the legend text per variant."""
    fig, ax = _axis(ax, width=6.5)
    ax.clear()
    n = len(next(iter(dx_by_variant.values())))
    width = 0.8 / len(dx_by_variant)
    for i, (key, dx) in enumerate(dx_by_variant.items()):
        ax.bar(np.arange(n) + (i - (len(dx_by_variant) - 1) / 2) * width, dx, width,
               color=COLORS.get(key, "k"), label=(labels or {}).get(key, LABELS.get(key, key)))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("sample index i in the batch")
    ax.set_ylabel("dL/dx_i")
    ax.set_title(title or "With BN every sample gets gradient, and they sum to zero")
    ax.legend(fontsize=8)
    return fig


def plot_running_mean(batch_means, running_means: dict, true_mean=None, ax=None,
                      title: str | None = None) -> Figure:
    """Batch means over steps (dots), the true mean, and the running mean for each momentum."""
    fig, ax = _axis(ax, width=7)
    ax.clear()
    steps = np.arange(len(batch_means))
    ax.plot(steps, batch_means, ".", color=COLORS["plain"], ms=3, label="batch mean")
    if true_mean is not None:
        ax.plot(steps, true_mean, color="k", lw=1, ls="--", label="true mean")
    shades = plt.cm.Oranges(np.linspace(0.55, 1.0, len(running_means)))
    for shade, (momentum, running) in zip(shades, running_means.items()):
        ax.plot(steps, running, color=shade, lw=2, label=f"running_mean, momentum {momentum:g}")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean of the feature (its units)")
    ax.set_title(title or "A small momentum averages more, and lags further behind")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_accuracy_by_batching(results: dict, chance: float | None = None, ax=None) -> Figure:
    """Grouped bars: test accuracy per way of batching the test set, for eval mode and for the
    test-batch-statistics mistake. results: {batching: {"bn": acc, "mistake": acc}}."""
    fig, ax = _axis(ax, width=7)
    names = list(results)
    keys = ["bn", "mistake"]
    labels = {"bn": "model.eval(): running statistics", "mistake": "statistics of the test batch (seed 000)"}
    for i, key in enumerate(keys):
        ax.bar(np.arange(len(names)) + (i - 0.5) * 0.38, [results[n][key] for n in names], 0.38,
               color=COLORS[key], label=labels[key])
    if chance is not None:
        ax.axhline(chance, color="k", lw=1, ls=":", label="chance")
    ax.set_xticks(np.arange(len(names)), names, fontsize=8)
    ax.set_ylim(0, 1.3)  # headroom for the legend above the bars
    ax.set_xlabel("how the test set is split into batches")
    ax.set_ylabel("test accuracy")
    ax.set_title("Running statistics give one answer; test-batch statistics depend on the batch")
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    return fig
