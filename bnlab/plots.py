"""Plots of the course, in one style: one colour per variant in every lesson, labelled axes, and
titles that state the finding.

Each function draws into axes it is given (or a new figure) and returns the Figure, so a widget can
keep the figure and redraw it, and a test can look at what was drawn.
"""

from __future__ import annotations

import weakref

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
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
    "plot_layer_histogram",
    "shared_colorbar",
    "remove_colorbar",
    "line_styles",
    "plot_image_grid",
    "plot_gradient_terms",
    "plot_message",
    "plot_gradient_flow",
    "plot_update_ratio",
    "plot_curves",
    "curve_colors",
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


def _per_sample_bars(ax, series: dict, n: int, ylabel: str, what: str) -> None:
    """Grouped bars, one group per sample i of the batch: series = {legend label: ((n,) values, colour)};
    what names a series in the error for a wrong length ('term', 'variant')."""
    width = 0.8 / max(1, len(series))
    for i, (label, (values, color)) in enumerate(series.items()):
        values = np.ravel(values)
        if len(values) != n:
            raise ValueError(f"{what} {label!r} has {len(values)} values, dx has {n}")
        ax.bar(np.arange(n) + (i - (len(series) - 1) / 2) * width, values, width, color=color, label=label)
    ax.set_xlabel("sample index i in the batch")
    ax.set_ylabel(ylabel)


def plot_sample_gradients(dx_by_variant: dict, ax=None, title: str | None = None,
                          labels: dict | None = None) -> Figure:
    """Bar chart of dL/dx per sample (one feature), side by side for each variant ('plain', 'bn', ...).
    labels overrides the legend text per variant."""
    fig, ax = _axis(ax, width=6.5)
    ax.clear()
    n = len(next(iter(dx_by_variant.values())))
    _per_sample_bars(ax, {(labels or {}).get(key, LABELS.get(key, key)): (dx, COLORS.get(key, "k"))
                          for key, dx in dx_by_variant.items()}, n, "dL/dx_i", "variant")
    ax.axhline(0, color="k", lw=0.8)
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


def _fraction_axis(ax) -> None:
    """Fractions with two decimals: tick labels of one width at every step, so a layout solved
    once keeps the y label inside the figure while the histogram's peak grows or shrinks."""
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2f"))


def plot_layer_histogram(record, index: int, key: str, ax=None, gradients: bool = False,
                         percentiles=None, xlabel: str | None = None, title: str | None = None) -> Figure:
    """One layer's histogram at one recorded step (index into the recording's steps), in the variant's
    colour: the fraction of the layer's values a (or of log10 |dL/da|, gradients=True) in each bin.
    percentiles: {q: value} to mark with vertical lines, the median (q = 50) solid, the others dashed.
    record: a bnlab.probes layer record (hist (records, bins), edges (bins + 1,), grad_hist, grad_edges)."""
    fig, ax = _axis(ax, width=4.5)
    ax.clear()
    edges = record.grad_edges if gradients else record.edges
    hist = (record.grad_hist if gradients else record.hist)[index]
    ax.stairs(hist, edges, fill=True, color=COLORS.get(key, "k"), alpha=0.8)
    for q, value in (percentiles or {}).items():
        ax.axvline(value, color="k", lw=0.8, ls="-" if q == 50 else "--")
    ax.set_xlabel(xlabel or ("log10 |dL/da|" if gradients else "value a"))
    ax.set_ylabel("fraction of values")
    _fraction_axis(ax)
    if title is not None:
        ax.set_title(title)
    return fig


def plot_histogram_grid(recording, index: int, key: str, axes=None, gradients: bool = False) -> Figure:
    """Histograms of every recorded layer at one recorded step (index into recording.steps), side by side.
    gradients=True shows log10|dL/da| instead of the activations a."""
    layers = list(recording.layers)
    if axes is None:
        fig, axes = new_figure(len(layers), width=2.8, height=2.6)
    fig = axes[0].figure
    for ax, layer in zip(axes, layers):
        plot_layer_histogram(recording[layer], index, key, ax, gradients=gradients, title=layer)
    fig.suptitle(f"{LABELS.get(key, key)}: every layer at step {int(recording.steps[index])}")
    return fig


