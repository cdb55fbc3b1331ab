"""The seed articles' claims about BN, each judged and each with a proof that runs: lesson 13's machinery.

A `Claim` quotes one sentence or code line of a seed article, in its words and in translation, gives a
verdict and the reason, and names the function here whose run is the evidence: a few tensor operations,
the listing itself run as published, or the proving lesson's experiment on a reduced budget. `run_all`
runs every proof in about 10 s on one CPU thread; the seeds are quoted here, so nothing outside the
package is read.
"""

from __future__ import annotations

import collections
import copy
import functools
import math
import re
import time
import types
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["VERDICTS", "SEEDS", "Claim", "ProofResult", "CLAIMS", "claims_table", "claim_counts", "get_claim",
           "run_proof", "run_all", "result_counts", "Citation", "CITATIONS", "check_references",
           "TF_API", "tf_stand_in", "SEED004_REFERENCES", "claims_markdown", "evidence_items"]

VERDICTS = ("true", "false", "half-true", "untestable as stated")
# what each article is about, as lesson 00 introduces them
SEEDS = {"000": "BN in a segmentation CNN", "001": "BN in a classification CNN",
         "002": "BN in medical imaging: small batches, a 'batch range'", "003": "a from-scratch BN module",
         "004": "BN in CNNs and RNNs, internal covariate shift"}


@dataclass(frozen=True)
class ProofResult:
    """What a proof found. passed: the evidence supports the claim's verdict (for "false": the claim
    fails where it was tested; "true": it holds; "half-true": the part that holds holds and the part
    that does not fails; "untestable as stated": the testable reading behaves as the explanation
    says). numbers: the measurements, plain Python values; summary: one or two sentences with them."""

    claim_id: str
    passed: bool
    numbers: dict
    summary: str


@dataclass(frozen=True)
class Claim:
    """One claim of a seed article. quote_zh is an exact substring of the article (tests check it
    against the files where they are present); proof names a function of this module that returns
    a ProofResult for this claim; lesson says where the course shows it ("03 §5")."""

    id: str
    seed: str
    where: str
    quote_zh: str
    quote_en: str
    verdict: str
    explanation: str
    lesson: str
    proof: str

    def __post_init__(self):
        if self.seed not in SEEDS:
            raise ValueError(f"claim {self.id!r}: seed must be one of {sorted(SEEDS)}, got {self.seed!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id!r}: verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if not self.id.startswith(self.seed + "-"):
            raise ValueError(f"claim {self.id!r}: the id must start with its seed, {self.seed}-")
        for name in ("where", "quote_zh", "quote_en", "explanation", "lesson", "proof"):
            if not getattr(self, name).strip():
                raise ValueError(f"claim {self.id!r}: {name} is empty")


# ----------------------------------------------------------------------------- helpers
_CLAIMS: list[Claim] = []          # filled by @_claim, in the order of the articles


def _plain(value):
    """value as plain Python (floats, ints, bools, strings, lists, dicts), for ProofResult.numbers."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _claim(claim_id: str, seed: str, where: str, quote_zh: str, quote_en: str, verdict: str, explanation: str,
           lesson: str):
    """Register the Claim and make the decorated function, which returns (passed, summary, numbers),
    its proof: a function of no arguments that returns the claim's ProofResult."""
    def wrap(fn):
        @functools.wraps(fn)
        def proof() -> ProofResult:
            passed, summary, numbers = fn()
            return ProofResult(claim_id, bool(passed), _plain(numbers), summary)

        proof.claim_id = claim_id
        _CLAIMS.append(Claim(claim_id, seed, where, quote_zh, quote_en, verdict, explanation, lesson, fn.__name__))
        return proof
    return wrap


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach() - b.detach()).abs().max())


