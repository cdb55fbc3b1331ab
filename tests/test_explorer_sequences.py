"""SequenceExplorer (lesson 11) sends, per step and variant, the histograms and moments of the LSTMs'
hidden-path pre-activations W_hh h_(t-1) and the BN-LSTM's per-step statistics once; its view picks
the step's (tests/js/sequence_explorer.test.mjs). Expected numbers come from torch's own LSTM, from
hooks on the BN-LSTM's norm and from bnlab.recurrent's measurements, never from the explorer."""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from bnlab import plots  # noqa: E402
from bnlab.data import adding_problem  # noqa: E402
from bnlab.recurrent import SequenceHistory, SequenceRegressor, hidden_preactivation_variance, train_adding_problem  # noqa: E402
from bnlab.widgets import MAX_PAYLOAD_BYTES, SequenceExplorer, bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "js"))
from sequence_explorer_fixtures import TRAINED, metrics, tiny_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    models = tiny_models()
    x = adding_problem(48, TRAINED + 3, 1, "test")[0]
    return models, x, SequenceExplorer(models, x, metrics(), chance=1 / 6, chance_label="always answering 1")


def torch_hidden_preactivations(model, x):
    """W_hh h_(t-1) of a plain LSTM at every step (T, N, 4H), from torch.nn.LSTM's own outputs."""
    lstm = model.lstm.to_torch()
    with torch.no_grad():
        h, _ = lstm(x)
        previous = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        return (previous @ lstm.weight_hh_l0.T).transpose(0, 1).double().numpy()


def bn_path(model, x):
    """(a_h (T, N, 4H), x_hat (T, N, 4H)) of a BN-LSTM in eval mode: what its norm_hh receives at every
    step, and what BN_t makes of it before gamma (its output / gamma; the path has no beta)."""
    seen = []
    hook = model.lstm.norm_hh.register_forward_hook(lambda m, args, out: seen.append((args[0], out / m.weight)))
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
        model.train()
    return tuple(torch.stack(parts).double().numpy() for parts in zip(*seen))


