"""The NumPy reference (bnlab.reference) against torch and against centred finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.checks import numerical_gradient, rel_error
from bnlab.reference import (
    batchnorm_backward,
    batchnorm_backward_staged,
    batchnorm_forward,
    layernorm_backward,
    layernorm_backward_staged,
    layernorm_forward,
)

TOL = 1e-10
BN_SHAPES = [(6, 5), (4, 3, 5, 5)]
SMALL_BN_SHAPES = [(4, 5), (3, 2, 3, 3)]
BACKWARDS = [batchnorm_backward, batchnorm_backward_staged]
LN_BACKWARDS = [layernorm_backward, layernorm_backward_staged]


def _rng(seed):
    return np.random.default_rng(seed)


def _bn_data(shape, seed=0):
    """x with per-channel mean and scale, gamma, beta, and an upstream gradient."""
    r = _rng(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    x = r.normal(size=shape) * r.uniform(0.5, 3, c).reshape(view) + r.uniform(-3, 3, c).reshape(view)
    gamma = r.normal(size=c) + 1.0
    beta = r.normal(size=c)
    dout = r.normal(size=shape)
    return x, gamma, beta, dout


def _running(c, seed=1):
    r = _rng(seed)
    return r.normal(size=c), r.uniform(0.5, 2.0, c)


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# The check is element-wise relative (rel_error, CS231n's), so an entry of the true gradient near 0
# is compared at the level of rounding noise: with h = 1e-5 the difference quotient carries ~1e-10
# of noise, so an entry of ~1e-2 already gives rel_error ~1e-8 however right the backward is. Two
# things keep the check at 1e-8 meaningful: subtracting the unperturbed output (a constant, so the
# gradient is unchanged) keeps the large terms of sum(f(x) * dout) out of the rounding, and the
# data's seed is fixed (as CS231n does) to one whose gradients have no entry that close to 0; the
# worst rel_error is then ~1e-9. A wrong backward gives rel_error ~1e-1 (see the test below).
NUMERIC_SEED = 1


def _numerical(f, a, dout):
    """numerical_gradient of sum(f(a) * dout) with respect to a, less the rounding of a big sum."""
    y0 = f(a).copy()
    return numerical_gradient(lambda v: f(v) - y0, a, dout)


def _torch_bn(x, gamma, beta, dout, mode, running=None, eps=1e-5):
    """torch's output and autograd gradients (dx, dgamma, dbeta) for the same data."""
    xt, gt, bt = _t(x, True), _t(gamma, True), _t(beta, True)
    rm, rv = (None, None) if running is None else (_t(running[0]), _t(running[1]))
    out = F.batch_norm(xt, rm, rv, gt, bt, training=(mode == "train"), eps=eps)
    out.backward(_t(dout))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


# ----------------------------------------------------------------------------- batch norm forward
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_forward_matches_torch(shape, mode):
    x, gamma, beta, _ = _bn_data(shape)
    rm, rv = _running(shape[1])
    out, _ = batchnorm_forward(x, gamma, beta, {"mode": mode, "running_mean": rm.copy(), "running_var": rv.copy()})
    ref = _torch_bn(x, gamma, beta, np.zeros(shape), mode, (rm, rv))[0]
    assert out.shape == x.shape
    assert _max_diff(out, ref) <= TOL


@pytest.mark.parametrize("momentum", [0.1, 0.5])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_running_stats_follow_torch_convention(shape, momentum):
    """running_mean/var are updated in place, new = (1 - momentum) * old + momentum * batch (unbiased
    var for running_var), exactly as torch's running buffers over several steps."""
    c = shape[1]
    rm, rv = _running(c)
    bn_param = {"mode": "train", "momentum": momentum, "running_mean": rm, "running_var": rv}
    rm_t, rv_t = _t(rm.copy()), _t(rv.copy())
    for step in range(4):
        x, gamma, beta, _ = _bn_data(shape, seed=step)
        batchnorm_forward(x, gamma, beta, bn_param)
        F.batch_norm(_t(x), rm_t, rv_t, _t(gamma), _t(beta), training=True, momentum=momentum)
        assert bn_param["running_mean"] is rm and bn_param["running_var"] is rv  # in place
        assert _max_diff(rm, rm_t.numpy()) <= TOL, step
        assert _max_diff(rv, rv_t.numpy()) <= TOL, step
    # an independent check of the convention on one step: momentum weights the *new* batch
    x, gamma, beta, _ = _bn_data(shape, seed=9)
    rm0, rv0 = rm.copy(), rv.copy()
    batchnorm_forward(x, gamma, beta, bn_param)
    axes = (0,) + tuple(range(2, x.ndim))
    assert _max_diff(rm, (1 - momentum) * rm0 + momentum * x.mean(axis=axes)) <= TOL
    assert _max_diff(rv, (1 - momentum) * rv0 + momentum * x.var(axis=axes, ddof=1)) <= TOL


