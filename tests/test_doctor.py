"""bnlab.doctor: one planted mistake per finding id, models whose forward order differs from their
registration order, clean models with no findings, and a model left exactly as it was."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.data import digits
from bnlab.doctor import FINDINGS, Finding, doctor
from bnlab.layers import BatchNorm1d, BatchRenorm2d
from bnlab.models import conv_net
from bnlab.train import train_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(model, x, steps=3):
    """A few training steps in train mode, so the running statistics have seen batches."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return model


def _only(findings, finding_id):
    """The single finding with this id; fails, listing them all, when there is not exactly one."""
    matching = [f for f in findings if f.id == finding_id]
    assert len(matching) == 1, [str(f) for f in findings]
    return matching[0]


def _has_hint(finding, *words):
    """The message says what is wrong, then 'Hint:' and a fix that names the words."""
    problem, _, hint = finding.message.partition("Hint:")
    return bool(problem.strip()) and all(w in hint for w in words)


# ----------------------------------------------------------------------------- one test per id
@pytest.mark.parametrize("with_batch", [False, True])
def test_bias_before_bn(with_batch):
    """A conv with a bias straight into a BN: the finding is on the conv (the layer to change)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU())
    findings = doctor(model, torch.randn(4, 3, 6, 6) if with_batch else None)
    found = _only(findings, "bias_before_bn")
    assert found.layer == "0"
    assert "'1'" in found.message and _has_hint(found, "bias=False")
    assert ("Guessed" in found.message) is not with_batch
    # the same model without the bias is clean
    assert doctor(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)), torch.randn(4, 3, 6, 6)) == []


@pytest.mark.parametrize("with_batch", [False, True])
def test_dropout_before_bn(with_batch):
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.ReLU(), nn.Dropout(0.3), BatchNorm1d(8))
    found = _only(doctor(model, torch.randn(6, 5) if with_batch else None), "dropout_before_bn")
    assert found.layer == "2"
    assert "p=0.3" in found.message and "lesson 10" in found.message and _has_hint(found, "after the BN")


def test_no_running_stats():
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8, track_running_stats=False)).eval()
    found = _only(doctor(model), "no_running_stats")
    assert found.layer == "1" and _has_hint(found, "track_running_stats=True")
    # in train mode batch statistics are what BN uses anyway: no finding
    assert doctor(model.train()) == []


def test_mixed_modes():
    inner = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    model = _trained(nn.Sequential(inner, nn.ReLU()), torch.randn(4, 3, 6, 6)).eval()
    inner[1].train()  # e.g. a .train() on a submodule after model.eval()
    found = _only(doctor(model), "mixed_modes")
    assert found.layer == "0.1" and _has_hint(found, "model.eval() last")


def test_running_stats_never_updated():
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU()).eval()
    found = _only(doctor(model), "running_stats_never_updated")
    assert found.layer == "1" and _has_hint(found, "recompute_batchnorm_statistics")
    # one training batch is enough to clear it
    assert doctor(_trained(model, torch.randn(6, 5), steps=1).eval()) == []


def test_zero_count_with_loaded_statistics_is_not_never_updated():
    """num_batches_tracked = 0 with statistics that are not 0 and 1 (a state_dict from before torch
    counted batches): the statistics were learned, so no finding."""
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8)).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    assert doctor(model) == []


def test_single_value_per_channel_is_reported_where_torch_raises():
    """BatchNorm1d in training on a (1, C) batch raises ValueError in torch; the doctor reports
    single_value_per_channel instead of crashing, and also for a (1, C, 1, 1) input to BatchNorm2d."""
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU())
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        copy.deepcopy(model)(torch.randn(1, 5))
    found = _only(doctor(model, torch.randn(1, 5)), "single_value_per_channel")
    assert found.layer == "1" and "(1, 8)" in found.message and _has_hint(found, "at least 2 examples")
    conv = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3))
    assert _only(doctor(conv, torch.randn(1, 2, 1, 1)), "single_value_per_channel").layer == "1"
    # two examples are fine, and so is one in eval mode
    assert doctor(model, torch.randn(2, 5)) == []
    assert doctor(_trained(model, torch.randn(6, 5)).eval(), torch.randn(1, 5)) == []


def test_single_value_keeps_the_findings_before_it_and_guesses_those_after():
    """The run stops at the bad BN: findings before it stay traced, BN layers after it fall back to the
    registration order, and the model is left as it was."""
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4), nn.BatchNorm1d(4))
    before = copy.deepcopy(model.state_dict())
    findings = doctor(model, torch.randn(1, 5))
    assert [(f.id, f.layer) for f in findings] == [
        ("bias_before_bn", "0"), ("single_value_per_channel", "1"), ("bias_before_bn", "3")]
    assert "Guessed" not in findings[0].message and "Guessed" in findings[2].message
    _assert_same_state(model.state_dict(), before)


def test_cumulative_momentum():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, momentum=None))
    found = _only(doctor(model), "cumulative_momentum")
    assert found.layer == "1" and _has_hint(found, "momentum back", "0.1")
    # without running statistics momentum is never used
    assert doctor(nn.Sequential(nn.BatchNorm1d(4, momentum=None, track_running_stats=False))) == []


def test_forward_error_is_reported_not_raised():
    """A batch the model rejects (wrong width): the error becomes a finding on the layer that raised,
    and the settings checks still run."""
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8, momentum=None))
    findings = doctor(model, torch.randn(4, 7))
    error = _only(findings, "forward_error")
    assert error.layer == "0" and "RuntimeError" in error.message and _has_hint(error, "batch")
    assert {f.id for f in findings} == {"forward_error", "cumulative_momentum", "bias_before_bn"}


def test_every_id_is_documented_and_findings_print_readably():
    assert set(FINDINGS) >= {"bias_before_bn", "dropout_before_bn", "no_running_stats", "mixed_modes",
                             "running_stats_never_updated", "single_value_per_channel", "cumulative_momentum"}
    f = Finding("mixed_modes", "block.bn", "what. Hint: how.")
    assert str(f) == "block.bn: what. Hint: how. [mixed_modes]"
    assert str(Finding("mixed_modes", "", "m")).startswith("(model): ")
    with pytest.raises(AttributeError):
        f.layer = "other"  # frozen


# ----------------------------------------------------------------------------- execution order
class RegisteredBackwards(nn.Module):
    """Registers bn before conv, but forward calls conv, then bn."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(3, 4, 3, bias=True)

    def forward(self, x):
        return self.bn(self.conv(x))


