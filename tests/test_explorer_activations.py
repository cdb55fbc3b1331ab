"""Lesson 04's ActivationExplorer: what it sends (every record of every run and layer, the histograms
encoded two characters a bin), that it is what the probes recorded, that bad runs are refused, and
that its snapshot draws the same data. (Its view's per-move computations: tests/js/activation_explorer.)"""

import json
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from figure_testing import assert_inside

matplotlib.use("Agg")

from bnlab import plots  # noqa: E402
from bnlab.data import digits, gaussian_blobs  # noqa: E402
from bnlab.experiments import FIG1_PROBE, ioffe_fig1  # noqa: E402
from bnlab.models import mlp  # noqa: E402
from bnlab.train import train_classifier  # noqa: E402
from bnlab.widgets import (  # noqa: E402
    FRACTION_ALPHABET,
    MAX_PAYLOAD_BYTES,
    ActivationExplorer,
    decode_fractions,
    encode_fractions,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fig1_runs(one_thread):
    """Lesson 04's recordings of 30 steps: records at steps 0, 10, 20."""
    data = digits()
    return {key: ioffe_fig1(norm, steps=30, data=data, progress=False, device="cpu").probe
            for key, norm in (("plain", None), ("bn", "bn"))}


def probed(every, steps, hidden=(8,)):
    data = gaussian_blobs(n_per_class=20, seed=0)
    torch.manual_seed(0)
    net = mlp(data.num_features, hidden, data.num_classes, activation="sigmoid")
    return train_classifier(net, data, steps=steps, device="cpu", progress=False, probe=dict(every=every)).probe


# ----------------------------------------------------------------------------- the histogram code
def test_fractions_travel_as_two_characters_each_within_two_tenths_of_a_percent():
    # by the code's definition: 0 -> code 0, 1 -> the last code, 1e-7 -> code 1
    assert encode_fractions([0.0, 1.0, 1e-7]) == "AA" + "__" + "AB"
    assert len(FRACTION_ALPHABET) == 64 and len(set(FRACTION_ALPHABET)) == 64
    f = 10.0 ** np.random.default_rng(0).uniform(-7, 0, 5000)
    text = encode_fractions(f.reshape(50, 100))
    assert len(text) == 2 * f.size and set(text) <= set(FRACTION_ALPHABET)
    back = decode_fractions(text)
    np.testing.assert_allclose(back, f, rtol=2e-3)
    assert np.max(np.abs(back / f - 1)) > 1e-3   # three digits, not more: the grid is as coarse as stated
    # nothing recorded (NaN) is an empty bin; below the range comes back as its floor
    np.testing.assert_array_equal(decode_fractions(encode_fractions([np.nan, 0.0, 1e-12])), [0.0, 0.0, 1e-7])
    with pytest.raises(ValueError, match="not an encode_fractions string"):
        decode_fractions("ABC")
    with pytest.raises(ValueError, match="not an encode_fractions string"):
        decode_fractions("A*")


# ----------------------------------------------------------------------------- what is sent
def test_it_sends_every_record_of_every_run_and_layer_as_recorded(fig1_runs):
    e = ActivationExplorer(fig1_runs, layer="hidden2", step=10)
    d = e.data
    assert d["steps"] == [0, 10, 20] and d["every"] == 10
    assert d["layers"] == ["hidden1", "hidden2", "hidden3"] and d["percentiles"] == [15.0, 50.0, 85.0]
    assert d["initial"] == {"step": 10, "layer": "hidden2", "quantity": "activations at this step"}
    assert d["quantities"] == list(ActivationExplorer.QUANTITIES)
    assert d["play"] == {"interval_ms": 150, "records_per_tick": 5}
    assert [r["key"] for r in d["runs"]] == ["plain", "bn"]
    assert [r["label"] for r in d["runs"]] == ["without BN", "with BN"]
    assert d["colors"]["plain"] == plots.COLORS["plain"] and d["colors"]["bn"] == plots.COLORS["bn"]
    assert d["heatmap"] == {"log_range": [-5, 0], "label": plots.HEATMAP_LABEL}
    for key, recording in fig1_runs.items():
        for layer in d["layers"]:
            record, sent = recording[layer], e.sent(key, layer)
            assert sent.hist.shape == (3, FIG1_PROBE["bins"]) and sent.grad_hist.shape == (3, 40)
            for got, recorded in ((sent.hist, record.hist), (sent.grad_hist, record.grad_hist)):
                np.testing.assert_array_equal(got == 0, recorded == 0)   # an empty bin stays empty
                np.testing.assert_allclose(got, recorded, rtol=2e-3)
            np.testing.assert_allclose(sent.edges, record.edges, rtol=1e-6)
            np.testing.assert_allclose(sent.grad_edges, record.grad_edges, rtol=1e-6)
            # to 7, 7, 6 and 5 significant digits
            for name, rtol in (("mean", 5e-7), ("std", 5e-7), ("percentiles", 5e-6), ("grad_norm", 5e-5)):
                np.testing.assert_allclose(getattr(sent, name), getattr(record, name), rtol=rtol, atol=1e-30,
                                           err_msg=name)
    with pytest.raises(ValueError, match="no run 'gn' with layer 'hidden1'"):
        e.sent("gn", "hidden1")


def test_index_maps_steps_to_records(fig1_runs):
    e = ActivationExplorer(fig1_runs)
    assert [e.index(s) for s in (0, 9, 10, 19, 20, 25, 10_000, -5)] == [0, 0, 1, 1, 2, 2, 2, 0]
    assert e.initial == {"step": 20, "layer": "hidden3", "quantity": "activations at this step"}


def test_lesson_04s_recording_fits_in_half_a_megabyte():
    """The lesson's shape: 2 runs x 3 layers x 300 records, 64 activation and 40 gradient bins (the
    lesson's own measured 499,864 bytes); histograms of 50,000 values, as the lesson's probe batch."""
    rng = np.random.default_rng(0)

    def layer():
        counts = rng.multinomial(50_000, rng.dirichlet(np.full(64, 0.3)), size=300)
        grad = rng.multinomial(50_000, rng.dirichlet(np.full(40, 0.3)), size=300)
        return SimpleNamespace(edges=np.linspace(-8, 8, 65), grad_edges=np.linspace(-10, 0, 41),
                               hist=(counts / 50_000).astype(np.float32), grad_hist=(grad / 50_000).astype(np.float32),
                               mean=rng.normal(size=300).astype(np.float32), std=rng.random(300).astype(np.float32),
                               percentiles=rng.normal(size=(300, 3)).astype(np.float32),
                               grad_norm=(10.0 ** rng.uniform(-3, 0, 300)).astype(np.float32))

    class Fake:
        percentiles = (15.0, 50.0, 85.0)
        steps = np.arange(0, 3000, 10)

        def __init__(self):
            self.layers = {name: layer() for name in ("hidden1", "hidden2", "hidden3")}

        def __len__(self):
            return len(self.steps)

        def __getitem__(self, name):
            return self.layers[name]

    e = ActivationExplorer({"plain": Fake(), "bn": Fake()}, layer="hidden3", step=300)
    assert 400_000 < e.payload_bytes < 520_000 < MAX_PAYLOAD_BYTES
    assert e.payload_bytes == len(json.dumps(e.data, separators=(",", ":")))


# ----------------------------------------------------------------------------- bad input
def test_it_refuses_runs_it_cannot_show_side_by_side(fig1_runs):
    with pytest.raises(ValueError, match="same steps"):
        ActivationExplorer({"plain": probed(every=1, steps=4), "bn": probed(every=2, steps=8)})  # 4 records each
    with pytest.raises(ValueError, match="same steps"):
        ActivationExplorer({"plain": probed(every=1, steps=4), "bn": probed(every=1, steps=5)})
    with pytest.raises(ValueError, match="same layers"):
        ActivationExplorer({"plain": probed(every=1, steps=4), "bn": probed(every=1, steps=4, hidden=(8, 8))})
    with pytest.raises(ValueError, match="at least one recording"):
        ActivationExplorer({})
    with pytest.raises(ValueError, match="layer must be one of the recorded layers .*'hidden4'"):
        ActivationExplorer(fig1_runs, layer="hidden4")
    with pytest.raises(ValueError, match="step must be within the recorded steps 0..20, got 30"):
        ActivationExplorer(fig1_runs, step=30)
    e = ActivationExplorer(fig1_runs)
    with pytest.raises(ValueError, match="quantity must be one of"):
        e.figure(quantity="weights")


# ----------------------------------------------------------------------------- the snapshot
def test_the_snapshot_draws_the_histograms_and_percentiles_sent(fig1_runs):
    e = ActivationExplorer(fig1_runs, layer="hidden2", step=10)
    fig = e.figure()
    for ax, key in zip(fig.axes, ("plain", "bn")):
        sent = e.sent(key, "hidden2")
        np.testing.assert_array_equal(ax.patches[0].get_data().values, sent.hist[1])
        np.testing.assert_allclose(ax.patches[0].get_data().values, fig1_runs[key]["hidden2"].hist[1], rtol=2e-3)
        assert [line.get_xdata()[0] for line in ax.lines] == pytest.approx(sent.percentiles[1])
        assert ax.get_title() == f"{plots.LABELS[key]}: hidden2 at step 10"
        assert ax.get_xlabel() == "hidden2 value (percentiles dashed)"
    grads = e.figure(quantity="gradients at this step", step=0).axes
    np.testing.assert_array_equal(grads[1].patches[0].get_data().values, e.sent("bn", "hidden2").grad_hist[0])
    assert not grads[1].lines and grads[1].get_xlabel() == "log10 |dL/da|"


def test_the_snapshot_of_a_history_is_the_heatmap_of_the_sent_histograms_with_the_step_marked(fig1_runs):
    e = ActivationExplorer(fig1_runs, layer="hidden1", step=20)
    fig = e.figure(quantity="activations over training")
    heatmaps = [ax for ax in fig.axes if ax.images]
    assert len(heatmaps) == 2 and len(fig.axes) == 4   # a colour bar beside each
    for ax, key in zip(heatmaps, ("plain", "bn")):
        image = np.asarray(ax.images[0].get_array())
        np.testing.assert_allclose(image, np.log10(np.maximum(e.sent(key, "hidden1").hist.T, 1e-5)))
        assert ax.lines[0].get_xdata()[0] == 20
        assert ax.get_title() == f"{plots.LABELS[key]}: hidden1 over training"


@pytest.mark.parametrize("quantity", ActivationExplorer.QUANTITIES)
def test_the_snapshot_keeps_every_label_inside(fig1_runs, quantity):
    """Lesson 04's old explorer clipped its y label at late steps and the last x tick of the heatmaps."""
    assert_inside(ActivationExplorer(fig1_runs).figure(quantity=quantity), quantity)