def test_running_stats_created_when_missing():
    """Missing running stats start at zeros / ones, as torch's buffers do."""
    x, gamma, beta, _ = _bn_data((8, 3))
    bn_param = {"mode": "train"}
    batchnorm_forward(x, gamma, beta, bn_param)
    bn = nn.BatchNorm1d(3, dtype=torch.float64)
    bn(_t(x))
    assert _max_diff(bn_param["running_mean"], bn.running_mean.numpy()) <= TOL
    assert _max_diff(bn_param["running_var"], bn.running_var.numpy()) <= TOL


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_momentum_none_is_cumulative_average_like_torch(shape):
    """momentum=None: cumulative average over all batches, like nn.BatchNorm with momentum=None."""
    c = shape[1]
    bn = {2: nn.BatchNorm1d, 4: nn.BatchNorm2d}[len(shape)](c, momentum=None, dtype=torch.float64)
    bn_param = {"mode": "train", "momentum": None}
    for step in range(5):
        x, gamma, beta, _ = _bn_data(shape, seed=step)
        batchnorm_forward(x, gamma, beta, bn_param)
        bn(_t(x))
        assert _max_diff(bn_param["running_mean"], bn.running_mean.numpy()) <= TOL
        assert _max_diff(bn_param["running_var"], bn.running_var.numpy()) <= TOL
    assert bn_param["num_batches_tracked"] == bn.num_batches_tracked.item() == 5


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_cs231n_test_mode_is_eval(shape):
    """CS231n calls evaluation 'test': {'mode': 'test'} normalizes with the running statistics, as
    torch's eval mode does, leaves them and bn_param['mode'] unchanged, and its cache gives the eval
    backward (statistics as constants) in both backward forms."""
    x, gamma, beta, dout = _bn_data(shape, seed=4)
    rm, rv = _running(shape[1])
    bn_param = {"mode": "test", "running_mean": rm.copy(), "running_var": rv.copy()}
    out, cache = batchnorm_forward(x, gamma, beta, bn_param)
    ref_out, dx_t, dgamma_t, dbeta_t = _torch_bn(x, gamma, beta, dout, "eval", (rm, rv))
    assert _max_diff(out, ref_out) <= TOL
    assert bn_param["mode"] == "test"
    assert np.array_equal(bn_param["running_mean"], rm) and np.array_equal(bn_param["running_var"], rv)
    for backward in BACKWARDS:
        dx, dgamma, dbeta = backward(dout, cache)
        assert _max_diff(dx, dx_t) <= TOL and _max_diff(dgamma, dgamma_t) <= TOL and _max_diff(dbeta, dbeta_t) <= TOL
    # and it differs from training mode on the same data, so the check above can tell them apart
    train_out, _ = batchnorm_forward(x, gamma, beta, {"mode": "train", "running_mean": rm.copy(),
                                                       "running_var": rv.copy()})
    assert _max_diff(out, train_out) > 1e-2


def test_eval_mode_does_not_update_running_stats():
    x, gamma, beta, _ = _bn_data((6, 4))
    rm, rv = _running(4)
    rm0, rv0 = rm.copy(), rv.copy()
    batchnorm_forward(x, gamma, beta, {"mode": "eval", "running_mean": rm, "running_var": rv})
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)


# ----------------------------------------------------------------------------- batch norm backward
@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES + SMALL_BN_SHAPES)
def test_batchnorm_backward_matches_torch_autograd(shape, mode, backward):
    x, gamma, beta, dout = _bn_data(shape, seed=3)
    rm, rv = _running(shape[1])
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": mode, "running_mean": rm, "running_var": rv})
    dx, dgamma, dbeta = backward(dout, cache)
    _, dx_t, dgamma_t, dbeta_t = _torch_bn(x, gamma, beta, dout, mode, _running(shape[1]))
    assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    assert _max_diff(dx, dx_t) <= TOL
    assert _max_diff(dgamma, dgamma_t) <= TOL
    assert _max_diff(dbeta, dbeta_t) <= TOL


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", SMALL_BN_SHAPES)
def test_batchnorm_backward_matches_numerical_gradient(shape, mode, backward):
    """CS231n-style gradient check: rel_error <= 1e-8 against centred finite differences."""
    x, gamma, beta, dout = _bn_data(shape, seed=NUMERIC_SEED)
    rm, rv = _running(shape[1])

    def fwd(x_, gamma_, beta_):
        # fresh running stats each call, so repeated calls compute the same function
        return batchnorm_forward(x_, gamma_, beta_, {"mode": mode, "running_mean": rm.copy(),
                                                     "running_var": rv.copy()})[0]

    _, cache = batchnorm_forward(x, gamma, beta, {"mode": mode, "running_mean": rm.copy(), "running_var": rv.copy()})
    dx, dgamma, dbeta = backward(dout, cache)
    dx_num = _numerical(lambda a: fwd(a, gamma, beta), x, dout)
    dgamma_num = _numerical(lambda a: fwd(x, a, beta), gamma, dout)
    dbeta_num = _numerical(lambda a: fwd(x, gamma, a), beta, dout)
    assert rel_error(dx, dx_num) <= 1e-8, rel_error(dx, dx_num)
    assert rel_error(dgamma, dgamma_num) <= 1e-8, rel_error(dgamma, dgamma_num)
    assert rel_error(dbeta, dbeta_num) <= 1e-8, rel_error(dbeta, dbeta_num)


