"""SweepExplorer (lessons 06 and 08) sends each variant's runs at every setting and the finals over
the sweep once; its view picks the setting's runs per move (tests/js/sweep_explorer.test.mjs).
Expected numbers come from the Histories built here, never from what the explorer sent."""

import json

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex

matplotlib.use("Agg")

from bnlab import plots, widgets  # noqa: E402
from bnlab.train import History  # noqa: E402
from bnlab.widgets import SweepExplorer, bundle  # noqa: E402

LRS = (0.01, 0.1, 1.0)


def fake(final, loss=0.5, diverged_at=None, steps=(0, 5)):
    return History(loss=[2.0, loss], eval_steps=list(steps), test_accuracy=[0.1, final], diverged_at=diverged_at)


def sweep_runs():
    """{(variant, lr): History} with the final accuracy a known function of the two."""
    return {(norm, lr): fake(base - 0.1 * i, loss=1.0 / (i + 1 + base))
            for norm, base in ((None, 0.5), ("bn", 0.9), ("gn", 0.8)) for i, lr in enumerate(LRS)}


def test_sweep_explorer_sends_every_run_at_every_setting():
    runs = sweep_runs()
    e = SweepExplorer(runs, setting="learning rate", chance=0.1)
    data = e.data
    assert data["variants"] == ["plain", "bn", "gn"]          # bnlab.models' None is the 'plain' variant
    assert data["values"] == list(LRS) and data["value_labels"] == ["0.01", "0.1", "1.0"]
    assert data["setting"] == "learning rate" and data["log_base"] == 10 and data["chance"] == 0.1
    assert data["initial"] == {"index": 0, "quantity": "test accuracy"}
    for norm, key in ((None, "plain"), ("bn", "bn"), ("gn", "gn")):
        assert data["colors"][key] == plots.COLORS[key] and data["labels"][key] == plots.LABELS[key]
        for i, lr in enumerate(LRS):
            sent, h = data["runs"][key][i], runs[(norm, lr)]
            np.testing.assert_allclose(sent["loss"], h.loss, rtol=5e-4)
            np.testing.assert_allclose(sent["accuracy"], h.test_accuracy, rtol=5e-6)
            assert sent["eval_steps"] == h.eval_steps and sent["diverged_at"] is None
            assert sent["last_loss"] == pytest.approx(h.loss[-1], rel=5e-6)
            assert data["finals"][key][i] == [pytest.approx(h.test_accuracy[-1], rel=5e-6)]
    assert e.payload_bytes == len(json.dumps(data, separators=(",", ":")))


def test_sweep_explorer_starts_at_a_given_value_and_sends_a_divergence():
    runs = sweep_runs()
    runs[("bn", 0.1)] = History(loss=[2.0, 3.0, float("nan")], eval_steps=[0], test_accuracy=[0.25], diverged_at=3)
    e = SweepExplorer(runs, setting="learning rate", value=0.1)
    assert e.data["initial"]["index"] == 1
    sent = e.data["runs"]["bn"][1]
    assert sent["diverged_at"] == 3 and sent["loss"] == [2.0, 3.0, None]   # JSON has no NaN
    assert sent["last_loss"] is None and sent["accuracy"] == [0.25]
    json.dumps(e.data, allow_nan=False)


def test_sweep_explorer_sends_every_seed_to_the_sweep_and_the_lowest_to_the_curves():
    runs = {("bn", lr, seed): fake(0.5 + 0.1 * seed + lr / 10, loss=0.1 * (seed + 1))
            for lr in LRS for seed in (2, 0, 1)}
    runs.update({(None, lr, 0): fake(0.3) for lr in LRS})
    e = SweepExplorer(runs)
    for i, lr in enumerate(LRS):
        # the finals in the order the runs came (final_results), each seed's final accuracy
        np.testing.assert_allclose(e.data["finals"]["bn"][i], [0.7 + lr / 10, 0.5 + lr / 10, 0.6 + lr / 10])
        assert e.data["runs"]["bn"][i]["last_loss"] == pytest.approx(0.1)     # seed 0
        assert e.data["finals"]["plain"][i] == [pytest.approx(0.3)]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop(("gn", 0.1)), "missing"),
    (lambda r: r.update({("bn",): fake(0.1)}), "keyed"),
    (lambda r: r.update({("nonsense", lr): fake(0.1) for lr in LRS}), "unknown variant 'nonsense'"),
    (lambda r: r.update({("plain", lr): fake(0.1) for lr in LRS}), "share a colour"),   # None is 'plain' too
])
def test_sweep_explorer_refuses_runs_it_cannot_draw(change, message):
    runs = sweep_runs()
    change(runs)
    with pytest.raises(ValueError, match=message):
        SweepExplorer(runs)


