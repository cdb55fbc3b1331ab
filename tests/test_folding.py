"""bnlab.folding.fold_batchnorm: the folded copy computes what the model computes in eval mode, for
every kind of BN and of layer before it; no BN is left where one could be folded; the original is
untouched; what cannot be folded is reported or refused."""

from __future__ import annotations

import copy

import pytest
import torch
from bn_testing import assert_close, max_err, needs_torch_bn_bias
from torch import nn

import bnlab
import bnlab.layers as L
from bnlab.folding import FOLDABLE_NORMS, count_batchnorms, fold_batchnorm

NORMS_2D = [nn.BatchNorm2d, bnlab.BatchNorm2d, L.BatchRenorm2d, L.RangeBatchNorm2d]
NORMS_1D = [nn.BatchNorm1d, bnlab.BatchNorm1d, L.BatchRenorm1d, L.RangeBatchNorm1d]
NORM_IDS = ["torch", "bnlab", "renorm", "range"]


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """Small tensors: a second thread only waits, on a shared machine for a long time."""
    torch.set_num_threads(1)


def train_a_little(model, input_shape, dtype, steps=6, seed=0):
    """A few SGD steps on inputs with a non-zero mean and scale, so that running statistics,
    gamma and beta are far from their initial 0, 1, 1, 0. Leaves the model in train mode."""
    torch.manual_seed(seed)
    model.to(dtype).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(input_shape, generator=g, dtype=dtype) * 3 + 2
        out = model(x)
        target = torch.randn(out.shape, generator=g, dtype=dtype)
        opt.zero_grad()
        ((out - target) ** 2).mean().backward()
        opt.step()
    return model


def assert_folds_exactly(model, input_shape, dtype, expect_folded):
    """fold_batchnorm(model) gives model.eval()'s outputs, folds expect_folded BN layers, leaves no
    BN behind, and does not touch model (parameters, buffers, mode, layer types)."""
    before = copy.deepcopy(model.state_dict())
    types_before = [type(m) for m in model.modules()]
    training_before = model.training
    folded, report = fold_batchnorm(model, return_report=True)
    assert len(report.folded) == expect_folded, report
    assert not report.left, report
    assert count_batchnorms(folded) == 0
    assert not folded.training and not any(m.training for m in folded.modules())
    # the original is as it was
    assert model.training == training_before
    assert [type(m) for m in model.modules()] == types_before
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)

    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(123), dtype=dtype) * 3 + 2
    with torch.no_grad():
        reference = copy.deepcopy(model).eval()(x)
        out = folded(x)
    assert_close(out, reference, dtype, "folded vs unfolded output")
    return folded


def conv_classifier(norm2d, norm1d, conv_bias):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=conv_bias), norm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 3, bias=conv_bias), norm2d(6), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(6 * 2 * 2, 5, bias=conv_bias), norm1d(5),
    )


# ----------------------------------------------------------------------------- equal outputs
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("conv_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("norm2d,norm1d", list(zip(NORMS_2D, NORMS_1D)), ids=NORM_IDS)
def test_conv_and_linear_classifier(norm2d, norm1d, conv_bias, dtype):
    """Conv2d+BN2d twice and Linear+BN1d, trained a few steps: the same eval outputs
    (float64 1e-10, float32 1e-5), with and without conv bias, for every kind of BN."""
    model = train_a_little(conv_classifier(norm2d, norm1d, conv_bias), (8, 3, 6, 6), dtype)
    assert max_err(model[1].running_mean, torch.zeros(8)) > 0.1  # the statistics are not the initial ones
    folded = assert_folds_exactly(model, (5, 3, 6, 6), dtype, expect_folded=3)
    assert folded[0].bias is not None  # a conv without bias gets one: beta - scale * running_mean
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[9], nn.Identity)


