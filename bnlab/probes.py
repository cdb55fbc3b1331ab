"""Probes: see inside a network while it trains, without keeping its activations.

A `Probe` hooks chosen layers of any nn.Module. On every `every`-th training step it records, per
layer, statistics of the layer's activations a (mean, std, percentiles, a fixed-bin histogram, the
saturated or dead fraction), of the gradient dL/da w.r.t. the layer's output (norm, std, histogram
of log10|dL/da|), and per parameter theta the ratios

    grad:data   = ||dL/dtheta|| / ||theta||,      update:data = ||theta_new - theta_old|| / ||theta_old||.

Statistics are computed where the tensors live (CPU or GPU), for all layers of one shape at once,
and only these few numbers are copied to the CPU. Memory grows with layers x records x bins only.

    with Probe(model, optimizer=opt, every=10) as probe:
        ...train as usual...               # hooks record; optimizer.step() closes each step
    probe.recording["hidden3"].percentiles # (records, 3): the 15th, 50th, 85th percentiles
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Probe", "Recording", "LayerRecord", "ParamRecord", "activation_layers", "median_drift",
           "SATURATION", "DEFAULT_PERCENTILES"]

DEFAULT_PERCENTILES = (15.0, 50.0, 85.0)
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus)
# A unit is saturated where its derivative is below this fraction of the derivative's maximum:
# sigmoid' = y(1 - y) < 0.1 * 1/4 (y < 0.026 or y > 0.974); tanh' = 1 - y^2 < 0.1 (|y| > 0.949).
SATURATION = 0.1
MAX_QUANTILE_ELEMENTS = 1 << 20  # torch.quantile sorts; beyond this, percentiles use an even subsample


def activation_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The nonlinearities of model in forward-definition order, named 'hidden1', 'hidden2', ..."""
    found = [m for m in model.modules() if isinstance(m, ACTIVATION_TYPES)]
    return {f"hidden{i}": m for i, m in enumerate(found, start=1)}


def _default_range(module: nn.Module, capture: str) -> tuple[float, float]:
    if capture == "output" and isinstance(module, nn.Sigmoid):
        return (0.0, 1.0)
    if capture == "output" and isinstance(module, nn.Tanh):
        return (-1.0, 1.0)
    if capture == "output" and isinstance(module, (nn.ReLU, nn.ReLU6)):
        return (0.0, 5.0)
    return (-5.0, 5.0)


class _Columns:
    """Named column ranges of one float32 row: the layout of a record."""

    def __init__(self, widths: dict[str, int]):
        self.slices, start = {}, 0
        for name, width in widths.items():
            self.slices[name] = slice(start, start + width)
            start += width
        self.width = start


class _Table:
    """A float32 matrix that grows by doubling: one row per recorded step, NaN where nothing came."""

    def __init__(self, width: int):
        self.data = np.full((16, width), np.nan, dtype=np.float32)
        self.rows = 0

    def new_row(self) -> np.ndarray:
        if self.rows == len(self.data):
            grown = np.full((max(16, 2 * len(self.data)), self.data.shape[1]), np.nan, dtype=np.float32)
            grown[:self.rows] = self.data
            self.data = grown
        self.rows += 1
        return self.data[self.rows - 1]

    def view(self) -> np.ndarray:
        return self.data[:self.rows]

    def trim(self) -> None:
        self.data = self.data[:self.rows].copy()


class LayerRecord:
    """What a probe recorded for one layer; every array has one row per recorded step.

    mean, std (records,); percentiles (records, P); hist (records, bins): the fraction of the
    layer's values in each bin of `edges` (values outside the range count in the end bins);
    saturated (sigmoid/tanh: fraction of values where the unit passes < 10 % of its maximum
    derivative) and dead (ReLU: fraction of units that are 0 for every example of the batch), NaN
    for other layers; unit_percentiles (records, units, P) for the first `units` units (features or
    channels) over the batch; grad_norm, grad_std (records,) and grad_hist (records, grad_bins)
    over log10|dL/da| with `grad_edges`.
    """

    def __init__(self, edges: np.ndarray, grad_edges: np.ndarray, n_percentiles: int, units: int):
        self.edges, self.grad_edges = edges, grad_edges
        self.units, self.n_percentiles = units, n_percentiles
        bins, grad_bins = len(edges) - 1, len(grad_edges) - 1
        self.activation_columns = _Columns({"mean": 1, "std": 1, "percentiles": n_percentiles, "hist": bins,
                                            "saturated": 1, "dead": 1, "unit_percentiles": units * n_percentiles})
        self.grad_columns = _Columns({"grad_norm": 1, "grad_std": 1, "grad_hist": grad_bins})
        self.table = _Table(self.activation_columns.width + self.grad_columns.width)

    def _get(self, name: str) -> np.ndarray:
        if name in self.activation_columns.slices:
            part = self.activation_columns.slices[name]
        else:
            s = self.grad_columns.slices[name]
            offset = self.activation_columns.width
            part = slice(s.start + offset, s.stop + offset)
        return self.table.view()[:, part]

    mean = property(lambda self: self._get("mean")[:, 0])
    std = property(lambda self: self._get("std")[:, 0])
    percentiles = property(lambda self: self._get("percentiles"))
    hist = property(lambda self: self._get("hist"))
    saturated = property(lambda self: self._get("saturated")[:, 0])
    dead = property(lambda self: self._get("dead")[:, 0])
    @property
    def unit_percentiles(self) -> np.ndarray:
        if not self.units:
            raise ValueError("per-unit percentiles were not recorded: create the Probe with units=k")
        return self._get("unit_percentiles").reshape(-1, self.units, self.n_percentiles)

    grad_norm = property(lambda self: self._get("grad_norm")[:, 0])
    grad_std = property(lambda self: self._get("grad_std")[:, 0])
    grad_hist = property(lambda self: self._get("grad_hist"))

    @property
    def centers(self) -> np.ndarray:
        """Midpoints of the histogram bins."""
        return (self.edges[:-1] + self.edges[1:]) / 2


