"""Interactive explorers for the lessons: they draw in the browser.

An explorer is an anywidget widget: a small Python class that computes, once, the data it shows (a
fixed random sample, recorded training runs) and sends them in its `data` trait, and a small
JavaScript view (`bnlab/static/<name>.js`) that draws them on a canvas and redraws on every control
move without asking the kernel: BN of the playground's sample, the running average, picking a step,
layer or run from the records happen in the browser. Only a button that trains goes back to Python.
The widget's state, JavaScript included, is saved with the notebook, so a committed notebook and the
course's static site keep their explorers moving with no kernel at all.

A new explorer is a subclass of `Explorer` that sets VIEW (its view file) and fills `data`, and
`snapshot()` draws the same records with matplotlib, for renderers that run no JavaScript (GitHub's).
The view file imports from `explorer.js` (controls, canvas plots) and `bn.js` (the per-move
computations); `bundle()` joins them into the one ES module anywidget loads, and node's test runner
imports them as they are (`tests/js/`).
"""

from __future__ import annotations

import io
import itertools
import json
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import anywidget
import ipywidgets as widgets
import matplotlib
import numpy as np
import traitlets
from IPython.display import display

from . import plots
from .data import base_sample, drifting_batches
from .experiments import final_results, gradient_flow_table, ramp_lag
from .reference import batchnorm_backward, batchnorm_forward, running_average
from .train import History

__all__ = ["Explorer", "ForwardPlayground", "GradientCoupling", "MomentumExplorer", "ActivationExplorer",
           "GradientFlowExplorer", "SweepExplorer", "MaskExplorer", "LossSliceExplorer", "RegularizationExplorer",
           "SequenceExplorer", "ShardExplorer",
           "bundle", "rounded",
           "MAX_PAYLOAD_BYTES",
           # moved, re-exported for the notebooks: base_sample to bnlab.data, the others to bnlab.experiments
           "final_results", "base_sample", "ramp_lag"]

STATIC = Path(__file__).resolve().parent / "static"
LIBRARY = ("bn.js", "explorer.js")   # bundled before every view, dependencies first
MAX_PAYLOAD_BYTES = 1_000_000        # what one explorer may send (its data as JSON)
_IMPORT = re.compile(r'^import\s*\{[^}]*\}\s*from\s*"\./([\w-]+\.js)";?[ \t]*\n', re.M)
_EXPORT = re.compile(r"^export (?=(?:async )?function|const |let |class )", re.M)


def bundle(view: str) -> str:
    """One ES module from LIBRARY and a view file of bnlab/static: the library's exports become plain
    declarations and the imports between these files go (they are all in the one module now), so a
    view may import only from them; only the view's `export default` stays. Nothing is loaded from
    anywhere else, a CDN least of all."""
    parts = []
    for name in (*LIBRARY, view):
        path = STATIC / name
        if not path.is_file():
            raise ValueError(f"no explorer view {name!r} in {STATIC}")
        text = path.read_text(encoding="utf-8")
        for imported in _IMPORT.findall(text):
            if imported not in LIBRARY:
                raise ValueError(f"{name} imports {imported!r}; a view may import only from {LIBRARY}")
        text = _EXPORT.sub("", _IMPORT.sub("", text))
        if re.search(r"^\s*import\b", text, re.M):
            raise ValueError(f"{name} has an import that cannot be bundled (only `import {{...}} from \"./x.js\"`)")
        if name != view and "export default" in text:
            raise ValueError(f"library file {name} must not have a default export")
        parts.append(f"// ----- bnlab/static/{name}\n{text}")
    if "export default" not in parts[-1]:
        raise ValueError(f"{view} must end in `export default {{ render }}`")
    return "\n".join(parts)


def rounded(values, digits: int = 5) -> list:
    """values (any shape) as nested lists of floats kept to `digits` significant digits: what the
    eye can tell apart, in about half the JSON of full float64 reprs. NaN and inf become None (JSON
    has neither)."""
    a = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        magnitude = np.where(finite & (a != 0), np.floor(np.log10(np.abs(np.where(finite, a, 1.0)))), 0)
    scale = 10.0 ** (digits - 1 - magnitude)
    r = np.where(finite, np.round(a * scale) / scale, np.nan)
    return np.where(finite, r, None).tolist() if not finite.all() else r.tolist()


class Explorer(anywidget.AnyWidget):
    """An explorer: `data` is everything its view needs, sent once (at most MAX_PAYLOAD_BYTES);
    the view (VIEW, in bnlab/static) draws and redraws it in the browser. Subclasses compute `data`
    in __init__ and draw `figure()` with matplotlib from the same records."""

    VIEW = ""
    data = traitlets.Dict()
    # What is sent: data as one compact JSON text. A dict trait would be saved in the notebook's
    # widget state one number per indented line, about twice the size.
    _payload = traitlets.Unicode("{}").tag(sync=True)

    def __init_subclass__(cls, **kwargs):
        if cls.__dict__.get("VIEW"):
            cls._esm = bundle(cls.VIEW)
        super().__init_subclass__(**kwargs)

    def __init__(self, data: dict, **kwargs):
        super().__init__(data=data, **kwargs)
        self.on_msg(self._on_message)

    @traitlets.validate("data")
    def _fits(self, proposal):
        text = json.dumps(proposal["value"], allow_nan=False, separators=(",", ":"))
        if len(text) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"{type(self).__name__} would send {len(text):,} bytes, more than "
                             f"{MAX_PAYLOAD_BYTES:,}: record fewer steps or coarser histograms")
        return proposal["value"]

    @traitlets.observe("data")
    def _encode(self, change) -> None:
        self._payload = json.dumps(change["new"], allow_nan=False, separators=(",", ":"))

    @property
    def payload_bytes(self) -> int:
        """The size of what this explorer sends: its data as compact JSON."""
        return len(self._payload)

    def _on_message(self, _widget, content, _buffers) -> None:
        if isinstance(content, dict) and content.get("event") == "train":
            self.send({"event": "training", "done": False})
            try:
                self.train_selected(**{k: v for k, v in content.items() if k != "event"})
            finally:
                self.send({"event": "training", "done": True})

    def train_selected(self, **settings) -> None:
        raise ValueError(f"{type(self).__name__} has nothing to train")

    def figure(self):  # pragma: no cover - each explorer defines it
        """The explorer's first picture, drawn with matplotlib from the data it sends."""
        raise NotImplementedError

    def snapshot(self) -> None:
        """Show the first picture as a plain image, which a renderer without JavaScript can display.

        Rendered to PNG here rather than left to IPython's display of a matplotlib Figure: that
        display shows an image only once the inline backend has drawn a pyplot figure in the
        session, and a lesson's first picture may be a snapshot (the text part is the Figure's repr,
        as that display gives it)."""
        figure = self.figure()
        png = io.BytesIO()
        figure.savefig(png, format="png", bbox_inches="tight")
        display({"image/png": png.getvalue(), "text/plain": repr(figure)}, raw=True)

    def __repr__(self) -> str:
        # what a page without JavaScript shows instead of the explorer; stable, unlike anywidget's default
        return f"{type(self).__name__}: an explorer that draws in the browser (JupyterLab, or the course site)"


def _colors() -> dict:
    return {"colors": dict(plots.COLORS), "labels": dict(plots.LABELS)}


# ----------------------------------------------------------------------------- lesson 01
class ForwardPlayground(Explorer):
    """One feature x = mean + scale * z over a batch, through BN: before/after histograms and statistics.

    z is a fixed sample of each shape (512 values, sent once); the view computes
    x = mean + scale * z[:batch_size] and y = gamma (x - mu) / sqrt(var + eps) + beta per move.
    """

    VIEW = "forward_playground.js"
    SHAPES = ("normal", "skewed", "bimodal")
    INITIAL = {"mean": 5.0, "scale": 3.0, "batch_size": 64, "gamma": 1.0, "beta": 0.0, "eps": 1e-5,
               "shape": "skewed"}

    def __init__(self, seed: int = 0, **initial):
        unknown = set(initial) - set(self.INITIAL)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; the playground has {sorted(self.INITIAL)}")
        self.samples = {s: base_sample(s, 512, seed) for s in self.SHAPES}
        self.initial = {**self.INITIAL, **initial}
        # full float64 (about 30 kB): the view computes on exactly the numbers compute() uses
        super().__init__({"samples": {s: z.tolist() for s, z in self.samples.items()},
                          "initial": self.initial, **_colors()})

    @property
    def values(self) -> dict:
        """The settings the playground opens with (slider moves stay in the browser)."""
        return dict(self.initial)

    def compute(self, mean, scale, batch_size, gamma, beta, eps, shape):
        """x (batch_size,) and BN's y, mu, var for the given settings."""
        if shape not in self.samples:
            raise ValueError(f"shape must be one of {self.SHAPES}, got {shape!r}")
        if not 2 <= batch_size <= 512:
            raise ValueError(f"batch_size must be in 2..512 (the recorded sample), got {batch_size}")
        x = mean + scale * self.samples[shape][:batch_size]
        y, cache = batchnorm_forward(x[:, None], np.array([gamma]), np.array([beta]),
                                     {"mode": "train", "eps": eps})
        return x, y[:, 0], float(x.mean()), float(cache["var"].item())

    def figure(self, **settings):
        v = {**self.initial, **settings}
        x, y, _, _ = self.compute(**v)
        return plots.plot_before_after(
            x, y, title=f"BN output: mean β = {v['beta']:.2f}, std ≈ |γ| = {abs(v['gamma']):.2f}")


# ----------------------------------------------------------------------------- lesson 02
class GradientCoupling(Explorer):
    """dL/dx per sample for one feature: on the left with BN in training (batch statistics) and with
    BN's eval-mode affine map (statistics held fixed); on the right BN's dx split into the three terms
    of the compact formula

        dx_i = gamma / (m sqrt(var + eps)) * (m dy_i  -  sum_j dy_j  -  x_hat_i sum_j dy_j x_hat_j)

    The upstream gradient dy = dL/dy is a pattern chosen from a menu. x is a fixed recorded batch of
    64 values and 'random' a fixed recorded N(0, 1) draw, both sent once at full precision; per move
    the view (gradient_coupling.js) computes BN's forward on x[:m] and the three terms
    (`batchnormForward`, `batchnormBackwardTerms` of bn.js), the same numbers as compute() and terms().
    """

    VIEW = "gradient_coupling.js"
    PATTERNS = ("only sample 0", "two samples", "only the largest sample", "constant", "proportional to x_hat",
                "random")
    LABELS = {"plain": "statistics held fixed (eval mode)", "bn": "batch statistics (training mode)"}
    # the three terms, each times the prefactor gamma / (m sqrt(var + eps))
    TERMS = ("own: m·dy_i", "mean: −Σ_j dy_j", "scale: −x̂_i Σ_j dy_j x̂_j")
    EPS = 1e-5
    RECORDED = 64                                        # values in the recorded batch
    LIMITS = {"batch_size": (2, 32, 1), "gamma": (0.1, 3.0, 0.1)}   # the sliders: min, max, step
    INITIAL = {"batch_size": 8, "pattern": "only sample 0", "gamma": 1.0}

    def __init__(self, seed: int = 0, **initial):
        unknown = set(initial) - set(self.INITIAL)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; the explorer has {sorted(self.INITIAL)}")
        rng = np.random.default_rng(seed)
        self.x = 2.0 + 1.5 * rng.normal(size=self.RECORDED)
        self.noise = rng.normal(size=self.RECORDED)
        self.initial = {**self.INITIAL, **initial}
        for name, (low, high, _) in self.LIMITS.items():
            if not low <= self.initial[name] <= high:
                raise ValueError(f"{name} must be in {low}..{high} (its slider), got {self.initial[name]}")
        self.upstream(self.initial["batch_size"], self.initial["pattern"])   # raises for an unknown pattern
        # full float64 (about 3 kB): the view computes on exactly the numbers compute() uses
        super().__init__({"x": self.x.tolist(), "noise": self.noise.tolist(), "eps": self.EPS,
                          "patterns": list(self.PATTERNS), "terms": list(self.TERMS), "legend": dict(self.LABELS),
                          "term_colors": list(plots.TERM_COLORS),
                          "limits": {k: list(v) for k, v in self.LIMITS.items()}, "initial": self.initial,
                          **_colors()})

    def _forward(self, batch_size, gamma):
        if not 2 <= batch_size <= len(self.x):
            raise ValueError(f"batch_size must be in 2..{len(self.x)} (the recorded batch), got {batch_size}")
        x = self.x[:batch_size, None]
        _, cache = batchnorm_forward(x, np.array([gamma]), np.array([0.0]), {"mode": "train", "eps": self.EPS})
        return x, cache

    def upstream(self, batch_size: int, pattern: str, x_hat=None) -> np.ndarray:
        """dy (batch_size,) for a pattern: 'only sample 0' (1 at sample 0), 'two samples' (+1 at
        sample 0, -1 at sample 1: a loss that pulls them apart), 'only the largest sample' (1 where x
        is largest), 'constant' (all 1), 'proportional to x_hat', 'random' (a recorded N(0, 1) draw)."""
        if pattern not in self.PATTERNS:
            raise ValueError(f"pattern must be one of {self.PATTERNS}, got {pattern!r}")
        one_hot = np.eye(batch_size)
        if pattern == "proportional to x_hat":
            if x_hat is None:
                x_hat = self._forward(batch_size, 1.0)[1]["x_hat"][:, 0]
            return np.array(x_hat, dtype=np.float64)
        return {"only sample 0": lambda: one_hot[0],
                "two samples": lambda: one_hot[0] - one_hot[1],
                "only the largest sample": lambda: one_hot[int(np.argmax(self.x[:batch_size]))],
                "constant": lambda: np.ones(batch_size),
                "random": lambda: self.noise[:batch_size].copy()}[pattern]()

    def compute(self, batch_size, pattern, gamma):
        """(dx with BN in training, dx in eval mode, x_hat) for the chosen upstream gradient."""
        x, cache = self._forward(batch_size, gamma)
        x_hat = cache["x_hat"]
        dout = self.upstream(batch_size, pattern, x_hat[:, 0])[:, None]
        dx_train = batchnorm_backward(dout, cache)[0]
        # eval mode with the batch's own statistics as "running" ones: same x_hat, constant stats
        g, b = np.array([gamma]), np.array([0.0])
        _, eval_cache = batchnorm_forward(x, g, b, {"mode": "eval", "eps": self.EPS, "running_mean": x.mean(0),
                                                     "running_var": x.var(0)})
        dx_eval = batchnorm_backward(dout, eval_cache)[0]
        return dx_train[:, 0], dx_eval[:, 0], x_hat[:, 0]

    def terms(self, batch_size, pattern, gamma) -> dict:
        """{TERMS[k]: (batch_size,)}: the three terms of the compact formula, each multiplied by the
        prefactor gamma / (m sqrt(var + eps)); they add up to BN's dx in training mode."""
        _, cache = self._forward(batch_size, gamma)
        x_hat = cache["x_hat"][:, 0]
        dy = self.upstream(batch_size, pattern, x_hat)
        m = batch_size
        prefactor = gamma * float(cache["inv_std"].item()) / m
        own, mean, scale = self.TERMS
        return {own: prefactor * m * dy,
                mean: np.full(m, -prefactor * dy.sum()),
                scale: -prefactor * x_hat * (dy * x_hat).sum()}

    def figure(self, **settings):
        v = {**self.initial, **settings}
        dx_bn, dx_fixed, _ = self.compute(**v)
        fig, axes = plots.new_figure(2, width=5.2, height=3.4, pyplot=False)
        plots.plot_sample_gradients({"plain": dx_fixed, "bn": dx_bn}, axes[0],
                                    title="BN (training) couples the samples:\nits gradients sum to zero",
                                    labels=self.LABELS)
        plots.plot_gradient_terms(self.terms(**v), dx_bn, axes[1],
                                  title="dx_i = own + mean + scale term;\nsummed over the batch they cancel: Σ dx = 0")
        return fig


