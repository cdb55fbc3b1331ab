"""Batch norm's conventions across the frameworks and courses a student meets: which way
``momentum`` weights the running average, the default eps, which variance normalizes and which one
is tracked, how training and evaluation are switched, and which axis holds the features.

Each entry was read in the framework's own source (file and symbol in ``source``); the functions
convert a momentum to torch's and apply each framework's running-average update as it is written,
so a notebook can show that Keras's 0.99 is torch's 0.01.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Convention", "CONVENTIONS", "FRAMEWORKS", "convention", "to_torch_momentum", "from_torch_momentum",
           "running_update", "batch_statistics", "training_step", "conventions_table", "format_conventions_table"]


@dataclass(frozen=True)
class Convention:
    """One framework's BN conventions, as its source code has them.

    momentum_weights: 'batch' where momentum is the weight of the new batch statistic (torch:
    running = (1 - m) * running + m * batch), 'running' where it is the weight of the old running
    value (Keras: moving = m * moving + (1 - m) * batch). torch_momentum is momentum_default in
    torch's convention. running_statistic is what the running buffer holds ('var'; makemore's
    hand-written loop keeps a running std). eps_default 0.0 means the code adds no eps; momentum_name
    '' that the value is written into the code, not an argument. ndims: the input ranks its code
    takes (None: any from 2 on).
    verified: every field was read in the source named in ``source``.
    """

    name: str
    momentum_name: str
    momentum_default: float
    momentum_weights: str
    update_formula: str
    torch_momentum: float
    eps_default: float
    variance_in_normalization: str
    variance_in_running: str
    running_statistic: str
    running_init: str
    train_eval_switch: str
    axis: str
    ndims: tuple[int, ...] | None
    source: str
    verified: bool
    notes: str = ""


CONVENTIONS: dict[str, Convention] = {
    "torch": Convention(
        name="PyTorch (torch.nn.BatchNorm1d/2d/3d)",
        momentum_name="momentum", momentum_default=0.1, momentum_weights="batch",
        update_formula="running = (1 - momentum) * running + momentum * batch",
        torch_momentum=0.1, eps_default=1e-5,
        variance_in_normalization="biased", variance_in_running="unbiased", running_statistic="var",
        running_init="running_mean 0, running_var 1",
        train_eval_switch="module.train() / module.eval() (the module.training flag)",
        axis="dim 1 is the channel: (N, C) or (N, C, *spatial), statistics over every other dim",
        ndims=(2, 3, 4, 5),
        source="torch/nn/modules/batchnorm.py (torch 2.13): _NormBase.__init__ (eps=1e-5, momentum=0.1), "
               "_BatchNorm.forward (bn_training, exponential_average_factor), BatchNorm1d docstring ('biased "
               "estimator' to normalize, 'unbiased estimator' for the running variance); "
               "https://github.com/pytorch/pytorch/blob/main/torch/nn/modules/batchnorm.py",
        verified=True,
        notes="momentum=None is a cumulative average, factor 1/num_batches_tracked. In eval mode with "
              "track_running_stats=False the batch statistics normalize."),
    "keras": Convention(
        name="TensorFlow / Keras 3 (keras.layers.BatchNormalization)",
        momentum_name="momentum", momentum_default=0.99, momentum_weights="running",
        update_formula="moving = moving * momentum + batch * (1 - momentum)",
        torch_momentum=0.01, eps_default=1e-3,
        variance_in_normalization="biased", variance_in_running="biased", running_statistic="var",
        running_init="moving_mean 0, moving_variance 1",
        train_eval_switch="layer(x, training=True/False) (fit() passes True; a plain call is inference); "
                          "trainable=False puts the layer in inference mode",
        axis="axis=-1, channels last; statistics over every other axis",
        ndims=None,
        source="keras/src/layers/normalization/batch_normalization.py: BatchNormalization.__init__ (axis=-1, "
               "momentum=0.99, epsilon=1e-3), BatchNormalization.call ('if training and self.trainable', the "
               "moving_mean/moving_variance assign), _moments -> ops.moments, which is biased in every backend "
               "(keras/src/backend/*/nn.py moments; TF: tf.nn.moments, 'sample variance, not unbiased variance'); "
               "https://github.com/keras-team/keras/blob/master/keras/src/layers/normalization/"
               "batch_normalization.py",
        verified=True,
        notes="tf.keras 2.x (keras/layers/normalization/batch_normalization.py, v2.15.0) differs for 4-D and 5-D "
              "inputs: there the fused kernel runs by default and its batch variance carries Bessel's "
              "correction (tensorflow/core/kernels/fused_batch_norm_op.cc, rest_size_adjust; the CPU kernel was "
              "read, the GPU path goes through cuDNN and was not), which "
              "_fused_batch_norm keeps for moving_variance (_bessels_correction_test_only=True): unbiased "
              "running variance, as torch. trainable=False means inference mode since TF 2.0 "
              "(_get_training_value in tf.keras 2.x)."),
    "flax": Convention(
        name="JAX / Flax (flax.linen.BatchNorm)",
        momentum_name="momentum", momentum_default=0.99, momentum_weights="running",
        update_formula="ra = momentum * ra + (1 - momentum) * batch",
        torch_momentum=0.01, eps_default=1e-5,
        variance_in_normalization="biased", variance_in_running="biased", running_statistic="var",
        running_init="batch_stats mean 0, var 1",
        train_eval_switch="use_running_average=False (train) / True (eval), as attribute or call argument; "
                          "batch_stats must be mutable in training",
        axis="axis=-1, features last; statistics over every other axis",
        ndims=None,
        source="flax/linen/normalization.py: BatchNorm attributes (use_running_average, axis=-1, momentum=0.99, "
               "epsilon=1e-5), BatchNorm.__call__ (ra_mean.value, ra_var.value updates), _compute_stats (var = "
               "mean(|x|^2) - |mean|^2, or mean(|x - mean|^2) with use_fast_variance=False: biased); "
               "https://github.com/google/flax/blob/main/flax/linen/normalization.py",
        verified=True,
        notes="The running statistics are not updated during init. flax.nnx.BatchNorm has the same defaults "
              "(flax/nnx/nn/normalization.py)."),
    "cs231n": Convention(
        name="CS231n assignment 2 (batchnorm_forward)",
        momentum_name="bn_param['momentum']", momentum_default=0.9, momentum_weights="running",
        update_formula="running = momentum * running + (1 - momentum) * sample",
        torch_momentum=0.1, eps_default=1e-5,
        variance_in_normalization="biased", variance_in_running="biased", running_statistic="var",
        running_init="running_mean 0, running_var 0 (np.zeros)",
        train_eval_switch="bn_param['mode'] = 'train' / 'test'",
        axis="(N, D), statistics over axis 0; spatial_batchnorm_forward takes (N, C, H, W) and reshapes to "
             "(N*H*W, C)",
        ndims=(2, 4),
        source="assignment2/cs231n/layers.py (starter code): batchnorm_forward docstring ('(uncorrected) sample "
               "variance', the running_mean/running_var formulas) and its first lines (eps 1e-5, momentum 0.9, "
               "running_var np.zeros(D)); spatial_batchnorm_forward docstring ('default of momentum=0.9'); "
               "https://cs231n.github.io/ (assignment 2 zip), read in student copies of the starter code, "
               "e.g. github.com/AnirudhM1/CS231n-2022-Solutions",
        verified=True,
        notes="The starter code is distributed as a zip, not a repository: read in students' copies (2022's "
              "in full; the same lines recur in copies from other years); another year's may differ."),
    "d2l": Convention(
        name="Dive into Deep Learning, PyTorch tab (batch_norm / BatchNorm)",
        momentum_name="momentum", momentum_default=0.1, momentum_weights="batch",
        update_formula="moving = (1.0 - momentum) * moving + momentum * batch",
        torch_momentum=0.1, eps_default=1e-5,
        variance_in_normalization="biased", variance_in_running="biased", running_statistic="var",
        running_init="moving_mean 0, moving_var 1",
        train_eval_switch="torch.is_grad_enabled(): batch statistics whenever gradients are on (model.eval() "
                          "alone does not switch), moving ones under torch.no_grad()",
        axis="(N, D) over dim 0, or (N, C, H, W) over dims (0, 2, 3); num_dims=2 or 4",
        ndims=(2, 4),
        source="chapter_convolutional-modern/batch-norm.md (d2l-en), PyTorch tab: batch_norm (var = ((X - "
               "mean) ** 2).mean(...), the moving_mean/moving_var update, is_grad_enabled) and BatchNorm.forward "
               "(eps=1e-5, momentum=0.1); https://d2l.ai/chapter_convolutional-modern/batch-norm.html",
        verified=True,
        notes="batch_norm itself has no defaults; BatchNorm.forward passes eps=1e-5, momentum=0.1. The same "
              "chapter's JAX tab uses momentum=0.9 on the old value, its MXNet tab eps=1e-12."),
    "makemore": Convention(
        name="Karpathy, makemore part 3: the BatchNorm1d class",
        momentum_name="momentum", momentum_default=0.1, momentum_weights="batch",
        update_formula="running = (1 - momentum) * running + momentum * batch",
        torch_momentum=0.1, eps_default=1e-5,
        variance_in_normalization="unbiased", variance_in_running="unbiased", running_statistic="var",
        running_init="running_mean 0, running_var 1",
        train_eval_switch="layer.training = True / False (set by hand on every layer)",
        axis="(N, D), statistics over dim 0",
        ndims=(2,),
        source="lectures/makemore/makemore_part3_bn.ipynb (karpathy/nn-zero-to-hero): class BatchNorm1d in "
               "cell In[13] (eps=1e-5, momentum=0.1, xvar = x.var(0): torch's default, unbiased) and "
               "'layer.training = False' in In[19]; "
               "https://github.com/karpathy/nn-zero-to-hero/blob/master/lectures/makemore/makemore_part3_bn.ipynb",
        verified=True,
        notes="Both normalizes and tracks with the unbiased variance: its training output differs from "
              "torch's by the factor sqrt((m - 1) / m) in the variance."),
    "makemore_inline": Convention(
        name="Karpathy, makemore part 3: the BN written into the training loop",
        momentum_name="", momentum_default=0.001, momentum_weights="batch",
        update_formula="bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi",
        torch_momentum=0.001, eps_default=0.0,
        variance_in_normalization="unbiased", variance_in_running="unbiased", running_statistic="std",
        running_init="bnmean_running 0, bnstd_running 1",
        train_eval_switch="separate code: the training loop uses batch statistics, split_loss the running ones",
        axis="(N, D), statistics over dim 0",
        ndims=(2,),
        source="lectures/makemore/makemore_part3_bn.ipynb (karpathy/nn-zero-to-hero): training loop in cell In[7] "
               "(bnstdi = hpreact.std(0): unbiased; hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias: no "
               "eps; the 0.999/0.001 updates) and split_loss in In[10]; "
               "https://github.com/karpathy/nn-zero-to-hero/blob/master/lectures/makemore/makemore_part3_bn.ipynb",
        verified=True,
        notes="Tracks a running standard deviation, not a variance, and divides by the batch std without eps."),
}

FRAMEWORKS = tuple(CONVENTIONS)


def convention(framework: str) -> Convention:
    """The entry of CONVENTIONS for framework (one of FRAMEWORKS); a ValueError names the known ones."""
    if not isinstance(framework, str) or framework not in CONVENTIONS:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    return CONVENTIONS[framework]


def _check_momentum(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


def to_torch_momentum(framework: str, value: float | None = None) -> float:
    """framework's momentum value (its default when None) in torch's convention, the weight of the new
    batch statistic: m for frameworks that weight the batch by m (torch, d2l, makemore), 1 - m for those
    that weight the old value by m (Keras 0.99 -> 0.01, Flax 0.99 -> 0.01, CS231n 0.9 -> 0.1)."""
    c = convention(framework)
    m = c.momentum_default if value is None else _check_momentum(value, "momentum")
    return m if c.momentum_weights == "batch" else 1.0 - m


def from_torch_momentum(framework: str, torch_momentum: float) -> float:
    """The inverse of to_torch_momentum: torch's momentum as framework's momentum argument."""
    c = convention(framework)
    m = _check_momentum(torch_momentum, "torch_momentum")
    return m if c.momentum_weights == "batch" else 1.0 - m


def _check_same_shape(running, batch_stat) -> None:
    shapes = [tuple(getattr(v, "shape", ())) for v in (running, batch_stat)]
    if shapes[0] != shapes[1]:
        raise ValueError(f"running has shape {shapes[0]} but batch_stat {shapes[1]}; no broadcasting here")


def running_update(framework: str, running, batch_stat, momentum: float | None = None):
    """One step of framework's running average, written as its source writes it:

        momentum weights the batch (torch, d2l, makemore):  running <- (1 - m) * running + m * batch_stat
        momentum weights the past (Keras, Flax, CS231n):    running <- m * running + (1 - m) * batch_stat

    m is momentum, framework's own default when None. batch_stat is the statistic the framework
    feeds in (batch_statistics gives it: biased or unbiased variance, or std for makemore_inline).
    running and batch_stat: numbers, or arrays / tensors of one shape (C,). Returns the new value;
    nothing is changed in place.
    """
    c = convention(framework)
    m = c.momentum_default if momentum is None else _check_momentum(momentum, "momentum")
    _check_same_shape(running, batch_stat)
    if c.momentum_weights == "batch":
        return (1 - m) * running + m * batch_stat
    return m * running + (1 - m) * batch_stat


def batch_statistics(framework: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, spread to normalize with, spread fed to the running update) of a training batch, per
    feature, as framework computes them. With m values per feature:

        mean = mu_B,   biased sigma^2_B = mean (x - mu_B)^2,   unbiased = sigma^2_B * m / (m - 1)

    and the spread is a variance, or its square root where the framework keeps a std (makemore_inline).
    x is in torch's layout, features on dim 1: (N, C) or (N, C, *spatial); statistics over every other
    dim, which is what Keras and Flax compute on their channels-last layout. The ranks a framework's
    code accepts are enforced (CS231n and d2l: 2 or 4, makemore: 2). Returns three (C,) tensors.
    """
    c = convention(framework)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}"
                         + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))
    if x.dim() < 2 or (c.ndims is not None and x.dim() not in c.ndims):
        allowed = "2 or more" if c.ndims is None else " or ".join(map(str, c.ndims))
        raise ValueError(f"{framework} takes inputs of {allowed} dims, got shape {tuple(x.shape)}")
    dims = [0] + list(range(2, x.dim()))
    m = x.numel() // x.shape[1]
    if m < 2:
        raise ValueError(f"expected more than 1 value per feature, got input shape {tuple(x.shape)}")
    mean = x.mean(dims)
    # two passes, centre first: E[x^2] - E[x]^2 cancels for large means
    biased = ((x - mean.view((1, -1) + (1,) * (x.dim() - 2))) ** 2).mean(dims)
    variances = {"biased": biased, "unbiased": biased * (m / (m - 1))}
    normalize, running = variances[c.variance_in_normalization], variances[c.variance_in_running]
    if c.running_statistic == "std":
        normalize, running = normalize.sqrt(), running.sqrt()
    return mean, normalize, running