@pytest.mark.parametrize("groups", [2, 8], ids=["grouped", "depthwise"])
@pytest.mark.parametrize("norm2d", NORMS_2D, ids=NORM_IDS)
def test_grouped_and_depthwise_conv(norm2d, groups):
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), norm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, groups=groups, bias=False), norm2d(16))
    model = train_a_little(model, (4, 8, 5, 5), torch.float64)
    assert_folds_exactly(model, (3, 8, 5, 5), torch.float64, expect_folded=2)


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("conv_bias", [True, False], ids=["bias", "nobias"])
def test_transposed_conv(groups, conv_bias):
    """ConvTranspose weights are (in, out/groups, *kernel): the output channel is dim 1 within
    each group, and folding scales that, not dim 0."""
    model = nn.Sequential(nn.ConvTranspose2d(4, 8, 3, stride=2, groups=groups, bias=conv_bias),
                          nn.BatchNorm2d(8), nn.ReLU())
    model = train_a_little(model, (4, 4, 3, 3), torch.float64)
    assert_folds_exactly(model, (2, 4, 3, 3), torch.float64, expect_folded=1)


def test_conv1d_conv3d_and_transposed_1d():
    model1d = nn.Sequential(nn.Conv1d(3, 6, 3), bnlab.BatchNorm1d(6), nn.ReLU(),
                            nn.ConvTranspose1d(6, 4, 3, groups=2, bias=False), nn.BatchNorm1d(4))
    assert_folds_exactly(train_a_little(model1d, (4, 3, 7), torch.float64), (2, 3, 7), torch.float64, 2)
    model3d = nn.Sequential(nn.Conv3d(2, 4, 2, bias=False), nn.BatchNorm3d(4), nn.ReLU(),
                            nn.ConvTranspose3d(4, 2, 2), bnlab.BatchNorm3d(2))
    assert_folds_exactly(train_a_little(model3d, (3, 2, 3, 3, 3), torch.float64), (2, 2, 3, 3, 3),
                         torch.float64, 2)


@pytest.mark.parametrize("norm1d", NORMS_1D, ids=NORM_IDS)
def test_linear_mlp(norm1d):
    model = nn.Sequential(nn.Linear(10, 16, bias=False), norm1d(16), nn.ReLU(),
                          nn.Linear(16, 8), norm1d(8), nn.Tanh(), nn.Linear(8, 3))
    model = train_a_little(model, (32, 10), torch.float64)
    assert_folds_exactly(model, (7, 10), torch.float64, expect_folded=2)


class Residual(nn.Module):
    """x + body(x): BN inside a Sequential inside a custom module."""

    def __init__(self, channels):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU())

    def forward(self, x):
        return x + self.body(x)


def test_nested_sequentials_and_custom_modules():
    model = nn.Sequential(
        nn.Sequential(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), bnlab.BatchNorm2d(4)), nn.ReLU()),
        Residual(4),
        nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), L.BatchRenorm2d(4), nn.ReLU(), Residual(4)),
    )
    model = train_a_little(model, (6, 2, 4, 4), torch.float64)
    folded = assert_folds_exactly(model, (3, 2, 4, 4), torch.float64, expect_folded=4)
    _, report = fold_batchnorm(model, return_report=True)
    assert sorted(report.folded) == ["0.0.1", "1.body.1", "2.1", "2.3.body.1"]
    assert isinstance(folded[0][0][1], nn.Identity)


@pytest.mark.parametrize("norm2d", NORMS_2D, ids=NORM_IDS)
def test_bn_without_affine(norm2d):
    model = nn.Sequential(nn.Conv2d(3, 5, 3), norm2d(5, affine=False), nn.ReLU())
    model = train_a_little(model, (6, 3, 5, 5), torch.float64)
    assert_folds_exactly(model, (2, 3, 5, 5), torch.float64, expect_folded=1)


@needs_torch_bn_bias
@pytest.mark.parametrize("norm2d", [nn.BatchNorm2d, bnlab.BatchNorm2d], ids=["torch", "bnlab"])
def test_bn_with_gamma_but_no_beta(norm2d):
    model = nn.Sequential(nn.Conv2d(3, 5, 3, bias=False), norm2d(5, bias=False))
    model = train_a_little(model, (6, 3, 5, 5), torch.float64)
    assert_folds_exactly(model, (2, 3, 5, 5), torch.float64, expect_folded=1)


