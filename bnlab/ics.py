"""Internal covariate shift, measured as Santurkar et al. (2018) define it (lesson 09).

Ioffe & Szegedy (2015) motivate BN by internal covariate shift: each layer's input distribution
moves whenever the layers below it update, so the layer chases a moving target. Santurkar et al.,
"How does batch normalization help optimization?", Definition 2.1, make "moving target" a number:
how much a layer's gradient changes because the layers below it took their step,

    G_i  = grad_{W_i} L(W_1,     ..., W_{i-1},     W_i, ..., W_n; x, y)
    G'_i = grad_{W_i} L(W_1',    ..., W_{i-1}',    W_i, ..., W_n; x, y),    W_j' = W_j - lr * grad_{W_j} L
    ICS_i = || G_i - G'_i ||

on one batch (x, y). They find that BN networks do not have a smaller ICS in this sense, often a
larger one, although they train faster: the argument that BN works by removing ICS fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from .landscape import _check_lr, _mode, _norm, _Objective

__all__ = ["ICS_LAYERS", "CovariateShift", "internal_covariate_shift"]

# the layers whose weight gradient is measured; everything else (biases, norms) only moves with its layer
ICS_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class CovariateShift:
    """Per measured layer (in `layers`' order): ics = ||G - G'||, relative = ||G - G'|| / ||G||
    (NaN where G = 0), cosine = cos(G, G') (NaN where either is 0), grad_norm = ||G||. See
    `internal_covariate_shift`."""

    layers: list[str]
    ics: np.ndarray
    relative: np.ndarray
    cosine: np.ndarray
    grad_norm: np.ndarray


def internal_covariate_shift(model: nn.Module, loss_fn: Callable, batch, lr: float,
                             train: bool = True) -> CovariateShift:
    """Santurkar et al.'s ICS of every nn.Linear and nn.Conv1d/2d/3d of model, on batch = (x, y).

    For layer i with weight W_i: G_i = dL/dW_i at the current parameters theta, and G'_i = dL/dW_i
    after every parameter that comes before W_i has taken a plain SGD step theta_j - lr * dL/dtheta_j
    on the same batch, all the others (W_i, its bias, and everything above) unchanged. "Before" is
    the order of model.parameters(), which is the order of computation in an nn.Sequential and in
    bnlab.models' networks; so the parameters below layer i include the lower layers' biases and
    their BN gammas and betas. L(theta) = loss_fn(model(x), y). The first layer has nothing below
    it: G'_1 = G_1 and its ICS is 0 (unless the model has parameters before it, e.g. an input BN).

    Returns a `CovariateShift`. One forward/backward per layer plus one; train: as in
    `bnlab.landscape.loss_along_gradient`. The model comes back unchanged (parameters, .grad,
    buffers and modes).
    """
    lr = _check_lr(lr)
    objective = _Objective(model, loss_fn, batch)
    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, ICS_LAYERS) and module.weight.requires_grad]
    if not layers:
        raise ValueError("the model has no nn.Linear or nn.ConvNd layer with a trainable weight")
    ics, relative, cosine, grad_norm = [], [], [], []
    with _mode(model, train):
        _, g, _ = objective.gradient(objective.theta)
        g = [t.detach() for t in g]
        for _, module in layers:
            w = objective.index[id(module.weight)]
            if w == 0:
                g_shifted = g[w]
            else:
                point = [p - lr * d if j < w else p for j, (p, d) in enumerate(zip(objective.theta, g))]
                g_shifted = objective.gradient(point)[1][w].detach()
            before, after = g[w], g_shifted
            change, size, size_after = _norm([before - after]), _norm([before]), _norm([after])
            ics.append(change)
            grad_norm.append(size)
            relative.append(change / size if size > 0 else np.nan)
            dot = float((before.double() * after.double()).sum())
            # clipped: |cos| can round to just above 1 (G' = G gives 1 + 2e-16)
            cosine.append(float(np.clip(dot / (size * size_after), -1.0, 1.0)) if size > 0 and size_after > 0
                          else np.nan)
    return CovariateShift(layers=[name for name, _ in layers], ics=np.array(ics), relative=np.array(relative),
                          cosine=np.array(cosine), grad_norm=np.array(grad_norm))
