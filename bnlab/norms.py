"""BN's relatives that normalize each example on its own (lesson 11): ``LayerNorm``, ``GroupNorm``,
``InstanceNorm1d/2d/3d`` and ``RMSNorm``, from plain tensor ops, with torch's constructor arguments,
parameters, buffers and state_dict keys, so that each can stand in for torch's module and a state_dict
loads both ways. ``WeightNormLinear`` is Salimans & Kingma's weight normalization of a linear layer,
the third method of Ba et al.'s Table 1 (see `bnlab.invariances`); ``RMSGroupNorm`` is the
registry's ``'rms'``, RMS norm over a whole example with gamma and beta per channel.

None of these keeps statistics of the batch: a training step and an evaluation give the same output
for the same example, whatever else is in the batch. The one exception is InstanceNorm with
track_running_stats=True, which, like BN, normalizes with running averages in eval.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn
from torch.nn import functional as F

from .functional import update_running_stats_

__all__ = ["LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm",
           "RMSGroupNorm", "WeightNormLinear",
           "layer_norm", "group_norm", "instance_norm", "rms_norm", "rms_group_norm", "rms_eps"]


# ----------------------------------------------------------------------------- checks
def _check_input(input, what: str, min_dims: int = 0) -> None:
    if not isinstance(input, torch.Tensor):
        raise ValueError(f"{what}: input must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise ValueError(f"{what}: input must be a floating-point tensor, got dtype {input.dtype}")
    if input.dim() < min_dims:
        raise ValueError(f"{what}: input must have at least {min_dims} dims (N, C, ...), "
                         f"got shape {tuple(input.shape)}")


def _check_param(what: str, name: str, t, shape: tuple[int, ...], input: torch.Tensor) -> None:
    """t is None, or a tensor of the given shape and of the input's dtype (float32 with a
    float16/bfloat16 input, torch's mixed precision)."""
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{what}: {name} must be a tensor or None, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{what}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)} "
                         f"for input of shape {tuple(input.shape)}")
    if t.dtype != input.dtype and not (t.dtype == torch.float32 and input.dtype in (torch.float16, torch.bfloat16)):
        raise ValueError(f"{what}: {name} has dtype {t.dtype} but the input has dtype {input.dtype}; "
                         "convert one of them (e.g. module.double() or input.float())")


def _check_eps(eps, allow_none: bool = False) -> None:
    if eps is None and allow_none:
        return
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0{' or None' if allow_none else ''}, got {eps!r}")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _as_normalized_shape(normalized_shape) -> tuple[int, ...]:
    """An int or a sequence of ints (torch.Size included) as a tuple of positive ints."""
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    try:
        shape = tuple(normalized_shape)
    except TypeError:
        raise ValueError(f"normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}") from None
    if not shape:
        raise ValueError("normalized_shape must have at least one dim, got ()")
    return tuple(_positive_int(s, f"normalized_shape {shape}: each size") for s in shape)


def _check_trailing(input: torch.Tensor, shape: tuple[int, ...], what: str) -> None:
    if input.dim() < len(shape) or tuple(input.shape[input.dim() - len(shape):]) != shape:
        raise ValueError(f"{what} expected input whose last {len(shape)} dim(s) are {shape}, "
                         f"got input of shape {tuple(input.shape)}")


def _check_groups(input: torch.Tensor, num_groups, what: str) -> int:
    num_groups = _positive_int(num_groups, "num_groups")
    channels = input.shape[1]
    if channels % num_groups:
        raise ValueError(f"{what}: {channels} channels (dim 1 of input shape {tuple(input.shape)}) cannot be "
                         f"split into {num_groups} equal groups: num_groups must divide the channel count")
    return num_groups


def _compute_dtype(input: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 in float32, as torch's norm kernels accumulate (their 11 or 8 bits of mantissa
    lose the mean of many values); other dtypes as they are."""
    return input.float() if input.dtype in (torch.float16, torch.bfloat16) else input


def rms_eps(dtype: torch.dtype) -> float:
    """torch's RMSNorm default eps (eps=None): the machine epsilon of the computation dtype,
    torch.finfo(float32).eps = 1.19e-7 for float16, bfloat16 and float32 inputs (computed in float32),
    torch.finfo(float64).eps = 2.22e-16 for float64."""
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def _standardize(x: torch.Tensor, dims, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_hat, mu, sigma^2) over dims, keepdim: mu = mean x, sigma^2 = mean (x - mu)^2 (biased),
    x_hat = (x - mu) / sqrt(sigma^2 + eps)."""
    mean = x.mean(dims, keepdim=True)
    # two passes: E[x^2] - E[x]^2 cancels catastrophically for large means
    centred = x - mean
    var = (centred * centred).mean(dims, keepdim=True)
    return centred * torch.rsqrt(var + eps), mean, var


