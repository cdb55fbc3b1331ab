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

from .layers import is_batchnorm

__all__ = [
    "additive_affine",
    "divide_by_sigma",
    "divide_by_variance",
    "std_plus_eps",
    "Seed003BatchNormalization",
    "predict_with_test_batch_statistics",
    "seed000_postprocess",
    "evaluate_in_train_mode",
    "Seed002BNLayer",
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

    Runs ``model`` on x with every BN layer (any kind `bnlab.layers.is_batchnorm` knows: torch's,
    bnlab's BatchNorm, BatchRenorm, RangeBatchNorm) in training mode, normalizing with the
    statistics of x itself, as that article's test-time formulas do. The prediction for one sample
    then depends on which other samples share its batch, and a batch of one sample (or of one
    class) gives nonsense. The model is deep-copied, so its running statistics are left untouched.
    Correct: model.eval().
    """
    probe = copy.deepcopy(model).eval()
    for module in probe.modules():
        if is_batchnorm(module):
            module.train()
    with torch.no_grad():
        return probe(x)


def seed000_postprocess(outputs: torch.Tensor, bn) -> torch.Tensor:
    """Seed 000's test loop, as published: "normalize with the mean and variance computed in training"

        outputs = outputs.mul(bn3.running_var.sqrt()).add(bn3.running_mean).add(1).mul(255).clamp(0, 255).byte()

    bn3 is a BN layer *inside* the network, whose statistics describe its own input channels; BN
    already uses them, in eval mode, where they belong. Multiplying the network's output by them
    mixes two unrelated things, and broadcasting hides it: an (N, 1) output times 128 channel
    statistics silently becomes an (N, 128) "image". Correct: model.eval(), then read the output
    as what it is (for a segmenter: mask = logits.argmax(1)).
    """
    return (outputs.mul(bn.running_var.sqrt()).add(bn.running_mean).add(1).mul(255)
            .clamp(0, 255).byte())


def evaluate_in_train_mode(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Seed 001's test loop: ``with torch.no_grad(): outputs = net(inputs)``, without ``net.eval()``.

    torch.no_grad() stops gradients, not training mode: every BN layer still normalizes with the
    statistics of the test batch (so a prediction depends on its batch-mates and on the batch size)
    and still updates its running statistics with test data. This runs exactly that on ``model``
    itself, side effects included, and returns the accuracy. Correct: ``model.eval()`` first.
    """
    model.train()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    return correct / len(x)


class Seed002BNLayer(nn.Module):
    """Seed 002's Keras ``BNLayer``, transliterated to torch line by line (channels-last input, as
    in TensorFlow: (N, H, W, C)).

        build:  gamma = weight(shape=(input_shape[-axis],), trainable=training)   # axis = -1
        call:   mean, var over axis=-1;  normalized = (x - mean) / sqrt(var + eps)
                return gamma * normalized + beta   if training else   gamma * normalized

    What goes wrong: (1) axis=-1 is the channel axis, so each pixel is normalized over its own
    channels: no batch statistics at all; (2) input_shape[-axis] = input_shape[1] is the image
    height, not the channel count, so gamma only broadcasts when H equals C (else a shape error);
    (3) training=None makes gamma and beta untrainable *and* drops beta, so the layer is a fixed
    per-pixel standardization; (4) there are no running statistics to use at inference.
    """

    def __init__(self, axis: int = -1, epsilon: float = 1e-3, training=None):
        super().__init__()
        self.axis, self.epsilon, self.training_flag = axis, epsilon, training
        self.gamma = self.beta = None

    def build(self, input_shape) -> None:
        shape = (input_shape[-self.axis],)
        trainable = bool(self.training_flag)
        self.gamma = nn.Parameter(torch.ones(shape), requires_grad=trainable)
        self.beta = nn.Parameter(torch.zeros(shape), requires_grad=trainable)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.gamma is None:
            self.build(inputs.shape)
        mean = inputs.mean(dim=self.axis, keepdim=True)
        var = inputs.var(dim=self.axis, keepdim=True, unbiased=False)
        normalized = (inputs - mean) / torch.sqrt(var + self.epsilon)
        if self.training_flag:
            return self.gamma * normalized + self.beta
        return self.gamma * normalized