# ----------------------------------------------------------------------------- lesson 03
class MomentumExplorer(Explorer):
    """Running mean of a drifting feature for a chosen momentum (PyTorch convention).

    The batch means of recorded batches and the true mean, per kind of drift, are sent once at full
    precision; per move the view (momentum_explorer.js) computes the running mean and how far it lags
    behind over the last steps (`runningAverage`, `rampLag` of bn.js), the numbers compute() and
    `bnlab.experiments.ramp_lag` give.
    """

    VIEW = "momentum_explorer.js"
    KINDS = ("ramp", "sine", "step")
    MOMENTUM_RANGE = (1e-3, 1.0)   # the slider, in steps of 0.1 in log10
    LAST = 100                     # the lag is averaged over the last LAST steps (ramp_lag's default)

    def __init__(self, steps: int = 400, batch_size: int = 32, drift: float = 0.02, seed: int = 0,
                 momentum: float = 0.1, kind: str = "ramp"):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        low, high = self.MOMENTUM_RANGE
        if not low <= momentum <= high:
            raise ValueError(f"momentum must be in {low}..{high} (its slider), got {momentum}")
        self.recorded = {k: drifting_batches(steps, batch_size, drift, k, seed=seed) for k in self.KINDS}
        self.true_mean = {k: drifting_batches(steps, batch_size, drift, k, noise=0.0).mean(1) for k in self.KINDS}
        self.batch_means = {k: batches.mean(1) for k, batches in self.recorded.items()}
        self.drift = drift
        self.initial = {"momentum": momentum, "kind": kind}
        # the colour plot_running_mean gives a single running mean
        running = matplotlib.colors.to_hex(matplotlib.colormaps["Oranges"](0.55))
        # full float64 (about 40 kB for 400 steps): the view averages exactly the numbers compute() does
        super().__init__({"batch_means": {k: v.tolist() for k, v in self.batch_means.items()},
                          "true_mean": {k: v.tolist() for k, v in self.true_mean.items()}, "drift": drift,
                          "last": self.LAST, "momentum_range": list(self.MOMENTUM_RANGE), "initial": self.initial,
                          "running_color": running, **_colors()})

    def compute(self, momentum, kind):
        """(batch means, running mean, true mean) over the recorded steps."""
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        batch_means = self.batch_means[kind]
        return batch_means, running_average(batch_means, momentum), self.true_mean[kind]

    def lag(self, momentum, kind) -> float:
        """How far the running mean trails the true mean over the last LAST steps (the readout's lag)."""
        _, running, true = self.compute(momentum, kind)
        return ramp_lag(true, running, min(self.LAST, len(true)))

    def figure(self, **settings):
        v = {**self.initial, **settings}
        batch_means, running, true = self.compute(**v)
        fig, (ax,) = plots.new_figure(1, width=7, pyplot=False)
        plots.plot_running_mean(batch_means, {v["momentum"]: running}, true, ax)
        return fig


# ----------------------------------------------------------------------------- lesson 04
# Histograms are most of what lesson 04's explorer sends (2 runs x 3 layers x 300 records x 104 bins);
# as JSON numbers they would be about 1.3 MB. Each fraction is sent as two characters instead: code 0
# for an empty bin, else 1..4095 for log10(fraction) on an even grid over FRACTION_LOG_RANGE, so every
# fraction keeps its value to 0.2 % (three significant digits) whether it is a histogram's peak or a
# tail bin that only the heatmap's log colour scale shows.
FRACTION_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
FRACTION_LOG_RANGE = (-7.0, 0.0)   # 1e-7 (a bin of a 10-million-value histogram) .. 1 (all in one bin)
FRACTION_LEVELS = len(FRACTION_ALPHABET) ** 2 - 1


