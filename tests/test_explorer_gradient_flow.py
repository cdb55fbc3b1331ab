"""Lesson 05's GradientFlowExplorer: it sends the gradient norms at init of every configuration of its
menus and the curves of the trained runs; the train button's message trains the selected
configuration (both variants) and sends the data again; bad settings are refused; the snapshot
draws the data sent. (Its view's per-move computations: tests/js/gradient_flow_explorer.)"""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

matplotlib.use("Agg")

import ipywidgets  # noqa: E402

import bnlab.experiments  # noqa: E402
from bnlab import plots  # noqa: E402
from bnlab.data import digits  # noqa: E402
from bnlab.experiments import gradient_flow_table  # noqa: E402
from bnlab.train import History  # noqa: E402
from bnlab.widgets import GradientFlowExplorer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
E = GradientFlowExplorer
CONFIGS = [(norm, d, a, i) for d in E.DEPTHS for a in E.ACTIVATIONS for i in E.INITS for norm in (None, "bn")]


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def table(one_thread, data):
    """The gradient norms at init of every configuration in the menus (a few seconds): computed once."""
    return gradient_flow_table(data.x_train[:128], data.y_train[:128], E.DEPTHS, E.ACTIVATIONS, E.INITS, 0,
                               num_classes=data.num_classes)


@pytest.fixture
def flow(data, table):
    return GradientFlowExplorer(data, steps=5, table=table)


def fake(final, diverged_at=None):
    return History(loss=[2.0, 1.0], eval_steps=[0, 30, 60], test_accuracy=[0.1, 0.5, final], diverged_at=diverged_at)


def test_by_default_it_computes_the_norms_of_every_configuration_on_128_examples(one_thread, data, table, monkeypatch):
    calls = []

    def recorded(*args, **kwargs):
        calls.append((args, kwargs))
        return table

    monkeypatch.setattr(bnlab.widgets, "gradient_flow_table", recorded)
    e = GradientFlowExplorer(data)
    (x, y, depths, activations, inits, seed), kwargs = calls[0]
    assert torch.equal(x, data.x_train[:128]) and torch.equal(y, data.y_train[:128])
    assert (depths, activations, inits, seed) == (E.DEPTHS, E.ACTIVATIONS, E.INITS, 0)
    assert kwargs == {"num_classes": data.num_classes}
    assert e.norms == table and e.norms is not table


def test_it_sends_every_configurations_norms_once(flow, table):
    d = flow.data
    assert d["menus"] == {"depth": [2, 5, 10, 20, 30, 50], "activation": ["relu", "tanh", "sigmoid"],
                          "init": ["he", "lecun", "default"], "lr": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}
    assert d["initial"] == {"depth": 10, "activation": "relu", "init": "he", "lr": 1.0}
    assert len(d["table"]) == len(CONFIGS) == 108 and d["runs"] == []
    for norm, depth, activation, init in CONFIGS:
        sent = flow.sent_norms(norm, depth, activation, init)
        assert sent.shape == (depth,)
        np.testing.assert_allclose(sent, table[(norm, depth, activation, init)], rtol=5e-4)
    assert d["colors"]["plain"] == plots.COLORS["plain"] and d["labels"]["bn"] == "with BN"
    assert flow.payload_bytes < 40_000


def test_it_sends_the_curves_of_the_runs_it_is_given(data, table):
    runs = {(None, 10, "relu", "he", 1.0): fake(0.1, diverged_at=4), ("bn", 10, "relu", "he", 1): fake(0.9456)}
    e = GradientFlowExplorer(data, runs=runs, table=table)
    assert [(r["norm"], r["lr"]) for r in e.data["runs"]] == [("plain", 1.0), ("bn", 1.0)]
    plain, bn = (e.sent_run(norm, 10, "relu", "he", 1.0) for norm in (None, "bn"))
    assert plain.diverged_at == 4 and plain.eval_steps == [0, 30, 60] and bn.test_accuracy == [0.1, 0.5, 0.9456]
    assert bn.diverged_at is None and e.sent_run("bn", 10, "relu", "he", 0.3) is None
    # lesson 05's sweep: 10 runs of 300 steps at depth 10, with the table: a few tens of kB
    lesson = {(norm, 10, "relu", "he", lr): fake(0.9) for norm in (None, "bn") for lr in (0.03, 0.1, 0.3, 1.0, 3.0)}
    assert GradientFlowExplorer(data, runs=lesson, table=table).payload_bytes < 45_000


def test_the_train_message_trains_both_variants_and_sends_the_data_again(flow):
    sent = []
    flow.send = sent.append
    before = flow.data
    # what the view's train button sends: its controls' values (JSON: lr 0.1 stays 0.1, 1.0 arrives as 1)
    flow._on_message(flow, {"event": "train", "depth": 2, "activation": "relu", "init": "lecun", "lr": 0.1}, [])
    assert sent == [{"event": "training", "done": False}, {"event": "training", "done": True}]
    assert set(flow.runs) == {(None, 2, "relu", "lecun", 0.1), ("bn", 2, "relu", "lecun", 0.1)}
    assert all(len(h.loss) == 5 for h in flow.runs.values())
    assert flow.data is not before and before["runs"] == []   # a new dict: traitlets syncs it
    for norm in (None, "bn"):
        run = flow.sent_run(norm, 2, "relu", "lecun", 0.1)
        assert run.test_accuracy == pytest.approx(flow.runs[(norm, 2, "relu", "lecun", 0.1)].test_accuracy, rel=1e-4)
    flow._on_message(flow, {"event": "train", "depth": 2, "activation": "relu", "init": "lecun", "lr": 1}, [])
    assert ("bn", 2, "relu", "lecun", 1.0) in flow.runs and len(flow.data["runs"]) == 4


