"""`BatchNorm`, a from-scratch ``torch.nn`` module that can stand in for ``torch.nn.BatchNorm1d/2d/3d``,
and variants that change how a batch is normalized in training: modules only, as ``torch.nn``;
their functional forms live in `bnlab.functional` (and are re-exported here).

Same constructor arguments, parameters, buffers and state_dict keys as torch's modules, so a
state_dict loads both ways. One class handles (N, C) to (N, C, D, H, W) inputs; ``BatchNorm1d``,
``BatchNorm2d`` and ``BatchNorm3d`` add torch's input-rank checks for drop-in use.

``BatchRenorm`` (Ioffe 2017) corrects the batch statistics towards the running ones, so that an
example's training output depends less on the rest of its batch (lesson 08, small batches).
``RangeBatchNorm`` (Banner et al. 2018) estimates the scale from the batch's range instead of its
standard deviation. Both evaluate like BN, y = weight * (x - running_mean) / sqrt(running_var + eps)
+ bias, and share BN's state_dict keys, so a BN state_dict loads into them. So do the two of lessons
09-10: ``GhostBatchNorm`` (Hoffer et al. 2017) is BN applied to each virtual batch of a few examples,
and ``NoisyBatchNorm`` (Santurkar et al. 2018) adds a random per-channel scale and shift after BN at
every training step. `is_batchnorm` is the
course's one test for "a BN layer", torch's or ours; `example_weighting` evaluates a model's BN
layers with Summers & Dinneen's inference example weighting (lesson 10).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

# the functionals lived here before bnlab.functional held them all; old imports keep working
from .functional import (
    RANGE_CORRECTIONS,
    batch_norm,
    batch_renorm,
    check_renorm_limits,
    example_weighted_batch_norm,
    expected_gaussian_range,
    range_batch_norm,
    range_correction,
)

__all__ = ["BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
           "BatchRenorm", "BatchRenorm1d", "BatchRenorm2d",
           "RangeBatchNorm", "RangeBatchNorm1d", "RangeBatchNorm2d",
           "GhostBatchNorm", "GhostBatchNorm1d", "GhostBatchNorm2d", "check_virtual_batch_size",
           "NoisyBatchNorm", "NoisyBatchNorm1d", "NoisyBatchNorm2d",
           "is_batchnorm", "BATCHNORM_TYPES", "example_weighting",
           # re-exported from bnlab.functional
           "batch_norm", "batch_renorm", "range_batch_norm",
           "expected_gaussian_range", "range_correction", "RANGE_CORRECTIONS"]


class _RunningStatsNorm(nn.Module):
    """What BatchNorm, BatchRenorm and RangeBatchNorm share with torch's BatchNorm: constructor
    checks, parameters and buffers under the same names and in the same order, reset, input
    checks, the running-statistics protocol of forward, the repr, and the loading of state_dicts
    without num_batches_tracked.

    A subclass implements only ``_normalize``, its functional form; forward decides, as torch's
    BN does, whether batch or running statistics normalize, which buffers may be updated, with
    what momentum, and advances num_batches_tracked.
    """

    _version = 2
    _valid_dims = (2, 3, 4, 5)
    # constructor arguments the repr shows after num_features, eps, momentum, affine; a subclass
    # lists its own (BatchRenorm has no track_running_stats, RangeBatchNorm adds correction)
    _repr_fields: tuple[str, ...] = ("track_running_stats",)

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
        """The weight of this batch in the running averages: momentum, or with momentum=None the
        cumulative average's 1 / (t + 1) for the (t + 1)-th batch, t = num_batches_tracked, as torch."""
        if self.momentum is None:
            return 1.0 / (int(self.num_batches_tracked) + 1)
        return self.momentum

    def _normalize(self, input: torch.Tensor, running_mean, running_var, use_batch_stats: bool,
                   momentum: float) -> torch.Tensor:
        """The subclass's functional form: normalize input with batch statistics (updating the
        running tensors when given) or, with use_batch_stats=False, with the running ones."""
        raise NotImplementedError

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        # no running buffers means batch statistics in eval too (as torch)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        update = self.training and self.track_running_stats
        # in training without tracking, the buffers are not touched
        keep = not self.training or self.track_running_stats
        out = self._normalize(input, self.running_mean if keep else None, self.running_var if keep else None,
                              use_batch_stats, self._momentum_factor() if update else 0.0)
        # only once the forward pass has succeeded (torch counts first): a rejected input, such as
        # one value per channel, leaves the module as it was
        if update:
            self.num_batches_tracked.add_(1)
        return out

    def extra_repr(self) -> str:
        fields = [f"{self.num_features}", f"eps={self.eps}", f"momentum={self.momentum}", f"affine={self.affine}"]
        for name in self._repr_fields:
            # bias= is the constructor's flag; self.bias is the tensor (or None)
            value = self.bias is not None if name == "bias" else getattr(self, name)
            fields.append(f"{name}={value!r}")
        return ", ".join(fields)

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

    # torch >= 2.10's repr, bias included. Older torch has no bias argument and leaves it out, but
    # ours always has it, and a lesson's printed model must not change with the torch installed.
    _repr_fields = ("bias", "track_running_stats")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias)

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum):
        return batch_norm(input, running_mean, running_var, self.weight, self.bias, use_batch_stats,
                          momentum, self.eps)


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

    _repr_fields = ("r_max", "d_max", "warmup_steps")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 0,
                 device=None, dtype=None):
        check_renorm_limits(r_max, d_max)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        self.r_max = r_max
        self.d_max = d_max
        self.warmup_steps = warmup_steps

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum):
        warming_up = use_batch_stats and int(self.num_batches_tracked) < self.warmup_steps
        r_max, d_max = (1.0, 0.0) if warming_up else (self.r_max, self.d_max)
        return batch_renorm(input, running_mean, running_var, self.weight, self.bias, use_batch_stats,
                            momentum, self.eps, r_max, d_max)


