"""Data generators are deterministic and validated; models and the training loop behave."""

import numpy as np
import pytest
import torch

from bnlab.data import drifting_batches, gaussian_blobs
from bnlab.layers import BatchNorm1d
from bnlab.models import mlp
from bnlab.train import History, accuracy, batched_accuracy, train_classifier


def test_blobs_are_deterministic_and_split():
    a, b = gaussian_blobs(seed=3), gaussian_blobs(seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, gaussian_blobs(seed=4).x_train)
    assert len(a.x_test) == round(0.3 * 4 * 300) and a.num_classes == 4 and a.num_features == 8
    # raw units: far from N(0, 1), which is what BN is for
    assert a.x_train.mean() > 3 and a.x_train.std() > 3
    with pytest.raises(ValueError, match="test_fraction"):
        gaussian_blobs(test_fraction=1.5)


def test_drifting_batches_follow_their_true_mean():
    x = drifting_batches(steps=200, batch_size=64, drift=0.05, kind="ramp", seed=0)
    assert x.shape == (200, 64)
    slope = np.polyfit(np.arange(200), x.mean(1), 1)[0]
    assert slope == pytest.approx(0.05, rel=0.05)
    noiseless = drifting_batches(steps=10, batch_size=2, drift=1.0, kind="step", noise=0.0)
    assert noiseless[:5].max() == 0 and noiseless[5:].min() == 200
    with pytest.raises(ValueError, match="kind"):
        drifting_batches(kind="zigzag")


def test_mlp_layout():
    net = mlp(8, (16, 16), 4, norm="bn")
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert isinstance(net[1], BatchNorm1d) and net[0].bias is None
    assert mlp(8, (16,), 4, norm=None)[0].bias is not None
    with pytest.raises(ValueError, match="norm"):
        mlp(8, (16,), 4, norm="batch")


