"""Wrong versions of batch normalization from popular articles, kept so the lessons can run them.

Each function reproduces one mistake from the articles this course started from (cited as seed 000 to
004), next to a docstring that quotes the claim and says what is wrong. Lessons run them beside the
correct ``bnlab`` code and check the difference with numbers; nothing here should ever be used for real.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .layers import BatchNorm

__all__ = [
    "additive_affine",
    "divide_by_sigma",
    "divide_by_variance",
    "std_plus_eps",
    "Seed003BatchNormalization",
    "predict_with_test_batch_statistics",
]


def _batch_stats(x: np.ndarray):
    axes = (0,) + tuple(range(2, x.ndim))
    return x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)


def _param(p, x):
    return np.asarray(p).reshape((1, -1) + (1,) * (x.ndim - 2))


def additive_affine(x, gamma, beta, eps=1e-5):
    """Seed 000: y = (x - mu) / sqrt(sigma^2 + eps) + gamma + beta.

    gamma is added instead of multiplied, so it can only shift: the output's standard deviation is
    stuck at 1 and gamma and beta become one redundant shift. Correct: y = gamma * x_hat + beta.
    """
    mu, var = _batch_stats(x)
    return (x - mu) / np.sqrt(var + eps) + _param(gamma, x) + _param(beta, x)


def divide_by_sigma(x):
    """Seeds 001 and 003: z = (x - mu) / sigma, with no eps.

    A channel that is constant over the batch (a dead ReLU, a padded border, a constant image
    region) has sigma = 0, and the division gives NaN (0/0) that then spreads through the network.
    When the constant's mean is not exact in floating point (0.7, say), sigma is rounding noise
    instead, and the noise is blown up to +-1. Correct: divide by sqrt(sigma^2 + eps).
    """
    mu, var = _batch_stats(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x - mu) / np.sqrt(var)


def divide_by_variance(x, eps=1e-5):
    """Seed 000 (step 2) and seed 003 (section 2): "subtract the mean and divide by the variance".

    sigma^2 has the units of x squared: the result's scale depends on the input's scale (input 10x
    larger gives output 10x smaller) instead of being 1. Correct: divide by the standard deviation
    sqrt(sigma^2 + eps).
    """
    mu, var = _batch_stats(x)
    return (x - mu) / (var + eps)


def std_plus_eps(x, eps=1e-5):
    """Seed 003's code: x = (x - mean) / (std + eps).

    Close to right for large std, but not what BN (or torch) computes: for std near 0 the result is
    far from sqrt(var + eps)'s, and eps no longer acts as a variance floor. Correct: sqrt(var + eps).
    """
    mu, var = _batch_stats(x)
    return (x - mu) / (np.sqrt(var) + eps)


class Seed003BatchNormalization(nn.Module):
    """Seed 003's "BatchNormalization" module, quoted as published (only the comments are ours).

    Three mistakes: (1) mean and std are taken over dim=1, the *feature* axis, so each sample is
    normalized on its own: that is layer normalization (over channels only, for conv inputs), not
    batch normalization; (2) std + eps instead of sqrt(var + eps); (3) no running statistics and no
    train/eval distinction, so there is nothing to use at inference but the current input.
    """

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.eps = 1e-5

    def forward(self, x):
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True, unbiased=False)
        x = (x - mean) / (std + self.eps)
        x = self.gamma * x + self.beta
        return x


def predict_with_test_batch_statistics(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Seed 000: "at test time, compute the mean and variance from the test samples".

    Runs ``model`` on x with every BatchNorm layer normalizing with the statistics of x itself, as
    that article's test-time formulas do. The prediction for one sample then depends on which other
    samples share its batch, and a batch of one sample (or of one class) gives nonsense. The model
    is deep-copied, so its running statistics are left untouched. Correct: model.eval().
    """
    probe = copy.deepcopy(model).eval()
    for module in probe.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, BatchNorm)):
            module.train()
    with torch.no_grad():
        return probe(x)