class ParamRecord:
    """grad_data and update_data (records,) for one parameter; NaN where ||theta|| = 0 or no step ran."""

    def __init__(self):
        self.table = _Table(2)

    grad_data = property(lambda self: self.table.view()[:, 0])
    update_data = property(lambda self: self.table.view()[:, 1])


class Recording:
    """All records of one probe: steps (records,), a LayerRecord per layer, a ParamRecord per parameter.

    recording["hidden3"] is a layer's record; recording.params["3.weight"] a parameter's.
    Step s is the number of optimizer steps taken before the forward pass it describes (0: at init).
    """

    def __init__(self, percentiles: Sequence[float]):
        self.percentiles = tuple(float(p) for p in percentiles)
        self._steps = _Table(1)
        self.layers: dict[str, LayerRecord] = {}
        self.params: dict[str, ParamRecord] = {}

    @property
    def steps(self) -> np.ndarray:
        return self._steps.view()[:, 0].astype(np.int64)

    def __getitem__(self, layer: str) -> LayerRecord:
        if layer not in self.layers:
            raise KeyError(f"no layer {layer!r} was recorded; recorded layers: {list(self.layers)}")
        return self.layers[layer]

    def __len__(self) -> int:
        return self._steps.rows

    def percentile_index(self, q: float) -> int:
        """Column of percentile q in percentiles / unit_percentiles."""
        if float(q) not in self.percentiles:
            raise ValueError(f"percentile {q} was not recorded; recorded: {self.percentiles}")
        return self.percentiles.index(float(q))

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded arrays."""
        tables = [self._steps] + [r.table for r in self.layers.values()] + [r.table for r in self.params.values()]
        return sum(t.data.nbytes for t in tables)

    def trim(self) -> None:
        """Drop the spare capacity of the growable tables (the probe does this on exit)."""
        for table in [self._steps] + [r.table for r in self.layers.values()] + [r.table for r in self.params.values()]:
            table.trim()


class Probe:
    """Record layer and parameter statistics of model every `every` steps; a context manager.

    layers: None (every nonlinearity, named 'hidden1', ... by `activation_layers`), a list of module
    names from model.named_modules(), or a dict {label: module}. capture: record each layer's
    'output' (default) or its 'input' (e.g. a sigmoid's input is the pre-activation of Ioffe &
    Szegedy's Figure 1). percentiles in [0, 100]; bins over hist_range (None: the output range of a
    sigmoid/tanh, (0, 5) for ReLU outputs, else (-5, 5)); grad_bins over log10|dL/da| in
    grad_log_range; units: per-unit percentiles for the first `units` features/channels.

    A step is recorded when step % every == 0: only forward passes with autograd enabled count (an
    evaluation under torch.no_grad is ignored), and only the first call of a layer in a step. With
    optimizer given, optimizer.step() ends each step (via its step hooks) and update:data is
    recorded; without one, call `end_step()` after backward() and before your own update (grad:data
    divides by the parameters as they are when end_step runs; update:data is then NaN).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, every: int = 1,
                 layers: Iterable[str] | dict[str, nn.Module] | None = None, capture: str = "output",
                 percentiles: Sequence[float] = DEFAULT_PERCENTILES, bins: int = 40,
                 hist_range: tuple[float, float] | None = None, grad_bins: int = 40,
                 grad_log_range: tuple[float, float] = (-10.0, 0.0), units: int = 0):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if capture not in ("output", "input"):
            raise ValueError(f"capture must be 'output' or 'input', got {capture!r}")
        if not percentiles or not all(0 <= q <= 100 for q in percentiles):
            raise ValueError(f"percentiles must be a non-empty list of values in [0, 100], got {percentiles}")
        if bins < 1 or grad_bins < 1 or units < 0:
            raise ValueError(f"need bins >= 1, grad_bins >= 1, units >= 0; got {bins}, {grad_bins}, {units}")
        for name, (lo, hi) in (("hist_range", hist_range or (0, 1)), ("grad_log_range", grad_log_range)):
            if not lo < hi:
                raise ValueError(f"{name} must be (low, high) with low < high, got {(lo, hi)}")
        self.model, self.optimizer, self.every, self.capture = model, optimizer, every, capture
        self.layers = self._resolve_layers(model, layers)
        self.units = units
        self._recording = Recording(percentiles)
        self._q = torch.tensor([q / 100 for q in self._recording.percentiles])
        self.bins, self.grad_bins, self.grad_log_range = bins, grad_bins, grad_log_range
        self.ranges = {name: hist_range or _default_range(m, capture) for name, m in self.layers.items()}
        for name, module in self.layers.items():
            lo, hi = self.ranges[name]
            self._recording.layers[name] = LayerRecord(
                np.linspace(lo, hi, bins + 1), np.linspace(*grad_log_range, grad_bins + 1),
                len(self._recording.percentiles), units)
        self.parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for name in self.parameters:
            self._recording.params[name] = ParamRecord()
        self.step = 0
        self._force_torch = False  # tests set it to check the GPU code path on the CPU
        self._handles: list = []
        self._reset_pending()

    @staticmethod
    def _resolve_layers(model, layers) -> dict[str, nn.Module]:
        if layers is None:
            found = activation_layers(model)
            if not found:
                raise ValueError("the model has no nonlinearity to probe by default; pass layers=[...] by name")
            return found
        if isinstance(layers, dict):
            return dict(layers)
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise ValueError(f"no module named {missing} in the model; names are {[n for n in modules if n]}")
        return {name: modules[name] for name in layers}

    # ------------------------------------------------------------------ hooks
    def __enter__(self) -> Probe:
        if self._handles:
            raise RuntimeError("this Probe is already attached")
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name, module)))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(lambda *_: self._before_update()))
            self._handles.append(self.optimizer.register_step_post_hook(lambda *_: self.end_step()))
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this probe installed and drop unfinished records; idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._reset_pending()
        self._recording.trim()

    @property
    def recording(self) -> Recording:
        """Everything recorded so far."""
        return self._recording

    @property
    def recording_now(self) -> bool:
        return self.step % self.every == 0

    def _reset_pending(self) -> None:
        # what this step captured, kept until end_step computes its statistics in one batch
        self._activations: dict[str, tuple] = {}   # layer -> (captured values, output, module)
        self._grads: dict[str, torch.Tensor] = {}  # layer -> dL/d(output)
        self._before: list[torch.Tensor] | None = None
        self._grad_data: torch.Tensor | None = None

    def _forward_hook(self, name: str, module: nn.Module):
        def hook(_module, inputs, output):
            if not (self.recording_now and torch.is_grad_enabled()) or name in self._activations:
                return
            captured = output if self.capture == "output" else inputs[0]
            # copies: an in-place op later in the forward pass (ReLU(inplace=True)) would change them
            kept_output = output.detach().clone() if _kind(module) and captured is not output else None
            self._activations[name] = (captured.detach().clone(), kept_output, module)
            if output.requires_grad:
                output.register_hook(lambda grad: self._grads.setdefault(name, grad.detach()))
        return hook

    def _before_update(self) -> None:
        if not self.recording_now:
            return
        with torch.no_grad():
            self._before = [p.detach().clone() for p in self.parameters.values()]
            self._grad_data = self._grad_data_ratio()

    def _grad_data_ratio(self) -> torch.Tensor:
        params = list(self.parameters.values())
        grads = [p.grad if p.grad is not None else torch.full_like(p, float("nan")) for p in params]
        return _ratio(torch.stack(_norms(grads)), torch.stack(_norms(params)))

    def end_step(self) -> None:
        """Close the current step: hand its captured tensors to the statistics, count the step."""
        if self.recording_now:
            with torch.no_grad():
                params = self._param_ratios()
                self._write(self.step, self._statistics(self._activations, self._grads), params)
        self._reset_pending()
        self.step += 1

    # ------------------------------------------------------------------ statistics, where the tensors live
    def _statistics(self, activations: dict, grads: dict) -> list[tuple[str, str, np.ndarray]]:
        """[(layer, part, values)] for one step; layers of one shape and kind are computed together."""
        out = []
        groups: dict[tuple, list[str]] = {}
        for name, (x, _, module) in activations.items():
            groups.setdefault((tuple(x.shape), x.device, _kind(module)), []).append(name)
        for (shape, device, kind), names in groups.items():
            ops = _TORCH if device.type != "cpu" or self._force_torch else _NUMPY
            x = ops.stack([activations[n][0] for n in names])            # (G, N, ...)
            flat = x.reshape(len(names), -1)
            lo, hi = (ops.column([self.ranges[n][i] for n in names], flat) for i in (0, 1))
            parts = [*ops.mean_std(flat), ops.percentiles(flat, self._q), ops.histogram(flat, lo, hi, self.bins)]
            y = ops.stack([activations[n][1] if activations[n][1] is not None
                           else activations[n][0] for n in names]) if kind else None
            parts += list(ops.saturated_dead(y, kind, len(names), device))
            if self.units:
                if len(shape) < 2 or shape[1] < self.units:
                    raise ValueError(f"layers {names} have shape {shape}: fewer units than units={self.units}")
                per_unit = ops.units_first(x, self.units)                    # (G, units, N * spatial)
                parts.append(ops.percentiles(per_unit, self._q).reshape(len(names), -1))
            values = ops.to_numpy(ops.concat(parts))
            out += [(n, "activation", values[i]) for i, n in enumerate(names)]
        grad_groups: dict[tuple, list[str]] = {}
        for name, g in grads.items():
            grad_groups.setdefault((tuple(g.shape), g.device), []).append(name)
        lo, hi = self.grad_log_range
        for (_, device), names in grad_groups.items():
            ops = _TORCH if device.type != "cpu" or self._force_torch else _NUMPY
            flat = ops.stack([grads[n] for n in names]).reshape(len(names), -1)
            parts = [ops.norm(flat), ops.mean_std(flat)[1], ops.log_histogram(flat, lo, hi, self.grad_bins)]
            values = ops.to_numpy(ops.concat(parts))
            out += [(n, "grad", values[i]) for i, n in enumerate(names)]
        return out

    def _param_ratios(self) -> np.ndarray | None:
        """(parameters, 2): grad:data and update:data of this step, NaN where unknown."""
        if not self.parameters:
            return None
        if self._before is None:  # no optimizer hooks: gradients are there, the update is unknown
            grad_data = self._grad_data_ratio()
            update_data = torch.full_like(grad_data, float("nan"))
        else:
            after = [p.detach() for p in self.parameters.values()]
            grad_data = self._grad_data
            update_data = _ratio(torch.stack(_norms(torch._foreach_sub(after, self._before))),
                                 torch.stack(_norms(self._before)))
        return torch.stack([grad_data, update_data], dim=1).cpu().numpy()

    def _write(self, step: int, values: list[tuple[str, str, np.ndarray]], params: np.ndarray | None) -> None:
        rec = self._recording
        rec._steps.new_row()[0] = step
        rows = {name: r.table.new_row() for name, r in rec.layers.items()}
        for i, r in enumerate(rec.params.values()):
            r.table.new_row()[:] = params[i]
        for name, part, chunk in values:
            offset = rec.layers[name].activation_columns.width if part == "grad" else 0
            rows[name][offset:offset + len(chunk)] = chunk


