"""The networks of the lessons, with the normalization layer and the initialization as switches.

Every model takes ``norm``, one of `NORMS`: ``'bn'`` puts bnlab's from-scratch BatchNorm between
each linear map (or convolution) and its nonlinearity, as Ioffe & Szegedy do; ``'torch_bn'`` uses
torch's; ``'gn'``, ``'ln'``, ``'in'`` the batch-independent relatives (Wu & He 2018); ``'brn'`` Batch
Renormalization (Ioffe 2017) and ``'rbn'`` Range BN (Banner et al. 2018), ``'gbn'`` Ghost BN
(Hoffer et al. 2017, virtual batches of `bnlab.variants.VIRTUAL_BATCH_SIZE` = 16 examples) and
``'noisy'`` noisy BN (Santurkar et al. 2018), all from bnlab; ``None`` no normalization at all.
A linear map or convolution followed by a norm layer has no bias: the BN variants and InstanceNorm
subtract each channel's mean, which removes a per-channel bias exactly, and beta takes its place
(lesson 06); GroupNorm and LayerNorm nets follow the same convention.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .variants import CHANNELS_PER_GROUP, NORM_REGISTRY, VIRTUAL_BATCH_SIZE, build_norm

__all__ = ["NORMS", "NORM_LABELS", "ACTIVATIONS", "INITS", "CHANNELS_PER_GROUP", "VIRTUAL_BATCH_SIZE", "norm_layer",
           "mlp", "initialize", "conv_net", "encoder_decoder"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
# the norm names and their long names, from the one registry of variants (bnlab.variants)
NORM_LABELS = {name: norm.title for name, norm in NORM_REGISTRY.items()}
NORMS = tuple(NORM_LABELS)
# std of W[i, j] for fan_in inputs: He (Kaiming) keeps E[x^2] through ReLU, LeCun keeps Var for tanh-like units
INITS = {"he": lambda fan_in: math.sqrt(2.0 / fan_in), "lecun": lambda fan_in: math.sqrt(1.0 / fan_in)}
INITIALIZED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_norm(norm) -> None:
    if norm not in NORM_LABELS:
        raise ValueError(f"norm must be one of {list(NORMS)}, got {norm!r}")


def norm_layer(norm: str | None, num_features: int, spatial: bool) -> nn.Module | None:
    """The layer that normalizes num_features channels (spatial=True: (N, C, H, W) input) or
    features (spatial=False: (N, C) input). Which values share one mean and variance:

        bn, torch_bn, brn, rbn, noisy: each channel over the batch (and all positions): N*H*W values
        gbn: each channel over a virtual batch of VIRTUAL_BATCH_SIZE = 16 examples: 16*H*W values
        gn: each group of CHANNELS_PER_GROUP channels of one example: 4*H*W values
        ln: all channels of one example: C*H*W values
        in: each channel of one example: H*W values (images only: a feature vector has H*W = 1)

    Returns None for norm=None. The layers are registered in `bnlab.variants.NORM_REGISTRY`.
    """
    _check_norm(norm)
    return build_norm(norm, num_features, spatial)


def initialize(model: nn.Module, init: str | float | None, gain: float = 1.0) -> nn.Module:
    """Re-initialize every nn.Linear and nn.Conv1d/2d/3d of model in place, and return it.

    init=None or 'default' keeps torch's default (uniform, std = 1/sqrt(3 fan_in)); 'he':
    W ~ N(0, 2/fan_in); 'lecun': W ~ N(0, 1/fan_in); a number s: W ~ N(0, s^2) whatever the fan-in
    (Ioffe & Szegedy's "small random Gaussian values"). fan_in is in_features for a linear layer and
    in_channels * kernel size for a convolution. gain multiplies the std. Biases are set to 0 unless
    the default is kept. Draws from torch's global generator: seed it first.
    """
    if isinstance(init, bool) or (init is not None and not isinstance(init, (int, float))
                                  and init not in (*INITS, "default")):
        raise ValueError(f"init must be None, 'default', a std (number) or one of {sorted(INITS)}, got {init!r}")
    if isinstance(init, (int, float)) and not init > 0:
        raise ValueError(f"an init std must be > 0, got {init}")
    if not gain > 0:
        raise ValueError(f"gain must be > 0, got {gain}")
    for module in model.modules():
        if not isinstance(module, INITIALIZED):
            continue
        with torch.no_grad():
            if init is None or init == "default":
                module.weight.mul_(gain)
                continue
            fan_in = module.weight[0].numel()   # in_features, or in_channels * kernel positions
            std = float(init) if isinstance(init, (int, float)) else INITS[init](fan_in)
            module.weight.normal_(0.0, gain * std)
            if module.bias is not None:
                module.bias.zero_()
    return model


def _linear_block(in_features: int, out_features: int, norm, activation: str) -> list[nn.Module]:
    block = [nn.Linear(in_features, out_features, bias=norm is None)]
    if norm is not None:
        block.append(norm_layer(norm, out_features, spatial=False))
    return block + [ACTIVATIONS[activation]()]


def mlp(in_features: int, hidden: tuple[int, ...], out_features: int, norm: str | None = "bn",
        activation: str = "relu", init: str | float | None = None, gain: float = 1.0) -> nn.Sequential:
    """Linear -> [norm] -> activation for each hidden width, then a final Linear (logits).

    init and gain are passed to `initialize`.
    """
    _check_norm(norm)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {hidden}")
    layers_: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers_ += _linear_block(width, h, norm, activation)
        width = h
    layers_.append(nn.Linear(width, out_features))
    return initialize(nn.Sequential(*layers_), init, gain)


def conv_block(in_channels: int, out_channels: int, norm: str | None, conv_bias: bool | None = None) -> nn.Sequential:
    """Conv 3x3 (padding 1, size kept) -> [norm] -> ReLU. The conv has a bias only without a norm,
    unless conv_bias says otherwise (lesson 06 puts one back to show that it is redundant)."""
    bias = norm is None if conv_bias is None else conv_bias
    block: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)]
    if norm is not None:
        block.append(norm_layer(norm, out_channels, spatial=True))
    return nn.Sequential(*block, nn.ReLU())


def conv_net(in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (16, 32),
             norm: str | None = "bn", hidden: int | None = None, head_norm: str | None = "same",
             image_size: int = 8, conv_bias: bool | None = None, init: str | float | None = None) -> nn.Sequential:
    """A small image classifier: conv blocks, one 2x2 max-pool, then a linear head.

        [conv3x3 -> norm -> ReLU] for each width -> maxpool 2 -> flatten
        -> [Linear(hidden) -> head_norm -> ReLU]   (only with hidden)
        -> Linear(num_classes)

    x: (N, in_channels, image_size, image_size) -> logits (N, num_classes). head_norm='same' uses
    norm in the head too ('in' has no per-example statistics of a single value: pass head_norm).
    init: see `initialize` (None: torch's default; 'he' is the fair init for a ReLU net without BN).
    """
    _check_norm(norm)
    if head_norm == "same":
        head_norm = norm
    _check_norm(head_norm)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"widths must be a non-empty tuple of positive channel counts, got {widths}")
    if image_size < 2 or image_size % 2:
        raise ValueError(f"image_size must be even and >= 2 (one 2x2 pooling), got {image_size}")
    blocks: list[nn.Module] = []
    channels = in_channels
    for width in widths:
        blocks.append(conv_block(channels, width, norm, conv_bias))
        channels = width
    blocks += [nn.MaxPool2d(2), nn.Flatten()]
    features = channels * (image_size // 2) ** 2
    if hidden is not None:
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        blocks.append(nn.Sequential(*_linear_block(features, hidden, head_norm, "relu")))
        features = hidden
    blocks.append(nn.Linear(features, num_classes))
    return initialize(nn.Sequential(*blocks), init)


class EncoderDecoder(nn.Module):
    """A small U-Net: each encoder stage halves the image and widens the channels, each decoder stage
    doubles it back and sees the encoder's features of the same size (a skip connection).

        enc_i = conv_block(conv_block(.))          at size / 2^i,  widths[i] channels
        dec_i = conv_block(conv_block(cat(up(dec_{i+1}), enc_i)))
        logits = conv 1x1 (dec_0)                  (N, num_classes, H, W)
    """

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...], norm: str | None,
                 skip: bool = True):
        super().__init__()
        self.skip = skip

        def stage(cin, cout):
            return nn.Sequential(conv_block(cin, cout, norm), conv_block(cout, cout, norm))

        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(stage(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.ups.append(nn.Upsample(scale_factor=2, mode="nearest"))
            self.decoders.append(stage(channels + (width if skip else 0), width))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        if x.shape[-2] % self.downsampling or size % self.downsampling:
            raise ValueError(f"image sides must be divisible by {self.downsampling}, got shape {tuple(x.shape)}")
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, decoder, features in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = up(x)
            x = decoder(torch.cat([x, features], dim=1) if self.skip else x)
        return self.head(x)

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.encoders) - 1)


def encoder_decoder(in_channels: int = 1, num_classes: int = 4, widths: tuple[int, ...] = (16, 32, 64),
                    norm: str | None = "bn", skip: bool = True, init: str | float | None = None) -> EncoderDecoder:
    """An encoder-decoder for segmentation, (N, in_channels, H, W) -> logits (N, num_classes, H, W);
    H and W divisible by 2^(len(widths) - 1). See `EncoderDecoder`; init: see `initialize`."""
    _check_norm(norm)
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(f"widths needs at least two positive channel counts (one per stage), got {widths}")
    return initialize(EncoderDecoder(in_channels, num_classes, tuple(widths), norm, skip), init)
