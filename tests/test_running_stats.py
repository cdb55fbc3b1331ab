"""The running-statistics protocol every bnlab BN layer shares, and `is_batchnorm`, the course's one
definition of "a BN layer"."""

from __future__ import annotations

import pytest
import torch
from bn_testing import max_err, random_bn_input
from torch import nn

import bnlab
from bnlab import layers as L

TOL = 1e-10
KINDS = [L.BatchNorm1d, L.BatchRenorm1d, L.RangeBatchNorm1d]
KIND_IDS = ["bn", "renorm", "range"]


# ----------------------------------------------------------------------------- is_batchnorm
class MyNorm(L.BatchNorm2d):
    """A user's subclass: still a BN layer."""


@pytest.mark.parametrize("module", [
    nn.BatchNorm1d(3), nn.BatchNorm2d(3), nn.BatchNorm3d(3), nn.SyncBatchNorm(3),
    nn.BatchNorm2d(3, track_running_stats=False),
    L.BatchNorm(3), L.BatchNorm1d(3), L.BatchNorm2d(3), L.BatchNorm3d(3),
    L.BatchNorm2d(3, track_running_stats=False),
    L.BatchRenorm(3), L.BatchRenorm1d(3), L.BatchRenorm2d(3),
    L.RangeBatchNorm(3), L.RangeBatchNorm1d(3), L.RangeBatchNorm2d(3), MyNorm(3),
], ids=lambda m: type(m).__name__)
def test_is_batchnorm_for_every_bn_kind(module):
    assert bnlab.is_batchnorm(module)


@pytest.mark.parametrize("module", [
    # InstanceNorm can track running statistics too, but normalizes each example on its own
    nn.InstanceNorm2d(3, track_running_stats=True), nn.GroupNorm(1, 3), nn.LayerNorm(3),
    nn.Linear(3, 3), nn.Sequential(nn.BatchNorm1d(3)),
], ids=lambda m: type(m).__name__)
def test_is_batchnorm_is_false_for_other_layers(module):
    assert not bnlab.is_batchnorm(module)


# ----------------------------------------------------------------------------- counter and averages
@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_counter_advances_once_per_training_forward_only(cls):
    m = cls(3, dtype=torch.float64)
    for i in range(3):
        m(random_bn_input((8, 3), seed=i))
    assert m.num_batches_tracked.item() == 3
    m.eval()
    m(random_bn_input((8, 3), seed=9))
    assert m.num_batches_tracked.item() == 3


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_cumulative_average_with_momentum_none(cls):
    """momentum=None: the (t+1)-th batch weighs 1/(t+1), so running_mean is the plain mean of the
    batch means, for every kind (renorm and range BN update the mean as BN does)."""
    m = cls(3, momentum=None, dtype=torch.float64)
    means = []
    for i in range(5):
        x = random_bn_input((8, 3), seed=i)
        means.append(x.mean(0))
        m(x)
    assert max_err(m.running_mean, torch.stack(means).mean(0)) <= TOL


@pytest.mark.parametrize("cls", KINDS, ids=KIND_IDS)
def test_rejected_input_leaves_counter_and_statistics_alone(cls):
    """One value per channel is rejected in training; nothing was counted or averaged (torch's
    BN counts before it checks, we only count a forward pass that succeeded)."""
    m = cls(3, momentum=None)
    m(torch.randn(4, 3))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(torch.randn(1, 3))
    for name, value in m.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.parametrize("cls", [L.BatchNorm1d, L.RangeBatchNorm1d], ids=["bn", "range"])
def test_no_tracking_means_no_counter_and_batch_statistics_in_eval(cls):
    m = cls(3, track_running_stats=False, dtype=torch.float64).eval()
    assert m.num_batches_tracked is None
    out = m(random_bn_input((16, 3), seed=2))
    assert max_err(out.mean(0), torch.zeros(3, dtype=torch.float64)) <= TOL


# ----------------------------------------------------------------------------- repr
def test_a_subclass_extends_the_repr_with_its_own_fields():
    class Tempered(L.RangeBatchNorm):
        _repr_fields = L.RangeBatchNorm._repr_fields + ("temperature",)

        def __init__(self, num_features, temperature=2.0):
            super().__init__(num_features)
            self.temperature = temperature

    assert Tempered(4).extra_repr() == ("4, eps=1e-05, momentum=0.1, affine=True, "
                                        "track_running_stats=True, correction='gaussian', temperature=2.0")
