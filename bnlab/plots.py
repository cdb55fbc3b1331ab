"""Plots of the course, in one style: one colour per variant in every lesson, labelled axes, and
titles that state the finding.

Each function draws into axes it is given (or a new figure) and returns the Figure, so a widget can
keep the figure and redraw it, and a test can look at what was drawn.
"""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .variants import NORM_REGISTRY, VARIANTS, split_label, variant_key

__all__ = [
    "COLORS",
    "LABELS",
    "new_figure",
    "plot_before_after",
    "plot_eps_gain",
    "plot_sample_gradients",
    "plot_running_mean",
    "plot_accuracy_by_batching",
    "shades",
    "plot_percentile_bands",
    "plot_histogram_grid",
    "plot_histogram_heatmap",
    "plot_gradient_flow",
    "plot_update_ratio",
    "plot_curves",
    "plot_sweep",
    "plot_masks",
    "variant",
    "NORM_KEYS",
]

# One colour and one label per variant, across all lessons: views of bnlab.variants' registry.
COLORS = {key: v.color for key, v in VARIANTS.items()}
LABELS = {key: v.label for key, v in VARIANTS.items()}
# bnlab.models' norm names -> the variant keys above (our BN and torch's are the same variant)
NORM_KEYS = {name: norm.variant for name, norm in NORM_REGISTRY.items()}


def variant(norm) -> str:
    """The colour/label key of a bnlab.models norm name (None -> 'plain'), or norm itself if it is a key."""
    return variant_key(norm)


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


# ----------------------------------------------------------------------------- probes (lessons 04, 05)
def shades(key: str, n: int) -> list:
    """n shades of a variant's colour, light to dark, for several runs of one variant (e.g. learning rates)."""
    base = np.array(matplotlib.colors.to_rgb(COLORS.get(key, "k")))
    return [tuple(1 - (1 - base) * f) for f in np.linspace(0.45, 1.0, n)]


def plot_percentile_bands(bands: dict, axes=None, title: str | None = None, ylabel: str = "sigmoid input") -> Figure:
    """One axis per variant: the 15th-85th percentile band (shaded) and the median over training steps.

    bands: {variant: (steps (n,), percentiles (n, 3) = 15th, 50th, 85th)}, variant in COLORS.
    """
    if axes is None:
        fig, axes = new_figure(len(bands), width=4.2, height=3.0)
    fig = axes[0].figure
    for ax, (key, (steps, p)) in zip(axes, bands.items()):
        ax.clear()
        p = np.asarray(p)
        ax.fill_between(steps, p[:, 0], p[:, 2], color=COLORS.get(key, "k"), alpha=0.25, lw=0,
                        label="15th-85th percentile")
        ax.plot(steps, p[:, 1], color=COLORS.get(key, "k"), lw=1.8, label="median")
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        ax.set_title(LABELS.get(key, key))
        ax.legend(fontsize=8, loc="upper left")
    lows = [np.nanmin(np.asarray(p)[:, 0]) for _, p in bands.values()]
    highs = [np.nanmax(np.asarray(p)[:, 2]) for _, p in bands.values()]
    for ax in axes[:len(bands)]:
        ax.set_ylim(min(lows) - 0.1, max(highs) + 0.1)
    fig.suptitle(title or "Without BN the distribution drifts; with BN it stays put")
    return fig


def plot_histogram_grid(recording, index: int, key: str, axes=None, gradients: bool = False) -> Figure:
    """Histograms of every recorded layer at one recorded step (index into recording.steps), side by side.
    gradients=True shows log10|dL/da| instead of the activations a."""
    layers = list(recording.layers)
    if axes is None:
        fig, axes = new_figure(len(layers), width=2.8, height=2.6)
    fig = axes[0].figure
    for ax, layer in zip(axes, layers):
        record = recording[layer]
        edges = record.grad_edges if gradients else record.edges
        hist = (record.grad_hist if gradients else record.hist)[index]
        ax.clear()
        ax.stairs(hist, edges, fill=True, color=COLORS.get(key, "k"), alpha=0.8)
        ax.set_xlabel("log10 |dL/da|" if gradients else "value a")
        ax.set_ylabel("fraction of values")
        ax.set_title(layer)
    fig.suptitle(f"{LABELS.get(key, key)}: every layer at step {int(recording.steps[index])}")
    return fig


