"""CS231n's own batch-norm checks (assignment 2), re-created against bnlab.reference.

Each test mirrors one code cell of BatchNormalization.ipynb or ConvolutionalNetworks.ipynb (the
spatial batch norm part), named in its docstring: the same data (np.random.seed(231), drawn in the
same order with a RandomState(231), which gives the same numbers without touching NumPy's global
state), the same bn_param dicts ({'mode': 'train'}, then {'mode': 'test'}) and the bounds the
notebook states in its comments. Where a cell only prints, the test asserts what its comment says
the printout should show.

Names: CS231n's batchnorm_backward (through the graph) is bnlab's batchnorm_backward_staged, their
batchnorm_backward_alt (simplified on paper) is bnlab's batchnorm_backward. Their
spatial_batchnorm_forward/backward is bnlab's batchnorm_forward/backward on (N, C, H, W), which
takes the statistics over N, H, W. Their eval_numerical_gradient_array is bnlab.checks.numerical_gradient
(centred differences, h = 1e-5; see _eval_numerical_gradient_array for the one difference) and their
rel_error is bnlab.checks.rel_error.

Momentum: CS231n's bn_param default is momentum 0.9 on the *old* value, running = 0.9 * running +
0.1 * batch; bnlab.reference uses torch's convention, momentum 0.1 on the *new* batch, the same
update. So the default of each gives the same running averages and no check below needs to pass a
momentum. (One difference remains: CS231n's running_var averages the biased batch variance, bnlab
the unbiased one as torch, a factor N / (N - 1) = 1.005 for N = 200 that the test-time bounds absorb.)
"""

from __future__ import annotations

import numpy as np
import pytest

from bnlab.checks import numerical_gradient, rel_error
from bnlab.reference import batchnorm_backward, batchnorm_backward_staged, batchnorm_forward

SEED = 231  # every CS231n cell starts with np.random.seed(231)

# CS231n's names for the two backward forms
CS231N_BACKWARDS = {"batchnorm_backward (staged)": batchnorm_backward_staged,
                    "batchnorm_backward_alt (compact)": batchnorm_backward}


def _two_layer_activations(rng, n, d1, w1, w2):
    """The cells' stand-in for a layer's input: a = relu(X W1) W2 with X ~ N(0, 1)^(n, d1)."""
    x = rng.randn(n, d1)
    return np.maximum(0, x.dot(w1)).dot(w2)


def _means_stds(a, axes):
    return a.mean(axis=axes), a.std(axis=axes)


# ----------------------------------------------------------------------------- BatchNormalization.ipynb
def test_train_forward_means_and_stds():
    """BatchNormalization.ipynb, "Batch normalization: forward", the cell "Check the training-time
    forward pass by checking means and variances of features both before and after batch
    normalization": N, D1, D2, D3 = 200, 50, 60, 3; a = relu(X W1) W2.

    Before: means and stds far from 0 and 1 (so the checks after BN can fail). After BN with
    gamma = 1, beta = 0: means ~ 0, stds ~ 1. With gamma = [1, 2, 3], beta = [11, 12, 13]: means ~
    beta, stds ~ gamma. The std is gamma * sqrt(var / (var + eps)), var ~ 1e3 here, so it falls short
    of gamma by ~gamma * eps / (2 var) ~ 1e-8: the bound 1e-6 leaves room for that and nothing else.
    """
    rng = np.random.RandomState(SEED)
    n, d1, d2, d3 = 200, 50, 60, 3
    x = rng.randn(n, d1)
    w1 = rng.randn(d1, d2)
    w2 = rng.randn(d2, d3)
    a = np.maximum(0, x.dot(w1)).dot(w2)

    means, stds = _means_stds(a, 0)
    assert np.all(np.abs(means) > 1.0) and np.all(stds > 10.0), (means, stds)  # "Before batch normalization"

    for gamma, beta in [(np.ones(d3), np.zeros(d3)),                         # "(gamma=1, beta=0)"
                        (np.asarray([1.0, 2.0, 3.0]), np.asarray([11.0, 12.0, 13.0]))]:
        a_norm, _ = batchnorm_forward(a, gamma, beta, {"mode": "train"})
        means, stds = _means_stds(a_norm, 0)
        np.testing.assert_allclose(means, beta, rtol=0, atol=1e-10)
        np.testing.assert_allclose(stds, gamma, rtol=1e-6, atol=0)