class BatchRenorm1d(BatchRenorm):
    """BatchRenorm for (N, C) or (N, C, L) input."""
    _valid_dims = (2, 3)


class BatchRenorm2d(BatchRenorm):
    """BatchRenorm for (N, C, H, W) input."""
    _valid_dims = (4,)


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

    _repr_fields = _RunningStatsNorm._repr_fields + ("correction",)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, correction: str = "gaussian"):
        if correction not in RANGE_CORRECTIONS:
            raise ValueError(f"correction must be one of {RANGE_CORRECTIONS}, got {correction!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.correction = correction

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum):
        return range_batch_norm(input, running_mean, running_var, self.weight, self.bias, use_batch_stats,
                                momentum, self.eps, self.correction)


class RangeBatchNorm1d(RangeBatchNorm):
    """RangeBatchNorm for (N, C) or (N, C, L) input."""
    _valid_dims = (2, 3)


class RangeBatchNorm2d(RangeBatchNorm):
    """RangeBatchNorm for (N, C, H, W) input."""
    _valid_dims = (4,)


class GhostBatchNorm(_RunningStatsNorm):
    """Ghost batch normalization (Hoffer et al. 2017, "Train longer, generalize better") over dim 1
    of a 2-D to 5-D input: BN applied to each virtual ("ghost") batch of virtual_batch_size examples.

    Training splits the batch along dim 0 into chunks x[0:k], x[k:2k], ... (k = virtual_batch_size)
    and normalizes each chunk with its own mu and var, exactly as BN (see BatchNorm) applied to each
    chunk in turn would:
        y[chunk] = weight * (x[chunk] - mu_chunk) / sqrt(var_chunk + eps) + bias
    A large batch then carries the statistical noise of a small one, which Hoffer et al. found to
    regularize as small batches do, while the step still averages gradients over the whole batch.

    The last chunk holds what is left, N mod k examples when k does not divide N, and is normalized
    with its own (noisier) statistics: choose N a multiple of k to avoid it. A chunk with a single
    value per channel (one example and no spatial positions) has no variance; such a batch is
    refused with a ValueError before anything changes, as torch's BN refuses a batch of one.
    With k >= N there is one chunk, and the layer is plain BN.

    Running statistics: one update per chunk, in order, as BN applied to each chunk would make, and
    num_batches_tracked counts chunks (so momentum=None averages over chunks). A training batch of N
    examples thus moves the running averages as c = ceil(N / k) BN steps would: the old averages
    keep the weight (1 - momentum)^c, not BN's 1 - momentum, and each update is a noisier estimate.

    Eval normalizes with the running statistics, exactly BN's eval (chunks make no difference there).
    With track_running_stats=False, eval too uses batch statistics, per chunk as in training.
    virtual_batch_size is a plain attribute, so a training loop can change it. Parameters and
    buffers are torch BatchNorm's, so a BN state_dict loads into it and back.
    """

    _repr_fields = ("bias", "track_running_stats", "virtual_batch_size")

    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None, *, bias: bool = True):
        check_virtual_batch_size(virtual_batch_size)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias)
        self.virtual_batch_size = virtual_batch_size

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum):
        return batch_norm(input, running_mean, running_var, self.weight, self.bias, use_batch_stats,
                          momentum, self.eps)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input(input)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        if not use_batch_stats:
            return super().forward(input)
        check_virtual_batch_size(self.virtual_batch_size)
        k = self.virtual_batch_size
        chunks = input.split(k)
        # checked for every chunk before the first one updates the running statistics
        if any(len(chunk) * math.prod(input.shape[2:]) < 2 for chunk in chunks):
            advice = ("use virtual_batch_size >= 2" if k == 1 and len(input) > 1 else
                      "use a batch size that is not 1 more than a multiple of virtual_batch_size")
            raise ValueError(f"{type(self).__name__}: a batch of {len(input)} examples in virtual batches of {k} "
                             "has a chunk of one example without spatial positions, a single value per channel, "
                             "which has no variance (torch's BN: 'Expected more than 1 value per channel when "
                             f"training'); {advice}")
        # each chunk through BN's forward: its own statistics, momentum and count update
        return torch.cat([super(GhostBatchNorm, self).forward(chunk) for chunk in chunks])


