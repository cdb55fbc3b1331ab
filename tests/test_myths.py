"""bnlab.myths: folding a BN into the layer after it against torch's BN followed by that layer, the
border mask's geometry, and each myth's numbers and verdict, on small budgets and at the lesson's."""

import copy
import math

import pytest
import torch
from torch import nn

from bnlab.data import digits
from bnlab.myths import (
    MYTHS,
    VERDICTS,
    MythResult,
    bn_and_dropout,
    bn_placement,
    border_mask,
    eval_vs_batch_of_one,
    fold_into_next_layer,
    folding_exactness,
    learning_rate_sweep,
    no_grad_vs_eval,
    placement_mlp,
    run_all,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    return digits(images=True)


def trained_looking_bn(cls, channels, seed=0, dtype=torch.float64):
    """A BN layer in eval mode with running statistics and affine parameters far from 1 and 0."""
    g = torch.Generator().manual_seed(seed)
    bn = cls(channels).to(dtype).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=g, dtype=dtype) * 2)
        bn.running_var.copy_(torch.rand(channels, generator=g, dtype=dtype) * 3 + 0.1)
        bn.weight.copy_(torch.randn(channels, generator=g, dtype=dtype) + 1)
        bn.bias.copy_(torch.randn(channels, generator=g, dtype=dtype))
    return bn


# ----------------------------------------------------------------------------- fold_into_next_layer
@pytest.mark.parametrize("bias", [True, False])
def test_fold_into_next_linear_is_exact(bias):
    torch.manual_seed(0)
    bn = trained_looking_bn(nn.BatchNorm1d, 7)
    linear = nn.Linear(7, 5, bias=bias).double()
    x = torch.randn(20, 7, dtype=torch.float64) * 3 + 1
    folded = fold_into_next_layer(bn, linear)
    torch.testing.assert_close(folded(x), linear(bn(x)), rtol=0, atol=1e-12)
    assert linear.bias is None or not torch.equal(folded.bias, linear.bias)      # a copy was changed, not linear
    assert (linear.bias is None) == (not bias)


@pytest.mark.parametrize("conv, shape", [
    (lambda: nn.Conv1d(3, 4, 3), (5, 3, 9)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, dilation=2), (5, 3, 9, 9)),
    (lambda: nn.Conv3d(3, 4, 2, bias=False), (2, 3, 4, 4, 4)),
    # padding that copies real inputs commutes with BN's per-channel affine map
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (5, 3, 6, 6)),
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate"), (5, 3, 6, 6)),
])
def test_fold_into_next_conv_is_exact_without_zero_padding(conv, shape):
    torch.manual_seed(0)
    layer = conv().double()
    bn = trained_looking_bn({3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)], 3)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(fold_into_next_layer(bn, layer)(x), layer(bn(x)), rtol=0, atol=1e-12)


def test_fold_into_next_zero_padded_conv_is_wrong_only_at_the_border():
    torch.manual_seed(0)
    bn = trained_looking_bn(nn.BatchNorm2d, 3)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.randn(6, 3, 7, 7, dtype=torch.float64) + 1
    error = (fold_into_next_layer(bn, conv)(x) - conv(bn(x))).abs().amax(dim=(0, 1))
    inside = torch.zeros(7, 7, dtype=torch.bool)
    inside[1:-1, 1:-1] = True
    assert error[inside].max() < 1e-12
    assert error[~inside].min() > 1e-3


def test_fold_into_next_float32_rounds_once():
    torch.manual_seed(0)
    bn64 = trained_looking_bn(nn.BatchNorm1d, 6)
    lin64 = nn.Linear(6, 4).double()
    bn32, lin32 = copy.deepcopy(bn64).float(), copy.deepcopy(lin64).float()
    x = torch.randn(30, 6, dtype=torch.float64)
    folded = fold_into_next_layer(bn32, lin32)
    assert folded.weight.dtype == torch.float32
    with torch.no_grad():
        reference = lin64(bn64(x))
        error = float((folded(x.float()).double() - reference).abs().max())
    assert 0 < error <= 1e-5 * max(1.0, float(reference.abs().max()))


def test_fold_into_next_rejects_what_it_cannot_fold():
    bn = trained_looking_bn(nn.BatchNorm2d, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match="4 features but layer takes 3"):
        fold_into_next_layer(bn, nn.Conv2d(3, 2, 3))
    with pytest.raises(ValueError, match="groups=2"):
        fold_into_next_layer(bn, nn.Conv2d(4, 2, 3, groups=2))
    with pytest.raises(ValueError, match="nn.Linear or nn.Conv"):
        fold_into_next_layer(bn, nn.ConvTranspose2d(4, 2, 3))
    with pytest.raises(ValueError, match="running statistics"):
        fold_into_next_layer(nn.BatchNorm2d(4, track_running_stats=False), nn.Conv2d(4, 2, 3))
    with pytest.raises(ValueError, match="BN layer"):
        fold_into_next_layer(nn.LayerNorm(4), nn.Linear(4, 2))


