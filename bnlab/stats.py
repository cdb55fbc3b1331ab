"""Statistics of activations, computed where the tensors live: what the probes record, and how
many independent values a BN statistic is really worth.

`NumpyOps` and `TorchOps` compute the same batched statistics (mean, std, percentiles, histograms,
saturated and dead fractions) of G rows at once, with NumPy for CPU tensors and torch for GPU
ones; `bnlab.probes.Probe` hands them its captured tensors. `median_drift` summarizes a recording
and `effective_sample_size` measures n_eff of BN's batch statistics on a pool of activations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["NumpyOps", "TorchOps", "NUMPY_OPS", "TORCH_OPS", "median_drift", "grad_data_ratio", "norms",
           "effective_sample_size", "EffectiveSampleSize", "SATURATION", "DEFAULT_PERCENTILES",
           "MAX_QUANTILE_ELEMENTS"]

DEFAULT_PERCENTILES = (15.0, 50.0, 85.0)
# A unit is saturated where its derivative is below this fraction of the derivative's maximum:
# sigmoid' = y(1 - y) < 0.1 * 1/4 (y < 0.026 or y > 0.974); tanh' = 1 - y^2 < 0.1 (|y| > 0.949).
SATURATION = 0.1
MAX_QUANTILE_ELEMENTS = 1 << 20  # torch.quantile sorts; beyond this, percentiles use an even subsample


def grad_data_ratio(numerator: torch.Tensor, data_norm: torch.Tensor) -> torch.Tensor:
    """numerator / ||theta|| per parameter (grad:data, update:data), NaN where ||theta|| = 0 (a
    zero-initialized bias has no scale yet). Both (P,)."""
    return torch.where(data_norm > 0, numerator / data_norm.clamp_min(1e-38), torch.full_like(data_norm, float("nan")))


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """||t|| of each tensor, as float32 scalars."""
    # one fused call instead of a norm per parameter: at k=1 the probe's cost is mostly call overhead
    return [n.float() for n in torch._foreach_norm(tensors)]


class NumpyOps:
    """Batched statistics of G rows at once, for tensors on the CPU.

    NumPy rather than torch here: np.partition finds percentiles 5-10x faster than torch.sort on
    the CPU, and at k=1 the probe must cost little next to a small net's training step.
    """

    stack = staticmethod(lambda tensors: np.stack([t.numpy() for t in tensors]).astype(np.float32, copy=False))
    concat = staticmethod(lambda parts: np.concatenate([np.asarray(p, np.float32).reshape(len(p), -1)
                                                        for p in parts], 1))
    to_numpy = staticmethod(lambda a: a)
    column = staticmethod(lambda values, like: np.asarray(values, np.float32)[:, None])
    norm = staticmethod(lambda a: np.sqrt(np.einsum("ij,ij->i", a, a, dtype=np.float64)))

    @staticmethod
    def mean_std(a):
        return a.mean(1, dtype=np.float64), a.std(1, dtype=np.float64)

    @staticmethod
    def percentiles(a, q: torch.Tensor):
        """Linear-interpolation percentiles along the last axis (what np.percentile computes), (..., P)."""
        n = a.shape[-1]
        position = q.numpy().astype(np.float64) * (n - 1)
        below = np.floor(position).astype(np.int64)
        kth = np.unique(below)
        part = np.partition(a, kth, axis=-1)
        low = part[..., below]
        # the next order statistic after kth[i] is the smallest value between kth[i] and kth[i + 1]:
        # a slice minimum instead of a second partition
        ends = dict(zip(kth.tolist(), [*kth[1:].tolist(), n]))
        high = np.stack([part[..., b + 1:ends[b] + (ends[b] == b + 1)].min(-1) if b + 1 < n else part[..., b]
                         for b in below.tolist()], axis=-1)
        return low + (high - low) * (position - below)

    @staticmethod
    def histogram(a, lo, hi, bins: int):
        """Fraction of each row's values per bin of linspace(lo, hi, bins + 1); values outside count in
        the end bins; NaN counts nowhere (a row of a diverged net sums to less than 1)."""
        scaled = (a - lo) * (bins / (hi - lo))
        np.clip(scaled, 0, bins - 1, out=scaled)  # before the cast: huge values cannot wrap around
        index = np.where(np.isnan(scaled), len(a) * bins, scaled.astype(np.int64) + np.arange(len(a))[:, None] * bins)
        counts = np.bincount(index.ravel(), minlength=len(a) * bins + 1)[:len(a) * bins]
        return counts.reshape(len(a), bins) / a.shape[1]

    @classmethod
    def log_histogram(cls, a, lo, hi, bins: int):
        with np.errstate(divide="ignore"):
            return cls.histogram(np.log10(np.abs(a)).clip(lo, hi), lo, hi, bins)

    @staticmethod
    def saturated_dead(y, kind, groups: int, device=None):
        nan = np.full(groups, np.nan)
        if kind is None:
            return nan, nan
        y = y.reshape(groups, -1) if kind != "relu" else y.reshape(groups, y.shape[1], -1)
        if kind == "sigmoid":
            return (y * (1 - y) < SATURATION * 0.25).mean(1), nan
        if kind == "tanh":
            return (1 - y * y < SATURATION).mean(1), nan
        return nan, 1 - (y > 0).any(1).mean(1)

    @staticmethod
    def units_first(x, units: int):
        g, n, c = x.shape[:3]
        return np.moveaxis(x.reshape(g, n, c, -1)[:, :, :units], 2, 1).reshape(g, units, -1)


class TorchOps:
    """The same statistics with torch ops, for tensors on a GPU (results stay there until one copy)."""

    stack = staticmethod(lambda tensors: torch.stack(tensors).float())
    concat = staticmethod(lambda parts: torch.cat([p.float().reshape(len(p), -1) for p in parts], 1))
    to_numpy = staticmethod(lambda t: t.cpu().numpy())
    column = staticmethod(lambda values, like: torch.tensor(values, dtype=torch.float32, device=like.device)[:, None])
    norm = staticmethod(lambda a: torch.linalg.vector_norm(a, dim=1))

    @staticmethod
    def mean_std(a):
        var, mean = torch.var_mean(a, dim=1, correction=0)
        return mean, var.sqrt()

    @staticmethod
    def percentiles(a, q: torch.Tensor):
        if a.shape[-1] > MAX_QUANTILE_ELEMENTS:  # torch.quantile refuses larger inputs
            a = a[..., ::math.ceil(a.shape[-1] / MAX_QUANTILE_ELEMENTS)]
        return torch.quantile(a, q.to(a.device), dim=-1).movedim(0, -1)

    @staticmethod
    def histogram(a, lo, hi, bins: int):
        scaled = ((a - lo) * (bins / (hi - lo))).clamp(0, bins - 1)  # clamp before the cast, as in NumPy
        index = scaled.long() + torch.arange(len(a), device=a.device)[:, None] * bins
        index = torch.where(scaled.isnan(), len(a) * bins, index)
        counts = torch.bincount(index.reshape(-1), minlength=len(a) * bins + 1)[:len(a) * bins]
        return counts.reshape(len(a), bins) / a.shape[1]

    @classmethod
    def log_histogram(cls, a, lo, hi, bins: int):
        return cls.histogram(torch.log10(a.abs()).clamp(lo, hi), lo, hi, bins)

    @staticmethod
    def saturated_dead(y, kind, groups: int, device=None):
        nan = torch.full((groups,), float("nan"), device=device)
        if kind is None:
            return nan, nan
        if kind == "sigmoid":
            return (y * (1 - y) < SATURATION * 0.25).reshape(groups, -1).float().mean(1), nan
        if kind == "tanh":
            return (1 - y * y < SATURATION).reshape(groups, -1).float().mean(1), nan
        return nan, 1 - (y.reshape(groups, y.shape[1], -1) > 0).any(1).float().mean(1)

    @staticmethod
    def units_first(x, units: int):
        g, n, c = x.shape[:3]
        return x.reshape(g, n, c, -1)[:, :, :units].movedim(2, 1).reshape(g, units, -1)


NUMPY_OPS, TORCH_OPS = NumpyOps(), TorchOps()


def median_drift(unit_percentiles: np.ndarray, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                 low: float = 15.0, high: float = 85.0) -> float:
    """How far a layer's distribution wanders during training, in units of its own spread.

    Per unit u: (max_t m_u(t) - min_t m_u(t)) / mean_t (p85_u(t) - p15_u(t)), with m the median;
    averaged over units. unit_percentiles: (records, units, P) as a probe records them. Dividing by
    the band width makes the measure blind to a plain rescaling (BN's gamma grows during training).
    """
    percentiles = [float(p) for p in percentiles]
    for q in (low, 50.0, high):
        if q not in percentiles:
            raise ValueError(f"median_drift needs percentile {q}; recorded: {percentiles}")
    values = np.asarray(unit_percentiles, dtype=np.float64)
    if values.ndim != 3 or values.shape[2] != len(percentiles) or len(values) < 2:
        raise ValueError(f"unit_percentiles must be (records >= 2, units, {len(percentiles)}), got {values.shape}")
    median = values[:, :, percentiles.index(50.0)]
    width = values[:, :, percentiles.index(high)] - values[:, :, percentiles.index(low)]
    return float(np.mean((median.max(0) - median.min(0)) / width.mean(0)))


# ----------------------------------------------------------------------------- effective sample size
STATISTICS = ("mean", "var")


@dataclass(frozen=True)
class EffectiveSampleSize:
    """What `effective_sample_size` measured: n_eff (C,) per channel, and the nominal count
    B * positions that n_eff would be if every value of a batch were independent."""

    n_eff: torch.Tensor
    nominal: int
    batch_size: int
    positions: int
    statistic: str
    num_batches: int

    @property
    def per_example(self) -> torch.Tensor:
        """n_eff / B: how many independent values one example is worth, from 1 (its values all
        alike) to `positions` (all independent)."""
        return self.n_eff / self.batch_size

    def __str__(self) -> str:
        median = float(self.n_eff.median())
        return (f"n_eff of the batch {self.statistic}: median {median:.1f} over {len(self.n_eff)} channels "
                f"(from {float(self.n_eff.min()):.1f} to {float(self.n_eff.max()):.1f}), "
                f"{median / self.batch_size:.1f} per example; nominal B*positions = "
                f"{self.batch_size}*{self.positions} = {self.nominal}")


def _check_pool(values, batch_size, num_batches, statistic) -> None:
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise ValueError("values must be a floating-point tensor (N, C, *spatial), got "
                         f"{getattr(values, 'dtype', type(values).__name__)}")
    if values.dim() < 2 or values.shape[0] < 2 or values.shape[1] < 1:
        raise ValueError(f"values must be (N, C, *spatial) with a pool of N >= 2 examples, got shape "
                         f"{tuple(values.shape)}")
    n = values.shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if batch_size >= n:
        raise ValueError(f"batch_size {batch_size} is not smaller than the pool of {n} examples: every "
                         "batch would be the whole pool (or more), so its statistic would not vary; "
                         "pass more examples")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 2:
        raise ValueError(f"num_batches must be an int >= 2 (a variance over draws), got {num_batches!r}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if statistic == "var" and batch_size * math.prod(values.shape[2:]) < 2:
        raise ValueError("the batch variance needs at least 2 values per channel: batch_size * positions < 2")


def effective_sample_size(values: torch.Tensor, batch_size: int, num_batches: int = 2000, seed: int = 0,
                          statistic: str = "mean", finite_pool_correction: bool = True) -> EffectiveSampleSize:
    """How many independent values BN's batch statistic is really worth, per channel.

    values: (N, C, *spatial), one layer's activations on a pool of N examples; P = prod(spatial)
    positions (1 for (N, C)). Draw num_batches batches of B = batch_size distinct examples (seeded)
    and take BN's statistic of each channel over the batch's B * P values:
        statistic='mean':  mu_B = mean x,              n_eff = Var(x) / Var(mu_B)
        statistic='var':   s2_B = mean (x - mu_B)^2,   n_eff = (mu4 - Var(x)^2) / Var(s2_B)
    with Var(x) and mu4 = mean (x - mean x)^4 over the channel's N * P pool values, and Var(mu_B),
    Var(s2_B) over the draws. n independent values give Var(mu) = Var(x) / n, and, to leading
    order in 1/n, Var(s2) = (mu4 - Var(x)^2) / n (2 Var(x)^2 / n for Gaussians): n_eff is the n of
    independent values whose statistic would be as noisy. If a batch's values were independent,
    n_eff would be the nominal B * P; the values of one example are correlated (neighbouring
    pixels, the brightness of a whole image), so n_eff is smaller, down to B when all of an
    example's values are alike.

    finite_pool_correction: B distinct examples drawn from a pool of N vary less than B examples
    of the data distribution, by the factor (N - B) / (N - 1) for the mean (exactly; to leading
    order for the variance). Var over the draws is divided by it, so that n_eff does not depend on
    the pool's size. n_eff is NaN for a channel constant over the pool.

    Returns an EffectiveSampleSize: n_eff (C,), nominal = B * P, per_example = n_eff / B.
    """
    _check_pool(values, batch_size, num_batches, statistic)
    n, c = values.shape[:2]
    positions = math.prod(values.shape[2:])
    # float64, centred per channel: batch variances from E[x^2] - E[x]^2 are then free of cancellation
    x = values.detach().reshape(n, c, -1).double()
    x = x - x.mean((0, 2), keepdim=True)
    pool_var = x.pow(2).mean((0, 2)).cpu()
    # every example has P values, so a batch's moments are the means of its examples' moments
    example_mean = x.mean(2).cpu()                                 # (N, C)
    example_square = x.pow(2).mean(2).cpu() if statistic == "var" else None
    fourth_moment = x.pow(4).mean((0, 2)).cpu() if statistic == "var" else None
    del x
    generator = torch.Generator().manual_seed(seed)
    draws = []
    for start in range(0, num_batches, 256):  # chunks: a (batches, N) matrix of keys per chunk only
        keys = torch.rand(min(256, num_batches - start), n, generator=generator)
        index = keys.topk(batch_size, dim=1).indices                # B distinct examples per row
        batch_mean = example_mean[index].mean(1)                    # (batches, C)
        if statistic == "mean":
            draws.append(batch_mean)
        else:
            draws.append(example_square[index].mean(1) - batch_mean.pow(2))
    spread = torch.cat(draws).var(0)                                # over the draws, (C,)
    if finite_pool_correction:
        spread = spread / ((n - batch_size) / (n - 1))
    scale = pool_var if statistic == "mean" else fourth_moment - pool_var.pow(2)
    return EffectiveSampleSize(n_eff=scale / spread, nominal=batch_size * positions, batch_size=batch_size,
                               positions=positions, statistic=statistic, num_batches=num_batches)
