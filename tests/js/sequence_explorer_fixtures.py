"""SequenceExplorer's records at every step and variant, for tests/js/sequence_explorer.test.mjs:
what SequenceExplorer.at_step and title give from the data it sends, and the readout written here
from those numbers. The models are tiny and untrained; the BN-LSTM's per-step running statistics
are one training-mode pass over a batch (momentum=None: exactly that batch's statistics)."""

import html

import torch

from bnlab.data import adding_problem
from bnlab.recurrent import SequenceRegressor
from bnlab.widgets import SequenceExplorer

TRAINED = 5   # the BN-LSTM's max_steps


def tiny_models(seed: int = 0, hidden_size: int = 3, norms=(None, "bn", "ln"), eps: float = 1e-5) -> dict:
    """{norm: SequenceRegressor} with seeded weights; the BN-LSTM's statistics from one batch."""
    torch.manual_seed(seed)
    models = {norm: SequenceRegressor(2, hidden_size, norm, max_steps=TRAINED, momentum=None, eps=eps)
              for norm in norms}
    with torch.no_grad():
        models["bn"].train()(adding_problem(128, TRAINED, seed, "train")[0])
    return models


def metrics(norms=(None, "bn", "ln")) -> dict:
    return {norm: {f"length {L}": 0.01 * (k + 1) * L / TRAINED for L in (TRAINED, 2 * TRAINED)}
            for k, norm in enumerate(norms)}


def readout(explorer: SequenceExplorer, step: int, variant: str) -> str:
    def table(rows, header):
        head = "".join(f"<th style='padding:0 10px'>{html.escape(h, quote=False)}</th>" for h in header)
        body = "".join(f"<tr><td style='padding:0 10px'>{html.escape(name, quote=False)}</td>"
                       + "".join(f"<td style='padding:0 10px; text-align:right'>{cell}</td>" for cell in cells)
                       + "</tr>" for name, cells in rows.items())
        return f"<table><tr>{head}</tr>{body}</table>"

    s, d = explorer.at_step(step, variant), explorer.data
    labels = d["labels"]
    rows = {f"{labels[variant]}: W_hh h_(t−1) on the test batch": [f"{s['raw_mean']:.3g}", f"{s['raw_var']:.3g}"]}
    if variant != "bn":
        rows[f"{labels['bn']}: W_hh h_(t−1) on the test batch"] = [f"{s['bn_mean']:.3g}", f"{s['bn_var']:.3g}"]
    rows[f"BN-LSTM: running statistics of step {s['stats_step']}"] = [f"{s['running_mean']:.3g}",
                                                                      f"{s['running_var']:.3g}"]
    rows[f"one set for all steps (pooled over steps 0–{TRAINED - 1})"] = [f"{s['pooled_mean']:.3g}",
                                                                           f"{s['pooled_var']:.3g}"]
    units = (f"all {d['hidden_size']} units" if d["units"] is None
             else f"unit{'s' if len(d['units']) > 1 else ''} {', '.join(map(str, d['units']))}")
    text = table(rows, [f"step {step} ({units}, gates i, f, g, o)", "mean", "variance"])
    if d["tests"]:
        text += table({labels[key]: [f"{v:.4f}" for v in values] for key, values in d["metrics"].items()},
                      [d["metric"], *d["tests"]])
    return text


def cases(explorer: SequenceExplorer) -> list:
    out = []
    for step in range(explorer.data["steps"]):
        for variant in explorer.variants:
            s = explorer.at_step(step, variant)
            out.append({"step": step, "variant": variant, "title": explorer.title(step, variant),
                        "readout": readout(explorer, step, variant),
                        **{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in s.items()}})
    return out


def fixtures() -> dict:
    models = tiny_models()
    # longer than the trained steps: the last two steps use step TRAINED - 1's statistics
    x = adding_problem(48, TRAINED + 2, 1, "test")[0]
    explorer = SequenceExplorer(models, x, metrics(), chance=1 / 6, chance_label="always answering 1", step=2)
    one_unit = SequenceExplorer({"bn": models["bn"]}, x[:, :TRAINED], units=[1])
    return {"sequence_explorer": {"data": dict(explorer.data), "cases": cases(explorer),
                                  "variance_limits": {key: explorer.variance_limit(key) for key in explorer.variants},
                                  "one_unit": {"data": dict(one_unit.data), "cases": cases(one_unit)}}}
