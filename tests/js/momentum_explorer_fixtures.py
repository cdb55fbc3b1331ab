"""MomentumExplorer.compute, bnlab.experiments.ramp_lag and the readout as Python writes it, on the
explorer's own recorded batches, for tests/js/momentum_explorer.test.mjs."""

from bnlab.experiments import ramp_lag
from bnlab.widgets import MomentumExplorer


def readout(momentum, kind, lag, last, drift):
    """The lesson's readout, in Python's number formats."""
    text = (f"<p>momentum {momentum:.3g} (Keras momentum {1 - momentum:.3g}): averages over about "
            f"{1 / momentum:.0f} batches; over the last {last} steps the running mean is on average "
            f"{lag:+.3f} behind the true mean")
    if kind == "ramp":
        text += f" (theory for a ramp: drift·(1−m)/m = {drift * (1 - momentum) / momentum:.3f})"
    return text + "</p>"


def cases(explorer, momenta):
    out = []
    for kind in explorer.KINDS:
        for momentum in momenta:
            _, running, true = explorer.compute(momentum, kind)
            lag = ramp_lag(true, running)   # over the last 100 steps, or all of them when fewer
            last = min(100, len(true))
            out.append({"settings": {"momentum": momentum, "kind": kind}, "running": running.tolist(), "lag": lag,
                        "last": last, "theory": explorer.drift * (1 - momentum) / momentum if kind == "ramp" else None,
                        "readout": readout(momentum, kind, lag, last, explorer.drift)})
    return out


def fixtures() -> dict:
    lesson = MomentumExplorer(steps=400, batch_size=32, drift=0.02)      # lesson 03's
    short = MomentumExplorer(steps=60, batch_size=4, drift=0.05, seed=3)  # fewer steps than the lag's window
    return {"momentum_explorer": {
        "lesson": {"data": dict(lesson.data), "cases": cases(lesson, (1e-3, 0.01, 0.1, 10 ** -0.3, 1.0))},
        "short": {"data": dict(short.data), "cases": cases(short, (0.05, 1.0))}}}
