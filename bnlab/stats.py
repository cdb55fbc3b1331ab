"""Statistics of activations, computed where the tensors live: what the probes record, and how
many independent values a BN statistic is really worth.

`NumpyOps` and `TorchOps` compute the same batched statistics (mean, std, percentiles, histograms,
saturated and dead fractions) of G rows at once, with NumPy for CPU tensors and torch for GPU
ones; `bnlab.probes.Probe` hands them its captured tensors. `median_drift` summarizes a recording
and `effective_sample_size` measures n_eff of BN's batch statistics on a pool of activations.
`dropout_variance_shift` is the closed form behind lesson 10's dropout-before-BN warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["NumpyOps", "TorchOps", "NUMPY_OPS", "TORCH_OPS", "median_drift", "median_jitter", "grad_data_ratio",
           "norms", "float32_thresholds", "subsample", "activation_statistics", "gradient_statistics",
           "effective_sample_size", "EffectiveSampleSize", "SATURATION", "DEFAULT_PERCENTILES",
           "dropout_variance_shift", "DropoutVarianceShift"]

DEFAULT_PERCENTILES = (15.0, 50.0, 85.0)
# A unit is saturated where its derivative is below this fraction of the derivative's maximum:
# sigmoid' = y(1 - y) < 0.1 * 1/4 (y < 0.026 or y > 0.974); tanh' = 1 - y^2 < 0.1 (|y| > 0.949).
SATURATION = 0.1


def grad_data_ratio(numerator: torch.Tensor, data_norm: torch.Tensor) -> torch.Tensor:
    """numerator / ||theta|| per parameter (grad:data, update:data), NaN where ||theta|| = 0 (a
    zero-initialized bias has no scale yet). Both of one shape, e.g. (P,) or (steps, P)."""
    return torch.where(data_norm > 0, numerator / data_norm.clamp_min(1e-38), torch.full_like(data_norm, float("nan")))


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """||t|| of each tensor, as float32 scalars."""
    # one fused call instead of a norm per parameter: at k=1 the probe's cost is mostly call overhead
    return [n.float() for n in torch._foreach_norm(tensors)]


def float32_thresholds(edges) -> np.ndarray:
    """For each float64 edge e the smallest float32 t >= e: for a float32 value v, v < t exactly when
    v < e, so bins found by comparing float32 values with t are those of the exact edges."""
    edges = np.asarray(edges, dtype=np.float64)
    t = edges.astype(np.float32)
    return np.where(t < edges, np.nextafter(t, np.float32(np.inf)), t).astype(np.float32)


class NumpyOps:
    """Statistics of the rows of an array (one row per recorded step), for tensors on the CPU.

    Percentiles and histograms both come from one sort per row: NumPy's sort of float32 is
    vectorized (about 8x faster than np.partition with several kth, 30x faster than torch.sort on
    the CPU), after which percentiles are two lookups and a histogram is a binary search per edge.
    Means and standard deviations are float32 with pairwise summation (relative error ~1e-7).
    """

    as_rows = staticmethod(lambda t: t.numpy())
    to_numpy = staticmethod(lambda a: a)
    # torch's float32 norm is vectorized and accurate to ~1e-7 here; np.einsum in float64 is 7x slower
    norm = staticmethod(lambda a: torch.linalg.vector_norm(torch.from_numpy(a), dim=1).numpy())
    abs_ = staticmethod(lambda a: np.abs(a, out=a))

    @staticmethod
    def concat(parts):
        return np.concatenate([np.asarray(p, np.float64).reshape(len(p), -1) for p in parts], 1)

    @staticmethod
    def sort_(a):
        """a sorted along its last axis, NaN last; in place (the probe owns its buffers)."""
        a.sort(axis=-1)
        return a

    @staticmethod
    def mean_std(a):
        # float32 with NumPy's pairwise summation along a contiguous row: relative error ~1e-7
        return a.mean(1), a.std(1)

    @staticmethod
    def percentiles_sorted(s, q: np.ndarray):
        """Linear-interpolation percentiles (what np.percentile computes) of rows sorted along the last
        axis, (..., P); q in [0, 1]."""
        position = q * (s.shape[-1] - 1)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, s.shape[-1] - 1)
        low = s[..., below].astype(np.float64)
        return low + (s[..., above] - low) * (position - below)

    @staticmethod
    def histogram_sorted(s, thresholds: np.ndarray):
        """Fraction of each sorted row's values per bin; thresholds: the bins' inner edges (float32,
        `float32_thresholds`). Values below the first inner edge count in the first bin, those above
        the last in the last bin (also +-inf); NaN counts nowhere (a diverged net's row sums to less
        than 1)."""
        rows, n = s.shape
        # one batched binary search for all rows (torch's; NumPy's searches one row per call)
        needles = torch.from_numpy(thresholds).expand(rows, -1).contiguous()
        inner = torch.searchsorted(torch.from_numpy(s), needles).numpy()
        ends = np.concatenate([inner, np.full((rows, 1), n)], 1)
        for r in np.flatnonzero(np.isnan(s[:, -1])):  # NaN sorts last; torch's search does not order it
            ends[r] = np.searchsorted(s[r], np.append(thresholds, np.float32(np.nan)))  # NumPy's does
        return np.diff(ends, axis=1, prepend=0) / n

    @staticmethod
    def saturated_dead(y, kind, rows: int):
        nan = np.full(rows, np.nan)
        if kind is None:
            return nan, nan
        y = y.reshape(rows, -1) if kind != "relu" else y.reshape(rows, y.shape[1], -1)
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

    as_rows = staticmethod(lambda t: t)
    to_numpy = staticmethod(lambda t: t.cpu().numpy())
    norm = staticmethod(lambda a: torch.linalg.vector_norm(a.double(), dim=1))
    abs_ = staticmethod(lambda a: a.abs())
    concat = staticmethod(lambda parts: torch.cat([p.double().reshape(len(p), -1) for p in parts], 1))
    sort_ = staticmethod(lambda a: torch.sort(a, dim=-1).values)  # NaN last, as in NumPy

    @staticmethod
    def mean_std(a):
        var, mean = torch.var_mean(a.double(), dim=1, correction=0)
        return mean, var.sqrt()

    @staticmethod
    def percentiles_sorted(s, q: np.ndarray):
        position = torch.as_tensor(q * (s.shape[-1] - 1), device=s.device)
        below = position.floor().long()
        above = (below + 1).clamp_max(s.shape[-1] - 1)
        low = s[..., below].double()
        return low + (s[..., above] - low) * (position - below)

    @staticmethod
    def histogram_sorted(s, thresholds: np.ndarray):
        t = torch.as_tensor(thresholds, device=s.device).expand(len(s), -1).contiguous()
        nan = s.isnan()
        # torch.sort puts NaN last, but torch.searchsorted does not order NaN: as +inf it is above every edge
        inner = torch.searchsorted(torch.where(nan, float("inf"), s).contiguous(), t)
        ends = torch.cat([inner, (~nan).sum(1, keepdim=True)], 1)
        return torch.diff(ends, dim=1, prepend=torch.zeros_like(ends[:, :1])).double() / s.shape[1]

    @staticmethod
    def saturated_dead(y, kind, rows: int):
        nan = torch.full((rows,), float("nan"), device=y.device)
        if kind is None:
            return nan, nan
        if kind == "sigmoid":
            return (y * (1 - y) < SATURATION * 0.25).reshape(rows, -1).float().mean(1), nan
        if kind == "tanh":
            return (1 - y * y < SATURATION).reshape(rows, -1).float().mean(1), nan
        return nan, 1 - (y.reshape(rows, y.shape[1], -1) > 0).any(1).float().mean(1)

    @staticmethod
    def units_first(x, units: int):
        g, n, c = x.shape[:3]
        return x.reshape(g, n, c, -1)[:, :, :units].movedim(2, 1).reshape(g, units, -1)


NUMPY_OPS, TORCH_OPS = NumpyOps(), TorchOps()


def subsample(a, sample: int | None):
    """Every ceil(n / sample)-th value along a's last axis (n values), from the first: at most
    `sample` values, evenly spread; a itself when sample is None or n <= sample."""
    n = a.shape[-1]
    if sample is None or n <= sample:
        return a
    return a[..., ::-(-n // sample)]


def _owned(ops, a, b):
    """b (a subsample of a) as an array the caller may sort in place."""
    return b if b is a or ops is TORCH_OPS else np.ascontiguousarray(b)


def activation_statistics(ops, x, y, kind: str | None, q: np.ndarray, thresholds: np.ndarray, units: int,
                          sample: int | None = None) -> np.ndarray:
    """(rows, 2 + P + bins + 2 + units * P) float64 for rows of captured values x (rows, N, ...): mean,
    std, percentiles q (in [0, 1]), histogram (inner edges `thresholds`), saturated and dead fraction
    of y (the layer's output; kind as for `saturated_dead`), percentiles of the first `units` units.
    sample: percentiles and histograms of `subsample`(values, sample) (per unit for the unit
    percentiles), the other statistics of all values; None: all values. x may be sorted in place:
    it must be the caller's to spend."""
    rows = len(x)
    saturated, dead = ops.saturated_dead(x if y is None else y, kind, rows)
    per_unit = None
    if units:
        by_unit = subsample(ops.units_first(x, units), sample)
        if ops is NUMPY_OPS and np.may_share_memory(by_unit, x):  # (batch of one) a view: x must stay unsorted
            by_unit = by_unit.copy()
        per_unit = ops.percentiles_sorted(ops.sort_(by_unit), q).reshape(rows, -1)
    flat = x.reshape(rows, -1)
    mean, std = ops.mean_std(flat)
    # after the order-dependent statistics above: the sort may reorder x itself
    ordered = ops.sort_(_owned(ops, flat, subsample(flat, sample)))
    parts = [mean, std, ops.percentiles_sorted(ordered, q), ops.histogram_sorted(ordered, thresholds),
             saturated, dead] + ([per_unit] if units else [])
    return ops.to_numpy(ops.concat(parts))


def gradient_statistics(ops, g, abs_thresholds: np.ndarray, sample: int | None = None) -> np.ndarray:
    """(rows, 2 + bins) float64 for rows of gradients g (rows, N, ...): norm, std, and the histogram
    of log10|g| as that of |g| over inner edges 10^e (`abs_thresholds`); log10|0| = -inf counts in
    the first bin. sample: the histogram of `subsample`(values, sample), norm and std of all values.
    g may be overwritten: it must be the caller's to spend."""
    flat = g.reshape(len(g), -1)
    norm, (_, std) = ops.norm(flat), ops.mean_std(flat)
    magnitude = ops.abs_(_owned(ops, flat, subsample(flat, sample)))
    return ops.to_numpy(ops.concat([norm, std, ops.histogram_sorted(ops.sort_(magnitude), abs_thresholds)]))


def _median_and_width(who: str, unit_percentiles: np.ndarray, percentiles: Sequence[float], low: float,
                      high: float) -> tuple[np.ndarray, np.ndarray]:
    """The median m_u(t) and band width p_high - p_low, each (records, units), from a probe's
    unit_percentiles (records >= 2, units, P)."""
    percentiles = [float(p) for p in percentiles]
    for q in (low, 50.0, high):
        if q not in percentiles:
            raise ValueError(f"{who} needs percentile {q}; recorded: {percentiles}")
    values = np.asarray(unit_percentiles, dtype=np.float64)
    if values.ndim != 3 or values.shape[2] != len(percentiles) or len(values) < 2:
        raise ValueError(f"unit_percentiles must be (records >= 2, units, {len(percentiles)}), got {values.shape}")
    median = values[:, :, percentiles.index(50.0)]
    return median, values[:, :, percentiles.index(high)] - values[:, :, percentiles.index(low)]


def median_drift(unit_percentiles: np.ndarray, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                 low: float = 15.0, high: float = 85.0) -> float:
    """How far a layer's distribution wanders during training, in units of its own spread.

    Per unit u: (max_t m_u(t) - min_t m_u(t)) / mean_t (p85_u(t) - p15_u(t)), with m the median;
    averaged over units. unit_percentiles: (records, units, P) as a probe records them. Dividing by
    the band width makes the measure blind to a plain rescaling (BN's gamma grows during training).
    """
    median, width = _median_and_width("median_drift", unit_percentiles, percentiles, low, high)
    return float(np.mean((median.max(0) - median.min(0)) / width.mean(0)))


def median_jitter(unit_percentiles: np.ndarray, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                  low: float = 15.0, high: float = 85.0) -> float:
    """How far a layer's distribution moves from one record to the next, in units of its spread.

    Per unit u: mean_t |m_u(t+1) - m_u(t)| / mean_t (p85_u(t) - p15_u(t)), averaged over units.
    `median_drift` sees the whole excursion of the median, however slow; this sees how much the
    target moves between two looks, what a layer chasing its input would feel (lesson 09: noisy BN
    shifts every step by a fresh random amount, plain nets move slowly).
    """
    median, width = _median_and_width("median_jitter", unit_percentiles, percentiles, low, high)
    return float(np.mean(np.abs(np.diff(median, axis=0)).mean(0) / width.mean(0)))


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


# ----------------------------------------------------------------------------- dropout before BN
class DropoutVarianceShift(NamedTuple):
    """The variance of a unit after dropout, in training and in eval (see dropout_variance_shift)."""

    train: float | torch.Tensor
    test: float | torch.Tensor

    @property
    def ratio(self):
        """Var_test / Var_train (Li et al.'s shift ratio, <= 1): how much smaller the variance that a
        BN after the dropout sees in eval is than the one its running_var learned in training."""
        return self.test / self.train


def _check_moment(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise ValueError(f"{name} must be a number or a tensor, got {type(value).__name__}")
    if isinstance(value, torch.Tensor) and not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if not bool(torch.isfinite(torch.as_tensor(value)).all()):
        raise ValueError(f"{name} must be finite, got {value}")


def dropout_variance_shift(mean, var, keep: float) -> DropoutVarianceShift:
    """Variance of one unit after inverted dropout, in training and in eval (Li et al. 2019,
    "Understanding the disharmony between dropout and batch normalization by variance shift").

    A unit X with mean c = E[X] and variance v = Var(X) goes through dropout with keep probability
    p (torch's nn.Dropout(1 - p)): in training Y = X * M / p with M ~ Bernoulli(p) independent of X;
    in eval Y = X. In training
        E[Y]   = E[X] E[M] / p = c                                      (the mean is kept)
        E[Y^2] = E[X^2] E[M^2] / p^2 = (c^2 + v) p / p^2 = (c^2 + v) / p   (M^2 = M)
        Var_train = E[Y^2] - E[Y]^2 = (c^2 + v) / p - c^2
    and in eval Var_test = v. So Var_train - Var_test = (c^2 + v)(1 - p) / p >= 0: dropout keeps
    the mean but inflates the variance, more for a unit far from zero. A BN layer right after the
    dropout learns running_var ~ Var_train, then in eval sees Var_test: it scales the unit by
    sqrt(Var_test / Var_train) < 1 too little, a shift that the following layers were not trained
    on (the "disharmony"). Both equal v for p = 1 (no dropout).

    mean, var: numbers or floating tensors of one shape (per unit; a number stands for every unit);
    var >= 0; keep in (0, 1].
    Returns DropoutVarianceShift(train, test), with .ratio = test / train.
    """
    _check_moment("mean", mean)
    _check_moment("var", var)
    if (isinstance(mean, torch.Tensor) and isinstance(var, torch.Tensor) and mean.shape != var.shape):
        raise ValueError(f"mean and var must have one shape (one value per unit), got {tuple(mean.shape)} "
                         f"and {tuple(var.shape)}")
    if bool((torch.as_tensor(var) < 0).any()):
        raise ValueError(f"var must be >= 0, got {var}")
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"keep must be a probability in (0, 1] (torch's Dropout(p) keeps 1 - p), got {keep!r}")
    second_moment = mean * mean + var
    return DropoutVarianceShift(train=second_moment / keep - mean * mean,
                                test=var if isinstance(var, torch.Tensor) else float(var))
