"""bnlab.models: which values each norm layer shares statistics over, the conv classifier's and the
encoder-decoder's layouts and shapes, and their refusals. Expected values are computed here from
the definitions (mean and variance by hand, shapes from the architecture's arithmetic)."""

import numpy as np
import pytest
import torch
from torch import nn

from bnlab import layers, norms
from bnlab.models import NORMS, conv_net, encoder_decoder, mlp, norm_layer

EPS = 1e-5
BATCH_NORMS = ("bn", "torch_bn", "brn", "rbn", "gbn", "noisy", "noisy_tv")  # gbn: these batches fit one ghost batch


pytestmark = pytest.mark.usefixtures("one_thread")


def randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    # a mean and a scale far from 0 and 1, so a layer that skips a step shows it
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 3.0 + 2.0


def standardize(values: np.ndarray, axis) -> np.ndarray:
    """(v - mean) / sqrt(biased var + eps) over axis, in NumPy."""
    mean = values.mean(axis=axis, keepdims=True)
    var = ((values - mean) ** 2).mean(axis=axis, keepdims=True)
    return (values - mean) / np.sqrt(var + EPS)


# ----------------------------------------------------------------------------- norm_layer
EXPECTED_CLASSES = {
    # norm: (class for (N, C, H, W), class for (N, C))
    "bn": (layers.BatchNorm2d, layers.BatchNorm1d),
    "torch_bn": (nn.BatchNorm2d, nn.BatchNorm1d),
    "brn": (layers.BatchRenorm2d, layers.BatchRenorm1d),
    "rbn": (layers.RangeBatchNorm2d, layers.RangeBatchNorm1d),
    "gbn": (layers.GhostBatchNorm2d, layers.GhostBatchNorm1d),
    "noisy": (layers.NoisyBatchNorm2d, layers.NoisyBatchNorm1d),
    "noisy_tv": (layers.NoisyBatchNorm2d, layers.NoisyBatchNorm1d),
    "gn": (nn.GroupNorm, nn.GroupNorm),
    "ln": (nn.GroupNorm, nn.GroupNorm),
    "in": (nn.InstanceNorm2d, None),
    "rms": (norms.RMSGroupNorm, norms.RMSGroupNorm),
}


def test_norms_lists_every_variant_once():
    assert set(NORMS) == set(EXPECTED_CLASSES) | {None} and len(NORMS) == len(set(NORMS))


@pytest.mark.parametrize("norm, spatial", [(n, s) for n in NORMS if n is not None for s in (True, False)
                                           if EXPECTED_CLASSES[n][0 if s else 1] is not None])
def test_norm_layer_class_and_parameters(norm, spatial):
    expected = EXPECTED_CLASSES[norm][0 if spatial else 1]
    layer = norm_layer(norm, 8, spatial)
    assert type(layer) is expected
    # gamma and beta per channel, initialised to the identity map
    assert layer.weight.shape == (8,) and layer.bias.shape == (8,)
    assert torch.equal(layer.weight.detach(), torch.ones(8)) and torch.equal(layer.bias.detach(), torch.zeros(8))


def test_norm_layer_none_is_no_layer():
    assert norm_layer(None, 8, True) is None and norm_layer(None, 8, False) is None


def test_group_and_layer_norm_group_counts():
    assert norm_layer("gn", 16, True).num_groups == 16 // 4
    assert norm_layer("gn", 32, False).num_groups == 32 // 4
    assert norm_layer("ln", 16, True).num_groups == 1


def test_instance_norm_needs_spatial_positions():
    with pytest.raises(ValueError, match="InstanceNorm"):
        norm_layer("in", 8, spatial=False)


@pytest.mark.parametrize("bad", ["batch", "BN", "group", "", 0])
def test_norm_layer_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="norm must be one of"):
        norm_layer(bad, 8, True)


def sharing(norm, x, where):
    """Which outputs change when the single input x[where] changes (training mode, float64)."""
    def fresh():
        layer = norm_layer(norm, x.shape[1], spatial=x.dim() == 4).double().train()
        if norm == "brn":
            # Where r and d are not clipped, Batch Renorm gives (x - running_mean) / sigma: each value
            # on its own. Clipped to r = 1, d = 0 (its warm-up) it shows the batch statistics it uses.
            layer.r_max, layer.d_max = 1.0, 0.0
        if norm in ("noisy", "noisy_tv"):
            # the same draws of s and m for both passes: only the values' dependence is left
            layer.generator = torch.Generator().manual_seed(0)
        return layer

    bumped = x.clone()
    bumped[where] += 1.5
    with torch.no_grad():
        before, after = fresh()(x), fresh()(bumped)
    return (after - before).abs() > 1e-12