def _warmed_up_test_forward(train_steps):
    """The body of the test-time cell: `train_steps` training passes on fresh batches warm up
    bn_param's running averages, then bn_param['mode'] = 'test' and one more fresh batch."""
    rng = np.random.RandomState(SEED)
    n, d1, d2, d3 = 200, 50, 60, 3
    w1 = rng.randn(d1, d2)
    w2 = rng.randn(d2, d3)
    bn_param = {"mode": "train"}
    gamma, beta = np.ones(d3), np.zeros(d3)
    for _ in range(train_steps):
        batchnorm_forward(_two_layer_activations(rng, n, d1, w1, w2), gamma, beta, bn_param)
    bn_param["mode"] = "test"
    a = _two_layer_activations(rng, n, d1, w1, w2)
    # CS231n's cell would create the running stats itself when there were no training passes
    bn_param.setdefault("running_mean", np.zeros(d3))
    bn_param.setdefault("running_var", np.ones(d3))
    running = bn_param["running_mean"].copy(), bn_param["running_var"].copy()
    a_norm, _ = batchnorm_forward(a, gamma, beta, bn_param)
    # 'test' is evaluation: the running averages are used, not updated
    assert np.array_equal(bn_param["running_mean"], running[0])
    assert np.array_equal(bn_param["running_var"], running[1])
    return _means_stds(a_norm, 0)


def test_test_time_forward_after_50_training_steps():
    """BatchNormalization.ipynb, the cell "Check the test-time forward pass by running the
    training-time forward pass many times to warm up the running averages": 50 training passes,
    then bn_param['mode'] = 'test' (CS231n's name for eval). "Means should be close to zero and stds
    close to one, but will be noisier than training-time forward passes."

    Noisier by how much: the test batch's own mean over N = 200 values is off the running mean by
    ~1 / sqrt(200) = 0.07 of a std, and after 50 steps 0.9^50 = 0.5% of the initial (0, 1) is still
    in the running averages. So |mean| < 0.25 (over 3 sigma) and |std - 1| < 0.1. (CS231n's printed
    reference output: means -0.04, -0.04, -0.10, stds 1.015, 1.012, 0.978.)
    """
    means, stds = _warmed_up_test_forward(train_steps=50)
    assert np.all(np.abs(means) < 0.25), means
    assert np.all(np.abs(stds - 1.0) < 0.1), stds


def test_test_time_forward_without_warm_up_is_far_off():
    """The test-time bounds above can fail: with no training passes, 'test' normalizes with the initial
    running statistics (0, 1), which leaves the activations (means up to ~13, stds ~30) as they are."""
    means, stds = _warmed_up_test_forward(train_steps=0)
    assert np.any(np.abs(means) > 1.0) and np.all(stds > 10.0), (means, stds)


def _gradient_check_data(rng, shape):
    """The gradient-check cells' data: x = 5 randn + 12, gamma, beta, dout ~ randn, in that order."""
    c = shape[1]
    x = 5 * rng.randn(*shape) + 12
    gamma = rng.randn(c)
    beta = rng.randn(c)
    dout = rng.randn(*shape)
    return x, gamma, beta, dout


def _eval_numerical_gradient_array(f, a, dout):
    """CS231n's eval_numerical_gradient_array through bnlab.checks.numerical_gradient.

    Theirs sums (f(a + h) - f(a - h)) * dout, numerical_gradient sums f(a + h) * dout and f(a - h) *
    dout apart and then subtracts, which rounds the big sums (outputs ~1, 20 to 120 of them) before
    the small difference is taken. Subtracting the constant f(a) from f first changes no gradient and
    gives their numbers: 1.70e-9 for dx in the (4, 5) cell, the notebook's printed 1.7029e-9.
    """
    f_a = f(a).copy()

    def shifted(v):
        return f(v) - f_a

    return numerical_gradient(shifted, a, dout)


def _numerical_gradients(x, gamma, beta, dout, bn_param):
    """Their fx, fg, fb and eval_numerical_gradient_array calls. The same bn_param is passed each
    time, as in the notebook: in training mode the output does not depend on the running averages
    that each call updates."""
    def fx(v):
        return batchnorm_forward(v, gamma, beta, bn_param)[0]

    def fg(v):
        return batchnorm_forward(x, v, beta, bn_param)[0]

    def fb(v):
        return batchnorm_forward(x, gamma, v, bn_param)[0]

    return (_eval_numerical_gradient_array(fx, x, dout),
            _eval_numerical_gradient_array(fg, gamma.copy(), dout),
            _eval_numerical_gradient_array(fb, beta.copy(), dout))


