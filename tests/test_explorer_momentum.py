"""Lesson 03's MomentumExplorer, an explorer that draws in the browser: what it sends (batch means
and true means per kind of drift, once and exactly), its running mean and lag in Python, which
tests/js/momentum_explorer.test.mjs holds the view's JavaScript to, and its snapshot figure."""

import numpy as np
import pytest
from figure_testing import assert_inside

from bnlab import plots, widgets
from bnlab.data import drifting_batches
from bnlab.experiments import ramp_lag
from bnlab.reference import running_average
from bnlab.widgets import MomentumExplorer, bundle


@pytest.fixture(scope="module")
def explorer():
    return MomentumExplorer(steps=400, batch_size=32, drift=0.02)   # lesson 03's


def test_it_sends_batch_means_and_true_means_once_and_exactly(explorer):
    data = explorer.data
    assert set(data["batch_means"]) == set(data["true_mean"]) == set(MomentumExplorer.KINDS)
    for kind in MomentumExplorer.KINDS:
        # exact float64 values: the view's running average must give the numbers compute() gives
        np.testing.assert_array_equal(np.array(data["batch_means"][kind]),
                                      drifting_batches(400, 32, 0.02, kind, seed=0).mean(1))
        np.testing.assert_array_equal(np.array(data["true_mean"][kind]),
                                      drifting_batches(400, 32, 0.02, kind, noise=0.0).mean(1))
    np.testing.assert_allclose(data["true_mean"]["ramp"], 0.02 * np.arange(400), rtol=1e-12, atol=1e-15)
    assert data["drift"] == 0.02 and data["last"] == 100 and data["momentum_range"] == [1e-3, 1.0]
    assert data["initial"] == {"momentum": 0.1, "kind": "ramp"}
    assert data["colors"]["plain"] == plots.COLORS["plain"] and data["running_color"] == "#f87f2c"
    assert explorer.payload_bytes < 60_000
    assert MomentumExplorer._esm == bundle("momentum_explorer.js")
    assert (widgets.STATIC / MomentumExplorer.VIEW).is_file()
    assert "0x" not in repr(explorer)


def test_other_starting_settings_and_bad_ones():
    e = MomentumExplorer(steps=50, momentum=0.01, kind="sine")
    assert e.data["initial"] == {"momentum": 0.01, "kind": "sine"} and len(e.data["batch_means"]["sine"]) == 50
    with pytest.raises(ValueError, match="kind must be one of"):
        MomentumExplorer(kind="zigzag")
    with pytest.raises(ValueError, match="momentum must be in 0.001..1.0"):
        MomentumExplorer(momentum=0.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        e.compute(0.1, "zigzag")
    with pytest.raises(ValueError, match="momentum must be in"):
        e.compute(1.5, "ramp")
    with pytest.raises(ValueError, match="would send .* bytes"):
        MomentumExplorer(steps=20_000)    # more than an explorer may send


def test_the_running_mean_is_the_reference_running_average(explorer):
    for kind in MomentumExplorer.KINDS:
        batch_means, running, true = explorer.compute(0.05, kind)
        np.testing.assert_array_equal(batch_means, explorer.recorded[kind].mean(1))
        np.testing.assert_array_equal(running, running_average(batch_means, 0.05))
        np.testing.assert_array_equal(true, explorer.true_mean[kind])
    # momentum 1: the running mean is the last batch's mean
    batch_means, running, _ = explorer.compute(1.0, "step")
    np.testing.assert_array_equal(running, batch_means)


def test_the_lag_matches_theory_for_a_ramp(explorer):
    recorded = explorer.recorded["ramp"].copy()
    batch_means, running, true = explorer.compute(0.1, "ramp")
    assert ramp_lag(true, running) == pytest.approx(0.02 * 0.9 / 0.1, abs=0.03)
    assert explorer.lag(0.1, "ramp") == ramp_lag(true, running)
    # a smaller momentum lags further (Keras's default 0.01: more than 5 times as far)
    assert explorer.lag(0.01, "ramp") > 5 * explorer.lag(0.1, "ramp")
    assert explorer.lag(0.3, "ramp") == pytest.approx(0.02 * 0.7 / 0.3, abs=0.02)
    np.testing.assert_array_equal(explorer.recorded["ramp"], recorded)   # computing leaves the records as they were
    # fewer steps than the lag's window: the lag is over all of them
    short = MomentumExplorer(steps=30)
    _, running, true = short.compute(0.5, "ramp")
    assert short.lag(0.5, "ramp") == pytest.approx(np.mean(true - running))


def test_the_snapshot_draws_batch_means_truth_and_running_mean(explorer):
    fig = explorer.figure(momentum=0.01, kind="sine")
    (ax,) = fig.axes
    batch_means, running, true = explorer.compute(0.01, "sine")
    dots, truth, average = ax.lines
    np.testing.assert_array_equal(dots.get_ydata(), batch_means)
    np.testing.assert_array_equal(truth.get_ydata(), true)
    np.testing.assert_array_equal(average.get_ydata(), running)
    assert average.get_color() == pytest.approx(plots.plt.cm.Oranges(0.55))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["batch mean", "true mean",
                                                                    "running_mean, momentum 0.01"]
    assert explorer.figure().axes[0].lines[2].get_ydata() == pytest.approx(explorer.compute(0.1, "ramp")[1])


@pytest.mark.parametrize("settings", [{}, {"momentum": 0.001, "kind": "step"}, {"momentum": 1.0, "kind": "sine"}])
def test_the_snapshot_keeps_its_labels_inside(explorer, settings):
    assert_inside(explorer.figure(**settings), settings)