@pytest.mark.parametrize("norm", NORMS[1:])
def test_norm_layer_shares_statistics_over_the_documented_values_images(norm):
    """Bump one input value; exactly the outputs that share its mean/variance move.
    (N, C, H, W) = (3, 8, 4, 5), value at example 1, channel 5."""
    n, c, h, w = 3, 8, 4, 5
    changed = sharing(norm, randn(n, c, h, w), (1, 5, 2, 3))
    expected = torch.zeros(n, c, h, w, dtype=torch.bool)
    if norm in BATCH_NORMS:
        expected[:, 5] = True          # channel 5 of every example
    elif norm == "gn":
        expected[1, 4:8] = True        # channels 4..7 (the group of 4 holding channel 5) of example 1
    elif norm in ("ln", "rms"):
        expected[1] = True             # every channel of example 1
    elif norm == "in":
        expected[1, 5] = True          # channel 5 of example 1
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("norm", [n for n in NORMS[1:] if n != "in"])
def test_norm_layer_shares_statistics_over_the_documented_values_vectors(norm):
    n, c = 6, 8
    changed = sharing(norm, randn(n, c), (2, 1))
    expected = torch.zeros(n, c, dtype=torch.bool)
    if norm in BATCH_NORMS:
        expected[:, 1] = True          # feature 1 over the batch
    elif norm == "gn":
        expected[2, 0:4] = True        # features 0..3 of example 2
    elif norm in ("ln", "rms"):
        expected[2] = True             # all features of example 2
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("norm, axes", [
    ("bn", "channel over batch"), ("torch_bn", "channel over batch"),
    ("gn", "group of 4 channels of an example"), ("ln", "all of an example"), ("in", "channel of an example"),
])
def test_norm_layer_values_match_a_manual_standardization(norm, axes):
    x = randn(4, 8, 3, 3, seed=1)
    layer = norm_layer(norm, 8, spatial=True).double().train()
    with torch.no_grad():
        out = layer(x).numpy()
    v = x.numpy()
    if axes == "channel over batch":
        expected = standardize(v, axis=(0, 2, 3))
    elif axes == "group of 4 channels of an example":
        expected = standardize(v.reshape(4, 2, 4 * 9), axis=2).reshape(v.shape)
    elif axes == "all of an example":
        expected = standardize(v.reshape(4, -1), axis=1).reshape(v.shape)
    else:
        expected = standardize(v, axis=(2, 3))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


def test_group_norm_on_feature_vectors_matches_a_manual_standardization():
    x = randn(5, 12, seed=2)
    with torch.no_grad():
        out = norm_layer("gn", 12, spatial=False).double()(x).numpy()
    expected = standardize(x.numpy().reshape(5, 3, 4), axis=2).reshape(5, 12)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("channels", [6, 10])
def test_group_norm_refuses_channels_not_in_groups_of_four(channels):
    """The docstring promises groups of CHANNELS_PER_GROUP = 4 channels, and the error message says
    'num_features divisible into groups of 4'; 6 and 10 channels are not."""
    with pytest.raises(ValueError, match="GroupNorm"):
        norm_layer("gn", channels, spatial=True)


def test_group_norm_refuses_nine_channels():
    with pytest.raises(ValueError, match="GroupNorm"):
        norm_layer("gn", 9, spatial=True)


# ----------------------------------------------------------------------------- conv_net
@pytest.mark.parametrize("image_size, widths, in_channels, num_classes", [
    (8, (16, 32), 1, 10), (16, (4,), 3, 5), (28, (2, 4, 8), 1, 7), (2, (3,), 2, 2)])