@pytest.mark.parametrize("backward", CS231N_BACKWARDS.values(), ids=CS231N_BACKWARDS.keys())
def test_backward_gradient_check(backward):
    """BatchNormalization.ipynb, "Batch normalization: backward", the cell "Gradient check batchnorm
    backward pass": N, D = 4, 5. "You should expect to see relative errors between 1e-13 and 1e-8"
    for dx, dgamma and dbeta. The notebook checks its staged batchnorm_backward; the compact one
    (their batchnorm_backward_alt) must pass the same check.
    """
    rng = np.random.RandomState(SEED)
    x, gamma, beta, dout = _gradient_check_data(rng, (4, 5))
    bn_param = {"mode": "train"}
    dx_num, dgamma_num, dbeta_num = _numerical_gradients(x, gamma, beta, dout, bn_param)
    _, cache = batchnorm_forward(x, gamma, beta, bn_param)
    dx, dgamma, dbeta = backward(dout, cache)
    assert rel_error(dx_num, dx) < 1e-8, rel_error(dx_num, dx)
    assert rel_error(dgamma_num, dgamma) < 1e-8, rel_error(dgamma_num, dgamma)
    assert rel_error(dbeta_num, dbeta) < 1e-8, rel_error(dbeta_num, dbeta)


def test_gradient_check_catches_the_eval_mode_dx_in_training():
    """The gradient check above can fail: dx = gamma * dout / std, right for fixed statistics, forgets
    that the batch mean and variance depend on x, and is far outside 1e-8 on the notebook's data."""
    rng = np.random.RandomState(SEED)
    x, gamma, beta, dout = _gradient_check_data(rng, (4, 5))
    bn_param = {"mode": "train"}
    dx_num, _, _ = _numerical_gradients(x, gamma, beta, dout, bn_param)
    wrong_dx = gamma * dout / np.sqrt(x.var(axis=0) + 1e-5)
    assert rel_error(dx_num, wrong_dx) > 1e-2


def test_alternative_backward_agrees_with_staged():
    """BatchNormalization.ipynb, "Batch normalization: alternative backward", the cell that compares
    batchnorm_backward with batchnorm_backward_alt on N, D = 100, 500 ("Your two implementations should
    compute nearly identical results"; the printed reference: dx difference 1.3e-12, dgamma and dbeta 0).

    rel_error is element-wise, so of 50,000 entries of dx the one nearest 0 sets it; 1e-10 is 100x the
    printed value. dgamma and dbeta come from the same affine step in both, so they are equal. The
    timing ("speedup") is not checked: it says nothing about correctness.
    """
    rng = np.random.RandomState(SEED)
    n, d = 100, 500
    x = 5 * rng.randn(n, d) + 12
    gamma = rng.randn(d)
    beta = rng.randn(d)
    dout = rng.randn(n, d)
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dx1, dgamma1, dbeta1 = batchnorm_backward_staged(dout, cache)
    dx2, dgamma2, dbeta2 = batchnorm_backward(dout, cache)
    assert rel_error(dx1, dx2) < 1e-10, rel_error(dx1, dx2)
    assert rel_error(dgamma1, dgamma2) == 0.0
    assert rel_error(dbeta1, dbeta2) == 0.0


# ----------------------------------------------------------------------------- ConvolutionalNetworks.ipynb
def test_spatial_train_forward_means_and_stds():
    """ConvolutionalNetworks.ipynb, "Spatial batch normalization: forward", the cell "Check the
    training-time forward pass by checking means and variances of features both before and after
    spatial batch normalization": N, C, H, W = 2, 3, 4, 5, x = 4 randn + 10, statistics per channel
    over axes (0, 2, 3).

    Before: means ~10, stds ~4. After with gamma = 1, beta = 0: means ~ 0, stds ~ 1; with gamma = [3, 4,
    5], beta = [6, 7, 8]: means ~ beta, stds ~ gamma (short of gamma by ~gamma * eps / (2 * 16) ~ 1e-6
    relative at most; the bound is 1e-5).
    """
    rng = np.random.RandomState(SEED)
    n, c, h, w = 2, 3, 4, 5
    x = 4 * rng.randn(n, c, h, w) + 10
    means, stds = _means_stds(x, (0, 2, 3))
    assert np.all(means > 8.0) and np.all(stds > 3.0), (means, stds)

    for gamma, beta in [(np.ones(c), np.zeros(c)), (np.asarray([3.0, 4.0, 5.0]), np.asarray([6.0, 7.0, 8.0]))]:
        out, _ = batchnorm_forward(x, gamma, beta, {"mode": "train"})
        assert out.shape == (n, c, h, w)
        means, stds = _means_stds(out, (0, 2, 3))
        np.testing.assert_allclose(means, beta, rtol=0, atol=1e-10)
        np.testing.assert_allclose(stds, gamma, rtol=1e-5, atol=0)


