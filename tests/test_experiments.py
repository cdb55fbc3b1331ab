"""The lessons' data, initializations and experiment helpers (bnlab.data.digits, bnlab.models.initialize,
bnlab.experiments): checked against numbers derived here, not against the functions' own output."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.data import digits
from bnlab.experiments import BN_RELU_GROWTH, deep_mlp, growth_factor, ioffe_fig1, lr_sweep, weight_grad_norms
from bnlab.models import conv_net, encoder_decoder, initialize, mlp
from bnlab.train import History

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


# ----------------------------------------------------------------------------- data.digits
def test_digits_is_deterministic_for_a_seed(data):
    again = digits(seed=0)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(data, name), getattr(again, name))
    assert not torch.equal(data.y_train, digits(seed=1).y_train)


def test_digits_split_is_stratified_70_30_and_loses_nothing(data):
    from sklearn.datasets import load_digits

    full = load_digits()
    counts = np.bincount(full.target)
    test_counts = np.bincount(data.y_test.numpy(), minlength=10)
    train_counts = np.bincount(data.y_train.numpy(), minlength=10)
    np.testing.assert_array_equal(test_counts, [round(0.3 * c) for c in counts])
    np.testing.assert_array_equal(train_counts + test_counts, counts)
    # every image lands in exactly one of the two sets, with its own label
    both = np.concatenate([np.c_[data.x_train.numpy() * 16, data.y_train.numpy()],
                           np.c_[data.x_test.numpy() * 16, data.y_test.numpy()]])
    expected = np.c_[full.data, full.target]
    np.testing.assert_array_equal(both[np.lexsort(both.T[::-1])], expected[np.lexsort(expected.T[::-1])])
    assert data.num_features == 64 and data.num_classes == 10
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    # another fraction is stratified the same way
    half = digits(test_fraction=0.5)
    np.testing.assert_array_equal(np.bincount(half.y_test.numpy(), minlength=10), [round(0.5 * c) for c in counts])


def test_digits_values_in_unit_interval_and_image_shape(data):
    for x in (data.x_train, data.x_test):
        assert x.min() >= 0 and x.max() <= 1
    assert data.x_train.max() == 1 and data.x_train.min() == 0  # pixel / 16: the whole range is used
    images = digits(images=True)
    assert images.x_train.shape == (len(data.x_train), 1, 8, 8)
    assert images.x_test.shape == (len(data.x_test), 1, 8, 8)
    assert torch.equal(images.x_train.reshape(len(data.x_train), 64), data.x_train)
    assert torch.equal(images.y_test, data.y_test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_digits_rejects_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        digits(test_fraction=fraction)


# ----------------------------------------------------------------------------- models.initialize
def linears(model):
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("init, std", [("he", lambda fan_in: math.sqrt(2 / fan_in)),
                                       ("lecun", lambda fan_in: math.sqrt(1 / fan_in)),
                                       (0.1, lambda fan_in: 0.1),
                                       (2, lambda fan_in: 2.0)])
def test_initialize_std_and_zero_biases(init, std):
    torch.manual_seed(0)
    net = mlp(64, (400, 300), 10, norm=None, init=init)
    for layer in linears(net):
        w = layer.weight.detach().double()
        # the std of n normal draws has a relative standard error of about 1 / sqrt(2 n): >= 3,000 draws here
        rel_se = 1 / math.sqrt(2 * w.numel())
        assert w.std().item() == pytest.approx(std(layer.in_features), rel=5 * rel_se)
        assert abs(w.mean().item()) < 5 * std(layer.in_features) / math.sqrt(w.numel())
        assert torch.count_nonzero(layer.bias) == 0
    stds = [layer.weight.std().item() for layer in linears(net)]
    if isinstance(init, str):  # he / lecun: std falls with the fan-in (64, 400, 300)
        assert stds[0] > stds[2] > stds[1]
    else:                      # a number: the same std whatever the fan-in
        assert max(stds) / min(stds) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("init", ["he", 0.1, None])
def test_gain_scales_the_weights(init):
    nets = []
    for gain in (1.0, 2.5):
        torch.manual_seed(0)
        nets.append(mlp(16, (32,), 4, norm=None, init=init, gain=gain))
    for a, b in zip(linears(nets[0]), linears(nets[1])):
        torch.testing.assert_close(b.weight, 2.5 * a.weight, rtol=1e-6, atol=0)
        torch.testing.assert_close(b.bias, a.bias, rtol=0, atol=0)  # biases are not scaled
    if init is None:  # torch's default init is kept (and its nonzero biases too)
        assert torch.count_nonzero(linears(nets[0])[0].bias) > 0


@pytest.mark.parametrize("build", [lambda init: conv_net(norm=None, widths=(32, 48), init=init),
                                   lambda init: encoder_decoder(1, 2, (16, 32), norm=None, init=init)])
def test_he_init_reaches_the_convolutions(build):
    torch.manual_seed(0)
    net = build("he")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert convs
    for conv in convs:
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        w = conv.weight.detach().double()
        assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=5 / math.sqrt(2 * w.numel()))
        assert torch.count_nonzero(conv.bias) == 0


@pytest.mark.parametrize("default", [None, "default"])
def test_default_init_keeps_torchs_weights(default):
    torch.manual_seed(0)
    kept = conv_net(norm=None, init=default)
    torch.manual_seed(0)
    plain = conv_net(norm=None)
    for a, b in zip(kept.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    torch.manual_seed(0)
    assert not torch.equal(conv_net(norm=None, init="he")[0][0].weight, plain[0][0].weight)


def test_initialize_works_in_place_and_returns_the_model():
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3, bias=False))
    torch.manual_seed(0)
    assert initialize(net, 0.5) is net
    assert torch.count_nonzero(net[0].bias) == 0 and net[2].bias is None


@pytest.mark.parametrize("kwargs, match", [(dict(init="xavier"), "init"), (dict(init=0.0), "init"),
                                           (dict(init=-0.1), "init"), (dict(init="he", gain=0.0), "gain"),
                                           (dict(init=None, gain=-1.0), "gain"),
                                           (dict(init=0.1, gain=float("nan")), "gain")])
def test_bad_init_or_gain_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        initialize(nn.Linear(3, 3), **kwargs)
    with pytest.raises(ValueError, match=match):
        mlp(3, (4,), 2, **kwargs)


# ----------------------------------------------------------------------------- experiments
def test_deep_mlp_layout():
    net = deep_mlp(4, width=8, norm="bn", in_features=5, out_features=3)
    assert [(m.in_features, m.out_features) for m in linears(net)] == [(5, 8), (8, 8), (8, 8), (8, 8), (8, 3)]
    assert sum(isinstance(m, nn.ReLU) for m in net) == 4
    with pytest.raises(ValueError, match="depth"):
        deep_mlp(0)


def test_weight_grad_norms_leave_the_model_alone_and_equal_a_direct_backward(data):
    x, y = data.x_train[:64], data.y_train[:64]
    torch.manual_seed(0)
    net = deep_mlp(4, norm="bn", in_features=64, out_features=10).eval()
    state = copy.deepcopy(net.state_dict())
    norms = weight_grad_norms(net, x, y)
    assert norms.dtype == np.float64 and norms.shape == (4,)  # hidden layers only, not the output layer
    assert not net.training and all(p.grad is None for p in net.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())
    for name, value in net.state_dict().items():
        assert torch.equal(value, state[name]), name  # BN running statistics included
    # the same gradients in float32 on a copy, in training mode (batch statistics)
    twin = copy.deepcopy(net).train()
    nn.functional.cross_entropy(twin(x), y).backward()
    np.testing.assert_allclose(norms, [m.weight.grad.norm().item() for m in linears(twin)[:-1]], rtol=1e-4)


def test_weight_grad_norms_do_not_underflow(data):
    """30 sigmoid layers without BN: the gradient vanishes towards the input, but stays a number."""
    x, y = data.x_train[:128], data.y_train[:128]
    torch.manual_seed(0)
    norms = weight_grad_norms(deep_mlp(30, activation="sigmoid", in_features=64, out_features=10), x, y)
    assert norms.dtype == np.float64 and len(norms) == 30
    assert np.all(norms > 0) and np.all(np.isfinite(norms))
    assert norms[0] < 1e-15 * norms[-1]  # it does vanish: many orders of magnitude
    with pytest.raises(ValueError, match="Linear"):
        weight_grad_norms(nn.Sequential(nn.Linear(4, 2)), torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("ratio", [1.0, 1.21, 0.5, 3.0])
def test_growth_factor_of_a_geometric_sequence_is_its_ratio(ratio):
    layers = 24
    norms = 1e-3 * ratio ** (layers - 1 - np.arange(layers))  # grows by `ratio` per layer towards the input
    assert growth_factor(norms) == pytest.approx(ratio, rel=1e-12)
    # the ends (input and output layer) are left out, whatever they hold
    disturbed = norms.copy()
    disturbed[:5] *= [7, 1e-3, 5, 2, 0.1]
    disturbed[-5:] *= [1e4, 3, 0.5, 9, 11]
    assert growth_factor(disturbed) == pytest.approx(ratio, rel=1e-12)
    assert growth_factor(norms[3:-3], skip=2) == pytest.approx(ratio, rel=1e-12)
    with pytest.raises(ValueError, match="layers"):
        growth_factor(norms[:11])


def test_bn_relu_growth_constant():
    assert BN_RELU_GROWTH == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), rel=1e-15)
    assert BN_RELU_GROWTH == pytest.approx(1.2112, abs=1e-4)


def test_bn_relu_gradient_grows_at_the_mean_field_rate(data):
    """Yang et al. (2019): in a deep BN-ReLU net at initialization the gradient norm grows by
    sqrt(pi / (pi - 1)) per layer towards the input, whatever the weights (torch's default init here)."""
    x, y = data.x_train[:128], data.y_train[:128]
    factors = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = deep_mlp(30, norm="bn", in_features=64, out_features=10)
        factors.append(growth_factor(weight_grad_norms(net, x, y)))
    assert np.mean(factors) == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), abs=0.05)
    # without BN (He init keeps the forward pass stable) the gradient does not grow like that
    torch.manual_seed(0)
    plain = growth_factor(weight_grad_norms(deep_mlp(30, init="he", in_features=64, out_features=10), x, y))
    assert abs(plain - 1) < abs(np.mean(factors) - 1)


