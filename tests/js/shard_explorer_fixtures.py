"""ShardExplorer's shards and moments at every setting, for tests/js/shard_explorer.test.mjs: the
sizes and moments computed here with numpy and `bnlab.distributed.combine_moments` from the orders
the explorer sends, the readout written here from those numbers; the titles are ShardExplorer's."""

import html
import itertools

import numpy as np
import torch

from bnlab.distributed import combine_moments
from bnlab.widgets import ShardExplorer, _strip_jitter


def synthetic_sample(seed: int = 3):
    """60 values of 3 classes with class means 0, 2 and 5 (not sorted: the explorer shuffles them)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, 60)
    return np.array([0.0, 2.0, 5.0])[labels] + rng.normal(size=60), labels


def expected_sizes(n: int, devices: int, sizes: str) -> list[int]:
    if sizes == "equal":
        return [n // devices] * devices
    # n_r proportional to r + 1: the shares' cumulative sums, floored
    cumulative = np.cumsum(np.arange(1, devices + 1)) / (devices * (devices + 1) / 2)
    bounds = np.floor(n * cumulative + 1e-9).astype(int)
    return np.diff(np.concatenate([[0], bounds])).tolist()


def expected(explorer: ShardExplorer, devices: int, sharding: str, sizes: str) -> dict:
    order = np.array(explorer.data["orders"][sharding])
    values, labels = np.array(explorer.data["values"]), np.array(explorer.data["classes"])
    counts = expected_sizes(len(order), devices, sizes)
    pieces = np.split(order, np.cumsum(counts)[:-1])
    means = np.array([values[p].mean() for p in pieces])
    variances = np.array([values[p].var() for p in pieces])
    n, mu, m2 = combine_moments(torch.tensor(counts), torch.tensor(means), torch.tensor(counts * variances))
    w = np.array(counts) / len(values)
    return {"settings": {"devices": devices, "sharding": sharding, "sizes": sizes}, "counts": counts,
            "means": means.tolist(), "variances": variances.tolist(),
            "classes": [sorted(set(labels[p].tolist())) for p in pieces],
            "global": [values.mean(), values.var()], "plain_average": [means.mean(), variances.mean()],
            "within": float(w @ variances), "between": float(w @ (means - values.mean()) ** 2),
            "combined": [float(mu), float(m2) / int(n)],
            "title": explorer.title(devices, sharding, sizes)}


def classes_text(classes) -> str:
    return ", ".join(map(str, classes)) if len(classes) <= 3 else f"{len(classes)} classes"


def readout(c: dict) -> str:
    def table(rows, header):
        head = "".join(f"<th style='padding:0 10px'>{html.escape(h, quote=False)}</th>" for h in header)
        body = "".join(f"<tr><td style='padding:0 10px'>{html.escape(name, quote=False)}</td>"
                       + "".join(f"<td style='padding:0 10px; text-align:right'>{cell}</td>" for cell in cells)
                       + "</tr>" for name, cells in rows.items())
        return f"<table><tr>{head}</tr>{body}</table>"

    g = c["global"][1]
    plain_mean, plain_var = c["plain_average"]

    def share(v):
        return f"{100 * v / g:.1f}%"

    rows = {
        "whole batch, all N values on one device: μ_B, σ²_B": [f"{c['global'][0]:.4f}", f"{g:.4f}", share(g)],
        "per device, plain average (1/W) Σ_r μ_r, σ²_r": [f"{plain_mean:.4f}", f"{plain_var:.4f}", share(plain_var)],
        "per device, weighted Σ_r (n_r/N) σ²_r: what per-device BN divides by": ["", f"{c['within']:.4f}",
                                                                                share(c["within"])],
        "the shortfall: variance of the device means Σ_r (n_r/N)(μ_r − μ_B)²": ["", f"{c['between']:.4f}",
                                                                                  share(c["between"])],
        "Chan's combine of every (n_r, μ_r, M2_r), as SyncBN": [f"{c['combined'][0]:.4f}", f"{c['combined'][1]:.4f}",
                                                                 share(c["combined"][1])],
    }
    per_device = {"n_r": [str(n) for n in c["counts"]], "μ_r": [f"{m:.4f}" for m in c["means"]],
                  "σ²_r": [f"{v:.4f}" for v in c["variances"]], "classes": [classes_text(k) for k in c["classes"]]}
    return (table(rows, ["", "mean", "variance", "of σ²_B"])
            + table(per_device, ["device r", *[str(r + 1) for r in range(len(c["counts"]))]]))


def case_set(explorer: ShardExplorer) -> dict:
    cases = [expected(explorer, w, s, z)
             for w, s, z in itertools.product(explorer.devices, ShardExplorer.SHARDINGS, ShardExplorer.SIZES)]
    for c in cases:
        c["readout"] = readout(c)
    return {"data": dict(explorer.data), "cases": cases, "largest_variance": explorer.largest_variance(),
            "value_limits": list(explorer.value_limits())}


def fixtures() -> dict:
    values, labels = synthetic_sample()
    return {"shard_explorer": {"digits": case_set(ShardExplorer(devices=4)),
                               "synthetic": case_set(ShardExplorer(values, labels, devices=2, feature="x")),
                               "jitter": _strip_jitter(7).tolist()}}