def test_border_mask_geometry():
    mask = border_mask(nn.Conv2d(1, 1, 3, padding=1), 8, 8)
    assert mask.shape == (8, 8) and int(mask.sum()) == 8 * 8 - 6 * 6
    assert not mask[1:-1, 1:-1].any()
    assert not border_mask(nn.Conv2d(1, 1, 3), 8, 8).any()
    wide = border_mask(nn.Conv2d(1, 1, 5, padding=2), 9, 9)
    assert int(wide.sum()) == 9 * 9 - 5 * 5
    with pytest.raises(ValueError, match="nn.Conv2d"):
        border_mask(nn.Conv1d(1, 1, 3), 8, 8)


# ----------------------------------------------------------------------------- the myths
def test_placement_mlp_puts_bn_on_either_side_of_the_relu():
    kinds = [type(m).__name__ for m in placement_mlp("before", (4, 4))]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    after = placement_mlp("after", (4, 4))
    assert [type(m).__name__ for m in after] == ["Linear", "ReLU", "BatchNorm1d"] * 2 + ["Linear"]
    assert placement_mlp("before", (4,))[0].bias is None and after[0].bias is not None
    with pytest.raises(ValueError, match="placement"):
        placement_mlp("between")


def test_bn_placement_small():
    result = bn_placement(seeds=(0,), steps=100)
    n = result.numbers
    assert min(n["test_accuracy"]["before"] + n["test_accuracy"]["after"]) > 0.85
    # the next layer's inputs: ReLU outputs (nothing negative, many zeros) vs BN outputs (centred)
    assert n["trained_negative_fraction"]["before"] == 0 and n["trained_zero_fraction"]["before"] > 0.2
    assert n["trained_negative_fraction"]["after"] > 0.2 and n["trained_zero_fraction"]["after"] < 0.01
    assert n["init_max_abs_channel_mean"]["after"] < 1e-4 < 0.2 < n["init_mean_channel_mean"]["before"]
    assert n["folded_by_fold_batchnorm"] == {"before": 2, "after": 0}
    assert n["fold_error_before"] < 1e-10 and n["fold_into_next_error_after"] < 1e-10
    assert n["fold_into_previous_error_after"] > 0.1
    assert result.verdict == "half-true"


def test_bn_placement_verdict_follows_the_tolerance():
    # a negative tolerance no accuracy difference can meet: the accuracies count as not close
    assert bn_placement(seeds=(0,), steps=20, hidden=(16, 16), accuracy_tolerance=-1.0).verdict == "false"


@pytest.mark.parametrize("norm", ["torch_bn", "bn"])
def test_no_grad_is_not_eval(norm):
    result = no_grad_vs_eval(norm=norm, batch_size=32)
    table = result.numbers["table"]
    for grad in ("grad", "no_grad"):
        train, evaluation = table[f"train, {grad}"], table[f"eval, {grad}"]
        assert train["running_mean_change"] > 1e-5 and train["batches_tracked"] == 1
        assert train["batch_dependence"] > 1e-3
        assert evaluation["running_mean_change"] == 0 and evaluation["batches_tracked"] == 0
        assert evaluation["batch_dependence"] < 1e-6
    for mode in ("train", "eval"):
        assert table[f"{mode}, grad"]["output_requires_grad"] and not table[f"{mode}, no_grad"]["output_requires_grad"]
    assert max(result.numbers["grad_makes_no_difference"].values()) < 1e-6
    assert result.verdict == "false"


def test_no_grad_vs_eval_rejects_a_batch_of_one():
    with pytest.raises(ValueError, match="batch_size"):
        no_grad_vs_eval(batch_size=1)


def test_bn_and_dropout_small():
    result = bn_and_dropout(seeds=(0, 1), steps=60)
    n = result.numbers
    assert set(n["test_accuracy"]) == {"bn", "bn_dropout", "plain", "plain_dropout"}
    assert all(len(v) == 2 for v in n["test_accuracy"].values())
    mean = {k: sum(v) / len(v) for k, v in n["test_accuracy"].items()}
    assert n["gain"]["bn"] == pytest.approx(mean["bn_dropout"] - mean["bn"])
    assert n["gap"]["bn"][0] == pytest.approx(1 - n["test_accuracy"]["bn"][0], abs=0.5)   # a gap, not an accuracy
    assert result.verdict == ("false" if n["gain"]["bn"] >= n["threshold"] else "half-true")
    # with a threshold any gain meets, dropout "still helps"
    assert bn_and_dropout(seeds=(0,), steps=20, threshold=-1.0).verdict == "false"