def _bn(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Real BN in training mode without gamma and beta: (x - mu_B) / sqrt(sigma^2_B + eps) per channel."""
    return nn.functional.batch_norm(x, None, None, training=True, eps=eps)


def _raises(fn, *errors) -> str | None:
    """The first line of the error fn() raises (one of errors), or None if it runs."""
    try:
        fn()
    except errors as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


@functools.lru_cache(maxsize=None)
def _digits(images: bool = False):
    from .data import digits
    return digits(images=images)


@functools.lru_cache(maxsize=None)
def _scans():
    from .data import vary_scans
    return vary_scans(_digits(images=True), spread=1.0, seed=0)


# BN in training: mean (1 add), variance (subtract, square, add), normalize (subtract, divide), gamma
# and beta (multiply, add): 8 operations a value, against 2 C_in k^2 for the 3x3 convolution before it
BN_FLOPS_PER_VALUE = 8


def _flops(model: nn.Module, x: torch.Tensor) -> dict:
    """Floating-point operations of one forward pass of x (batch 1 is enough), per kind of layer:
    'conv' and 'linear' (2 per multiply-add), 'bn' (BN_FLOPS_PER_VALUE per value), found by hooks."""
    counts = collections.Counter()

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            counts["conv"] += 2 * module.in_channels // module.groups * k * output.numel()
        elif isinstance(module, nn.Linear):
            counts["linear"] += 2 * module.in_features * output.numel()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            counts["bn"] += BN_FLOPS_PER_VALUE * output.numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return dict(counts)


def _bn_share(model: nn.Module, x: torch.Tensor) -> float:
    counts = _flops(model, x)
    return counts.get("bn", 0) / sum(counts.values())


# ----------------------------------------------------------------------------- the seeds' listings, verbatim
# Quoted exactly as published (a backslash at a line's end continues the line: the listings have long
# lines); tests check each against the article where the seeds are present.
SEED000_NET = """\
class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc1 = nn.Linear(128, 10)
        self.fc2 = nn.Linear(10, 1)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.max_pool2d(x, 2, 2)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.avg_pool2d(x, 8)
        x = x.view(-1, 128)
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return x"""

SEED000_TEST_LOOP = """\
with torch.no_grad():
    for i, (images, _) in enumerate(test_loader):
        outputs = net(images)
        # 使用训练过程中计算出的均值和方差进行归一化
        outputs = outputs.mul(bn3.running_var.sqrt()).add(bn3.running_mean).add(1).mul(255).clamp(0, 255).byte()
        img = np.hstack((np.hstack((images[j], outputs[j].permute(1, 2, 0).numpy())), np.zeros((1, 256, 3))))
        plt.imshow(img)
        plt.show()"""

SEED001_TEST_LOOP = """\
correct = 0
total = 0
with torch.no_grad():
    for inputs, labels in test_loader:
        outputs = net(inputs)
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()"""

SEED002_BNLAYER = """\
class BNLayer(tf.keras.layers.Layer):
    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, training=None):
        super(BNLayer, self).__init__()
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.training = training

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-self.axis],), initializer='ones',\
 trainable=self.training)
        self.beta = self.add_weight(shape=(input_shape[-self.axis],), initializer='zeros',\
 trainable=self.training)

    def call(self, inputs):
        mean = tf.reduce_mean(inputs, axis=self.axis, keepdims=True)
        var = tf.reduce_variance(inputs, axis=self.axis, keepdims=True)
        normalized = (inputs - mean) / tf.sqrt(var + self.epsilon)
        if self.training:
            return self.gamma * normalized + self.beta
        else:
            return self.gamma * normalized"""

SEED002_MODEL = """\
model = tf.keras.Sequential([
    tf.keras.layers.Conv2D(32, kernel_size=(3, 3), activation='relu', input_shape=(28, 28, 1)),
    BNLayer(),
    tf.keras.layers.Conv2D(64, kernel_size=(3, 3), activation='relu'),
    BNLayer(),
    tf.keras.layers.MaxPooling2D(pool_size=(2, 2)),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(10, activation='softmax')
])"""

SEED003_MODULE = """\
class BatchNormalization(nn.Module):
    def __init__(self, num_features):
        super(BatchNormalization, self).__init__()
        self.num_features = num_features
        self.gamma = nn.Parameter(torch.ones(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.eps = 1e-5

    def forward(self, x):
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True, unbiased=False)
        x = (x - mean) / (std + self.eps)
        x = self.gamma * x + self.beta
        return x"""

SEED004_LAYER = """\
class BatchNormalization(tf.keras.layers.Layer):
    def __init__(self, axis=-1, momentum=0.9, epsilon=0.001, center=True, scale=True,
                 fused=None, fuse_on_cuda=None, data_format=None):
        super(BatchNormalization, self).__init__()
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.fused = fused
        self.fuse_on_cuda = fuse_on_cuda
        self.data_format = tf.keras.backend.image_data_format()

    def build(self, input_shape):
        self.gamma = self.add_weight(name='gamma',
                                     shape=(input_shape[-1],),
                                     initializer='random_normal',
                                     trainable=True)
        self.beta = self.add_weight(name='beta',
                                    shape=(input_shape[-1],),
                                    initializer='zeros',
                                    trainable=True)

    def call(self, inputs):
        mean, var, shape = tf.nn.moments(inputs, axes=self.axis, keepdims=True)
        if self.training:
            return tf.nn.batch_normalization(
                inputs, mean, var,
                offset=self.beta, scale=self.gamma,
                variance_epsilon=self.epsilon,
                train=True)
        else:
            return tf.nn.batch_normalization(
                inputs, mean, var,
                offset=self.beta, scale=self.gamma,
                variance_epsilon=self.epsilon,
                train=False)"""

SEED004_MODEL = """\
model = tf.keras.Sequential([
    tf.keras.layers.InputLayer(input_shape=(28, 28, 1)),
    BatchNormalization(),
    tf.keras.layers.Conv2D(32, (3, 3), activation='relu'),
    BatchNormalization(),
    tf.keras.layers.MaxPooling2D((2, 2)),
    tf.keras.layers.Conv2D(64, (3, 3), activation='relu'),
    BatchNormalization(),
    tf.keras.layers.MaxPooling2D((2, 2)),
    tf.keras.layers.Flatten(),
    tf.keras.layers.Dense(128, activation='relu'),
    BatchNormalization(),
    tf.keras.layers.Dense(10, activation='softmax')
])"""

SEED004_REFERENCES = (
    '1. Ioffe, S., & Szegedy, C. (2015). Batch Normalization: Accelerating Deep Network Training by'
    ' Reducing Internal Covariate Shift. arXiv preprint arXiv:1502.03167.',
    '2. Huang, L., Liu, S., Van Der Maaten, L., & Welling, M. (2016). Densely Connected Convolutional'
    ' Networks. arXiv preprint arXiv:1608.06999.',
    '3. Vaswani, A., Gomez, J., Parmar, N., Yogatama, S., Kingma, D. B., & Ba, J. (2017). Attention is'
    ' All You Need. arXiv preprint arXiv:1706.03762.',
    '4. Chollet, F. (2017). Xception: Deep Learning with Depthwise Separable Convolutions. arXiv'
    ' preprint arXiv:1610.02383.',
    '5. Kim, D. (2014). Deep Learning for Visual Recognition. arXiv preprint arXiv:1409.1556.',
    '6. Goodfellow, I., Bengio, Y., & Courville, A. (2016). Deep Learning. MIT Press.',
    '7. LeCun, Y., Bengio, Y., & Hinton, G. (2015). Deep Learning. Nature, 521(7553), 436-444.',
    '8. Krizhevsky, A., Sutskever, I., & Hinton, G. (2012). ImageNet Classification with Deep'
    ' Convolutional Neural Networks. arXiv preprint arXiv:1211.0553.',
    '9. Simonyan, K., & Zisserman, A. (2014). Very Deep Convolutional Networks for Large-Scale Image'
    ' Recognition. arXiv preprint arXiv:1409.1556.',
    '10. Szegedy, C., Liu, W., Jia, Y., Sermanet, P., Reed, S., Angel, D., Erhan, D., Vanhoucke, V.,'
    ' Suarez, A., How, L., & Serre, T. (2015). Going Deeper with Convolutions. arXiv preprint arXiv:1512.00567.',
    '11. He, K., Zhang, M., Ren, S., & Sun, J. (2016). Deep Residual Learning for Image Recognition.'
    ' arXiv preprint arXiv:1512.03385.',
    '12. Ulyanov, D., Krizhevsky, A., & Erhan, D. (2016). Instance Normalization: The Missing Ingredient'
    ' for Fast Stylization. arXiv preprint arXiv:1607.08022.',
    '13. Radford, A., Metz, L., & Chintala, S. (2015). Unsupervised Representation Learning with Deep'
    ' Convolutional Generative Adversarial Networks. arXiv preprint arXiv:1511.06434.',
    '14. Gulcehre, C., Geifman, Y., Chilamkurthi, L., & Erhan, D. (2016). Visual Question Answering with'
    ' Deep Convolutional Networks. arXiv preprint arXiv:1603.06234.',
    '15. Vinyals, O., Le, Q. V., & Erhan, D. (2015). Show and Tell: A Neural Image Caption Generator.'
    ' arXiv preprint arXiv:1411.4559.',
    '16. Karpathy, A., Vinyals, O., Le, Q. V., & Fei-Fei, L. (2015). Multimodal Neural Text Generation'
    ' for Visual Question Answering. arXiv preprint arXiv:1502.05647.',
    '17. Devlin, J., Changmayr, M., & Conneau, A. (2018). BERT: Pre-training of Deep Bidirectional'
    ' Transformers for Language Understanding. arXiv preprint arXiv:1810.04805.',
    '18. Vaswani, A., Schuster, M., & Jordan, M. I. (2017). Attention is All You Need. arXiv preprint'
    ' arXiv:1706.03762.',
    '19. Chen, L., Krizhevsky, A., & Sutskever, I. (2015). R-CNN: Architecture for Fast Object'
    ' Detection. arXiv preprint arXiv:1411.0353.',
    '20. Redmon, J., Farhadi, A., & Zisserman, A. (2016). You Only Look Once: Unified, Real-Time Object'
    ' Detection. arXiv preprint arXiv:1506.02640.',
    '21. Ren, S., He, K., Girshick, R., & Sun, J. (2015). Faster R-CNN: Towards Real-Time Object'
    ' Detection with Region Proposal Networks. arXiv preprint arXiv:1506.01497.',
    '22. Long, J., Shelhamer, E., & Darrell, T. (2015). Fully Convolutional Networks for Semantic'
    ' Segmentation. arXiv preprint arXiv:1411.4044.',
    '23. Szegedy, C., Liu, W., Jia, Y., Sermanet, P., Reed, S., Angel, D., Erhan, D., Vanhoucke, V.,'
    ' Suarez, A., How, L., & Serre, T. (2015). Going Deeper with Convolutions. arXiv preprint arXiv:1512.00567.',
    '24. He, K., Zhang, M., Ren, S., & Sun, J. (2016). Deep Residual Learning for Image Recognition.'
    ' arXiv preprint arXiv:1512.03385.',
    '25. Ulyanov, D., Krizhevsky, A., & Erhan, D. (2016). Instance Normalization: The Missing Ingredient'
    ' for Fast Stylization. arXiv preprint arXiv:1607.08022.',
    '26. Radford, A., Metz, L., & Chintala, S. (2015). Unsupervised Representation Learning with Deep'
    ' Convolutional Generative Adversarial Networks. arXiv preprint arXiv:1511.06434.',
    '27. Gulcehre, C., Geifman, Y., Chilamkurthi, L., & Erhan, D. (2016). Visual Question Answering with'
    ' Deep Convolutional Networks. arXiv preprint arXiv:1603.06234.',
    '28. Vinyals, O., Le, Q. V., & Erhan, D. (2015). Show and Tell: A Neural Image Caption Generator.'
    ' arXiv preprint arXiv:1411.4559.',
    '29. Karpathy, A., Vinyals, O., Le, Q. V., & Fei-Fei, L. (2015). Multimodal Neural Text Generation'
    ' for Visual Question Answering. arXiv preprint arXiv:1502.05647.',
    '30. Devlin, J., Changmayr, M., & Conneau, A. (2018). BERT: Pre-training of Deep Bidirectional'
    ' Transformers for Language Understanding. arXiv preprint arXiv:1810.04805.',
    '31. Vaswani, A., Schuster, M., & Jordan, M. I. (2017). Attention is All You Need. arXiv preprint'
    ' arXiv:1706.03762.',
    '32. Chen, L., Krizhevsky, A., & Sutskever, I. (2015). R-CNN: Architecture for Fast Object'
    ' Detection. arXiv preprint arXiv:1411.0353.',
    '33. Redmon, J., Farhadi, A., & Zisserman, A. (2016). You Only Look Once: Unified, Real-Time Object'
    ' Detection. arXiv preprint arXiv:1506.02640.',
    '34. Ren, S., He, K., Girshick, R., & Sun, J. (2015). Faster R-CNN: Towards Real-Time Object'
    ' Detection with Region Proposal Networks. arXiv preprint arXiv:1506.01497.',
    '35. Long, J., Shelhamer, E., & Darrell, T. (2015). Fully Convolutional Networks for Semantic'
    ' Segmentation. arXiv preprint arXiv:1411.4044.',
    '36. Szegedy, C., Liu, W., Jia, Y., Sermanet, P., Reed, S., Angel, D., Erhan, D., Vanhoucke, V.,'
    ' Suarez, A., How, L., & Serre, T. (2015). Going Deeper with Convolutions. arXiv preprint arXiv:1512.00567.',
    '37. He, K., Zhang, M., Ren, S., & Sun, J. (2016). Deep Residual Learning for Image Recognition.'
    ' arXiv preprint arXiv:1512.03385.',
    '38. Ulyanov, D., Krizhevsky, A., & Erhan, D. (2016). Instance Normalization: The Missing Ingredient'
    ' for Fast Stylization. arXiv preprint arXiv:1607.08022.',
    '39. Radford, A., Metz, L., & Chintala, S. (2015). Unsupervised Representation Learning with Deep'
    ' Convolutional Generative Adversarial Networks. arXiv preprint arXiv:1511.06434.',
    '40. Gulcehre, C., Geifman, Y., Chilamkurthi, L., & Erhan, D. (2016). Visual Question Answering with'
    ' Deep Convolutional Networks. arXiv preprint arXiv:1603.06234.',
    '41. Vinyals, O., Le, Q. V., & Erhan, D. (2015). Show and Tell: A Neural Image Caption Generator.'
    ' arXiv preprint arXiv:1411.4559.',
    '42. Karpathy, A., Vinyals, O., Le, Q. V., & Fei-Fei, L. (2015). Multimodal Neural Text Generation'
    ' for Visual Question Answering. arXiv preprint arXiv:1502.05647.',
    '43. Devlin, J., Changmayr, M., & Conneau, A. (2018). BERT: Pre-training of Deep Bidirectional'
    ' Transformers for Language Understanding. arXiv preprint arXiv:1810.04805.',
    '44. Vaswani, A., Schuster, M., & Jordan, M. I. (2017). Attention is All You Need. arXiv preprint'
    ' arXiv:1706.03762.',
    '45. Chen, L., Krizhevsky, A., & Sutskever, I. (2015). R-CNN: Architecture for Fast Object'
    ' Detection. arXiv preprint arXiv:1411.0353.',
    '46. Redmon, J., Farhadi, A., & Zisserman, A. (2016). You Only Look Once: Unified, Real-Time Object'
    ' Detection. arXiv preprint arXiv:1506.02640.',
    '47. Ren, S., He, K., Girshick, R., & Sun, J. (2015). Faster R-CNN: Towards Real-Time Object'
    ' Detection with Region Proposal Networks. arXiv preprint arXiv:1506.01497.',
    '48. Long, J., Shelhamer, E., & Darrell, T. (2015). Fully Convolutional Networks for Semantic'
    ' Segmentation. arXiv preprint arXiv:1411.4044.',
    '49. Szegedy, C., Liu, W., Jia, Y., Sermanet, P., Reed, S., Angel, D., Erhan, D., Vanhoucke, V.,'
    ' Suarez, A., How, L., & Serre, T. (2015). Going Deeper with Convolutions. arXiv preprint arXiv:1512.00567.',
    '50. He, K., Zhang, M., Ren, S., & Sun, J. (2016). Deep Residual Learning for Image Recognition.'
    ' arXiv preprint arXiv:1512.03385.',
    '51. Ulyanov, D., Krizhevsky, A., & Erhan, D. (2016). Instance Normalization: The Missing Ingredient'
    ' for Fast Stylization. arXiv preprint arXiv:1607.08022.',
    '52. Radford, A., Metz, L., & Chintala, S. (2015). Unsupervised Representation Learning with Deep'
    ' Convolutional Generative Adversarial Networks. arXiv preprint arXiv:1511.06434.',
    '53. Gulcehre, C., Geifman, Y., Chilamkurthi, L., & Erhan, D. (2016). Visual Question Answering with'
    ' Deep Convolutional Networks. arXiv preprint arXiv:1603.06234.',
    '54. Vinyals, O., Le, Q. V., & Erhan, D. (2015). Show and Tell: A Neural Image Caption Generator.'
    ' arXiv preprint arXiv:1411.4559.',
    '55. Karpathy, A., Vinyals, O., Le, Q. V., & Fei-Fei, L. (2015). Multimodal Neural Text Generation'
    ' for Visual Question Answering. arXiv preprint arXiv:1502.05647.',
    '56. Devlin, J., Changmayr, M., & Conneau, A. (2018). BERT: Pre-training of Deep Bidirectional'
    ' Transformers for Language Understanding. arXiv preprint arXiv:1810.04805.',
    '57. Vaswani, A., Schuster, M., & Jordan, M. I. (2017). Attention is All You Need. arXiv preprint'
    ' arXiv:1706.03762.',
    '58. Chen, L., Krizhevsky, A., & Sutskever, I. (2015). R-CNN',
)


# ----------------------------------------------------------------------------- TensorFlow's real API
# The TensorFlow/Keras names the listings of seeds 002 and 004 use, with their real signatures
# (TensorFlow 2.x; tf.keras 2.x where Keras differs). TensorFlow is not a dependency of the course:
# the listings run against `tf_stand_in`, which has these names, signatures and return values only.
TF_API = {
    "tf.keras.layers.Layer": "class tf.keras.layers.Layer: custom layers define build(input_shape) and "
                             "call(inputs, training=None); `training` is an argument of call, not an attribute",
    "tf.keras.Sequential": "tf.keras.Sequential(layers=None, name=None)",
    "tf.keras.layers.Conv2D": "tf.keras.layers.Conv2D(filters, kernel_size, strides=(1, 1), padding='valid', ...)",
    "tf.keras.layers.MaxPooling2D": "tf.keras.layers.MaxPooling2D(pool_size=(2, 2), strides=None, padding='valid', "
                                    "...)",
    "tf.keras.layers.Flatten": "tf.keras.layers.Flatten(data_format=None)",
    "tf.keras.layers.Dense": "tf.keras.layers.Dense(units, activation=None, ...)",
    "tf.keras.layers.InputLayer": "tf.keras.layers.InputLayer(input_shape=None, batch_size=None, dtype=None, ...)",
    "tf.keras.backend.image_data_format": "tf.keras.backend.image_data_format() -> 'channels_last' or 'channels_first'",
    "tf.reduce_mean": "tf.reduce_mean(input_tensor, axis=None, keepdims=False, name=None)",
    "tf.math.reduce_variance": "tf.math.reduce_variance(input_tensor, axis=None, keepdims=False, name=None)",
    "tf.sqrt": "tf.sqrt(x, name=None)",
    "tf.nn.moments": "tf.nn.moments(x, axes, shift=None, keepdims=False, name=None) -> (mean, variance): "
                     "two tensors",
    "tf.nn.batch_normalization": "tf.nn.batch_normalization(x, mean, variance, offset, scale, variance_epsilon, "
                                 "name=None): no `training` or `train` argument; the caller passes batch "
                                 "moments in training and moving averages at inference",
}
# names the listings use that TensorFlow does not have, and the real one (TensorFlow's source exports
# reduce_variance as tf.math.reduce_variance only, where reduce_mean is also tf.reduce_mean)
TF_NOT_IN_API = {"tf.reduce_variance": "tf.math.reduce_variance"}
KERAS_RANDOM_NORMAL_STD = 0.05     # Keras's 'random_normal' initializer: RandomNormal(mean=0.0, stddev=0.05)


def _axes(x: torch.Tensor, axis) -> list[int]:
    if axis is None:
        return list(range(x.dim()))
    return [int(a) for a in axis] if isinstance(axis, (list, tuple)) else [int(axis)]


class _KerasLayer:
    """tf.keras.layers.Layer as far as the seeds' listings use it: the first call builds the layer on
    the input's shape, then runs call(inputs). add_weight creates a tensor with Keras's named
    initializers; trainable=None means trainable, as in tf.keras 2.x. Like Keras's, this base class
    sets no `training` attribute (training is an argument of call), to our knowledge of tf.keras 2.x."""

    def __init__(self, *args, **kwargs):
        self.built = False

    def add_weight(self, name=None, shape=None, dtype=None, initializer=None, trainable=None, **kwargs):
        shape = tuple(shape)
        if initializer == "ones":
            value = torch.ones(shape)
        elif initializer == "zeros":
            value = torch.zeros(shape)
        elif initializer == "random_normal":
            value = torch.randn(shape, generator=_gen(len(shape))) * KERAS_RANDOM_NORMAL_STD
        else:
            raise ValueError("the stand-in knows the initializers 'ones', 'zeros', 'random_normal', got "
                             f"{initializer!r}")
        return value.requires_grad_(True if trainable is None else bool(trainable))

    def __call__(self, inputs):
        if not self.built:
            self.build(tuple(inputs.shape))
            self.built = True
        return self.call(inputs)


def tf_stand_in() -> types.SimpleNamespace:
    """A module object `tf` with the TensorFlow names of TF_API, in torch: the real signatures and
    return values (tf.nn.moments returns (mean, variance); tf.nn.batch_normalization takes no
    training flag), and nothing else, so a listing that calls a name TensorFlow does not have
    (tf.reduce_variance) fails here as it does there, with an AttributeError. Variances are biased
    (1/n), as TensorFlow's."""
    def reduce_mean(input_tensor, axis=None, keepdims=False, name=None):
        return input_tensor.mean(dim=_axes(input_tensor, axis), keepdim=keepdims)

    def reduce_variance(input_tensor, axis=None, keepdims=False, name=None):
        return input_tensor.var(dim=_axes(input_tensor, axis), keepdim=keepdims, unbiased=False)

    def moments(x, axes, shift=None, keepdims=False, name=None):
        return reduce_mean(x, axes, keepdims), reduce_variance(x, axes, keepdims)

    def batch_normalization(x, mean, variance, offset, scale, variance_epsilon, name=None):
        return scale * (x - mean) / torch.sqrt(variance + variance_epsilon) + offset

    def unavailable(*args, **kwargs):
        raise NotImplementedError("the stand-in runs the listings' BN layers, not Keras models")

    return types.SimpleNamespace(
        reduce_mean=reduce_mean, sqrt=lambda x, name=None: torch.sqrt(x),
        math=types.SimpleNamespace(reduce_variance=reduce_variance),
        nn=types.SimpleNamespace(moments=moments, batch_normalization=batch_normalization),
        keras=types.SimpleNamespace(
            layers=types.SimpleNamespace(Layer=_KerasLayer, Conv2D=unavailable, MaxPooling2D=unavailable,
                                         Flatten=unavailable, Dense=unavailable, InputLayer=unavailable),
            Sequential=unavailable,
            backend=types.SimpleNamespace(image_data_format=lambda: "channels_last")))


def _tf_names(listing: str) -> list[str]:
    """The tf.* names a listing uses, in order of first use."""
    return list(dict.fromkeys(re.findall(r"\btf(?:\.\w+)+", listing)))


def _tf_resolves(tf, name: str) -> bool:
    obj = tf
    for part in name.split(".")[1:]:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def _real_tensorflow():
    """TensorFlow itself where it happens to be installed (it is not a dependency), else None."""
    try:
        import tensorflow
    except Exception:            # ImportError, or a broken install: check against TF_API alone
        return None
    return tensorflow


def _run_listing(listing: str, name: str, namespace: dict):
    """exec a seed's listing (a class definition) in namespace and return the class called name."""
    scope = dict(namespace)
    exec(compile(listing, f"<seed listing {name}>", "exec"), scope)
    return scope[name]


# ----------------------------------------------------------------------------- the real citations
@dataclass(frozen=True)
class Citation:
    """A paper as published: authors as 'Surname, I.' in the paper's order, title, the years it can
    be cited with (its arXiv year and its publication year), its arXiv id (None: it has none) and venue."""

    authors: tuple[str, ...]
    title: str
    years: tuple[int, ...]
    arxiv: str | None
    venue: str


CITATIONS = {
    "ioffe2015": Citation(("Ioffe, S.", "Szegedy, C."), "Batch Normalization: Accelerating Deep Network Training "
                          "by Reducing Internal Covariate Shift", (2015,), "1502.03167", "ICML 2015"),
    "huang2017": Citation(("Huang, G.", "Liu, Z.", "van der Maaten, L.", "Weinberger, K. Q."),
                          "Densely Connected Convolutional Networks", (2016, 2017), "1608.06993", "CVPR 2017"),
    "vaswani2017": Citation(("Vaswani, A.", "Shazeer, N.", "Parmar, N.", "Uszkoreit, J.", "Jones, L.", "Gomez, A. N.",
                             "Kaiser, L.", "Polosukhin, I."), "Attention Is All You Need", (2017,), "1706.03762",
                            "NeurIPS 2017"),
    "chollet2017": Citation(("Chollet, F.",), "Xception: Deep Learning with Depthwise Separable Convolutions",
                            (2016, 2017), "1610.02357", "CVPR 2017"),
    "goodfellow2016": Citation(("Goodfellow, I.", "Bengio, Y.", "Courville, A."), "Deep Learning", (2016,), None,
                               "MIT Press"),
    "lecun2015": Citation(("LeCun, Y.", "Bengio, Y.", "Hinton, G."), "Deep Learning", (2015,), None,
                          "Nature 521(7553), 436-444"),
    "krizhevsky2012": Citation(("Krizhevsky, A.", "Sutskever, I.", "Hinton, G. E."), "ImageNet Classification with "
                               "Deep Convolutional Neural Networks", (2012,), None, "NIPS 2012 (no arXiv version)"),
    "simonyan2014": Citation(("Simonyan, K.", "Zisserman, A."), "Very Deep Convolutional Networks for Large-Scale "
                             "Image Recognition", (2014, 2015), "1409.1556", "ICLR 2015"),
    "szegedy2015": Citation(("Szegedy, C.", "Liu, W.", "Jia, Y.", "Sermanet, P.", "Reed, S.", "Anguelov, D.",
                             "Erhan, D.", "Vanhoucke, V.", "Rabinovich, A."), "Going Deeper with Convolutions",
                            (2014, 2015), "1409.4842", "CVPR 2015"),
    "szegedy2016": Citation(("Szegedy, C.", "Vanhoucke, V.", "Ioffe, S.", "Shlens, J.", "Wojna, Z."),
                            "Rethinking the Inception Architecture for Computer Vision", (2015, 2016), "1512.00567",
                            "CVPR 2016"),
    "he2016": Citation(("He, K.", "Zhang, X.", "Ren, S.", "Sun, J."), "Deep Residual Learning for Image Recognition",
                       (2015, 2016), "1512.03385", "CVPR 2016"),
    "ulyanov2016": Citation(("Ulyanov, D.", "Vedaldi, A.", "Lempitsky, V."), "Instance Normalization: The Missing "
                            "Ingredient for Fast Stylization", (2016,), "1607.08022", "arXiv"),
    "radford2015": Citation(("Radford, A.", "Metz, L.", "Chintala, S."), "Unsupervised Representation Learning with "
                            "Deep Convolutional Generative Adversarial Networks", (2015, 2016), "1511.06434",
                            "ICLR 2016"),
    "vinyals2015": Citation(("Vinyals, O.", "Toshev, A.", "Bengio, S.", "Erhan, D."), "Show and Tell: A Neural Image "
                            "Caption Generator", (2014, 2015), "1411.4555", "CVPR 2015"),
    "devlin2019": Citation(("Devlin, J.", "Chang, M.-W.", "Lee, K.", "Toutanova, K."), "BERT: Pre-training of Deep "
                           "Bidirectional Transformers for Language Understanding", (2018, 2019), "1810.04805",
                           "NAACL 2019"),
    "girshick2014": Citation(("Girshick, R.", "Donahue, J.", "Darrell, T.", "Malik, J."), "Rich Feature Hierarchies "
                             "for Accurate Object Detection and Semantic Segmentation", (2013, 2014), "1311.2524",
                             "CVPR 2014 (the R-CNN paper)"),
    "redmon2016": Citation(("Redmon, J.", "Divvala, S.", "Girshick, R.", "Farhadi, A."), "You Only Look Once: "
                           "Unified, Real-Time Object Detection", (2015, 2016), "1506.02640", "CVPR 2016"),
    "ren2015": Citation(("Ren, S.", "He, K.", "Girshick, R.", "Sun, J."), "Faster R-CNN: Towards Real-Time Object "
                        "Detection with Region Proposal Networks", (2015,), "1506.01497", "NIPS 2015"),
    "long2015": Citation(("Long, J.", "Shelhamer, E.", "Darrell, T."), "Fully Convolutional Networks for Semantic "
                         "Segmentation", (2014, 2015), "1411.4038", "CVPR 2015"),
}
# seed 004's titles that name no paper we know (with these authors or any): we could not verify them
# and list them as unverified rather than guess; their arXiv ids could not be checked offline
UNVERIFIED_TITLES = ("Deep Learning for Visual Recognition", "Visual Question Answering with Deep Convolutional "
                     "Networks", "Multimodal Neural Text Generation for Visual Question Answering",
                     "R-CNN: Architecture for Fast Object Detection")
_REFERENCE = re.compile(r"^(?P<number>\d+)\. (?P<authors>.+?) \((?P<year>\d{4})\)\. (?P<title>[^.]+)\. (?P<rest>.*)$")
_AUTHOR = re.compile(r"\s*(?:&\s*)?(?P<surname>[^,&]+?), (?P<initials>(?:[A-Z]\.(?:-[A-Z]\.)?\s?)+)")


def _surname(author: str) -> str:
    return author.split(",")[0].strip().lower()


def _parse_reference(entry: str) -> dict | None:
    """{'number', 'authors' (list of 'Surname, I.'), 'year', 'title', 'arxiv'} of a seed reference
    line, or None for a line that is cut off (seed 004's last one)."""
    match = _REFERENCE.match(entry.strip())
    if match is None:
        return None
    authors = [f"{m['surname'].strip()}, {m['initials'].strip()}" for m in _AUTHOR.finditer(match["authors"])]
    arxiv = re.search(r"arXiv:(\d{4}\.\d{4,5})", match["rest"])
    return dict(number=int(match["number"]), authors=authors, year=int(match["year"]), title=match["title"].strip(),
                arxiv=arxiv[1] if arxiv else None)


def _find_citation(title: str, authors: list[str]) -> str | None:
    """The key of CITATIONS with this title (case-insensitive; the first author decides between
    two books called Deep Learning), or None."""
    keys = [k for k, c in CITATIONS.items() if c.title.lower() == title.lower()]
    if len(keys) > 1 and authors:
        keys = [k for k in keys if _surname(CITATIONS[k].authors[0]) == _surname(authors[0])]
    return keys[0] if keys else None


def check_references(entries=None) -> dict:
    """Compare a reference list (default: seed 004's, SEED004_REFERENCES) with CITATIONS.

    Returns {'entries': how many lines, 'cut_off': numbers of lines that stop mid-entry, 'distinct':
    distinct complete lines, 'works': distinct papers, 'repeats': {number: the earlier number it
    copies}, 'correct': numbers of lines that match their paper (authors, year, arXiv id),
    'problems': {number: [what is wrong, ...]}, 'unverified': numbers of lines naming no known paper}.
    Authors are compared as 'Surname, I.' in order: a wrong or missing surname and a wrong first
    initial are each a problem; so is an arXiv id that is not the paper's.
    """
    entries = SEED004_REFERENCES if entries is None else tuple(entries)
    first_seen: dict[str, int] = {}
    report = dict(entries=len(entries), cut_off=[], distinct=0, works=0, repeats={}, correct=[], problems={},
                  unverified=[])
    works = set()
    by_arxiv = {c.arxiv: k for k, c in CITATIONS.items() if c.arxiv}
    for line in entries:
        parsed = _parse_reference(line)
        text = line.split(". ", 1)[1] if ". " in line else line
        number = int(line.split(".", 1)[0])
        if parsed is None:
            report["cut_off"].append(number)
            continue
        if text in first_seen:
            report["repeats"][number] = first_seen[text]
            continue
        first_seen[text] = number
        key = _find_citation(parsed["title"], parsed["authors"])
        if key is None:
            report["unverified"].append(number)
            works.add(parsed["title"].lower())
            if parsed["arxiv"] in by_arxiv:
                report["problems"].setdefault(number, []).append(
                    f"arXiv:{parsed['arxiv']} is {CITATIONS[by_arxiv[parsed['arxiv']]].title!r}")
            continue
        works.add(key)
        real = CITATIONS[key]
        problems = []
        seed_surnames, real_surnames = [_surname(a) for a in parsed["authors"]], [_surname(a) for a in real.authors]
        wrong = [a for a in parsed["authors"] if _surname(a) not in real_surnames]
        missing = [a for a in real.authors if _surname(a) not in seed_surnames]
        if wrong:
            problems.append(f"not authors: {', '.join(wrong)}")
        if missing:
            problems.append(f"authors left out: {', '.join(missing)}")
        for a in parsed["authors"]:
            if _surname(a) in real_surnames:
                b = real.authors[real_surnames.index(_surname(a))]
                if a.split(", ")[1][0] != b.split(", ")[1][0]:
                    problems.append(f"{a} should be {b}")
        if parsed["year"] not in real.years:
            problems.append(f"year {parsed['year']}, not {' or '.join(map(str, real.years))}")
        if parsed["arxiv"] != real.arxiv:
            actual = (f"{CITATIONS[by_arxiv[parsed['arxiv']]].title!r}" if parsed["arxiv"] in by_arxiv
                      else "not checked offline")
            problems.append(f"arXiv:{parsed['arxiv']} (that id: {actual}); the paper's is "
                            + (f"arXiv:{real.arxiv}" if real.arxiv else f"none ({real.venue})"))
        if problems:
            report["problems"][number] = problems
        else:
            report["correct"].append(number)
    report["distinct"] = len(first_seen)
    report["works"] = len(works)
    return report


# ----------------------------------------------------------------------------- shared runs
# Each is the experiment of the proving lesson on a reduced budget, on the CPU (so that a verdict
# does not depend on the machine), computed once however many claims use it.
FIG1_STEPS = 200                   # lesson 04 trains 3,000 steps; BN is ahead from step 50
SHIFT = dict(gain=0.5, offset=0.5)     # a new scanner: test images at half the contrast, brighter


@functools.lru_cache(maxsize=None)
def _fig1(norm: str | None):
    from .experiments import ioffe_fig1
    return ioffe_fig1(norm, seed=0, steps=FIG1_STEPS, data=_digits(), eval_every=50, device="cpu", progress=False)


@functools.lru_cache(maxsize=None)
def _lr1():
    """Lesson 05 section 3 at lr 1: a 10-layer ReLU MLP (He init) with and without BN, 100 SGD steps."""
    from .experiments import lr_sweep
    return lr_sweep((1.0,), depth=10, steps=100, data=_digits(), device="cpu", progress=False)


@functools.lru_cache(maxsize=None)
def _regularization(norm: str | None, batch_size: int, steps: int | None = None):
    """Lesson 10 section 2: a 3 x 100 MLP on 300 training digits, 400 SGD steps (seed 0)."""
    from .experiments import REGULARIZATION, regularization_run, subset
    return regularization_run(batch_size, norm=norm, data=subset(_digits(), REGULARIZATION["train_size"]),
                              steps=steps)


@functools.lru_cache(maxsize=None)
def _gradient_norms(norm: str | None, depth: int, init: str | None = None, skip: bool = False) -> np.ndarray:
    """Lesson 05: ||dL/dW_l|| of every hidden layer of a deep ReLU MLP at initialization, 128 digits, float64."""
    from .experiments import deep_mlp, residual_mlp, weight_grad_norms
    data = _digits()
    torch.manual_seed(0)
    model = residual_mlp(depth, norm=norm, init=init) if skip else deep_mlp(depth, norm=norm, init=init)
    return weight_grad_norms(model, data.x_train[:128], data.y_train[:128])


@functools.lru_cache(maxsize=None)
def _cnn(variant: str):
    """Lesson 06 section 2 at lr 0.03: conv16-conv32 on digit images, 300 SGD steps, seed 0."""
    from .experiments import cnn_run
    kwargs = {"bn": dict(norm="bn"), "plain_he": dict(norm=None, init="he")}[variant]
    return cnn_run(lr=0.03, steps=300, data=_digits(images=True), device="cpu", **kwargs)


@functools.lru_cache(maxsize=None)
def _bn_mlp():
    """A 64-100-100-10 MLP with torch's BN, trained 300 SGD steps on digits (lr 0.1, batch 60)."""
    from .models import mlp
    from .train import train_classifier
    torch.manual_seed(0)
    model = mlp(64, (100, 100), 10, norm="torch_bn")
    train_classifier(model, _digits(), steps=300, batch_size=60, lr=0.1, eval_every=300, seed=0, device="cpu",
                     progress=False)
    return model.eval()


def _shifted_test():
    data = _digits()
    return data.x_test * SHIFT["gain"] + SHIFT["offset"], data.y_test


@functools.lru_cache(maxsize=None)
def _domain_shift() -> dict:
    """The BN MLP on the digits' test set, as is and shifted (SHIFT), with its running statistics and
    with them recomputed on the shifted test images (AdaBN, Li et al. 2016: no weight changes)."""
    from .train import accuracy, recompute_batchnorm_statistics
    model, data = _bn_mlp(), _digits()
    x_shift, y = _shifted_test()
    adapted = copy.deepcopy(model)
    recompute_batchnorm_statistics(adapted, x_shift, batch_size=60)
    return dict(clean=accuracy(model, data.x_test, y), shifted=accuracy(model, x_shift, y),
                recomputed=accuracy(adapted, x_shift, y))


@functools.lru_cache(maxsize=None)
def _small_batch(norm: str, batch_size: int, epochs: int):
    """Lesson 08 section 2: its conv net on digit scans of varying gain and offset, at batch_size."""
    from .experiments import small_batch_run
    history = small_batch_run(norm, batch_size, data=_scans(), epochs=epochs, device="cpu")
    history.model.cpu()
    return history


@functools.lru_cache(maxsize=None)
def _landscape(norm: str | None):
    """Lesson 09 sections 3-4 on 30 steps: ICS (Santurkar et al.) and the loss along the step."""
    from .experiments import landscape_run
    return landscape_run(norm, steps=30, checkpoints=(10, 20, 30), ks=(0.5, 1.0, 2.0, 4.0), data=_digits(),
                         device="cpu")


@functools.lru_cache(maxsize=None)
def _variance_shift(dropout: str | None):
    """Lesson 10 section 1 on 200 steps: running_var / true test variance of BN2 and BN3."""
    from .experiments import variance_shift_run
    return variance_shift_run(dropout, steps=200, data=_digits())


@functools.lru_cache(maxsize=None)
def _blobs_model():
    """Lesson 03 section 5: an MLP with bnlab's BN trained on four Gaussian classes in raw units."""
    from .data import gaussian_blobs
    from .models import mlp
    from .train import train_classifier
    data = gaussian_blobs(n_per_class=300, n_classes=4, dim=8, seed=0)
    torch.manual_seed(0)
    model = mlp(data.num_features, (64, 64), data.num_classes, norm="bn")
    train_classifier(model, data, steps=400, batch_size=32, lr=0.1, seed=0, device="cpu", progress=False)
    return model.eval(), data


@functools.lru_cache(maxsize=None)
def _rnn(norm: str | None):
    """Lesson 11 section 3 on 100 steps: an LSTM classifier on digit rows (8 steps of 8 pixels)."""
    from .recurrent import train_digit_sequences
    return train_digit_sequences(norm, steps=100, seed=0, eval_every=100)


def _seed000_net_class(with_functional: bool = True):
    """Seed 000's Net, exec'd as published with the imports its article gives (torch, nn, optim),
    and torch.nn.functional as F when with_functional (the article never imports it)."""
    namespace = {"torch": torch, "nn": nn, "optim": torch.optim}
    if with_functional:
        namespace["F"] = nn.functional
    return _run_listing(SEED000_NET, "Net", namespace)


def _dead_channel_batch(dtype=torch.float64) -> torch.Tensor:
    """(16, 3) values, channel 0 constant 0 (a dead ReLU), the others random."""
    x = torch.randn(16, 3, generator=_gen(0), dtype=dtype) * 2 + 1
    x[:, 0] = 0.0
    return x


def _digit_batch(n: int = 128):
    data = _digits()
    return data.x_train[:n], data.y_train[:n]


# ============================================================================= seed 000: segmentation CNN
@_claim("000-faster-convergence", "000", "§2.1, what BN is",
        "这种归一化方法可以使模型在训练过程中更快地收敛",
        "This normalization makes the model converge faster during training.",
        "true",
        "On lesson 04's Figure 1 net BN is above 85 % test accuracy after 200 steps while the same net "
        "without BN is still near chance, and on lesson 05's 10-layer ReLU net BN trains at lr 1, where "
        "the plain net's loss stops being finite within a few steps.",
        "04 §3, 05 §3")
def proof_000_faster_convergence():
    plain, bn = _fig1(None), _fig1("bn")
    sweep = _lr1()
    numbers = dict(fig1_acc200_plain=plain.accuracy_at(FIG1_STEPS), fig1_acc200_bn=bn.accuracy_at(FIG1_STEPS),
                   lr1_plain_diverged_at=sweep[(None, 1.0)].diverged_at,
                   lr1_bn_accuracy=sweep[("bn", 1.0)].test_accuracy[-1])
    passed = (numbers["fig1_acc200_bn"] > 0.85 and numbers["fig1_acc200_plain"] < 0.3
              and sweep[(None, 1.0)].diverged and numbers["lr1_bn_accuracy"] > 0.85)
    return passed, (f"Figure 1 net at step {FIG1_STEPS}: BN {numbers['fig1_acc200_bn']:.2f}, plain "
                    f"{numbers['fig1_acc200_plain']:.2f}; at lr 1 the plain net diverges at step "
                    f"{numbers['lr1_plain_diverged_at']}, BN reaches {numbers['lr1_bn_accuracy']:.2f}."), numbers


@_claim("000-mainly-overfitting", "000", "§2.2, BN and other regularizers",
        "BN主要通过归一化输入数据来减少模型的变化，从而减少过拟合",
        "BN mainly reduces overfitting by normalizing the input data, which reduces the model's variation.",
        "half-true",
        "BN can narrow the train-test gap (here at full batch, where it adds no noise at all), but at an "
        "ordinary batch size of 16 its gap is no smaller than the plain net's, and smaller batches (more "
        "normalization noise) do not narrow it. Its main effect is on optimization, not overfitting: it "
        "trains at learning rates where the plain net diverges (lessons 05, 09). It also normalizes the "
        "hidden layers' inputs, not the input data.",
        "10 §2, §5")
def proof_000_mainly_overfitting():
    gap = {(n, b): _regularization(n, b).gap for n in (None, "torch_bn") for b in (16, 300)}
    sweep = _lr1()
    numbers = dict(gap_bn_300=gap["torch_bn", 300], gap_plain_300=gap[None, 300], gap_bn_16=gap["torch_bn", 16],
                   gap_plain_16=gap[None, 16], lr1_bn_accuracy=sweep[("bn", 1.0)].test_accuracy[-1],
                   lr1_plain_diverged=sweep[(None, 1.0)].diverged)
    passed = (numbers["gap_bn_300"] < numbers["gap_plain_300"] - 0.02            # it can narrow the gap
              and numbers["gap_bn_16"] > numbers["gap_plain_16"] - 0.02           # not at batch 16
              and numbers["gap_bn_16"] > numbers["gap_bn_300"] - 0.01             # more batch noise: no smaller gap
              and numbers["lr1_plain_diverged"] and numbers["lr1_bn_accuracy"] > 0.85)
    return passed, (f"train-test gap on 300 digits: full batch BN {gap['torch_bn', 300]:.3f} vs plain "
                    f"{gap[None, 300]:.3f}; batch 16 BN {gap['torch_bn', 16]:.3f} vs plain {gap[None, 16]:.3f}. "
                    f"At lr 1 BN reaches {numbers['lr1_bn_accuracy']:.2f} while the plain net diverges."), numbers


@_claim("000-divide-by-variance-add-mean", "000", "§3.1, step 2 of the algorithm",
        "将每个像素的值除以该特征图的方差，并加上该特征图的均值",
        "Divide each pixel's value by the feature map's variance, and add the feature map's mean.",
        "false",
        "BN subtracts the mean and divides by the standard deviation sqrt(sigma^2 + eps). Dividing by the "
        "variance and adding the mean gives an output of mean mu / sigma^2 + mu, far from 0, whose spread "
        "depends on the input's scale: a 10x larger input gives a 10x smaller spread.",
        "01 §7")
def proof_000_divide_by_variance_add_mean():
    x = torch.randn(256, 4, generator=_gen(0), dtype=torch.float64) * 2 + 5
    numbers = {}
    for scale in (1, 10):
        xs = x * scale
        mu, var = xs.mean(0), xs.var(0, unbiased=False)
        literal = xs / var + mu
        real = _bn(xs)
        numbers[f"x{scale}"] = dict(literal_mean=literal.mean().item(), literal_std=literal.std(0).mean().item(),
                                    bn_mean=real.mean().item(), bn_std=real.std(0, unbiased=False).mean().item())
    ratio = numbers["x10"]["literal_std"] / numbers["x1"]["literal_std"]
    numbers["literal_std_ratio_for_10x_input"] = ratio
    passed = (abs(numbers["x1"]["literal_mean"]) > 1 and abs(ratio - 0.1) < 1e-6
              and all(abs(numbers[k]["bn_std"] - 1) < 1e-3 and abs(numbers[k]["bn_mean"]) < 1e-10
                      for k in ("x1", "x10")))
    return passed, (f"x / sigma^2 + mu on features of mean 5, std 2: output mean {numbers['x1']['literal_mean']:.2f}, "
                    f"std {numbers['x1']['literal_std']:.2f}; 10x the input gives {ratio:.2f}x the spread. "
                    "Real BN gives mean 0, std 1 for both."), numbers


@_claim("000-running-statistics", "000", "§3.1, step 3 of the algorithm",
        "在训练过程中，同时更新均值和方差，以便在测试过程中使用",
        "During training, the mean and variance are updated as well, to be used at test time.",
        "true",
        "BN keeps running averages of the batch means and variances during training (momentum 0.1 in "
        "torch), and in eval mode it normalizes with them instead of the batch's statistics, so a test "
        "example's output depends on nothing else in its batch. (The article's own test-time formulas then "
        "contradict this: see 000-test-batch-statistics.)",
        "03 §1-2")
def proof_000_running_statistics():
    bn = nn.BatchNorm1d(3).double()
    gen = _gen(0)
    for _ in range(200):
        bn(torch.randn(64, 3, generator=gen, dtype=torch.float64) * 2 + 3)
    bn.eval()
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64) * 2 + 3
    with torch.no_grad():
        expected = (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
        together, alone = bn(x), torch.cat([bn(x[i:i + 1]) for i in range(8)])
    numbers = dict(running_mean=bn.running_mean, running_var=bn.running_var,
                   eval_vs_formula=_max_abs(together, expected), alone_vs_together=_max_abs(alone, together))
    passed = (_max_abs(bn.running_mean, torch.full((3,), 3.0, dtype=torch.float64)) < 0.3
              and _max_abs(bn.running_var, torch.full((3,), 4.0, dtype=torch.float64)) < 0.6
              and numbers["eval_vs_formula"] < 1e-12 and numbers["alone_vs_together"] < 1e-12)
    return passed, (f"after 200 batches of N(3, 2^2) data the running mean is {bn.running_mean.mean():.2f} and the "
                    f"running variance {bn.running_var.mean():.2f}; eval mode normalizes with them, the same "
                    "for an example alone or in a batch."), numbers


@_claim("000-additive-gamma", "000", "§3.2, the BN formula",
        r"y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \gamma + \beta",
        "y = (x - mu) / sqrt(sigma^2 + eps) + gamma + beta",
        "false",
        "BN multiplies by gamma: y = gamma * x_hat + beta. Added, gamma is a second beta: the output's "
        "standard deviation is stuck at 1, and (gamma, beta) = (3, 0) and (0, 3) give the same output.",
        "01 §4, §7")
def proof_000_additive_gamma():
    from .mistakes import additive_affine
    x = torch.randn(64, 3, generator=_gen(0), dtype=torch.float64).numpy() * 2 + 1
    added = additive_affine(x, [3.0] * 3, [0.0] * 3)
    swapped = additive_affine(x, [0.0] * 3, [3.0] * 3)
    real = 3.0 * _bn(torch.from_numpy(x)).numpy()
    numbers = dict(std_added=float(added.std(0).mean()), std_real=float(real.std(0).mean()),
                   gamma_and_beta_swapped=float(np.abs(added - swapped).max()))
    passed = (abs(numbers["std_added"] - 1) < 1e-3 and abs(numbers["std_real"] - 3) < 1e-2
              and numbers["gamma_and_beta_swapped"] < 1e-12)
    return passed, (f"with gamma = 3 the seed's formula gives output std {numbers['std_added']:.3f}, the real one "
                    f"{numbers['std_real']:.3f}; swapping gamma = 3 and beta = 3 changes nothing "
                    f"(max difference {numbers['gamma_and_beta_swapped']:.1e})."), numbers


@_claim("000-learnable-offsets", "000", "§3.2, below the formula",
        r"$\gamma$和$\beta$是可学习的偏移参数",
        "gamma and beta are learnable offset parameters.",
        "half-true",
        "Learnable, yes: gamma and beta are BN's only parameters (torch's weight and bias), trained by the "
        "optimizer with the rest. But only beta is an offset: gamma is a scale, and the output of channel c "
        "has mean beta_c and standard deviation |gamma_c|.",
        "01 §4")
def proof_000_learnable_offsets():
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.0, 2.0, -4.0]))
        bn.bias.copy_(torch.tensor([1.0, -2.0, 0.0, 3.0]))
    x = torch.randn(16, 4, 5, 5, generator=_gen(0), dtype=torch.float64) * 3 + 2
    y = bn(x)
    y.square().mean().backward()
    dims = (0, 2, 3)
    numbers = dict(parameters=[n for n, _ in bn.named_parameters()], buffers=[n for n, _ in bn.named_buffers()],
                   grad_norms=[bn.weight.grad.norm(), bn.bias.grad.norm()],
                   output_std=y.std(dims, unbiased=False), output_mean=y.mean(dims))
    passed = (numbers["parameters"] == ["weight", "bias"] and min(numbers["grad_norms"]) > 0
              and _max_abs(y.std(dims, unbiased=False), bn.weight.abs()) < 1e-4
              and _max_abs(y.mean(dims), bn.bias) < 1e-10)
    return passed, ("BN's parameters are weight (gamma) and bias (beta), and both get gradients; with gamma = "
                    "(0.5, 1, 2, -4) the channels' output std is "
                    + ", ".join(f"{s:.3f}" for s in y.std(dims, unbiased=False))
                    + ": |gamma| scales, beta shifts."), numbers


