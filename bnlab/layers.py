"""`BatchNorm`, a from-scratch ``torch.nn`` module that can stand in for ``torch.nn.BatchNorm1d/2d/3d``,
and two variants that change how a batch is normalized in training.

Same constructor arguments, parameters, buffers and state_dict keys as torch's modules, so a
state_dict loads both ways. One class handles (N, C) to (N, C, D, H, W) inputs; ``BatchNorm1d``,
``BatchNorm2d`` and ``BatchNorm3d`` add torch's input-rank checks for drop-in use.

``BatchRenorm`` (Ioffe 2017) corrects the batch statistics towards the running ones, so that an
example's training output depends less on the rest of its batch (lesson 08, small batches).
``RangeBatchNorm`` (Banner et al. 2018) estimates the scale from the batch's range instead of its
standard deviation. Both evaluate like BN, y = weight * (x - running_mean) / sqrt(running_var + eps)
+ bias, and share BN's state_dict keys, so a BN state_dict loads into them.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .functional import _check_inputs, _shapes, batch_norm

__all__ = ["BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
           "BatchRenorm", "BatchRenorm1d", "BatchRenorm2d", "batch_renorm",
           "RangeBatchNorm", "RangeBatchNorm1d", "RangeBatchNorm2d", "range_batch_norm",
           "expected_gaussian_range", "range_correction", "RANGE_CORRECTIONS"]


class _RunningStatsNorm(nn.Module):
    """What BatchNorm, BatchRenorm and RangeBatchNorm share with torch's BatchNorm: constructor
    checks, parameters and buffers under the same names and in the same order, reset, input
    checks, and the loading of state_dicts without num_batches_tracked."""

    _version = 2
    _valid_dims = (2, 3, 4, 5)

    def __init__(self, num_features: int, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool, device, dtype, bias: bool = True):
        super().__init__()
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            # bias=False (torch >= 2.10): learn gamma only
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

    def _check_input(self, input) -> None:
        if not isinstance(input, torch.Tensor):
            raise ValueError(f"input must be a torch.Tensor, got {type(input).__name__}")
        if input.dim() not in self._valid_dims:
            want = " or ".join(f"{d}D" for d in self._valid_dims)
            raise ValueError(f"{type(self).__name__} expected {want} input, got {input.dim()}D "
                             f"(shape {tuple(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expected {self.num_features} "
                             f"channels on dim 1, got input of shape {tuple(input.shape)}")

    def _momentum_factor(self) -> float:
        """The weight of this batch in the running averages; the counter is only advanced once the
        forward pass has succeeded, so a rejected input leaves the module as it was."""
        if self.momentum is None:  # cumulative average, as torch
            return 1.0 / (int(self.num_batches_tracked) + 1)
        return self.momentum

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # state_dicts from before torch 0.4.1 (version < 2) have no num_batches_tracked; keep ours
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            # as torch: keep the module's own count (0 when fresh), not reset it
            state_dict[key] = (self.num_batches_tracked if self.num_batches_tracked.device.type != "meta"
                               else torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class BatchNorm(_RunningStatsNorm):
    """Batch normalization over dim 1 (features or channels) of a 2-D to 5-D input.

    Training: normalize with the batch's own mu and var (biased) and update
        running_mean <- (1 - momentum) * running_mean + momentum * mu
        running_var  <- (1 - momentum) * running_var  + momentum * var * m / (m - 1)
    (momentum=None: cumulative average, factor 1 / num_batches_tracked).
    Eval: normalize with running_mean and running_var. Either way y = weight * x_hat + bias.
    With track_running_stats=False there are no running buffers and eval also uses batch statistics.
    affine=False: no weight or bias; affine=True, bias=False: a weight (gamma) but no bias (beta).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        # no running buffers means batch statistics in eval too (as torch)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # in training without tracking, do not touch the buffers
        keep = not self.training or self.track_running_stats
        return batch_norm(input,
                          self.running_mean if keep else None,
                          self.running_var if keep else None,
                          self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        # torch >= 2.10's repr, bias included. Older torch has no bias argument and leaves it out, but
        # ours always has it, and a lesson's printed model must not change with the torch installed.
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(BatchNorm):
    """BatchNorm for (N, C) or (N, C, L) input, like torch.nn.BatchNorm1d."""
    _valid_dims = (2, 3)


class BatchNorm2d(BatchNorm):
    """BatchNorm for (N, C, H, W) input, like torch.nn.BatchNorm2d."""
    _valid_dims = (4,)


class BatchNorm3d(BatchNorm):
    """BatchNorm for (N, C, D, H, W) input, like torch.nn.BatchNorm3d."""
    _valid_dims = (5,)


# ----------------------------------------------------------------------------- variants of BN
def _affine(x_hat: torch.Tensor, weight, bias, shape, dtype) -> torch.Tensor:
    """weight * x_hat + bias, returned in the input's dtype: with float16/bfloat16 input and
    float32 parameters (mixed precision) the product is float32, and torch's BN returns float16."""
    if weight is not None:
        x_hat = x_hat * weight.view(shape)
    if bias is not None:
        x_hat = x_hat + bias.view(shape)
    return x_hat.to(dtype)


def _compute_precision(input: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 input in float32: with 11 or 8 bits of mantissa, x - mu of values far from
    zero keeps few digits, and sums over many values lose more (torch's BN accumulates in float32)."""
    return input.float() if input.dtype in (torch.float16, torch.bfloat16) else input


def _normalize_with_running_stats(input, running_mean, running_var, eps, shape) -> torch.Tensor:
    """The eval-mode x_hat of both variants, BN's own: (x - running_mean) / sqrt(running_var + eps)."""
    return (input - running_mean.view(shape)) / torch.sqrt(running_var.view(shape) + eps)


def _check_clip_limits(r_max, d_max) -> None:
    # not (x >= 1) also rejects NaN
    if isinstance(r_max, bool) or not isinstance(r_max, (int, float)) or not r_max >= 1:
        raise ValueError(f"r_max must be a number >= 1 (r is clipped to [1/r_max, r_max]), got {r_max!r}")
    if isinstance(d_max, bool) or not isinstance(d_max, (int, float)) or not d_max >= 0:
        raise ValueError(f"d_max must be a number >= 0 (d is clipped to [-d_max, d_max]), got {d_max!r}")


def batch_renorm(input, running_mean, running_var, weight=None, bias=None, training=False,
                 momentum=0.1, eps=1e-5, r_max=3.0, d_max=5.0):
    """Batch renormalization (Ioffe 2017) over dim 1 of ``input``.

    Training, for each channel c over its m values (batch and spatial positions):
        mu_B = mean x_c,   sigma_B = sqrt(var_B + eps)   (var_B biased, as BN normalizes)
        sigma = sqrt(running_var + eps)
        r = clip(sigma_B / sigma, 1/r_max, r_max),   d = clip((mu_B - running_mean) / sigma, -d_max, d_max)
        x_hat = (x - mu_B) / sigma_B * r + d        r and d are constants in the backward pass
    then running_mean and running_var are updated in place exactly as batch_norm does, after r and
    d were computed from the old values. Eval: x_hat = (x - running_mean) / sigma. Then
    y = weight * x_hat + bias.

    Where r and d are not clipped, x_hat = (x - running_mean) / sigma: the eval output, whatever
    else is in the batch. r_max=1, d_max=0 gives r=1, d=0, which is batch_norm. Since r and d
    are constants, dL/dx is r times batch_norm's dL/dx.

    input: (N, C, *spatial); running_mean, running_var: (C,), required; weight, bias: (C,) or None.
    """
    _check_inputs(input, running_mean, running_var, weight, bias, training, eps)
    if running_mean is None:
        raise ValueError("batch_renorm needs running_mean and running_var: r and d compare the batch "
                         "statistics with them")
    _check_clip_limits(r_max, d_max)
    dims, shape = _shapes(input)
    x = _compute_precision(input)
    if not training:
        return _affine(_normalize_with_running_stats(x, running_mean, running_var, eps, shape),
                       weight, bias, shape, input.dtype)
    m = x.numel() // x.shape[1]
    mean = x.mean(dims)
    centred = x - mean.view(shape)
    var = (centred * centred).mean(dims)
    sigma_batch = torch.sqrt(var + eps)
    with torch.no_grad():
        sigma_running = torch.sqrt(running_var + eps)
        r = (sigma_batch / sigma_running).clamp(1.0 / r_max, r_max).to(x.dtype)
        d = ((mean - running_mean) / sigma_running).clamp(-d_max, d_max).to(x.dtype)
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        # unbiased variance for the running estimate, as torch does
        running_var.mul_(1 - momentum).add_(var.to(running_var.dtype) * (m / (m - 1)), alpha=momentum)
    x_hat = centred * (r / sigma_batch).view(shape) + d.view(shape)
    return _affine(x_hat, weight, bias, shape, input.dtype)


class BatchRenorm(_RunningStatsNorm):
    """Batch renormalization (Ioffe 2017) over dim 1 (features or channels) of a 2-D to 5-D input.

    Training normalizes with the batch's mu_B and sigma_B, then corrects towards the running
    statistics with r = clip(sigma_B / sigma, 1/r_max, r_max) and
    d = clip((mu_B - running_mean) / sigma, -d_max, d_max), sigma = sqrt(running_var + eps):
        x_hat = (x - mu_B) / sigma_B * r + d,   y = weight * x_hat + bias
    (see batch_renorm). Running statistics are updated as BN's, after r and d are computed.
    Eval is BN's eval. While num_batches_tracked < warmup_steps, r = 1 and d = 0 (plain BN): the
    running statistics are not worth correcting towards yet. The paper raises r_max from 1 to 3
    and d_max from 0 to 5 over training; r_max and d_max are plain attributes, so a training loop
    can change them between steps.

    Always tracks running statistics (r and d are defined by them): there is no
    track_running_stats argument. Parameters and buffers are torch BatchNorm's, so a BN state_dict
    loads into it and back.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 0,
                 device=None, dtype=None):
        _check_clip_limits(r_max, d_max)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        self.r_max = r_max
        self.d_max = d_max
        self.warmup_steps = warmup_steps

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        if not self.training:
            return batch_renorm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps, self.r_max, self.d_max)
        warming_up = int(self.num_batches_tracked) < self.warmup_steps
        r_max, d_max = (1.0, 0.0) if warming_up else (self.r_max, self.d_max)
        out = batch_renorm(input, self.running_mean, self.running_var, self.weight, self.bias,
                           True, self._momentum_factor(), self.eps, r_max, d_max)
        self.num_batches_tracked.add_(1)
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"r_max={self.r_max}, d_max={self.d_max}, warmup_steps={self.warmup_steps}")


class BatchRenorm1d(BatchRenorm):
    """BatchRenorm for (N, C) or (N, C, L) input."""
    _valid_dims = (2, 3)


class BatchRenorm2d(BatchRenorm):
    """BatchRenorm for (N, C, H, W) input."""
    _valid_dims = (4,)


RANGE_CORRECTIONS = ("gaussian", "paper")


@functools.lru_cache(maxsize=256)
def expected_gaussian_range(n: int) -> float:
    """E[max - min] of n independent standard normal values (d2(n) in quality-control tables).

        d2(n) = integral over x of 1 - Phi(x)^n - (1 - Phi(x))^n
              = 2 * integral_0^inf of 1 - Phi(x)^n - Phi(-x)^n      (symmetric in x)

    d2(2) = 2/sqrt(pi) = 1.128, d2(3) = 3/sqrt(pi), d2(10) = 3.078; it grows like 2 sqrt(2 ln n).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n == 1:
        return 0.0  # exactly, rather than the integral's rounding error
    # the integrand is smooth and even, so the trapezoid rule converges fast: 4001 points give
    # 2/sqrt(pi) to 1e-15; the upper end lies 8 beyond where the maximum of n values sits
    top = math.sqrt(2 * math.log(max(n, 2))) + 8.0
    x = torch.linspace(0.0, top, 4001, dtype=torch.float64)
    # 1 - Phi^n as -expm1(n log Phi): stays accurate where Phi^n is within rounding of 1
    integrand = -torch.expm1(n * torch.special.log_ndtr(x)) - torch.exp(n * torch.special.log_ndtr(-x))
    return 2.0 * float(torch.trapezoid(integrand, x))


def range_correction(n: int, correction: str = "gaussian") -> float:
    """C(n) in RangeBatchNorm's scale s = C(n) * range, for a channel with n values.

    'gaussian': C(n) = 1 / expected_gaussian_range(n), so that E[s] = sigma for Gaussian data.
    'paper':    C(n) = 1 / sqrt(2 ln n), Banner et al.'s constant. For Gaussian data E[s] is
                0.96 sigma at n=2 but 1.43 sigma at n=10, 1.65 at 100, 1.80 at 10^4: s tends to
                2 sigma, since E[max] ~ sqrt(2 ln n) sigma and the range spans both tails.
    """
    if correction not in RANGE_CORRECTIONS:
        raise ValueError(f"correction must be one of {RANGE_CORRECTIONS}, got {correction!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"the range of a channel needs n >= 2 values, got n={n!r}")
    if correction == "paper":
        return 1.0 / math.sqrt(2.0 * math.log(n))
    return 1.0 / expected_gaussian_range(n)


def range_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5, correction="gaussian"):
    """Range batch normalization (Banner, Hubara, Hoffer & Soudry 2018) over dim 1 of ``input``.

    Training, for each channel c over its n values (batch and spatial positions):
        mu = mean x_c,   range = max(x_c - mu) - min(x_c - mu),   s = C(n) * range
        x_hat = (x - mu) / sqrt(s^2 + eps)
        running_mean <- (1 - momentum) * running_mean + momentum * mu
        running_var  <- (1 - momentum) * running_var  + momentum * s^2     (in place, when given)
    Eval (or training without running tensors: batch statistics): x_hat = (x - running_mean) /
    sqrt(running_var + eps). Then y = weight * x_hat + bias. C(n) is range_correction(n, correction).
    Gradients flow through mu, max and min by autograd (to the arg-max and arg-min values).

    input: (N, C, *spatial); running_mean, running_var, weight, bias: (C,) or None.
    """
    _check_inputs(input, running_mean, running_var, weight, bias, training, eps)
    if correction not in RANGE_CORRECTIONS:
        raise ValueError(f"correction must be one of {RANGE_CORRECTIONS}, got {correction!r}")
    dims, shape = _shapes(input)
    x = _compute_precision(input)
    if not training:
        return _affine(_normalize_with_running_stats(x, running_mean, running_var, eps, shape),
                       weight, bias, shape, input.dtype)
    n = x.numel() // x.shape[1]
    mean = x.mean(dims)
    centred = x - mean.view(shape)
    scale = range_correction(n, correction) * (centred.amax(dims) - centred.amin(dims))
    scale_sq = scale * scale
    if running_mean is not None:
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_(scale_sq.to(running_var.dtype), alpha=momentum)
    # eps inside the square root, as BN's sqrt(var + eps): s^2 plays the part of var
    x_hat = centred / torch.sqrt(scale_sq + eps).view(shape)
    return _affine(x_hat, weight, bias, shape, input.dtype)


class RangeBatchNorm(_RunningStatsNorm):
    """Range batch normalization (Banner et al. 2018) over dim 1 of a 2-D to 5-D input.

    Training normalizes each channel's n values by a scale from their range instead of their
    standard deviation, s = C(n) * (max(x - mu) - min(x - mu)), with BN's eps semantics:
        x_hat = (x - mu) / sqrt(s^2 + eps),   y = weight * x_hat + bias
    (see range_batch_norm). running_var tracks s^2, so eval is BN's eval. Max and min need no
    sums of squares, which is what makes the layer attractive for low-precision training.

    C(n) (see range_correction): the paper's 1/sqrt(2 ln n) makes s an estimate of about 2 sigma,
    not sigma, for large Gaussian batches (1.43 sigma at n=10, 1.80 sigma at n=10^4), so
    correction='gaussian' (the default) divides by the exact expected range of n standard normal
    values instead: E[s] = sigma for Gaussian data at every n. correction='paper' is the paper's.
    Even corrected, the range is a rough estimate: over Gaussian batches s/sigma has a standard
    deviation of 0.76 at n=2, 0.26 at n=10, 0.12 at n=100, 0.077 at n=1000 and 0.055 at
    n=10^4; it shrinks like 1/ln n, not like BN's 1/sqrt(2n) (0.07 at n=100). And running_var
    tracks s^2, whose mean is (1 + that sd^2) sigma^2: 1.57 sigma^2 at n=2, 1.07 at n=10,
    within 1.5% for n >= 100. The range also follows the two most extreme values, so on
    heavy-tailed data s overestimates sigma more.

    With n=2 (two values per channel), x - mu = +-(x1 - x2)/2 and range = |x1 - x2|, so
    x_hat = +-1 / (2 C(2)) up to eps, whatever the two values: +-1/sqrt(pi) = +-0.564 with the
    Gaussian C(2), +-0.589 with the paper's (BN gives +-1). As with BN, only the sign is left.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, correction: str = "gaussian"):
        if correction not in RANGE_CORRECTIONS:
            raise ValueError(f"correction must be one of {RANGE_CORRECTIONS}, got {correction!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.correction = correction

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        # no running buffers means batch statistics in eval too (as torch's BN)
        use_batch_stats = self.training or self.running_mean is None
        update = self.training and self.track_running_stats
        out = range_batch_norm(input,
                               self.running_mean if update or not use_batch_stats else None,
                               self.running_var if update or not use_batch_stats else None,
                               self.weight, self.bias, use_batch_stats,
                               self._momentum_factor() if update else 0.0, self.eps, self.correction)
        if update:
            self.num_batches_tracked.add_(1)
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}, correction={self.correction!r}")


class RangeBatchNorm1d(RangeBatchNorm):
    """RangeBatchNorm for (N, C) or (N, C, L) input."""
    _valid_dims = (2, 3)


class RangeBatchNorm2d(RangeBatchNorm):
    """RangeBatchNorm for (N, C, H, W) input."""
    _valid_dims = (4,)