def test_conv_net_output_shape(image_size, widths, in_channels, num_classes):
    torch.manual_seed(0)
    net = conv_net(in_channels, num_classes, widths, norm="bn", image_size=image_size)
    out = net(torch.randn(5, in_channels, image_size, image_size))
    assert out.shape == (5, num_classes)
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    # 3x3 convs with padding 1 keep the size; one 2x2 pool halves it
    assert head.in_features == widths[-1] * (image_size // 2) ** 2


@pytest.mark.parametrize("norm", NORMS)
def test_conv_net_has_conv_bias_only_without_a_norm(norm):
    net = conv_net(1, 10, (8, 16), norm=norm, image_size=8)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2
    for conv in convs:
        assert (conv.bias is not None) == (norm is None)
    norms = [m for m in net.modules() if type(m) is type(norm_layer(norm, 8, True))] if norm else []
    assert len(norms) == (2 if norm else 0)
    net.train()(torch.randn(4, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("norm, conv_bias", [("bn", True), ("gn", True), (None, False)])
def test_conv_net_conv_bias_overrides(norm, conv_bias):
    net = conv_net(1, 10, (8, 16), norm=norm, image_size=8, conv_bias=conv_bias)
    assert all((m.bias is not None) == conv_bias for m in net.modules() if isinstance(m, nn.Conv2d))


def head_block(net):
    """The hidden block: the nn.Sequential holding the first Linear."""
    return next(m for m in net if isinstance(m, nn.Sequential) and isinstance(m[0], nn.Linear))


@pytest.mark.parametrize("norm", ["bn", "torch_bn", "gn", "ln", "brn", "rbn"])
def test_conv_net_hidden_head_uses_the_same_norm_by_default(norm):
    net = conv_net(1, 10, (8,), norm=norm, hidden=16, image_size=8)
    block = head_block(net)
    assert block[0].in_features == 8 * 4 * 4 and block[0].out_features == 16 and block[0].bias is None
    assert type(block[1]) is EXPECTED_CLASSES[norm][1] and isinstance(block[2], nn.ReLU)
    assert net[-1].in_features == 16 and net[-1].out_features == 10
    assert net.train()(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_conv_net_head_norm_choices():
    plain_head = head_block(conv_net(1, 10, (8,), norm="bn", hidden=16, head_norm=None, image_size=8))
    assert plain_head[0].bias is not None and isinstance(plain_head[1], nn.ReLU)
    ln_head = head_block(conv_net(1, 10, (8,), norm=None, hidden=16, head_norm="ln", image_size=8))
    assert type(ln_head[1]) is nn.GroupNorm and ln_head[1].num_groups == 1
    with pytest.raises(ValueError, match="norm must be one of"):
        conv_net(1, 10, (8,), norm="bn", hidden=16, head_norm="batch", image_size=8)


def test_conv_net_instance_norm_needs_a_head_norm_with_hidden():
    with pytest.raises(ValueError, match="InstanceNorm"):
        conv_net(1, 10, (8,), norm="in", hidden=16, image_size=8)
    net = conv_net(1, 10, (8,), norm="in", hidden=16, head_norm="ln", image_size=8)
    assert isinstance(net[0][1], nn.InstanceNorm2d)
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    # without a hidden layer there is no head norm to choose
    assert conv_net(1, 10, (8,), norm="in", image_size=8)(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=7), "image_size"), (dict(image_size=0), "image_size"),
    (dict(widths=()), "widths"), (dict(widths=(8, 0)), "widths"),
    (dict(hidden=0), "hidden"), (dict(norm="batchnorm"), "norm must be one of"),
])
def test_conv_net_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_net(**{"in_channels": 1, "num_classes": 10, "image_size": 8, **kwargs})


# ----------------------------------------------------------------------------- encoder_decoder
@pytest.mark.parametrize("widths, height, width", [((4, 8), 6, 10), ((4, 8, 16), 16, 16), ((4, 8, 16), 8, 24),
                                                   ((2, 4, 8, 8), 16, 8)])
def test_encoder_decoder_keeps_the_image_size(widths, height, width):
    torch.manual_seed(0)
    net = encoder_decoder(in_channels=2, num_classes=3, widths=widths, norm="bn")
    assert net(torch.randn(2, 2, height, width)).shape == (2, 3, height, width)


@pytest.mark.parametrize("widths, height, width", [((4, 8), 5, 8), ((4, 8), 8, 7), ((4, 8, 16), 10, 16),
                                                   ((4, 8, 16), 16, 6)])
def test_encoder_decoder_refuses_sides_not_divisible_by_its_downsampling(widths, height, width):
    net = encoder_decoder(widths=widths, norm=None)
    factor = 2 ** (len(widths) - 1)
    with pytest.raises(ValueError, match=f"divisible by {factor}"):
        net(torch.randn(2, 1, height, width))


def test_encoder_decoder_without_skips_has_narrower_decoders():
    """A decoder stage sees the upsampled deeper features, plus with skips the encoder's of the same size."""
    widths = (4, 8, 16)
    first_convs = {}
    for skip in (True, False):
        torch.manual_seed(0)
        net = encoder_decoder(num_classes=3, widths=widths, norm="bn", skip=skip)
        assert net(torch.randn(2, 1, 8, 8)).shape == (2, 3, 8, 8)
        first_convs[skip] = [next(m for m in d.modules() if isinstance(m, nn.Conv2d)).in_channels
                             for d in net.decoders]
    assert first_convs[True] == [16 + 8, 8 + 4]
    assert first_convs[False] == [16, 8]


@pytest.mark.parametrize("skip", [True, False])
def test_encoder_decoder_decoder_sees_upsampled_features_and_the_skip(skip):
    """The decoder stage's input is the deeper stage's output upsampled 2x (nearest: each value
    copied into a 2x2 block), followed with skips by the first encoder's output of the same size."""
    torch.manual_seed(0)
    net = encoder_decoder(num_classes=2, widths=(4, 8), norm="bn", skip=skip).eval()
    seen = {}
    hooks = [net.encoders[0].register_forward_hook(lambda m, i, o: seen.__setitem__("enc0", o)),
             net.encoders[1].register_forward_hook(lambda m, i, o: seen.__setitem__("enc1", o)),
             net.decoders[0].register_forward_hook(lambda m, i, o: seen.__setitem__("dec_in", i[0]))]
    with torch.no_grad():
        net(torch.randn(2, 1, 8, 8))
    for h in hooks:
        h.remove()
    upsampled = seen["enc1"].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert upsampled.shape == (2, 8, 8, 8)
    if skip:
        assert seen["dec_in"].shape == (2, 8 + 4, 8, 8)
        assert torch.equal(seen["dec_in"][:, :8], upsampled) and torch.equal(seen["dec_in"][:, 8:], seen["enc0"])
    else:
        assert torch.equal(seen["dec_in"], upsampled)


@pytest.mark.parametrize("norm", NORMS)
def test_encoder_decoder_trains_and_evaluates_with_every_norm(norm):
    torch.manual_seed(0)
    net = encoder_decoder(num_classes=3, widths=(4, 8), norm=norm)
    x = torch.randn(4, 1, 8, 8)
    masks = torch.randint(0, 3, (4, 8, 8))
    out = net.train()(x)
    assert out.shape == (4, 3, 8, 8) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, masks).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    with torch.no_grad():
        evaluated = net.eval()(x)
    assert evaluated.shape == (4, 3, 8, 8) and torch.isfinite(evaluated).all()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    # two 3x3 convs per stage: 2 encoder stages and 1 decoder stage; then the 1x1 head with its bias
    assert len(convs) == 2 * 2 + 2 * 1 + 1
    assert all((c.bias is not None) == (norm is None) for c in convs[:-1]) and convs[-1].bias is not None


