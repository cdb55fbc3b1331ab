"""Data generators are deterministic and validated; models and the training loop behave."""

import numpy as np
import pytest
import torch

from bnlab.data import drifting_batches, gaussian_blobs
from bnlab.layers import BatchNorm1d
from bnlab.models import mlp
from bnlab.train import accuracy, batched_accuracy, train_classifier


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
    predict = lambda xb: torch.tensor([[1.0, 0.0]] * len(xb)) if len(xb) == 4 else torch.tensor([[0.0, 1.0]] * len(xb))
    assert batched_accuracy(predict, x, y, 4) == 0.8   # batches of 4, 4, 2
    assert batched_accuracy(predict, x, y, 10) == 0.0
    with pytest.raises(ValueError, match="batch_size"):
        batched_accuracy(predict, x, y, 0)