class GhostBatchNorm1d(GhostBatchNorm):
    """GhostBatchNorm for (N, C) or (N, C, L) input."""
    _valid_dims = (2, 3)


class GhostBatchNorm2d(GhostBatchNorm):
    """GhostBatchNorm for (N, C, H, W) input."""
    _valid_dims = (4,)


def check_virtual_batch_size(virtual_batch_size) -> None:
    """Raise ValueError unless virtual_batch_size is an int >= 1."""
    if isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int) or virtual_batch_size < 1:
        raise ValueError(f"virtual_batch_size must be an int >= 1 (examples per ghost batch), "
                         f"got {virtual_batch_size!r}")


class NoisyBatchNorm(_RunningStatsNorm):
    """BN followed by noise that shifts every channel's distribution at every training step: the
    "noisy BN" of Santurkar et al. 2018 ("How does batch normalization help optimization?"), who
    trained such nets about as well as with plain BN although their layer inputs were far less
    stable than without BN, evidence against BN working by reducing internal covariate shift.

    Training, at every forward call, draws per channel c, independently and uniformly,
        s_c ~ U(1 - scale_noise, 1 + scale_noise),   m_c ~ U(-shift_noise, shift_noise)
    (defaults U(0.5, 1.5) and U(-3, 3)) and returns
        y = BN(x) * s_c + m_c
    with BN(x) the whole BN layer (weight and bias included): each channel's mean moves by m_c and
    its standard deviation is multiplied by s_c, anew at every step. s and m are constants for
    autograd: gradients flow through BN(x) * s_c. The running statistics are BN's (those of x, not
    of the noisy output), so eval is plain BN's eval, without noise.

    noise="time_varying" is the form of the paper's appendix as we read it: non-zero-mean,
    non-unit-variance noise, i.i.d. per activation, from a distribution that changes at every step.
    Per step and channel c it draws the distribution's parameters
        mu_c ~ U(-n_mu, n_mu),   sigma_c ~ U(1, n_sigma)          (the paper's n_mu = 0.5, n_sigma = 1.25)
    and per activation (every example and position) s ~ N(sigma_c, r^2), m ~ N(mu_c, r^2) (r = 0.1):
        y = BN(x) * s + m
    so each channel's mean moves by mu_c and its scale by sigma_c at every step, and every value gets
    its own jitter of spread r. last_scale and last_shift are then sigma and mu. This is far gentler
    than the uniform default (shifts of 0.5 rather than 3 standard deviations).

    Randomness: generator (a torch.Generator) or seed (an int, for a private CPU generator) makes
    the draws reproducible; with neither, torch's global generator on the input's device, as
    dropout. A generator is state, not a parameter: it is not in the state_dict. The last draws
    are kept, as last_scale and last_shift ((C,) tensors; None before the first training step).
    """

    _repr_fields = ("bias", "track_running_stats", "noise", "scale_noise", "shift_noise")
    NOISES = ("uniform", "time_varying")

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, bias: bool = True, scale_noise: float = 0.5, shift_noise: float = 3.0,
                 noise: str = "uniform", n_mu: float = 0.5, n_sigma: float = 1.25, r: float = 0.1,
                 generator: torch.Generator | None = None, seed: int | None = None):
        if noise not in self.NOISES:
            raise ValueError(f"noise must be one of {self.NOISES}, got {noise!r}")
        for name, value, low in (("n_mu", n_mu, 0.0), ("n_sigma", n_sigma, 1.0), ("r", r, 0.0)):
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < float("inf")):
                raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
        if isinstance(scale_noise, bool) or not isinstance(scale_noise, (int, float)) or not 0 <= scale_noise <= 1:
            raise ValueError(f"scale_noise must be a number in [0, 1] (s ~ U(1 - a, 1 + a) must not flip a "
                             f"channel's sign), got {scale_noise!r}")
        if (isinstance(shift_noise, bool) or not isinstance(shift_noise, (int, float))
                or not 0 <= shift_noise < float("inf")):
            raise ValueError(f"shift_noise must be a finite number >= 0, got {shift_noise!r}")
        if generator is not None and seed is not None:
            raise ValueError("give generator or seed, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias)
        self.scale_noise = float(scale_noise)
        self.shift_noise = float(shift_noise)
        self.noise, self.n_mu, self.n_sigma, self.r = noise, float(n_mu), float(n_sigma), float(r)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else generator
        self.last_scale: torch.Tensor | None = None
        self.last_shift: torch.Tensor | None = None

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum):
        return batch_norm(input, running_mean, running_var, self.weight, self.bias, use_batch_stats,
                          momentum, self.eps)

    def _draw(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, m), each (C,), in the input's dtype and on its device; s first, then m."""
        # draw where the generator lives (a CPU generator serves a GPU input), in float32 or float64
        device = self.generator.device if self.generator is not None else input.device
        dtype = input.dtype if input.dtype == torch.float64 else torch.float32
        u = torch.rand(2, self.num_features, generator=self.generator, device=device, dtype=dtype)
        if self.noise == "time_varying":
            scale = 1 + (self.n_sigma - 1) * u[0]
            shift = self.n_mu * (2 * u[1] - 1)
        else:
            scale = 1 + self.scale_noise * (2 * u[0] - 1)
            shift = self.shift_noise * (2 * u[1] - 1)
        return scale.to(input), shift.to(input)

    def _jitter(self, input: torch.Tensor) -> torch.Tensor:
        """r * N(0, 1) per activation, for s and m: (2, *input.shape)."""
        device = self.generator.device if self.generator is not None else input.device
        dtype = input.dtype if input.dtype == torch.float64 else torch.float32
        z = torch.randn((2, *input.shape), generator=self.generator, device=device, dtype=dtype)
        return (self.r * z).to(input)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = super().forward(input)
        if not self.training:
            return out
        # drawn after BN has accepted the input: a refused input consumes no random numbers
        scale, shift = self._draw(input)
        self.last_scale, self.last_shift = scale, shift
        shape = (1, self.num_features) + (1,) * (input.dim() - 2)
        scale, shift = scale.view(shape), shift.view(shape)
        if self.noise == "time_varying":
            jitter = self._jitter(input)
            scale, shift = scale + jitter[0], shift + jitter[1]
        return out * scale + shift


