"""The lessons' experiments, configured as they were calibrated, so a notebook cell is one call.

Each function says which lesson it serves; the numbers in the defaults are the calibrated ones
(digits, 70/30 split, inputs / 16).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Split, digits
from .models import mlp
from .train import History, train_classifier

__all__ = ["FIG1", "ioffe_fig1", "deep_mlp", "weight_grad_norms", "growth_factor", "BN_RELU_GROWTH",
           "lr_sweep"]

# ----------------------------------------------------------------------------- lesson 04
# Ioffe & Szegedy (2015), Figure 1, at digits scale: 3 hidden layers of 100 sigmoids, "small random
# Gaussian" weights N(0, 0.1^2), plain SGD, batch 60.
FIG1 = dict(hidden=(100, 100, 100), activation="sigmoid", init=0.1, lr=0.5, batch_size=60, steps=3000)
FIG1_PROBE = dict(every=10, capture="input", units=100, hist_range=(-8.0, 8.0), bins=64)


def ioffe_fig1(norm: str | None, seed: int = 0, steps: int = FIG1["steps"], lr: float = FIG1["lr"],
               init: float | str | None = FIG1["init"], data: Split | None = None, eval_every: int = 10,
               probe_batch: int = 500, device=None, progress: bool = True) -> History:
    """Train the Figure 1 MLP (norm=None or 'bn' before each sigmoid) and record its sigmoid inputs.

    The probe records every 10 steps, on the same 500 training examples each time (training mode,
    so BN uses that batch's own statistics), the input of every sigmoid: layer 'hidden3' is the
    last layer. Model weights and minibatches are seeded with seed.
    """
    data = data if data is not None else digits()
    torch.manual_seed(seed)
    model = mlp(data.num_features, FIG1["hidden"], data.num_classes, norm=norm,
                activation=FIG1["activation"], init=init)
    return train_classifier(model, data, steps=steps, batch_size=FIG1["batch_size"], lr=lr,
                            eval_every=eval_every, seed=seed, device=device, progress=progress,
                            probe=FIG1_PROBE, probe_batch=probe_batch)


# ----------------------------------------------------------------------------- lesson 05
# Yang et al. (2019): in a deep BN-ReLU net at initialization the gradient grows by
# sqrt(pi / (pi - 1)) per layer going backwards, whatever the weights' scale.
BN_RELU_GROWTH = math.sqrt(math.pi / (math.pi - 1))


def deep_mlp(depth: int, width: int = 100, activation: str = "relu", norm: str | None = None,
             init: float | str | None = None, gain: float = 1.0, in_features: int = 64,
             out_features: int = 10) -> nn.Sequential:
    """depth hidden layers of the same width: Linear -> [BN] -> activation, then a Linear head."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return mlp(in_features, (width,) * depth, out_features, norm=norm, activation=activation, init=init, gain=gain)


def weight_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """||dL/dW_l|| for each hidden Linear l (the output layer excluded), from one cross-entropy
    forward/backward in training mode (BN uses the batch's statistics).

    Computed on a float64 copy of model: a vanishing gradient of 1e-40 is a number to look at, not
    an underflow to 0. model itself is not changed.
    """
    twin = copy.deepcopy(model).double().train()
    linears = [m for m in twin.modules() if isinstance(m, nn.Linear)][:-1]
    if not linears:
        raise ValueError("the model has no hidden nn.Linear layer")
    nn.functional.cross_entropy(twin(x.double()), y).backward()
    return np.array([m.weight.grad.norm().item() for m in linears])


def growth_factor(norms, skip: int = 5) -> float:
    """Average factor by which the gradient norm grows per layer going backwards (towards the input):
    exp of minus the mean slope of log(norms) over the layers, leaving out skip layers at each end
    where the input and the output layer disturb the pattern."""
    logs = np.log(np.asarray(norms, dtype=np.float64))
    if len(logs) < 2 * skip + 2:
        raise ValueError(f"need at least {2 * skip + 2} layers to leave out {skip} at each end, got {len(logs)}")
    middle = logs[skip:len(logs) - skip]
    return float(np.exp(-np.polyfit(np.arange(len(middle)), middle, 1)[0]))


def lr_sweep(lrs, norms=(None, "bn"), depth: int = 10, width: int = 100, activation: str = "relu",
             init: float | str | None = "he", steps: int = 300, batch_size: int = 60, seed: int = 0,
             data: Split | None = None, device=None, progress: bool = True) -> dict:
    """{(norm, lr): History} for deep MLPs trained with plain SGD at each learning rate (one progress
    bar over all runs)."""
    data = data if data is not None else digits()
    runs = {}
    for norm, lr in tqdm([(n, lr) for n in norms for lr in lrs], disable=not progress, desc="runs", leave=False):
        torch.manual_seed(seed)
        model = deep_mlp(depth, width, activation, norm, init, in_features=data.num_features,
                         out_features=data.num_classes)
        runs[(norm, lr)] = train_classifier(model, data, steps=steps, batch_size=batch_size, lr=lr,
                                            eval_every=max(1, steps // 10), seed=seed, device=device,
                                            progress=False)
    return runs
