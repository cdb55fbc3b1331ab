"""SweepExplorer's sweeps and what the view must make of them at each setting, for
tests/js/sweep_explorer.test.mjs: the numbers from the Histories themselves, the axis limits and
log ticks from matplotlib's own autoscale and LogLocator on the same data."""

import matplotlib
import numpy as np

matplotlib.use("Agg")

from bnlab import plots  # noqa: E402
from bnlab.train import History  # noqa: E402
from bnlab.widgets import SweepExplorer  # noqa: E402


def _sweeps():
    rng = np.random.default_rng(7)

    def run(steps, final, diverge=None):
        loss = list(np.exp(-np.linspace(0, 3, steps)) * 2.3 + rng.random(steps) * 0.05)
        evals = list(range(0, steps + 1, max(1, steps // 5)))
        accuracy = list(np.linspace(0.1, final, len(evals)) + rng.random(len(evals)) * 1e-4)
        if diverge is not None:
            loss = loss[:diverge - 1] + [float("nan")]
            evals = [e for e in evals if e < diverge]
            accuracy = accuracy[:len(evals)]
        return History(loss=loss, eval_steps=evals, test_accuracy=accuracy, diverged_at=diverge)

    lrs = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    lesson06 = {(v, lr): run(60, 0.5 + 0.4 * np.exp(-abs(np.log10(lr) + 1.5)) - 0.1 * k,
                             diverge=37 if (v == "plain" and lr == 1.0) else None)
                for k, v in enumerate(("plain", "plain_he", "bn")) for lr in lrs}
    seeded = {("bn" if norm else None, b, seed): run(300 // b, 0.9 - (0.6 / b if norm else 0.05) + 0.02 * seed)
              for norm in (None, "bn") for b in (2, 4, 8, 16, 32, 64) for seed in (1, 0, 2)}
    return [("lesson 06", SweepExplorer(lesson06, setting="learning rate", chance=0.1, value=0.01)),
            ("seeds, base 2", SweepExplorer(seeded, setting="batch size", log_base=2, chance=0.1, value=2)),
            ("linear", SweepExplorer({k: h for k, h in seeded.items() if k[2] == 0}, setting="batch size",
                                     log_base=None))]


def _limits(draw, log_x=None, log_y=False):
    fig = plots.Figure()
    ax = fig.subplots()
    if log_x:
        ax.set_xscale("log", base=log_x)
    if log_y:
        ax.set_yscale("log")
    draw(ax)
    return ax


def _case(name, e):
    settings = []
    for i, value in enumerate(e.settings):
        runs, curves = {}, {}
        for norm in e.variants:
            key = plots.variant(norm)
            h = e.shown[(norm, value)]
            runs[key] = {"loss": [None if not np.isfinite(v) else v for v in h.loss], "accuracy": list(h.test_accuracy),
                         "eval_steps": list(h.eval_steps), "diverged_at": h.diverged_at}
        finals = {}
        for norm in e.variants:
            ys = [np.asarray(e.finals[norm][v], dtype=float) for v in e.settings]
            finals[plots.variant(norm)] = {"mean": [y.mean() for y in ys], "min": [y.min() for y in ys],
                                           "max": [y.max() for y in ys], "spread": any(len(y) > 1 for y in ys)}
        for quantity in SweepExplorer.QUANTITIES:
            loss = quantity == "training loss"

            def draw(ax):
                # as bnlab.plots.plot_curves draws them, the divergence mark included
                for r in runs.values():
                    if loss:
                        ax.plot(np.arange(1, len(r["loss"]) + 1), [np.nan if v is None else v for v in r["loss"]])
                    else:
                        ax.plot(r["eval_steps"], r["accuracy"])
                    if r["diverged_at"] is not None:
                        ax.plot([r["diverged_at"]], [0.04], transform=ax.get_xaxis_transform())

            ax = _limits(draw, log_y=loss)
            curves[quantity] = {"xlim": list(ax.get_xlim()), "ylim": list(ax.get_ylim())}

        ax = _limits(lambda ax: plots.plot_sweep(
            {plots.variant(n): e.finals[n] for n in e.variants}, e.setting, ax=ax, log_base=e.log_base,
            marker=value, chance=e.chance))
        xlim = list(ax.get_xlim())
        ticks = [t for t in ax.get_xticks() if xlim[0] <= t <= xlim[1]] if e.log_base else None
        readout = {plots.LABELS[plots.variant(n)]: [f"{h.test_accuracy[-1]:.3f}",
                                                    "diverged" if h.diverged else f"{h.loss[-1]:.3f}"]
                   for n, h in ((n, e.shown[(n, value)]) for n in e.variants)}
        # the labels plot_curves gives the runs, and plot_sweep's chance line
        left = _limits(lambda ax: plots.plot_curves({plots.variant(n): e.shown[(n, value)] for n in e.variants}, ax=ax))
        legend = left.get_legend_handles_labels()[1] + (["chance"] if e.chance is not None else [])
        settings.append({"index": i, "runs": runs, "finals": finals, "curves": curves,
                         "sweep": {"xlim": xlim, "ylim": list(ax.get_ylim()), "ticks": ticks},
                         "readout": {"header": [f"{e.setting} = {value}", "final test accuracy", "last loss"],
                                     "rows": readout},
                         "legend": legend})
    return {"name": name, "data": e.data, "settings": settings}


def fixtures() -> dict:
    return {"sweep": [_case(name, e) for name, e in _sweeps()]}