def test_lr_sweep_returns_the_runs_asked_for(data):
    runs = lr_sweep([0.05, 0.2], norms=("bn", None), depth=2, width=16, steps=6, data=data, progress=False,
                    device="cpu")
    assert set(runs) == {("bn", 0.05), ("bn", 0.2), (None, 0.05), (None, 0.2)}
    for history in runs.values():
        assert isinstance(history, History)
        assert len(history.loss) == 6 and history.eval_steps == [0, *range(1, 7)]
    assert runs[("bn", 0.05)].loss != runs[("bn", 0.2)].loss
    assert set(lr_sweep([0.1], norms=("bn",), depth=2, width=8, steps=2, data=data, progress=False,
                        device="cpu")) == {("bn", 0.1)}


def test_ioffe_fig1_records_the_sigmoid_inputs(data):
    history = ioffe_fig1("bn", steps=21, data=data, progress=False, device="cpu")
    recording = history.probe
    np.testing.assert_array_equal(recording.steps, [0, 10, 20])
    assert list(recording.layers) == ["hidden1", "hidden2", "hidden3"]
    assert recording["hidden3"].unit_percentiles.shape == (3, 100, 3)
    assert history.eval_steps[0] == 0 and history.eval_steps[-1] == 21


# ----------------------------------------------------------------------------- lesson 04 and 05 helpers
from bnlab.experiments import bn_gradient_growth, nonlinearity_inputs, residual_mlp, weight_gradient_alignment  # noqa: E402