@pytest.mark.parametrize("kwargs", [dict(widths=(8,)), dict(widths=()), dict(widths=(4, 0)), dict(norm="batch")])
def test_encoder_decoder_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="widths|norm"):
        encoder_decoder(**kwargs)


@pytest.mark.parametrize("norm", ["bn", "torch_bn", "brn", "rbn"])
def test_encoder_decoder_folds_into_an_equal_eval_model(norm):
    folding = pytest.importorskip("bnlab.folding")
    torch.manual_seed(0)
    widths = (4, 8, 16)
    net = encoder_decoder(num_classes=3, widths=widths, norm=norm)
    net.train()
    with torch.no_grad():
        for _ in range(3):  # running statistics away from (0, 1)
            net(torch.randn(4, 1, 8, 8) * 2 + 1)
    net.eval()
    folded, report = folding.fold_batchnorm(net, return_report=True)
    stages = len(widths) + len(widths) - 1
    assert len(report.folded) == 2 * stages and not report.left  # two conv-BN pairs per stage
    assert folding.count_batchnorms(folded) == 0
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- mlp with the new norms
@pytest.mark.parametrize("norm", ["gn", "ln", "brn", "rbn"])
def test_mlp_takes_the_new_norms(norm):
    torch.manual_seed(0)
    net = mlp(8, (16, 12), 4, norm=norm)
    kinds = [type(m) for m in net]
    expected = EXPECTED_CLASSES[norm][1]
    assert kinds == [nn.Linear, expected, nn.ReLU, nn.Linear, expected, nn.ReLU, nn.Linear]
    assert net[0].bias is None and net[3].bias is None and net[-1].bias is not None
    out = net.train()(randn(6, 8).float())
    assert out.shape == (6, 4)
    out.sum().backward()
    assert net.eval()(randn(1, 8).float()).shape == (1, 4)  # batch-independent at eval


def test_mlp_refuses_instance_norm():
    with pytest.raises(ValueError, match="InstanceNorm"):
        mlp(8, (16,), 4, norm="in")