HEATMAP_LABEL = "log10 fraction of values in the bin"
HEATMAP_RANGE = (-5, 0)   # 1e-5 .. all values in one bin: the same colour scale in every heatmap
_colorbars: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # axes -> its heatmap's colour bar


def plot_histogram_heatmap(record, steps, ax=None, gradients: bool = False, title: str | None = None,
                           mark_step: int | None = None, colorbar: bool = True) -> Figure:
    """A layer's histogram over training as an image (the "colorful dimension" plot): x = step,
    y = value, colour = log10 of the fraction of values in the bin (HEATMAP_RANGE, the same in every
    heatmap). mark_step draws a vertical line. colorbar adds a labelled colour bar beside the axis
    (kept and reused when the same axis is drawn again); for several heatmaps in one figure pass
    colorbar=False and call `shared_colorbar(axes)` once."""
    fig, ax = _axis(ax, width=6)
    ax.clear()
    hist = np.asarray(record.grad_hist if gradients else record.hist, dtype=np.float64)
    edges = record.grad_edges if gradients else record.edges
    steps = np.asarray(steps)
    image = np.log10(np.maximum(hist.T, 10.0 ** HEATMAP_RANGE[0]))
    mappable = ax.imshow(image, origin="lower", aspect="auto", cmap="viridis", vmin=HEATMAP_RANGE[0],
                         vmax=HEATMAP_RANGE[1], extent=(steps[0], steps[-1], edges[0], edges[-1]),
                         interpolation="nearest")
    if mark_step is not None:
        ax.axvline(mark_step, color="w", lw=1, ls="--")
    ax.set_xlabel("training step")
    ax.set_ylabel("log10 |dL/da|" if gradients else "value a")
    ax.set_title(title or "Distribution over training")
    if colorbar:
        existing = _colorbars.get(ax)
        if existing is not None and existing.ax.figure is fig and existing.ax in fig.axes:
            # what fig.colorbar does for a new mappable, so that removing the bar later works too
            existing.update_normal(mappable)
            mappable.colorbar = existing
            mappable.colorbar_cid = mappable.callbacks.connect("changed", existing.update_normal)
        else:
            _colorbars[ax] = fig.colorbar(mappable, ax=ax, label=HEATMAP_LABEL)
    else:
        remove_colorbar(ax)
    return fig


def shared_colorbar(axes, label: str = HEATMAP_LABEL):
    """One colour bar for several heatmaps drawn with colorbar=False (they share HEATMAP_RANGE),
    beside all of them; returns the Colorbar."""
    axes = list(np.ravel(axes))
    images = [im for ax in axes for im in ax.images]
    if not images:
        raise ValueError("shared_colorbar needs axes with a heatmap drawn in them (plot_histogram_heatmap)")
    return axes[0].figure.colorbar(images[0], ax=axes, label=label)


def remove_colorbar(ax) -> None:
    """Remove the colour bar plot_histogram_heatmap put beside ax, if there is one (a widget that
    switches the axis to another kind of plot)."""
    existing = _colorbars.pop(ax, None)
    if existing is not None and existing.ax in existing.ax.figure.axes:
        existing.remove()


LINE_STYLES = ("-", "--", ":", "-.")


def _legend_label(text: str) -> str:
    """'bn, relu' -> 'with BN, relu': the variant's label, then the rest of the key."""
    key, rest = split_label(text)
    if key is None:
        return LABELS.get(text, text)
    return f"{LABELS[key]}, {rest}" if rest else LABELS[key]


def line_styles(labels) -> dict:
    """{label: (colour, line style)} for keys like 'bn, relu', 'bn, tanh', 'plain, relu': the colour
    is the variant's (the text before the first comma), the line style one per distinct rest of the
    key (solid, dashed, dotted, dash-dot, in order of first appearance; a key without a rest counts
    as one more rest)."""
    rests: dict = {}
    styles = {}
    for text in labels:
        key, rest = split_label(text)
        style = LINE_STYLES[rests.setdefault(rest, len(rests)) % len(LINE_STYLES)]
        styles[text] = (COLORS[key] if key else "k", style)
    return styles


