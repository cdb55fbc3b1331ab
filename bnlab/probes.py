"""Probes: see inside a network while it trains, without keeping its activations.

A `Probe` hooks chosen layers of any nn.Module. On every `every`-th training step it records, per
layer, statistics of the layer's activations a (mean, std, percentiles, a fixed-bin histogram, the
saturated or dead fraction), of the gradient dL/da w.r.t. the layer's output (norm, std, histogram
of log10|dL/da|), and per parameter theta the ratios

    grad:data   = ||dL/dtheta|| / ||theta||,      update:data = ||theta_new - theta_old|| / ||theta_old||.

On a recorded step the hooks only copy the captured tensors (and dL/da) into preallocated
buffers, and the parameter norms are taken with one _foreach_norm; the statistics of up to 64
buffered steps are computed together (one sort per row gives the exact percentiles and
histograms), where the tensors live (CPU or GPU), when the buffers fill, when the recording is
read and when the probe is removed. Reading `Probe.recording` (or anything of a Recording, also a
LayerRecord fetched earlier) therefore always shows every finished step. Between recorded steps
no forward hook is attached. Memory: the records (layers x records x bins), the layer buffers, at
most `BUFFER_BYTES` together (one row per layer if a single step is larger), and one copy of the
parameters plus a (64, 3 x parameters) table of norms (`Probe.buffer_nbytes`).

    with Probe(model, optimizer=opt, every=10) as probe:
        ...train as usual...               # hooks record; optimizer.step() closes each step
    probe.recording["hidden3"].percentiles # (records, 3): the 15th, 50th, 85th percentiles
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from numbers import Integral

import numpy as np
import torch
from torch import nn

# the statistics themselves live in bnlab.stats; the names probes exported stay importable here
from .stats import (
    DEFAULT_PERCENTILES,
    NUMPY_OPS,
    SATURATION,
    TORCH_OPS,
    activation_statistics,
    float32_thresholds,
    grad_data_ratio,
    gradient_statistics,
    median_drift,
    norms,
)

__all__ = ["Probe", "Recording", "LayerRecord", "ParamRecord", "activation_layers", "median_drift",
           "SATURATION", "DEFAULT_PERCENTILES"]

MAX_BUFFERED_STEPS = 64
# the buffered copies of all layers together; a layer whose one step alone is larger flushes every step
BUFFER_BYTES = 16 * 2 ** 20

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

    def new_rows(self, n: int) -> np.ndarray:
        """The next n rows (NaN), appended."""
        if self.rows + n > len(self.data):
            size = max(16, len(self.data))
            while size < self.rows + n:
                size *= 2
            grown = np.full((size, self.data.shape[1]), np.nan, dtype=np.float32)
            grown[:self.rows] = self.data[:self.rows]
            self.data = grown
        self.rows += n
        return self.data[self.rows - n:self.rows]

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

    def __init__(self, edges: np.ndarray, grad_edges: np.ndarray, n_percentiles: int, units: int,
                 recording: Recording | None = None):
        self._recording = recording
        self.edges, self.grad_edges = edges, grad_edges
        self.units, self.n_percentiles = units, n_percentiles
        bins, grad_bins = len(edges) - 1, len(grad_edges) - 1
        self.activation_columns = _Columns({"mean": 1, "std": 1, "percentiles": n_percentiles, "hist": bins,
                                            "saturated": 1, "dead": 1, "unit_percentiles": units * n_percentiles})
        self.grad_columns = _Columns({"grad_norm": 1, "grad_std": 1, "grad_hist": grad_bins})
        self.table = _Table(self.activation_columns.width + self.grad_columns.width)

    def _get(self, name: str) -> np.ndarray:
        if self._recording is not None:
            self._recording._sync()
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

    def __init__(self, recording: Recording | None = None):
        self._recording = recording
        self.table = _Table(2)

    def _column(self, i: int) -> np.ndarray:
        if self._recording is not None:
            self._recording._sync()
        return self.table.view()[:, i]

    grad_data = property(lambda self: self._column(0))
    update_data = property(lambda self: self._column(1))


class Recording:
    """All records of one probe: steps (records,), a LayerRecord per layer, a ParamRecord per parameter.

    recording["hidden3"] is a layer's record; recording.params["3.weight"] a parameter's.
    Step s is the number of optimizer steps taken before the forward pass it describes (0: at init).
    While a probe is attached, reading anything here first computes the steps it has buffered.
    """

    def __init__(self, percentiles: Sequence[float]):
        self.percentiles = tuple(float(p) for p in percentiles)
        self._steps = _Table(1)
        self.layers: dict[str, LayerRecord] = {}
        self.params: dict[str, ParamRecord] = {}
        self._flush = None  # the attached probe's: computes what it has buffered

    def _sync(self) -> None:
        if self._flush is not None:
            self._flush()

    def __getstate__(self) -> dict:
        # a copy or pickle holds what was recorded, not the attached probe (and with it the model)
        self._sync()
        return self.__dict__ | {"_flush": None}

    @property
    def steps(self) -> np.ndarray:
        self._sync()
        return self._steps.view()[:, 0].astype(np.int64)

    def __getitem__(self, layer: str) -> LayerRecord:
        if layer not in self.layers:
            raise KeyError(f"no layer {layer!r} was recorded; recorded layers: {list(self.layers)}")
        return self.layers[layer]

    def __len__(self) -> int:
        self._sync()
        return self._steps.rows

    def percentile_index(self, q: float) -> int:
        """Column of percentile q in percentiles / unit_percentiles."""
        if float(q) not in self.percentiles:
            raise ValueError(f"percentile {q} was not recorded; recorded: {self.percentiles}")
        return self.percentiles.index(float(q))

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded arrays (not the probe's buffers: `Probe.buffer_nbytes`)."""
        self._sync()
        tables = [self._steps] + [r.table for r in self.layers.values()] + [r.table for r in self.params.values()]
        return sum(t.data.nbytes for t in tables)

    def trim(self) -> None:
        """Drop the spare capacity of the growable tables (the probe does this on exit)."""
        self._sync()
        for table in [self._steps] + [r.table for r in self.layers.values()] + [r.table for r in self.params.values()]:
            table.trim()