class BiasedSideBranch(nn.Module):
    """A Linear with a bias registered right before the BN, but on a branch that does not feed it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(5, 6, bias=False)
        self.side = nn.Linear(5, 6)
        self.bn = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.bn(self.stem(x)) + self.side(x)


class FunctionalReluBetween(nn.Module):
    """conv -> F.relu -> bn: the ReLU is not a module, but it stands between the conv and the BN."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


def test_forward_order_differs_from_registration_order():
    """With the batch the doctor sees conv -> bn; without it, it goes by registration (bn, conv), finds
    no module before the BN and misses the wasted bias: the documented limit of the guess."""
    model = RegisteredBackwards()
    found = _only(doctor(model, torch.randn(4, 3, 6, 6)), "bias_before_bn")
    assert found.layer == "conv" and "'bn'" in found.message
    assert [f.id for f in doctor(model)] == []


def test_biased_layer_registered_before_bn_but_not_feeding_it():
    """With the batch: no finding, the BN's input comes from the bias-free stem. Without it, the guess
    blames the side branch, and says that it is a guess."""
    model = BiasedSideBranch()
    assert doctor(model, torch.randn(4, 5)) == []
    guessed = _only(doctor(model), "bias_before_bn")
    assert guessed.layer == "side" and "Guessed" in guessed.message and "pass a batch" in guessed.message


def test_functional_op_between_breaks_the_direct_feed():
    """The BN's input is F.relu's new tensor, not the conv's output: with the batch, no finding."""
    model = FunctionalReluBetween()
    assert doctor(model, torch.randn(4, 3, 6, 6)) == []
    assert _only(doctor(model), "bias_before_bn").layer == "conv"  # the guess cannot see F.relu


def test_in_place_relu_and_identity():
    """An in-place ReLU returns the conv's own output tensor, changed: the ReLU feeds the BN, not the
    conv. nn.Identity passes the conv's output on unchanged: the conv still feeds the BN."""
    relu_between = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.BatchNorm2d(4))
    assert doctor(relu_between, torch.randn(4, 3, 6, 6)) == []
    identity_between = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Identity(), nn.BatchNorm2d(4))
    assert _only(doctor(identity_between, torch.randn(4, 3, 6, 6)), "bias_before_bn").layer == "0"
    assert _only(doctor(identity_between), "bias_before_bn").layer == "0"