def test_training_learns_and_is_reproducible():
    data = gaussian_blobs(n_per_class=100, seed=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = mlp(data.num_features, (32,), data.num_classes, norm="bn")
        runs.append(train_classifier(net, data, steps=150, lr=0.1, device="cpu", progress=False))
    assert runs[0].loss == runs[1].loss
    assert runs[0].test_accuracy[-1] > 0.9 and runs[0].eval_steps[-1] == 150
    assert np.mean(runs[0].loss[-20:]) < np.mean(runs[0].loss[:20])


def test_accuracy_restores_mode_and_ignores_batching():
    data = gaussian_blobs(n_per_class=50, seed=1)
    torch.manual_seed(0)
    net = mlp(data.num_features, (16,), data.num_classes, norm="bn")
    train_classifier(net, data, steps=50, device="cpu", progress=False)
    net.train()
    a1 = accuracy(net, data.x_test, data.y_test)
    a2 = accuracy(net, data.x_test, data.y_test, batch_size=1)
    assert a1 == a2 and net.training


def test_batched_accuracy_counts_per_batch_predictions():
    """A predictor that is right only on full batches of 4 shows the batching matters to it."""
    x = torch.arange(10.0).unsqueeze(1)
    y = torch.zeros(10, dtype=torch.int64)
    def predict(xb):
        return torch.tensor([[1.0, 0.0]] * len(xb)) if len(xb) == 4 else torch.tensor([[0.0, 1.0]] * len(xb))
    assert batched_accuracy(predict, x, y, 4) == 0.8   # batches of 4, 4, 2
    assert batched_accuracy(predict, x, y, 10) == 0.0
    with pytest.raises(ValueError, match="batch_size"):
        batched_accuracy(predict, x, y, 0)


# ----------------------------------------------------------------------------- probes, divergence, History
def small_run(norm="bn", steps=12, seed=0, **kwargs):
    data = gaussian_blobs(n_per_class=60, seed=2)
    torch.manual_seed(seed)
    net = mlp(data.num_features, (16, 16), data.num_classes, norm=norm, activation="sigmoid")
    history = train_classifier(net, data, steps=steps, batch_size=16, lr=0.2, device="cpu", progress=False,
                               **kwargs)
    return net, history, data


def test_probe_records_every_kth_step():
    _, history, _ = small_run(steps=23, probe=dict(every=5))
    assert len(history.probe) == 5  # steps 0, 5, 10, 15, 20 (step s: s updates done before its forward pass)
    np.testing.assert_array_equal(history.probe.steps, [0, 5, 10, 15, 20])
    assert list(history.probe.layers) == ["hidden1", "hidden2"]
    assert len(history.loss) == 23 and history.seconds > 0
    _, plain, _ = small_run(steps=3)
    assert plain.probe is None


@pytest.mark.parametrize("norm", ["bn", "torch_bn"])
def test_probe_batch_leaves_training_unchanged(norm):
    """The recording pass on the fixed batch changes neither the losses, nor the weights, nor BN's
    running statistics (nor torch's num_batches_tracked): the run trains as it would without it."""
    runs = [small_run(norm), small_run(norm, probe=dict(every=3)),
            small_run(norm, probe=dict(every=3), probe_batch=40)]
    (net0, h0, _), (_, h1, _), (net2, h2, _) = runs
    assert h0.loss == h1.loss == h2.loss
    assert h0.test_accuracy == h2.test_accuracy
    for (name, a), (_, b) in zip(net0.state_dict().items(), net2.state_dict().items()):
        assert torch.equal(a, b), name
    assert any("running_mean" in name for name in net0.state_dict())
    assert all(p.grad is not None for p in net2.parameters())
    np.testing.assert_array_equal(h1.probe.steps, h2.probe.steps)


def test_probe_batch_is_what_the_probe_sees():
    """At step 0 the probe records the fixed batch's first pre-activation, not the random minibatch."""
    _, history, data = small_run(norm=None, probe=dict(every=4, capture="input"), probe_batch=40)
    torch.manual_seed(0)  # the same initial weights as small_run
    net = mlp(data.num_features, (16, 16), data.num_classes, norm=None, activation="sigmoid")
    with torch.no_grad():
        z = net[0](data.x_train[:40]).numpy().astype(np.float64)
    record = history.probe["hidden1"]
    assert record.mean[0] == pytest.approx(z.mean(), rel=1e-5, abs=1e-6)
    assert record.std[0] == pytest.approx(z.std(), rel=1e-5)
    np.testing.assert_allclose(record.percentiles[0], np.percentile(z, [15, 50, 85]), rtol=1e-5, atol=1e-6)


def test_probe_batch_needs_a_probe():
    with pytest.raises(ValueError, match="probe_batch"):
        small_run(probe_batch=10)


def test_stop_on_nonfinite_records_when_the_loss_diverged():
    data = gaussian_blobs(n_per_class=60, seed=2)
    histories = []
    for stop in (True, False):
        torch.manual_seed(0)
        net = mlp(data.num_features, (64,) * 6, data.num_classes, norm=None, init="he")
        histories.append(train_classifier(net, data, steps=30, lr=1e6, device="cpu", progress=False,
                                          eval_every=5, stop_on_nonfinite=stop))
    stopped, kept_going = histories
    assert stopped.diverged and stopped.diverged_at is not None
    assert len(stopped.loss) == stopped.diverged_at < 30
    assert not np.isfinite(stopped.loss[-1]) and np.all(np.isfinite(stopped.loss[:-1]))
    assert not kept_going.diverged and kept_going.diverged_at is None and len(kept_going.loss) == 30
    np.testing.assert_array_equal(kept_going.loss[:stopped.diverged_at], stopped.loss)  # NaN == NaN here
    _, fine, _ = small_run(steps=5)
    assert not fine.diverged and fine.diverged_at is None


def test_eval_steps_start_at_zero_and_end_at_the_last_step():
    _, history, _ = small_run(steps=20, eval_every=7)
    assert history.eval_steps == [0, 7, 14, 20]
    assert len(history.test_accuracy) == 4 and all(0 <= a <= 1 for a in history.test_accuracy)


def test_accuracy_at_is_the_last_evaluation_at_or_before_a_step():
    history = History(eval_steps=[0, 10, 20], test_accuracy=[0.1, 0.5, 0.9])
    assert [history.accuracy_at(s) for s in (0, 9, 10, 19, 20, 1000)] == [0.1, 0.1, 0.5, 0.5, 0.9, 0.9]
    with pytest.raises(ValueError, match="no evaluation"):
        history.accuracy_at(-1)
    with pytest.raises(ValueError, match="no evaluation"):
        History().accuracy_at(5)
    assert not History().diverged and History(diverged_at=3).diverged


def test_init_refuses_a_bool():
    """True is an int to Python; as an init it is a mistake, not a std of 1."""
    with pytest.raises(ValueError, match="init"):
        mlp(4, (3,), 2, init=True)


def test_freeze_batchnorm_uses_the_one_definition_of_a_bn_layer():
    """InstanceNorm with track_running_stats has BN's buffers but normalizes each example on its
    own: not a BN layer, not frozen (the old duck-typed rule froze it)."""
    from bnlab.train import freeze_batchnorm
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.InstanceNorm2d(4, track_running_stats=True),
                                BatchNorm1d(4)).train()
    assert freeze_batchnorm(model) == 1
    assert model[1].training and not model[2].training


