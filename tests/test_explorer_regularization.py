"""RegularizationExplorer (lesson 10) sends the grid's train and test accuracies once; its view
averages per move (tests/js/regularization_explorer.test.mjs). Expected numbers come from the
RegularizationRuns built here, never from what the explorer sent."""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from bnlab.widgets import MAX_PAYLOAD_BYTES, RegularizationExplorer, bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "js"))
from regularization_explorer_fixtures import BATCHES, DECAYS, DROPOUTS, SEEDS, synthetic_grid  # noqa: E402


def test_sends_every_cell_and_titles_the_finding():
    grid = synthetic_grid()
    e = RegularizationExplorer(grid, batch_size=64, dropout=0.5)
    data = e.data
    assert data["batch_sizes"] == BATCHES and data["dropouts"] == DROPOUTS
    assert data["weight_decays"] == DECAYS and data["seeds"] == SEEDS
    for i, b in enumerate(BATCHES):
        for j, d in enumerate(DROPOUTS):
            for k, w in enumerate(DECAYS):
                assert data["train"][i][j][k] == [grid[b, d, w, s].train_accuracy for s in SEEDS]
                assert data["test"][i][j][k] == [grid[b, d, w, s].test_accuracy for s in SEEDS]
    gaps = [np.mean([grid[b, 0.5, 0.0, s].gap for s in SEEDS]) for b in BATCHES]
    best = BATCHES[int(np.argmin(gaps))]
    assert e.title(64, 0.5, 0.0) == (f"Batch 64, dropout 0.5, weight decay 0: train-test gap {100 * gaps[2]:.1f} "
                                     f"points (smallest at batch {best})")
    assert e.payload_bytes == len(json.dumps(data, separators=(",", ":"))) < MAX_PAYLOAD_BYTES
    assert "export default" in bundle(RegularizationExplorer.VIEW)


def test_bad_input_is_named():
    grid = synthetic_grid()
    with pytest.raises(ValueError, match="grid is empty"):
        RegularizationExplorer({})
    with pytest.raises(ValueError, match="batch_size must be one of"):
        RegularizationExplorer(grid, batch_size=5)
    with pytest.raises(ValueError, match="dropout must be one of"):
        RegularizationExplorer(grid, dropout=0.2)
    with pytest.raises(ValueError, match="panel must be"):
        RegularizationExplorer(grid, panel="loss")
    del grid[4, 0.0, 0.0, 1]
    with pytest.raises(ValueError, match="not complete"):
        RegularizationExplorer(grid)


def test_figure_draws_the_sent_grid():
    grid = synthetic_grid()
    e = RegularizationExplorer(grid, batch_size=16)
    ax = e.figure().axes[0]
    mean = [line for line in ax.get_lines() if line.get_label() == "mean over seeds"][0]
    expected = [100 * np.mean([grid[b, 0.0, 0.0, s].gap for s in SEEDS]) for b in BATCHES]
    np.testing.assert_allclose(mean.get_ydata(), expected, atol=1e-9)
    assert ax.get_title() == e.title(16, 0.0, 0.0)
    acc = e.figure(panel="accuracy").axes[0]
    test = [line for line in acc.get_lines() if line.get_label() == "test"][0]
    np.testing.assert_allclose(test.get_ydata(), [100 * np.mean([grid[b, 0.0, 0.0, s].test_accuracy for s in SEEDS])
                                                  for b in BATCHES])