def test_numerical_check_catches_a_wrong_backward():
    """The gradient check can fail: the eval-mode formula dx = gamma * dout / std, which forgets that
    mu and var depend on x, is far off in training mode."""
    x, gamma, beta, dout = _bn_data((4, 5), seed=NUMERIC_SEED)
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    wrong_dx = gamma * dout / cache["std"]
    dx_num = _numerical(lambda a: batchnorm_forward(a, gamma, beta, {"mode": "train"})[0], x, dout)
    assert rel_error(wrong_dx, dx_num) > 1e-2


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_staged_and_compact_backward_agree(shape, mode):
    """The graph walk and the closed form are the same function (to rounding)."""
    x, gamma, beta, dout = _bn_data(shape, seed=5)
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": mode})
    for a, b in zip(batchnorm_backward(dout, cache), batchnorm_backward_staged(dout, cache)):
        assert _max_diff(a, b) <= TOL


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_dx_sums_to_zero_per_channel_in_training_only(shape, backward):
    """Training: the batch mean is subtracted, so dx sums to 0 over the batch per channel.
    Eval: the statistics are constants and the sums are clearly not 0."""
    x, gamma, beta, dout = _bn_data(shape, seed=6)
    axes = (0,) + tuple(range(2, x.ndim))
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dx_train = backward(dout, cache)[0]
    assert np.max(np.abs(dx_train.sum(axis=axes))) <= 1e-12 * np.abs(dx_train).sum()
    rm, rv = _running(shape[1])
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "eval", "running_mean": rm, "running_var": rv})
    dx_eval = backward(dout, cache)[0]
    assert np.min(np.abs(dx_eval.sum(axis=axes))) > 1e-3


# ----------------------------------------------------------------------------- layer norm
LN_SHAPES = [(4, 6), (3, 2, 3, 3)]


def _ln_data(shape, seed=0):
    r = _rng(seed)
    x = r.normal(size=shape) * 2 + r.normal(size=(shape[0],) + (1,) * (len(shape) - 1))
    gamma = r.normal(size=shape[1:]) + 1.0
    beta = r.normal(size=shape[1:])
    dout = r.normal(size=shape)
    return x, gamma, beta, dout


def _torch_ln(x, gamma, beta, dout, eps=1e-5):
    xt, gt, bt = _t(x, True), _t(gamma, True), _t(beta, True)
    out = F.layer_norm(xt, x.shape[1:], gt, bt, eps=eps)
    out.backward(_t(dout))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("eps", [1e-5, 1e-2])
@pytest.mark.parametrize("shape", LN_SHAPES)
def test_layernorm_forward_matches_torch(shape, eps):
    x, gamma, beta, dout = _ln_data(shape)
    out, _ = layernorm_forward(x, gamma, beta, {"eps": eps})
    assert _max_diff(out, _torch_ln(x, gamma, beta, dout, eps)[0]) <= TOL


def test_layernorm_default_eps_and_no_param_dict():
    x, gamma, beta, dout = _ln_data((4, 6))
    out, _ = layernorm_forward(x, gamma, beta)
    assert _max_diff(out, _torch_ln(x, gamma, beta, dout)[0]) <= TOL


@pytest.mark.parametrize("backward", LN_BACKWARDS)
@pytest.mark.parametrize("shape", LN_SHAPES)
def test_layernorm_backward_matches_torch_autograd(shape, backward):
    x, gamma, beta, dout = _ln_data(shape, seed=1)
    _, cache = layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dout, cache)
    _, dx_t, dgamma_t, dbeta_t = _torch_ln(x, gamma, beta, dout)
    assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    assert _max_diff(dx, dx_t) <= TOL
    assert _max_diff(dgamma, dgamma_t) <= TOL
    assert _max_diff(dbeta, dbeta_t) <= TOL


