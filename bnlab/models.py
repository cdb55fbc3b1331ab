"""The small networks of the lessons, with the normalization layer as a switch.

``norm='bn'`` puts bnlab's from-scratch BatchNorm between each linear map and its nonlinearity
(as Ioffe & Szegedy do); ``norm='torch_bn'`` uses torch's, ``norm=None`` none at all.
"""

from __future__ import annotations

from torch import nn

from .layers import BatchNorm1d

__all__ = ["mlp", "NORMS", "ACTIVATIONS"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
NORMS = {None: None, "bn": BatchNorm1d, "torch_bn": nn.BatchNorm1d}


def mlp(in_features: int, hidden: tuple[int, ...], out_features: int, norm: str | None = "bn",
        activation: str = "relu") -> nn.Sequential:
    """Linear -> [norm] -> activation for each hidden width, then a final Linear (logits).

    With a norm layer the linear bias is dropped: BN subtracts the mean, so a bias before it does
    nothing, and beta takes its place.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {sorted(map(str, NORMS))}, got {norm!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h, bias=norm is None))
        if norm is not None:
            layers.append(NORMS[norm](h))
        layers.append(ACTIVATIONS[activation]())
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
