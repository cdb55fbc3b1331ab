"""LossSliceExplorer's slices, loss ranges, loss at k, titles and readouts, computed in Python from
recorded GradientPaths built here, for tests/js/loss_slice_explorer.test.mjs: runs of one seed, and
runs of three seeds each."""

import html

import numpy as np

from bnlab import plots
from bnlab.experiments import LandscapeRun
from bnlab.landscape import GradientPath
from bnlab.widgets import LossSliceExplorer

KS = np.linspace(0.25, 4.0, 16)
STEPS = [0, 10, 20]
SEEDS = [0, 1, 2]


def synthetic_runs(seed: int = 0, ks=KS, steps=STEPS) -> dict:
    """{norm: LandscapeRun} whose slices are known parabolas plus noise: plain steep, BN flat; each
    seed's a little steeper than the one before (seed 0 as it always was)."""
    rng = np.random.default_rng(seed)
    ks = np.asarray(ks, dtype=np.float64)
    runs = {}
    for norm, curvature in ((None, 3.0), ("torch_bn", 0.02), ("noisy", 0.5)):
        paths = []
        for i, _ in enumerate(steps):
            loss0 = 2.3 / (i + 1)
            losses = (loss0 - 0.1 * ks + curvature * (1 + 0.3 * seed) * ks**2 * (1 + i)
                      + 0.01 * rng.random(len(ks)))
            paths.append(GradientPath(ks=ks, losses=losses, loss=loss0, grad_norm=1.0, lr=0.1,
                                      gradient_changes=np.ones(len(ks))))
        runs[norm] = LandscapeRun(norm=norm, seed=seed, lr=0.1, steps=list(steps), paths=paths,
                                  shifts=[None] * len(steps))
    return runs


def seeded_runs(seeds=SEEDS, **kwargs) -> dict:
    """{norm: {seed: LandscapeRun}}, as lesson 09 records them over its seeds."""
    by_seed = {seed: synthetic_runs(seed, **kwargs) for seed in seeds}
    return {norm: {seed: by_seed[seed][norm] for seed in seeds} for norm in by_seed[seeds[0]]}


def readout(explorer, step, k, seed=None) -> str:
    """The readout table as explorer.js's table() writes it, with Python's number formats."""
    j = int(np.argmin(np.abs(KS - k)))
    header = ["", "loss range over k", "L(θ)", f"L(θ − k·lr·g) at k = {KS[j]:.3g}"]
    if explorer.seeds is not None:
        header.append("loss range, seeds " + " / ".join(str(s) for s in explorer.seeds))
        chosen = explorer.seeds.index(explorer.initial["seed"] if seed is None else seed)
    head = "".join(f"<th style='padding:0 10px'>{html.escape(h, quote=False)}</th>" for h in header)
    body = ""
    ranges = explorer.loss_ranges(step)
    for key, (losses, loss0) in explorer.slices(step, seed).items():
        cells = [f"{losses.max() - losses.min():.3g}", f"{loss0:.4g}", f"{losses[j]:.4g}"]
        if explorer.seeds is not None:
            cells.append(" / ".join(f"<b>{r:.3g}</b>" if s == chosen else f"{r:.3g}"
                                    for s, r in enumerate(ranges[key])))
        body += (f"<tr><td style='padding:0 10px'>{plots.LABELS[key]}</td>"
                 + "".join(f"<td style='padding:0 10px; text-align:right'>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{body}</table>"


def seeded_fixtures() -> dict:
    runs = seeded_runs()
    explorer = LossSliceExplorer(runs, step=10, k=1.0, seed=1)
    cases = []
    for step in STEPS:
        i = STEPS.index(step)
        for seed in SEEDS:
            for k in (0.25, 2.4):
                j = int(np.argmin(np.abs(KS - k)))
                cases.append({"settings": {"step": step, "k": k, "seed": seed}, "index": i, "k_index": j,
                              "seed_index": SEEDS.index(seed),
                              "ranges": {plots.variant(n): float(r[seed].paths[i].loss_range) for n, r in runs.items()},
                              "seed_ranges": {plots.variant(n): [float(r[s].paths[i].loss_range) for s in SEEDS]
                                              for n, r in runs.items()},
                              "at_k": {plots.variant(n): float(r[seed].paths[i].losses[j]) for n, r in runs.items()},
                              "loss0": {plots.variant(n): float(r[seed].paths[i].loss) for n, r in runs.items()},
                              "title": explorer.title(step, seed), "readout": readout(explorer, step, k, seed)})
    return {"data": dict(explorer.data), "cases": cases}


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
                                    "flipped": {"data": dict(flipped.data), "title": flipped.title(20)},
                                    "seeded": seeded_fixtures()}}