def training_step(framework: str, running_mean, running_spread, x: torch.Tensor, momentum: float | None = None):
    """The running (mean, spread) after one training batch x in framework: batch_statistics, then
    running_update for each. Returns the new (running_mean, running_spread)."""
    mean, _, spread = batch_statistics(framework, x)
    return running_update(framework, running_mean, mean, momentum), running_update(framework, running_spread,
                                                                                  spread, momentum)


def _number(value: float) -> str:
    """0.001 -> '1e-3', 0.010000000000000009 -> '0.01', 0 -> '0 (none)'."""
    if value == 0:
        return "0 (none)"
    exponent = round(math.log10(value))
    if exponent <= -3 and math.isclose(value, 10.0 ** exponent):
        return f"1e{exponent}"
    return f"{value:.6g}"


def conventions_table() -> list[dict[str, str]]:
    """One row per framework for a notebook or the README: framework, momentum (name = default),
    update, torch momentum, eps, variance (normalize / running), train/eval, axis, source, verified."""
    rows = []
    for key, c in CONVENTIONS.items():
        spread = "std" if c.running_statistic == "std" else "var"
        rows.append({
            "framework": key,
            "momentum": (f"{c.momentum_name} = {_number(c.momentum_default)}" if c.momentum_name
                         else f"{_number(c.momentum_default)}, hard-coded"),
            "update": c.update_formula,
            "torch momentum": _number(c.torch_momentum),
            "eps": _number(c.eps_default),
            "variance (normalize / running)": f"{c.variance_in_normalization} / {c.variance_in_running} {spread}",
            "train/eval": c.train_eval_switch,
            "axis": c.axis,
            "source": c.source,
            "verified": "yes" if c.verified else "no",
        })
    return rows


def format_conventions_table(columns: tuple[str, ...] = ("framework", "momentum", "update", "torch momentum", "eps",
                                                         "variance (normalize / running)")) -> str:
    """conventions_table as a Markdown table of the given columns (the README's is the default)."""
    rows = conventions_table()
    unknown = [col for col in columns if col not in rows[0]]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; known: {list(rows[0])}")
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(f"`{row[col]}`" if col == "update" else row[col] for col in columns) + " |")
    return "\n".join(lines)