def plot_histogram_heatmap(record, steps, ax=None, gradients: bool = False, title: str | None = None,
                           mark_step: int | None = None) -> Figure:
    """A layer's histogram over training as an image (the "colorful dimension" plot): x = step,
    y = value, colour = log10 of the fraction of values in the bin. mark_step draws a vertical line."""
    fig, ax = _axis(ax, width=6)
    ax.clear()
    hist = np.asarray(record.grad_hist if gradients else record.hist, dtype=np.float64)
    edges = record.grad_edges if gradients else record.edges
    steps = np.asarray(steps)
    image = np.log10(np.maximum(hist.T, 1e-5))
    ax.imshow(image, origin="lower", aspect="auto", cmap="viridis", vmin=-5, vmax=0,
              extent=(steps[0], steps[-1], edges[0], edges[-1]), interpolation="nearest")
    if mark_step is not None:
        ax.axvline(mark_step, color="w", lw=1, ls="--")
    ax.set_xlabel("training step")
    ax.set_ylabel("log10 |dL/da|" if gradients else "value a")
    ax.set_title(title or "Distribution over training (colour: log10 fraction)")
    return fig


def plot_gradient_flow(norms: dict, ax=None, title: str | None = None, ylabel: str = "||dL/dW|| of the layer") -> Figure:
    """Per-layer gradient norms (log scale) against layer index, one line per variant.

    norms: {variant: array over layers 1..L} (layer 1 next to the input); variant keys pick colours,
    other keys ('bn, lr 0.1') may be given with the variant first and a comma.
    """
    fig, ax = _axis(ax, width=6)
    ax.clear()
    for label, values in norms.items():
        key = label.split(",")[0]
        values = np.asarray(values, dtype=np.float64)
        ax.semilogy(np.arange(1, len(values) + 1), values, "o-", ms=3, color=COLORS.get(key, "k"),
                    label=LABELS.get(label, label))
    ax.set_xlabel("hidden layer (1 = next to the input)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "Gradient norm per layer")
    ax.legend(fontsize=8)
    return fig


def plot_update_ratio(recording, key: str, ax=None, reference: float = 1e-3, weights_only: bool = True,
                      title: str | None = None, names: list | None = None) -> Figure:
    """log10 of update:data = ||delta theta|| / ||theta|| over training, one line per parameter, with the
    rule-of-thumb reference (about 1e-3: each step changes a weight by a thousandth of its size).
    names: the parameters to show (default: every weight, or every parameter if not weights_only)."""
    fig, ax = _axis(ax, width=6)
    ax.clear()
    names = names or [n for n in recording.params if not weights_only or n.endswith("weight")]
    for color, name in zip(shades(key, len(names)), names):
        ratio = recording.params[name].update_data
        with np.errstate(divide="ignore", invalid="ignore"):
            ax.plot(recording.steps, np.log10(ratio), color=color, lw=1, label=name)
    ax.axhline(np.log10(reference), color="k", ls="--", lw=1, label=f"reference {reference:g}")
    ax.set_xlabel("training step")
    ax.set_ylabel("log10 (update : data)")
    ax.set_title(title or f"{LABELS.get(key, key)}: size of each step relative to the weights")
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_curves(histories: dict, quantity: str = "test_accuracy", ax=None, title: str | None = None,
                colors: dict | None = None) -> Figure:
    """Test accuracy, loss per step or another recorded test metric (e.g. 'iou') of several runs on
    one axis. histories: {label: History}; a label's colour is colors[label], else the colour of its
    variant (the text before a comma)."""
    # a metric every run recorded: one run without it would leave a line out of the plot
    shared = set.intersection(*(set(h.metrics) for h in histories.values())) if histories else set()
    known = {"test_accuracy", "loss"} | shared
    if quantity not in known:
        raise ValueError(f"quantity must be one of {sorted(known)}, got {quantity!r}")
    fig, ax = _axis(ax, width=6)
    ax.clear()
    for label, history in histories.items():
        color = (colors or {}).get(label, COLORS.get(label.split(",")[0], "k"))
        if quantity == "loss":
            ax.semilogy(np.arange(1, len(history.loss) + 1), history.loss, color=color, lw=1,
                        label=LABELS.get(label, label))
        else:
            values = history.test_accuracy if quantity == "test_accuracy" else history.metrics[quantity]
            ax.plot(history.eval_steps, values, color=color, lw=1.5, label=LABELS.get(label, label))
    names = {"loss": "training loss (cross-entropy)", "test_accuracy": "test accuracy",
             "iou": "test mean IoU", "dice": "test mean Dice"}
    ax.set_xlabel("training step")
    ax.set_ylabel(names.get(quantity, quantity))
    ax.set_title(title or ("Training loss" if quantity == "loss" else names.get(quantity, quantity).capitalize()
                           + " during training"))
    ax.legend(fontsize=8)
    return fig


def plot_sweep(finals: dict, setting: str, ax=None, title: str | None = None, ylabel: str = "final test accuracy",
               log_base: int | None = 10, marker=None, chance: float | None = None) -> Figure:
    """A final result against a swept setting, one line per variant: finals = {variant: {value: y}}
    (value: a learning rate, a batch size; y a number or a list over seeds, drawn as mean and
    min-max). marker: a setting value to mark with a vertical line (the explorer's selection)."""
    fig, ax = _axis(ax, width=5)
    ax.clear()
    for name, by_value in finals.items():
        values = sorted(by_value)
        ys = [np.atleast_1d(by_value[v]).astype(float) for v in values]
        key = variant(name)
        means = [y.mean() for y in ys]
        ax.plot(values, means, "o-", color=COLORS[key], lw=1.5, ms=4, label=LABELS[key])
        if any(len(y) > 1 for y in ys):
            ax.fill_between(values, [y.min() for y in ys], [y.max() for y in ys], color=COLORS[key], alpha=0.15)
    if log_base:
        ax.set_xscale("log", base=log_base)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
    if marker is not None:
        ax.axvline(marker, color="k", lw=0.8, alpha=0.5)
    ax.set_xlabel(setting)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel.capitalize()} against {setting}")
    ax.legend(fontsize=8)
    return fig


def plot_masks(images, masks, predictions: dict, class_names, n: int = 4, axes=None, title: str | None = None) -> Figure:
    """n test images, their true masks and each model's predicted masks, one row per image.

    images: (N, 1, H, W); masks: (N, H, W) class indices; predictions: {label: (N, H, W)}. Classes
    use one fixed colour each (0, the background, is black)."""
    columns = 2 + len(predictions)
    if axes is None:
        _, axes = plt.subplots(n, columns, figsize=(1.6 * columns, 1.6 * n + 0.4), layout="constrained",
                               squeeze=False)
    fig = axes[0][0].figure
    cmap = matplotlib.colors.ListedColormap(["black", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"][:len(class_names)])
    titles = ["image", "true mask"] + [LABELS.get(label, label) for label in predictions]
    for row in range(n):
        panels = [images[row, 0], masks[row]] + [p[row] for p in predictions.values()]
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.clear()
            if col == 0:
                ax.imshow(np.asarray(panel), cmap="gray")
            else:
                ax.imshow(np.asarray(panel), cmap=cmap, vmin=-0.5, vmax=len(class_names) - 0.5, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
    if title:
        fig.suptitle(title)
    return fig