def _kind(module: nn.Module) -> str | None:
    """Which of saturated / dead a layer's output allows: 'sigmoid', 'tanh', 'relu' or None."""
    for kind, types in (("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("relu", (nn.ReLU, nn.ReLU6))):
        if isinstance(module, types):
            return kind
    return None


def _ratio(numerator: torch.Tensor, data_norm: torch.Tensor) -> torch.Tensor:
    """numerator / ||theta||, NaN where ||theta|| = 0 (a zero-initialized bias has no scale yet)."""
    return torch.where(data_norm > 0, numerator / data_norm.clamp_min(1e-38), torch.full_like(data_norm, float("nan")))


def _norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    # one fused call instead of a norm per parameter: at k=1 the probe's cost is mostly call overhead
    return [n.float() for n in torch._foreach_norm(tensors)]


class _NumpyOps:
    """Batched statistics of G rows at once, for tensors on the CPU.

    NumPy rather than torch here: np.partition finds percentiles 5-10x faster than torch.sort on
    the CPU, and at k=1 the probe must cost little next to a small net's training step.
    """

    stack = staticmethod(lambda tensors: np.stack([t.numpy() for t in tensors]).astype(np.float32, copy=False))
    concat = staticmethod(lambda parts: np.concatenate([np.asarray(p, np.float32).reshape(len(p), -1) for p in parts], 1))
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


class _TorchOps:
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


_NUMPY, _TORCH = _NumpyOps(), _TorchOps()


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
