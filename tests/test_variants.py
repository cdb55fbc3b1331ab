"""bnlab.variants: one registry from which models, plots and widgets take a variant's layer, colour
and label. Expected colours are the course's fixed ones, written out here."""

import pytest
import torch
from torch import nn

from bnlab import layers, models, plots, variants

# the course's colours, as the lessons' prose names them (grey without BN, blue BN, green GroupNorm ...)
COURSE_COLOURS = {"plain": "#7f7f7f", "bn": "#1f77b4", "ln": "#9467bd", "gn": "#2ca02c", "mistake": "#d62728",
                  "running": "#ff7f0e", "in": "#8c564b", "brn": "#17becf", "rbn": "#e377c2", "frozen": "#bcbd22",
                  "plain_he": "#3a3a3a", "gbn": "#000080", "noisy": "#b8860b", "rms": "#556b2f"}


def test_every_variant_has_its_course_colour_and_a_label():
    assert {k: v.color for k, v in variants.VARIANTS.items()} == COURSE_COLOURS
    assert all(v.label for v in variants.VARIANTS.values())
    assert len({v.color for v in variants.VARIANTS.values()}) == len(variants.VARIANTS)  # one colour each


def _lab(hex_colour: str) -> torch.Tensor:
    """CIELAB (D65) of an sRGB colour, from the sRGB and CIE definitions."""
    rgb = torch.tensor([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)], dtype=torch.float64)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = torch.tensor([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]],
                       dtype=torch.float64) @ linear / torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
    f = torch.where(xyz > 216 / 24389, xyz ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    return torch.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_colours_are_far_apart():
    """Every two variants' colours differ by a CIELAB distance of at least 25 (the closest pair,
    layer norm's purple and range BN's pink, is 27.7 apart), so no two curves look alike."""
    labs = {key: _lab(v.color) for key, v in variants.VARIANTS.items()}
    keys = list(labs)
    closest = min((float((labs[a] - labs[b]).norm()), a, b) for i, a in enumerate(keys) for b in keys[i + 1:])
    assert closest[0] >= 25, closest


def test_models_and_plots_read_the_registry():
    assert plots.COLORS == COURSE_COLOURS
    assert plots.LABELS == {k: v.label for k, v in variants.VARIANTS.items()}
    assert plots.NORM_KEYS == {None: "plain", "bn": "bn", "torch_bn": "bn", "gn": "gn", "ln": "ln", "in": "in",
                               "brn": "brn", "rbn": "rbn", "gbn": "gbn", "noisy": "noisy",
                               "noisy_tv": "noisy", "rms": "rms"}
    assert models.NORMS == tuple(variants.NORM_REGISTRY) and models.NORM_LABELS[None] == "no normalization"
    assert models.CHANNELS_PER_GROUP == variants.CHANNELS_PER_GROUP == 4


@pytest.mark.parametrize("name, key", [(None, "plain"), ("torch_bn", "bn"), ("bn", "bn"), ("plain", "plain"),
                                       ("mistake", "mistake"), ("gn", "gn")])
def test_norm_names_and_variant_keys_share_colour_and_label(name, key):
    assert variants.variant_key(name) == key
    assert variants.color(name) == COURSE_COLOURS[key] and variants.label(name) == variants.VARIANTS[key].label


@pytest.mark.parametrize("bad", ["BN", "", 3, ["bn"]])
def test_unknown_names_are_refused_or_fall_back(bad):
    with pytest.raises(ValueError, match="unknown variant"):
        variants.variant_key(bad)
    assert variants.color(bad) == "k" and variants.color(bad, default="#000001") == "#000001"


@pytest.mark.parametrize("text, expected", [("bn, relu", ("bn", "relu")), ("plain", ("plain", "")),
                                            ("torch_bn,lr 0.1, seed 2", ("bn", "lr 0.1, seed 2")),
                                            ("my run, x", (None, "x"))])
def test_split_label(text, expected):
    assert variants.split_label(text) == expected


def test_build_norm_builds_each_norms_layer():
    assert variants.build_norm(None, 8, True) is None
    assert type(variants.build_norm("bn", 8, False)) is layers.BatchNorm1d
    assert type(variants.build_norm("torch_bn", 8, True)) is nn.BatchNorm2d
    assert type(variants.build_norm("rbn", 8, True)) is layers.RangeBatchNorm2d
    ghost = variants.build_norm("gbn", 8, False)
    assert type(ghost) is layers.GhostBatchNorm1d and ghost.virtual_batch_size == variants.VIRTUAL_BATCH_SIZE == 16
    assert type(variants.build_norm("noisy", 8, True)) is layers.NoisyBatchNorm2d
    time_varying = variants.build_norm("noisy_tv", 8, False)
    assert type(time_varying) is layers.NoisyBatchNorm1d and time_varying.noise == "time_varying"
    group = variants.build_norm("gn", 8, True)
    assert isinstance(group, nn.GroupNorm) and group.num_groups == 2
    x = torch.randn(3, 8, 4, 4)
    # models.norm_layer is the registry's factory
    assert type(models.norm_layer("brn", 8, True)) is type(variants.build_norm("brn", 8, True))
    assert models.norm_layer("ln", 8, True)(x).shape == x.shape
    with pytest.raises(ValueError, match="norm must be one of"):
        variants.build_norm("batchnorm", 8, True)
    with pytest.raises(ValueError, match="InstanceNorm"):
        variants.build_norm("in", 8, False)