@_claim("000-epsilon", "000", "§3.2, below the formula",
        r"$\epsilon$是一个小于1的常数，用于避免方差为0的情况",
        "epsilon is a constant smaller than 1, used to avoid the case of a variance of 0.",
        "half-true",
        "epsilon avoids dividing by zero where the variance is 0 (a constant channel comes out as 0 instead "
        "of NaN); it does not stop the variance from being 0. 'Smaller than 1' is not the criterion: it is a "
        "variance floor in units of x^2 and must be small next to the variances (torch: 1e-5); 0.5 < 1 on "
        "features of std 0.01 wipes out the normalization.",
        "01 §5, §7")
def proof_000_epsilon():
    x = _dead_channel_batch()
    var0 = x[:, 0].var(unbiased=False).item()
    with_eps = _bn(x)[:, 0]
    without = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std(unbiased=False)
    small = torch.randn(256, 4, generator=_gen(1), dtype=torch.float64) * 0.01
    numbers = dict(constant_channel_variance=var0, output_with_eps=with_eps.abs().max(),
                   output_without_eps_is_nan=bool(torch.isnan(without).all()),
                   std_out_eps_0_5=_bn(small, eps=0.5).std(0, unbiased=False).mean(),
                   std_out_eps_1e_5=_bn(small, eps=1e-5).std(0, unbiased=False).mean())
    passed = (var0 == 0.0 and numbers["output_with_eps"] == 0.0 and numbers["output_without_eps_is_nan"]
              and numbers["std_out_eps_0_5"] < 0.05 and numbers["std_out_eps_1e_5"] > 0.9)
    return passed, (f"a constant channel still has variance {var0}, and comes out as 0 with eps, NaN without; on "
                    f"features of std 0.01, eps = 0.5 leaves output std {numbers['std_out_eps_0_5']:.3f} "
                    f"instead of {numbers['std_out_eps_1e_5']:.3f}."), numbers


@_claim("000-m-is-batch-size", "000", "§3.2, training formulas",
        r"其中，$m$是批量大小，$x_i$是批量数据中的第$i$个样本",
        "where m is the batch size and x_i the i-th sample of the batch.",
        "half-true",
        "For a fully connected layer, yes: each feature's statistics are over the m = N examples. For the feature "
        "maps the article is about, BatchNorm2d averages each channel over the batch and every position, m = N * H "
        "* W values; normalizing each position over the N examples alone is not what it computes.",
        "01 §3, 06 §1")
def proof_000_m_is_batch_size():
    x = torch.randn(8, 3, 5, 5, generator=_gen(0), dtype=torch.float64) * 2 + 1
    bn2d = nn.BatchNorm2d(3).double()(x)
    dims = (0, 2, 3)
    over_nhw = (x - x.mean(dims, keepdim=True)) / torch.sqrt(x.var(dims, keepdim=True, unbiased=False) + 1e-5)
    over_n = (x - x.mean(0, keepdim=True)) / torch.sqrt(x.var(0, keepdim=True, unbiased=False) + 1e-5)
    fc = torch.randn(8, 3, generator=_gen(1), dtype=torch.float64)
    bn1d = nn.BatchNorm1d(3).double()(fc)
    over_batch = (fc - fc.mean(0)) / torch.sqrt(fc.var(0, unbiased=False) + 1e-5)
    numbers = dict(values_per_statistic_conv=x.numel() // x.shape[1], conv_vs_over_NHW=_max_abs(bn2d, over_nhw),
                   conv_vs_over_N=_max_abs(bn2d, over_n), fc_vs_over_N=_max_abs(bn1d, over_batch))
    passed = numbers["conv_vs_over_NHW"] < 1e-10 and numbers["conv_vs_over_N"] > 0.1 and numbers["fc_vs_over_N"] < 1e-10
    return passed, (f"BatchNorm2d on (8, 3, 5, 5) equals normalizing over m = {numbers['values_per_statistic_conv']} "
                    f"values per channel (difference {numbers['conv_vs_over_NHW']:.1e}), not over the 8 examples "
                    f"per position ({numbers['conv_vs_over_N']:.2f}); BatchNorm1d does use m = N."), numbers


