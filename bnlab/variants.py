"""The one registry of the course's variants: for every normalization (and for the few non-norm
variants the plots compare: a wrong formula, running statistics, frozen statistics) its colour, its
label and, for a norm, the layer that `bnlab.models` builds. `models`, `plots` and `widgets` read it
from here, so a variant looks the same and means the same in every lesson.

Two kinds of names: a *norm name* is what the models take (``None``, ``'bn'``, ``'torch_bn'``, ...);
a *variant key* is what a plot colours by (``'plain'``, ``'bn'``, ...). Our BN and torch's are two
norm names of one variant: same colour, same label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

__all__ = ["Variant", "Norm", "VARIANTS", "NORM_REGISTRY", "CHANNELS_PER_GROUP", "VIRTUAL_BATCH_SIZE", "variant_key",
           "color", "label", "build_norm", "split_label"]

# Wu & He use 32 groups of ResNet's 64+ channels; the lessons' nets have 16-64, so 4 channels a group
CHANNELS_PER_GROUP = 4
# ghost BN's examples per virtual batch in the models: Hoffer et al. use ghost batches of 128 in
# large batches; the lessons train with batches of 64-256, where 16 gives 4-16 ghost batches
VIRTUAL_BATCH_SIZE = 16


@dataclass(frozen=True)
class Variant:
    """How a plot shows one variant: its colour (the same in every lesson) and its legend label."""

    key: str
    color: str
    label: str


@dataclass(frozen=True)
class Norm:
    """A normalization a model can use: its name (the models' ``norm=`` argument), the variant it is
    drawn as, its long name, and build(num_features, spatial) -> the layer (None for no norm)."""

    name: str | None
    variant: str
    title: str
    build: Callable[[int, bool], nn.Module | None]


VARIANTS: dict[str, Variant] = {v.key: v for v in (
    Variant("plain", "#7f7f7f", "without BN"),              # grey
    Variant("plain_he", "#3a3a3a", "without BN, He init"),  # dark grey: the fair baseline (lessons 05-07)
    Variant("bn", "#1f77b4", "with BN"),                     # blue
    Variant("ln", "#9467bd", "layer norm"),                  # purple
    Variant("gn", "#2ca02c", "group norm"),                  # green
    Variant("mistake", "#d62728", "wrong formula"),          # red: a formula from an article that gets it wrong
    Variant("running", "#ff7f0e", "running statistics"),     # orange: inference-time statistics
    Variant("in", "#8c564b", "instance norm"),               # brown
    Variant("brn", "#17becf", "batch renorm"),               # cyan
    Variant("rbn", "#e377c2", "range BN"),                   # pink
    Variant("frozen", "#bcbd22", "BN, frozen statistics"),   # olive: fine-tuning with frozen statistics
    Variant("gbn", "#000080", "ghost BN"),                   # navy: BN on virtual batches (lessons 09-10)
    Variant("noisy", "#b8860b", "noisy BN"),                 # dark gold: BN, then a random scale and shift (09)
    Variant("rms", "#556b2f", "RMS norm"),                   # dark olive green: layer norm without the mean (11)
)}


# ----------------------------------------------------------------------------- the layers
def _batch_norm(one_d: str, two_d: str, module: str = "layers", **kwargs):
    """A factory for a BN-like layer: the 1d class for (N, C), the 2d class for (N, C, H, W), built
    with (num_features, **kwargs)."""

    def build(num_features: int, spatial: bool) -> nn.Module:
        if module == "torch":
            source = nn
        else:
            from . import layers as source  # imported on use: plots reads colours without the layers
        return getattr(source, two_d if spatial else one_d)(num_features, **kwargs)

    return build


def _group_norm(num_features: int, spatial: bool) -> nn.Module:
    if num_features > CHANNELS_PER_GROUP and num_features % CHANNELS_PER_GROUP:
        raise ValueError(f"GroupNorm needs num_features divisible into groups of {CHANNELS_PER_GROUP}, "
                         f"got {num_features}")
    return nn.GroupNorm(max(1, num_features // CHANNELS_PER_GROUP), num_features)


def _layer_norm(num_features: int, spatial: bool) -> nn.Module:
    # LayerNorm over (C, H, W) is GroupNorm with one group (Wu & He), with gamma, beta per channel
    return nn.GroupNorm(1, num_features)


def _rms_norm(num_features: int, spatial: bool) -> nn.Module:
    # RMS over (C, H, W) with gamma per channel, as 'ln' is GroupNorm(1, C); with beta, since the
    # models' layers before a norm have no bias (torch's RMSNorm has neither per channel nor beta)
    from .norms import RMSGroupNorm  # imported on use, as the BN layers

    return RMSGroupNorm(1, num_features)


def _instance_norm(num_features: int, spatial: bool) -> nn.Module:
    if not spatial:
        raise ValueError("InstanceNorm needs spatial positions: a feature vector has one value per "
                         "channel and example, nothing to average; use 'ln' for a fully connected layer")
    return nn.InstanceNorm2d(num_features, affine=True)


NORM_REGISTRY: dict[str | None, Norm] = {n.name: n for n in (
    Norm(None, "plain", "no normalization", lambda num_features, spatial: None),
    Norm("bn", "bn", "BatchNorm", _batch_norm("BatchNorm1d", "BatchNorm2d")),
    Norm("torch_bn", "bn", "BatchNorm (torch)", _batch_norm("BatchNorm1d", "BatchNorm2d", module="torch")),
    Norm("gn", "gn", "GroupNorm", _group_norm),
    Norm("ln", "ln", "LayerNorm", _layer_norm),
    Norm("in", "in", "InstanceNorm", _instance_norm),
    Norm("brn", "brn", "Batch Renorm", _batch_norm("BatchRenorm1d", "BatchRenorm2d")),
    Norm("rbn", "rbn", "Range BN", _batch_norm("RangeBatchNorm1d", "RangeBatchNorm2d")),
    Norm("gbn", "gbn", "Ghost BN", _batch_norm("GhostBatchNorm1d", "GhostBatchNorm2d",
                                               virtual_batch_size=VIRTUAL_BATCH_SIZE)),
    # the global generator: torch.manual_seed makes a noisy run reproducible, as with dropout
    Norm("noisy", "noisy", "Noisy BN", _batch_norm("NoisyBatchNorm1d", "NoisyBatchNorm2d")),
    # the paper's appendix form (as we read it): gentler, i.i.d. per activation; drawn as noisy BN
    Norm("noisy_tv", "noisy", "Noisy BN (time-varying)",
         _batch_norm("NoisyBatchNorm1d", "NoisyBatchNorm2d", noise="time_varying")),
    Norm("rms", "rms", "RMSNorm", _rms_norm),
)}


# ----------------------------------------------------------------------------- look-ups
def _hashable(name) -> bool:
    try:
        hash(name)
    except TypeError:
        return False
    return True


def variant_key(name) -> str:
    """The variant key of a variant key ('plain', 'mistake', ...) or of a norm name (None -> 'plain',
    'torch_bn' -> 'bn'). Raises ValueError for anything else."""
    if _hashable(name) and name in VARIANTS:
        return name
    if not _hashable(name) or name not in NORM_REGISTRY:
        raise ValueError(f"unknown variant {name!r}: expected one of {list(VARIANTS)} "
                         f"or a norm name, one of {list(NORM_REGISTRY)}")
    return NORM_REGISTRY[name].variant


def color(name, default: str = "k") -> str:
    """The colour of a variant key or norm name; default for a name that is neither."""
    try:
        return VARIANTS[variant_key(name)].color
    except ValueError:
        return default


def label(name, default: str | None = None) -> str:
    """The legend label of a variant key or norm name; default (else str(name)) for anything else."""
    try:
        return VARIANTS[variant_key(name)].label
    except ValueError:
        return str(name) if default is None else default


def split_label(text: str) -> tuple[str | None, str]:
    """A plot label 'bn, relu' -> ('bn', 'relu'): the variant key of the text before the first comma
    (None if it is not a variant) and the rest, stripped ('' if there is none)."""
    head, _, rest = str(text).partition(",")
    try:
        key = variant_key(head.strip())
    except ValueError:
        key = None
    return key, rest.strip()


def build_norm(norm: str | None, num_features: int, spatial: bool) -> nn.Module | None:
    """The layer that the norm name stands for, over num_features channels: see
    `bnlab.models.norm_layer`, which calls this."""
    if not _hashable(norm) or norm not in NORM_REGISTRY:
        raise ValueError(f"norm must be one of {list(NORM_REGISTRY)}, got {norm!r}")
    return NORM_REGISTRY[norm].build(num_features, spatial)