class NoisyBatchNorm1d(NoisyBatchNorm):
    """NoisyBatchNorm for (N, C) or (N, C, L) input."""
    _valid_dims = (2, 3)


class NoisyBatchNorm2d(NoisyBatchNorm):
    """NoisyBatchNorm for (N, C, H, W) input."""
    _valid_dims = (4,)


# Layers whose eval mode is y = weight * (x - running_mean) / sqrt(running_var + eps) + bias:
# torch's BatchNorm1d/2d/3d and SyncBatchNorm, and every module built on _RunningStatsNorm
BATCHNORM_TYPES = (nn.modules.batchnorm._BatchNorm, _RunningStatsNorm)


def is_batchnorm(module: nn.Module) -> bool:
    """True for a batch-normalization layer: torch's BatchNorm1d/2d/3d and SyncBatchNorm (any
    subclass of torch's _BatchNorm) and bnlab's BatchNorm*, BatchRenorm*, RangeBatchNorm*,
    GhostBatchNorm*, NoisyBatchNorm* (any subclass of their shared base), with or without running
    statistics. False for everything else, InstanceNorm, GroupNorm and LayerNorm included: they
    normalize each example on its own.
    """
    return isinstance(module, BATCHNORM_TYPES)


@contextlib.contextmanager
def example_weighting(model: nn.Module, alpha: float, spatial_only: bool = True):
    """Within the block, every BN layer of `model` (`is_batchnorm`) evaluates with inference example
    weighting (Summers & Dinneen 2020; `bnlab.functional.example_weighted_batch_norm`): each example
    is normalized with alpha of its own statistics mixed into (1 - alpha) of the running ones. The
    layers' forwards are restored on leaving, also after an error; nothing is updated.

    spatial_only: layers that see (N, C) input (the fully connected head) keep eval BN. An example's
    own statistics there are one value per channel, its variance 0: at alpha = 1 every example would
    map to the bias, and the mixture's variance only shrinks towards that.

    The model must be in eval mode (example weighting replaces the running statistics at inference;
    in training BN uses the batch's) and its BN layers must track running statistics.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the example's own statistics), "
                         f"got {alpha!r}")
    layers = [m for m in model.modules() if is_batchnorm(m)]
    if model.training or any(m.training for m in layers):
        raise ValueError("example weighting is for inference: call model.eval() first")
    if missing := [m for m in layers if m.running_mean is None]:
        raise ValueError(f"{len(missing)} BN layer(s) have no running statistics (track_running_stats=False): "
                         f"example weighting mixes the example's statistics into the running ones")

    def weighted(layer):
        plain = layer.forward

        def forward(input):
            if spatial_only and input.dim() == 2:
                return plain(input)
            return example_weighted_batch_norm(input, layer.running_mean, layer.running_var, layer.weight,
                                               layer.bias, float(alpha), layer.eps)
        return forward

    for layer in layers:
        layer.forward = weighted(layer)
    try:
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)