@_claim("000-test-batch-statistics", "000", "§3.2, test-time formulas",
        r"其中，$\hat{x}_i$是测试过程中的样本",
        "[At test time mu = (1/m) sum_i x_hat_i and sigma^2 = (1/m) sum_i (x_hat_i - mu)^2,] where x_hat_i are "
        "the samples at test time.",
        "false",
        "At test time BN normalizes with the running statistics gathered in training (model.eval()), not with "
        "statistics of the test batch. With the test batch's statistics a prediction depends on what else is in the "
        "batch: fine for a large shuffled batch, worse for small ones, near chance for batches of one class.",
        "03 §5")
def proof_000_test_batch_statistics():
    from .mistakes import predict_with_test_batch_statistics
    from .train import batched_accuracy
    model, data = _blobs_model()
    x, y = data.x_test, data.y_test
    by_class = torch.argsort(y, stable=True)
    seed_way = lambda xb: predict_with_test_batch_statistics(model, xb)  # noqa: E731
    eval_way = lambda xb: model(xb)  # noqa: E731
    numbers = dict(eval_batch_2=batched_accuracy(eval_way, x, y, 2), eval_all=batched_accuracy(eval_way, x, y, len(x)),
                   test_stats_all=batched_accuracy(seed_way, x, y, len(x)),
                   test_stats_batch_2=batched_accuracy(seed_way, x, y, 2),
                   test_stats_one_class_batches=batched_accuracy(seed_way, x[by_class], y[by_class], 32))
    passed = (numbers["eval_batch_2"] == numbers["eval_all"] > 0.95
              and numbers["test_stats_batch_2"] < numbers["eval_all"] - 0.1
              and numbers["test_stats_one_class_batches"] < 0.25 + 0.15)
    return passed, (f"eval mode: {numbers['eval_all']:.3f} however the test set is batched; with the test batch's "
                    f"statistics: {numbers['test_stats_all']:.3f} all at once, {numbers['test_stats_batch_2']:.3f} in "
                    f"pairs, {numbers['test_stats_one_class_batches']:.3f} in batches of one class "
                    "(chance 0.25)."), numbers


@_claim("000-optimizer-updates-statistics", "000", "§4, before the optimizer",
        "在训练过程中，我们需要为BN层添加梯度，以便在训练过程中更新均值和方差",
        "During training we need to add gradients for the BN layer, so that the mean and variance are updated "
        "during training [with optimizer = optim.Adam(net.parameters())].",
        "false",
        "The running mean and variance are buffers, not parameters: no gradient and no optimizer touches "
        "them. Every forward pass in training mode updates them, even under torch.no_grad(); an optimizer "
        "step changes only gamma and beta (and the other weights).",
        "03 §2")
def proof_000_optimizer_updates_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    bn = model[1]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(32, 4, generator=_gen(0)) * 2 + 5
    before = bn.running_mean.clone()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    after_step = bn.running_mean.clone()
    with torch.no_grad():
        model.train()(x)
    in_parameters = any(p is bn.running_mean or p is bn.running_var for p in model.parameters())
    numbers = dict(running_stats_in_parameters=in_parameters,
                   change_by_optimizer_step=_max_abs(after_step, before),
                   change_by_forward_without_gradients=_max_abs(bn.running_mean, after_step))
    passed = (not numbers["running_stats_in_parameters"] and numbers["change_by_optimizer_step"] == 0.0
              and numbers["change_by_forward_without_gradients"] > 0.01)
    return passed, (f"an Adam step moves the running mean by {numbers['change_by_optimizer_step']}; one forward pass "
                    f"under no_grad moves it by {numbers['change_by_forward_without_gradients']:.3f}."), numbers


@_claim("000-listing-not-a-segmenter", "000", "§4, the network listing",
        "self.fc2 = nn.Linear(10, 1)",
        "[The segmentation network ends in] self.fc2 = nn.Linear(10, 1)",
        "false",
        "The listing does not run as published (it uses F, which it never imports), and with F imported it "
        "maps a 3 x 32 x 32 image to one number: a regression or binary classifier, not a segmenter, which "
        "needs a mask of class scores per pixel (lesson 07's encoder-decoder).",
        "07 §2")
def proof_000_listing_not_a_segmenter():
    x = torch.randn(2, 3, 32, 32, generator=_gen(0))
    torch.manual_seed(0)
    as_published = _seed000_net_class(with_functional=False)()
    error = _raises(lambda: as_published(x), NameError)
    torch.manual_seed(0)
    output = _seed000_net_class()()(x)
    numbers = dict(error_as_published=error, output_shape=list(output.shape), mask_shape_needed=[2, "classes", 32, 32])
    passed = error is not None and "'F'" in error and list(output.shape) == [2, 1]
    return passed, (f"as published: {error}; with F imported, a batch of two 32 x 32 images gives an output of "
                    f"shape {tuple(output.shape)}: one number per image."), numbers


@_claim("000-postprocess", "000", "§4, the test loop",
        "outputs = outputs.mul(bn3.running_var.sqrt()).add(bn3.running_mean).add(1).mul(255).clamp(0, 255).byte()",
        "[Normalize with the mean and variance computed in training:] outputs = outputs.mul(bn3.running_var.sqrt())"
        ".add(bn3.running_mean)...",
        "false",
        "bn3's running statistics describe the 128 channels of bn3's own input, and BN already uses them in "
        "eval mode; multiplying the network's output by them mixes unrelated numbers, and broadcasting hides "
        "it: an (N, 1) output becomes an (N, 128) 'image'. (bn3 is also undefined there: it is net.bn3.)",
        "07 §5")
def proof_000_postprocess():
    from .mistakes import seed000_postprocess
    torch.manual_seed(0)
    net = _seed000_net_class()().eval()
    with torch.no_grad():
        outputs = net(torch.randn(4, 3, 32, 32, generator=_gen(0)))
        processed = seed000_postprocess(outputs, net.bn3)
    numbers = dict(output_shape=list(outputs.shape), after_postprocess=list(processed.shape),
                   bn3_channels=net.bn3.num_features)
    passed = list(outputs.shape) == [4, 1] and list(processed.shape) == [4, 128]
    return passed, (f"the network's output {tuple(outputs.shape)} silently becomes {tuple(processed.shape)}: one "
                    "'pixel' per channel of bn3, without an error."), numbers


@_claim("000-still-vanishing", "000", "§6, FAQ 3",
        "BN仍然存在梯度消失问题，因为它在深度网络中可能会导致梯度变得过小或过大",
        "BN still has the vanishing gradient problem, because in deep networks it can make gradients too small "
        "or too large.",
        "half-true",
        "'Too large' is right: at initialization a deep BN-ReLU net without skip connections has gradients "
        "that grow towards the input, by about sqrt(pi/(pi-1)) = 1.21 per layer (Yang et al. 2019). 'Too "
        "small' and 'vanishing' are not: a weight's gradient shrinks like 1/||W|| as the weights grow, which "
        "is a lower effective learning rate, not a vanishing signal.",
        "05 §2-3, 09 §6-7")
def proof_000_still_vanishing():
    from .experiments import BN_RELU_GROWTH, deep_mlp, growth_factor, weight_gradient_alignment
    norms = _gradient_norms("bn", 20, "he")
    x, y = _digit_batch()
    torch.manual_seed(0)
    net = deep_mlp(10, norm="bn", init="he")
    before = weight_gradient_alignment(net, x, y)["3"]["grad_norm"]
    with torch.no_grad():
        net[3].weight.mul_(2.0)
    after = weight_gradient_alignment(net, x, y)["3"]["grad_norm"]
    numbers = dict(first_over_last=norms[0] / norms[-1], growth_per_layer=growth_factor(norms),
                   theory=BN_RELU_GROWTH, grad_ratio_when_W_doubled=after / before)
    passed = (numbers["first_over_last"] > 10 and abs(numbers["growth_per_layer"] - BN_RELU_GROWTH) < 0.05
              and abs(numbers["grad_ratio_when_W_doubled"] - 0.5) < 1e-3)
    return passed, (f"20 BN-ReLU layers at init: the first layer's gradient is {numbers['first_over_last']:.0f}x the "
                    f"last's ({numbers['growth_per_layer']:.3f} per layer, theory {BN_RELU_GROWTH:.3f}): it grows, it "
                    "does not vanish; doubling W multiplies its gradient by "
                    f"{numbers['grad_ratio_when_W_doubled']:.3f}."), numbers


@_claim("000-generalization-via-convergence", "000", "§6, FAQ 2",
        "BN可以帮助提高模型的泛化能力，因为它可以使模型在训练过程中更快地收敛，从而减少过拟合",
        "BN can help improve generalization, because it makes the model converge faster during training and so "
        "reduces overfitting.",
        "half-true",
        "BN did generalize better in lesson 10's full-batch setting, but not because it converged sooner: "
        "both nets fit all 300 training digits, and BN's train-test gap is the same after 50 steps as after "
        "400. Converging faster does not by itself reduce overfitting; training longer past convergence "
        "did not change the gap either way.",
        "10 §2")
def proof_000_generalization_via_convergence():
    bn_400, bn_50 = _regularization("torch_bn", 300), _regularization("torch_bn", 300, 50)
    plain_400 = _regularization(None, 300)
    numbers = dict(gap_bn_step_400=bn_400.gap, gap_bn_step_50=bn_50.gap, gap_plain_step_400=plain_400.gap,
                   train_accuracy_bn=bn_400.train_accuracy, train_accuracy_plain=plain_400.train_accuracy)
    passed = (bn_400.gap < plain_400.gap - 0.02 and plain_400.train_accuracy == 1.0 == bn_400.train_accuracy
              and abs(bn_50.gap - bn_400.gap) < 0.01)
    return passed, (f"full batch, 300 digits: BN's gap {bn_400.gap:.3f} vs plain {plain_400.gap:.3f}, both at train "
                    f"accuracy 1.0; BN's gap after 50 steps {bn_50.gap:.3f}, after 400 {bn_400.gap:.3f}."), numbers


@_claim("000-compute-small", "000", "§6, FAQ 4",
        "BN的计算复杂性相对较小",
        "BN's computational complexity is relatively small.",
        "true",
        "In training BN costs a few operations per value (about 8: mean, variance, normalize, scale and "
        "shift) against 2 C_in k^2 per value for the convolution before it: about 2 % of the article's own "
        "network's arithmetic. At inference it folds into the convolution and costs nothing (06 §5). It "
        "reads and writes every activation, so its share of run time is larger than its share of arithmetic.",
        "06 §5")
def proof_000_compute_small():
    from .folding import count_batchnorms, fold_batchnorm
    torch.manual_seed(0)
    share = _bn_share(_seed000_net_class()(), torch.zeros(1, 3, 32, 32))
    model = copy.deepcopy(_cnn("bn").model).eval()
    folded = fold_batchnorm(model)
    x = _digits(images=True).x_test
    with torch.no_grad():
        difference = _max_abs(folded(x), model(x))
    numbers = dict(bn_share_of_flops=share, folded_vs_original=difference, bn_layers_left=count_batchnorms(folded))
    passed = share < 0.05 and difference < 1e-4 and numbers["bn_layers_left"] == 0
    return passed, (f"BN is {100 * share:.1f} % of the seed's network's operations in training; folded into the "
                    "convolutions it is gone at inference, with the same logits (difference "
                    f"{difference:.1e})."), numbers


@_claim("000-interpretability", "000", "§6, FAQ 5",
        "BN可能会降低模型的可解释性",
        "BN may reduce the model's interpretability.",
        "untestable as stated",
        "The article gives no measure of interpretability, so the sentence cannot be tested. What can be "
        "checked: at inference BN is a fixed affine map per channel that folds into the layer before it, so "
        "a trained BN net is exactly a net without BN, with no extra nonlinearity or parameter to explain.",
        "06 §5")
def proof_000_interpretability():
    from .folding import count_batchnorms, fold_batchnorm
    model = copy.deepcopy(_cnn("bn").model).double().eval()
    folded = fold_batchnorm(model)
    x = _digits(images=True).x_test.double()
    with torch.no_grad():
        difference = _max_abs(folded(x), model(x))
    numbers = dict(folded_vs_original_float64=difference, bn_layers_before=count_batchnorms(model),
                   bn_layers_after=count_batchnorms(folded))
    passed = difference < 1e-10 and numbers["bn_layers_after"] == 0 < numbers["bn_layers_before"]
    return passed, (f"the trained BN net and the same net with BN folded into its convolutions agree to "
                    f"{difference:.1e} (float64): at inference there is nothing left of BN to interpret."), numbers


# ============================================================================= seed 001: classification CNN
@_claim("001-secret-ingredient", "001", "§1, introduction",
        "它能够提高模型的性能，同时减少训练时间",
        "[The BN layer is the 'secret ingredient' of CNNs:] it improves the model's performance and reduces "
        "training time.",
        "half-true",
        "BN does speed training up: on lesson 06's conv net at lr 0.03 it is ahead after 100 steps. But "
        "against a fair baseline (He init) the advantage is modest, a few points that shrink by the end of "
        "the run; much of what BN seems to add against torch's default init is a better-scaled start.",
        "06 §2")
def proof_001_secret_ingredient():
    bn, plain = _cnn("bn"), _cnn("plain_he")
    numbers = dict(at_step_100_bn=bn.accuracy_at(100), at_step_100_plain_he=plain.accuracy_at(100),
                   final_bn=bn.test_accuracy[-1], final_plain_he=plain.test_accuracy[-1])
    passed = (numbers["at_step_100_bn"] > numbers["at_step_100_plain_he"] + 0.03
              and abs(numbers["final_bn"] - numbers["final_plain_he"]) < 0.05)
    return passed, (f"lr 0.03: after 100 steps BN {numbers['at_step_100_bn']:.3f} vs He-init plain "
                    f"{numbers['at_step_100_plain_he']:.3f}; after 300 steps {numbers['final_bn']:.3f} vs "
                    f"{numbers['final_plain_he']:.3f}."), numbers


def _bimodal_and_gaussian(n: int = 4096):
    """Two (n, 1) samples with the same mean 0 and variance 9.25: +-3 plus N(0, 0.5^2), and a Gaussian."""
    gen = _gen(0)
    signs = torch.randint(0, 2, (n, 1), generator=gen, dtype=torch.float64) * 2 - 1
    bimodal = 3 * signs + 0.5 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    gaussian = math.sqrt(9.25) * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    return bimodal, gaussian


@_claim("001-learns-distribution", "001", "§2.1, what BN is",
        "BN 层能够在训练过程中自动学习输入数据的分布",
        "The BN layer automatically learns the distribution of the input data during training.",
        "false",
        "BN learns no distribution: it computes each channel's batch mean and variance, two numbers, and "
        "keeps running averages of them (buffers, not learned by gradients); its learned parameters are "
        "gamma and beta. It shifts and rescales, and leaves the shape alone: a bimodal input with the same "
        "mean and variance as a Gaussian gets the same statistics and stays bimodal.",
        "01 §1, 03 §1")
def proof_001_learns_distribution():
    bimodal, gaussian = _bimodal_and_gaussian()
    layers = {}
    for name, x in (("bimodal", bimodal), ("gaussian", gaussian)):
        bn = nn.BatchNorm1d(1, momentum=None).double()
        for chunk in x.split(256):
            bn(chunk)
        layers[name] = (bn, bn.eval()(x).detach())
    near_zero = {name: float((out.abs() < 0.5).double().mean()) for name, (_, out) in layers.items()}
    numbers = dict(running_mean={k: bn.running_mean for k, (bn, _) in layers.items()},
                   running_var={k: bn.running_var for k, (bn, _) in layers.items()},
                   fraction_within_0_5_after_bn=near_zero)
    same_stats = (abs(layers["bimodal"][0].running_var.item() - layers["gaussian"][0].running_var.item()) < 0.5
                  and abs(layers["bimodal"][0].running_mean.item() - layers["gaussian"][0].running_mean.item()) < 0.2)
    passed = same_stats and near_zero["bimodal"] < 0.01 and near_zero["gaussian"] > 0.3
    return passed, ("a bimodal input and a Gaussian one get the same running statistics (var "
                    f"{layers['bimodal'][0].running_var.item():.2f} and "
                    f"{layers['gaussian'][0].running_var.item():.2f}); "
                    f"after BN {100 * near_zero['bimodal']:.1f} % of the bimodal values lie within 0.5 of 0, against "
                    f"{100 * near_zero['gaussian']:.0f} % of the Gaussian ones: the shape is kept."), numbers


@_claim("001-stores-std", "001", "§3.1, BN's components",
        "批量标准差（Batch Variance）：用于存储每个特征映射的标准差",
        "Batch standard deviation (Batch Variance): stores each feature map's standard deviation.",
        "half-true",
        "BN does store per-channel statistics for inference, but the variance, not the standard deviation "
        "(torch's running_var, a running average of the unbiased batch variances; Keras's moving_variance); "
        "the article's own English name for it, 'Batch Variance', is the right one.",
        "03 §2-3")
def proof_001_stores_std():
    bn = nn.BatchNorm2d(2).double()
    gen = _gen(0)
    for _ in range(300):
        bn(torch.randn(32, 2, 4, 4, generator=gen, dtype=torch.float64) * 3 + 1)
    once = nn.BatchNorm1d(1, momentum=None).double()
    batch = torch.tensor([[0.0], [1.0], [2.0], [5.0]], dtype=torch.float64)
    once(batch)
    numbers = dict(buffers=[n for n, _ in bn.named_buffers()], running_var=bn.running_var, data_std=3.0,
                   one_batch_running_var=once.running_var, unbiased_var=batch.var(),
                   biased_var=batch.var(unbiased=False))
    passed = (numbers["buffers"] == ["running_mean", "running_var", "num_batches_tracked"]
              and _max_abs(bn.running_var, torch.full((2,), 9.0, dtype=torch.float64)) < 0.6
              and abs(once.running_var.item() - batch.var().item()) < 1e-12)
    return passed, (f"on data of std 3 the stored statistic is {bn.running_var.mean():.2f}: the variance; after one "
                    f"batch it is {once.running_var.item():.3f}, the unbiased variance ({batch.var().item():.3f}, "
                    f"not {batch.var(unbiased=False).item():.3f})."), numbers


@_claim("001-gamma-beta", "001", "§3.1, BN's components",
        "gamma（γ）：用于调整每个特征映射的规范化后的强度",
        "gamma: adjusts the strength of each feature map after normalization [and beta its bias].",
        "true",
        "gamma_c scales and beta_c shifts channel c after normalization: the output has standard deviation "
        "|gamma_c| and mean beta_c. Both are learned parameters, one per channel, so BN can even undo its "
        "normalization (gamma = sqrt(sigma^2 + eps), beta = mu).",
        "01 §4")
