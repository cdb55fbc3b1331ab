"""bnlab.conventions: the torch row checked against torch itself (defaults, momentum direction, biased
normalization, unbiased running variance, eval mode); every other row's running update checked
against one step of torch's BatchNorm at the converted momentum; conversions, sources, bad input, and
the README's table."""

import inspect
import math
from pathlib import Path

import pytest
import torch
from bn_testing import random_bn_input
from torch import nn

from bnlab import conventions
from bnlab.conventions import (
    CONVENTIONS,
    FRAMEWORKS,
    batch_statistics,
    format_conventions_table,
    from_torch_momentum,
    running_update,
    to_torch_momentum,
    training_step,
)

pytestmark = pytest.mark.usefixtures("one_thread")

README = Path(__file__).resolve().parents[1] / "README.md"
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def _torch_bn(c: int, dim: int, dtype, momentum: float, seed: int = 1):
    """torch's BN for (N, C) (dim 2) or (N, C, H, W) (dim 4) input, with random running buffers, so a
    step that ignored them, or weighted them the wrong way, shows."""
    bn = (nn.BatchNorm1d if dim == 2 else nn.BatchNorm2d)(c, momentum=momentum, dtype=dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
    return bn


# ----------------------------------------------------------------------------- the torch row, against torch
def test_torch_defaults_are_torchs():
    row = CONVENTIONS["torch"]
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
        layer = cls(3)
        assert layer.momentum == row.momentum_default and layer.eps == row.eps_default, cls.__name__
        assert layer.training  # a new module trains: model.eval() is the switch
    defaults = inspect.signature(torch.nn.functional.batch_norm).parameters
    assert defaults["momentum"].default == row.momentum_default and defaults["eps"].default == row.eps_default


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 2)])
def test_torch_momentum_weights_the_batch(shape, dtype):
    """One training step of nn.BatchNorm moves running_mean a fraction `momentum` of the way to the
    batch mean: running_update('torch') matches, the other reading of momentum does not."""
    m = 0.3
    x = random_bn_input(shape, dtype=dtype, seed=2)
    bn = _torch_bn(shape[1], len(shape), dtype, m)
    before = bn.running_mean.clone()
    bn(x)
    batch_mean = x.mean([0] + list(range(2, x.dim())))
    ours = running_update("torch", before, batch_mean, momentum=m)
    assert (ours - bn.running_mean).abs().max() <= TOL[dtype] * 10
    other_reading = running_update("keras", before, batch_mean, momentum=m)  # m on the old value
    assert (other_reading - bn.running_mean).abs().max() > 0.01


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2, 3)])
def test_torch_running_var_is_unbiased_and_normalization_biased(shape, dtype):
    x = random_bn_input(shape, dtype=dtype, seed=3)
    bn = _torch_bn(shape[1], len(shape), dtype, CONVENTIONS["torch"].momentum_default)
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    y = bn(x)
    mean, normalize_var, running_var = batch_statistics("torch", x)
    dims = [0] + list(range(2, x.dim()))
    # the estimators, from torch's own var
    assert torch.allclose(normalize_var, x.var(dims, unbiased=False), atol=TOL[dtype], rtol=TOL[dtype])
    assert torch.allclose(running_var, x.var(dims, unbiased=True), atol=TOL[dtype], rtol=TOL[dtype])

    new_mean, new_var = training_step("torch", before_mean, before_var, x)
    assert (new_mean - bn.running_mean).abs().max() <= TOL[dtype] * 10
    assert (new_var - bn.running_var).abs().max() <= TOL[dtype] * 10 * float(running_var.max())

    view = (1, -1) + (1,) * (x.dim() - 2)
    eps = CONVENTIONS["torch"].eps_default
    expected = (x - mean.view(view)) / (normalize_var.view(view) + eps).sqrt()
    assert (y - expected).abs().max() <= TOL[dtype] * 10
    with_unbiased = (x - mean.view(view)) / (running_var.view(view) + eps).sqrt()
    assert (y - with_unbiased).abs().max() > 1e-3  # x_hat differs by 1 - sqrt((m - 1) / m) >= 3% for m <= 18


def test_torch_eval_normalizes_with_the_running_statistics():
    x = random_bn_input((6, 3), seed=4)
    bn = _torch_bn(3, 2, torch.float64, 0.1)
    bn.eval()
    buffers = bn.running_mean.clone(), bn.running_var.clone()
    y = bn(x)
    assert torch.equal(bn.running_mean, buffers[0]) and torch.equal(bn.running_var, buffers[1])
    expected = (x - buffers[0]) / (buffers[1] + CONVENTIONS["torch"].eps_default).sqrt()
    assert (y - expected).abs().max() <= 1e-12


# ----------------------------------------------------------------------------- every row: one step vs torch's
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_one_step_with_the_default_equals_torchs_at_the_converted_momentum(framework):
    """running_update with the framework's own default momentum, after one step, equals what torch's
    BatchNorm does at to_torch_momentum(framework): for the mean, and for the variance once the
    batch's variance is the estimator that framework tracks (torch tracks the unbiased one; a
    batch rescaled about its mean by sqrt((m - 1) / m) has the unbiased variance of the original's
    biased one)."""
    row = CONVENTIONS[framework]
    shape = (8, 3) if row.ndims is None or 2 in row.ndims else (4, 3, 2, 2)
    x = random_bn_input(shape, seed=5)
    torch_m = to_torch_momentum(framework)
    bn = _torch_bn(3, len(shape), torch.float64, torch_m)
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()

    dims = [0] + list(range(2, x.dim()))
    m = x.numel() // x.shape[1]
    view = (1, -1) + (1,) * (x.dim() - 2)
    if row.variance_in_running == "biased":
        centre = x.mean(dims).view(view)
        x_for_torch = centre + (x - centre) * math.sqrt((m - 1) / m)
    else:
        x_for_torch = x
    bn(x_for_torch)

    ours_mean = running_update(framework, before_mean, x.mean(dims))
    assert (ours_mean - bn.running_mean).abs().max() <= 1e-12
    ours_var = running_update(framework, before_var, x.var(dims, unbiased=row.variance_in_running == "unbiased"))
    assert (ours_var - bn.running_var).abs().max() <= 1e-12
    if row.running_statistic == "var":
        stepped = training_step(framework, before_mean, before_var, x)
        assert (stepped[1] - bn.running_var).abs().max() <= 1e-12