def test_training_again_replaces_the_run_and_uses_the_initial_settings_where_none_are_given(flow, monkeypatch):
    calls = []

    def fast(lrs, depth, activation, init, steps, seed, data):
        calls.append((lrs, depth, activation, init, steps, seed))
        return {(norm, lrs[0]): fake(0.5 + len(calls) / 10) for norm in (None, "bn")}

    monkeypatch.setattr(bnlab.experiments, "lr_sweep", fast)
    flow.train_selected()
    flow.train_selected(lr=1.0)
    assert calls == [([1.0], 10, "relu", "he", 5, 0)] * 2
    assert len(flow.data["runs"]) == 2 and flow.sent_run("bn", 10, "relu", "he", 1.0).test_accuracy[-1] == 0.7


def test_it_trains_with_the_default_init(flow):
    """'default' goes to the models as it is (models.initialize takes it): torch's own init."""
    flow.train_selected(depth=2, activation="relu", init="default", lr=0.1)
    run = flow.runs[("bn", 2, "relu", "default", 0.1)]
    assert len(run.loss) == 5
    first = [m for m in run.model.modules() if isinstance(m, torch.nn.Linear)][0]
    # after 5 small steps the weights are still near torch's default, uniform with |w| <= 1/sqrt(64);
    # He init, N(0, 2/64), would have weights beyond 0.5
    assert first.weight.abs().max().item() < 1.5 / 8


def test_it_refuses_settings_outside_its_menus(data, table, flow):
    with pytest.raises(ValueError, match=r"depth must be one of \(2, 5, 10, 20, 30, 50\), got 3"):
        flow.train_selected(depth=3)
    with pytest.raises(ValueError, match="activation must be one of"):
        flow._on_message(flow, {"event": "train", "depth": 2, "activation": "gelu", "init": "he", "lr": 1.0}, [])
    with pytest.raises(ValueError, match=r"lr must be one of .*, got 0.5"):
        GradientFlowExplorer(data, table=table, lr=0.5)
    with pytest.raises(ValueError, match="init must be one of"):
        GradientFlowExplorer(data, table=table, runs={("bn", 10, "relu", "xavier", 1.0): fake(0.9)})
    with pytest.raises(ValueError, match=r"runs must be keyed \(norm, depth, activation, init, lr\)"):
        GradientFlowExplorer(data, table=table, runs={("bn", 1.0): fake(0.9)})
    incomplete = dict(table)
    del incomplete[("bn", 2, "tanh", "default")]
    with pytest.raises(ValueError, match="missing"):
        GradientFlowExplorer(data, table=incomplete)
    assert flow.runs == {}


def test_it_shows_with_its_progress_bar_below(flow):
    assert isinstance(flow.widget, ipywidgets.VBox) and flow.widget.children == (flow, flow.progress)
    assert isinstance(flow.progress, ipywidgets.Output)
    bundle = flow._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == flow.widget.model_id
    assert bundle["text/plain"] == repr(flow) and "0x" not in repr(flow)


def test_the_snapshot_draws_the_norms_and_curves_sent(data, table):
    runs = {(None, 10, "relu", "he", 1.0): fake(0.1, diverged_at=4), ("bn", 10, "relu", "he", 1.0): fake(0.9456)}
    e = GradientFlowExplorer(data, runs=runs, table=table)
    left, right = e.figure().axes[:2]
    for line, norm in zip(left.lines, (None, "bn")):
        np.testing.assert_array_equal(line.get_ydata(), e.sent_norms(norm, 10, "relu", "he"))
        assert to_hex(line.get_color()) == plots.COLORS["bn" if norm else "plain"]
    ratio = {k: e.sent_norms(norm, 10, "relu", "he") for k, norm in (("plain", None), ("bn", "bn"))}
    ratio = {k: g[0] / g[-1] for k, g in ratio.items()}
    assert left.get_title() == ("At init, depth 10, relu, he: layer 1 / last\n"
                                f"without BN {ratio['plain']:.2g}x, with BN {ratio['bn']:.2g}x")
    curves = [line for line in right.lines if line.get_label() != "_diverged"]
    assert [list(line.get_ydata()) for line in curves] == [[0.1, 0.5, 0.1], [0.1, 0.5, 0.9456]]
    assert right.get_title() == "Training at learning rate 1" and right.get_ylim() == (0, 1)
    assert "(diverged at step 4)" in [t.get_text() for t in right.get_legend().get_texts()][0]
    untrained = e.figure(depth=20).axes[1]
    assert not untrained.axison and "not trained yet" in untrained.texts[0].get_text()