def proof_001_gamma_beta():
    bn = nn.BatchNorm2d(3).double()
    gamma = torch.tensor([0.25, 2.0, 5.0], dtype=torch.float64)
    beta = torch.tensor([-1.0, 0.5, 4.0], dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    x = torch.randn(32, 3, 6, 6, generator=_gen(0), dtype=torch.float64) * 4 - 2
    y = bn(x)
    y.sum().backward()
    dims = (0, 2, 3)
    numbers = dict(gamma=gamma, output_std=y.std(dims, unbiased=False), beta=beta, output_mean=y.mean(dims),
                   learned=[bn.weight.requires_grad and bn.weight.grad is not None,
                            bn.bias.requires_grad and bn.bias.grad is not None])
    passed = (_max_abs(y.std(dims, unbiased=False), gamma) < 1e-4 and _max_abs(y.mean(dims), beta) < 1e-10
              and all(numbers["learned"]))
    return passed, ("with gamma = (0.25, 2, 5) and beta = (-1, 0.5, 4) the channels come out with std "
                    + ", ".join(f"{s:.3f}" for s in y.std(dims, unbiased=False)) + " and mean "
                    + ", ".join(f"{m:.3f}" for m in y.mean(dims)) + "; both get gradients."), numbers


@_claim("001-no-epsilon", "001", "§3.2-3.3, the formulas",
        r"z = \frac{x - \mu}{\sigma}",
        "z = (x - mu) / sigma",
        "false",
        "Without eps a channel that is constant over the batch (a dead ReLU, a padded border) has sigma = 0 "
        "and gives 0/0 = NaN, which the next layer spreads to every unit. BN divides by sqrt(sigma^2 + eps).",
        "01 §5, §7")
def proof_001_no_epsilon():
    from .mistakes import divide_by_sigma
    x = _dead_channel_batch()
    weight = torch.randn(3, 5, generator=_gen(1), dtype=torch.float64)
    seed_way = torch.from_numpy(divide_by_sigma(x.numpy())) @ weight
    real_way = _bn(x) @ weight
    numbers = dict(nan_fraction_next_layer_seed=float(torch.isnan(seed_way).double().mean()),
                   nan_fraction_next_layer_bn=float(torch.isnan(real_way).double().mean()))
    passed = numbers["nan_fraction_next_layer_seed"] == 1.0 and numbers["nan_fraction_next_layer_bn"] == 0.0
    return passed, ("one dead channel: after the next linear layer "
                    f"{100 * numbers['nan_fraction_next_layer_seed']:.0f} "
                    "% of the values are NaN with the article's formula, none with sqrt(sigma^2 + eps)."), numbers


@_claim("001-conv-bias", "001", "§4, the network listing",
        "self.conv1 = nn.Conv2d(3, 32, 3, padding=1)",
        "self.conv1 = nn.Conv2d(3, 32, 3, padding=1)  [followed by self.bn1 = nn.BatchNorm2d(32)]",
        "half-true",
        "The listing trains, but the convolutions' biases (torch's default) do nothing: BN subtracts each "
        "channel's batch mean, which a per-channel bias only shifts, so the output is the same for any bias "
        "and the bias's gradient is zero. beta is the bias that counts; leave the conv's out (bias=False).",
        "06 §3")
def proof_001_conv_bias():
    from .models import conv_net
    torch.manual_seed(0)
    net = conv_net(norm="bn", conv_bias=True).double()
    x, y = _digits(images=True).x_train[:32].double(), _digits(images=True).y_train[:32]
    before = net(x)
    with torch.no_grad():
        for block in (net[0], net[1]):
            block[0].bias.normal_(0, 5.0, generator=_gen(0))
    after = net(x)
    nn.functional.cross_entropy(after, y).backward()
    conv = net[1][0]
    numbers = dict(output_change=_max_abs(after, before), bias_grad_norm=conv.bias.grad.norm(),
                   weight_grad_norm=conv.weight.grad.norm())
    passed = numbers["output_change"] < 1e-9 and numbers["bias_grad_norm"] < 1e-9 * numbers["weight_grad_norm"]
    return passed, (f"random biases of std 5 before each BN change the output by {numbers['output_change']:.1e}; the "
                    f"bias's gradient is {numbers['bias_grad_norm']:.1e} against the weight's "
                    f"{numbers['weight_grad_norm']:.1e}."), numbers


@_claim("001-test-without-eval", "001", "§4, the test loop",
        "with torch.no_grad():\n    for inputs, labels in test_loader:\n        outputs = net(inputs)",
        "with torch.no_grad(): for inputs, labels in test_loader: outputs = net(inputs)  [never net.eval()]",
        "false",
        "torch.no_grad() stops gradients, not training mode: every BN layer still normalizes with the test "
        "batch's statistics, so the accuracy depends on how the test set is batched, and it overwrites the "
        "running statistics with test data. The loop needs net.eval() first.",
        "06 §4")
def proof_001_test_without_eval():
    from .mistakes import evaluate_in_train_mode
    from .train import accuracy
    trained = copy.deepcopy(_cnn("bn").model).cpu()
    data = _digits(images=True)
    correct = {b: accuracy(trained, data.x_test, data.y_test, batch_size=b) for b in (1, 540)}
    copied = copy.deepcopy(trained)
    running_before = copied[1][1].running_mean.clone()
    seed_way = {b: evaluate_in_train_mode(copied, data.x_test, data.y_test, batch_size=b) for b in (1, 540)}
    numbers = dict(eval_mode=correct, seed_loop=seed_way,
                   running_mean_moved=_max_abs(copied[1][1].running_mean, running_before))
    passed = (correct[1] == correct[540] and seed_way[1] != seed_way[540] and seed_way[1] < correct[1]
              and numbers["running_mean_moved"] > 1e-3)
    return passed, (f"eval mode: {correct[1]:.3f} at test batch 1 and 540; the article's loop: {seed_way[1]:.3f} and "
                    f"{seed_way[540]:.3f}, and it moved the running means by up to "
                    f"{numbers['running_mean_moved']:.3f}."), numbers


@_claim("001-causes-vanishing", "001", "§5, challenge 1 (and the FAQ)",
        "BN 层在某些情况下可能会导致梯度消失的问题，特别是在深层网络中",
        "The BN layer may cause vanishing gradients in some cases, especially in deep networks.",
        "false",
        "It is the other way round. In a deep net without BN (torch's default init) the gradient vanishes "
        "towards the input; with BN it does not vanish but grows, by about sqrt(pi/(pi-1)) = 1.21 per layer "
        "for ReLU at initialization (Yang et al. 2019), whatever the weights' scale.",
        "05 §1-2")
def proof_001_causes_vanishing():
    from .experiments import BN_RELU_GROWTH, growth_factor
    plain, bn = _gradient_norms(None, 30), _gradient_norms("bn", 30)
    numbers = dict(first_over_last_plain=plain[0] / plain[-1], first_over_last_bn=bn[0] / bn[-1],
                   growth_per_layer_bn=growth_factor(bn), theory=BN_RELU_GROWTH)
    passed = (numbers["first_over_last_plain"] < 1e-6 and numbers["first_over_last_bn"] > 10
              and abs(numbers["growth_per_layer_bn"] - BN_RELU_GROWTH) < 0.05)
    return passed, ("30 ReLU layers, torch's default init: first/last layer gradient "
                    f"{numbers['first_over_last_plain']:.1e} "
                    f"without BN (vanishing), {numbers['first_over_last_bn']:.0f} with BN (growing "
                    f"{numbers['growth_per_layer_bn']:.3f}x per layer)."), numbers


@_claim("001-overfitting-under-shift", "001", "§5, challenge 2",
        "BN 层可能会导致模型在某些情况下过度拟合，特别是在训练数据和测试数据之间存在较大的差异时",
        "The BN layer may make the model overfit in some cases, especially when training and test data differ a lot.",
        "half-true",
        "A BN net does suffer when the test data come from another distribution: its running statistics "
        "describe the training data. But that is not overfitting: the weights are fine, and recomputing "
        "only the BN statistics on the new data (AdaBN, Li et al. 2016) gives the accuracy back.",
        "10 §4")
def proof_001_overfitting_under_shift():
    numbers = dict(_domain_shift(), shift=SHIFT)
    passed = numbers["shifted"] < numbers["clean"] - 0.2 and numbers["recomputed"] > numbers["clean"] - 0.03
    return passed, (f"test accuracy {numbers['clean']:.3f} on the digits, {numbers['shifted']:.3f} at half the "
                    f"contrast and brighter, {numbers['recomputed']:.3f} there after recomputing only "
                    "BN's statistics."), numbers


@_claim("001-inference-cost", "001", "§5, challenge 3 (and the FAQ)",
        "BN 层可能会增加模型的计算复杂度，特别是在大规模的图像分类任务中",
        "The BN layer may increase the model's computational complexity, especially in large-scale image "
        "classification.",
        "half-true",
        "In training BN adds a few percent of the arithmetic (about 3 % in the article's network). At "
        "inference it costs nothing: in eval mode it is a fixed affine map per channel that folds into the "
        "convolution before it, giving the same outputs with no BN layer left.",
        "06 §5")
def proof_001_inference_cost():
    from .folding import count_batchnorms, fold_batchnorm
    seed_net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(64 * 7 * 7, 10))
    share = _bn_share(seed_net, torch.zeros(1, 3, 28, 28))
    model = copy.deepcopy(_cnn("bn").model).eval()
    folded = fold_batchnorm(model)
    x = _digits(images=True).x_test
    with torch.no_grad():
        difference = _max_abs(folded(x), model(x))
    numbers = dict(bn_share_of_training_flops=share, folded_vs_original=difference,
                   bn_layers_after_folding=count_batchnorms(folded))
    passed = 0 < share < 0.05 and difference < 1e-4 and numbers["bn_layers_after_folding"] == 0
    return passed, (f"BN is {100 * share:.1f} % of the article's network's operations in training; folded for "
                    f"inference it is gone (logits within {difference:.1e})."), numbers


@_claim("001-l2-and-bn", "001", "§2.2, BN and other regularizers",
        "BN 层主要关注输入数据的分布，而 L1 和 L2 正则化则主要关注模型的权重",
        "The BN layer is mainly about the input data's distribution, whereas L1 and L2 regularization are "
        "about the model's weights.",
        "half-true",
        "The contrast is right as far as it goes, but the two meet at the weights: BN makes the loss "
        "independent of the scale of the weights before it, so an L2 penalty on those weights constrains "
        "nothing about the function the net computes. It only shrinks ||W||, which raises the effective "
        "learning rate eta / ||W||^2 (van Laarhoven 2017).",
        "09 §6, 10 §3")
def proof_001_l2_and_bn():
    from .experiments import EXACT_EPS, scale_invariant_run
    from .models import mlp
    torch.manual_seed(0)
    net = mlp(64, (100, 100), 10, norm="torch_bn").double().train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.eps = EXACT_EPS
    x = _digits().x_train[:128].double()
    before = net(x)
    first = net[0]
    penalty_before = first.weight.square().sum().item()
    with torch.no_grad():
        first.weight.mul_(10.0)
    after = net(x)
    decay = scale_invariant_run(weight_decay=0.01, steps=100, data=_digits())
    none = scale_invariant_run(steps=100, data=_digits())
    numbers = dict(output_change_W_times_10=_max_abs(after, before),
                   l2_penalty_ratio=first.weight.square().sum().item() / penalty_before,
                   weight_norm_start=decay.weight_norm[0], weight_norm_end_decay=decay.weight_norm[-1],
                   weight_norm_end_no_decay=none.weight_norm[-1])
    passed = (numbers["output_change_W_times_10"] < 1e-10 and abs(numbers["l2_penalty_ratio"] - 100) < 1e-6
              and np.all(decay.weight_norm[-1] < decay.weight_norm[0])
              and np.all(none.weight_norm[-1] >= none.weight_norm[0]))
    return passed, (f"10x the weights before a BN: the L2 penalty grows {numbers['l2_penalty_ratio']:.0f}x, the output "
                    f"changes by {numbers['output_change_W_times_10']:.1e}; weight decay 0.01 shrinks those weights' "
                    "norms over 100 steps (they grow without it), which only speeds up their effective "
                    "learning rate."), numbers


# ============================================================================= seed 002: medical imaging
@_claim("002-preprocessing", "002", "§1 and §2.1, what BN is",
        "BN层是一种预处理技术",
        "The BN layer is a preprocessing technique.",
        "false",
        "Preprocessing is a fixed transformation of the input data before training. BN sits inside the "
        "network and normalizes the hidden layers' inputs with statistics that change whenever the weights "
        "below change, it has learned parameters, and it computes differently in training and eval mode. "
        "Standardizing the input once does not keep the hidden layers standardized.",
        "03 §1, 10 §5")
def proof_002_preprocessing():
    from .experiments import nonlinearity_inputs
    from .models import mlp
    x, y = _digit_batch()
    standardized = (x - x.mean(0)) / (x.std(0) + 1e-3)
    stds = {}
    for key, norm in (("plain", None), ("bn", "torch_bn")):
        torch.manual_seed(0)
        net = mlp(64, (100, 100, 100), 10, norm=norm)
        stds[key] = nonlinearity_inputs(net, standardized)["hidden3"].std(0)
    torch.manual_seed(0)
    net = mlp(64, (100, 100), 10, norm="torch_bn")
    second_bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)][1]
    seen = []
    hook = second_bn.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().mean(0)))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        loss = nn.functional.cross_entropy(net(standardized), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    hook.remove()
    with torch.no_grad():
        mode_difference = _max_abs(net.train()(standardized), net.eval()(standardized))
    numbers = dict(hidden3_unit_std_plain=[stds["plain"].min(), stds["plain"].max()],
                   hidden3_unit_std_bn=[stds["bn"].min(), stds["bn"].max()],
                   bn2_input_mean_moved_by_one_step=_max_abs(seen[1], seen[0]), train_vs_eval_output=mode_difference)
    passed = (stds["plain"].max() < 0.5 and _max_abs(stds["bn"], torch.ones(100)) < 0.01
              and numbers["bn2_input_mean_moved_by_one_step"] > 1e-3 and mode_difference > 1e-3)
    return passed, ("with standardized inputs and no BN, the third layer's units have std "
                    f"{stds['plain'].min():.2f} to {stds['plain'].max():.2f}; BN makes them 1. One SGD step moves "
                    f"BN2's input means by up to {numbers['bn2_input_mean_moved_by_one_step']:.3f}, and train and "
                    f"eval mode differ by {mode_difference:.2f}: not a fixed preprocessing."), numbers


@_claim("002-mean-0-variance-1", "002", "§2.1, what BN does",
        "使其具有均值为0、方差为1的分布",
        "[BN normalizes the features in each batch] so that they have a distribution with mean 0 and variance 1.",
        "half-true",
        "x_hat does have mean 0 and variance 1 per channel over the batch (up to eps). But BN's output is "
        "y = gamma * x_hat + beta, with mean beta and standard deviation |gamma|, learned; and only two "
        "moments are set, the shape of the distribution is left as it was (a bimodal feature stays bimodal).",
        "01 §1, §4")
def proof_002_mean_0_variance_1():
    from .experiments import nonlinearity_inputs
    from .layers import is_batchnorm
    model = _fig1("bn").model.cpu()
    last = [m for m in model.modules() if is_batchnorm(m)][-1]
    gamma, beta = last.weight.detach(), last.bias.detach()
    u = nonlinearity_inputs(model, _digits().x_train[:500])["hidden3"]       # BN3's output, in training mode
    x_hat = (u - beta) / gamma
    bimodal, _ = _bimodal_and_gaussian()
    x_hat_std = x_hat.std(0, unbiased=False)
    numbers = dict(x_hat_mean=x_hat.mean(0).abs().max(), x_hat_std_range=[x_hat_std.min(), x_hat_std.max()],
                   output_std_vs_gamma=_max_abs(u.std(0, unbiased=False), gamma.abs()),
                   gamma_range=[gamma.min(), gamma.max()], beta_range=[beta.min(), beta.max()],
                   bimodal_after_bn_within_0_5=float((_bn(bimodal).abs() < 0.5).double().mean()))
    passed = (numbers["x_hat_mean"] < 1e-4 and _max_abs(x_hat_std, torch.ones_like(x_hat_std)) < 1e-3
              and numbers["output_std_vs_gamma"] < 1e-3 and float(gamma.max() - gamma.min()) > 0.1
              and numbers["bimodal_after_bn_within_0_5"] < 0.01)
    return passed, (f"after {FIG1_STEPS} steps of lesson 04's net, x_hat has mean 0 and std 1, but the layer's output "
                    f"has std |gamma|, which ranges over {float(gamma.min()):.2f}..{float(gamma.max()):.2f}, and mean "
                    "beta; a bimodal input stays bimodal."), numbers


@_claim("002-batch-range", "002", "§2.1 and §3.3, BN's components",
        "批量范围（Batch Range）：在一个批量中，所有样本的特征值的最大值和最小值之间的差异",
        "Batch range: the difference between the largest and the smallest feature value of all samples in a batch.",
        "false",
        "Standard BN computes no range: its statistics are the batch mean and variance, and it stores only "
        "their running averages. The range is no substitute scale on its own either: for n draws of the "
        "same distribution it grows with n (d2(n) sigma for Gaussians). Range BN (Banner et al. 2018) uses "
        "it only after dividing by such a correction.",
        "08 §3")
def proof_002_batch_range():
    from .layers import expected_gaussian_range
    measured = {}
    for n in (2, 8, 128):
        sample = torch.randn(20000, n, generator=_gen(n))
        measured[n] = (sample.amax(1) - sample.amin(1)).mean().item()
    numbers = dict(bn_state=list(nn.BatchNorm2d(4).state_dict()), mean_range_of_n_normals=measured,
                   d2=[expected_gaussian_range(n) for n in (2, 8, 128)])
    passed = (not any("range" in k for k in numbers["bn_state"]) and measured[128] > 4 * measured[2]
              and all(abs(measured[n] - expected_gaussian_range(n)) < 0.03 for n in measured))
    return passed, ("torch's BN keeps " + ", ".join(numbers["bn_state"]) + ": no range. The mean range of n standard "
                    "normals is " + ", ".join(f"{v:.2f} (n = {n})" for n, v in measured.items())
                    + ": it measures the batch size as much as the spread."), numbers


@_claim("002-no-scale-and-shift", "002", "§3.2, the operation steps",
        "将归一化后的特征传递给下一个层",
        "[1. compute the batch mean and variance; 2. normalize with them;] 3. pass the normalized features to "
        "the next layer.",
        "half-true",
        "The normalization the article gives, x_hat = (x - mu) / sqrt(sigma^2 + eps), is right. But BN has "
        "a third step it leaves out: y = gamma * x_hat + beta, learned per channel. Without it a sigmoid "
        "after BN only ever sees inputs of std 1, where it is nearly linear; the scale and shift let the net "
        "use the nonlinearity, or undo the normalization (Ioffe & Szegedy, section 3).",
        "01 §4")
def proof_002_no_scale_and_shift():
    x = torch.randn(4096, 3, generator=_gen(0), dtype=torch.float64) * 3 + 2
    mu, var = x.mean(0), x.var(0, unbiased=False)
    x_hat = (x - mu) / torch.sqrt(var + 1e-5)

    def linearity(gamma):
        u = gamma * x_hat[:, 0]
        return float(torch.corrcoef(torch.stack([u, torch.sigmoid(u)]))[0, 1])

    numbers = dict(formula_vs_torch=_max_abs(x_hat, _bn(x)), sigmoid_linearity_gamma_1=linearity(1.0),
                   sigmoid_linearity_gamma_4=linearity(4.0))
    passed = (numbers["formula_vs_torch"] < 1e-10
              and numbers["sigmoid_linearity_gamma_1"] > 0.98 > 0.93 > numbers["sigmoid_linearity_gamma_4"])
    return passed, (f"the article's x_hat equals torch's to {numbers['formula_vs_torch']:.1e}; a sigmoid of it is "
                    f"{numbers['sigmoid_linearity_gamma_1']:.3f} correlated with its input (nearly linear), of 4 x_hat "
                    f"only {numbers['sigmoid_linearity_gamma_4']:.3f}."), numbers


@_claim("002-small-batch-overfitting", "002", "§5, challenge 1",
        "如果批量大小过小，BN层可能无法有效地减少过拟合问题",
        "If the batch size is too small, the BN layer may fail to reduce overfitting effectively.",
        "half-true",
        "Too small a batch does hurt BN: at batch 2 lesson 08's net with BN in every layer fails, while "
        "GroupNorm at batch 2 and BN at batch 32 work. But it fails to fit, not to generalize: its accuracy "
        "on its own training scans is as low as on the test scans, because the statistics of two examples "
        "are not the running statistics it is evaluated with.",
        "08 §2, 10 §5")
def proof_002_small_batch_overfitting():
    from .train import accuracy
    bn2, gn2, bn32 = _small_batch("bn", 2, 1), _small_batch("gn", 2, 1), _small_batch("bn", 32, 3)
    data = _scans()
    numbers = dict(bn_batch_2_test=bn2.test_accuracy[-1],
                   bn_batch_2_train=accuracy(bn2.model, data.x_train, data.y_train),
                   gn_batch_2_test=gn2.test_accuracy[-1], bn_batch_32_test=bn32.test_accuracy[-1])
    passed = (numbers["bn_batch_2_test"] < 0.5 and numbers["bn_batch_2_train"] < 0.5
              and abs(numbers["bn_batch_2_train"] - numbers["bn_batch_2_test"]) < 0.1
              and numbers["gn_batch_2_test"] > max(0.6, numbers["bn_batch_2_test"] + 0.3)
              and numbers["bn_batch_32_test"] > 0.85)
    return passed, (f"BN at batch 2 (one epoch): test {numbers['bn_batch_2_test']:.3f}, train "
                    f"{numbers['bn_batch_2_train']:.3f} (it does not fit); GroupNorm at batch 2: "
                    f"{numbers['gn_batch_2_test']:.3f}; BN at batch 32: {numbers['bn_batch_32_test']:.3f}."), numbers


@_claim("002-dynamic-statistics", "002", "§5, challenge 2",
        "为了减少计算开销，可以考虑使用动态批量均值和方差",
        "To reduce the computational overhead, one can consider using dynamic batch means and variances.",
        "untestable as stated",
        "The article does not say what 'dynamic' batch statistics are, and BN's batch statistics are already "
        "recomputed for every batch, so there is nothing to test. What can be measured: the statistics cost "
        "one pass over the activations, about 2 % of the article's own model's arithmetic, so there is little "
        "overhead to remove.",
        "06 §5")
def proof_002_dynamic_statistics():
    keras_model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.BatchNorm2d(32), nn.Conv2d(32, 64, 3), nn.ReLU(),
                                nn.BatchNorm2d(64), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12 * 12 * 64, 10))
    share = _bn_share(keras_model, torch.zeros(1, 1, 28, 28))
    bn = nn.BatchNorm2d(4)
    first, second = (torch.randn(8, 4, 3, 3, generator=_gen(i)) for i in (0, 1))
    numbers = dict(bn_share_of_flops=share, batch_means_differ=_max_abs(first.mean((0, 2, 3)), second.mean((0, 2, 3))),
                   outputs_use_each_batch=_max_abs(bn(first).mean((0, 2, 3)), torch.zeros(4)) < 1e-6
                   and _max_abs(bn(second).mean((0, 2, 3)), torch.zeros(4)) < 1e-6)
    passed = share < 0.05 and numbers["outputs_use_each_batch"] and numbers["batch_means_differ"] > 0.01
    return passed, (f"BN's statistics are recomputed for every batch already, and BN is {100 * share:.1f} % of the "
                    "operations of the article's model (28 x 28 input)."), numbers


