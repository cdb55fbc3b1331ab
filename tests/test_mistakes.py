"""bnlab.mistakes: each wrong BN variant does what its docstring says, shown against the correct formula
(torch's F.batch_norm / F.layer_norm, or bnlab.batch_norm)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnlab
from bnlab.mistakes import (
    Seed003BatchNormalization,
    additive_affine,
    divide_by_sigma,
    divide_by_variance,
    predict_with_test_batch_statistics,
    std_plus_eps,
)

EPS = 1e-5


def correct_bn(x, gamma=None, beta=None, eps=EPS):
    """The right training-mode BN of a NumPy array, by torch: gamma * (x - mu) / sqrt(var + eps) + beta."""
    def t(a):
        return None if a is None else torch.as_tensor(np.asarray(a, dtype=np.float64))
    return F.batch_norm(t(x), None, None, t(gamma), t(beta), training=True, eps=eps).numpy()


def _x(shape=(256, 4), seed=0, scale=3.0, shift=1.0):
    return np.random.default_rng(seed).normal(size=shape) * scale + shift


# ----------------------------------------------------------------------------- additive_affine
@pytest.mark.parametrize("shape", [(256, 4), (16, 4, 5, 5)])
def test_additive_affine_cannot_scale(shape):
    """y = x_hat + gamma + beta: per-channel std stays ~1 whatever gamma is, while the correct
    gamma * x_hat + beta has std |gamma|."""
    x = _x(shape)
    gamma, beta = np.array([0.5, 2.0, 5.0, -3.0]), np.array([1.0, -1.0, 0.0, 2.0])
    axes = (0,) + tuple(range(2, x.ndim))
    wrong, right = additive_affine(x, gamma, beta), correct_bn(x, gamma, beta)
    assert np.allclose(wrong.std(axis=axes), 1.0, atol=1e-3)
    assert np.allclose(right.std(axis=axes), np.abs(gamma), rtol=1e-3)
    # the mean is gamma + beta instead of beta: gamma became a second shift
    assert np.allclose(wrong.mean(axis=axes), gamma + beta, atol=1e-10)
    assert np.allclose(right.mean(axis=axes), beta, atol=1e-10)


def test_additive_affine_gamma_and_beta_are_one_redundant_shift():
    """Only gamma + beta matters: (gamma, beta) and (gamma + beta, 0) give the same output."""
    x = _x()
    gamma, beta = np.array([0.5, 2.0, 5.0, -3.0]), np.array([1.0, -1.0, 0.0, 2.0])
    assert np.allclose(additive_affine(x, gamma, beta), additive_affine(x, gamma + beta, np.zeros(4)), atol=1e-12)
    assert not np.allclose(correct_bn(x, gamma, beta), correct_bn(x, gamma + beta, np.zeros(4)), atol=1e-3)


# ----------------------------------------------------------------------------- divide_by_sigma
def test_divide_by_sigma_gives_nan_for_a_constant_channel():
    """A channel constant over the batch: 0/0 = NaN without eps; real BN gives finite zeros."""
    x = _x((32, 3))
    x[:, 1] = 0.0  # a dead ReLU
    wrong = divide_by_sigma(x)
    assert np.isnan(wrong[:, 1]).all()
    assert np.isfinite(wrong[:, [0, 2]]).all()
    ours = bnlab.batch_norm(torch.tensor(x), None, None, training=True).numpy()
    assert np.isfinite(ours).all()
    assert np.array_equal(ours[:, 1], np.zeros(32))
    # on the other channels (var ~9) leaving out eps changes x_hat by a factor ~1 + eps / 18 only
    assert np.allclose(wrong[:, [0, 2]], correct_bn(x)[:, [0, 2]], rtol=0, atol=1e-5)


def test_divide_by_sigma_blows_up_rounding_noise():
    """When the constant's computed mean is not exact (0.7 is not a binary fraction), x - mu is
    rounding noise ~1e-16 and sigma ~1e-16 too: the output is +-1, noise blown up to unit size
    instead of NaN. Still wrong: the correct BN output stays at the noise level."""
    x = _x((32, 3))
    x[:, 1] = 0.7
    wrong = divide_by_sigma(x)[:, 1]
    assert np.isfinite(wrong).all() and np.allclose(np.abs(wrong), 1.0)
    assert np.max(np.abs(correct_bn(x)[:, 1])) < 1e-9


def test_divide_by_sigma_nan_spreads_through_a_layer():
    """One NaN channel makes every output of the next linear layer NaN."""
    x = _x((8, 3))
    x[:, 2] = 1.0
    out = torch.tensor(divide_by_sigma(x)) @ torch.ones(3, 5, dtype=torch.float64)
    assert torch.isnan(out).all()


# ----------------------------------------------------------------------------- divide_by_variance
@pytest.mark.parametrize("scale", [10.0, 0.5])
def test_divide_by_variance_is_not_scale_invariant(scale):
    """(x - mu) / var: scaling x by s scales the output by 1/s. Correct BN is scale invariant."""
    x = _x((128, 3), scale=1.0, shift=2.0)
    assert np.allclose(divide_by_variance(scale * x), divide_by_variance(x) / scale, rtol=1e-4, atol=1e-8)
    assert np.allclose(correct_bn(scale * x), correct_bn(x), rtol=1e-4, atol=1e-4)
    # so the output's std is 1 / std(x), not 1
    assert np.allclose(divide_by_variance(scale * x).std(axis=0), 1 / (scale * x).std(axis=0), rtol=1e-4)


# ----------------------------------------------------------------------------- std_plus_eps
def test_std_plus_eps_is_wrong_for_tiny_std():
    """std 1e-3 (var 1e-6 < eps): (x - mu) / (std + eps) has std ~1, the correct
    (x - mu) / sqrt(var + eps) only ~0.3: eps no longer acts as a variance floor."""
    x = _x((512, 3), scale=1e-3, shift=5.0)
    wrong, right = std_plus_eps(x), correct_bn(x)
    assert np.allclose(wrong.std(axis=0), 1.0, atol=0.02)
    expected_right_std = x.std(axis=0) / np.sqrt(x.var(axis=0) + EPS)  # ~0.3
    assert np.allclose(right.std(axis=0), expected_right_std, rtol=1e-8)
    assert np.max(np.abs(wrong - right)) > 0.5


def test_std_plus_eps_agrees_for_large_std():
    x = _x((512, 3), scale=10.0, shift=5.0)
    assert np.max(np.abs(std_plus_eps(x) - correct_bn(x))) < 1e-5


# ----------------------------------------------------------------------------- Seed003BatchNormalization
def test_seed003_is_per_sample_normalization():
    """It normalizes each sample over dim 1: layer norm (no affine, gamma=1, beta=0 at init), not BN.

    Tolerance: it divides by std + eps where layer norm divides by sqrt(var + eps). For std ~ 1 the
    ratio is (1 + eps/2) / (1 + eps) ~ 1 - eps/2, i.e. a relative difference ~5e-6 on |x_hat| <= ~3
    (so ~1.5e-5), plus float32 rounding ~1e-6; 1e-4 covers that and is still far below the O(1)
    difference from batch norm checked below.
    """
    torch.manual_seed(0)
    x = torch.randn(16, 6) * 2 + 3
    module = Seed003BatchNormalization(6)
    out = module(x).detach()
    layer_norm = F.layer_norm(x, (6,), eps=EPS)
    assert torch.allclose(out, layer_norm, atol=1e-4, rtol=0)
    batch_norm = F.batch_norm(x, None, None, training=True, eps=EPS)
    assert (out - batch_norm).abs().max() > 0.5
    # per sample over the features: each row has mean 0 and std ~1
    assert torch.allclose(out.mean(1), torch.zeros(16), atol=1e-5)


def test_seed003_sample_does_not_depend_on_the_batch():
    """A sample's output is the same in two different batches (no batch statistics), while real BN's
    output for it changes with its batch mates. Also the same in train and eval (no running stats)."""
    torch.manual_seed(1)
    sample = torch.randn(1, 6)
    batch_a = torch.cat([sample, torch.randn(7, 6)])
    batch_b = torch.cat([sample, torch.randn(7, 6) * 3 + 2])
    module = Seed003BatchNormalization(6)
    assert torch.allclose(module(batch_a)[0], module(batch_b)[0], atol=1e-6)
    module.eval()
    assert torch.allclose(module(batch_a)[0], module(batch_b)[0], atol=1e-6)
    bn = bnlab.BatchNorm1d(6)
    assert (bn(batch_a)[0] - bn(batch_b)[0]).abs().max() > 0.1


# ----------------------------------------------------------------------------- predict_with_test_batch_statistics
def _trained_model(bn_cls, steps=5):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), bn_cls(8), nn.ReLU(), nn.Linear(8, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _test_batch(n=10, seed=1):
    # shifted and scaled relative to the training data, so its statistics differ from the running ones
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64) * 2 + 1.5


def _tight_renorm(num_features):
    """BatchRenorm whose r and d are clipped on the shifted test batch. With the default limits
    (3, 5) they are not, and renorm's training output is then its eval output: the correction
    towards the running statistics is exactly what the mistake undoes only where clipping bites."""
    return bnlab.BatchRenorm1d(num_features, r_max=1.2, d_max=0.2)


# every kind of BN layer: the mistake must happen for each (it once silently skipped renorm and range BN)
BN_CLASSES = [nn.BatchNorm1d, bnlab.BatchNorm1d, _tight_renorm, bnlab.RangeBatchNorm1d]
BN_IDS = ["torch", "bnlab", "renorm", "range"]


@pytest.mark.parametrize("bn_cls", BN_CLASSES, ids=BN_IDS)
def test_test_batch_statistics_differ_from_eval(bn_cls):
    """It uses the test batch's own statistics (checked against a by-hand computation), which
    differs from model.eval()'s running statistics."""
    model = _trained_model(bn_cls)
    x = _test_batch()
    pred = predict_with_test_batch_statistics(model, x)
    lin1, bn, _, lin2 = model
    with torch.no_grad():
        h = lin1(x)
        centred = h - h.mean(0)
        if isinstance(bn, bnlab.RangeBatchNorm):
            # s = range / E[range of 10 standard normal values]; d2(10) = 3.0775 from QC tables
            scale_sq = ((centred.amax(0) - centred.amin(0)) / 3.0775) ** 2
        else:
            scale_sq = h.var(0, unbiased=False)
        h_hat = centred / torch.sqrt(scale_sq + bn.eps)
        by_hand = lin2(torch.relu(h_hat * bn.weight + bn.bias))
        evaluated = copy.deepcopy(model).eval()(x)
    if not isinstance(bn, bnlab.BatchRenorm):  # its r and d correction has no simple by-hand form
        assert torch.allclose(pred, by_hand, atol=1e-3 if isinstance(bn, bnlab.RangeBatchNorm) else 1e-10, rtol=0)
    assert (pred - evaluated).abs().max() > 1e-2