def encode_fractions(values) -> str:
    """Fractions in [0, 1] (any shape, read in C order) as a string of two characters each (see above).
    0 (and NaN: nothing recorded) is code 0; a fraction below 10**FRACTION_LOG_RANGE[0] is sent as that."""
    f = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = FRACTION_LOG_RANGE
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.rint((np.log10(np.clip(f, 10.0 ** lo, 10.0 ** hi)) - lo) / (hi - lo) * (FRACTION_LEVELS - 1))
    code = np.where(f > 0, 1 + np.nan_to_num(level), 0).astype(np.int64)
    alphabet = np.frombuffer(FRACTION_ALPHABET.encode("ascii"), dtype=np.uint8)
    chars = np.stack([alphabet[code // 64], alphabet[code % 64]], axis=1)
    return chars.tobytes().decode("ascii")


def decode_fractions(text: str) -> np.ndarray:
    """The fractions encode_fractions sent, flat (what the view's decodeFractions computes)."""
    index = {c: i for i, c in enumerate(FRACTION_ALPHABET)}
    if len(text) % 2 or any(c not in index for c in set(text)):
        raise ValueError("not an encode_fractions string: odd length or a character outside FRACTION_ALPHABET")
    codes = np.array([index[c] for c in text], dtype=np.int64).reshape(-1, 2) @ np.array([64, 1])
    lo, hi = FRACTION_LOG_RANGE
    return np.where(codes > 0, 10.0 ** (lo + (codes - 1) * (hi - lo) / (FRACTION_LEVELS - 1)), 0.0)


class ActivationExplorer(Explorer):
    """Recorded runs side by side (e.g. without and with BN): one layer's histogram at a chosen step,
    or its whole history as a heatmap with the step marked, of the activations or of the gradients
    log10|dL/da|; a readout of each run's mean, std, percentiles and gradient norm at that step.

    runs: {variant: bnlab.probes.Recording}, all recorded at the same steps, of the same layers.

    Sent once: the recorded steps and, per run and layer, the histograms of every record (activations
    and gradients, encode_fractions: two characters a bin), their bin edges, and mean, std,
    percentiles and gradient norm per record (to 7, 6 and 5 significant digits: about the float32 they
    were recorded in, so that the readout's rounding to 3 decimals, 2 and 3 digits is the recorded
    numbers', not a second rounding of rounded ones). Picking the record of a
    step, the histogram, the heatmap and the readout happen in the view; a play button steps
    through the records.
    """

    VIEW = "activation_explorer.js"
    QUANTITIES = ("activations at this step", "gradients at this step", "activations over training",
                  "gradients over training")
    PLAY = {"interval_ms": 150, "records_per_tick": 5}

    def __init__(self, runs: dict, layer: str | None = None, step: int | None = None):
        if not runs:
            raise ValueError("runs must hold at least one recording: {variant: bnlab.probes.Recording}")
        self.runs = dict(runs)
        first = next(iter(runs.values()))
        self.steps = first.steps
        if not len(self.steps):
            raise ValueError("the recordings hold no records: train with the probe attached first")
        if any(len(r) != len(first) or not np.array_equal(r.steps, self.steps) for r in runs.values()):
            raise ValueError("the runs must be recorded at the same steps")
        layers = list(first.layers)
        if any(list(r.layers) != layers for r in runs.values()):
            raise ValueError(f"the runs must record the same layers; the first has {layers}")
        layer = layers[-1] if layer is None else layer
        if layer not in layers:
            raise ValueError(f"layer must be one of the recorded layers {layers}, got {layer!r}")
        step = int(self.steps[-1] if step is None else step)
        if not self.steps[0] <= step <= self.steps[-1]:
            raise ValueError(f"step must be within the recorded steps {int(self.steps[0])}..{int(self.steps[-1])}, "
                             f"got {step}")
        every = int(self.steps[1] - self.steps[0]) if len(self.steps) > 1 else 1
        self.initial = {"step": step, "layer": layer, "quantity": self.QUANTITIES[0]}
        super().__init__({
            "steps": self.steps.tolist(), "every": every, "layers": layers,
            "percentiles": list(first.percentiles), "quantities": list(self.QUANTITIES), "initial": self.initial,
            "play": self.PLAY,
            "fractions": {"alphabet": FRACTION_ALPHABET, "log_range": list(FRACTION_LOG_RANGE),
                          "levels": FRACTION_LEVELS},
            "heatmap": {"log_range": list(plots.HEATMAP_RANGE), "label": plots.HEATMAP_LABEL},
            "runs": [{"key": str(key), "label": plots.LABELS.get(key, str(key)),
                      "layers": {name: self._layer_data(recording[name]) for name in layers}}
                     for key, recording in self.runs.items()],
            **_colors()})

    @staticmethod
    def _layer_data(record) -> dict:
        return {"edges": rounded(record.edges, 6), "grad_edges": rounded(record.grad_edges, 6),
                "hist": encode_fractions(record.hist), "grad_hist": encode_fractions(record.grad_hist),
                "mean": rounded(record.mean, 7), "std": rounded(record.std, 7),
                "percentiles": rounded(record.percentiles, 6), "grad_norm": rounded(record.grad_norm, 5)}

    def index(self, step: int) -> int:
        """The record at or just before a training step."""
        return int(np.clip(np.searchsorted(self.steps, step, side="right") - 1, 0, len(self.steps) - 1))

    def sent(self, key: str, layer: str) -> SimpleNamespace:
        """A run's layer as the view receives it, decoded: edges, grad_edges, hist and grad_hist
        (records, bins) fractions, mean, std, percentiles, grad_norm (NaN where nothing came)."""
        run = next((r for r in self.data["runs"] if r["key"] == key), None)
        if run is None or layer not in run["layers"]:
            raise ValueError(f"no run {key!r} with layer {layer!r}; runs {[r['key'] for r in self.data['runs']]}, "
                             f"layers {self.data['layers']}")
        d = run["layers"][layer]
        records = len(self.data["steps"])
        as_array = partial(np.array, dtype=np.float64)
        return SimpleNamespace(edges=as_array(d["edges"]), grad_edges=as_array(d["grad_edges"]),
                               hist=decode_fractions(d["hist"]).reshape(records, -1),
                               grad_hist=decode_fractions(d["grad_hist"]).reshape(records, -1),
                               **{k: as_array(d[k]) for k in ("mean", "std", "percentiles", "grad_norm")})

    def figure(self, **settings):
        """The view's picture at the initial settings (or those given) from the data sent."""
        v = {**self.initial, **settings}
        if v["quantity"] not in self.QUANTITIES:
            raise ValueError(f"quantity must be one of {self.QUANTITIES}, got {v['quantity']!r}")
        fig, axes = plots.new_figure(len(self.runs), width=4.3, height=3.1, pyplot=False)
        i, layer = self.index(v["step"]), v["layer"]
        gradients = v["quantity"].startswith("gradients")
        for ax, run in zip(axes, self.data["runs"]):
            record = self.sent(run["key"], layer)
            if v["quantity"].endswith("over training"):
                plots.plot_histogram_heatmap(record, self.data["steps"], ax, gradients=gradients,
                                             mark_step=self.data["steps"][i],
                                             title=f"{run['label']}: {layer} over training")
            else:
                percentiles = None if gradients else dict(zip(self.data["percentiles"], record.percentiles[i]))
                plots.plot_layer_histogram(record, i, run["key"], ax, gradients=gradients, percentiles=percentiles,
                                           xlabel=None if gradients else f"{layer} value (percentiles dashed)",
                                           title=f"{run['label']}: {layer} at step {self.data['steps'][i]}")
        return fig


# ----------------------------------------------------------------------------- lesson 05
def _norm_key(norm) -> str:
    return "bn" if norm else "plain"


class GradientFlowExplorer(Explorer):
    """Deep MLPs with and without BN: per-layer gradient norms at initialization (left) and test
    accuracy during training at a learning rate (right).

    Gradient norms come from `table` ({(norm, depth, activation, init): norms}, as
    `bnlab.experiments.gradient_flow_table` computes it), by default computed for every depth x
    activation x init in the menus on the first batch_size training examples. Training runs come
    from `runs` ({(norm, depth, activation, init, lr): History}) and from the "train" button, which
    trains the selected configuration (both variants, with a progress bar below the explorer) and
    adds it.

    Sent: the whole table (every configuration of the menus: the view picks one per move) and each
    trained run's test-accuracy curve and the step its loss stopped being finite; data is sent
    again, with the new runs, after training.
    """

    VIEW = "gradient_flow_explorer.js"
    DEPTHS = (2, 5, 10, 20, 30, 50)
    ACTIVATIONS = ("relu", "tanh", "sigmoid")
    INITS = ("he", "lecun", "default")
    LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

    def __init__(self, data, runs: dict | None = None, batch_size: int = 128, steps: int = 300, seed: int = 0,
                 depth: int = 10, activation: str = "relu", init: str = "he", lr: float = 1.0,
                 table: dict | None = None):
        self.dataset, self.steps, self.seed = data, steps, seed
        self.initial = self._settings(depth, activation, init, lr)
        self.runs = {}
        for key, history in (runs or {}).items():
            if not (isinstance(key, tuple) and len(key) == 5 and key[0] in (None, "bn")):
                raise ValueError(f"runs must be keyed (norm, depth, activation, init, lr) with norm None or 'bn', "
                                 f"got {key!r}")
            self.runs[(key[0], *self._settings(*key[1:]).values())] = history
        if table is None:
            table = gradient_flow_table(data.x_train[:batch_size], data.y_train[:batch_size], self.DEPTHS,
                                        self.ACTIVATIONS, self.INITS, seed, num_classes=data.num_classes)
        missing = [(norm, d, a, i) for d in self.DEPTHS for a in self.ACTIVATIONS for i in self.INITS
                   for norm in (None, "bn") if (norm, d, a, i) not in table]
        if missing:
            raise ValueError("table must hold every (norm, depth, activation, init) of the menus; "
                             f"missing {missing[:3]}")
        self.norms = dict(table)
        self.progress = widgets.Output()  # the progress bar of training; only the train button writes to it
        super().__init__(self._data())
        # the explorer with its progress bar under it; a VBox shows its children's own views
        self.widget = widgets.VBox([self, self.progress])

    def _settings(self, depth, activation, init, lr) -> dict:
        """The settings as the menus hold them (lr as the menu's float), or a ValueError naming the bad one."""
        for name, value, menu in (("depth", depth, self.DEPTHS), ("activation", activation, self.ACTIVATIONS),
                                  ("init", init, self.INITS), ("lr", lr, self.LRS)):
            if value not in menu:
                raise ValueError(f"{name} must be one of {menu}, got {value!r}")
        return {"depth": int(depth), "activation": activation, "init": init,
                "lr": self.LRS[self.LRS.index(lr)]}

    def _data(self) -> dict:
        table = [{"norm": _norm_key(norm), "depth": d, "activation": a, "init": i,
                  "norms": rounded(self.norms[(norm, d, a, i)], 4)}
                 for d in self.DEPTHS for a in self.ACTIVATIONS for i in self.INITS for norm in (None, "bn")]
        runs = [{"norm": _norm_key(norm), "depth": d, "activation": a, "init": i, "lr": lr,
                 "eval_steps": [int(s) for s in h.eval_steps], "test_accuracy": rounded(h.test_accuracy, 5),
                 "diverged_at": None if h.diverged_at is None else int(h.diverged_at)}
                for (norm, d, a, i, lr), h in self.runs.items()]
        return {"menus": {"depth": list(self.DEPTHS), "activation": list(self.ACTIVATIONS), "init": list(self.INITS),
                          "lr": list(self.LRS)},
                "initial": self.initial, "table": table, "runs": runs, **_colors()}

    def train_selected(self, depth=None, activation=None, init=None, lr=None) -> None:
        """Train a configuration (the initial one where a setting is not given; the view's train button
        sends its settings) with and without BN, a few seconds each, with a progress bar in
        `self.progress`; the runs are added and sent, and the view redraws."""
        from .experiments import lr_sweep

        v = self._settings(*(self.initial[k] if x is None else x
                             for k, x in zip(("depth", "activation", "init", "lr"), (depth, activation, init, lr))))
        with self.progress:
            self.progress.clear_output()
            trained = lr_sweep([v["lr"]], depth=v["depth"], activation=v["activation"], init=v["init"],
                               steps=self.steps, seed=self.seed, data=self.dataset)
        for (norm, _), history in trained.items():
            self.runs[(norm, v["depth"], v["activation"], v["init"], v["lr"])] = history
        self.data = self._data()   # a new dict: traitlets sends it and the view redraws

    def sent_run(self, norm, depth, activation, init, lr):
        """A trained run as the view receives it (a History with eval_steps, test_accuracy and
        diverged_at), or None if that configuration has not been trained."""
        v = self._settings(depth, activation, init, lr)
        for r in self.data["runs"]:
            if r["norm"] == _norm_key(norm) and all(r[k] == x for k, x in v.items()):
                return History(eval_steps=r["eval_steps"], test_accuracy=r["test_accuracy"],
                               diverged_at=r["diverged_at"])
        return None

    def sent_norms(self, norm, depth, activation, init) -> np.ndarray:
        """The gradient norms at init the view receives for a configuration."""
        v = self._settings(depth, activation, init, self.LRS[0])
        return np.array(next(r["norms"] for r in self.data["table"] if r["norm"] == _norm_key(norm)
                             and all(r[k] == v[k] for k in ("depth", "activation", "init"))), dtype=np.float64)

    def figure(self, **settings):
        """The view's picture at the initial settings (or those given) from the data sent."""
        v = {**self.initial, **settings}
        depth, activation, init, lr = (v[k] for k in ("depth", "activation", "init", "lr"))
        fig, axes = plots.new_figure(2, width=4.6, height=3.2, pyplot=False)
        grad = {_norm_key(norm): self.sent_norms(norm, depth, activation, init) for norm in (None, "bn")}
        ratio = {k: g[0] / g[-1] for k, g in grad.items()}
        plots.plot_gradient_flow(grad, axes[0],
                                 title=f"At init, depth {depth}, {activation}, {init}: layer 1 / last\n"
                                       f"without BN {ratio['plain']:.2g}x, with BN {ratio['bn']:.2g}x")
        trained = {_norm_key(norm): self.sent_run(norm, depth, activation, init, lr) for norm in (None, "bn")}
        if all(h is not None for h in trained.values()):
            plots.plot_curves(trained, ax=axes[1], title=f"Training at learning rate {lr:g}")
            axes[1].set_ylim(0, 1)
        else:
            plots.plot_message(axes[1], "not trained yet:\npress 'train this configuration'")
        return fig

    def _repr_mimebundle_(self, **kwargs):
        data = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(data, tuple):
            data[0]["text/plain"] = repr(self)
        elif isinstance(data, dict):
            data["text/plain"] = repr(self)
        return data


# ----------------------------------------------------------------------------- lessons 06 and 08
class SweepExplorer(Explorer):
    """Recorded runs over one swept setting (a learning rate, a batch size): on the left each
    variant's test accuracy (or training loss) during training at the chosen setting, on the right
    every variant's final accuracy against the setting, the choice marked. Nothing is retrained.

    runs: {(variant, setting): History}, or {(variant, setting, seed): History} with several seeds
    (the right panel then draws the mean and the min-max band over seeds, the left panel and the
    readout the run of the lowest seed); variants are bnlab.models norm names or plot variant keys.

    Sent once: per variant (its colour key) and setting, what the left panel and the readout draw
    of the run (loss per step to 4 digits, test accuracy at its evaluation steps, the step it
    diverged at, its last loss), and the finals the right panel draws (`final_results`). The view
    picks the setting's runs on every move.
    """

    VIEW = "sweep_explorer.js"
    QUANTITIES = ("test accuracy", "training loss")

    def __init__(self, runs: dict, setting: str = "learning rate", log_base: int | None = 10,
                 chance: float | None = None, value=None):
        if not runs:
            raise ValueError("runs is empty: give {(variant, setting): History} of the sweep")
        bad = [key for key in runs if not (isinstance(key, tuple) and len(key) in (2, 3))]
        if bad:
            raise ValueError(f"runs must be keyed (variant, setting) or (variant, setting, seed), got {bad[0]!r}")
        self.runs = runs
        self.setting, self.log_base, self.chance = setting, log_base, chance
        self.variants = list(dict.fromkeys(key[0] for key in runs))
        self.settings = sorted({key[1] for key in runs})
        seeds = {(key[0], key[1]): [] for key in runs}
        for key in runs:
            seeds[(key[0], key[1])].append(key[2] if len(key) == 3 else None)
        missing = [(v, s) for v in self.variants for s in self.settings if (v, s) not in seeds]
        if missing:
            raise ValueError(f"runs must hold every variant at every setting; missing {missing[:3]}")
        # the run the left panel shows: the one without a seed, else the lowest seed
        self.shown = {vs: runs[vs] if None in found else runs[(*vs, min(found))] for vs, found in seeds.items()}
        keys = [plots.variant(name) for name in self.variants]   # a ValueError names an unknown one
        if len(set(keys)) < len(keys):
            raise ValueError(f"variants {self.variants} share a colour key ({keys}): give each its own")
        if value is None:
            value = self.settings[0]
        elif value not in self.settings:
            raise ValueError(f"value must be one of the swept settings {self.settings}, got {value!r}")
        if log_base is not None and (log_base <= 1 or min(self.settings) <= 0):
            raise ValueError(f"a log axis needs log_base > 1 and settings > 0, got base {log_base} and "
                             f"settings {self.settings}; pass log_base=None for a linear axis")
        self.value = value
        self.finals = final_results(runs)
        super().__init__({
            "setting": setting, "log_base": log_base, "chance": chance,
            "values": [v.item() if hasattr(v, "item") else v for v in self.settings],
            # the setting as Python prints it (1.0, not JavaScript's 1), in the slider and the titles
            "value_labels": [str(v) for v in self.settings],
            "initial": {"index": self.settings.index(value), "quantity": self.QUANTITIES[0]},
            "variants": keys,
            "runs": {key: [self._run(self.shown[(name, s)]) for s in self.settings]
                     for name, key in zip(self.variants, keys)},
            "finals": {key: [rounded(self.finals[name][s], 6) for s in self.settings]
                       for name, key in zip(self.variants, keys)},
            **_colors()})

    @staticmethod
    def _run(history) -> dict:
        # the curves to 4 digits (what a line can show); the readout's numbers to 6, so that
        # printing them to 3 decimals gives what the History holds
        return {"loss": rounded(history.loss, 4), "eval_steps": [int(s) for s in history.eval_steps],
                "accuracy": rounded(history.test_accuracy, 6), "diverged_at": history.diverged_at,
                "last_loss": rounded(history.loss[-1], 6) if len(history.loss) else None}

    def histories(self, value=None) -> dict:
        """{variant key: History} rebuilt from what the explorer sends, at a setting (default: its
        initial one): the runs the left panel draws."""
        from .train import History

        i = self.settings.index(self.value if value is None else value)
        return {key: History(loss=[np.nan if v is None else v for v in runs[i]["loss"]],
                             eval_steps=runs[i]["eval_steps"], test_accuracy=runs[i]["accuracy"],
                             diverged_at=runs[i]["diverged_at"])
                for key, runs in self.data["runs"].items()}

    def figure(self, value=None, quantity: str = "test accuracy"):
        """The first picture (or another setting's), with matplotlib, from the data the view gets."""
        if quantity not in self.QUANTITIES:
            raise ValueError(f"quantity must be one of {self.QUANTITIES}, got {quantity!r}")
        value = self.value if value is None else value
        fig, axes = plots.new_figure(2, width=4.6, height=3.3, pyplot=False)
        label = self.data["value_labels"][self.settings.index(value)]
        plots.plot_curves(self.histories(value), "loss" if quantity == "training loss" else "test_accuracy",
                          ax=axes[0], title=f"{self.setting} = {label}")
        finals = {key: dict(zip(self.settings, by_setting)) for key, by_setting in self.data["finals"].items()}
        plots.plot_sweep(finals, self.setting, ax=axes[1], log_base=self.log_base, marker=value, chance=self.chance,
                         title=f"Final test accuracy against {self.setting}")
        return fig


# ----------------------------------------------------------------------------- lesson 07
class MaskExplorer(Explorer):
    """Predicted masks recorded during training, next to the truth: pick the test images and the
    training step; each variant's prediction and its mean IoU at that step are shown.

    images: (N, 1, H, W); masks: (N, H, W); snapshots: {variant: {step: predicted masks (N, H, W)}};
    scores: {variant: {step: mean IoU on the whole test set}} (optional).

    Sent once: each image as 0-255 grey levels on its own range (the level matplotlib's grey colour
    map shows each pixel at), each mask, true or predicted, as one string of class ids (a digit per pixel,
    row by row), the scores per recorded step, and the class colours of `bnlab.plots.plot_masks`.
    The view picks the step's masks and the rows on every move and paints them pixel by pixel.
    """

    VIEW = "mask_explorer.js"
    ROWS = 3
    # bnlab.plots.plot_masks' colour per class (0, the background, black)
    CLASS_COLORS = ("#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")

    def __init__(self, images, masks, snapshots: dict, class_names, scores: dict | None = None):
        images = np.asarray(images, dtype=np.float64)
        masks = np.asarray(masks)
        if images.ndim != 4 or images.shape[1] != 1:
            raise ValueError(f"images must be (N, 1, H, W) grey images, got shape {images.shape}")
        if masks.shape != (len(images), *images.shape[2:]):
            raise ValueError(f"masks must be (N, H, W) = {(len(images), *images.shape[2:])}, got {masks.shape}")
        if len(images) < self.ROWS:
            raise ValueError(f"need at least {self.ROWS} images, got {len(images)}")
        class_names = list(class_names)
        if not 2 <= len(class_names) <= len(self.CLASS_COLORS):
            raise ValueError(f"class_names must name 2 to {len(self.CLASS_COLORS)} classes (one colour each), "
                             f"got {class_names}")
        if not snapshots:
            raise ValueError("snapshots is empty: give {variant: {step: predicted masks}}")
        steps = [sorted(s) for s in snapshots.values()]
        if any(s != steps[0] for s in steps) or not steps[0]:
            raise ValueError("every variant must be recorded at the same steps")
        self.steps = [int(s) for s in steps[0]]
        predictions = {name: [np.asarray(by_step[s]) for s in steps[0]] for name, by_step in snapshots.items()}
        for name, by_step in predictions.items():
            for step, p in zip(self.steps, by_step):
                if p.shape != masks.shape:
                    raise ValueError(f"{name}'s masks at step {step} have shape {p.shape}, "
                                     f"the true masks {masks.shape}")
        for what, m in (("masks", masks), *((f"{name}'s predictions", np.stack(p)) for name, p in predictions.items())):
            if m.min() < 0 or m.max() >= len(class_names) or not np.array_equal(m, np.round(m)):
                raise ValueError(f"{what} must be class ids 0..{len(class_names) - 1}, got values from {m.min()} "
                                 f"to {m.max()}")
        scores = scores or {}
        unknown = set(scores) - set(snapshots)
        if unknown:
            raise ValueError(f"scores for {sorted(unknown)}, which have no snapshots ({sorted(snapshots)})")
        self.class_names, self.variants = class_names, list(snapshots)
        self.initial = {"step": self.steps[-1], "first": 0}
        super().__init__({
            "rows": self.ROWS, "height": int(images.shape[2]), "width": int(images.shape[3]), "steps": self.steps,
            "images": [self._grey(image[0]) for image in images],
            "masks": [self._digits(m) for m in masks],
            "variants": self.variants,
            "names": {name: plots.LABELS.get(name, name) for name in self.variants},
            "predictions": {name: [[self._digits(m) for m in at_step] for at_step in by_step]
                            for name, by_step in predictions.items()},
            "scores": {name: [rounded(scores[name][s], 6) if s in scores.get(name, {}) else None
                              for s in self.steps] for name in self.variants if name in scores},
            "class_names": class_names, "class_colors": list(self.CLASS_COLORS[:len(class_names)]),
            "initial": self.initial, **_colors()})

    @staticmethod
    def _grey(image) -> list:
        # the bin of matplotlib's 256-level grey map that imshow puts each pixel in
        lo, hi = float(image.min()), float(image.max())
        scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        return np.minimum(np.floor(scaled * 256), 255).astype(int).ravel().tolist()

    @staticmethod
    def _digits(mask) -> str:
        return "".join(map(str, np.asarray(mask, dtype=np.int64).ravel().tolist()))

    def decoded(self, step: int | None = None) -> tuple:
        """(images (N, 1, H, W) grey levels 0-255, true masks (N, H, W), {variant: masks (N, H, W) at
        step}) as the view decodes what is sent; step: a recorded step (default the last)."""
        step = self.initial["step"] if step is None else step
        if step not in self.steps:
            raise ValueError(f"step must be one of the recorded steps {self.steps}, got {step}")
        d = self.data
        shape = (d["height"], d["width"])

        def masks(strings):
            return np.array([np.frombuffer(s.encode(), dtype=np.uint8).reshape(shape) - ord("0") for s in strings])

        images = np.array(d["images"], dtype=np.float64).reshape(-1, 1, *shape)
        i = self.steps.index(step)
        return images, masks(d["masks"]), {name: masks(by_step[i]) for name, by_step in d["predictions"].items()}

    def figure(self, step: int | None = None, first: int = 0):
        """The first picture (or another step and first image), with matplotlib, from the data the view gets."""
        images, masks, predictions = self.decoded(step)
        if not 0 <= first <= len(images) - self.ROWS:
            raise ValueError(f"first must be in 0..{len(images) - self.ROWS}, got {first}")
        step = self.initial["step"] if step is None else step
        shown = slice(first, first + self.ROWS)
        columns = 2 + len(predictions)
        fig = plots.Figure(figsize=(1.7 * columns, 1.7 * self.ROWS + 0.5), layout="constrained")
        axes = fig.subplots(self.ROWS, columns, squeeze=False)
        return plots.plot_masks(images[shown], masks[shown], {k: p[shown] for k, p in predictions.items()},
                                self.class_names, n=self.ROWS, axes=axes, title=self.title(step, first))

    def title(self, step: int, first: int) -> str:
        # the images numbered as the 'first image' slider counts them
        return f"Test images {first}–{first + self.ROWS - 1}: true masks and predictions at step {step}"


# ----------------------------------------------------------------------------- lesson 09
def _ratio_text(ratio: float) -> str:
    """A ratio as the titles print it: a whole number from 10 on (100, not 1e+02), else two significant
    digits (the view mirrors both: pyFixed and formatG)."""
    return f"{ratio:.0f}" if ratio >= 10 else f"{ratio:.2g}"


class LossSliceExplorer(Explorer):
    """The loss along the step SGD is about to take, L(theta - k lr g) against k, at recorded
    checkpoints of training (Santurkar et al. 2018, Figure 4): pick the training step (main slider),
    a step size k and, where runs of several seeds are given, the seed; each variant's slice is
    drawn, k marked, and the readout gives every variant's loss range over k
    (`GradientPath.loss_range`), its loss at theta and at the chosen k, and with seeds its loss range
    at this checkpoint in every seed (does the finding hold in all of them?).

    runs: {variant: `bnlab.experiments.LandscapeRun`}, or {variant: {seed: LandscapeRun}} with every
    variant at the same seeds (ints or strings); variant: a plot variant key or norm name, e.g. None,
    'torch_bn', 'noisy'. Every run recorded at the same checkpoints with the same ks and lr.
    Sent once: the checkpoints, the ks, (the seeds,) and per variant (seed) and checkpoint the
    recorded losses (6 significant digits) and L(theta). The view picks the step's slices on every move.
    """

    VIEW = "loss_slice_explorer.js"

    def __init__(self, runs: dict, step: int | None = None, k: float = 1.0, seed=None):
        if not runs:
            raise ValueError("runs is empty: give {variant: LandscapeRun} or {variant: {seed: LandscapeRun}}")
        seeded = [isinstance(r, dict) for r in runs.values()]
        if any(seeded) and not all(seeded):
            raise ValueError("runs must be all {variant: LandscapeRun} or all {variant: {seed: LandscapeRun}}; "
                             f"got a dict of seeds for {[n for n, s in zip(runs, seeded) if s]} only")
        self.seeds = self._check_seeds(runs) if all(seeded) else None
        if self.seeds is None and seed is not None:
            raise ValueError(f"seed={seed!r}, but these runs have one seed each: give "
                             "{variant: {seed: LandscapeRun}} to choose between seeds")
        # per variant its runs, one per seed in self.seeds' order, each with its name for the messages
        if self.seeds is None:
            named = {name: [(repr(name), run)] for name, run in runs.items()}
        else:
            named = {name: [(f"{name!r} seed {s!r}", by_seed[s]) for s in self.seeds] for name, by_seed in runs.items()}
        first = next(iter(named.values()))[0][1]
        for label, run in itertools.chain(*named.values()):
            if run.steps != first.steps or run.lr != first.lr or len(run.paths) != len(run.steps):
                raise ValueError(f"run {label} was recorded at other checkpoints or another lr than the first "
                                 f"({run.steps}, lr {run.lr} vs {first.steps}, lr {first.lr})")
            if any(not np.array_equal(p.ks, first.paths[0].ks) for p in run.paths):
                raise ValueError(f"run {label} has slices at other multiples k than the first")
        keys = [plots.variant(name) for name in runs]    # a ValueError names an unknown one
        if len(set(keys)) < len(keys):
            raise ValueError(f"variants {list(runs)} share a colour key ({keys}): give each its own")
        self.runs = dict(zip(keys, runs.values()))
        self.steps = [int(s) for s in first.steps]
        self.ks = [float(k) for k in first.paths[0].ks]
        step = self.steps[len(self.steps) // 2] if step is None else step
        if step not in self.steps:
            raise ValueError(f"step must be one of the recorded checkpoints {self.steps}, got {step!r}")
        if not self.ks[0] <= k <= self.ks[-1]:
            raise ValueError(f"k must lie in the recorded range {self.ks[0]}..{self.ks[-1]}, got {k!r}")
        self.initial = {"step": step, "k": float(k)}
        losses = {key: [[rounded(p.losses, 6) for p in run.paths] for _, run in named[name]]
                  for key, name in zip(keys, runs)}
        loss0 = {key: [rounded([p.loss for p in run.paths], 6) for _, run in named[name]]
                 for key, name in zip(keys, runs)}
        if self.seeds is None:
            # one seed: per variant [checkpoint][k], as lesson 09 first sent it
            losses = {key: per_seed[0] for key, per_seed in losses.items()}
            loss0 = {key: per_seed[0] for key, per_seed in loss0.items()}
            seeds = {}
        else:
            seed = self.seeds[0] if seed is None else int(seed) if isinstance(seed, np.integer) else seed
            if seed not in self.seeds:
                raise ValueError(f"seed must be one of the runs' seeds {self.seeds}, got {seed!r}")
            self.initial["seed"] = seed
            seeds = {"seeds": self.seeds}    # and per variant [seed][checkpoint][k]
        super().__init__({
            "steps": self.steps, "ks": self.ks, "lr": float(first.lr), "variants": keys, **seeds,
            "losses": losses, "loss0": loss0, "initial": self.initial, **_colors()})

    @staticmethod
    def _check_seeds(runs: dict) -> list:
        """The seeds every variant of {variant: {seed: run}} has, in the first variant's order."""
        names = list(runs)
        seeds = list(runs[names[0]])
        for name in names:
            if not runs[name]:
                raise ValueError(f"variant {name!r} has no runs: give {{seed: LandscapeRun}} for each variant")
            bad = [s for s in runs[name] if isinstance(s, bool) or not isinstance(s, (int, str, np.integer))]
            if bad:
                raise ValueError(f"seeds must be ints or strings (the view shows and sends them), "
                                 f"variant {name!r} has {bad[0]!r}")
            if set(runs[name]) != set(seeds):
                raise ValueError(f"every variant needs the same seeds: {name!r} has {list(runs[name])}, "
                                 f"{names[0]!r} has {seeds}")
        return [int(s) if isinstance(s, np.integer) else s for s in seeds]

    def _seed_index(self, seed) -> int | None:
        if self.seeds is None:
            if seed is not None:
                raise ValueError(f"seed={seed!r}, but this explorer has runs of one seed each")
            return None
        seed = self.initial["seed"] if seed is None else seed
        if seed not in self.seeds:
            raise ValueError(f"seed must be one of the runs' seeds {self.seeds}, got {seed!r}")
        return self.seeds.index(seed)

    def _step_index(self, step: int) -> int:
        if step not in self.steps:
            raise ValueError(f"step must be one of the recorded checkpoints {self.steps}, got {step!r}")
        return self.steps.index(step)

    def slices(self, step: int, seed=None) -> dict:
        """{variant: (losses over ks, L(theta))} at a checkpoint, for a seed (default: the initial one;
        none where the runs have one seed each), from the data the view gets."""
        i, s = self._step_index(step), self._seed_index(seed)

        def picked(values):
            return values if s is None else values[s]

        return {key: (np.array(picked(self.data["losses"][key])[i]), picked(self.data["loss0"][key])[i])
                for key in self.data["variants"]}

    def loss_ranges(self, step: int) -> dict:
        """{variant: its loss range over k at a checkpoint, max - min, one per seed (in self.seeds'
        order; one value where the runs have one seed each)}, from the data the view gets."""
        i = self._step_index(step)
        out = {}
        for key in self.data["variants"]:
            per_seed = self.data["losses"][key] if self.seeds is not None else [self.data["losses"][key]]
            out[key] = np.array([max(by_step[i]) - min(by_step[i]) for by_step in per_seed])
        return out

    def k_index(self, k: float) -> int:
        """The recorded k nearest to k (the first of two equally near)."""
        return int(np.argmin(np.abs(np.array(self.ks) - k)))

    def title(self, step: int, seed=None) -> str:
        """The title the view writes: the finding at that step (and seed, default the initial one)."""
        ranges = {key: float(losses.max() - losses.min()) for key, (losses, _) in self.slices(step, seed).items()}
        where = f"Step {step}" if self.seeds is None else f"Seed {self.seeds[self._seed_index(seed)]}, step {step}"
        if "plain" in ranges and "bn" in ranges and ranges["bn"] > 0 and ranges["plain"] > 0:
            ratio = ranges["plain"] / ranges["bn"]
            if ratio >= 1:
                return (f"{where}: along the gradient the loss varies {_ratio_text(ratio)}x less with BN "
                        "than without")
            return f"{where}: here the loss varies {_ratio_text(1 / ratio)}x more with BN than without"
        return f"{where}: the loss along the gradient"

    def figure(self, step: int | None = None, k: float | None = None, seed=None):
        """The first picture (or another step's, k's or seed's), with matplotlib, from the data the view gets."""
        step = self.initial["step"] if step is None else step
        k = self.initial["k"] if k is None else k
        fig, (ax,) = plots.new_figure(1, width=7.5, height=3.6, pyplot=False)
        for key, (losses, loss0) in self.slices(step, seed).items():
            ax.plot([0.0, *self.ks], [loss0, *losses], color=plots.COLORS[key], label=plots.LABELS[key], lw=1.8)
        ax.axvline(self.ks[self.k_index(k)], color="k", lw=1, ls="--")
        ax.set_xlabel("step along -gradient, k (multiples of lr · ||g||)")
        ax.set_ylabel("training loss on the batch")
        ax.set_title(self.title(step, seed))
        ax.legend(loc="upper left")
        return fig


# ----------------------------------------------------------------------------- lesson 10
class RegularizationExplorer(Explorer):
    """The train-test accuracy gap of a BN net across batch size, dropout rate and weight decay,
    from a precomputed grid (`bnlab.experiments.regularization_grid`). Main slider: the batch size;
    selects: dropout and weight decay; panel: 'gap' (train - test accuracy, mean over seeds and
    each seed) or 'accuracy' (train and test, mean over seeds), against batch size. The title states
    the gap at the chosen batch size and the batch size where it is smallest; the readout lists the
    seeds. Sent once: the axes and per cell of the grid the seeds' train and test accuracies (4
    significant digits); the view averages per move.
    """

    VIEW = "regularization_explorer.js"
    PANELS = ("gap", "accuracy")

    def __init__(self, grid: dict, batch_size: int | None = None, dropout: float = 0.0, weight_decay: float = 0.0,
                 panel: str = "gap"):
        if not grid:
            raise ValueError("grid is empty: give {(batch_size, dropout, weight_decay, seed): RegularizationRun}")
        axes = [sorted({key[i] for key in grid}) for i in range(4)]
        missing = [c for c in itertools.product(*axes) if c not in grid]
        if missing:
            raise ValueError(f"grid is not complete: {len(missing)} cells missing, e.g. {missing[0]}")
        self.batch_sizes, self.dropouts, self.weight_decays, self.seeds = axes
        batch_size = self.batch_sizes[0] if batch_size is None else batch_size
        for name, value, options in (("batch_size", batch_size, self.batch_sizes), ("dropout", dropout, self.dropouts),
                                     ("weight_decay", weight_decay, self.weight_decays)):
            if value not in options:
                raise ValueError(f"{name} must be one of the grid's {options}, got {value!r}")
        if panel not in self.PANELS:
            raise ValueError(f"panel must be one of {self.PANELS}, got {panel!r}")
        self.initial = {"batch_size": batch_size, "dropout": dropout, "weight_decay": weight_decay, "panel": panel}

        def cell(attr):
            return [[[rounded([getattr(grid[b, d, w, s], attr) for s in self.seeds], 4) for w in self.weight_decays]
                     for d in self.dropouts] for b in self.batch_sizes]

        super().__init__({"batch_sizes": self.batch_sizes, "dropouts": self.dropouts,
                          "weight_decays": self.weight_decays, "seeds": self.seeds,
                          "train": cell("train_accuracy"), "test": cell("test_accuracy"),
                          "initial": self.initial, **_colors()})

    def accuracies(self, dropout: float, weight_decay: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, test), each (batch sizes, seeds), from the data the view gets."""
        d, w = self.dropouts.index(dropout), self.weight_decays.index(weight_decay)
        return (np.array([row[d][w] for row in self.data["train"]]), np.array([row[d][w] for row in self.data["test"]]))

    def gaps(self, dropout: float, weight_decay: float) -> np.ndarray:
        """Mean over seeds of train - test accuracy, per batch size."""
        train, test = self.accuracies(dropout, weight_decay)
        return (train - test).mean(axis=1)

    def title(self, batch_size: int, dropout: float, weight_decay: float) -> str:
        gaps = self.gaps(dropout, weight_decay)
        best = self.batch_sizes[int(np.argmin(gaps))]
        gap = gaps[self.batch_sizes.index(batch_size)]
        return (f"Batch {batch_size}, dropout {dropout:g}, weight decay {weight_decay:g}: train-test gap "
                f"{100 * gap:.1f} points (smallest at batch {best})")

    def figure(self, **settings):
        """The first picture (or other settings'), with matplotlib, from the data the view gets."""
        v = {**self.initial, **settings}
        train, test = self.accuracies(v["dropout"], v["weight_decay"])
        fig, (ax,) = plots.new_figure(1, width=7.5, height=3.6, pyplot=False)
        if v["panel"] == "gap":
            gap = 100 * (train - test)
            for j in range(gap.shape[1]):
                ax.plot(self.batch_sizes, gap[:, j], "o", color=plots.COLORS["bn"], alpha=0.4, ms=4)
            ax.plot(self.batch_sizes, gap.mean(axis=1), color=plots.COLORS["bn"], lw=2, label="mean over seeds")
            ax.set_ylabel("train - test accuracy (points)")
        else:
            ax.plot(self.batch_sizes, 100 * train.mean(axis=1), color="#1f77b4", lw=2, label="train")
            ax.plot(self.batch_sizes, 100 * test.mean(axis=1), color="#d62728", lw=2, label="test")
            ax.set_ylabel("accuracy (%), mean over seeds")
        ax.set_xscale("log")
        ax.set_xticks(self.batch_sizes, [str(b) for b in self.batch_sizes])
        ax.axvline(v["batch_size"], color="k", lw=1, ls="--")
        ax.set_xlabel("batch size")
        ax.set_title(self.title(v["batch_size"], v["dropout"], v["weight_decay"]), fontsize=9)
        ax.legend(loc="best")
        return fig


# ----------------------------------------------------------------------------- lesson 12
# a colour per device (up to 12): the light shades of matplotlib's tab20 (and two of tab20c), so that
# the statistics keep the course's strong colours (BN blue for the whole batch, ghost BN navy per device)
DEVICE_COLORS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d",
                 "#9edae5", "#fdd0a2", "#bcbddc")
SHARD_DEVICES = (1, 2, 3, 4, 5, 6, 8, 10, 12)   # the device counts offered, where they divide the sample


def _strip_jitter(count: int) -> np.ndarray:
    """Horizontal offsets in (-0.25, 0.25) device widths for a strip of `count` dots: a golden-ratio
    sequence, spread evenly and the same on every redraw (the view's stripJitter)."""
    return ((np.arange(count) * 0.6180339887498949) % 1.0 - 0.5) * 0.5


class ShardExplorer(Explorer):
    """Per-device BN is ghost BN: one feature of a fixed sample of N values split over W devices,
    each normalizing with its own shard's statistics, against the statistics of the whole batch
    (what SyncBatchNorm computes). Device r holds n_r values with

        mu_r = mean_r x,   sigma^2_r = mean_r (x - mu_r)^2,   M2_r = n_r sigma^2_r

    and the whole batch (mu_B, sigma^2_B over all N) follows from them by Chan et al.'s combine
    (`bnlab.distributed.combine_moments`), exactly:

        mu_B = sum_r n_r mu_r / N,   sigma^2_B = (sum_r M2_r + sum_r n_r (mu_r - mu_B)^2) / N

    The law of total variance reads the same formula as what per-device BN misses:

        sigma^2_B = sum_r (n_r / N) sigma^2_r   +   sum_r (n_r / N) (mu_r - mu_B)^2
                    per-device variance,           the variance of the device means:
                    averaged over the examples     ~0 for iid shards, large for non-iid ones

    Controls: W (main slider: the divisors of N in SHARD_DEVICES), the sharding ('iid (shuffled)':
    a fixed random order; 'sorted by class': the same order sorted by label, so each device sees a
    few classes) and the shard sizes ('equal': N / W each; 'unequal': n_r proportional to r + 1,
    boundaries floor(N (r + 1)(r + 2) / (W (W + 1)))). Consecutive shards of the ordered sample go
    to devices 0..W-1.

    values (N,), labels (N,) ints: the sample (default `digit_pixel`: one pixel of 24 digits of each
    class). Sent once: the values (in full: the view's moments are compute()'s), labels,
    both orders; per move the view computes every device's moments, the combine, the title and
    the readout (shard_explorer.js), the numbers `moments` gives.
    """

    VIEW = "shard_explorer.js"
    SHARDINGS = ("iid (shuffled)", "sorted by class")
    SIZES = ("equal", "unequal")

    def __init__(self, values=None, labels=None, devices: int = 4, sharding: str = "sorted by class",
                 sizes: str = "equal", seed: int = 0, feature: str | None = None):
        if (values is None) != (labels is None):
            raise ValueError("give both values and labels (one class label per value), or neither for the digits pixel")
        if values is None:
            values, labels, default_feature = self.digit_pixel(seed=seed)
            feature = default_feature if feature is None else feature
        values = np.asarray(values, dtype=np.float64)
        labels = np.asarray(labels)
        if values.ndim != 1 or labels.shape != values.shape:
            raise ValueError(f"values and labels must be 1-D of the same length, got shapes {values.shape} and "
                             f"{labels.shape}")
        if not np.isfinite(values).all():
            raise ValueError("values must be finite: a NaN or inf has no mean")
        whole = labels.dtype.kind == "f" and np.array_equal(labels, np.round(labels))
        if labels.dtype.kind not in "iu" and not whole:
            raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}")
        labels = labels.astype(np.int64)
        self.values, self.labels = values, labels
        self.devices = [w for w in SHARD_DEVICES if len(values) % w == 0
                        and min(self.shard_sizes_for(len(values), w, "unequal")) >= 2]
        if len(self.devices) < 2:
            raise ValueError(f"{len(values)} values split into no device count of {SHARD_DEVICES} but 1 with at least "
                             "2 values per shard: give a sample whose size has divisors there (e.g. 240)")
        self._check(devices, sharding, sizes)
        iid = np.random.default_rng(seed).permutation(len(values))
        self.orders = {"iid (shuffled)": iid, "sorted by class": iid[np.argsort(labels[iid], kind="stable")]}
        self.feature = "feature value" if feature is None else feature
        self.initial = {"devices": devices, "sharding": sharding, "sizes": sizes}
        super().__init__({
            "values": values.tolist(), "classes": labels.tolist(),
            "orders": {k: v.tolist() for k, v in self.orders.items()},
            "devices": self.devices, "shardings": list(self.SHARDINGS), "sizes": list(self.SIZES),
            "feature": self.feature, "device_colors": list(DEVICE_COLORS), "initial": self.initial, **_colors()})

    @staticmethod
    def digit_pixel(pixel: tuple[int, int] = (2, 5), per_class: int = 24, seed: int = 0):
        """(values (10 per_class,), labels, a label for the axis): pixel (row, column) of the first
        per_class training digits of each class in `bnlab.data.digits(seed=seed)`, in [0, 1]. The
        default, upper right of the centre, is empty in 5s and 6s and inked in most other digits: a
        feature whose mean depends on the class (the class means hold about half its variance)."""
        from .data import digits

        row, col = pixel
        if not (0 <= row < 8 and 0 <= col < 8):
            raise ValueError(f"pixel must be (row, column) in 0..7, got {pixel!r}")
        data = digits(seed=seed)
        x, y = data.x_train.numpy().astype(np.float64), data.y_train.numpy()
        chosen = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(10)])
        if len(chosen) != 10 * per_class:
            raise ValueError(f"per_class={per_class}: some class has fewer training digits")
        return x[chosen, 8 * row + col], y[chosen], f"digit pixel (row {row}, column {col}), ink in [0, 1]"

    @staticmethod
    def shard_sizes_for(n: int, devices: int, sizes: str) -> list[int]:
        """n_r of each of `devices` shards of n values: equal, or proportional to r + 1 (unequal)."""
        if sizes == "equal":
            if n % devices:
                raise ValueError(f"{n} values do not split into {devices} equal shards")
            return [n // devices] * devices
        if sizes != "unequal":
            raise ValueError(f"sizes must be one of {list(ShardExplorer.SIZES)}, got {sizes!r}")
        bounds = [0] + [n * (r + 1) * (r + 2) // (devices * (devices + 1)) for r in range(devices)]
        return [b - a for a, b in zip(bounds, bounds[1:])]

    def _check(self, devices, sharding, sizes) -> None:
        for name, value, options in (("devices", devices, self.devices), ("sharding", sharding, self.SHARDINGS),
                                     ("sizes", sizes, self.SIZES)):
            if value not in options:
                raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")

    def shards(self, devices: int, sharding: str, sizes: str = "equal") -> list[tuple[np.ndarray, np.ndarray]]:
        """[(values, labels) of device r for r in 0..devices-1]: consecutive pieces of the ordered sample."""
        self._check(devices, sharding, sizes)
        order = self.orders[sharding]
        bounds = np.cumsum([0, *self.shard_sizes_for(len(order), devices, sizes)])
        return [(self.values[order[a:b]], self.labels[order[a:b]]) for a, b in zip(bounds, bounds[1:])]

    def moments(self, devices: int, sharding: str, sizes: str = "equal") -> dict:
        """What the view computes per move: per device counts, means, variances (biased, BN's), m2s
        (each (W,)); 'global' (mean, var) of all N values; 'plain_average' (mean, var): 1/W sum_r of
        mu_r and sigma^2_r; 'within' sum_r (n_r / N) sigma^2_r and 'between' sum_r (n_r / N)
        (mu_r - mu_B)^2 (they add up to sigma^2_B); 'combined' (mean, var): `combine_moments` of
        (n_r, mu_r, M2_r), which is the global one."""
        import torch

        from .distributed import combine_moments

        parts = self.shards(devices, sharding, sizes)
        counts = np.array([len(v) for v, _ in parts])
        means = np.array([v.mean() for v, _ in parts])
        variances = np.array([v.var() for v, _ in parts])
        m2s = counts * variances
        total, mean, m2 = combine_moments(torch.as_tensor(counts), torch.as_tensor(means), torch.as_tensor(m2s))
        weights = counts / counts.sum()
        mu = float(self.values.mean())
        return {"counts": counts, "means": means, "variances": variances, "m2s": m2s,
                "global": (mu, float(self.values.var())),
                "plain_average": (float(means.mean()), float(variances.mean())),
                "within": float(weights @ variances), "between": float(weights @ (means - mu) ** 2),
                "combined": (float(mean), float(m2) / int(total))}

    def value_limits(self) -> tuple[float, float]:
        """The strip panel's value axis: the sample's range padded by 5% below and 35% above (for the legend)."""
        lo, hi = float(self.values.min()), float(self.values.max())
        span = hi - lo if hi > lo else 1.0
        return lo - 0.05 * span, hi + 0.35 * span

    def largest_variance(self) -> float:
        """The largest variance any setting shows, a device's or the whole batch's: the bar panel's scale."""
        return max(float(self.values.var()), *(float(self.moments(w, s, z)["variances"].max()) for w in self.devices
                                                for s in self.SHARDINGS for z in self.SIZES))

    def title(self, devices: int, sharding: str, sizes: str = "equal") -> str:
        """The finding the view writes over the figure."""
        if devices == 1:
            return "1 device: its shard is the whole batch, so per-device BN is global BN"
        m = self.moments(devices, sharding, sizes)
        var = m["global"][1]
        return (f"{devices} {sizes} shards, {sharding}: per-device BN normalizes with {100 * m['within'] / var:.0f}% "
                f"of the batch variance; the spread of the device means is the other {100 * m['between'] / var:.0f}%")

    def figure(self, **settings):
        """The first picture (or other settings'), with matplotlib, from the sample the view gets."""
        v = {**self.initial, **settings}
        m = self.moments(**v)
        fig, axes = plots.new_figure(2, width=4.8, height=3.6, pyplot=False)
        strip, bars = axes
        mu, var = m["global"]
        strip.axhspan(mu - var ** 0.5, mu + var ** 0.5, color=plots.COLORS["bn"], alpha=0.12, lw=0)
        strip.axhline(mu, color=plots.COLORS["bn"], lw=1.5, label="whole batch: μ_B ± σ_B (SyncBN)")
        for r, (values, _) in enumerate(self.shards(**v)):
            strip.plot(r + 0.9 + 0.8 * _strip_jitter(len(values)), values, ".", color=DEVICE_COLORS[r], ms=3)
            strip.errorbar(r + 1.25, m["means"][r], yerr=m["variances"][r] ** 0.5, fmt="o", color=plots.COLORS["gbn"],
                           ms=4, capsize=3, label="device: μ_r ± σ_r (per-device BN)" if r == 0 else None)
        strip.set_xlim(0.5, v["devices"] + 0.5)
        strip.set_ylim(*self.value_limits())
        strip.set_xticks(range(1, v["devices"] + 1))
        strip.set_xlabel("device r")
        strip.set_ylabel(self.feature)
        strip.legend(loc="upper right", fontsize=7)
        strip.set_title("Each device's shard and its statistics", fontsize=9)
        xs = np.arange(1, v["devices"] + 1)
        bars.bar(xs, m["variances"], color=DEVICE_COLORS[:v["devices"]], alpha=0.85)
        last = v["devices"] + 1.5
        bars.bar([last], [m["within"]], color=plots.COLORS["gbn"], label="Σ (n_r/N) σ²_r: per-device")
        bars.bar([last], [m["between"]], bottom=[m["within"]], color=plots.COLORS["mistake"],
                 label="Σ (n_r/N)(μ_r − μ_B)²: device means")
        bars.axhline(var, color=plots.COLORS["bn"], lw=1.5, label="σ²_B of the whole batch")
        bars.set_ylim(0, 1.5 * self.largest_variance())   # as the view: room above the bars for the legend
        bars.set_xticks([*xs, last], [str(x) for x in xs] + ["sum"])
        bars.set_xlabel("device r")
        bars.set_ylabel("variance σ² (feature units²)")
        bars.legend(loc="upper right", fontsize=7)
        bars.set_title("σ²_B = per-device variance + variance of the means", fontsize=9)
        fig.suptitle(self.title(**v), fontsize=9)
        return fig


# ----------------------------------------------------------------------------- lesson 11
# bnlab.recurrent's norms as colour keys; 'bn_input' has no variant in bnlab.variants, so it is drawn
# in a lighter shade of BN's blue
SEQUENCE_KEYS = {None: "plain", "bn": "bn", "bn_input": "bn_input", "ln": "ln"}
SEQUENCE_LABELS = {"plain": "without BN", "bn": "BN-LSTM", "bn_input": "BN on the input only", "ln": "LN-LSTM"}
SEQUENCE_GATES = ("i", "f", "g", "o")


def _sequence_key(norm) -> str:
    """The colour key of a bnlab.recurrent norm name (None, 'bn', 'bn_input', 'ln'; 'plain' for None)."""
    if norm == "plain":
        return "plain"
    if isinstance(norm, (str, type(None))) and norm in SEQUENCE_KEYS:
        return SEQUENCE_KEYS[norm]
    raise ValueError(f"unknown LSTM variant {norm!r}: expected one of {list(SEQUENCE_KEYS)} (bnlab.recurrent.NORMS)")


def _plus_zero(values, digits: int) -> list:
    # rounded, and -0.0 made 0.0: the titles must not print "-0" where the view prints "0"
    return (np.asarray(rounded(values, digits), dtype=np.float64) + 0.0).tolist()


def _hidden_preactivations(model, x):
    """(the LSTM in model, its hidden-path pre-activations a_h = W_hh h_{t-1} at every step, (T, N, 4H)
    float64) on x, in eval mode (as at test time) without gradients; running statistics and modes are
    left as they were."""
    import torch

    from .recurrent import _find_lstm, _untouched

    lstm = _find_lstm(model)
    weight = lstm.weight_ih_l0
    x = torch.as_tensor(x).to(device=weight.device, dtype=weight.dtype)
    with _untouched(lstm):
        lstm.eval()
        x_first, hx, _ = lstm._batch_first_input(x, None)
        trace: dict = {}
        lstm._run(x_first, hx, None, trace=trace)
    return lstm, torch.stack(trace["hidden"]).double().cpu().numpy()


class SequenceExplorer(Explorer):
    """Why a BN-LSTM keeps statistics per time step (Cooijmans et al. 2016). The hidden path's
    pre-activations a_h,t = W_hh h_{t-1} start at 0 (h_0 = 0) and their distribution changes over the
    first steps; BN_t normalizes them with step t's own statistics,

        x_hat_t = (a_h,t - mu_t) / sqrt(sigma^2_t + eps)     (eval: steps[t]'s running mu_t, sigma^2_t)

    while one set of statistics for all steps would use the pooled ones of the trained steps
    t < T (the law of total variance over steps):

        mu = mean_t mu_t,   sigma^2 = mean_t (sigma^2_t + (mu_t - mu)^2)

    Steps t >= T (longer test sequences) use step T - 1's statistics (beyond='last').
    Main slider: the step t; select: the variant whose a_h (before any norm) the panels compare.
    Panels: at step t, the histogram of a_h of the chosen units' four gates for that variant (filled)
    and of the BN-LSTM's x_hat with per-step and with pooled statistics (lines); over t, the variance
    of a_h (mean over those gates) of the variant and of the BN-LSTM, with the BN-LSTM's per-step
    running variance and the pooled one; and each variant's test metric at each test set (lengths).

    models: {norm: model}, norm in bnlab.recurrent.NORMS (None or 'plain', 'bn', 'bn_input', 'ln'),
    each an `LSTM` of that norm or a model holding one (SequenceRegressor, SequenceClassifier); 'bn'
    is needed. x: (N, T_x, I) test sequences, N >= 2, run through every model in eval mode; T_x may
    exceed the BN-LSTM's max_steps T. metrics: {norm: {test name: final metric}} (optional), e.g.
    {'bn': {'length 20': 0.01, ...}}; metric names its kind. units: the hidden units whose gates
    (i, f, g, o: features g H + u) are shown (default: all of them). `from_runs` takes what bnlab.recurrent's training
    helpers return.

    Sent once, per variant and step: a_h's histogram (BINS fixed bins over every step, values beyond
    them counted in the end bins, fractions to 3 digits) and its mean and variance over the batch
    (means over the gates shown, 6 digits); for the BN-LSTM also its running statistics per step, the
    pooled ones, and x_hat's histograms and RMS with either. The view picks the step's.
    """

    VIEW = "sequence_explorer.js"
    BINS = 32

    def __init__(self, models: dict, x, metrics: dict | None = None, metric: str = "test MSE",
                 chance: float | None = None, chance_label: str = "chance", units=None, step: int | None = None,
                 variant=None):
        import torch

        if not models:
            raise ValueError("models is empty: give {norm: model} with a BN-LSTM under 'bn' (None: the plain one)")
        keyed = {}
        for norm, model in models.items():
            key = _sequence_key(norm)
            if key in keyed:
                raise ValueError(f"models has two entries for variant {key!r}")
            keyed[key] = model
        if "bn" not in keyed:
            raise ValueError(f"models needs a BN-LSTM under 'bn' (LSTM(norm='bn') or a model holding one), "
                             f"got {list(models)}")
        x = torch.as_tensor(x)
        if x.dim() != 3 or len(x) < 2:
            raise ValueError(f"x must be (N, T, I) test sequences with N >= 2 (a batch has a variance), got shape "
                             f"{tuple(x.shape)}")
        if units is not None:
            units = [units] if isinstance(units, (int, np.integer)) else list(units)
            if not units or len(set(units)) < len(units):
                raise ValueError(f"units must be distinct hidden units (or None: all of them), got {units!r}")
        traces = {}
        for key, model in keyed.items():
            lstm = self._lstm(key, model, x.shape[1])
            features = self._features(lstm.hidden_size, units)
            traces[key] = (lstm, _hidden_preactivations(model, x)[1][:, :, features])
        bn, raw_bn = traces["bn"]
        self.trained_steps = T = bn.max_steps
        steps = raw_bn.shape[0]
        eps = bn.norm_hh.eps
        # step t's statistics, beyond T those of step T - 1 (beyond='last')
        stats = [bn.norm_hh.step_norm(t) for t in range(max(steps, T))]
        features = self._features(bn.hidden_size, units)
        running_mean = np.stack([s.running_mean.double().cpu().numpy()[features] for s in stats])
        running_var = np.stack([s.running_var.double().cpu().numpy()[features] for s in stats])
        pooled_mean = running_mean[:T].mean(0)
        pooled_var = (running_var[:T] + (running_mean[:T] - pooled_mean) ** 2).mean(0)
        x_hat = {"step": (raw_bn - running_mean[:steps, None]) / np.sqrt(running_var[:steps, None] + eps),
                 "shared": (raw_bn - pooled_mean) / np.sqrt(pooled_var + eps)}
        # the bins cover every step but the first where there are more: at t = 0 every a_h is 0
        first = 1 if steps > 1 else 0
        every = np.concatenate([v[first:].ravel() for v in [raw for _, raw in traces.values()] + list(x_hat.values())])
        # symmetric about 0, where x_hat is centred, over all but the farthest 0.2% on either side
        reach = float(np.abs(np.percentile(every, [0.2, 99.8])).max()) or 0.5
        edges = np.array(rounded(np.linspace(-reach, reach, self.BINS + 1), 4))

        def histograms(values):
            # values beyond the edges counted in the end bins: every value of the step is in the picture
            clipped = np.clip(values, edges[0], edges[-1])
            return [_plus_zero(np.histogram(v.ravel(), edges)[0] / v.size, 3) for v in clipped]

        metrics = {} if metrics is None else metrics
        tests = list(next(iter(metrics.values()))) if metrics else []
        sent_metrics = {}
        for norm_name, by_test in metrics.items():
            key = _sequence_key(norm_name)
            if list(by_test) != tests:
                raise ValueError(f"every variant needs the same test sets: {norm_name!r} has {list(by_test)}, "
                                 f"the first {tests}")
            values = [float(v) for v in by_test.values()]
            if not all(np.isfinite(values)):
                raise ValueError(f"metrics of {norm_name!r} must be finite numbers, got {values}")
            sent_metrics[key] = _plus_zero(values, 6)
        variant = next(iter(k for k in keyed if k != "bn"), "bn") if variant is None else _sequence_key(variant)
        if variant not in keyed:
            raise ValueError(f"variant must be one of the models' {list(keyed)}, got {variant!r}")
        step = min(1, steps - 1) if step is None else step
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < steps:
            raise ValueError(f"step must be a time step 0..{steps - 1} of x, got {step!r}")
        self.variants, self.tests, self.units = list(keyed), tests, None if units is None else [int(u) for u in units]
        self.initial = {"step": int(step), "variant": variant}
        colors = {**_colors()["colors"], "bn_input": matplotlib.colors.to_hex(plots.shades("bn", 3)[0])}
        super().__init__({
            "steps": steps, "trained_steps": T, "eps": eps, "units": self.units, "gates": list(SEQUENCE_GATES),
            "hidden_size": bn.hidden_size,
            "edges": edges.tolist(), "variants": self.variants,
            "raw": {key: {"hist": histograms(raw), "mean": _plus_zero(raw.mean(1).mean(-1), 6),
                          "var": _plus_zero(raw.var(1).mean(-1), 6)} for key, (_, raw) in traces.items()},
            "bn": {"running_mean": _plus_zero(running_mean[:steps].mean(-1), 6),
                   "running_var": _plus_zero(running_var[:steps].mean(-1), 6),
                   "pooled_mean": _plus_zero(pooled_mean.mean(), 6), "pooled_var": _plus_zero(pooled_var.mean(), 6),
                   "hist_step": histograms(x_hat["step"]), "hist_shared": histograms(x_hat["shared"]),
                   "rms_step": _plus_zero(np.sqrt((x_hat["step"] ** 2).mean((1, 2))), 6),
                   "rms_shared": _plus_zero(np.sqrt((x_hat["shared"] ** 2).mean((1, 2))), 6)},
            "tests": tests, "metrics": sent_metrics, "metric": metric,
            "chance": None if chance is None else float(chance), "chance_label": chance_label,
            "initial": self.initial, "colors": colors, "labels": dict(SEQUENCE_LABELS)})

    @staticmethod
    def _features(hidden_size: int, units) -> list[int]:
        """The features g H + u of the gates g = i, f, g, o of the units shown (None: all)."""
        units = range(hidden_size) if units is None else units
        bad = [u for u in units
               if isinstance(u, bool) or not isinstance(u, (int, np.integer)) or not 0 <= u < hidden_size]
        if bad:
            raise ValueError(f"units must be hidden units 0..{hidden_size - 1} of every LSTM, got {bad[0]!r}")
        return [g * hidden_size + int(u) for g in range(4) for u in units]

    @staticmethod
    def _lstm(key, model, length):
        from .recurrent import _find_lstm

        lstm = _find_lstm(model)     # a ValueError names a model without one
        if SEQUENCE_KEYS.get(lstm.norm) != key:
            raise ValueError(f"models[{key!r}] holds an LSTM with norm={lstm.norm!r}")
        if key == "bn" and lstm.beyond == "none" and length > lstm.max_steps:
            raise ValueError(f"x has {length} steps, more than the BN-LSTM's max_steps={lstm.max_steps}, and its "
                             "beyond='none': set model beyond='last' (the last step's statistics) or give shorter x")
        return lstm

    @classmethod
    def from_runs(cls, runs: dict, x=None, n: int = 256, seed: int = 0, **kwargs) -> "SequenceExplorer":
        """The explorer of trained runs: {norm: SequenceHistory} as `bnlab.recurrent.train_adding_problem`
        or `train_digit_sequences` return them (each holds its model), e.g. for norm in NORMS. The
        bars are each history's last evaluation of every test set. x: the test sequences to measure
        on; for the adding problem (test sets 'length L') by default n fresh ones of the training
        length T, the BN-LSTM's max_steps (`bnlab.data.adding_problem(n, T, seed, 'test')`: longer ones
        place the first marker over a longer first half, so their per-step statistics are not the
        trained ones), and the chance line at the MSE 1/6 of always answering 1. kwargs go to the
        constructor (units=, step=, variant=)."""
        from .data import adding_problem
        from .recurrent import SequenceHistory, _find_lstm

        if not runs:
            raise ValueError("runs is empty: give {norm: SequenceHistory} with a 'bn' run")
        for norm, history in runs.items():
            if not isinstance(history, SequenceHistory) or history.model is None:
                raise ValueError(f"runs[{norm!r}] must be a SequenceHistory holding its model (as "
                                 f"train_adding_problem returns it), got {type(history).__name__}")
        first = next(iter(runs.values()))
        tests = list(first.metrics)
        metrics = {norm: {name: h.final(name) for name in tests} for norm, h in runs.items()}
        metric = "test MSE" if first.metric == "mse" else f"test {first.metric}"
        if x is None:
            lengths = [re.fullmatch(r"length (\d+)", name) for name in tests]
            if not tests or not all(lengths):
                raise ValueError(f"give x, the test sequences to measure on: these runs' test sets {tests} are not "
                                 "the adding problem's 'length L'")
            # at the training length T: the adding problem spreads its first marker over the first half
            # of a sequence, so longer sequences have other statistics at every step than the trained ones
            trained = _find_lstm(runs["bn"].model).max_steps if "bn" in runs else min(int(m[1]) for m in lengths)
            x = adding_problem(n, trained, seed, "test")[0]
            if first.metric == "mse":
                kwargs.setdefault("chance", 1 / 6)
                kwargs.setdefault("chance_label", "always answering 1")
        return cls({norm: h.model for norm, h in runs.items()}, x, metrics, metric=metric, **kwargs)

    def _index(self, step: int, variant=None) -> tuple[int, str]:
        variant = self.initial["variant"] if variant is None else _sequence_key(variant)
        if variant not in self.variants:
            raise ValueError(f"variant must be one of {self.variants}, got {variant!r}")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < self.data["steps"]:
            raise ValueError(f"step must be a time step 0..{self.data['steps'] - 1}, got {step!r}")
        return int(step), variant

    def at_step(self, step: int, variant=None) -> dict:
        """What the view shows at a step, from the data it gets: the histograms 'raw_hist' (the
        variant's a_h), 'step_hist' and 'shared_hist' (BN's x_hat), each (BINS,) fractions; the batch 'raw_mean',
        'raw_var' (the variant's) and 'bn_mean', 'bn_var'; BN's 'running_mean', 'running_var' of the
        step (of step T - 1 beyond T: 'stats_step'), 'pooled_mean', 'pooled_var'; 'rms_step',
        'rms_shared' of x_hat; 'beyond' (t >= T)."""
        t, variant = self._index(step, variant)
        d, raw, bn = self.data, self.data["raw"][variant], self.data["bn"]
        return {"raw_hist": np.array(raw["hist"][t]), "step_hist": np.array(bn["hist_step"][t]),
                "shared_hist": np.array(bn["hist_shared"][t]), "raw_mean": raw["mean"][t], "raw_var": raw["var"][t],
                "bn_mean": d["raw"]["bn"]["mean"][t], "bn_var": d["raw"]["bn"]["var"][t],
                "running_mean": bn["running_mean"][t], "running_var": bn["running_var"][t],
                "stats_step": min(t, self.trained_steps - 1), "pooled_mean": bn["pooled_mean"],
                "pooled_var": bn["pooled_var"], "rms_step": bn["rms_step"][t], "rms_shared": bn["rms_shared"][t],
                "beyond": t >= self.trained_steps}

    def variance_limit(self, variant=None) -> float:
        """The variance panel's scale for a variant (the same at every step): 1.6 times the largest value
        of the curves it draws, room above them for the legend."""
        key = self._index(0, variant)[1]
        d = self.data
        return 1.6 * max(*d["raw"][key]["var"], *d["raw"]["bn"]["var"], *d["bn"]["running_var"], d["bn"]["pooled_var"],
                         1e-12)

    def title(self, step: int, variant=None) -> str:
        """The finding at a step, for the variant compared (default the initial one), as the view writes it."""
        s = self.at_step(step, variant)
        T, key = self.trained_steps, self._index(step, variant)[1]
        if step == 0:
            return "Step 0: h_0 = 0, so W_hh h_(t−1) is 0 in every sequence: nothing to normalize yet"
        where = f"Step {step} (beyond the {T} trained steps)" if s["beyond"] else f"Step {step}"
        last = self.data["raw"][key]["var"][min(T, self.data["steps"]) - 1]
        drift = (f"{self.data['labels'][key]}, Var W_hh h_(t−1) is {100 * s['raw_var'] / last:.0f}% of step "
                 f"{min(T, self.data['steps']) - 1}'s; " if last > 0 else "")
        return (f"{where}: {drift}BN's step-{s['stats_step']} statistics give x̂ an RMS of {s['rms_step']:.2f} "
                f"(one set for all steps: {s['rms_shared']:.2f})")

    def figure(self, step: int | None = None, variant=None):
        """The first picture (or another step's or variant's), with matplotlib, from the data the view gets."""
        step = self.initial["step"] if step is None else step
        t, variant = self._index(step, variant)
        s, d = self.at_step(t, variant), self.data
        colors, labels = d["colors"], d["labels"]
        fig, axes = plots.new_figure(3, width=3.6, height=3.5, pyplot=False)
        hist, curves, bars = axes
        edges = np.array(d["edges"])
        hist.stairs(s["raw_hist"], edges, fill=True, color=colors[variant], alpha=0.45,
                    label=f"{labels[variant]}: W_hh h_(t−1)")
        hist.stairs(s["step_hist"], edges, color=colors["bn"], lw=1.8, label="BN-LSTM x̂, step t's statistics")
        hist.stairs(s["shared_hist"], edges, color=colors["running"], lw=1.5, ls="--", label="x̂, one set for all steps")
        hist.set_xlabel("W_hh h_(t−1) (filled), x̂ (lines)")
        hist.set_ylabel("fraction of values per bin")
        hist.set_title(f"At step {t}", fontsize=9)
        hist.legend(fontsize=6, loc="upper left")
        ts = np.arange(d["steps"])
        curves.plot(ts, d["raw"][variant]["var"], color=colors[variant], lw=1.6, label=labels[variant])
        if variant != "bn":
            curves.plot(ts, d["raw"]["bn"]["var"], color=colors["bn"], lw=1.6, label=labels["bn"])
        curves.plot(ts, d["bn"]["running_var"], color=colors["bn"], lw=1.2, ls="--", label="BN's running σ²_t")
        curves.axhline(d["bn"]["pooled_var"], color=colors["running"], lw=1.2, ls=":", label="one σ² for all steps")
        curves.axvline(t, color="k", lw=1, ls="--")
        if d["steps"] > self.trained_steps:
            curves.axvline(self.trained_steps - 0.5, color="#888", lw=1)
        curves.set_ylim(0, self.variance_limit(variant))
        curves.set_xlabel("time step t")
        curves.set_ylabel("variance of W_hh h_(t−1) (mean over gates)")
        curves.set_title("Over time: per-step statistics follow it", fontsize=9)
        curves.legend(fontsize=6, loc="upper right")
        if self.tests:
            width = 0.8 / len(d["metrics"])
            for j, (key, values) in enumerate(d["metrics"].items()):
                xs = np.arange(len(self.tests)) - 0.4 + width * (j + 0.5)
                bars.bar(xs, values, width, color=colors[key], alpha=0.95 if key == variant else 0.45,
                         label=labels[key])
            if d["chance"] is not None:
                bars.axhline(d["chance"], color="k", lw=1, ls=":", label=d["chance_label"])
            bars.set_xticks(range(len(self.tests)), self.tests)
            bars.set_ylabel(d["metric"])
            bars.set_ylim(0, 1.6 * max([*itertools.chain(*d["metrics"].values()), d["chance"] or 0, 1e-12]))
            bars.legend(fontsize=6, loc="upper left")
            bars.set_title(f"{d['metric']}, trained on {self.trained_steps} steps", fontsize=9)
        else:
            plots.plot_message(bars, "no test metrics given")
        fig.suptitle(self.title(t, variant), fontsize=9)
        return fig


# ----------------------------------------------------------------------------- lesson 13
EVIDENCE_VERDICTS = ("true", "false", "half-true", "untestable as stated")
EVIDENCE_COLORS = {"true": "#2ca02c", "false": "#d62728", "half-true": "#ff7f0e", "untestable as stated": "#7f7f7f"}
# the filter menu: its label -> the verdict it keeps (None: every claim)
EVIDENCE_FILTERS = {"all": None, "true": "true", "false": "false", "half-true": "half-true",
                    "untestable": "untestable as stated"}
EVIDENCE_KEYS = ("id", "source", "quote", "translation", "verdict", "explanation", "lesson", "summary", "passed",
                 "numbers")
EVIDENCE_LABEL_CHARS = 60


def _evidence_number(value) -> float | str:
    # JSON has no NaN or inf: those go as Python writes them, which the view reads back
    value = float(value)
    return value if np.isfinite(value) else repr(value)


def _drawable(text: str) -> bool:
    """Whether matplotlib draws text as written: every character in its font, none right-to-left
    (matplotlib lays out and shapes no RTL script, so Arabic or Hebrew would come out reversed)."""
    import unicodedata

    from matplotlib.font_manager import FontProperties, findfont
    from matplotlib.ft2font import FT2Font

    font = FT2Font(findfont(FontProperties()))
    return all(c.isspace() or (font.get_char_index(ord(c)) and unicodedata.bidirectional(c) not in ("R", "AL"))
               for c in text)


class EvidenceExplorer(Explorer):
    """Pick a claim about BN, see the evidence (lesson 13): its verdict as a coloured badge, the quote
    and its translation, why, where the course proves it and what that proof measured, whether the
    proof's evidence supports the verdict; the proof's numbers as horizontal bars of log10 |value|
    (the bar from 0, |value| = 1, to log10 |value|: how many orders of magnitude each is from 1), and
    a table of them; the counts of each verdict over all claims.

    items: a list of claims, each a dict with keys
        id (str, unique), source ("seed 002", "beyond the seeds"), quote (original-language text, or
        ""), translation (English, or ""), verdict (one of EVIDENCE_VERDICTS), explanation, lesson
        (where the course proves it, "03 §4"), summary (what the proof measured, one sentence),
        passed (bool: the proof's evidence supports the verdict), numbers ({name: float}, may be
        empty; NaN and inf are shown as nan and inf, and drawn as no bar, as is 0).
    item: the id of the claim shown first (default the first).

    Controls: a drop-down of the claims (main), a filter by verdict that restricts it, and a "claim
    number" slider over the filtered claims. Sent once: every claim (its numbers as [name, value]
    pairs, in their order; non-finite values as "nan", "inf", "-inf"); the view picks, filters and
    draws in the browser.
    """

    VIEW = "evidence_explorer.js"
    VERDICTS = EVIDENCE_VERDICTS
    COLORS = EVIDENCE_COLORS
    FILTERS = EVIDENCE_FILTERS
    KEYS = EVIDENCE_KEYS

    def __init__(self, items, item: str | None = None):
        if isinstance(items, (str, dict)) or not hasattr(items, "__iter__"):
            raise ValueError(f"items must be a list of claim dicts, got {type(items).__name__}")
        self.items = [self._checked(i, claim) for i, claim in enumerate(items)]
        if not self.items:
            raise ValueError("items is empty: give at least one claim")
        ids = [claim["id"] for claim in self.items]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"claim ids must be unique; repeated: {repeated}")
        self.by_id = {claim["id"]: claim for claim in self.items}
        item = ids[0] if item is None else item
        if item not in self.by_id:
            raise ValueError(f"item must be the id of one of the claims, got {item!r}; ids: {ids[:5]}"
                             + (" …" if len(ids) > 5 else ""))
        self.initial = {"item": item, "filter": "all"}
        # only the verdicts some claim has: a filter that keeps nothing would leave nothing to show
        filters = [label for label, verdict in self.FILTERS.items() if verdict is None or self.counts()[verdict]]
        super().__init__({
            "items": [{**claim, "numbers": [[name, _evidence_number(v)] for name, v in claim["numbers"].items()]}
                      for claim in self.items],
            "verdicts": list(self.VERDICTS), "verdict_colors": dict(self.COLORS),
            "filters": {label: self.FILTERS[label] for label in filters},
            "label_chars": EVIDENCE_LABEL_CHARS, "initial": self.initial})

    @classmethod
    def _checked(cls, index: int, claim) -> dict:
        """A copy of one claim, or a ValueError naming what is wrong with it."""
        if not isinstance(claim, dict):
            raise ValueError(f"items[{index}] must be a dict with keys {list(cls.KEYS)}, got {type(claim).__name__}")
        where = f"items[{index}]" + (f" ({claim['id']!r})" if isinstance(claim.get("id"), str) else "")
        missing = [k for k in cls.KEYS if k not in claim]
        unknown = sorted(set(claim) - set(cls.KEYS), key=str)
        if missing or unknown:
            raise ValueError(f"{where}: " + "; ".join(
                [f"missing keys {missing}"] * bool(missing) + [f"unknown keys {unknown}"] * bool(unknown))
                + f"; a claim has exactly {list(cls.KEYS)}")
        for key in ("id", "source", "quote", "translation", "explanation", "lesson", "summary"):
            if not isinstance(claim[key], str):
                raise ValueError(f"{where}: {key} must be a str, got {type(claim[key]).__name__}")
        if not claim["id"].strip():
            raise ValueError(f"{where}: id must not be empty")
        if claim["verdict"] not in cls.VERDICTS:
            raise ValueError(f"{where}: verdict must be one of {list(cls.VERDICTS)}, got {claim['verdict']!r}")
        if not isinstance(claim["passed"], (bool, np.bool_)):
            raise ValueError(f"{where}: passed must be True or False, got {claim['passed']!r}")
        numbers = claim["numbers"]
        if not isinstance(numbers, dict):
            raise ValueError(f"{where}: numbers must be a dict name -> float, got {type(numbers).__name__}")
        checked = {}
        for name, value in numbers.items():
            if not isinstance(name, str):
                raise ValueError(f"{where}: numbers' names must be str, got {name!r}")
            real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            if not real:
                raise ValueError(f"{where}: numbers[{name!r}] must be a number (int or float), got {value!r}")
            # -0.0 made 0.0: JavaScript's JSON.stringify writes -0 as 0, and a measured -0 means 0
            checked[name] = float(value) + 0.0
        return {**{k: claim[k] for k in cls.KEYS}, "passed": bool(claim["passed"]), "numbers": checked}

    def claim(self, item_id: str) -> dict:
        """The claim with that id (as checked: numbers as {name: float})."""
        if item_id not in self.by_id:
            raise ValueError(f"no claim with id {item_id!r}; ids: {list(self.by_id)[:5]}"
                             + (" …" if len(self.by_id) > 5 else ""))
        return self.by_id[item_id]

    def counts(self) -> dict:
        """{verdict: how many claims have it}, for every verdict of VERDICTS in its order."""
        return {v: sum(claim["verdict"] == v for claim in self.items) for v in self.VERDICTS}

    def counts_line(self) -> str:
        """The line under the header: the counts of each verdict over all claims, and how many proofs
        support their verdict."""
        n, supported = len(self.items), sum(claim["passed"] for claim in self.items)
        counts = ", ".join(f"{k} {v}" for v, k in self.counts().items())
        return (f"all {n} claim{'s' * (n != 1)}: {counts}; the evidence supports {supported} of the {n} "
                f"verdict{'s' * (n != 1)}")

    def filtered(self, label: str = "all") -> list[str]:
        """The ids the filter `label` (a key of FILTERS) keeps, in the items' order."""
        if label not in self.FILTERS:
            raise ValueError(f"filter must be one of {list(self.FILTERS)}, got {label!r}")
        verdict = self.FILTERS[label]
        return [claim["id"] for claim in self.items if verdict is None or claim["verdict"] == verdict]

    def label(self, item_id: str) -> str:
        """The claim's entry in the drop-down: 'id — ' and the first 60 characters of its translation
        (of its explanation where the translation is ""), whitespace runs as one space, '…' where cut."""
        claim = self.claim(item_id)
        text = " ".join((claim["translation"] or claim["explanation"]).split())
        cut = text[:EVIDENCE_LABEL_CHARS] + ("…" if len(text) > EVIDENCE_LABEL_CHARS else "")
        return f"{item_id} — {cut}" if cut else item_id

    def bars(self, item_id: str) -> list[tuple[str, float]]:
        """The bars the chart draws, top to bottom: (name, log10 |value|) of each finite nonzero number,
        the largest log10 |value| first (numbers of equal size in their order)."""
        numbers = self.claim(item_id)["numbers"]
        pairs = [(name, float(np.log10(abs(v)))) for name, v in numbers.items() if np.isfinite(v) and v != 0]
        return sorted(pairs, key=lambda pair: -pair[1])

    def off_axis(self, item_id: str) -> list[tuple[str, float]]:
        """(name, value) of the numbers no bar can show: NaN, inf and 0 have no finite log10 |value|."""
        return [(name, v) for name, v in self.claim(item_id)["numbers"].items() if not (np.isfinite(v) and v != 0)]

    def limits(self, item_id: str) -> tuple[float, float]:
        """The chart's log10 |value| axis: from the smallest to the largest bar end, 0 (|value| = 1)
        included, widened by a quarter of that span (at least 1) each side, room for the values written
        at the bars' ends."""
        logs = [b for _, b in self.bars(item_id)]
        lo, hi = min([0.0, *logs]), max([0.0, *logs])
        pad = 0.25 * max(hi - lo, 1.0)
        return lo - pad, hi + pad

    def title(self, item_id: str) -> str:
        """The chart's title: the claim, its verdict, and whether the evidence supports it."""
        claim = self.claim(item_id)
        support = "supports" if claim["passed"] else "does not support"
        return f"{item_id}: {claim['verdict']} (the evidence {support} this verdict)"

    def figure(self, item: str | None = None):
        """The view's picture of a claim (default the initial one) with matplotlib: the text on the
        left, the bar chart of log10 |value| on the right, the title over both."""
        import textwrap

        item = self.initial["item"] if item is None else item
        claim, bars = self.claim(item), self.bars(item)
        color = self.COLORS[claim["verdict"]]
        size, step = 7.5, 7.5 * 1.3 / 72      # font size (points) and a line's height (inches)
        # a quote the font cannot draw (or not in its direction) is left to the live view
        quote = (f"“{claim['quote']}”" if _drawable(claim["quote"])
                 else "(the quote, in a script this picture cannot draw, is in the live explorer)")
        paragraphs = [(quote, {"style": "italic"}) if claim["quote"] else None,
                      (claim["translation"], {}) if claim["translation"] else None,
                      (claim["explanation"], {}),
                      (f"proved in lesson {claim['lesson']}: {claim['summary']}", {}),
                      ("✓ the evidence supports the verdict" if claim["passed"]
                       else "✗ the evidence does not support the verdict",
                       {"color": "#2ca02c" if claim["passed"] else "#d62728", "weight": "bold"}),
                      (self.counts_line(), {"color": "#555"})]
        blocks = [("\n".join(textwrap.fill(part, 72) for part in text.splitlines() or [""]), style)
                  for text, style in filter(None, paragraphs)]
        lines = 3.6 + sum(text.count("\n") + 1.6 for text, _ in blocks)    # the badge's and id's lines, a gap each
        height = max(3.2, 1.1 + lines * step, 1.3 + 0.3 * len(bars))
        fig, (text_ax, ax) = plots.new_figure(2, width=4.8, height=height, pyplot=False)
        text_ax.set_axis_off()
        text_ax.text(0, 1, claim["verdict"], transform=text_ax.transAxes, va="top", fontsize=9, weight="bold",
                     color="white", bbox={"boxstyle": "round,pad=0.3", "facecolor": color, "edgecolor": color})
        text_ax.annotate(f"{item} · source: {claim['source']}", (0, 1), xycoords="axes fraction",
                         xytext=(0, -2.0 * step * 72), textcoords="offset points", va="top", fontsize=size,
                         color="#555")
        offset = 3.6 * step * 72            # below the badge and the id's line
        for text, style in blocks:
            text_ax.annotate(text, (0, 1), xycoords="axes fraction", xytext=(0, -offset), textcoords="offset points",
                             va="top", fontsize=size, linespacing=1.3, **style)
            offset += (text.count("\n") + 1.6) * step * 72
        if bars:
            names, logs = zip(*bars)
            ys = np.arange(len(bars))[::-1]
            ax.barh(ys, logs, height=0.7, color=color, alpha=0.85)
            values = claim["numbers"]
            for y, name, log in zip(ys, names, logs):
                ax.text(log, y, f" {values[name]:.4g} ", va="center", ha="left" if log >= 0 else "right", fontsize=7)
            ax.axvline(0, color="#444", lw=1)
            ax.set_yticks(ys, names, fontsize=7)
            ax.set_ylim(-0.6, len(bars) - 0.4)
            ax.set_xlim(*self.limits(item))
            ax.set_xlabel("log10 |value|  (0: |value| = 1)")
        off = ", ".join(f"{n} = {v:.4g}" for n, v in self.off_axis(item))
        if bars:
            ax.set_title(textwrap.fill(f"not on the log axis: {off}", 64) if off
                         else "the proof's numbers, orders of magnitude from 1", fontsize=8)
        else:
            plots.plot_message(ax, textwrap.fill(f"no number has a finite log10 |value|: {off}", 48) if off
                               else "this claim's proof records no numbers")
        fig.suptitle(self.title(item), fontsize=9)
        return fig


# appended rather than edited into the list at the top, which other explorers' changes touch
__all__ += ["EvidenceExplorer", "EVIDENCE_VERDICTS", "EVIDENCE_COLORS"]