@_claim("002-reduces-vanishing", "002", "§6, FAQ 2",
        "BN层可以减少梯度消失的问题，因为它可以使得输入的特征具有均值为0、方差为1的分布",
        "The BN layer reduces the vanishing gradient problem, because it gives the input features a "
        "distribution with mean 0 and variance 1.",
        "half-true",
        "In a deep net with torch's default initialization, yes: without BN the gradient vanishes towards "
        "the input, with BN it does not. But mean 0 and variance 1 do not make the gradient well behaved: "
        "a deep BN-ReLU net's gradient explodes towards the input instead, about 1.21x per layer.",
        "05 §1-2")
def proof_002_reduces_vanishing():
    plain, bn = _gradient_norms(None, 30), _gradient_norms("bn", 30)
    numbers = dict(first_over_last_plain=plain[0] / plain[-1], first_over_last_bn=bn[0] / bn[-1])
    passed = numbers["first_over_last_plain"] < 1e-6 and numbers["first_over_last_bn"] > 10
    return passed, (f"30 ReLU layers at init: first/last gradient {numbers['first_over_last_plain']:.1e} without BN, "
                    f"{numbers['first_over_last_bn']:.0f} with BN: no longer vanishing, exploding."), numbers


def _seed002_layer(fix_reduce_variance: bool):
    """Seed 002's BNLayer exec'd as published against `tf_stand_in` (with tf.reduce_variance added as
    tf.math.reduce_variance when fix_reduce_variance, to get past its first error)."""
    tf = tf_stand_in()
    if fix_reduce_variance:
        tf.reduce_variance = tf.math.reduce_variance
    return _run_listing(SEED002_BNLAYER, "BNLayer", {"tf": tf})


@_claim("002-tf-reduce-variance", "002", "§4, the BNLayer listing",
        "var = tf.reduce_variance(inputs, axis=self.axis, keepdims=True)",
        "var = tf.reduce_variance(inputs, axis=self.axis, keepdims=True)",
        "false",
        "TensorFlow has no tf.reduce_variance (reduce_mean is also exported as tf.reduce_mean, reduce_variance "
        "is not): the function is tf.math.reduce_variance(input_tensor, axis=None, keepdims=False, name=None). "
        "The listing fails with an AttributeError at its first call.",
        "06 §1")
def proof_002_tf_reduce_variance():
    names = _tf_names(SEED002_BNLAYER)
    missing = [n for n in names if n not in TF_API]
    layer = _seed002_layer(fix_reduce_variance=False)()
    error = _raises(lambda: layer(torch.randn(2, 16, 16, 16, generator=_gen(0))), AttributeError)
    tensorflow = _real_tensorflow()
    numbers = dict(tf_names_used=names, not_in_tensorflow=missing, real_name=[TF_NOT_IN_API.get(n) for n in missing],
                   error_at_first_call=error,
                   checked_with=f"tensorflow {tensorflow.__version__}" if tensorflow else "TF_API (TensorFlow not "
                                                                                          "installed)")
    if tensorflow is not None:
        numbers["tensorflow_has_tf_reduce_variance"] = hasattr(tensorflow, "reduce_variance")
        numbers["tensorflow_has_tf_math_reduce_variance"] = hasattr(tensorflow.math, "reduce_variance")
    passed = (missing == ["tf.reduce_variance"] and error is not None and "reduce_variance" in error
              and not numbers.get("tensorflow_has_tf_reduce_variance", False))
    return passed, (f"of the listing's TensorFlow names, {', '.join(missing)} does not exist (the real one is "
                    f"{TF_NOT_IN_API['tf.reduce_variance']}); run against the API it fails: {error}."), numbers


@_claim("002-wrong-axis", "002", "§4, the BNLayer listing",
        "mean = tf.reduce_mean(inputs, axis=self.axis, keepdims=True)",
        "mean = tf.reduce_mean(inputs, axis=self.axis, keepdims=True)  [with axis=-1, channels last]",
        "false",
        "In Keras's channels-last layout axis=-1 is the channel axis, and in Keras's own BatchNormalization "
        "it is the axis that is kept: statistics per channel over all other axes. Reducing over it "
        "standardizes each pixel over its own channels, with no batch statistics at all: an image's output "
        "does not depend on the rest of the batch.",
        "06 §1")
def proof_002_wrong_axis():
    x = torch.randn(4, 16, 16, 16, generator=_gen(0)) * 3 + 1          # (N, H, W, C) with H == C
    layer_class = _seed002_layer(fix_reduce_variance=True)
    out = layer_class()(x)
    alone = layer_class()(x[:1])
    real = _bn(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    numbers = dict(pixel_mean_over_channels=out.mean(-1).abs().max(), alone_vs_in_batch=_max_abs(alone, out[:1]),
                   channel_mean_over_batch=out.mean((0, 1, 2)).abs().max(), real_bn_vs_listing=_max_abs(real, out))
    passed = (numbers["pixel_mean_over_channels"] < 1e-5 and numbers["alone_vs_in_batch"] < 1e-5
              and numbers["channel_mean_over_batch"] > 1e-3 and numbers["real_bn_vs_listing"] > 0.1)
    return passed, ("the listing (run against the stand-in) gives every pixel mean 0 over its channels, and an image "
                    f"alone the same output as in the batch (difference {numbers['alone_vs_in_batch']:.1e}): "
                    "not BN."), numbers


@_claim("002-gamma-and-beta", "002", "§4, the BNLayer listing",
        "self.gamma = self.add_weight(shape=(input_shape[-self.axis],), initializer='ones', trainable=self.training)",
        "self.gamma = self.add_weight(shape=(input_shape[-self.axis],), initializer='ones', trainable=self.training)",
        "false",
        "With axis=-1, input_shape[-self.axis] is input_shape[1], the image height: after the listing's first "
        "Conv2D (26 x 26 x 32) gamma has 26 entries for 32 channels and the model fails at its first call. And "
        "training=None is fixed at construction, so `if self.training:` is always false and beta is never used "
        "(Keras passes training to call, per call). trainable=None itself means trainable in tf.keras 2.x.",
        "06 §1")
def proof_002_gamma_and_beta():
    layer_class = _seed002_layer(fix_reduce_variance=True)
    conv_output = torch.randn(2, 26, 26, 32, generator=_gen(0))
    first = layer_class()
    error = _raises(lambda: first(conv_output), RuntimeError)
    square = torch.randn(4, 16, 16, 16, generator=_gen(1))
    layer = layer_class()
    before = layer(square)
    with torch.no_grad():
        layer.beta.fill_(5.0)
    numbers = dict(gamma_shape_after_conv=list(first.gamma.shape), channels=32, error_at_first_call=error,
                   output_change_beta_set_to_5=_max_abs(layer(square), before),
                   gamma_trainable=bool(layer.gamma.requires_grad))
    passed = (numbers["gamma_shape_after_conv"] == [26] and error is not None
              and numbers["output_change_beta_set_to_5"] == 0.0)
    return passed, (f"on the first Conv2D's output (2, 26, 26, 32) gamma gets shape {tuple(first.gamma.shape)} and the "
                    f"call fails ({error}); with beta set to 5 the output does not change at all."), numbers


@_claim("002-reduces-complexity", "002", "§6, FAQ 5",
        "BN层还可以减少模型的复杂性",
        "The BN layer also reduces the model's complexity.",
        "false",
        "BN adds parameters (gamma and beta per channel; the bias before it becomes redundant) and "
        "buffers, and removes no function the net could compute: with gamma = sqrt(running_var + eps) and "
        "beta = running_mean it is the identity at inference. Whatever regularization BN gives comes from "
        "its batch statistics, not from a smaller model.",
        "01 §4, 06 §3")
def proof_002_reduces_complexity():
    from .models import conv_net
    torch.manual_seed(0)
    plain, with_bn = conv_net(norm=None), conv_net(norm="bn")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    bn = nn.BatchNorm1d(3).double()
    gen = _gen(0)
    for _ in range(20):
        bn(torch.randn(32, 3, generator=gen, dtype=torch.float64) * 2 + 4)
    with torch.no_grad():
        bn.weight.copy_(torch.sqrt(bn.running_var + bn.eps))
        bn.bias.copy_(bn.running_mean)
    x = torch.randn(16, 3, generator=gen, dtype=torch.float64) * 2 + 4
    numbers = dict(parameters_plain=count(plain), parameters_bn=count(with_bn),
                   buffers_bn=sum(b.numel() for b in with_bn.buffers()), identity_error=_max_abs(bn.eval()(x), x))
    passed = numbers["parameters_bn"] > numbers["parameters_plain"] and numbers["identity_error"] < 1e-12
    return passed, (f"lesson 06's conv net has {numbers['parameters_plain']} parameters without BN and "
                    f"{numbers['parameters_bn']} with it (plus {numbers['buffers_bn']} buffer values); a BN layer "
                    f"can be the identity (error {numbers['identity_error']:.1e}), so it removes no capacity."), numbers


# ============================================================================= seed 003: a BN module from scratch
@_claim("003-deep-networks-dream", "003", "opening paragraph",
        "Batch Normalization的出现让深度学习的研究者们为期多年的梦想——构建深度的神经网络——变成了现实",
        "Batch Normalization made the researchers' dream of many years, building deep neural networks, come true.",
        "half-true",
        "BN made deep nets much easier to train, but it was neither necessary nor sufficient: with He "
        "initialization a 30-layer ReLU net without BN keeps its gradients within a factor of 10, while 50 "
        "BN-ReLU layers without skip connections have exploding gradients at initialization. Very deep nets "
        "came with BN and skip connections together (ResNets).",
        "05 §1-2")
def proof_003_deep_networks_dream():
    plain_he, bn_deep = _gradient_norms(None, 30, "he"), _gradient_norms("bn", 50)
    bn_skip = _gradient_norms("bn", 50, skip=True)
    numbers = dict(first_over_last_plain_he_30=plain_he[0] / plain_he[-1],
                   first_over_last_bn_50=bn_deep[0] / bn_deep[-1],
                   first_over_last_bn_50_with_skips=bn_skip[0] / bn_skip[-1])
    passed = (0.1 < numbers["first_over_last_plain_he_30"] < 10 and numbers["first_over_last_bn_50"] > 1000
              and numbers["first_over_last_bn_50_with_skips"] < 50)
    return passed, (f"first/last layer gradient at init: 30 plain ReLU layers with He init "
                    f"{numbers['first_over_last_plain_he_30']:.2f}; 50 BN-ReLU layers "
                    f"{numbers['first_over_last_bn_50']:.0f}, "
                    f"with skip connections {numbers['first_over_last_bn_50_with_skips']:.1f}."), numbers


@_claim("003-invented-for-vanishing-gradients", "003", "§1, background",
        "输入数据的梯度会随着层数的增加而逐渐消失，导致网络无法学习深度数据的复杂结构。为了解决这个问题，"
        "Batch Normalization被提出",
        "The gradient of the input data gradually vanishes as the number of layers grows, so the network cannot "
        "learn the complex structure of deep data. Batch Normalization was proposed to solve this problem.",
        "false",
        "Ioffe & Szegedy proposed BN to reduce internal covariate shift, as their title says (saturating "
        "nonlinearities are one symptom they mention). Nor does BN keep gradients from shrinking towards the "
        "input by fixing their scale: in a deep BN-ReLU net at initialization they grow towards the input.",
        "09 §1, §7")
def proof_003_invented_for_vanishing_gradients():
    norms = _gradient_norms("bn", 8, "he")
    title = CITATIONS["ioffe2015"].title
    numbers = dict(bn_paper_title=title, first_over_last_bn_8_layers=norms[0] / norms[-1])
    passed = ("Internal Covariate Shift" in title and "gradient" not in title.lower()
              and numbers["first_over_last_bn_8_layers"] > 2)
    return passed, (f"the paper's title: {title!r}; in 8 BN-ReLU layers at init the first layer's gradient is "
                    f"{numbers['first_over_last_bn_8_layers']:.1f}x the last's."), numbers


@_claim("003-stable-distributions", "003", "§1-2, the core idea",
        "从而使得输入数据的分布在整个训练过程中保持相对稳定",
        "[BN normalizes each batch's input,] so that the distribution of the input data stays relatively stable "
        "throughout training [which makes the network easier to train].",
        "half-true",
        "The stability holds: on lesson 04's net a BN layer's input distribution drifts far less than without "
        "BN (Ioffe & Szegedy's Figure 1). That it is why BN trains easily does not: noisy BN, which shakes "
        "each unit's distribution at every step, moves tens of times more than BN and still trains almost as "
        "fast (Santurkar et al. 2018).",
        "04 §4, 09 §2")
def proof_003_stable_distributions():
    from .probes import median_drift
    from .stats import median_jitter
    runs = {key: _fig1(norm) for key, norm in (("plain", None), ("bn", "bn"), ("noisy", "noisy"))}
    drift = {k: median_drift(h.probe["hidden3"].unit_percentiles) for k, h in runs.items()}
    jitter = {k: median_jitter(h.probe["hidden3"].unit_percentiles) for k, h in runs.items()}
    acc = {k: h.accuracy_at(FIG1_STEPS) for k, h in runs.items()}
    numbers = dict(drift=drift, jitter=jitter, accuracy_at_step_200=acc)
    passed = (drift["bn"] < 0.5 * drift["plain"]
              and jitter["noisy"] > 10 * jitter["bn"] and drift["noisy"] > 10 * drift["bn"]
              and acc["noisy"] > acc["bn"] - 0.08 and acc["noisy"] > acc["plain"] + 0.5)
    return passed, (f"hidden3's input drifts {drift['bn']:.2f} with BN, {drift['plain']:.1f} without; noisy BN drifts "
                    f"{drift['noisy']:.1f} and jumps {jitter['noisy'] / jitter['bn']:.0f}x more than BN between "
                    f"records, yet reaches {acc['noisy']:.2f} at step {FIG1_STEPS} (BN {acc['bn']:.2f}, plain "
                    f"{acc['plain']:.2f})."), numbers


@_claim("003-divide-by-variance", "003", "§2 and §4, the normalization",
        "将输入数据减去均值并除以方差",
        "Subtract the mean from the input data and divide by the variance [y = (x - mu) / sigma, where sigma is "
        "the input's variance].",
        "false",
        "BN divides by the standard deviation, sqrt(sigma^2 + eps). Divided by the variance, the output's "
        "scale is 1/sigma instead of 1: a 10x larger input gives a 10x smaller output, so nothing is "
        "normalized. (The article's formula also leaves out eps.)",
        "01 §7")
def proof_003_divide_by_variance():
    from .mistakes import divide_by_variance
    x = torch.randn(256, 3, generator=_gen(0), dtype=torch.float64).numpy() * 2 + 1
    small, large = divide_by_variance(x), divide_by_variance(10 * x)
    right_small, right_large = _bn(torch.from_numpy(x)).numpy(), _bn(torch.from_numpy(10 * x)).numpy()
    numbers = dict(std_ratio_for_10x_input=float(large.std() / small.std()),
                   correct_formula_difference=float(np.abs(right_large - right_small).max()))
    passed = abs(numbers["std_ratio_for_10x_input"] - 0.1) < 1e-3 and numbers["correct_formula_difference"] < 1e-4
    return passed, (f"10x the input gives {numbers['std_ratio_for_10x_input']:.3f}x the output when dividing by the "
                    f"variance; dividing by sqrt(sigma^2 + eps) gives the same output (difference "
                    f"{numbers['correct_formula_difference']:.1e})."), numbers


@_claim("003-mean-and-variance-learned", "003", "§3, step 3",
        "参数化：对均值和方差进行参数化，使得它们可以被网络学习",
        "Parameterization: the mean and variance are parameterized, so that the network can learn them.",
        "false",
        "The mean and variance BN normalizes with are computed from each batch in training, and the running "
        "averages kept for inference are buffers updated by averaging, not learned by gradients. What the "
        "network learns is gamma and beta, the scale and shift applied after normalizing.",
        "01 §4, 03 §1")
def proof_003_mean_and_variance_learned():
    bn = nn.BatchNorm1d(3).double()
    x = torch.randn(32, 3, generator=_gen(0), dtype=torch.float64)
    moved = bn(x + 5.0)
    numbers = dict(parameters=[n for n, _ in bn.named_parameters()],
                   running_stats_require_grad=[bn.running_mean.requires_grad, bn.running_var.requires_grad],
                   output_change_when_batch_mean_moves_by_5=_max_abs(moved, bn(x)))
    passed = (numbers["parameters"] == ["weight", "bias"] and not any(numbers["running_stats_require_grad"])
              and numbers["output_change_when_batch_mean_moves_by_5"] < 1e-12)
    return passed, ("BN's learned parameters are " + " and ".join(numbers["parameters"]) + " (gamma, beta); "
                    "shifting the whole batch by 5 changes the training output by "
                    f"{numbers['output_change_when_batch_mean_moves_by_5']:.1e}: the mean comes from the "
                    "batch itself."), numbers


@_claim("003-filter-at-output", "003", "§3, step 4",
        "过滤器：在输出层添加过滤器，以使得归一化处理后的输出具有较大的方差",
        "Filter: add a filter at the output layer, so that the normalized output has a larger variance [and the "
        "network's output distribution stays stable].",
        "false",
        "BN has no such step and no filter. Its last step, in every BN layer, is y = gamma * x_hat + beta "
        "with learned gamma and beta, which can give the output any scale and shift, including the input's "
        "own: with gamma = sqrt(sigma^2 + eps) and beta = mu the layer is the identity.",
        "01 §4")
def proof_003_filter_at_output():
    bn = nn.BatchNorm2d(3).double()
    gen = _gen(0)
    for _ in range(20):
        bn(torch.randn(16, 3, 4, 4, generator=gen, dtype=torch.float64) * 3 - 1)
    with torch.no_grad():
        bn.weight.copy_(torch.sqrt(bn.running_var + bn.eps))
        bn.bias.copy_(bn.running_mean)
    x = torch.randn(8, 3, 4, 4, generator=gen, dtype=torch.float64) * 3 - 1
    numbers = dict(submodules=[type(m).__name__ for m in bn.children()], state=list(bn.state_dict()),
                   identity_error=_max_abs(bn.eval()(x), x))
    passed = numbers["submodules"] == [] and numbers["identity_error"] < 1e-12
    return passed, ("a BN layer holds " + ", ".join(numbers["state"]) + " and no submodule; with gamma = "
                    "sqrt(running_var + eps), beta = running_mean it is the identity (error "
                    f"{numbers['identity_error']:.1e})."), numbers


@_claim("003-module-wrong-axis", "003", "§5, the PyTorch module",
        "mean = x.mean(dim=1, keepdim=True)",
        "mean = x.mean(dim=1, keepdim=True)",
        "false",
        "For (N, C) input dim=1 is the feature axis: each example is normalized over its own features, which "
        "is layer normalization (over the channels only, for conv input). BN normalizes each feature over "
        "the batch, dim=0 (and the positions for conv input).",
        "03 §6")
def proof_003_module_wrong_axis():
    from .mistakes import Seed003BatchNormalization
    x = torch.randn(16, 6, generator=_gen(0), dtype=torch.float64) * 2 + 3
    out = Seed003BatchNormalization(6).double()(x).detach()
    numbers = dict(vs_layer_norm=_max_abs(out, nn.functional.layer_norm(x, (6,))), row_means=out.mean(1).abs().max(),
                   column_means=out.mean(0).abs().max(), bn_column_means=_bn(x).mean(0).abs().max())
    passed = (numbers["vs_layer_norm"] < 1e-4 and numbers["row_means"] < 1e-10 and numbers["column_means"] > 0.1
              and numbers["bn_column_means"] < 1e-10)
    return passed, (f"the article's module equals layer norm to {numbers['vs_layer_norm']:.1e}: every example has "
                    f"mean 0, the features do not (up to {numbers['column_means']:.2f}); real BN gives every "
                    "feature mean 0."), numbers


@_claim("003-module-std-plus-eps", "003", "§5, the PyTorch module",
        "x = (x - mean) / (std + self.eps)",
        "x = (x - mean) / (std + self.eps)",
        "false",
        "BN divides by sqrt(sigma^2 + eps). For large sigma the two agree, but for a channel of std 1e-3 "
        "(eps = 1e-5) sqrt(sigma^2 + eps) gives an output of std 0.30 while std + eps gives 0.99: eps no "
        "longer works as a variance floor, and the module differs from torch's BN.",
        "01 §7")
def proof_003_module_std_plus_eps():
    from .mistakes import std_plus_eps
    numbers = {}
    for std in (1.0, 1e-3):
        x = torch.randn(4096, 1, generator=_gen(0), dtype=torch.float64).numpy() * std
        numbers[f"std_{std:g}"] = dict(seed=float(std_plus_eps(x).std()),
                                       bn=float(_bn(torch.from_numpy(x)).numpy().std()))
    passed = (abs(numbers["std_1"]["seed"] - numbers["std_1"]["bn"]) < 1e-4
              and numbers["std_0.001"]["seed"] > 0.95 and abs(numbers["std_0.001"]["bn"] - 0.3015) < 0.01)
    return passed, (f"a channel of std 1e-3: output std {numbers['std_0.001']['seed']:.3f} with std + eps, "
                    f"{numbers['std_0.001']['bn']:.3f} with sqrt(var + eps); at std 1 they agree."), numbers


@_claim("003-module-no-running-statistics", "003", "§5, the PyTorch module",
        "class BatchNormalization(nn.Module):",
        "class BatchNormalization(nn.Module): [gamma, beta and eps, no running statistics, one forward for "
        "training and inference]",
        "false",
        "The module has no running mean and variance and no train/eval distinction, so there is nothing for "
        "inference but the current input (which, normalized over dim=1, is why it works on one example at "
        "all). It is no drop-in for torch.nn.BatchNorm1d: their state_dicts do not load into each other.",
        "03 §1, §6")
def proof_003_module_no_running_statistics():
    from .mistakes import Seed003BatchNormalization
    module = Seed003BatchNormalization(4)
    x = torch.randn(8, 4, generator=_gen(0))
    error = _raises(lambda: module.load_state_dict(nn.BatchNorm1d(4).state_dict()), RuntimeError)
    numbers = dict(state=list(module.state_dict()), torch_state=list(nn.BatchNorm1d(4).state_dict()),
                   train_vs_eval=_max_abs(module.train()(x), module.eval()(x)), load_torch_state=error)
    passed = numbers["state"] == ["gamma", "beta"] and numbers["train_vs_eval"] == 0.0 and error is not None
    return passed, ("its state is " + ", ".join(numbers["state"]) + " (torch's: " + ", ".join(numbers["torch_state"])
                    + "); eval mode computes exactly what training mode does; torch's state_dict does not "
                      "load."), numbers


@_claim("003-high-cost", "003", "§9, FAQ 3 (and §8)",
        "Batch Normalization的缺点包括计算复杂度较高、训练数据不足等",
        "Batch Normalization's drawbacks include a high computational complexity, insufficient training data, and "
        "so on.",
        "false",
        "BN's cost is a few operations per value, under 1 % of a 3 x 3 convolution with 64 input channels, "
        "and nothing at inference once folded into the convolution. 'Insufficient training data' is not a "
        "property of BN (its real limitation is small batches, lesson 08).",
        "06 §5, 08 §2")
def proof_003_high_cost():
    from .folding import count_batchnorms, fold_batchnorm
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)).double()
    x = torch.randn(4, 64, 8, 8, generator=_gen(0), dtype=torch.float64)
    layer(x)                                                  # one training step's statistics
    share = _bn_share(layer, x[:1])
    folded = fold_batchnorm(layer)
    with torch.no_grad():
        difference = _max_abs(folded(x), layer.eval()(x))
    numbers = dict(bn_share_of_flops=share, folded_vs_original=difference, bn_layers_left=count_batchnorms(folded))
    passed = share < 0.01 and difference < 1e-10 and numbers["bn_layers_left"] == 0
    return passed, (f"next to a 64-channel 3 x 3 convolution BN is {100 * share:.2f} % of the operations in training, "
                    f"and folded for inference it is gone (difference {difference:.1e})."), numbers