def test_biased_and_unbiased_rows_disagree_on_the_running_variance():
    """Same batch, same torch momentum: Keras's and CS231n's running variance take the batch's biased
    variance, torch's the unbiased one, (m - 1) / m of it."""
    x = random_bn_input((4, 2), seed=6)
    start = torch.ones(2, dtype=torch.float64)
    keras_var = training_step("keras", torch.zeros(2, dtype=torch.float64), start, x,
                              momentum=from_torch_momentum("keras", 0.1))[1]
    torch_var = training_step("torch", torch.zeros(2, dtype=torch.float64), start, x, momentum=0.1)[1]
    unbiased = x.var(0)
    assert torch.allclose(torch_var - keras_var, 0.1 * unbiased / 4, atol=1e-12)


def test_makemore_inline_tracks_a_std():
    x = random_bn_input((10, 3), seed=7)
    mean, normalize, running = batch_statistics("makemore_inline", x)
    assert torch.allclose(normalize, x.std(0), atol=1e-12) and torch.allclose(running, x.std(0), atol=1e-12)
    _, _, makemore_var = batch_statistics("makemore", x)
    assert torch.allclose(makemore_var, x.var(0), atol=1e-12)


# ----------------------------------------------------------------------------- conversions and the table
@pytest.mark.parametrize("framework, value, torch_value", [("keras", 0.99, 0.01), ("flax", 0.99, 0.01),
                                                           ("cs231n", 0.9, 0.1), ("torch", 0.1, 0.1),
                                                           ("d2l", 0.1, 0.1), ("makemore_inline", 0.001, 0.001)])
def test_known_conversions(framework, value, torch_value):
    assert math.isclose(to_torch_momentum(framework, value), torch_value, abs_tol=1e-12)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_conversion_round_trips_and_matches_the_row(framework):
    for value in (0.0, 0.001, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert math.isclose(from_torch_momentum(framework, to_torch_momentum(framework, value)), value, abs_tol=1e-12)
        assert math.isclose(to_torch_momentum(framework, from_torch_momentum(framework, value)), value, abs_tol=1e-12)
    row = CONVENTIONS[framework]
    assert math.isclose(to_torch_momentum(framework), row.torch_momentum, abs_tol=1e-12)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_row_is_complete_and_has_a_source(framework):
    row = CONVENTIONS[framework]
    assert row.momentum_weights in ("batch", "running") and row.running_statistic in ("var", "std")
    assert {row.variance_in_normalization, row.variance_in_running} <= {"biased", "unbiased"}
    assert isinstance(row.verified, bool) and row.name and row.train_eval_switch and row.axis and row.update_formula
    assert ("https://" in row.source) and (".py" in row.source or ".md" in row.source or ".ipynb" in row.source)
    assert row.eps_default >= 0 and 0 <= row.momentum_default <= 1


@pytest.mark.parametrize("bad", ["pytorch", "Keras", "", None, 3])
def test_unknown_frameworks_are_refused(bad):
    for call in (lambda: to_torch_momentum(bad, 0.1), lambda: from_torch_momentum(bad, 0.1),
                 lambda: running_update(bad, 0.0, 1.0), lambda: batch_statistics(bad, torch.ones(2, 2)),
                 lambda: conventions.convention(bad)):
        with pytest.raises(ValueError, match="unknown framework"):
            call()


@pytest.mark.parametrize("bad", [1.5, -0.1, True, "0.9", float("nan")])
def test_bad_momentum_is_refused(bad):
    with pytest.raises(ValueError, match="momentum must be a number in"):
        to_torch_momentum("keras", bad)
    with pytest.raises(ValueError, match="momentum must be a number in"):
        running_update("torch", 0.0, 1.0, momentum=bad)


def test_nothing_broadcasts_and_bad_inputs_are_named():
    with pytest.raises(ValueError, match="no broadcasting"):
        running_update("torch", torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="no broadcasting"):
        running_update("keras", torch.zeros(3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="makemore takes inputs of 2 dims"):
        batch_statistics("makemore", torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="cs231n takes inputs of 2 or 4 dims"):
        batch_statistics("cs231n", torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="floating-point"):
        batch_statistics("torch", torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="more than 1 value per feature"):
        batch_statistics("torch", torch.randn(1, 3))
    with pytest.raises(ValueError, match="unknown column"):
        format_conventions_table(("framework", "colour"))


def test_table_has_one_row_per_framework_and_is_the_readmes():
    rows = conventions.conventions_table()
    assert [r["framework"] for r in rows] == list(FRAMEWORKS)
    assert all(r["source"] == CONVENTIONS[r["framework"]].source for r in rows)
    assert format_conventions_table() in README.read_text(encoding="utf-8")