# ----------------------------------------------------------------------------- TrainConfig, make_optimizer
@pytest.mark.parametrize("name,value", [
    ("steps", 0), ("steps", 2.5), ("steps", True), ("batch_size", 0), ("eval_every", -1), ("seed", "0"),
    ("lr", 0.0), ("lr", -0.1), ("lr", float("nan")), ("optimizer", "rmsprop"), ("momentum", 1.0),
    ("momentum", -0.1), ("momentum", None), ("weight_decay", -1e-4), ("probe", [("every", 3)]),
    ("on_eval", "snapshot"),
])
def test_a_bad_config_value_is_named(name, value):
    from bnlab.train import TrainConfig
    with pytest.raises(ValueError, match=name):
        TrainConfig(**{name: value})


def test_probe_batch_is_checked_with_its_probe():
    from bnlab.train import TrainConfig
    with pytest.raises(ValueError, match="probe_batch needs a probe"):
        TrainConfig(probe_batch=10)
    with pytest.raises(ValueError, match="probe_batch must be"):
        TrainConfig(probe=dict(every=2), probe_batch=0)
    assert TrainConfig(probe=dict(every=2), probe_batch=4).probe_batch == 4


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(eval_every=0), dict(optimizer="lbfgs")])
def test_the_trainers_reject_a_bad_value_by_name(kwargs):
    data = gaussian_blobs(n_per_class=10, seed=0)
    net = mlp(data.num_features, (4,), data.num_classes, norm=None)
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        train_classifier(net, data, steps=2, device="cpu", progress=False, **kwargs)


def test_make_optimizer_builds_what_it_is_asked_for():
    from bnlab.train import make_optimizer
    params = [torch.nn.Parameter(torch.ones(2))]
    sgd = make_optimizer("sgd", params, lr=0.5, momentum=0.9, weight_decay=0.01)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (0.5, 0.9, 0.01)
    assert isinstance(make_optimizer("adam", params, lr=1e-3), torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer must be one of.*'rmsprop'"):
        make_optimizer("rmsprop", params, lr=0.1)
    with pytest.raises(ValueError, match="momentum is SGD's"):
        make_optimizer("adam", params, lr=0.1, momentum=0.9)


def test_weight_decay_shrinks_the_weights():
    """One SGD step on a zero loss with weight decay lambda: theta <- (1 - lr * lambda) theta."""
    from bnlab.train import make_optimizer
    theta = torch.nn.Parameter(torch.tensor([2.0, -4.0]))
    opt = make_optimizer("sgd", [theta], lr=0.5, weight_decay=0.1)
    (theta * 0).sum().backward()
    opt.step()
    assert torch.allclose(theta.detach(), torch.tensor([2.0, -4.0]) * 0.95)


# ----------------------------------------------------------------------------- recompute_batchnorm_statistics
from bnlab.train import recompute_batchnorm_statistics  # noqa: E402


@pytest.mark.parametrize("norm", ["bn", "torch_bn", "brn", "rbn"])
def test_recompute_sets_running_stats_to_the_average_of_batch_statistics(norm):
    torch.manual_seed(0)
    model = mlp(5, (7,), 3, norm=norm)
    x = 4.0 + 3.0 * torch.randn(96, 5)
    layer = model[1]
    layer.momentum = 0.3
    model.eval()
    assert recompute_batchnorm_statistics(model, x, batch_size=32) == 1
    with torch.no_grad():
        z = model[0](x)
    batches = z.split(32)
    expected_mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    expected_var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(layer.running_mean, expected_mean, rtol=1e-5, atol=1e-5)
    if norm != "rbn":   # Range BN's running_var averages its range-based scale^2, not the variance
        torch.testing.assert_close(layer.running_var, expected_var, rtol=1e-5, atol=1e-5)
    assert layer.momentum == 0.3 and not model.training


def test_recompute_leaves_weights_alone_and_rejects_bad_batches():
    torch.manual_seed(0)
    model = mlp(5, (7,), 3, norm="bn")
    weights = {k: v.clone() for k, v in model.named_parameters()}
    recompute_batchnorm_statistics(model, torch.randn(40, 5), batch_size=8)
    assert all(torch.equal(v, dict(model.named_parameters())[k]) for k, v in weights.items())
    with pytest.raises(ValueError, match="batch_size"):
        recompute_batchnorm_statistics(model, torch.randn(40, 5), batch_size=1)
    with pytest.raises(ValueError, match="fewer than one batch"):
        recompute_batchnorm_statistics(model, torch.randn(4, 5), batch_size=8)