@_claim("003-reference", "003", "§7, tools and resources",
        "[Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift]"
        "(https://arxiv.org/abs/1502.03167)",
        "[Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift]"
        "(https://arxiv.org/abs/1502.03167): the original paper.",
        "true",
        "Title and arXiv id are those of Ioffe & Szegedy (2015), the paper that introduced BN (ICML 2015).",
        "09 §1")
def proof_003_reference():
    quote = next(c.quote_zh for c in _CLAIMS if c.id == "003-reference")
    title = re.search(r"\[(.+)\]", quote)[1]
    arxiv = re.search(r"abs/(\d{4}\.\d{4,5})", quote)[1]
    real = CITATIONS["ioffe2015"]
    numbers = dict(title=title, arxiv=arxiv, real_title=real.title, real_arxiv=real.arxiv)
    passed = title == real.title and arxiv == real.arxiv
    return passed, f"title and arXiv:{arxiv} match Ioffe & Szegedy (2015).", numbers


# ============================================================================= seed 004: CNNs, RNNs, ICS
@_claim("004-invented-for-new-samples", "004", "§1, background",
        "为了克服这些局限性，研究人员开始研究一种新的神经网络结构：批量归一化层",
        "[CNNs and RNNs find it hard to capture new samples far from the training data or long-term "
        "dependencies.] To overcome these limitations, researchers began to study a new network structure: the "
        "batch normalization layer.",
        "false",
        "BN was proposed to speed up training by reducing internal covariate shift (Ioffe & Szegedy's title), not "
        "for samples far from the training data or long-term dependencies. It does not help with the former: a BN "
        "net's running statistics describe the training data, and on shifted test data its accuracy falls.",
        "09 §1, 10 §4")
def proof_004_invented_for_new_samples():
    shift = _domain_shift()
    numbers = dict(shift, bn_paper_title=CITATIONS["ioffe2015"].title)
    passed = shift["shifted"] < shift["clean"] - 0.2 and "Internal Covariate Shift" in numbers["bn_paper_title"]
    return passed, (f"the BN net: {shift['clean']:.3f} on test digits like its training ones, "
                    f"{shift['shifted']:.3f} on "
                    "shifted ones; the paper's title names internal covariate shift."), numbers


@_claim("004-smaller-variance-larger-mean", "004", "§2.1 (and §3.1, FAQ 3-4)",
        "BN层的主要目的是使每一层的输入具有较小的方差和较大的均值",
        "The main purpose of the BN layer is to give every layer's input a smaller variance and a larger mean.",
        "false",
        "BN sets each unit's mean and standard deviation to the learned beta and |gamma| (0 and 1 at the "
        "start), whatever they were: it makes the variance larger where it was small and smaller where it "
        "was large, and it does not make the mean larger.",
        "04 §4")
def proof_004_smaller_variance_larger_mean():
    from .experiments import FIG1, nonlinearity_inputs
    from .models import mlp
    probe_x = _digits().x_train[:500]
    std, mean = {}, {}
    for init in (FIG1["init"], 1.0):
        for key, norm in (("plain", None), ("bn", "bn")):
            torch.manual_seed(0)
            net = mlp(64, FIG1["hidden"], 10, norm=norm, activation="sigmoid", init=init)
            u = nonlinearity_inputs(net, probe_x)["hidden3"]
            std[f"init {init}, {key}"], mean[f"init {init}, {key}"] = u.std().item(), u.mean().item()
    small, large = f"init {FIG1['init']}", "init 1.0"
    numbers = dict(input_std=std, input_mean=mean)
    passed = (std[f"{small}, plain"] < 1 < std[f"{large}, plain"]
              and all(abs(std[f"{i}, bn"] - 1) < 0.01 and abs(mean[f"{i}, bn"]) < 1e-3 for i in (small, large)))
    return passed, (f"step 0, last hidden layer: without BN std {std[small + ', plain']:.2f} (N(0, 0.1^2) weights) or "
                    f"{std[large + ', plain']:.2f} (N(0, 1)); with BN {std[small + ', bn']:.2f} and "
                    f"{std[large + ', bn']:.2f}, mean 0: larger in one case, smaller in the other."), numbers


@_claim("004-splits-into-small-batches", "004", "§2.1, BN's definition",
        "它将这批样本分成多个小批次，然后对每个小批次进行归一化",
        "It splits the batch of samples into several small batches and normalizes each small batch.",
        "false",
        "BN normalizes with the statistics of the whole batch it is given. Normalizing chunks separately is "
        "ghost BN (Hoffer et al. 2017), a deliberate variant, and what per-device BN does across GPUs; its "
        "output differs from BN's.",
        "10 §2 (ghost BN), 12 §1")
def proof_004_splits_into_small_batches():
    from .layers import GhostBatchNorm1d
    x = torch.randn(48, 3, generator=_gen(0), dtype=torch.float64) * 2 + 1
    whole = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    ghost = GhostBatchNorm1d(3, virtual_batch_size=16, dtype=torch.float64)(x)
    numbers = dict(torch_bn_vs_whole_batch=_max_abs(nn.BatchNorm1d(3).double()(x), whole),
                   chunks_of_16_vs_whole_batch=_max_abs(ghost, whole))
    passed = numbers["torch_bn_vs_whole_batch"] < 1e-10 and numbers["chunks_of_16_vs_whole_batch"] > 1e-3
    return passed, (f"torch's BN on 48 examples equals normalizing with all 48's statistics "
                    f"({numbers['torch_bn_vs_whole_batch']:.1e}); chunks of 16 give something else "
                    f"({numbers['chunks_of_16_vs_whole_batch']:.2f})."), numbers


@_claim("004-normalizes-each-sample", "004", "§2.1 and §3.2, the steps",
        "对每个样本进行均值和方差的归一化",
        "Normalize the mean and variance of each sample.",
        "false",
        "BN normalizes each feature (channel) over the samples of the batch; each sample's own values keep "
        "whatever mean and variance they have. Normalizing each sample over its features is layer "
        "normalization (or instance normalization per channel).",
        "03 §6, 11 §6")
def proof_004_normalizes_each_sample():
    x = torch.randn(32, 8, generator=_gen(0), dtype=torch.float64) * 3 + torch.arange(8, dtype=torch.float64)
    y = _bn(x)
    numbers = dict(feature_means=y.mean(0).abs().max(), sample_means=y.mean(1).abs().max(),
                   sample_stds=[y.std(1).min(), y.std(1).max()])
    passed = numbers["feature_means"] < 1e-10 and numbers["sample_means"] > 0.1
    return passed, (f"after BN every feature has mean 0 over the batch ({numbers['feature_means']:.1e}), while the "
                    f"samples' means reach {numbers['sample_means']:.2f}."), numbers


@_claim("004-rnn", "004", "§2.2 (and FAQ 2)",
        "BN层可以与递归神经网络一起使用，以提高递归神经网络的性能",
        "The BN layer can be used together with recurrent neural networks, to improve their performance.",
        "half-true",
        "It can: a BN-LSTM with statistics per time step (Cooijmans et al. 2016) learned digit rows faster here. "
        "But not as a layer dropped in as in a CNN: the hidden path's distribution changes with the time step "
        "(exactly 0 at t = 0), so BN needs separate statistics per step, a rule beyond the training length and "
        "masking of padding; recurrent and attention models normalize each example instead (LayerNorm).",
        "11 §2-3, §8")
def proof_004_rnn():
    from .data import digit_sequences
    from .recurrent import hidden_preactivation_variance
    plain, bn = _rnn(None), _rnn("bn")
    x_test, _ = digit_sequences("test", "rows")
    variance = hidden_preactivation_variance(plain.model, x_test)["hidden"]
    later = variance[1:]
    numbers = dict(accuracy_step_100_plain=plain.final("test"), accuracy_step_100_bn=bn.final("test"),
                   hidden_path_variance_per_step=variance)
    passed = (numbers["accuracy_step_100_bn"] > numbers["accuracy_step_100_plain"] + 0.03 and variance[0] == 0
              and later.max() > 10 * later.min())
    return passed, (f"after 100 steps the per-step BN-LSTM is at {numbers['accuracy_step_100_bn']:.3f}, the plain "
                    f"LSTM at {numbers['accuracy_step_100_plain']:.3f}; the hidden path's variance is 0 at t = 0 and "
                    f"varies {float(later.max() / later.min()):.0f}x over the later steps."), numbers


@_claim("004-similar-to-regularizers", "004", "§2.2, BN and other layers",
        "BN层与其他正则化技术，如Dropout、L1和L2正则化，有一些相似之处，因为它们都试图减少神经网络的过拟合",
        "The BN layer has some similarities with other regularization techniques such as Dropout, L1 and L2 "
        "regularization, because they all try to reduce overfitting.",
        "half-true",
        "BN does have a mild regularizing effect (lesson 10), but it does not combine with dropout like one "
        "regularizer with another: dropout before a BN layer makes that layer's running variance overstate "
        "the variance it sees at test time (Li et al. 2019's variance shift), and with L2 it interacts through "
        "the weights' scale (see 001-l2-and-bn).",
        "10 §1-3")
def proof_004_similar_to_regularizers():
    before, none = _variance_shift("before_bn"), _variance_shift(None)
    numbers = dict(running_var_over_test_var_dropout_before_bn=before.ratio, without_dropout=none.ratio,
                   recomputed_without_dropout=before.recomputed, gap_bn_full_batch=_regularization("torch_bn", 300).gap,
                   gap_plain_full_batch=_regularization(None, 300).gap)
    passed = (np.all(before.ratio > 1.1) and np.all(np.abs(none.ratio - 1) < 0.06)
              and np.all(np.abs(before.recomputed - 1) < 0.06)
              and numbers["gap_bn_full_batch"] < numbers["gap_plain_full_batch"])
    return passed, ("with dropout before BN2 and BN3 their running_var is "
                    + ", ".join(f"{r:.2f}" for r in before.ratio) + "x the test variance (without dropout "
                    + ", ".join(f"{r:.2f}" for r in none.ratio) + "x)."), numbers


@_claim("004-same-range", "004", "§3.1, the algorithm",
        "它可以将一组数据转换为相同的范围内",
        "[Normalization] transforms a set of data into the same range.",
        "false",
        "BN standardizes (mean 0, variance 1); it does not map values into a fixed range as min-max scaling "
        "does. How far an output can reach depends on the batch: one outlier among m values comes out at "
        "exactly sqrt(m - 1).",
        "01 §1")
def proof_004_same_range():
    from .experiments import EXACT_EPS
    largest = {}
    for m in (10, 100, 1000):
        x = torch.zeros(m, 1, dtype=torch.float64)
        x[0] = 1.0
        largest[m] = _bn(x, eps=EXACT_EPS).max().item()
    numbers = dict(largest_output=largest, sqrt_m_minus_1={m: math.sqrt(m - 1) for m in largest})
    passed = all(abs(largest[m] - math.sqrt(m - 1)) < 1e-9 for m in largest)
    return passed, ("one outlier in a batch of m comes out at "
                    + ", ".join(f"{v:.2f} (m = {m})" for m, v in largest.items())
                    + ": sqrt(m - 1), no fixed range."), numbers


@_claim("004-normalization-formula", "004", "§3.3, the formulas",
        r"z = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}",
        "mu = (1/N) sum x_i, sigma^2 = (1/N) sum (x_i - mu)^2, z = (x - mu) / sqrt(sigma^2 + eps)",
        "true",
        "That is BN's normalization in training, with the biased (1/N) variance, as torch computes it; the "
        "learned scale and shift y = gamma * z + beta follow it.",
        "01 §1-2")
def proof_004_normalization_formula():
    x = torch.randn(8, 5, generator=_gen(0), dtype=torch.float64) * 2 + 3
    mu = x.mean(0)
    biased = ((x - mu) ** 2).sum(0) / len(x)
    unbiased = ((x - mu) ** 2).sum(0) / (len(x) - 1)
    z = (x - mu) / torch.sqrt(biased + 1e-5)
    numbers = dict(formula_vs_torch=_max_abs(z, _bn(x)),
                   with_unbiased_variance_vs_torch=_max_abs((x - mu) / torch.sqrt(unbiased + 1e-5), _bn(x)))
    passed = numbers["formula_vs_torch"] < 1e-10 and numbers["with_unbiased_variance_vs_torch"] > 1e-3
    return passed, (f"the article's formula equals torch's BN to {numbers['formula_vs_torch']:.1e}; with 1/(N-1) it "
                    f"would be off by {numbers['with_unbiased_variance_vs_torch']:.2f} at N = 8."), numbers


