"""LossSliceExplorer's slices, loss ranges, loss at k, titles and readouts, computed in Python from
recorded GradientPaths built here, for tests/js/loss_slice_explorer.test.mjs."""

import html

import numpy as np

from bnlab import plots
from bnlab.experiments import LandscapeRun
from bnlab.landscape import GradientPath
from bnlab.widgets import LossSliceExplorer

KS = np.linspace(0.25, 4.0, 16)
STEPS = [0, 10, 20]


def synthetic_runs(seed: int = 0) -> dict:
    """{norm: LandscapeRun} whose slices are known parabolas plus noise: plain steep, BN flat."""
    rng = np.random.default_rng(seed)
    runs = {}
    for norm, curvature in ((None, 3.0), ("torch_bn", 0.02), ("noisy", 0.5)):
        paths = []
        for i, _ in enumerate(STEPS):
            loss0 = 2.3 / (i + 1)
            losses = loss0 - 0.1 * KS + curvature * KS**2 * (1 + i) + 0.01 * rng.random(len(KS))
            paths.append(GradientPath(ks=KS, losses=losses, loss=loss0, grad_norm=1.0, lr=0.1,
                                      gradient_changes=np.ones(len(KS))))
        runs[norm] = LandscapeRun(norm=norm, seed=seed, lr=0.1, steps=list(STEPS), paths=paths, shifts=[None] * 3)
    return runs


def readout(explorer, step, k) -> str:
    """The readout table as explorer.js's table() writes it, with Python's number formats."""
    j = int(np.argmin(np.abs(KS - k)))
    head = "".join(f"<th style='padding:0 10px'>{html.escape(h, quote=False)}</th>"
                   for h in ["", "loss range over k", "L(θ)", f"L(θ − k·lr·g) at k = {KS[j]:.3g}"])
    body = ""
    for key, (losses, loss0) in explorer.slices(step).items():
        cells = [f"{losses.max() - losses.min():.3g}", f"{loss0:.4g}", f"{losses[j]:.4g}"]
        body += (f"<tr><td style='padding:0 10px'>{plots.LABELS[key]}</td>"
                 + "".join(f"<td style='padding:0 10px; text-align:right'>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{body}</table>"


def fixtures() -> dict:
    runs = synthetic_runs()
    explorer = LossSliceExplorer(runs, step=10, k=1.0)
    cases = []
    for step in STEPS:
        i = STEPS.index(step)
        for k in (0.25, 1.0, 1.1, 2.4, 4.0):
            j = int(np.argmin(np.abs(KS - k)))
            cases.append({"settings": {"step": step, "k": k}, "index": i, "k_index": j, "k_chosen": float(KS[j]),
                          "ranges": {plots.variant(n): float(r.paths[i].loss_range) for n, r in runs.items()},
                          "at_k": {plots.variant(n): float(r.paths[i].losses[j]) for n, r in runs.items()},
                          "title": explorer.title(step), "readout": readout(explorer, step, k)})
    only_bn = LossSliceExplorer({"torch_bn": runs["torch_bn"]}, step=0)
    flipped = LossSliceExplorer({None: runs["torch_bn"], "bn": runs[None]}, step=0)   # BN the steeper one
    return {"loss_slice_explorer": {"data": dict(explorer.data), "cases": cases,
                                    "only_bn": {"data": dict(only_bn.data), "title": only_bn.title(0)},
                                    "flipped": {"data": dict(flipped.data), "title": flipped.title(20)}}}
