"""Interactive explorers for the lessons (ipywidgets).

Each explorer owns one matplotlib figure and a few controls. Moving a control recomputes from data
recorded when the explorer was built (a fixed random sample, recorded batches) and redraws the
figure; nothing is trained. Display one in a notebook by making it the last expression of a cell.

The figure is rendered to PNG bytes in an ``ipywidgets.Image`` rather than shown in an ``Output``
widget: an Output sends display and clear_output messages on every redraw, which a kernel without a
front end (nbval, nbclient) records as stray cell outputs.
"""

from __future__ import annotations

import html
import io

import ipywidgets as widgets
import numpy as np
from IPython.display import display

from . import plots
from .data import drifting_batches
from .reference import batchnorm_forward, batchnorm_backward, running_average

__all__ = ["ForwardPlayground", "GradientCoupling", "MomentumExplorer", "base_sample", "ramp_lag"]


class Explorer:
    """A figure, its controls and a text readout; redraws on every control change."""

    DPI = 80  # what the inline backend uses; keeps a redraw fast

    def __init__(self, controls: dict, fig, axes):
        self.controls = controls
        self.fig, self.axes = fig, axes
        self.image = widgets.Image(format="png")
        self.readout = widgets.HTML()
        self.redraws = 0
        for control in controls.values():
            # sliders fire on release only where a redraw is costly; ours take milliseconds
            control.observe(self._on_change, names="value")
        self.widget = widgets.VBox([
            widgets.HBox(list(controls.values())[:3], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox(list(controls.values())[3:], layout=widgets.Layout(flex_flow="row wrap")),
            self.image,
            self.readout,
        ])
        self.update()

    @property
    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def _on_change(self, _change) -> None:
        self.update()

    def update(self) -> None:
        self.readout.value = self.draw(**self.values)
        self.redraws += 1
        buffer = io.BytesIO()
        self.fig.savefig(buffer, format="png", dpi=self.DPI)
        self.image.value = buffer.getvalue()

    def snapshot(self) -> None:
        """Show the current figure as a plain image, which a static web page can display (widgets it cannot)."""
        display(self.fig)

    def draw(self, **values) -> str:  # pragma: no cover - each explorer defines it
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _table(rows: dict, header: tuple) -> str:
    head = "".join(f"<th style='padding:0 10px'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr><td style='padding:0 10px'>" + html.escape(name) + "</td>"
        + "".join(f"<td style='padding:0 10px; text-align:right'>{v}</td>" for v in values) + "</tr>"
        for name, values in rows.items())
    return f"<table><tr>{head}</tr>{body}</table>"


# ----------------------------------------------------------------------------- lesson 01
def base_sample(shape: str, n: int = 512, seed: int = 0) -> np.ndarray:
    """n standardized values (mean 0, std 1) of a given shape: 'normal', 'skewed' or 'bimodal'."""
    rng = np.random.default_rng(seed)
    if shape == "normal":
        z = rng.normal(size=n)
    elif shape == "skewed":
        z = rng.exponential(size=n)
    elif shape == "bimodal":
        z = np.where(rng.random(n) < 0.5, -2.0, 2.0) + 0.5 * rng.normal(size=n)
    else:
        raise ValueError(f"shape must be 'normal', 'skewed' or 'bimodal', got {shape!r}")
    return (z - z.mean()) / z.std()


class ForwardPlayground(Explorer):
    """One feature x = mean + scale * z over a batch, through BN: before/after histograms and statistics.

    z is a fixed sample (chosen shape), so moving a slider only rescales recorded numbers.
    """

    def __init__(self, seed: int = 0):
        self.samples = {s: base_sample(s, 512, seed) for s in ("normal", "skewed", "bimodal")}
        style = {"description_width": "70px"}
        slider = dict(continuous_update=True, style=style, layout=widgets.Layout(width="300px"))
        controls = {
            "mean": widgets.FloatSlider(value=5.0, min=-50, max=50, step=0.5, description="input mean", **slider),
            "scale": widgets.FloatLogSlider(value=3.0, base=10, min=-3, max=2, step=0.05, description="input std", **slider),
            "batch_size": widgets.IntSlider(value=64, min=2, max=512, description="batch size", **slider),
            "gamma": widgets.FloatSlider(value=1.0, min=-3, max=3, step=0.1, description="γ", **slider),
            "beta": widgets.FloatSlider(value=0.0, min=-3, max=3, step=0.1, description="β", **slider),
            "eps": widgets.FloatLogSlider(value=1e-5, base=10, min=-8, max=1, step=0.5, description="ε", **slider),
            "shape": widgets.Dropdown(options=list(self.samples), value="skewed", description="shape",
                                      style=style, layout=widgets.Layout(width="200px")),
        }
        fig, axes = plots.new_figure(2, pyplot=False)
        super().__init__(controls, fig, axes)

    def compute(self, mean, scale, batch_size, gamma, beta, eps, shape):
        """x (batch_size,) and BN's y, mu, var for the given settings."""
        x = mean + scale * self.samples[shape][:batch_size]
        y, cache = batchnorm_forward(x[:, None], np.array([gamma]), np.array([beta]),
                                     {"mode": "train", "eps": eps})
        return x, y[:, 0], float(x.mean()), float(cache["var"].item())

    def draw(self, **v) -> str:
        x, y, mu, var = self.compute(**v)
        plots.plot_before_after(x, y, self.axes,
                                title=f"BN output: mean β = {v['beta']:.2f}, std ≈ |γ| = {abs(v['gamma']):.2f}")
        gain = 1 / np.sqrt(var + v["eps"])
        rows = {
            "input x": (f"{x.mean():.3f}", f"{x.std():.3f}", f"{x.min():.3f}", f"{x.max():.3f}"),
            "output y": (f"{y.mean():.3f}", f"{y.std():.3f}", f"{y.min():.3f}", f"{y.max():.3f}"),
        }
        return (_table(rows, ("", "mean", "std", "min", "max"))
                + f"<p>batch statistics: μ = {mu:.3f}, σ² = {var:.4g}; gain 1/√(σ²+ε) = {gain:.4g}"
                + (" &nbsp;<b>ε dominates σ²: the output std is below |γ|</b>" if v["eps"] > var / 10 else "")
                + "</p>")


# ----------------------------------------------------------------------------- lesson 02
class GradientCoupling(Explorer):
    """dL/dx per sample for one feature, with BN (training) and with BN's eval-mode affine map.

    The upstream gradient pattern is chosen from a menu; x is a fixed recorded batch.
    """

    PATTERNS = ("only sample 0", "constant", "proportional to x_hat", "random")
    LABELS = {"plain": "statistics held fixed (eval mode)", "bn": "batch statistics (training mode)"}

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.x = 2.0 + 1.5 * rng.normal(size=64)
        self.noise = rng.normal(size=64)
        style = {"description_width": "90px"}
        controls = {
            "batch_size": widgets.IntSlider(value=8, min=2, max=32, description="batch size", style=style),
            "pattern": widgets.Dropdown(options=self.PATTERNS, value="only sample 0",
                                        description="upstream dL/dy", style=style),
            "gamma": widgets.FloatSlider(value=1.0, min=0.1, max=3, step=0.1, description="γ", style=style),
        }
        fig, axes = plots.new_figure(1, width=7, pyplot=False)
        super().__init__(controls, fig, axes)

    def compute(self, batch_size, pattern, gamma):
        """(dx with BN in training, dx in eval mode, x_hat) for the chosen upstream gradient."""
        x = self.x[:batch_size, None]
        g, b = np.array([gamma]), np.array([0.0])
        _, cache = batchnorm_forward(x, g, b, {"mode": "train"})
        x_hat = cache["x_hat"]
        dout = {"only sample 0": np.eye(batch_size)[0][:, None],
                "constant": np.ones_like(x),
                "proportional to x_hat": x_hat.copy(),
                "random": self.noise[:batch_size, None]}[pattern]
        dx_train = batchnorm_backward(dout, cache)[0]
        # eval mode with the batch's own statistics as "running" ones: same x_hat, constant stats
        _, eval_cache = batchnorm_forward(x, g, b, {"mode": "eval", "running_mean": x.mean(0),
                                                     "running_var": x.var(0)})
        dx_eval = batchnorm_backward(dout, eval_cache)[0]
        return dx_train[:, 0], dx_eval[:, 0], x_hat[:, 0]

    def draw(self, **v) -> str:
        dx_bn, dx_fixed, x_hat = self.compute(**v)
        plots.plot_sample_gradients({"plain": dx_fixed, "bn": dx_bn}, self.axes[0],
                                    title="BN (training) couples the samples: its gradients sum to zero",
                                    labels=self.LABELS)
        return (f"<p>with batch statistics: Σ dx = {dx_bn.sum():+.2e}, Σ dx·x̂ = {(dx_bn * x_hat).sum():+.2e}"
                f" &nbsp;|&nbsp; statistics fixed: Σ dx = {dx_fixed.sum():+.3f}</p>")


# ----------------------------------------------------------------------------- lesson 03
def ramp_lag(true_mean, running_mean, last: int = 100) -> float:
    """How far the running mean trails the true mean, averaged over the last steps (noise averages out)."""
    return float(np.mean(np.asarray(true_mean)[-last:] - np.asarray(running_mean)[-last:]))


class MomentumExplorer(Explorer):
    """Running mean of a drifting feature for a chosen momentum (PyTorch convention)."""

    def __init__(self, steps: int = 400, batch_size: int = 32, drift: float = 0.02, seed: int = 0):
        self.recorded = {kind: drifting_batches(steps, batch_size, drift, kind, seed=seed)
                         for kind in ("ramp", "sine", "step")}
        self.true_mean = {kind: drifting_batches(steps, batch_size, drift, kind, noise=0.0).mean(1)
                          for kind in self.recorded}
        self.drift = drift
        style = {"description_width": "90px"}
        controls = {
            "momentum": widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0, step=0.1,
                                               description="momentum", style=style),
            "kind": widgets.Dropdown(options=list(self.recorded), value="ramp",
                                     description="drift", style=style),
        }
        fig, axes = plots.new_figure(1, width=7, pyplot=False)
        super().__init__(controls, fig, axes)

    def compute(self, momentum, kind):
        """(batch means, running mean, true mean) over the recorded steps."""
        batch_means = self.recorded[kind].mean(1)
        return batch_means, running_average(batch_means, momentum), self.true_mean[kind]

    def draw(self, momentum, kind) -> str:
        batch_means, running, true = self.compute(momentum, kind)
        plots.plot_running_mean(batch_means, {momentum: running}, true, self.axes[0])
        lag = ramp_lag(true, running)
        text = (f"<p>momentum {momentum:.3g} (Keras momentum {1 - momentum:.3g}): averages over about "
                f"{1 / momentum:.0f} batches; over the last 100 steps the running mean is on average "
                f"{lag:+.3f} behind the true mean")
        if kind == "ramp":
            text += f" (theory for a ramp: drift·(1−m)/m = {self.drift * (1 - momentum) / momentum:.3f})"
        return text + "</p>"