def _seed004_layer(listing: str | None = None):
    return _run_listing(SEED004_LAYER if listing is None else listing, "BatchNormalization", {"tf": tf_stand_in()})


@_claim("004-moments-returns-two", "004", "§4, the BatchNormalization listing",
        "mean, var, shape = tf.nn.moments(inputs, axes=self.axis, keepdims=True)",
        "mean, var, shape = tf.nn.moments(inputs, axes=self.axis, keepdims=True)",
        "false",
        "tf.nn.moments(x, axes, shift=None, keepdims=False, name=None) returns two tensors, mean and "
        "variance: unpacking three fails at the first call. And axes=-1 reduces over the channel axis, the "
        "one Keras's BatchNormalization(axis=-1) keeps: on the listing's first layer, a 28 x 28 x 1 image, "
        "the variance over one channel is 0 and the layer outputs beta everywhere, erasing the image.",
        "06 §1")
def proof_004_moments_returns_two():
    tf = tf_stand_in()
    image = torch.rand(2, 28, 28, 1, generator=_gen(0))
    error = _raises(lambda: _seed004_layer()()(image), ValueError)
    mean, var = tf.nn.moments(image, axes=-1, keepdims=True)
    out = tf.nn.batch_normalization(image, mean, var, offset=torch.zeros(1), scale=torch.ones(1),
                                    variance_epsilon=0.001)
    numbers = dict(error_at_first_call=error, returns=TF_API["tf.nn.moments"],
                   variance_over_axis_minus_1=var.abs().max(),
                   output_of_first_layer=out.abs().max())
    passed = error is not None and "expected 3, got 2" in error and numbers["output_of_first_layer"] == 0.0
    return passed, (f"run against the API the listing fails: {error}; with two values, the first layer's statistics "
                    "over the single channel make every pixel of the image 0."), numbers


@_claim("004-batch-normalization-train", "004", "§4, the BatchNormalization listing",
        "return tf.nn.batch_normalization(\n                inputs, mean, var,\n                offset=self.beta, "
        "scale=self.gamma,\n                variance_epsilon=self.epsilon,\n                train=True)",
        "return tf.nn.batch_normalization(inputs, mean, var, offset=self.beta, scale=self.gamma, "
        "variance_epsilon=self.epsilon, train=True)  [and train=False in the else branch]",
        "false",
        "tf.nn.batch_normalization(x, mean, variance, offset, scale, variance_epsilon, name=None) has no "
        "train argument: the call raises a TypeError. It only applies the statistics it is given, and both "
        "branches give it the current batch's moments, so inference would still use batch statistics: "
        "there are no moving averages. self.training is also never set (Keras passes training to call).",
        "03 §1, 06 §1")
def proof_004_batch_normalization_train():
    listing = SEED004_LAYER.replace("mean, var, shape = tf.nn.moments", "mean, var = tf.nn.moments")
    layer = _seed004_layer(listing)()
    x = torch.randn(2, 4, 4, 8, generator=_gen(0))
    unset = _raises(lambda: layer(x), AttributeError)
    layer.training = True
    error = _raises(lambda: layer(x), TypeError)
    branches = re.findall(r"return tf\.nn\.batch_normalization\((.*?)\)", SEED004_LAYER, flags=re.S)
    without_flag = [b.replace("train=True", "").replace("train=False", "") for b in branches]
    numbers = dict(with_two_values_first_error=unset, with_training_set_error=error,
                   real_signature=TF_API["tf.nn.batch_normalization"],
                   branches_differ_only_in_train=len(branches) == 2 and without_flag[0] == without_flag[1])
    passed = error is not None and "train" in error and numbers["branches_differ_only_in_train"]
    return passed, (f"against the API: {error}; the two branches pass the same batch moments, so training and "
                    f"inference would normalize alike. (Before that, self.training: {unset}, to our knowledge "
                    "of Keras.)"), numbers


@_claim("004-gamma-random-normal", "004", "§4, the BatchNormalization listing",
        "initializer='random_normal',",
        "self.gamma = self.add_weight(name='gamma', shape=(input_shape[-1],), initializer='random_normal', "
        "trainable=True)",
        "false",
        "BN starts with gamma = 1 (Keras's gamma_initializer='ones'), so that at the start it passes the "
        "standardized input on. Keras's 'random_normal' is N(0, 0.05^2): every BN output starts about 25x "
        "too small, and about half the channels with their sign flipped.",
        "01 §4")
def proof_004_gamma_random_normal():
    layer = _seed004_layer()()
    layer.build((2, 8, 8, 64))
    gamma = layer.gamma.detach()
    x = torch.randn(16, 64, 8, 8, generator=_gen(0)) * 2 + 1
    out = gamma.view(1, -1, 1, 1) * _bn(x)
    numbers = dict(gamma_mean_abs=gamma.abs().mean(), gamma_negative_fraction=(gamma < 0).double().mean(),
                   output_std_median=out.std((0, 2, 3)).median(), output_std_with_ones=_bn(x).std((0, 2, 3)).median())
    passed = (numbers["gamma_mean_abs"] < 0.1 and 0.2 < numbers["gamma_negative_fraction"] < 0.8
              and numbers["output_std_median"] < 0.1)
    return passed, (f"gamma ~ N(0, 0.05^2): mean |gamma| {numbers['gamma_mean_abs']:.3f}, "
                    f"{100 * numbers['gamma_negative_fraction']:.0f} % negative; BN's outputs start with median std "
                    f"{numbers['output_std_median']:.3f} instead of {numbers['output_std_with_ones']:.3f}."), numbers


@_claim("004-solves-covariate-shift", "004", "§6, FAQ 4 (and §2)",
        "批量归一化层可以有效地解决内部协变量的变化问题",
        "The batch normalization layer can effectively solve the problem of internal covariate shift.",
        "half-true",
        "Measured as Santurkar et al. define it (how much a layer's gradient changes when the layers below "
        "take their step), ICS was smaller with BN in our deep ReLU net, though not in theirs. But reducing "
        "it is not what makes BN work: noisy BN, whose layer inputs jump far more than BN's, trains almost as "
        "fast as BN, and what goes with BN's speed is a smoother loss along the step.",
        "09 §2-4")
def proof_004_solves_covariate_shift():
    from .stats import median_jitter
    plain, bn = _landscape(None), _landscape("bn")
    jitter = {k: median_jitter(_fig1(k).probe["hidden3"].unit_percentiles) for k in ("bn", "noisy")}
    numbers = dict(ics_median_plain=np.median(plain.summary("ics")), ics_median_bn=np.median(bn.summary("ics")),
                   loss_range_median_plain=np.median(plain.summary("loss_range")),
                   loss_range_median_bn=np.median(bn.summary("loss_range")), jitter_fig1=jitter,
                   accuracy_at_200_bn=_fig1("bn").accuracy_at(FIG1_STEPS),
                   accuracy_at_200_noisy=_fig1("noisy").accuracy_at(FIG1_STEPS))
    passed = (numbers["ics_median_bn"] < 0.5 * numbers["ics_median_plain"] and jitter["noisy"] > 10 * jitter["bn"]
              and numbers["accuracy_at_200_noisy"] > numbers["accuracy_at_200_bn"] - 0.08
              and numbers["loss_range_median_bn"] < numbers["loss_range_median_plain"])
    return passed, (f"ICS ||G - G'|| median {numbers['ics_median_bn']:.2f} with BN vs "
                    f"{numbers['ics_median_plain']:.2f} without; noisy BN's inputs jump "
                    f"{jitter['noisy'] / jitter['bn']:.0f}x more than BN's, yet it reaches "
                    f"{numbers['accuracy_at_200_noisy']:.2f} (BN {numbers['accuracy_at_200_bn']:.2f})."), numbers


@_claim("004-success-in-nlp", "004", "§5, future 2",
        "批量归一化层已经在图像识别、自然语言处理等任务中取得了显著的成功",
        "Batch normalization layers have achieved remarkable success in image recognition, natural language "
        "processing and other tasks.",
        "half-true",
        "In image recognition, yes. In language models the normalization that succeeded is LayerNorm "
        "(transformers, Vaswani et al. 2017) and RMSNorm, per token: BN over tokens depends on the padding and "
        "on what else is in the batch, as lesson 11 measures.",
        "11 §7")
def proof_004_success_in_nlp():
    from .transformer import padding_effects
    effects = padding_effects(extra_padding=8)
    numbers = {f"output_change_with_8_more_padded_positions_{k}": v.output_change for k, v in effects.items()}
    passed = effects["bn"].output_change > 0.1 and all(effects[k].output_change < 1e-12 for k in ("ln", "rms"))
    return passed, (f"8 more padded positions per sequence change BN-over-tokens' outputs of the real tokens by "
                    f"{effects['bn'].output_change:.2f}, LayerNorm's and RMSNorm's by 0."), numbers


@_claim("004-bottleneck-at-scale", "004", "§5, future 1",
        "随着数据规模的增加，批量归一化层可能会遇到性能瓶颈",
        "As data grows, batch normalization layers may run into performance bottlenecks.",
        "untestable as stated",
        "No bottleneck is named, so there is nothing to test as stated. What can be measured: BN's work per "
        "example does not grow with the data; across devices SyncBatchNorm sends little (about 1 % of DDP's "
        "gradient bytes for ResNet-50) but adds two synchronizations per BN layer per step, 106 for "
        "ResNet-50, which is where its cost lies (lesson 12).",
        "12 §5")
def proof_004_bottleneck_at_scale():
    from .experiments import RESNET50, sync_cost_table
    cost = sync_cost_table({"ResNet-50": (RESNET50["bn_channels"], RESNET50["parameters"])}, world_size=8)["ResNet-50"]
    bn = nn.BatchNorm2d(64)
    per_example = {n: _flops(bn, torch.zeros(n, 64, 8, 8))["bn"] / n for n in (16, 256)}
    numbers = dict(syncbn_over_ddp_bytes=cost["sent_ratio"], syncbn_collectives_per_step=cost["syncbn_collectives"],
                   bn_flops_per_example=per_example)
    passed = cost["sent_ratio"] < 0.02 and cost["syncbn_collectives"] == 106 and per_example[16] == per_example[256]
    return passed, (f"ResNet-50 on 8 devices: SyncBatchNorm sends {100 * cost['sent_ratio']:.2f} % of DDP's bytes but "
                    f"makes {cost['syncbn_collectives']} collectives a step; BN's work per example is the same at "
                    "any batch or data size."), numbers


@_claim("004-references-repeated", "004", "the reference list at the end",
        "# 参考文献",
        "References [58 numbered entries]",
        "false",
        "The list has 58 entries but only 22 distinct lines: entries 23 to 57 repeat entries 10 to 22 over and "
        "over, and entry 58 stops in the middle. (The article's own section 1.3 says not to list references "
        "at the end: 文章末尾不要列出参考文献.)",
        "13")
def proof_004_references_repeated():
    report = check_references()
    numbers = {k: report[k] for k in ("entries", "distinct", "works", "cut_off")}
    numbers["repeats"] = len(report["repeats"])
    numbers["repeats_cycle_through_10_to_22"] = all(10 <= j <= 22 and (i - j) % 13 == 0
                                                    for i, j in report["repeats"].items())
    passed = report["entries"] == 58 and report["distinct"] == 22 and numbers["repeats_cycle_through_10_to_22"]
    return passed, (f"{report['entries']} entries, {report['distinct']} distinct lines ({report['works']} distinct "
                    f"works), {numbers['repeats']} repeats, entry {report['cut_off']} cut off."), numbers


@_claim("004-references-wrong", "004", "the reference list at the end",
        "Vaswani, A., Gomez, J., Parmar, N., Yogatama, S., Kingma, D. B., & Ba, J. (2017). Attention is All You Need.",
        "Vaswani, A., Gomez, J., Parmar, N., Yogatama, S., Kingma, D. B., & Ba, J. (2017). Attention is All You Need. "
        "[and the other entries]",
        "false",
        "Most entries are wrong. Well-known papers get invented authors (Attention Is All You Need is by "
        "Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser and Polosukhin; Instance Normalization by "
        "Ulyanov, Vedaldi and Lempitsky; BERT by Devlin, Chang, Lee and Toutanova) or wrong arXiv ids "
        "(DenseNet 1608.06993, Xception 1610.02357, GoogLeNet 1409.4842, FCN 1411.4038), and four titles name "
        "no paper we could find (listed as unverified, not guessed).",
        "13")
def proof_004_references_wrong():
    report = check_references()
    wrong = [n for n in report["problems"] if n not in report["unverified"]]
    numbers = dict(checked=report["distinct"], correct=report["correct"], wrong=wrong, problems=report["problems"],
                   unverified=report["unverified"])
    attention = report["problems"].get(3, [])
    passed = len(wrong) >= 10 and any("Yogatama" in p for p in attention) and len(report["correct"]) <= 8
    return passed, (f"of {report['distinct']} distinct entries {len(report['correct'])} are right "
                    f"({', '.join(map(str, report['correct']))}), {len(wrong)} have wrong authors or arXiv ids, "
                    f"{len(report['unverified'])} name no paper we know."), numbers


@_claim("004-reference-ioffe", "004", "the reference list, entry 1",
        "Ioffe, S., & Szegedy, C. (2015). Batch Normalization: Accelerating Deep Network Training by Reducing "
        "Internal Covariate Shift. arXiv preprint arXiv:1502.03167.",
        "Ioffe, S., & Szegedy, C. (2015). Batch Normalization: Accelerating Deep Network Training by Reducing "
        "Internal Covariate Shift. arXiv preprint arXiv:1502.03167.",
        "true",
        "Authors, year, title and arXiv id are right: the paper that introduced BN (ICML 2015).",
        "09 §1")
def proof_004_reference_ioffe():
    report = check_references(SEED004_REFERENCES[:1])
    numbers = dict(correct=report["correct"], problems=report["problems"])
    passed = report["correct"] == [1] and not report["problems"]
    return passed, "entry 1 matches Ioffe & Szegedy (2015) in authors, year, title and arXiv id.", numbers


# ============================================================================= the registry and its runners
CLAIMS: tuple[Claim, ...] = tuple(_CLAIMS)


def get_claim(claim_id: str) -> Claim:
    """The Claim with this id; a ValueError names the unknown id."""
    for claim in CLAIMS:
        if claim.id == claim_id:
            return claim
    raise ValueError(f"no claim {claim_id!r}; the ids are {[c.id for c in CLAIMS]}")


def claims_table() -> list[tuple[str, str, str, str]]:
    """One row (id, seed, verdict, lesson) per claim, in the order of the articles: lesson 13's top table."""
    return [(c.id, c.seed, c.verdict, c.lesson) for c in CLAIMS]


def claim_counts(by: str = "verdict") -> dict:
    """How many claims there are per verdict (by='verdict', in VERDICTS' order) or per seed (by='seed')."""
    if by == "verdict":
        return {v: sum(c.verdict == v for c in CLAIMS) for v in VERDICTS}
    if by == "seed":
        return {s: sum(c.seed == s for c in CLAIMS) for s in SEEDS}
    raise ValueError(f"by must be 'verdict' or 'seed', got {by!r}")


def run_proof(claim_id: str) -> ProofResult:
    """Run one claim's proof, on one CPU thread: small nets trained on tiny batches end differently
    with another thread count, and a verdict's evidence should not depend on the machine. The thread
    count and the global random state (torch's, NumPy's) are as before afterwards: the experiments
    seed themselves, and this keeps them from disturbing a lesson's own seeding."""
    claim = get_claim(claim_id)
    state, threads = np.random.get_state(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            return globals()[claim.proof]()
    finally:
        torch.set_num_threads(threads)
        np.random.set_state(state)


def run_all(progress: bool = True, timings: dict | None = None) -> dict[str, ProofResult]:
    """{claim id: ProofResult} for every claim, in order. A proof that raises counts as not passed,
    with the error in its numbers. progress: a progress bar, then one line with the claims per
    verdict and how many proofs support their verdict. timings: a dict that receives each proof's
    seconds (shared runs are paid by the first claim that needs them)."""
    results = {}
    for claim in tqdm(CLAIMS, disable=not progress, desc="claims", leave=False):
        started = time.perf_counter()
        try:
            results[claim.id] = run_proof(claim.id)
        except Exception as error:   # a broken proof is a result to show, not a reason to stop the others
            results[claim.id] = ProofResult(claim.id, False, {"error": f"{type(error).__name__}: {error}"},
                                            f"the proof raised {type(error).__name__}: {error}")
        if timings is not None:
            timings[claim.id] = time.perf_counter() - started
    if progress:
        counts = result_counts(results)
        print(f"{len(results)} claims: " + ", ".join(f"{n['claims']} {v}" for v, n in counts.items())
              + f"; {sum(r.passed for r in results.values())} proofs support their verdict")
    return results


def result_counts(results: dict[str, ProofResult]) -> dict[str, dict[str, int]]:
    """{verdict: {'claims': how many, 'supported': how many proofs passed}} over results (from run_all)."""
    counts = {v: {"claims": 0, "supported": 0} for v in VERDICTS}
    for claim_id, result in results.items():
        verdict = get_claim(claim_id).verdict
        counts[verdict]["claims"] += 1
        counts[verdict]["supported"] += bool(result.passed)
    return counts


# ============================================================================= for lesson 13's pages
def claims_markdown(seed: str, results: dict[str, ProofResult] | None = None) -> str:
    """Seed `seed`'s claims as Markdown for the lesson: per claim its id and place in the article, the
    quote and its translation, the verdict, why, where the course proves it and, given results (from
    `run_all`), what the proof measured."""
    if seed not in SEEDS:
        raise ValueError(f"seed must be one of {SEEDS}, got {seed!r}")
    parts = [f"### Seed {seed}: {SEEDS[seed]}"]
    for c in CLAIMS:
        if c.seed != seed:
            continue
        quote = "\n".join(f"> {line}" if line.strip() else ">" for line in c.quote_zh.splitlines())
        text = (f"**{c.id}** ({c.where})\n\n{quote}\n>\n> *\"{c.quote_en}\"*\n\n"
                f"**{c.verdict}.** {c.explanation} *Proved in lesson {c.lesson}.*")
        if results is not None and c.id in results:
            text += f"\n\nProof: {results[c.id].summary}"
        parts.append(text)
    return "\n\n".join(parts)


def _flat_numbers(numbers, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (nested) numbers dict, keyed 'outer.inner'; lists as 'key[i]'."""
    flat: dict[str, float] = {}
    items = numbers.items() if isinstance(numbers, dict) else enumerate(numbers)
    for key, value in items:
        name = f"{prefix}.{key}" if prefix and isinstance(numbers, dict) else f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            flat[name] = float(value)
        elif isinstance(value, (dict, list, tuple)):
            flat.update(_flat_numbers(value, name))
    return flat


def evidence_items(results: dict[str, ProofResult], myths: dict | None = None) -> list[dict]:
    """Items for `bnlab.widgets.EvidenceExplorer`: every claim with its proof's result, then (myths:
    `bnlab.myths.run_all()`'s results) every myth beyond the seeds, numbers flattened to floats."""
    items = []
    for c in CLAIMS:
        r = results[c.id]
        items.append(dict(id=c.id, source=f"seed {c.seed}", quote=c.quote_zh, translation=c.quote_en, verdict=c.verdict,
                          explanation=c.explanation, lesson=c.lesson, summary=r.summary, passed=bool(r.passed),
                          numbers=_flat_numbers(r.numbers)))
    if myths:
        from .myths import MYTHS

        for name, r in myths.items():
            items.append(dict(id=name, source="beyond the seeds", quote="", translation=MYTHS[name].statement,
                              verdict=r.verdict, explanation=r.summary, lesson="13 §3", summary=r.summary, passed=True,
                              numbers=_flat_numbers(r.numbers)))
    return items