class _Buffer:
    """Preallocated float32 copies of one layer's captured tensors, one row per recorded step.

    Rows [start, used) wait for their statistics; slots[r] is row r's step among the probe's
    pending steps. x: the captured values; y: the layer's output where saturated/dead need it and x
    is the input; g: dL/d(output), has_grad[r] once backward delivered it.
    """

    def __init__(self, shape: torch.Size, output_shape: torch.Size, device: torch.device, keep_output: bool,
                 rows: int):
        self.key = (shape, output_shape, device)
        self.x = torch.empty((rows, *shape), dtype=torch.float32, device=device)
        self.g = torch.empty((rows, *output_shape), dtype=torch.float32, device=device)
        self.y = torch.empty_like(self.g) if keep_output else None
        # views made once: indexing a row on every step would cost as much as the copy
        self.x_rows, self.g_rows = list(self.x), list(self.g)
        self.y_rows = list(self.y) if keep_output else None
        self.slots, self.has_grad = [0] * rows, [False] * rows
        self.start = self.used = 0

    @property
    def full(self) -> bool:
        return self.used == len(self.x_rows)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.x, self.y, self.g) if t is not None)

    def take_grad(self, row: int, grad: torch.Tensor) -> None:
        if not self.has_grad[row]:  # a second backward through the same graph is not this step's
            self.g_rows[row].copy_(grad.detach())
            self.has_grad[row] = True


class _ParamNorms:
    """||grad||, ||theta|| (before the update) and ||update|| of every parameter, one row per buffered step.

    The norms are taken at once, with _foreach_norm (one call for all gradients and parameters),
    from one copy of the parameters kept from before the update to after it. (Copying gradients and
    parameters per step and taking the norms at the flush was slower on the CPU: the copies of all
    steps do not fit in the cache.)
    """

    def __init__(self, params: list[torch.Tensor]):
        self.params, self.rows = params, MAX_BUFFERED_STEPS
        self.table = torch.full((self.rows, 3 * len(params)), float("nan"), device=params[0].device)
        with torch.no_grad():
            self.before = [torch.empty_like(p) for p in params]
        self.nan: dict = {}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [self.table, *self.before])

    def _grads(self) -> list[torch.Tensor]:
        grads = [p.grad for p in self.params]
        # not `None in grads`: that compares None with each tensor by ==, 10 us apiece
        if all(g is not None for g in grads):
            return grads
        return [g if g is not None else self._nan(p) for g, p in zip(grads, self.params)]

    def _nan(self, p: torch.Tensor) -> torch.Tensor:
        """A stand-in for a missing gradient: its norm is NaN."""
        key = (p.dtype, p.device)
        if key not in self.nan:
            self.nan[key] = torch.full((1,), float("nan"), dtype=p.dtype, device=p.device)
        return self.nan[key]

    def before_update(self, slot: int) -> None:
        """The gradients and parameters as the optimizer is about to use them."""
        _store_norms(self._grads() + self.params, self.table[slot, :2 * len(self.params)])
        torch._foreach_copy_(self.before, self.params)

    def after_update(self, slot: int) -> None:
        torch._foreach_sub_(self.before, self.params)
        _store_norms(self.before, self.table[slot, 2 * len(self.params):])

    def without_update(self, slot: int) -> None:
        """No optimizer step seen: gradients and parameters now, the update unknown."""
        _store_norms(self._grads() + self.params, self.table[slot, :2 * len(self.params)])
        self.table[slot, 2 * len(self.params):] = float("nan")

    def move(self, source: int, target: int) -> None:
        """Slot source (the unfinished step's, its update still to come) becomes slot target."""
        self.table[target] = self.table[source]

    def norms(self, done: int) -> torch.Tensor:
        """(done, 3P) float32 of slots 0..done-1: ||grad|| (NaN where no gradient came), ||theta||,
        ||update|| (NaN where no update was seen)."""
        return self.table[:done]


