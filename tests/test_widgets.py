"""What bnlab.widgets re-exports for the notebooks. The explorers themselves are tested one file
each (tests/test_explorers.py and tests/test_explorer_*.py) and their JavaScript in tests/js/."""

import pytest

from bnlab import data, experiments
from bnlab.widgets import base_sample, final_results, ramp_lag


def test_moved_helpers_are_still_importable_from_widgets():
    assert base_sample is data.base_sample
    assert ramp_lag is experiments.ramp_lag and final_results is experiments.final_results


def test_base_sample_is_standardized_and_rejects_unknown_shapes():
    for shape in ("normal", "skewed", "bimodal"):
        z = base_sample(shape, 300)
        assert abs(z.mean()) < 1e-12 and z.std() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        base_sample("uniform")