def test_folding_twice_changes_nothing():
    model = train_a_little(conv_classifier(nn.BatchNorm2d, nn.BatchNorm1d, False), (8, 3, 6, 6), torch.float64)
    once = fold_batchnorm(model)
    twice, report = fold_batchnorm(once, return_report=True)
    assert report.folded == [] and report.left == {}
    assert all(torch.equal(a, b) for a, b in zip(once.state_dict().values(), twice.state_dict().values()))


# ----------------------------------------------------------------------------- what stays and why
def test_bn_not_after_conv_or_linear_is_left_and_reported():
    """A BN after a ReLU, a BN first in its Sequential and a BN outside any Sequential stay, each
    with a reason; the outputs are still the model's."""

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)
            self.norm = nn.BatchNorm1d(3)

        def forward(self, x):
            return self.norm(self.linear(x))

    model = nn.Sequential(
        nn.BatchNorm2d(2),                                   # first: nothing before it
        nn.Conv2d(2, 4, 3), nn.ReLU(), bnlab.BatchNorm2d(4),  # after a ReLU
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4),               # foldable
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), Head(),       # not in a Sequential
    )
    model = train_a_little(model, (8, 2, 5, 5), torch.float64)
    folded, report = fold_batchnorm(model, return_report=True)
    assert report.folded == ["5"]
    assert sorted(report.left) == ["0", "3", "8.norm"]
    assert all("does not directly follow" in why for why in report.left.values())
    assert count_batchnorms(folded) == 3 and count_batchnorms(model) == 4
    assert "left 3" in str(report)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert max_err(folded(x), copy.deepcopy(model).eval()(x)) <= 1e-10


def test_shared_conv_is_not_folded():
    """The same conv instance used twice, once before a BN and once not: folding would change the
    second use, so the BN stays."""
    conv = nn.Conv2d(3, 3, 1)
    model = nn.Sequential(conv, nn.BatchNorm2d(3), nn.ReLU(), conv)
    model = train_a_little(model, (4, 3, 3, 3), torch.float64)
    folded, report = fold_batchnorm(model, return_report=True)
    assert report.folded == [] and "used more than once" in report.left["1"]
    assert folded[0] is folded[3]  # the copy keeps the sharing
    x = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        assert max_err(folded(x), copy.deepcopy(model).eval()(x)) <= 1e-10


def test_weight_norm_conv_is_not_folded():
    conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 4, 1))
    model = nn.Sequential(conv, nn.BatchNorm2d(4))
    folded, report = fold_batchnorm(train_a_little(model, (4, 3, 3, 3), torch.float64), return_report=True)
    assert report.folded == [] and "computed at call time" in report.left["1"]


@pytest.mark.parametrize("norm2d", [nn.BatchNorm2d, bnlab.BatchNorm2d, L.RangeBatchNorm2d],
                         ids=["torch", "bnlab", "range"])
def test_bn_without_running_statistics_is_refused(norm2d):
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), norm2d(4, track_running_stats=False)))
    with pytest.raises(ValueError, match=r"0\.1 \(.*\) has no running statistics.*into 0\.0"):
        fold_batchnorm(model)


def test_non_module_is_rejected():
    with pytest.raises(ValueError, match="must be a torch.nn.Module"):
        fold_batchnorm({"conv": nn.Conv2d(1, 1, 1)})


def test_count_batchnorms_counts_every_kind():
    model = nn.Sequential(*[cls(3) for cls in NORMS_2D + NORMS_1D], nn.GroupNorm(1, 3), nn.LayerNorm(3))
    assert count_batchnorms(model) == 8
    assert all(isinstance(cls(3), FOLDABLE_NORMS) for cls in NORMS_2D + NORMS_1D)
