"""Folding BN into the layer before it: what BN costs at inference once training is over (lesson 06).

In eval mode BN is a fixed affine map per channel, and a conv or linear layer z = W x + b is
affine too, so the two compose into one layer with new weights:

    scale = gamma / sqrt(running_var + eps)                  (one number per output channel)
    W' = scale * W   (each output channel's filter),   b' = scale * (b - running_mean) + beta

(b = 0 for a layer without bias; gamma = 1, beta = 0 without affine). ``fold_batchnorm`` does this
for every BN that directly follows a conv or linear layer inside an nn.Sequential and replaces the
BN by nn.Identity, on a deep copy in eval mode; the original model is left alone.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from .layers import BATCHNORM_TYPES, is_batchnorm

__all__ = ["fold_batchnorm", "count_batchnorms", "FoldReport", "FOLDABLE_NORMS", "FOLD_TARGETS"]

# Layers whose eval mode is y = weight * (x - running_mean) / sqrt(running_var + eps) + bias: every
# BN layer (bnlab.layers.is_batchnorm); kept under this name for old imports
FOLDABLE_NORMS = BATCHNORM_TYPES
# Layers a BN after them can be folded into: one output channel per BN channel
FOLD_TARGETS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass
class FoldReport:
    """What fold_batchnorm did. Names are those of model.named_modules()."""

    folded: list[str] = field(default_factory=list)     # BN layers merged into the layer before them
    left: dict[str, str] = field(default_factory=dict)  # BN layers still there -> why

    def __str__(self) -> str:
        lines = [f"folded {len(self.folded)} BN layer(s), left {len(self.left)}"]
        lines += [f"  left {name}: {why}" for name, why in self.left.items()]
        return "\n".join(lines)


def count_batchnorms(model: nn.Module) -> int:
    """The number of BN layers (`bnlab.layers.is_batchnorm`) in model, each shared instance once."""
    return sum(is_batchnorm(m) for m in model.modules())


def _out_channels(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _why_not(layer: nn.Module, layer_name: str, norm: nn.Module, uses: Counter) -> str | None:
    """Why the pair cannot be folded, or None when it can."""
    if uses[id(layer)] > 1 or uses[id(norm)] > 1:
        # a shared layer also runs where no BN follows it, or a shared BN after another layer
        return f"{layer_name} or the BN is used more than once in the model"
    tensors = [layer.weight, layer.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var]
    if any(t is not None and nn.parameter.is_lazy(t) for t in tensors):
        return "a lazy layer that has not seen an input yet"
    if parametrize.is_parametrized(layer) or layer._forward_pre_hooks:
        # e.g. weight_norm: the weight is recomputed at every call, so a folded one would not last
        return f"{layer_name}'s weight is computed at call time (a parametrization or a pre-hook)"
    if norm.num_features != _out_channels(layer):
        return (f"has {norm.num_features} features but {layer_name} has {_out_channels(layer)} "
                "output channels")
    return None


def _fold_pair(layer: nn.Module, norm: nn.Module) -> None:
    """Merge norm's eval-mode affine map into layer's weight and bias, in place."""
    weight = layer.weight
    # in float64, then back: the product of two roundings stays at one float32 rounding
    options = {"dtype": torch.float64, "device": weight.device}
    out = _out_channels(layer)
    gamma = norm.weight.detach().to(**options) if norm.weight is not None else torch.ones(out, **options)
    beta = norm.bias.detach().to(**options) if norm.bias is not None else torch.zeros(out, **options)
    bias = layer.bias.detach().to(**options) if layer.bias is not None else torch.zeros(out, **options)
    scale = gamma / torch.sqrt(norm.running_var.detach().to(**options) + norm.eps)
    w = weight.detach().to(**options)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        # weight is (in, out / groups, *kernel): output channel g * out/groups + j is column j of
        # group g's rows
        groups = layer.groups
        grouped = w.reshape(groups, w.shape[0] // groups, w.shape[1], *w.shape[2:])
        w = (grouped * scale.reshape(groups, 1, out // groups, *[1] * (w.dim() - 2))).reshape(w.shape)
    else:
        # (out, in / groups, *kernel) or (out, in): dim 0 is the output channel, groups or not
        w = w * scale.reshape(out, *[1] * (w.dim() - 1))
    new_bias = scale * (bias - norm.running_mean.detach().to(**options)) + beta
    with torch.no_grad():
        weight.copy_(w.to(weight.dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias.to(weight.dtype), requires_grad=weight.requires_grad)
        else:
            layer.bias.copy_(new_bias.to(layer.bias.dtype))


def fold_batchnorm(model: nn.Module, return_report: bool = False):
    """A deep copy of model, in eval mode, with each BN folded into the conv/linear layer before it.

    Folded: a BN layer (torch's BatchNorm1d/2d/3d, bnlab's BatchNorm*, BatchRenorm*,
    RangeBatchNorm*) that directly follows an nn.Linear, nn.Conv1d/2d/3d (any groups) or
    nn.ConvTranspose1d/2d/3d (any groups) in an nn.Sequential, at any depth. The layer gets
        W' = W * gamma / sqrt(running_var + eps)   per output channel
        b' = (b - running_mean) * gamma / sqrt(running_var + eps) + beta
    and the BN becomes nn.Identity(). The copy computes what model.eval() computes.
    Left in place (and listed in the report): a BN after anything else (ReLU, pooling, a nested
    Sequential), outside a Sequential, where the layer or the BN is shared between places, or
    where the layer's weight is recomputed at each call (weight_norm, parametrizations).
    A Linear+BatchNorm1d pair is folded assuming (N, features) input, the case in which
    BatchNorm1d normalizes the Linear's outputs.

    Raises ValueError for a BN without running statistics (track_running_stats=False) after a
    conv/linear layer: in eval it normalizes with each batch's statistics, which are not constants.
    return_report=True returns (folded_model, FoldReport) instead of the model alone.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    folded_model = copy.deepcopy(model).eval()
    uses = Counter(id(m) for _, m in folded_model.named_modules(remove_duplicate=False))
    report = FoldReport()
    explained = set()  # ids of the BN layers already in report.left
    for prefix, parent in list(folded_model.named_modules()):
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for before, name in zip(names, names[1:]):
            layer, norm = parent._modules[before], parent._modules[name]
            if not is_batchnorm(norm) or not isinstance(layer, FOLD_TARGETS):
                continue
            full_name = f"{prefix}.{name}" if prefix else name
            layer_name = f"{prefix}.{before}" if prefix else before
            if norm.running_mean is None or norm.running_var is None:
                raise ValueError(
                    f"{full_name} ({type(norm).__name__}) has no running statistics "
                    "(track_running_stats=False): in eval it normalizes with each batch's own "
                    f"statistics, so it cannot be folded into {layer_name}")
            why = _why_not(layer, layer_name, norm, uses)
            if why is not None:
                report.left[full_name] = why
                explained.add(id(norm))
                continue
            _fold_pair(layer, norm)
            parent._modules[name] = nn.Identity().eval()
            report.folded.append(full_name)
    for name, module in folded_model.named_modules():
        if is_batchnorm(module) and id(module) not in explained:
            report.left[name] = "does not directly follow a conv or linear layer in an nn.Sequential"
    return (folded_model, report) if return_report else folded_model