@pytest.mark.parametrize("bn_cls", BN_CLASSES, ids=BN_IDS)
def test_test_batch_statistics_depend_on_batch_composition(bn_cls):
    """The same sample gets different predictions in two different batches; with model.eval() it
    gets the same one."""
    model = _trained_model(bn_cls)
    sample = _test_batch(1, seed=2)
    batch_a = torch.cat([sample, _test_batch(7, seed=3)])
    batch_b = torch.cat([sample, _test_batch(7, seed=4) * 0.5 - 1])
    pred_a = predict_with_test_batch_statistics(model, batch_a)[0]
    pred_b = predict_with_test_batch_statistics(model, batch_b)[0]
    assert (pred_a - pred_b).abs().max() > 1e-2
    evaluated = copy.deepcopy(model).eval()
    with torch.no_grad():
        assert torch.allclose(evaluated(batch_a)[0], evaluated(batch_b)[0], atol=1e-12)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("bn_cls", BN_CLASSES, ids=BN_IDS)
def test_test_batch_statistics_leave_the_model_alone(bn_cls, training):
    """Running stats, num_batches_tracked, parameters and the training flags are unchanged."""
    model = _trained_model(bn_cls)
    model.train(training)
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    predict_with_test_batch_statistics(model, _test_batch())
    after = model.state_dict()
    assert list(after) == list(before)
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert [m.training for m in model.modules()] == flags
    assert model[1].num_batches_tracked.item() == 5


@pytest.mark.parametrize("bn_cls", BN_CLASSES, ids=BN_IDS)
def test_test_batch_statistics_fail_on_a_single_sample(bn_cls):
    """One sample: one value per channel, no batch statistics; torch (and bnlab) raise ValueError."""
    model = _trained_model(bn_cls)
    with pytest.raises(ValueError, match="(?i)more than 1 value per channel"):
        predict_with_test_batch_statistics(model, _test_batch(1))
    with torch.no_grad():  # whereas eval handles one sample fine
        assert copy.deepcopy(model).eval()(_test_batch(1)).shape == (1, 3)
