"""LossSliceExplorer (lesson 09) sends the recorded loss slices of every variant at every checkpoint
once; its view picks the step's slices per move (tests/js/loss_slice_explorer.test.mjs). Expected
numbers come from the GradientPaths built here, never from what the explorer sent."""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from bnlab import plots  # noqa: E402
from bnlab.widgets import MAX_PAYLOAD_BYTES, LossSliceExplorer, bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "js"))
from loss_slice_explorer_fixtures import KS, STEPS, synthetic_runs  # noqa: E402


def test_sends_every_slice_at_every_checkpoint():
    runs = synthetic_runs()
    e = LossSliceExplorer(runs, step=10, k=2.0)
    data = e.data
    assert data["variants"] == ["plain", "bn", "noisy"]      # None -> plain, torch_bn -> bn
    assert data["steps"] == STEPS and data["ks"] == pytest.approx(KS.tolist(), abs=0) and data["lr"] == 0.1
    assert data["initial"] == {"step": 10, "k": 2.0}
    for norm, key in ((None, "plain"), ("torch_bn", "bn"), ("noisy", "noisy")):
        assert data["colors"][key] == plots.COLORS[key] and data["labels"][key] == plots.LABELS[key]
        for i, path in enumerate(runs[norm].paths):
            np.testing.assert_allclose(data["losses"][key][i], path.losses, rtol=1e-5)
            assert data["loss0"][key][i] == pytest.approx(path.loss, rel=1e-5)
            losses, loss0 = e.slices(STEPS[i])[key]
            assert losses.max() - losses.min() == pytest.approx(path.loss_range, rel=1e-4)
    assert e.payload_bytes == len(json.dumps(data, separators=(",", ":"))) < MAX_PAYLOAD_BYTES
    assert "export default" in bundle(LossSliceExplorer.VIEW)


def test_title_states_the_ratio_of_loss_ranges():
    runs = synthetic_runs()
    e = LossSliceExplorer(runs)
    assert e.initial["step"] == 10                           # the middle checkpoint by default
    i = STEPS.index(20)
    ratio = runs[None].paths[i].loss_range / runs["torch_bn"].paths[i].loss_range
    # a ratio of 10 or more is written as a whole number ("240x", not "2.4e+02x"), a smaller one to 2 digits
    def text(r):
        return str(round(r)) if r >= 10 else f"{r:.2g}"
    assert e.title(20) == f"Step 20: along the gradient the loss varies {text(ratio)}x less with BN than without"
    assert LossSliceExplorer({"noisy": runs["noisy"]}).title(0) == "Step 0: the loss along the gradient"
    flipped = LossSliceExplorer({None: runs["torch_bn"], "bn": runs[None]})   # BN's slices the steeper
    inverse = runs[None].paths[i].loss_range / runs["torch_bn"].paths[i].loss_range
    assert flipped.title(20) == f"Step 20: here the loss varies {text(inverse)}x more with BN than without"
    assert e.k_index(1.1) == int(np.argmin(np.abs(KS - 1.1)))


def test_bad_input_is_named():
    runs = synthetic_runs()
    with pytest.raises(ValueError, match="runs is empty"):
        LossSliceExplorer({})
    with pytest.raises(ValueError, match="recorded checkpoints"):
        LossSliceExplorer(runs, step=15)
    with pytest.raises(ValueError, match="k must lie"):
        LossSliceExplorer(runs, k=9.0)
    with pytest.raises(ValueError, match="unknown variant"):
        LossSliceExplorer({"nonsense": runs[None]})
    with pytest.raises(ValueError, match="share a colour key"):
        LossSliceExplorer({"bn": runs[None], "torch_bn": runs["torch_bn"]})
    other = synthetic_runs()
    other[None].steps = [0, 5, 20]
    with pytest.raises(ValueError, match="other checkpoints"):
        LossSliceExplorer(other)


def test_figure_draws_the_sent_slices():
    runs = synthetic_runs()
    e = LossSliceExplorer(runs, step=20, k=1.0)
    fig = e.figure()
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert [line.get_label() for line in lines] == [plots.LABELS[k] for k in ("plain", "bn", "noisy")]
    for line, norm in zip(lines, (None, "torch_bn", "noisy")):
        path = runs[norm].paths[2]
        np.testing.assert_allclose(line.get_xdata(), [0.0, *KS])
        np.testing.assert_allclose(line.get_ydata(), [path.loss, *path.losses], rtol=1e-5)
        assert matplotlib.colors.to_hex(line.get_color()) == plots.COLORS[plots.variant(norm)]
    assert ax.get_title() == e.title(20)
    marker = [line for line in ax.get_lines() if len(line.get_xdata()) == 2]
    assert marker and marker[0].get_xdata()[0] == pytest.approx(1.0)
