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
from bnlab.experiments import LANDSCAPE, SLICE_STEPS  # noqa: E402
from bnlab.widgets import MAX_PAYLOAD_BYTES, LossSliceExplorer, bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "js"))
from loss_slice_explorer_fixtures import KS, SEEDS, STEPS, seeded_runs, synthetic_runs  # noqa: E402

NORMS = ((None, "plain"), ("torch_bn", "bn"), ("noisy", "noisy"))


def ratio_text(r):
    # a ratio of 10 or more is written as a whole number ("240x", not "2.4e+02x"), a smaller one to 2 digits
    return str(round(r)) if r >= 10 else f"{r:.2g}"


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
    text = ratio_text
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


def test_one_seed_each_has_no_seed_to_choose():
    runs = synthetic_runs()
    e = LossSliceExplorer(runs)
    assert e.seeds is None and "seeds" not in e.data and "seed" not in e.initial
    for key, ranges in e.loss_ranges(20).items():
        norm = dict((k, n) for n, k in NORMS)[key]
        np.testing.assert_allclose(ranges, [runs[norm].paths[2].loss_range], rtol=1e-4)
    with pytest.raises(ValueError, match="one seed each"):
        LossSliceExplorer(runs, seed=0)
    for call in (lambda: e.slices(10, seed=0), lambda: e.title(10, seed=0), lambda: e.figure(seed=0)):
        with pytest.raises(ValueError, match="one seed each"):
            call()


def test_with_seeds_every_seed_is_sent_and_the_chosen_one_shown():
    runs = seeded_runs()
    e = LossSliceExplorer(runs, step=20, k=2.0)
    data = e.data
    assert data["variants"] == ["plain", "bn", "noisy"] and data["seeds"] == SEEDS == e.seeds
    assert data["initial"] == {"step": 20, "k": 2.0, "seed": SEEDS[0]}   # the first seed by default
    assert LossSliceExplorer(runs, seed=np.int64(2)).initial["seed"] == 2
    i = STEPS.index(20)
    for norm, key in NORMS:
        for s, seed in enumerate(SEEDS):
            path = runs[norm][seed].paths[i]
            np.testing.assert_allclose(data["losses"][key][s][i], path.losses, rtol=1e-5)
            assert data["loss0"][key][s][i] == pytest.approx(path.loss, rel=1e-5)
            losses, loss0 = e.slices(20, seed=seed)[key]
            np.testing.assert_allclose(losses, path.losses, rtol=1e-5)
            assert loss0 == pytest.approx(path.loss, rel=1e-5)
        np.testing.assert_allclose(e.loss_ranges(20)[key], [runs[norm][s].paths[i].loss_range for s in SEEDS],
                                   rtol=1e-4)
    # the default is the initial seed, and the seeds' slices differ (else choosing one would show nothing)
    np.testing.assert_array_equal(e.slices(20)["plain"][0], e.slices(20, seed=SEEDS[0])["plain"][0])
    assert not np.allclose(e.slices(20, seed=1)["plain"][0], e.slices(20, seed=2)["plain"][0])
    for seed in SEEDS:
        ratio = runs[None][seed].paths[i].loss_range / runs["torch_bn"][seed].paths[i].loss_range
        assert e.title(20, seed) == (f"Seed {seed}, step 20: along the gradient the loss varies "
                                     f"{ratio_text(ratio)}x less with BN than without")
    assert e.title(20) == e.title(20, SEEDS[0])
    with pytest.raises(ValueError, match=r"seed must be one of the runs' seeds \[0, 1, 2\], got 5"):
        e.slices(20, seed=5)


def test_seeds_given_as_strings_are_sent_as_they_are():
    runs = seeded_runs()
    named = {norm: {f"s{seed}": run for seed, run in by_seed.items()} for norm, by_seed in runs.items()}
    e = LossSliceExplorer(named, seed="s1")
    assert e.data["seeds"] == ["s0", "s1", "s2"] and e.initial["seed"] == "s1"
    assert e.title(10).startswith("Seed s1, step 10: ")


def test_seeds_that_do_not_match_are_named():
    runs = seeded_runs()
    mismatch = r"every variant needs the same seeds: 'noisy' has \[0, 1\], None has \[0, 1, 2\]"
    with pytest.raises(ValueError, match=mismatch):
        LossSliceExplorer({**runs, "noisy": {s: runs["noisy"][s] for s in (0, 1)}})
    with pytest.raises(ValueError, match="'noisy' has no runs"):
        LossSliceExplorer({**runs, "noisy": {}})
    with pytest.raises(ValueError, match="all {variant: LandscapeRun} or all {variant: {seed: LandscapeRun}}"):
        LossSliceExplorer({**runs, "noisy": runs["noisy"][0]})
    with pytest.raises(ValueError, match="seeds must be ints or strings"):
        LossSliceExplorer({norm: {(s,): run for s, run in by_seed.items()} for norm, by_seed in runs.items()})
    with pytest.raises(ValueError, match=r"seed must be one of the runs' seeds \[0, 1, 2\], got 3"):
        LossSliceExplorer(runs, seed=3)
    other = seeded_runs()
    other["torch_bn"][2].steps = [0, 5, 20]
    with pytest.raises(ValueError, match="run 'torch_bn' seed 2 was recorded at other checkpoints"):
        LossSliceExplorer(other)
    other = seeded_runs()
    other["noisy"][1].lr = 0.05
    with pytest.raises(ValueError, match="run 'noisy' seed 1 was recorded at .* another lr"):
        LossSliceExplorer(other)
    other = seeded_runs(ks=KS * 2)
    with pytest.raises(ValueError, match="run 'noisy' seed 0 has slices at other multiples k"):
        LossSliceExplorer({**runs, "noisy": other["noisy"]})


def test_figure_draws_the_chosen_seed():
    runs = seeded_runs()
    e = LossSliceExplorer(runs, step=10, seed=2)
    for seed in (None, 1):
        shown = 2 if seed is None else seed
        ax = e.figure(seed=seed).axes[0]
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
        assert [line.get_label() for line in lines] == [plots.LABELS[k] for _, k in NORMS]
        for line, (norm, _) in zip(lines, NORMS):
            path = runs[norm][shown].paths[1]
            np.testing.assert_allclose(line.get_ydata(), [path.loss, *path.losses], rtol=1e-5)
        assert ax.get_title() == e.title(10, shown) and ax.get_title().startswith(f"Seed {shown}, step 10: ")


def test_the_lessons_runs_fit_well_under_the_payload_limit():
    # lesson 09: 3 variants x 3 seeds, LANDSCAPE's 11 checkpoints, the 16 ks of SLICE_STEPS
    checkpoints = list(LANDSCAPE["checkpoints"])
    runs = seeded_runs(ks=SLICE_STEPS, steps=checkpoints)
    e = LossSliceExplorer(runs, step=50, k=1.0, seed=0)
    assert len(e.data["losses"]["bn"]) == 3 and len(e.data["losses"]["bn"][0]) == len(checkpoints) == 11
    assert len(e.data["losses"]["bn"][0][0]) == len(SLICE_STEPS) == 16
    assert e.payload_bytes == len(json.dumps(e.data, separators=(",", ":")))
    assert e.payload_bytes < MAX_PAYLOAD_BYTES / 20, f"{e.payload_bytes:,} bytes"
