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

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

# the statistics themselves live in bnlab.stats; the names probes exported stay importable here
from .stats import DEFAULT_PERCENTILES, NUMPY_OPS, SATURATION, TORCH_OPS, grad_data_ratio, median_drift, norms

__all__ = ["Probe", "Recording", "LayerRecord", "ParamRecord", "activation_layers", "median_drift",
           "SATURATION", "DEFAULT_PERCENTILES"]

ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softplus)


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
        return grad_data_ratio(torch.stack(norms(grads)), torch.stack(norms(params)))

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
            ops = TORCH_OPS if device.type != "cpu" or self._force_torch else NUMPY_OPS
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
            ops = TORCH_OPS if device.type != "cpu" or self._force_torch else NUMPY_OPS
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
            update_data = grad_data_ratio(torch.stack(norms(torch._foreach_sub(after, self._before))),
                                          torch.stack(norms(self._before)))
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