def _store_norms(tensors: list[torch.Tensor], out: torch.Tensor) -> None:
    values = torch._foreach_norm(tensors)
    if all(v.dtype == torch.float32 for v in values):
        torch.stack(values, out=out)
    else:
        out.copy_(torch.stack(norms(tensors)))


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

    By default every statistic is of the whole captured tensor, exactly (float32 values; means and
    standard deviations with pairwise float32 sums, relative error ~1e-7; stored as float32).
    sample=S trades exactness for speed: percentiles, histograms and gradient histograms are then
    those of every ceil(n / S)-th of a layer's n values in a step (flattened in memory order, from
    the first: at most S values, evenly spread; `bnlab.stats.subsample`), per-unit percentiles those
    of every ceil(m / S)-th of a unit's m values; mean, std, saturated, dead, grad_norm, grad_std and
    the parameter ratios stay exact. A tensor of at most S values is recorded exactly.

    The forward hooks are attached only during recorded steps. buffer_steps: how many recorded
    steps are buffered before their statistics are computed in one batch (None: up to 64, as many
    as fit in `BUFFER_BYTES`); it changes when, never what, is computed.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, every: int = 1,
                 layers: Iterable[str] | dict[str, nn.Module] | None = None, capture: str = "output",
                 percentiles: Sequence[float] = DEFAULT_PERCENTILES, bins: int = 40,
                 hist_range: tuple[float, float] | None = None, grad_bins: int = 40,
                 grad_log_range: tuple[float, float] = (-10.0, 0.0), units: int = 0,
                 buffer_steps: int | None = None, sample: int | None = None):
        if isinstance(every, bool) or not isinstance(every, Integral) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if capture not in ("output", "input"):
            raise ValueError(f"capture must be 'output' or 'input', got {capture!r}")
        if not percentiles or not all(0 <= q <= 100 for q in percentiles):
            raise ValueError(f"percentiles must be a non-empty list of values in [0, 100], got {percentiles}")
        if bins < 1 or grad_bins < 1 or units < 0:
            raise ValueError(f"need bins >= 1, grad_bins >= 1, units >= 0; got {bins}, {grad_bins}, {units}")
        for name, (lo, hi) in (("hist_range", hist_range or (0, 1)), ("grad_log_range", grad_log_range)):
            if not lo < hi:
                raise ValueError(f"{name} must be (low, high) with low < high, got {(lo, hi)}")
        if buffer_steps is not None and (isinstance(buffer_steps, bool) or not isinstance(buffer_steps, Integral)
                                         or not 1 <= buffer_steps <= MAX_BUFFERED_STEPS):
            raise ValueError(f"buffer_steps must be None or an int in [1, {MAX_BUFFERED_STEPS}], got {buffer_steps!r}")
        self.model, self.optimizer, self.every, self.capture = model, optimizer, every, capture
        self.layers = self._resolve_layers(model, layers)
        if sample is not None and (isinstance(sample, bool) or not isinstance(sample, Integral) or sample < 2):
            raise ValueError(f"sample must be None or an int >= 2, got {sample!r}")
        self.units, self.buffer_steps, self.sample = units, buffer_steps, sample
        self._recording = Recording(percentiles)
        self._q = np.array([q / 100 for q in self._recording.percentiles])
        self.bins, self.grad_bins, self.grad_log_range = bins, grad_bins, grad_log_range
        self.ranges = {name: hist_range or _default_range(m, capture) for name, m in self.layers.items()}
        self._kinds = {name: _kind(m) for name, m in self.layers.items()}
        self._thresholds, grad_edges = {}, np.linspace(*grad_log_range, grad_bins + 1)
        for name, module in self.layers.items():
            edges = np.linspace(*self.ranges[name], bins + 1)
            self._thresholds[name] = float32_thresholds(edges[1:-1])
            self._recording.layers[name] = LayerRecord(edges, grad_edges, len(self._recording.percentiles), units,
                                                       self._recording)
        self._grad_thresholds = float32_thresholds(10.0 ** grad_edges[1:-1])
        self.parameters = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for name in self.parameters:
            self._recording.params[name] = ParamRecord(self._recording)
        self.step = 0
        self._force_torch = False  # tests set it to check the GPU code path on the CPU
        self._attached = False
        self._forward_handles: list = []
        self._optimizer_handles: list = []
        self._buffers: dict[str, _Buffer] = {}
        self._params: _ParamNorms | None = None
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
        if self._attached:
            raise RuntimeError("this Probe is already attached")
        self._attached = True
        self._recording._flush = self._flush
        if self.recording_now:
            self._attach_forward_hooks()
        if self.optimizer is not None:
            self._optimizer_handles = [self.optimizer.register_step_pre_hook(lambda *_: self._before_update()),
                                       self.optimizer.register_step_post_hook(lambda *_: self.end_step())]
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this probe installed, record the finished steps it had buffered and drop
        the unfinished one and the buffers; idempotent."""
        self._detach_forward_hooks()
        for handle in self._optimizer_handles:
            handle.remove()
        self._optimizer_handles = []
        if self._attached:
            try:
                self._flush()
            finally:
                self._attached = False
                self._recording._flush = None
                self._reset_pending()
                self._buffers, self._params = {}, None
                self._recording.trim()

    def _attach_forward_hooks(self) -> None:
        if not self._forward_handles:
            self._forward_handles = [module.register_forward_hook(self._forward_hook(name))
                                     for name, module in self.layers.items()]

    def _detach_forward_hooks(self) -> None:
        for handle in self._forward_handles:
            handle.remove()
        self._forward_handles = []

    @property
    def recording(self) -> Recording:
        """Everything recorded so far: every finished step, the buffered ones computed first."""
        self._flush()
        return self._recording

    @property
    def recording_now(self) -> bool:
        return self.step % self.every == 0

    @property
    def buffer_nbytes(self) -> int:
        """Bytes of the copies held for statistics not yet computed (0 once removed)."""
        held = sum(b.nbytes for b in self._buffers.values())
        if self._params is not None:
            held += self._params.nbytes
        return held

    def _reset_pending(self) -> None:
        self._pending_steps: list[int] = []     # finished recorded steps whose statistics wait in the buffers
        self._captured: set[str] = set()        # layers the current step has captured
        self._updating = False                  # the current step's parameters were copied before the update

    def _forward_hook(self, name: str):
        keep_output = self.capture == "input" and self._kinds[name] is not None

        def hook(_module, inputs, output):
            if not torch.is_grad_enabled() or name in self._captured:
                return
            captured = output if self.capture == "output" else inputs[0]
            buffer = self._buffers.get(name)
            if buffer is None or buffer.key != (captured.shape, output.shape, captured.device):
                buffer = self._new_buffer(name, captured, output, keep_output)
            self._captured.add(name)
            row = buffer.used
            buffer.used += 1
            buffer.slots[row], buffer.has_grad[row] = len(self._pending_steps), False
            # copies: an in-place op later in the forward pass (ReLU(inplace=True)) would change them
            buffer.x_rows[row].copy_(captured.detach())
            if keep_output:
                buffer.y_rows[row].copy_(output.detach())
            if output.requires_grad:
                output.register_hook(partial(buffer.take_grad, row))
        return hook

    def _new_buffer(self, name: str, captured: torch.Tensor, output: torch.Tensor, keep_output: bool) -> _Buffer:
        if self.units and (captured.dim() < 2 or captured.shape[1] < self.units):
            raise ValueError(f"layer {name!r} captures shape {tuple(captured.shape)}: fewer units than "
                             f"units={self.units}")
        if name in self._buffers:  # a new shape: the rows of the old one are all of finished steps
            self._flush()
        row_bytes = 4 * (captured.numel() + output.numel() * (2 if keep_output else 1))
        budget = BUFFER_BYTES // len(self.layers)
        rows = self.buffer_steps or max(1, min(MAX_BUFFERED_STEPS, budget // row_bytes))
        self._buffers[name] = _Buffer(captured.shape, output.shape, captured.device, keep_output, rows)
        return self._buffers[name]

    def _before_update(self) -> None:
        if not (self.recording_now and self.parameters):
            return
        with torch.no_grad():
            self._param_norms().before_update(len(self._pending_steps))
            self._updating = True

    def _param_norms(self) -> _ParamNorms:
        if self._params is None:
            self._params = _ParamNorms(list(self.parameters.values()))
        return self._params

    def end_step(self) -> None:
        """Close the current step: its captured tensors wait in the buffers (computed when they fill,
        the recording is read or the probe is removed); count the step."""
        if self.recording_now:
            if self.parameters:
                with torch.no_grad():
                    slot = len(self._pending_steps)
                    if self._updating:
                        self._param_norms().after_update(slot)
                    else:  # no optimizer hooks: gradients are there, the update is unknown
                        self._param_norms().without_update(slot)
            self._pending_steps.append(self.step)
            self._captured, self._updating = set(), False
            steps = self._params.rows if self._params is not None else MAX_BUFFERED_STEPS
            if len(self._pending_steps) == steps or any(b.full for b in self._buffers.values()):
                self._flush()
        self.step += 1
        if not self._attached:
            return
        # no forward hooks between recorded steps: a module without hooks is called on torch's fast path
        if self.recording_now:
            self._attach_forward_hooks()
        else:
            self._detach_forward_hooks()

    # ------------------------------------------------------------------ statistics, where the tensors live
    def _flush(self) -> None:
        """Record the statistics of every finished step in the buffers, computed in one batch per layer."""
        done = len(self._pending_steps)
        if not done:
            return
        rec = self._recording
        base = rec._steps.rows
        rec._steps.new_rows(done)[:, 0] = self._pending_steps
        for r in rec.layers.values():
            r.table.new_rows(done)
        if self._params is not None:
            self._write_params(done)
            if self._updating:  # the unfinished step's slot becomes the first of the next batch
                self._params.move(done, 0)
        self._pending_steps = []
        work = [(name, buffer, part) for name, buffer in self._buffers.items()
                if (part := self._take_finished(buffer, done)) is not None]
        with torch.no_grad():
            self._write(base, work, self._compute(work))

    @staticmethod
    def _take_finished(buffer: _Buffer, done: int) -> tuple | None:
        """(rows, slots, with_grad) of the buffer's rows of finished steps (all but the current step's),
        which leave the buffer; None if there are none."""
        end = buffer.used - (buffer.used > buffer.start and buffer.slots[buffer.used - 1] >= done)
        part = (slice(buffer.start, end), np.array(buffer.slots[buffer.start:end]),
                np.array(buffer.has_grad[buffer.start:end])) if end > buffer.start else None
        if end == buffer.used:
            buffer.start = buffer.used = 0
        else:  # the current step's row stays; it becomes slot 0 of the next batch
            buffer.start = end
            buffer.slots[end] = 0
        return part

    def _ops(self, buffer: _Buffer):
        return TORCH_OPS if buffer.x.device.type != "cpu" or self._force_torch else NUMPY_OPS

    def _compute(self, work: list) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """(activation, gradient or None) statistics of each buffer's rows."""
        results = []
        for name, buffer, (rows, _, with_grad) in work:
            ops = self._ops(buffer)
            y = ops.as_rows(buffer.y[rows]) if buffer.y is not None else None
            activations = activation_statistics(ops, ops.as_rows(buffer.x[rows]), y, self._kinds[name], self._q,
                                                self._thresholds[name], self.units, self.sample)
            grads = None
            if with_grad.any():
                g = buffer.g[rows] if with_grad.all() else buffer.g[rows][torch.from_numpy(with_grad)]
                grads = gradient_statistics(ops, ops.as_rows(g), self._grad_thresholds, self.sample)
            results.append((activations, grads))
        return results

    def _write(self, base: int, work: list, results: list) -> None:
        for (name, _, (_, slots, with_grad)), (activations, grads) in zip(work, results):
            record = self._recording.layers[name]
            width = record.activation_columns.width
            record.table.data[base + slots, :width] = activations
            if grads is not None:
                record.table.data[base + slots[with_grad], width:] = grads

    def _write_params(self, done: int) -> None:
        with torch.no_grad():
            table = self._params.norms(done)
        count = len(self.parameters)
        grad, data, update = table[:, :count], table[:, count:2 * count], table[:, 2 * count:]
        ratios = torch.stack([grad_data_ratio(grad, data), grad_data_ratio(update, data)], dim=2).cpu().numpy()
        for i, r in enumerate(self._recording.params.values()):
            r.table.new_rows(done)[:] = ratios[:, i]


def _kind(module: nn.Module) -> str | None:
    """Which of saturated / dead a layer's output allows: 'sigmoid', 'tanh', 'relu' or None."""
    for kind, types in (("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("relu", (nn.ReLU, nn.ReLU6))):
        if isinstance(module, types):
            return kind
    return None
