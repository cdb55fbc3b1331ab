"""The small networks of the lessons, with the normalization layer and the initialization as switches.

``norm='bn'`` puts bnlab's from-scratch BatchNorm between each linear map and its nonlinearity
(as Ioffe & Szegedy do); ``norm='torch_bn'`` uses torch's, ``norm=None`` none at all.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import BatchNorm1d

__all__ = ["mlp", "initialize", "NORMS", "ACTIVATIONS", "INITS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
NORMS = {None: None, "bn": BatchNorm1d, "torch_bn": nn.BatchNorm1d}
# std of W[i, j] for fan_in inputs: He (Kaiming) keeps E[x^2] through ReLU, LeCun keeps Var for tanh-like units
INITS = {"he": lambda fan_in: math.sqrt(2.0 / fan_in), "lecun": lambda fan_in: math.sqrt(1.0 / fan_in)}


def initialize(model: nn.Module, init: str | float | None, gain: float = 1.0) -> nn.Module:
    """Re-initialize every nn.Linear of model in place, and return it.

    init=None keeps torch's default (uniform, std = 1/sqrt(3 fan_in)); 'he': W ~ N(0, 2/fan_in);
    'lecun': W ~ N(0, 1/fan_in); a number s: W ~ N(0, s^2) whatever the fan-in (Ioffe & Szegedy's
    "small random Gaussian values"). gain multiplies the std. Biases are set to 0 unless init is None.
    Draws from torch's global generator: seed it first.
    """
    if isinstance(init, bool) or (init is not None and not isinstance(init, (int, float)) and init not in INITS):
        raise ValueError(f"init must be None, a std (number) or one of {sorted(INITS)}, got {init!r}")
    if isinstance(init, (int, float)) and not init > 0:
        raise ValueError(f"an init std must be > 0, got {init}")
    if not gain > 0:
        raise ValueError(f"gain must be > 0, got {gain}")
    for module in model.modules():
        if not isinstance(module, nn.Linear):
            continue
        with torch.no_grad():
            if init is None:
                module.weight.mul_(gain)
                continue
            std = float(init) if isinstance(init, (int, float)) else INITS[init](module.in_features)
            module.weight.normal_(0.0, gain * std)
            if module.bias is not None:
                module.bias.zero_()
    return model


def mlp(in_features: int, hidden: tuple[int, ...], out_features: int, norm: str | None = "bn",
        activation: str = "relu", init: str | float | None = None, gain: float = 1.0) -> nn.Sequential:
    """Linear -> [norm] -> activation for each hidden width, then a final Linear (logits).

    With a norm layer the linear bias is dropped: BN subtracts the mean, so a bias before it does
    nothing, and beta takes its place. init and gain are passed to `initialize`.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {sorted(map(str, NORMS))}, got {norm!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {hidden}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=norm is None))
        if norm is not None:
            layers.append(NORMS[norm](h))
        layers.append(ACTIVATIONS[activation]())
        width = h
    layers.append(nn.Linear(width, out_features))
    return initialize(nn.Sequential(*layers), init, gain)