def test_the_plain_lstm_records_torch_lstm_pre_activations(setup):
    models, x, e = setup
    a_h = torch_hidden_preactivations(models[None], x)
    d = e.data
    assert d["steps"] == TRAINED + 3 and d["trained_steps"] == TRAINED and d["units"] is None
    np.testing.assert_allclose(d["raw"]["plain"]["mean"], a_h.mean(1).mean(-1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(d["raw"]["plain"]["var"], a_h.var(1).mean(-1), rtol=1e-4, atol=1e-9)
    edges = np.array(d["edges"])
    for t in range(d["steps"]):
        counts = np.histogram(np.clip(a_h[t], edges[0], edges[-1]), edges)[0]
        # a value within float32's rounding of an edge may land in the next bin
        np.testing.assert_allclose(d["raw"]["plain"]["hist"][t], counts / a_h[t].size, atol=2.5 / a_h[t].size)
        assert sum(d["raw"]["plain"]["hist"][t]) == pytest.approx(1, abs=0.02)
    assert d["raw"]["plain"]["var"][0] == 0 and d["raw"]["plain"]["var"][2] > 0      # h_0 = 0


def test_variances_are_hidden_preactivation_variance(setup):
    models, x, e = setup
    for norm, key in ((None, "plain"), ("bn", "bn"), ("ln", "ln")):
        model = models[norm].eval()
        expected = hidden_preactivation_variance(model, x)["hidden"].numpy()
        models[norm].train()
        np.testing.assert_allclose(e.data["raw"][key]["var"], expected, rtol=1e-5, atol=1e-12)


def test_bn_statistics_per_step_and_pooled_and_x_hat(setup):
    models, x, e = setup
    norm = models["bn"].lstm.norm_hh
    d = e.data["bn"]
    running_var = [norm.steps[min(t, TRAINED - 1)].running_var.double() for t in range(TRAINED + 3)]
    running_mean = [norm.steps[min(t, TRAINED - 1)].running_mean.double() for t in range(TRAINED + 3)]
    np.testing.assert_allclose(d["running_var"], [v.mean() for v in running_var], rtol=1e-5)
    np.testing.assert_allclose(d["running_mean"], [m.mean() for m in running_mean], rtol=1e-5, atol=1e-9)
    means, variances = torch.stack(running_mean[:TRAINED]), torch.stack(running_var[:TRAINED])
    pooled = (variances + (means - means.mean(0)) ** 2).mean(0)       # the law of total variance over steps
    assert d["pooled_var"] == pytest.approx(pooled.mean().item(), rel=1e-5)
    a_h, x_hat = bn_path(models["bn"], x)
    np.testing.assert_allclose(e.data["raw"]["bn"]["var"], a_h.var(1).mean(-1), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(d["rms_step"], np.sqrt((x_hat ** 2).mean((1, 2))), rtol=1e-4, atol=1e-6)
    shared = (a_h - means.mean(0).numpy()) / np.sqrt(pooled.numpy() + norm.eps)
    np.testing.assert_allclose(d["rms_shared"], np.sqrt((shared ** 2).mean((1, 2))), rtol=1e-4)
    s = e.at_step(TRAINED + 1)
    assert s["beyond"] and s["stats_step"] == TRAINED - 1


def test_on_the_batch_that_set_the_statistics_x_hat_is_standard():
    # eps far below these untrained nets' variances (1e-5 is a tenth of some)
    models = tiny_models(seed=2, eps=1e-12)
    # momentum=None: the running statistics are this batch's (the variance unbiased, so an RMS of
    # sqrt(127/128) = 0.996), taken in training mode, where the states differ a little from eval's
    x = adding_problem(128, TRAINED, 2, "train")[0]
    e = SequenceExplorer(models, x)
    np.testing.assert_allclose(e.data["bn"]["rms_step"][1:], 0.996, atol=0.015)
    assert e.data["bn"]["rms_step"][0] == 0       # a_h = 0 at t = 0: x_hat is 0 too


def test_title_and_picks(setup):
    _, _, e = setup
    d = e.data
    assert e.initial == {"step": 1, "variant": "plain"}
    assert e.title(0).startswith("Step 0: h_0 = 0")
    s = e.at_step(2, "ln")
    ratio = d["raw"]["ln"]["var"][2] / d["raw"]["ln"]["var"][TRAINED - 1]
    assert e.title(2, "ln") == (f"Step 2: LN-LSTM, Var W_hh h_(t−1) is {100 * ratio:.0f}% of step {TRAINED - 1}'s; "
                                f"BN's step-2 statistics give x̂ an RMS of {s['rms_step']:.2f} (one set for all "
                                f"steps: {s['rms_shared']:.2f})")
    assert e.title(TRAINED).startswith(f"Step {TRAINED} (beyond the {TRAINED} trained steps): ")
    assert d["metrics"]["bn"] == pytest.approx(list(metrics()["bn"].values()))
    assert d["colors"]["plain"] == plots.COLORS["plain"] and d["colors"]["ln"] == plots.COLORS["ln"]
    assert e.payload_bytes == len(json.dumps(d, separators=(",", ":"))) < MAX_PAYLOAD_BYTES
    assert "export default" in bundle(SequenceExplorer.VIEW)
    assert repr(e) == "SequenceExplorer: an explorer that draws in the browser (JupyterLab, or the course site)"


def test_units_pick_the_gates_of_chosen_hidden_units(setup):
    models, x, _ = setup
    e = SequenceExplorer(models, x, units=[2])
    a_h = torch_hidden_preactivations(models[None], x)[:, :, [2, 5, 8, 11]]    # H = 3: gates i, f, g, o of unit 2
    np.testing.assert_allclose(e.data["raw"]["plain"]["var"], a_h.var(1).mean(-1), rtol=1e-4, atol=1e-9)


def test_a_lesson_sized_explorer_stays_small():
    # what the payload grows with: steps x variants x bins, not the hidden size
    norms = (None, "bn", "bn_input", "ln")
    torch.manual_seed(0)
    models = {n: SequenceRegressor(2, 2, n, max_steps=20, momentum=None) for n in norms}
    with torch.no_grad():
        models["bn"].train()(adding_problem(64, 20, 0)[0])
    e = SequenceExplorer(models, adding_problem(256, 80, 0, "test")[0],
                         {n: {f"length {L}": 0.1 for L in (20, 40, 80)} for n in norms})
    assert e.payload_bytes < 300_000
    assert e.data["colors"]["bn_input"] != e.data["colors"]["bn"]


def test_from_runs_takes_what_train_adding_problem_returns():
    runs = {norm: train_adding_problem(norm, length=6, steps=4, hidden_size=3, n_train=64, n_test=16, batch_size=16,
                                       eval_every=4) for norm in (None, "bn")}
    e = SequenceExplorer.from_runs(runs, n=32)
    assert e.data["steps"] == 6 and e.data["tests"] == ["length 6", "length 12", "length 24"]
    assert e.data["metrics"]["plain"] == pytest.approx([runs[None].final(t) for t in e.data["tests"]], rel=1e-5)
    assert e.data["chance"] == pytest.approx(1 / 6) and e.data["metric"] == "test MSE"
    expected = hidden_preactivation_variance(runs[None].model.eval(), adding_problem(32, 6, 0, "test")[0])["hidden"]
    np.testing.assert_allclose(e.data["raw"]["plain"]["var"], expected.numpy(), rtol=1e-5, atol=1e-12)
    with pytest.raises(ValueError, match="holding its model"):
        SequenceExplorer.from_runs({"bn": SequenceHistory("mse")})
    renamed = {n: SequenceHistory("accuracy", metrics={"test": [0.5]}, model=h.model) for n, h in runs.items()}
    with pytest.raises(ValueError, match="give x"):
        SequenceExplorer.from_runs(renamed)


def test_bad_input_is_named(setup):
    models, x, _ = setup
    with pytest.raises(ValueError, match="models is empty"):
        SequenceExplorer({}, x)
    with pytest.raises(ValueError, match="needs a BN-LSTM under 'bn'"):
        SequenceExplorer({None: models[None]}, x)
    with pytest.raises(ValueError, match="two entries for variant 'plain'"):
        SequenceExplorer({None: models[None], "plain": models[None], "bn": models["bn"]}, x)
    with pytest.raises(ValueError, match="unknown LSTM variant 'gn'"):
        SequenceExplorer({"gn": models[None], "bn": models["bn"]}, x)
    with pytest.raises(ValueError, match=r"models\['ln'\] holds an LSTM with norm=None"):
        SequenceExplorer({"ln": models[None], "bn": models["bn"]}, x)
    with pytest.raises(ValueError, match="expected a bnlab LSTM"):
        SequenceExplorer({"bn": torch.nn.Linear(2, 2)}, x)
    with pytest.raises(ValueError, match=r"x must be \(N, T, I\)"):
        SequenceExplorer(models, x[:1])
    with pytest.raises(ValueError, match="units must be hidden units 0..2"):
        SequenceExplorer(models, x, units=[3])
    with pytest.raises(ValueError, match="distinct hidden units"):
        SequenceExplorer(models, x, units=[1, 1])
    with pytest.raises(ValueError, match="step must be a time step"):
        SequenceExplorer(models, x, step=TRAINED + 3)
    with pytest.raises(ValueError, match="variant must be one of"):
        SequenceExplorer({"bn": models["bn"]}, x, variant="ln")
    with pytest.raises(ValueError, match="same test sets"):
        SequenceExplorer(models, x, {None: {"a": 1.0}, "bn": {"b": 1.0}})
    with pytest.raises(ValueError, match="must be finite"):
        SequenceExplorer(models, x, {None: {"a": float("nan")}})
    models["bn"].lstm.beyond = "none"
    try:
        with pytest.raises(ValueError, match="beyond='none'"):
            SequenceExplorer(models, x)
    finally:
        models["bn"].lstm.beyond = "last"


def test_figure_draws_the_sent_records(setup):
    _, _, e = setup
    fig = e.figure(step=3, variant="ln")
    hist, curves, bars = fig.axes
    s = e.at_step(3, "ln")
    filled, own, shared = hist.patches
    for patch, key in ((filled, "raw_hist"), (own, "step_hist"), (shared, "shared_hist")):
        np.testing.assert_allclose(patch.get_data().values, s[key])
        np.testing.assert_allclose(patch.get_data().edges, e.data["edges"])
    assert filled.get_facecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb(plots.COLORS["ln"]))
    ln = [line for line in curves.get_lines() if line.get_label() == e.data["labels"]["ln"]][0]
    np.testing.assert_allclose(ln.get_ydata(), e.data["raw"]["ln"]["var"])
    heights = sorted(p.get_height() for p in bars.patches)
    assert heights == pytest.approx(sorted(v for vs in e.data["metrics"].values() for v in vs))
    assert fig._suptitle.get_text() == e.title(3, "ln")