def test_linear_on_3d_input_keeps_its_bias():
    """Linear on (N, C, L) adds its bias along L; BatchNorm1d(C) averages over N and L per channel, so a
    bias that varies along L is not a constant BN removes: not wasted."""
    model = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(3))
    assert doctor(model, torch.randn(4, 3, 6)) == []


# ----------------------------------------------------------------------------- clean models
@pytest.fixture(scope="module")
def trained_conv_net():
    data = digits(images=True)
    model = conv_net(norm="bn")
    train_classifier(model, data, steps=5, batch_size=16, eval_every=5, progress=False)
    return model.eval(), data.x_test[:32]


def test_trained_conv_net_in_eval_mode_has_no_findings(trained_conv_net):
    model, x = trained_conv_net
    assert doctor(model) == []
    assert doctor(model, x) == []


@pytest.mark.parametrize("bn, x", [
    (nn.BatchNorm1d(6), torch.randn(8, 5)),
    (nn.BatchNorm2d(6), torch.randn(8, 5, 4, 4)),
    (nn.BatchNorm3d(6), torch.randn(8, 5, 3, 3, 3)),
    (BatchRenorm2d(6), torch.randn(8, 5, 4, 4)),
], ids=["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchRenorm2d"])
def test_clean_models_with_each_bn_type(bn, x):
    layer = nn.Linear(5, 6, bias=False) if x.dim() == 2 else {4: nn.Conv2d, 5: nn.Conv3d}[x.dim()](5, 6, 1, bias=False)
    model = _trained(nn.Sequential(layer, bn, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)), x)
    assert doctor(model.eval()) == []
    assert doctor(model, x) == []
    assert doctor(model.train(), x) == []  # training mode: the eval-mode checks do not apply


# ----------------------------------------------------------------------------- the model is left as it was
def _assert_same_state(after, before):
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key


def _hooks(model):
    return [(name, len(m._forward_hooks), len(m._forward_pre_hooks)) for name, m in model.named_modules()]


@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
def test_model_and_statistics_are_unchanged(trained_conv_net, mode):
    """doctor(model, batch) in train mode runs the BN layers in training, which would move their running
    statistics and count a batch; afterwards state_dict, training flags, hooks, the buffers' tensor
    objects and torch's random state are as before."""
    model = copy.deepcopy(trained_conv_net[0])
    model.add_module("drop", nn.Dropout(0.5))  # draws random numbers in train mode
    x = trained_conv_net[1]
    if mode == "train":
        model.train()
    elif mode == "mixed":
        model.eval()
        model[0].train()
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    buffers = [id(b) for b in model.buffers()]
    hooks = _hooks(model)
    rng = torch.get_rng_state()

    doctor(model, x)

    _assert_same_state(model.state_dict(), before)
    assert [m.training for m in model.modules()] == flags
    assert [id(b) for b in model.buffers()] == buffers
    assert _hooks(model) == hooks
    assert torch.equal(torch.get_rng_state(), rng)


def test_the_unchanged_check_can_fail(trained_conv_net):
    """Running the same batch through the model in train mode directly does move the statistics, so the
    test above would see it if the doctor did not restore them."""
    model = copy.deepcopy(trained_conv_net[0]).train()
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        model(trained_conv_net[1])
    with pytest.raises(AssertionError):
        _assert_same_state(model.state_dict(), before)


def test_state_is_restored_when_the_batch_raises():
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(9, 2))
    before = copy.deepcopy(model.state_dict())
    hooks = _hooks(model)
    findings = doctor(model, torch.randn(4, 5))  # BN updates its statistics, then the last Linear raises
    assert _only(findings, "forward_error").layer == "3"
    _assert_same_state(model.state_dict(), before)
    assert _hooks(model) == hooks


def test_user_hooks_are_kept():
    model = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8))
    seen = []

    def record(module, args, output):
        seen.append(output.shape)

    model[1].register_forward_hook(record)
    doctor(model, torch.randn(4, 5))
    model(torch.randn(3, 5))
    assert seen == [torch.Size([4, 8]), torch.Size([3, 8])]


def test_not_a_module_is_rejected():
    with pytest.raises(TypeError, match="nn.Module"):
        doctor(lambda x: x)
