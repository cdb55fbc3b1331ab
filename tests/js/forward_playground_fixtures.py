"""ForwardPlayground.compute on its own sample, for tests/js/forward_playground.test.mjs."""

from bnlab.widgets import ForwardPlayground


def fixtures() -> dict:
    p = ForwardPlayground()
    cases = []
    for settings in ({}, {"mean": -50.0, "scale": 1e-3, "batch_size": 2, "gamma": -3.0, "beta": 3.0, "eps": 10.0,
                          "shape": "bimodal"},
                     {"mean": 0.5, "scale": 100.0, "batch_size": 512, "gamma": 0.1, "eps": 1e-8, "shape": "normal"}):
        v = {**p.initial, **settings}
        x, y, mu, var = p.compute(**v)
        cases.append({"settings": v, "x": x.tolist(), "y": y.tolist(), "mu": mu, "var": var})
    return {"playground": {"samples": p.data["samples"], "cases": cases}}
