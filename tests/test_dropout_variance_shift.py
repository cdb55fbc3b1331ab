"""bnlab.stats.dropout_variance_shift (Li et al. 2019): the train and eval variance of a unit after
dropout, against hand values and a Monte-Carlo simulation through torch's nn.Dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlab.stats import DropoutVarianceShift, dropout_variance_shift


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    torch.set_num_threads(1)


@pytest.mark.parametrize("mean, var, keep, train, test", [
    (0.0, 1.0, 0.5, 2.0, 1.0),      # centred unit: Var / p
    (1.0, 1.0, 0.5, 3.0, 1.0),      # E[X^2] = 2, / 0.5 = 4, minus 1
    (2.0, 0.0, 0.5, 4.0, 0.0),      # a constant unit gets variance c^2 (1 - p) / p from the mask alone
    (3.0, 2.0, 0.25, 35.0, 2.0),    # (9 + 2) * 4 - 9
    (-1.5, 0.7, 1.0, 0.7, 0.7),     # keep = 1: no dropout, no shift
])
def test_hand_values(mean, var, keep, train, test):
    shift = dropout_variance_shift(mean, var, keep)
    assert isinstance(shift, DropoutVarianceShift)
    assert shift.train == pytest.approx(train, abs=1e-12) and shift.test == pytest.approx(test, abs=1e-12)
    if train:
        assert shift.ratio == pytest.approx(test / train, abs=1e-12)


def test_tensors_per_unit():
    shift = dropout_variance_shift(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64),
                                   torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), 0.5)
    assert torch.allclose(shift.train, torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(shift.test, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))


def simulate(mean: float, var: float, keep: float, samples: int = 8_000_000, chunk: int = 2_000_000,
             seed: int = 0) -> tuple[float, float]:
    """Var of nn.Dropout(1 - keep)(x) in training and in eval over `samples` values x, in chunks.
    Each chunk of x is standardized to mean `mean` and variance `var` exactly, so the estimate's only
    noise is the dropout mask's (its standard error here is at most 2.2e-4)."""
    torch.manual_seed(seed)
    drop = nn.Dropout(1 - keep)
    sums = {"train": [0.0, 0.0], "eval": [0.0, 0.0]}
    for _ in range(samples // chunk):
        x = torch.randn(chunk, dtype=torch.float64)
        x = (x - x.mean()) / x.std(correction=0) * var ** 0.5 + mean
        for mode in sums:
            y = drop.train(mode == "train")(x)
            sums[mode][0] += float(y.sum())
            sums[mode][1] += float((y * y).sum())
    n = (samples // chunk) * chunk
    return tuple(s2 / n - (s1 / n) ** 2 for s1, s2 in sums.values())


@pytest.mark.parametrize("mean, var, keep", [(0.5, 0.25, 0.8), (-0.3, 0.2, 0.9), (1.0, 0.5, 0.8), (0.0, 0.5, 0.7)])
def test_matches_a_monte_carlo_simulation_through_torch_dropout(mean, var, keep):
    """To 3 decimals (|difference| < 1e-3, about 4.5 standard errors of the simulation), where the
    wrong answers are far off: no shift (Var_train = v) by (c^2 + v)(1 - p) / p >= 0.032 here, and
    v / p, which forgets the mean, by c^2 (1 - p) / p >= 0.01 in the three cases with c != 0."""
    var_train, var_eval = simulate(mean, var, keep)
    expected = dropout_variance_shift(mean, var, keep)
    assert abs(var_train - expected.train) < 1e-3, (var_train, expected.train)
    assert abs(var_eval - expected.test) < 1e-9
    assert var_train > var_eval  # dropout inflates the training variance


@pytest.mark.parametrize("kwargs, match", [
    (dict(keep=0.0), "keep"), (dict(keep=1.5), "keep"), (dict(keep=True), "keep"), (dict(keep="0.5"), "keep"),
    (dict(var=-0.1), "var must be >= 0"), (dict(var=float("nan")), "var must be finite"),
    (dict(mean="1"), "mean must be a number"), (dict(mean=torch.tensor([1, 2])), "floating-point"),
    (dict(mean=torch.zeros(3), var=torch.ones(2)), "one shape"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dropout_variance_shift(**{"mean": 0.0, "var": 1.0, "keep": 0.5, **kwargs})