def plot_gradient_flow(norms: dict, ax=None, title: str | None = None, ylabel: str = "||dL/dW|| of the layer",
                       markers: bool = True) -> Figure:
    """Per-layer gradient norms (log scale) against layer index, one line per key.

    norms: {key: array over layers 1..L} (layer 1 next to the input). A key is a variant ('plain',
    'bn') optionally followed by a comma and what else tells the runs apart ('bn, relu', 'plain, step
    295'): the variant picks the colour, the rest the line style (see `line_styles`), and the legend
    shows both. The default title states the finding: the key whose gradient changes most from the
    last hidden layer to the first, and by how much.
    """
    fig, ax = _axis(ax, width=6)
    ax.clear()
    styles = line_styles(norms)
    ratios = {}
    for label, values in norms.items():
        values = np.asarray(values, dtype=np.float64)
        color, style = styles[label]
        ax.semilogy(np.arange(1, len(values) + 1), values, ls=style, marker="o" if markers else None, ms=3,
                    color=color, label=_legend_label(label))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[label] = values[0] / values[-1]
    ax.set_xlabel("hidden layer (1 = next to the input)")
    ax.set_ylabel(ylabel)
    finite = {k: r for k, r in ratios.items() if np.isfinite(r) and r > 0}
    if title is None and finite:
        extreme = max(finite, key=lambda k: abs(np.log(finite[k])))
        title = f"{_legend_label(extreme)}: layer 1 gets {finite[extreme]:.2g}x the last layer's gradient"
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


def curve_colors(labels, colors: dict | None = None) -> dict:
    """{label: colour} for runs labelled by variant ('plain, lr 0.03'): colors[label] where given;
    else the variant's colour, or, where a variant has several runs, its shades light to dark in the
    order given (`shades`), so that plain at three learning rates is three greys, not one."""
    colors = colors or {}
    keys = {label: split_label(label)[0] for label in labels if label not in colors}
    counts: dict = {}
    for key in keys.values():
        counts[key] = counts.get(key, 0) + 1
    seen: dict = {}
    out = {}
    for label in labels:
        if label in colors:
            out[label] = colors[label]
            continue
        key = keys[label]
        i = seen[key] = seen.get(key, -1) + 1
        out[label] = COLORS.get(key, "k") if counts[key] == 1 else shades(key or "", counts[key])[i]
    return out


def plot_curves(histories: dict, quantity: str = "test_accuracy", ax=None, title: str | None = None,
                colors: dict | None = None) -> Figure:
    """Test accuracy, loss per step or another recorded test metric (e.g. 'iou') of several runs on
    one axis. histories: {label: History}; a label's colour is colors[label], else that of its variant
    (the text before a comma), in shades where one variant has several runs (`curve_colors`).

    A run whose loss stopped being finite (History.diverged_at = N) is marked with an x at step N
    on the bottom of the axis, in its colour, and its legend says "(diverged at step N)". The
    default title names the run with the best final value."""
    # a metric every run recorded: one run without it would leave a line out of the plot
    shared = set.intersection(*(set(h.metrics) for h in histories.values())) if histories else set()
    known = {"test_accuracy", "loss"} | shared
    if quantity not in known:
        raise ValueError(f"quantity must be one of {sorted(known)}, got {quantity!r}")
    fig, ax = _axis(ax, width=6)
    ax.clear()
    palette = curve_colors(list(histories), colors)
    # x in data coordinates, y in axes coordinates: the divergence mark sits on the bottom edge
    bottom = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
    finals = {}
    for label, history in histories.items():
        color, name = palette[label], _legend_label(label)
        diverged_at = getattr(history, "diverged_at", None)
        if diverged_at is not None:
            name += f" (diverged at step {diverged_at})"
        if quantity == "loss":
            line, = ax.semilogy(np.arange(1, len(history.loss) + 1), history.loss, color=color, lw=1, label=name)
            values = history.loss
        else:
            values = history.test_accuracy if quantity == "test_accuracy" else history.metrics[quantity]
            line, = ax.plot(history.eval_steps, values, color=color, lw=1.5, label=name)
        if diverged_at is not None:
            ax.plot([diverged_at], [0.04], transform=bottom, marker="X", ms=9, color=color, mec="k", mew=0.6,
                    ls="none", clip_on=False, zorder=5, label="_diverged")
        elif len(values) and np.isfinite(values[-1]):
            finals[label] = float(values[-1])
    names = {"loss": "training loss (cross-entropy)", "test_accuracy": "test accuracy",
             "iou": "test mean IoU", "dice": "test mean Dice"}
    ax.set_xlabel("training step")
    ax.set_ylabel(names.get(quantity, quantity))
    if title is None:
        what = ("Training loss" if quantity == "loss"
                else names.get(quantity, quantity).capitalize() + " during training")
        if finals and len(histories) > 1:
            best = (min if quantity == "loss" else max)(finals, key=finals.get)
            what += f": {_legend_label(best)} ends best ({finals[best]:.3g})"
        title = what
    ax.set_title(title)
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


