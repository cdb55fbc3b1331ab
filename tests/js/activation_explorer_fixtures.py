"""ActivationExplorer's data and what the view must compute from it, for
tests/js/activation_explorer.test.mjs: bnlab's own decoding of the histograms, matplotlib's viridis
and Python's formatting of the readout (the numbers are recorded by a real probe)."""

import matplotlib
import numpy as np
import torch

from bnlab.data import gaussian_blobs
from bnlab.models import mlp
from bnlab.train import train_classifier
from bnlab.widgets import FRACTION_LOG_RANGE, ActivationExplorer, decode_fractions, encode_fractions


def recorded(norm):
    data = gaussian_blobs(n_per_class=20, seed=0)
    torch.manual_seed(0)
    net = mlp(data.num_features, (8, 8), data.num_classes, norm=norm, activation="sigmoid")
    return train_classifier(net, data, steps=30, device="cpu", progress=False, probe=dict(every=5, bins=12,
                                                                                          grad_bins=10)).probe


def fixtures() -> dict:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        e = ActivationExplorer({"plain": recorded(None), "bn": recorded("bn")}, layer="hidden1", step=10)
    finally:
        torch.set_num_threads(before)
    data = e.data
    records = len(data["steps"])
    # decoding: bnlab's decode_fractions of a string with every kind of value
    rng = np.random.default_rng(0)
    fractions = np.r_[0.0, 1.0, 10.0 ** FRACTION_LOG_RANGE[0], 1e-9, 0.5, 10.0 ** rng.uniform(-7, 0, 200)]
    text = encode_fractions(fractions)
    # the histograms and readout at a few steps, as Python reads them from the data sent
    cases = []
    for step in (0, 7, 10, 25, 1000):
        i = e.index(step)
        cases.append({
            "step": step, "index": i,
            "histograms": {run["key"]: {layer: {"hist": e.sent(run["key"], layer).hist[i].tolist(),
                                                "grad_hist": e.sent(run["key"], layer).grad_hist[i].tolist()}
                                        for layer in data["layers"]} for run in data["runs"]},
            "readout": {layer: {run["label"]: [
                f"{_f(run['layers'][layer]['mean'][i]):.3f}", f"{_f(run['layers'][layer]['std'][i]):.3f}",
                " / ".join(f"{_f(v):.2f}" for v in run["layers"][layer]["percentiles"][i]),
                f"{_f(run['layers'][layer]['grad_norm'][i]):.2e}"] for run in data["runs"]}
                for layer in data["layers"]}})
    header = ["", "mean", "std", "percentiles " + "/".join(f"{q:g}" for q in data["percentiles"]), "||dL/da||"]
    viridis = matplotlib.colormaps["viridis"]
    ts = np.linspace(0, 1, 21)
    lo, hi = -5, 0
    heat = np.array([[0.0, 1e-6, 1e-5], [1e-3, 0.5, 1.0]])   # 2 records x 3 bins
    expected_pixels = []
    for b in reversed(range(3)):           # the top row is the last bin
        for r in range(2):
            t = (np.log10(max(heat[r, b], 10.0 ** lo)) - lo) / (hi - lo)
            expected_pixels.append([round(c * 255) for c in viridis(t)[:3]] + [255])
    steps = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    play = [{"step": s, "stride": k,
             "expected": None if np.searchsorted(steps, s, side="right") - 1 >= len(steps) - 1
             else steps[min(max(int(np.searchsorted(steps, s, side="right")) - 1, 0) + k, len(steps) - 1)]}
            for s in (0, 5, 50, 95, 100, 120) for k in (1, 5)]
    return {"activation_explorer": {
        "data": data, "records": records, "cases": cases, "header": header,
        "codec": {"text": text, "fractions": fractions.tolist(), "decoded": decode_fractions(text).tolist()},
        "viridis": [[float(t), [round(c * 255) for c in viridis(float(t))[:3]]] for t in ts],
        "heatmap": {"flat": heat.ravel().tolist(), "records": 2, "bins": 3, "range": [lo, hi],
                    "pixels": expected_pixels},
        "play": {"steps": steps, "cases": play}}}


def _f(v):
    return float("nan") if v is None else float(v)