def test_spatial_test_time_forward_after_50_training_steps():
    """ConvolutionalNetworks.ipynb, the spatial cell "Check the test-time forward pass by running the
    training-time forward pass many times to warm up the running averages": N, C, H, W = 10, 4, 11, 12,
    x = 2.3 randn + 13, 50 training passes, then bn_param['mode'] = 'test'.

    Each channel has 1,210 values, so the batch's own noise is small (~0.03 of a std); the larger
    error is the 0.9^50 = 0.5% of the initial running mean 0 still in the average: 0.005 * 13 / 2.3
    ~ 0.03 of a std. Bounds: |mean| < 0.1, |std - 1| < 0.05. Without the training passes the means
    would be ~13 and the stds ~2.3 (asserted too, so the bounds can fail).
    """
    rng = np.random.RandomState(SEED)
    n, c, h, w = 10, 4, 11, 12
    gamma, beta = np.ones(c), np.zeros(c)
    bn_param = {"mode": "train"}
    for _ in range(50):
        x = 2.3 * rng.randn(n, c, h, w) + 13
        batchnorm_forward(x, gamma, beta, bn_param)
    bn_param["mode"] = "test"
    x = 2.3 * rng.randn(n, c, h, w) + 13
    a_norm, _ = batchnorm_forward(x, gamma, beta, bn_param)
    means, stds = _means_stds(a_norm, (0, 2, 3))
    assert np.all(np.abs(means) < 0.1), means
    assert np.all(np.abs(stds - 1.0) < 0.05), stds

    cold, _ = batchnorm_forward(x, gamma, beta, {"mode": "test"})
    means, stds = _means_stds(cold, (0, 2, 3))
    assert np.all(means > 10.0) and np.all(stds > 2.0), (means, stds)


@pytest.mark.parametrize("backward", CS231N_BACKWARDS.values(), ids=CS231N_BACKWARDS.keys())
def test_spatial_backward_gradient_check(backward):
    """ConvolutionalNetworks.ipynb, "Spatial batch normalization: backward", the gradient-check cell:
    N, C, H, W = 2, 3, 4, 5, "You should expect errors of magnitudes between 1e-12~1e-06".

    Some older copies of the notebook define fg and fb without using their argument (fg = lambda a:
    ...(x, gamma, beta...)), which makes the numerical dgamma and dbeta 0; the check here varies gamma
    in fg and beta in fb, as the current notebook does.

    The bound is the notebook's 1e-6 for all three, not the 1e-8 of the plain check: with 120 values
    in 3 channels some entries of dx are ~1e-4, where the difference quotient's rounding noise
    (~1e-11) is already ~1e-7 relative; CS231n's own procedure measures 3e-7 on this data, and so
    does this test (dgamma, dbeta ~1e-11).
    """
    rng = np.random.RandomState(SEED)
    x, gamma, beta, dout = _gradient_check_data(rng, (2, 3, 4, 5))
    bn_param = {"mode": "train"}
    dx_num, dgamma_num, dbeta_num = _numerical_gradients(x, gamma, beta, dout, bn_param)
    _, cache = batchnorm_forward(x, gamma, beta, bn_param)
    dx, dgamma, dbeta = backward(dout, cache)
    assert dx.shape == x.shape and dgamma.shape == gamma.shape and dbeta.shape == beta.shape
    assert rel_error(dx_num, dx) < 1e-6, rel_error(dx_num, dx)
    assert rel_error(dgamma_num, dgamma) < 1e-6, rel_error(dgamma_num, dgamma)
    assert rel_error(dbeta_num, dbeta) < 1e-6, rel_error(dbeta_num, dbeta)