def test_sweep_explorer_refuses_bad_settings():
    with pytest.raises(ValueError, match="empty"):
        SweepExplorer({})
    with pytest.raises(ValueError, match=r"value must be one of the swept settings \[0.01, 0.1, 1.0\], got 0.3"):
        SweepExplorer(sweep_runs(), value=0.3)
    runs = {(norm, b): fake(0.5) for norm in ("bn", "gn") for b in (0, 2, 4)}
    with pytest.raises(ValueError, match="log axis needs"):
        SweepExplorer(runs, setting="batch size", log_base=2)
    SweepExplorer(runs, setting="batch size", log_base=None)   # a linear axis takes 0
    with pytest.raises(ValueError, match="quantity must be one of"):
        SweepExplorer(sweep_runs()).figure(quantity="loss")


def test_sweep_explorer_figure_draws_what_it_sends():
    runs = sweep_runs()
    runs[("gn", 1.0)] = History(loss=[2.0, 1.5, float("inf")], eval_steps=[0], test_accuracy=[0.125], diverged_at=2)
    e = SweepExplorer(runs, setting="learning rate", chance=0.1, value=1.0)
    fig = e.figure()
    left, right = fig.axes
    assert left.get_title() == "learning rate = 1.0"
    assert right.get_title() == "Final test accuracy against learning rate"
    curves = [line for line in left.lines if line.get_label() != "_diverged"]
    assert [to_hex(line.get_color()) for line in curves] == [plots.COLORS[k] for k in ("plain", "bn", "gn")]
    for line, key in zip(curves, ("plain", "bn", "gn")):
        np.testing.assert_allclose(line.get_ydata(), e.data["runs"][key][2]["accuracy"])
    np.testing.assert_allclose(curves[1].get_ydata(), runs[("bn", 1.0)].test_accuracy, rtol=5e-6)
    assert "(diverged at step 2)" in curves[2].get_label()
    # the right panel: one line per variant over the settings, the chance line and the marker
    finals = [line for line in right.lines if len(line.get_xdata()) == 3]
    for line, norm in zip(finals, (None, "bn", "gn")):
        np.testing.assert_allclose(line.get_ydata(), [runs[(norm, lr)].test_accuracy[-1] for lr in LRS], rtol=5e-6)
    two = [line for line in right.lines if len(line.get_xdata()) == 2]
    assert any(np.allclose(line.get_ydata(), [0.1, 0.1]) for line in two)     # chance
    assert any(np.allclose(line.get_xdata(), [1.0, 1.0]) for line in two)     # the chosen setting
    assert right.get_xscale() == "log"
    loss = e.figure(value=0.01, quantity="training loss").axes[0]
    assert loss.get_yscale() == "log" and loss.get_title() == "learning rate = 0.01"
    np.testing.assert_allclose(loss.lines[0].get_ydata(), runs[(None, 0.01)].loss, rtol=5e-4)


def test_sweep_explorer_payload_at_lesson_08s_size():
    """Lesson 08: five norms x six batch sizes, 3 epochs of the digits training set each; the loss of
    every step is sent (batch 2 has about 2000). Random losses: as long in JSON as real ones."""
    from bnlab.data import digits
    from bnlab.experiments import SMALL_BATCH

    n = len(digits(images=True).x_train)
    rng = np.random.default_rng(0)
    runs = {}
    for norm in ("bn", "brn", "gn", "ln", "in"):
        for b in SMALL_BATCH["batch_sizes"]:
            steps = SMALL_BATCH["epochs"] * (n // b)
            evals = list(range(0, steps, max(1, steps // 10))) + [steps]
            runs[(norm, b)] = History(loss=list(rng.exponential(size=steps)), eval_steps=evals,
                                      test_accuracy=list(rng.random(len(evals))))
    e = SweepExplorer(runs, setting="batch size", log_base=2, chance=0.1, value=2)
    assert sum(len(h.loss) for h in runs.values()) > 15_000
    assert e.payload_bytes < 250_000, e.payload_bytes


def test_sweep_explorer_ships_its_view():
    assert SweepExplorer._esm == bundle("sweep_explorer.js")
    assert (widgets.STATIC / "sweep_explorer.js").is_file()
    assert isinstance(SweepExplorer(sweep_runs()), widgets.Explorer)