@pytest.mark.parametrize("backward", LN_BACKWARDS)
@pytest.mark.parametrize("shape", LN_SHAPES)
def test_layernorm_backward_matches_numerical_gradient(shape, backward):
    x, gamma, beta, dout = _ln_data(shape, seed=NUMERIC_SEED)
    _, cache = layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dout, cache)
    dx_num = _numerical(lambda a: layernorm_forward(a, gamma, beta)[0], x, dout)
    dgamma_num = _numerical(lambda a: layernorm_forward(x, a, beta)[0], gamma, dout)
    dbeta_num = _numerical(lambda a: layernorm_forward(x, gamma, a)[0], beta, dout)
    assert rel_error(dx, dx_num) <= 1e-8, rel_error(dx, dx_num)
    assert rel_error(dgamma, dgamma_num) <= 1e-8, rel_error(dgamma, dgamma_num)
    assert rel_error(dbeta, dbeta_num) <= 1e-8, rel_error(dbeta, dbeta_num)


def test_layernorm_dx_sums_to_zero_per_sample():
    """LN subtracts each sample's own mean: dx sums to 0 over each sample's features."""
    x, gamma, beta, dout = _ln_data((3, 2, 3, 3), seed=3)
    _, cache = layernorm_forward(x, gamma, beta)
    dx = layernorm_backward(dout, cache)[0]
    assert np.max(np.abs(dx.sum(axis=(1, 2, 3)))) <= 1e-12 * np.abs(dx).sum()


# ----------------------------------------------------------------------------- bad input
def _good():
    x, gamma, beta, _ = _bn_data((4, 3))
    return x, gamma, beta


@pytest.mark.parametrize("fwd", [batchnorm_forward, layernorm_forward])
def test_one_dim_x_is_rejected(fwd):
    with pytest.raises(ValueError, match="at least 2 dims"):
        fwd(np.ones(3), np.ones(3), np.zeros(3), {"mode": "train"})


@pytest.mark.parametrize("fwd", [batchnorm_forward, layernorm_forward])
def test_integer_x_is_rejected(fwd):
    with pytest.raises(ValueError, match="floating-point"):
        fwd(np.arange(12).reshape(4, 3), np.ones(3), np.zeros(3), {"mode": "train"})


@pytest.mark.parametrize("which", ["gamma", "beta"])
def test_wrong_param_shape_is_rejected(which):
    x, gamma, beta = _good()
    params = {"gamma": gamma, "beta": beta}
    params[which] = np.ones(4)
    with pytest.raises(ValueError, match=rf"{which} has shape \(4,\), expected \(3,\)"):
        batchnorm_forward(x, params["gamma"], params["beta"], {"mode": "train"})
    with pytest.raises(ValueError, match=rf"{which} has shape \(4,\), expected \(3,\)"):
        layernorm_forward(x, params["gamma"], params["beta"])


@pytest.mark.parametrize("mode", [None, "Test", "Train", "inference", ["test"]])
def test_bad_mode_is_rejected(mode):
    x, gamma, beta = _good()
    with pytest.raises(ValueError, match="mode"):
        batchnorm_forward(x, gamma, beta, {"mode": mode})


def test_negative_eps_is_rejected():
    x, gamma, beta = _good()
    with pytest.raises(ValueError, match="eps must be >= 0"):
        batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": -1e-5})
    with pytest.raises(ValueError, match="eps must be >= 0"):
        layernorm_forward(x, gamma, beta, {"eps": -1e-5})


def test_one_sample_in_train_mode_is_rejected():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3), {"mode": "train"})
    # in eval mode one sample is fine
    out, _ = batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3), {"mode": "eval"})
    assert out.shape == (1, 3)


@pytest.mark.parametrize("backward", BACKWARDS + LN_BACKWARDS)
def test_dout_of_wrong_shape_is_rejected(backward):
    x, gamma, beta = _good()
    fwd = batchnorm_forward if backward in BACKWARDS else layernorm_forward
    _, cache = fwd(x, gamma, beta, {"mode": "train"})
    with pytest.raises(ValueError, match=r"dout has shape \(4, 4\)"):
        backward(np.ones((4, 4)), cache)


def test_list_instead_of_array_is_rejected():
    x, gamma, beta = _good()
    with pytest.raises(ValueError, match="must be a NumPy array, got list"):
        batchnorm_forward(x.tolist(), gamma, beta, {"mode": "train"})
    with pytest.raises(ValueError, match="gamma must be a NumPy array, got list"):
        batchnorm_forward(x, gamma.tolist(), beta, {"mode": "train"})
    with pytest.raises(ValueError, match="must be a NumPy array, got list"):
        layernorm_forward(x.tolist(), gamma, beta)
