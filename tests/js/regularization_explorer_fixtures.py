"""RegularizationExplorer's per-cell gaps, best batch sizes, titles and readouts, computed in Python
with numpy from a synthetic grid built here, for tests/js/regularization_explorer.test.mjs."""

import html
import itertools

import numpy as np

from bnlab.experiments import RegularizationRun
from bnlab.widgets import RegularizationExplorer

BATCHES, DROPOUTS, DECAYS, SEEDS = [4, 16, 64, 300], [0.0, 0.5], [0.0, 0.005], [0, 1, 2]


def synthetic_grid(seed: int = 0) -> dict:
    """Accuracies rounded to 4 digits (what the explorer keeps), gaps shrinking with dropout."""
    rng = np.random.default_rng(seed)
    grid = {}
    for b, d, w, s in itertools.product(BATCHES, DROPOUTS, DECAYS, SEEDS):
        train = round(float(1 - 0.01 * rng.random()), 4)
        test = round(float(0.85 + 0.02 * np.log(b) * (1 - d) + 0.01 * rng.random() - 5 * w), 4)
        grid[b, d, w, s] = RegularizationRun(b, d, w, s, train, test)
    return grid


def readout(grid, b, d, w) -> str:
    head = "".join(f"<th style='padding:0 10px'>{html.escape(h, quote=False)}</th>"
                   for h in ["", "train accuracy (%)", "test accuracy (%)", "gap (points)"])
    body = ""
    for s in SEEDS:
        r = grid[b, d, w, s]
        cells = [f"{100 * r.train_accuracy:.1f}", f"{100 * r.test_accuracy:.1f}",
                 f"{100 * (r.train_accuracy - r.test_accuracy):.1f}"]
        body += (f"<tr><td style='padding:0 10px'>seed {s}</td>"
                 + "".join(f"<td style='padding:0 10px; text-align:right'>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{body}</table>"


def fixtures() -> dict:
    grid = synthetic_grid()
    explorer = RegularizationExplorer(grid, batch_size=16)
    cases = []
    for b, d, w in itertools.product(BATCHES, DROPOUTS, DECAYS):
        means = [np.mean([grid[bb, d, w, s].train_accuracy - grid[bb, d, w, s].test_accuracy for s in SEEDS])
                 for bb in BATCHES]
        best = BATCHES[int(np.argmin(means))]
        cases.append({"settings": {"batch_size": b, "dropout": d, "weight_decay": w, "panel": "gap"},
                      "means": [float(m) for m in means], "best": best,
                      "title": (f"Batch {b}, dropout {d:g}, weight decay {w:g}: train-test gap "
                                f"{100 * means[BATCHES.index(b)]:.1f} points (smallest at batch {best})"),
                      "readout": readout(grid, b, d, w)})
    return {"regularization_explorer": {"data": dict(explorer.data), "cases": cases}}