def plot_masks(images, masks, predictions: dict, class_names, n: int = 4, axes=None,
               title: str | None = None) -> Figure:
    """n test images, their true masks and each model's predicted masks, one row per image.

    images: (N, 1, H, W); masks: (N, H, W) class indices; predictions: {label: (N, H, W)}. Classes
    use one fixed colour each (0, the background, is black)."""
    columns = 2 + len(predictions)
    if axes is None:
        _, axes = plt.subplots(n, columns, figsize=(1.6 * columns, 1.6 * n + 0.4), layout="constrained",
                               squeeze=False)
    fig = axes[0][0].figure
    class_colors = ["black", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    cmap = matplotlib.colors.ListedColormap(class_colors[:len(class_names)])
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


# ----------------------------------------------------------------------------- lesson 02: the three terms of dx
TERM_COLORS = ("#1f77b4", "#aec7e8", "#ff9896")   # the sample's own term in BN blue, the two coupling terms lighter


def plot_gradient_terms(terms: dict, dx, ax=None, title: str | None = None) -> Figure:
    """The compact BN backward of one feature, per sample i, as grouped bars of its three terms

        dx_i = gamma / (m sqrt(var + eps)) * (m dy_i  -  sum_j dy_j  -  x_hat_i sum_j dy_j x_hat_j)

    each already multiplied by the prefactor, and their sum dx_i as a black dot.
    terms: {name: (m,)} (three of them, as `bnlab.widgets.GradientCoupling.terms` gives), dx: (m,)."""
    fig, ax = _axis(ax, width=6.5)
    ax.clear()
    dx = np.ravel(dx)
    n = len(dx)
    series = {name: (values, TERM_COLORS[i % len(TERM_COLORS)]) for i, (name, values) in enumerate(terms.items())}
    _per_sample_bars(ax, series, n, "contribution to dL/dx_i", "term")
    ax.plot(np.arange(n), dx, "o", color="k", ms=4, label="their sum dx_i", zorder=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title(title or "dx = own + mean + scale term; over the batch they cancel: sum dx = 0")
    ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- images (lesson 08)
def plot_image_grid(images, titles=None, vmin: float | None = None, vmax: float | None = None,
                    title: str | None = None, width: float = 1.2, height: float = 1.5) -> Figure:
    """A row of grey images on one common grey scale, so brightness can be compared across them.

    images: (n, H, W) or (n, 1, H, W), array or tensor; titles: n strings above the images (e.g.
    "3  mean 1.2"); vmin, vmax: the grey scale (default: the smallest and largest value of all the
    images); title: the figure's suptitle. Returns the Figure, one axis per image.
    """
    images = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float64)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images must be (n, H, W) or (n, 1, H, W) with n >= 1, got shape {images.shape}")
    titles = list(titles) if titles is not None else [None] * len(images)
    if len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    vmin = float(images.min()) if vmin is None else vmin
    vmax = float(images.max()) if vmax is None else vmax
    if not vmin < vmax:
        raise ValueError(f"the grey scale needs vmin < vmax, got {vmin} and {vmax}")
    fig, axes = new_figure(len(images), width=width, height=height)
    for ax, image, text in zip(axes, images, titles):
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
        if text:
            ax.set_title(text, fontsize=8)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_message(ax, text: str) -> None:
    """Replace what ax shows by a centred message (an explorer's panel with nothing recorded yet)."""
    ax.clear()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