def test_bn_gradient_growth_is_the_closed_form_for_relu():
    assert bn_gradient_growth("relu") == pytest.approx(math.sqrt(math.pi / (math.pi - 1)), abs=1e-4)
    assert BN_RELU_GROWTH == pytest.approx(bn_gradient_growth("relu"), abs=1e-4)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_bn_gradient_growth_agrees_with_monte_carlo(activation):
    u = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u.requires_grad_(True)
    phi = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[activation](u)
    (slope,) = torch.autograd.grad(phi.sum(), u)
    estimate = math.sqrt(slope.pow(2).mean().item() / phi.detach().var().item())
    assert bn_gradient_growth(activation) == pytest.approx(estimate, rel=3e-3)


def test_bn_gradient_growth_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        bn_gradient_growth("gelu")


def test_residual_mlp_bounds_what_the_plain_bn_net_explodes():
    data_x = torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (128,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    residual = weight_grad_norms(residual_mlp(30), data_x, labels)
    torch.manual_seed(0)
    plain = weight_grad_norms(deep_mlp(30, norm="bn"), data_x, labels)
    assert len(residual) == 31 and len(plain) == 30
    assert residual[0] / residual[-1] < 0.1 * plain[0] / plain[-1]
    with pytest.raises(ValueError, match="depth"):
        residual_mlp(0)


def test_weight_gradient_alignment_is_orthogonal_exactly_where_bn_follows():
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    report = weight_gradient_alignment(mlp(12, (16, 16), 3, norm="bn"), x, y)
    before_bn = [r for r in report.values() if r["before_bn"]]
    assert len(before_bn) == 2 and all(abs(r["cos"]) < 1e-5 for r in before_bn)
    torch.manual_seed(0)
    plain = weight_gradient_alignment(mlp(12, (16, 16), 3, norm=None), x, y)
    assert not any(r["before_bn"] for r in plain.values())
    assert max(abs(r["cos"]) for r in plain.values()) > 1e-3


def test_weight_gradient_of_a_bn_layer_scales_inversely_with_the_weights():
    x = torch.randn(64, 12, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    net = mlp(12, (16,), 3, norm="bn")
    before = weight_gradient_alignment(net, x, y)["0"]
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    after = weight_gradient_alignment(net, x, y)["0"]
    assert after["weight_norm"] == pytest.approx(2 * before["weight_norm"])
    assert after["grad_norm"] == pytest.approx(before["grad_norm"] / 2, rel=1e-4)


def test_nonlinearity_inputs_in_train_and_eval_mode_and_no_side_effects():
    x = 3.0 + 2.0 * torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    net = mlp(8, (16, 16), 4, norm="bn", activation="sigmoid")
    state = {k: v.clone() for k, v in net.state_dict().items()}
    train = nonlinearity_inputs(net, x)
    evaluated = nonlinearity_inputs(net, x, train=False)
    assert list(train) == ["hidden1", "hidden2"]
    assert train["hidden1"].std(0, unbiased=False).sub(1).abs().max() < 1e-3    # the batch's statistics
    torch.testing.assert_close(evaluated["hidden1"], net[0](x).detach() / math.sqrt(1 + 1e-5))  # running 0, 1
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