def test_eval_is_not_a_batch_of_one(images):
    result = eval_vs_batch_of_one(steps=30, examples=20, data=images)
    n = result.numbers
    assert n["eval_one_vs_batch"] < 1e-5
    assert n["train_batch_of_one_vs_eval"] > 0.1
    assert n["eval_accuracy"] == n["eval_one_at_a_time_accuracy"]
    assert n["instance_norm_error"] < 1e-5
    assert n["centred_batch_of_one"] == 0
    assert n["refused"] and "more than 1 value per channel" in n["refusal"].lower()
    assert result.verdict == "false"


def test_eval_vs_batch_of_one_needs_images():
    with pytest.raises(ValueError, match="images"):
        eval_vs_batch_of_one(data=digits())


def test_learning_rate_sweep_small():
    result = learning_rate_sweep(lrs=(1e-4, 0.1, 30.0), depth=3, steps=80, usable_accuracy=0.8)
    n = result.numbers
    assert n["usable"]["bn"] == [0.1]
    assert n["test_accuracy"]["bn"][0] < 0.8                  # far too small: hardly moves in 80 steps
    assert n["test_accuracy"]["bn"][2] < 0.8                  # far too large
    assert n["effective_lr_drop"]["30.0"] > 10 > n["effective_lr_drop"]["0.0001"]
    assert math.isnan(n["usable_decades"]["bn"]) is False and n["usable_decades"]["bn"] == 0
    assert result.verdict == "false"
    # where every lr of the grid is usable, the myth holds for that grid
    assert learning_rate_sweep(lrs=(0.1,), depth=2, steps=20, usable_accuracy=0.0).verdict == "true"
    with pytest.raises(ValueError, match="positive"):
        learning_rate_sweep(lrs=(0.1, 0.0))


def test_folding_exactness(images):
    result = folding_exactness(data=images)
    for name, tol in (("float64", 1e-12), ("float32", 1e-5)):
        case = result.numbers[name]
        scale = max(1.0, case["output_scale"])
        assert case["conv_bn_exact"] and case["conv_bn_fold_error"] <= tol * scale
        assert case["bn_conv_unpadded_error"] <= tol * scale
        assert case["bn_conv_padded_interior_error"] <= tol * scale
        assert case["bn_conv_padded_border_error"] > 0.05 * case["output_scale"]
        assert case["bn_conv_padded_with_bn_zero_error"] <= tol * scale
        assert (case["border_pixels"], case["interior_pixels"]) == (28, 36)
    assert result.verdict == "half-true"


# ----------------------------------------------------------------------------- the registry
def test_registry_and_results():
    assert list(MYTHS) == ["bn_placement", "no_grad_vs_eval", "bn_and_dropout", "eval_vs_batch_of_one",
                           "learning_rate_sweep", "folding_exactness"]
    for name, (function, statement) in MYTHS.items():
        assert function.__name__ == name and statement.endswith(".") and "\n" not in statement
    with pytest.raises(ValueError, match="verdict"):
        MythResult("x", "maybe", {}, "")
    assert str(MythResult("x", "true", {}, "so it is.")) == "x: true. so it is."
    with pytest.raises(ValueError, match="unknown myth"):
        run_all(["no_such_myth"])


def test_run_all_at_the_lessons_budget():
    """The verdicts lesson 13 prints, with the calibrated defaults (about 10 s on one thread)."""
    results = run_all()
    assert list(results) == list(MYTHS)
    assert {name: r.verdict for name, r in results.items()} == {
        "bn_placement": "half-true", "no_grad_vs_eval": "false", "bn_and_dropout": "half-true",
        "eval_vs_batch_of_one": "false", "learning_rate_sweep": "false", "folding_exactness": "half-true"}
    assert all(r.verdict in VERDICTS and r.summary for r in results.values())
    sweep = results["learning_rate_sweep"].numbers
    assert len(sweep["usable"]["bn"]) > len(sweep["usable"]["plain"])      # BN widens the range...
    assert sweep["usable"]["bn"][0] > sweep["lrs"][0] and sweep["usable"]["bn"][-1] < sweep["lrs"][-1]  # ...to a range