def _channel_view(t: torch.Tensor | None, input: torch.Tensor) -> torch.Tensor | None:
    """A (C,) vector as (1, C, 1, ...), to broadcast over input (N, C, *)."""
    return None if t is None else t.view((1, -1) + (1,) * (input.dim() - 2))


def _affine(x_hat: torch.Tensor, weight, bias, dtype) -> torch.Tensor:
    """weight * x_hat + bias (either may be None), in the input's dtype."""
    if weight is not None:
        x_hat = x_hat * weight
    if bias is not None:
        x_hat = x_hat + bias
    return x_hat.to(dtype)


# ----------------------------------------------------------------------------- functional forms
def layer_norm(input: torch.Tensor, normalized_shape, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Layer normalization (Ba et al. 2016), like ``torch.nn.functional.layer_norm``.

    For each example, over the last D = len(normalized_shape) dims (H = their number of values):
        mu = (1/H) sum_i x_i,   sigma^2 = (1/H) sum_i (x_i - mu)^2  (biased)
        x_hat = (x - mu) / sqrt(sigma^2 + eps),   y = gamma * x_hat + beta  (elementwise)

    input: (*, *normalized_shape); weight (gamma), bias (beta): normalized_shape or None.
    No batch statistics: each example (each leading index) is normalized on its own.
    """
    _check_input(input, "layer_norm")
    shape = _as_normalized_shape(normalized_shape)
    _check_trailing(input, shape, f"layer_norm with normalized_shape {shape}")
    _check_param("layer_norm", "weight", weight, shape, input)
    _check_param("layer_norm", "bias", bias, shape, input)
    _check_eps(eps)
    dims = tuple(range(-len(shape), 0))
    x_hat, _, _ = _standardize(_compute_dtype(input), dims, eps)
    return _affine(x_hat, weight, bias, input.dtype)


def rms_norm(input: torch.Tensor, normalized_shape, weight: torch.Tensor | None = None,
             eps: float | None = None) -> torch.Tensor:
    """Root-mean-square layer normalization (Zhang & Sennrich 2019), like ``torch.nn.functional.rms_norm``.

    For each example, over the last D = len(normalized_shape) dims (H values), without centring:
        RMS(x) = sqrt((1/H) sum_i x_i^2 + eps),   y = x / RMS(x) * gamma  (elementwise, no beta)

    eps=None: `rms_eps` of the input's dtype, as torch (2.2e-16 for float64, 1.2e-7 otherwise).
    input: (*, *normalized_shape); weight (gamma): normalized_shape or None.
    """
    _check_input(input, "rms_norm")
    shape = _as_normalized_shape(normalized_shape)
    _check_trailing(input, shape, f"rms_norm with normalized_shape {shape}")
    _check_param("rms_norm", "weight", weight, shape, input)
    _check_eps(eps, allow_none=True)
    x = _compute_dtype(input)
    dims = tuple(range(-len(shape), 0))
    mean_square = (x * x).mean(dims, keepdim=True)
    eps = rms_eps(input.dtype) if eps is None else eps
    return _affine(x * torch.rsqrt(mean_square + eps), weight, None, input.dtype)


def group_norm(input: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Group normalization (Wu & He 2018), like ``torch.nn.functional.group_norm``.

    The C channels of input (N, C, *) are split into num_groups groups of C / num_groups consecutive
    channels. For each example n and group g, over the group's channels and all positions (m values):
        mu_ng = mean x,   sigma^2_ng = mean (x - mu_ng)^2  (biased)
        x_hat = (x - mu_ng) / sqrt(sigma^2_ng + eps),   y = gamma_c * x_hat + beta_c  (per channel)

    weight (gamma), bias (beta): (C,) or None. num_groups = 1 is LayerNorm over (C, *) with gamma and
    beta per channel; num_groups = C is InstanceNorm. ValueError unless num_groups divides C.
    """
    _check_input(input, "group_norm", min_dims=2)
    num_groups = _check_groups(input, num_groups, "group_norm")
    channels = input.shape[1]
    _check_param("group_norm", "weight", weight, (channels,), input)
    _check_param("group_norm", "bias", bias, (channels,), input)
    _check_eps(eps)
    x = _compute_dtype(input)
    # one row of values per (example, group): the group's channels are consecutive in memory order
    x_hat, _, _ = _standardize(x.reshape(x.shape[0], num_groups, -1), 2, eps)
    return _affine(x_hat.reshape(input.shape), _channel_view(weight, input), _channel_view(bias, input),
                   input.dtype)


def rms_group_norm(input: torch.Tensor, num_groups: int, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None, eps: float | None = None) -> torch.Tensor:
    """GroupNorm without centring: RMS norm over each group of channels of each example.

    For each example n and group g of C / num_groups consecutive channels (all positions, m values):
        RMS_ng = sqrt(mean x^2 + eps),   y = gamma_c * x / RMS_ng + beta_c  (per channel)

    input (N, C, *); weight (gamma), bias (beta): (C,) or None; eps=None: `rms_eps` as RMSNorm.
    num_groups = 1 is RMSNorm over (C, *) with gamma per channel (and beta, unless bias is None).
    """
    _check_input(input, "rms_group_norm", min_dims=2)
    num_groups = _check_groups(input, num_groups, "rms_group_norm")
    channels = input.shape[1]
    _check_param("rms_group_norm", "weight", weight, (channels,), input)
    _check_param("rms_group_norm", "bias", bias, (channels,), input)
    _check_eps(eps, allow_none=True)
    x = _compute_dtype(input)
    rows = x.reshape(x.shape[0], num_groups, -1)
    eps = rms_eps(input.dtype) if eps is None else eps
    x_hat = rows * torch.rsqrt((rows * rows).mean(2, keepdim=True) + eps)
    return _affine(x_hat.reshape(input.shape), _channel_view(weight, input), _channel_view(bias, input),
                   input.dtype)


def instance_norm(input: torch.Tensor, running_mean: torch.Tensor | None = None,
                  running_var: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> torch.Tensor:
    """Instance normalization (Ulyanov et al. 2016), like ``torch.nn.functional.instance_norm``.

    use_input_stats=True: for each example n and channel c, over the L spatial positions:
        mu_nc = mean x,   sigma^2_nc = mean (x - mu_nc)^2  (biased)
        x_hat = (x - mu_nc) / sqrt(sigma^2_nc + eps)
      and, when the running tensors are given, in place, averaging over the N examples:
        running_mean <- (1 - momentum) * running_mean + momentum * mean_n mu_nc
        running_var  <- (1 - momentum) * running_var  + momentum * mean_n sigma^2_nc * L / (L - 1)
    use_input_stats=False: x_hat = (x - running_mean_c) / sqrt(running_var_c + eps).
    Either way y = gamma_c * x_hat + beta_c.

    input: (N, C, *spatial) with at least one spatial dim; running_mean, running_var, weight, bias:
    (C,) or None. With use_input_stats a channel needs L > 1 positions (ValueError otherwise, as torch).
    """
    _check_input(input, "instance_norm", min_dims=3)
    channels = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_param("instance_norm", name, t, (channels,), input)
    if (running_mean is None) != (running_var is None):
        raise ValueError("instance_norm: running_mean and running_var must both be given or both be None")
    if not use_input_stats and running_mean is None:
        raise ValueError("instance_norm: running_mean and running_var are required when use_input_stats=False")
    _check_eps(eps)
    x = _compute_dtype(input)
    if use_input_stats:
        positions = math.prod(input.shape[2:])
        if positions < 2:
            raise ValueError(f"instance_norm: expected more than 1 spatial element when training, "
                             f"got input of shape {tuple(input.shape)}")
        dims = tuple(range(2, input.dim()))
        x_hat, mean, var = _standardize(x, dims, eps)
        if running_mean is not None:
            # the mean over examples of each instance's statistics, tracked unbiased as torch does
            update_running_stats_(running_mean, running_var, mean.mean(0).view(-1), var.mean(0).view(-1),
                                  momentum, count=positions)
    else:
        mean, var = _channel_view(running_mean, x), _channel_view(running_var, x)
        x_hat = (x - mean) * torch.rsqrt(var + eps)
    return _affine(x_hat, _channel_view(weight, input), _channel_view(bias, input), input.dtype)


# ----------------------------------------------------------------------------- modules
class LayerNorm(nn.Module):
    """Layer normalization over the last len(normalized_shape) dims, like ``torch.nn.LayerNorm``.

    For each example: mu and sigma^2 (biased) over those dims' H values,
        y = (x - mu) / sqrt(sigma^2 + eps) * weight + bias
    with weight (gamma, ones) and bias (beta, zeros) of shape normalized_shape, elementwise
    (elementwise_affine=False: neither; bias=False: gamma only). The same in train and eval.

    Input (*, *normalized_shape), output the same shape. A (N, C, H, W) image per example:
    LayerNorm((C, H, W)); a transformer's (N, T, D) tokens, each on its own: LayerNorm(D).
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        _check_eps(eps)
        self.normalized_shape = _as_normalized_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        factory = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(self.normalized_shape, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_input(input, type(self).__name__)
        _check_trailing(input, self.normalized_shape, f"{type(self).__name__}({self.normalized_shape})")
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class RMSNorm(nn.Module):
    """Root-mean-square layer normalization (Zhang & Sennrich 2019), like ``torch.nn.RMSNorm``:
    LayerNorm without the mean, and without beta.

    For each example, over the last len(normalized_shape) dims (H values):
        y = x / sqrt((1/H) sum_i x_i^2 + eps) * weight
    with weight (gamma, ones, shape normalized_shape; elementwise_affine=False: none). eps=None
    means torch.finfo of the computation dtype (see `rms_eps`), as torch. The same in train and eval.

    Input (*, *normalized_shape), output the same shape.
    """

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True,
                 device=None, dtype=None):
        super().__init__()
        _check_eps(eps, allow_none=True)
        self.normalized_shape = _as_normalized_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            nn.init.ones_(self.weight)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_input(input, type(self).__name__)
        _check_trailing(input, self.normalized_shape, f"{type(self).__name__}({self.normalized_shape})")
        return rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class _GroupedNorm(nn.Module):
    """What GroupNorm and RMSGroupNorm share: num_groups, num_channels, eps, affine (weight ones, bias
    zeros, (C,) each), the input checks and torch GroupNorm's repr."""

    _allow_none_eps = False

    def __init__(self, num_groups: int, num_channels: int, eps, affine: bool, device, dtype, bias: bool):
        super().__init__()
        num_groups = _positive_int(num_groups, "num_groups")
        num_channels = _positive_int(num_channels, "num_channels")
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups}): "
                             "each group holds num_channels / num_groups channels")
        _check_eps(eps, allow_none=self._allow_none_eps)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.empty(num_channels, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_channels, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check(self, input) -> None:
        name = f"{type(self).__name__}({self.num_groups}, {self.num_channels})"
        _check_input(input, name, min_dims=2)
        if input.shape[1] != self.num_channels:
            raise ValueError(f"{name} expected {self.num_channels} channels on dim 1, "
                             f"got input of shape {tuple(input.shape)}")

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(_GroupedNorm):
    """Group normalization (Wu & He 2018), like ``torch.nn.GroupNorm``.

    Input (N, C, *), C = num_channels, split into num_groups groups of C / num_groups consecutive
    channels. For each example and group, mu and sigma^2 (biased) over the group's channels and
    positions; y = (x - mu) / sqrt(sigma^2 + eps) * weight_c + bias_c, with weight (gamma, ones) and
    bias (beta, zeros) per channel, (C,) (affine=False: neither; bias=False: gamma only).
    The same in train and eval. GroupNorm(1, C) is LayerNorm over (C, *) with gamma and beta per
    channel; GroupNorm(C, C) is InstanceNorm with affine=True.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None,
                 dtype=None, *, bias: bool = True):
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check(input)
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class RMSGroupNorm(_GroupedNorm):
    """GroupNorm without centring (see `rms_group_norm`); torch has no such module.

    Input (N, C, *): for each example and group of C / num_groups channels, over its m values,
        y = x / sqrt(mean x^2 + eps) * weight_c + bias_c
    with weight (gamma, ones) and bias (beta, zeros) per channel (affine=False: neither; bias=False:
    gamma only, which with num_groups=1 is torch's RMSNorm((C, *)) with its weight constant over
    positions). eps=None: `rms_eps`, as RMSNorm. The registry's 'rms' (`bnlab.variants`) is
    RMSGroupNorm(1, C): RMS over a whole example as its 'ln' is GroupNorm(1, C), with beta because the
    models' linear maps and convolutions before a norm have no bias of their own.
    """

    _allow_none_eps = True

    def __init__(self, num_groups: int, num_channels: int, eps: float | None = None, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True):
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check(input)
        return rms_group_norm(input, self.num_groups, self.weight, self.bias, self.eps)


class _InstanceNorm(nn.Module):
    """Instance normalization, like torch's InstanceNorm1d/2d/3d: same arguments (affine and
    track_running_stats default to False), parameters, buffers (running_mean, running_var,
    num_batches_tracked when tracking) and state_dict keys.

    Each example's channels are normalized over their spatial positions (see `instance_norm`):
        y = (x - mu_nc) / sqrt(sigma^2_nc + eps) * weight_c + bias_c
    In training, or with track_running_stats=False in eval too, with each instance's own mu_nc and
    sigma^2_nc (biased). With track_running_stats=True, training also updates
        running_mean <- (1 - momentum) * running_mean + momentum * mean_n mu_nc
        running_var  <- (1 - momentum) * running_var  + momentum * mean_n sigma^2_nc * L / (L - 1)
    (L positions: the unbiased variance) and eval normalizes with running_mean and running_var
    instead, like BN's eval. As torch's: momentum=None leaves the running statistics where they are
    (torch passes momentum 0; no cumulative average as BN's momentum=None), and
    num_batches_tracked is kept but never advanced.

    Input (N, C, *spatial) or, unbatched, (C, *spatial). Unlike torch, a channel count other than
    num_features is a ValueError even with affine=False (torch only warns there, and ignores
    num_features).
    """

    _version = 2
    _spatial_dims = 1

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        _check_eps(eps)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        _check_input(input, name)
        batched, unbatched = self._spatial_dims + 2, self._spatial_dims + 1
        if input.dim() not in (unbatched, batched):
            raise ValueError(f"{name} expected {unbatched}D (unbatched) or {batched}D input, got {input.dim()}D "
                             f"(shape {tuple(input.shape)})")
        channel_dim = input.dim() - self._spatial_dims - 1
        if input.shape[channel_dim] != self.num_features:
            raise ValueError(f"{name}({self.num_features}) expected {self.num_features} channels on dim "
                             f"{channel_dim}, got input of shape {tuple(input.shape)}")
        x = input.unsqueeze(0) if input.dim() == unbatched else input
        out = instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            self.momentum if self.momentum is not None else 0.0, self.eps)
        return out.squeeze(0) if input.dim() == unbatched else out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # state_dicts from before torch 0.4.1 (version < 2) have no num_batches_tracked; keep ours, as torch
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = (self.num_batches_tracked if self.num_batches_tracked.device.type != "meta"
                               else torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


class InstanceNorm1d(_InstanceNorm):
    """InstanceNorm for (N, C, L) or unbatched (C, L) input, like torch.nn.InstanceNorm1d."""
    _spatial_dims = 1


class InstanceNorm2d(_InstanceNorm):
    """InstanceNorm for (N, C, H, W) or unbatched (C, H, W) input, like torch.nn.InstanceNorm2d."""
    _spatial_dims = 2


class InstanceNorm3d(_InstanceNorm):
    """InstanceNorm for (N, C, D, H, W) or unbatched (C, D, H, W) input, like torch.nn.InstanceNorm3d."""
    _spatial_dims = 3


# ----------------------------------------------------------------------------- weight normalization
class WeightNormLinear(nn.Module):
    """A linear layer with weight normalization (Salimans & Kingma 2016): each output unit i's weight
    vector is a direction v_i and a length g_i,

        w_i = g_i * v_i / ||v_i||_2,   y = x W^T + b

    so its pre-activation is a_i = g_i (v_i . x) / ||v_i||: a normalization of the weights, not of
    the data, the same for every example and in train and eval (and unchanged by v_i -> c v_i, c > 0).

    Parameters and state_dict keys are those of ``torch.nn.utils.weight_norm(nn.Linear(...))``:
    weight_g (out_features, 1), weight_v (out_features, in_features), bias (out_features) (bias=False:
    none), so a state_dict loads both ways. Initialized as nn.Linear, then g_i = ||v_i||: the layer
    starts as the nn.Linear it would be. `weight` is the effective W, computed on each access.
    x: (*, in_features) -> (*, out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        factory = {"device": device, "dtype": dtype}
        self.weight_g = nn.Parameter(torch.empty(out_features, 1, **factory))
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's initialization (uniform, bound 1 / sqrt(fan_in) for the bias), then g = ||v||
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=1, keepdim=True))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight(self) -> torch.Tensor:
        """W = g * v / ||v||, row by row: (out_features, in_features)."""
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        _check_input(input, type(self).__name__, min_dims=1)
        if input.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}({self.in_features}, {self.out_features}) expected "
                             f"{self.in_features} features on the last dim, got input of shape {tuple(input.shape)}")
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
