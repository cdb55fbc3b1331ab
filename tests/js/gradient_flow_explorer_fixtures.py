"""GradientFlowExplorer's data and what the view must show for some settings, for
tests/js/gradient_flow_explorer.test.mjs: the norms and runs Python sent, the ratios and the old
explorer's title and readout formatted by Python."""

import numpy as np

from bnlab.data import gaussian_blobs
from bnlab.train import History
from bnlab.widgets import GradientFlowExplorer

E = GradientFlowExplorer


def fixtures() -> dict:
    rng = np.random.default_rng(0)
    # a table of the menus' shape (its numbers need not come from nets here: the view only reads it),
    # spanning many decades as a deep sigmoid net's do, with one norm not finite
    table = {(norm, d, a, i): 10.0 ** rng.uniform(-40, 3, d) for d in E.DEPTHS for a in E.ACTIVATIONS
             for i in E.INITS for norm in (None, "bn")}
    table[(None, 5, "tanh", "lecun")][-1] = np.inf
    runs = {(None, 10, "relu", "he", 1.0): History(eval_steps=[0, 30, 60], test_accuracy=[0.1, 0.2],
                                                   diverged_at=4, loss=[2.0]),
            ("bn", 10, "relu", "he", 1.0): History(eval_steps=[0, 30, 60], test_accuracy=[0.1, 0.8, 0.9456],
                                                   loss=[2.0]),
            (None, 2, "tanh", "default", 0.01): History(eval_steps=[0, 5], test_accuracy=[0.1, 0.25], loss=[2.0]),
            ("bn", 2, "tanh", "default", 0.01): History(eval_steps=[0, 5], test_accuracy=[0.1, 0.3125], loss=[2.0])}
    e = E(gaussian_blobs(n_per_class=5), runs=runs, table=table)
    cases = []
    for v in ({"depth": 10, "activation": "relu", "init": "he", "lr": 1.0},
              {"depth": 10, "activation": "relu", "init": "he", "lr": 0.3},
              {"depth": 2, "activation": "tanh", "init": "default", "lr": 0.01},
              {"depth": 5, "activation": "tanh", "init": "lecun", "lr": 3.0},
              {"depth": 50, "activation": "sigmoid", "init": "default", "lr": 0.1}):
        grad = {k: e.sent_norms(norm, v["depth"], v["activation"], v["init"]) for k, norm in (("plain", None),
                                                                                              ("bn", "bn"))}
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = {k: g[0] / g[-1] for k, g in grad.items()}
        trained = {k: e.sent_run(norm, **v) for k, norm in (("plain", None), ("bn", "bn"))}
        if all(h is not None for h in trained.values()):
            status = " · ".join(
                f"{e.data['labels'][k]}: " + (f"loss not finite at step {h.diverged_at}" if h.diverged
                                              else f"test accuracy {h.test_accuracy[-1]:.3f}")
                for k, h in trained.items())
        else:
            status = "this configuration has not been trained"
        cases.append({
            "settings": v, "grad": {k: [x if np.isfinite(x) else None for x in g] for k, g in grad.items()},
            "ratio": {k: float(r) if np.isfinite(r) else None for k, r in ratio.items()},
            "trained": {k: h is not None for k, h in trained.items()},
            "title": f"At init, depth {v['depth']}, {v['activation']}, {v['init']}: layer 1 / last\n"
                     f"without BN {ratio['plain']:.2g}x, with BN {ratio['bn']:.2g}x",
            "readout": f"<p>first / last hidden layer gradient norm: without BN {ratio['plain']:.2g}, "
                       f"with BN {ratio['bn']:.2g}</p><p>{status}</p>"})
    return {"gradient_flow": {"data": e.data, "cases": cases}}
