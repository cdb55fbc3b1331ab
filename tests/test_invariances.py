"""bnlab.invariances: Ba et al. 2016's Table 1 measured on tensors. The expected table is the paper's,
written out here from its text, not read from the module; the measured changes must be rounding
(< 1e-10) where the paper says "invariant" and of order one (> 1e-3) where it says "no"."""

import pytest
import torch

from bnlab import invariances
from bnlab.invariances import BA_TABLE_1, METHODS, TRANSFORMS, format_invariance_table, invariance_table

pytestmark = pytest.mark.usefixtures("one_thread")

# Table 1 of "Layer Normalization" (Ba, Kiros & Hinton 2016), columns in the paper's order:
# weight matrix re-scaling, weight matrix re-centering, weight vector re-scaling,
# dataset re-scaling, dataset re-centering, single training case re-scaling
PAPER = {
    "batch norm": "Invariant No Invariant Invariant Invariant No",
    "weight norm": "Invariant No Invariant No No No",
    "layer norm": "Invariant Invariant No Invariant No Invariant",
}
COLUMNS = ["weight matrix re-scaling", "weight matrix re-centering", "weight vector re-scaling",
           "dataset re-scaling", "dataset re-centering", "single training case re-scaling"]


def test_the_constant_is_the_papers_table():
    expected = {(method, column): word == "Invariant"
                for method, row in PAPER.items() for column, word in zip(COLUMNS, row.split())}
    assert BA_TABLE_1 == expected
    assert list(METHODS) == list(PAPER) and list(TRANSFORMS) == COLUMNS


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_measured_table_agrees_with_the_paper(seed):
    changes = invariance_table(seed=seed)
    assert set(changes) == set(BA_TABLE_1)
    for key, invariant in BA_TABLE_1.items():
        if invariant:
            assert changes[key] < 1e-10, f"{key}: the paper says invariant, the output moved by {changes[key]:.3g}"
        else:
            assert changes[key] > 1e-3, f"{key}: the paper says no, the output moved by only {changes[key]:.3g}"
    assert invariances.invariance_verdicts(changes) == BA_TABLE_1


def test_seeds_draw_different_data():
    assert invariance_table(seed=0) != invariance_table(seed=1)


def test_with_eps_the_rescaling_invariances_are_approximate():
    """eps > 0 leaves the centring invariances exact but makes the re-scaling ones approximate: the
    output moves, by much less than a "no" entry, and by more than with eps = 0."""
    exact, approximate = invariance_table(seed=0), invariance_table(seed=0, eps=1e-5)
    rescalings = [("batch norm", "weight matrix re-scaling"), ("batch norm", "weight vector re-scaling"),
                  ("batch norm", "dataset re-scaling"), ("layer norm", "weight matrix re-scaling"),
                  ("layer norm", "dataset re-scaling"), ("layer norm", "single training case re-scaling")]
    for key in rescalings:
        assert 1e-12 < approximate[key] < 1e-3, (key, approximate[key])
        assert approximate[key] > 100 * exact[key], (key, approximate[key], exact[key])
    for key in [("batch norm", "dataset re-centering"), ("layer norm", "weight matrix re-centering")]:
        assert approximate[key] < 1e-10, (key, approximate[key])
    # weight norm has no eps: the same numbers
    assert all(approximate[("weight norm", t)] == exact[("weight norm", t)] for t in TRANSFORMS)


def test_the_printed_table_marks_disagreements():
    changes = invariance_table(seed=0)
    text = format_invariance_table(changes)
    assert "!" not in text and all(t in text for t in TRANSFORMS) and all(m in text for m in METHODS)
    flipped = dict(changes)
    flipped[("layer norm", "dataset re-centering")] = 0.0     # pretend LN were invariant to it
    marked = [line for line in format_invariance_table(flipped).splitlines() if "!" in line]
    assert len(marked) == 1 and marked[0].startswith("dataset re-centering")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="eps"):
        invariance_table(eps=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        invariance_table(batch_size=1)


def test_float32_gives_the_same_verdicts_with_a_float32_tolerance():
    changes = invariance_table(seed=0, dtype=torch.float32)
    assert invariances.invariance_verdicts(changes, tol=1e-4) == BA_TABLE_1


def test_a_bias_before_the_norm_breaks_layer_norms_rescaling_invariance():
    """The module's reason for a = W x without a bias: with a fixed b, W -> c W moves LN's output by
    order 1, while BN subtracts b and stays invariant."""
    from bnlab.functional import batch_norm
    from bnlab.norms import layer_norm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 10, generator=g, dtype=torch.float64)
    weight = torch.randn(8, 10, generator=g, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)

    def ln(w):
        return layer_norm(x @ w.T + b, (8,), eps=0.0)

    def bn(w):
        return batch_norm(x @ w.T + b, None, None, training=True, eps=0.0)

    assert (ln(2.5 * weight) - ln(weight)).abs().max() > 1e-2
    assert (bn(2.5 * weight) - bn(weight)).abs().max() < 1e-10
