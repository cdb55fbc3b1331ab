"""Lesson 09's experiments (bnlab.experiments: landscape_run, frozen_noise, linear_bn,
scale_invariant_run) and bnlab.stats.median_jitter, against numbers derived here."""

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.data import Split
from bnlab.experiments import frozen_noise, landscape_run, linear_bn, scale_invariant_run
from bnlab.landscape import loss_along_gradient
from bnlab.layers import NoisyBatchNorm1d
from bnlab.stats import median_jitter

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def bands(median, width):
    median = np.asarray(median, float)
    width = np.broadcast_to(width, median.shape)
    return np.stack([median - width / 2, median, median + width / 2], axis=-1)


def test_median_jitter_known_answers():
    # the median steps 0 -> 1 -> 0 (two moves of 1) in a band of width 2: mean move 1 / width 2
    assert median_jitter(bands([[0.0], [1.0], [0.0]], 2.0)) == pytest.approx(0.5)
    assert median_jitter(bands(np.full((5, 2), 3.0), 1.0)) == 0.0
    # a slow ramp has the drift of a jump but a tenth of its jitter per record
    ramp = bands(np.linspace(0, 1, 11)[:, None], 1.0)
    assert median_jitter(ramp) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="records >= 2"):
        median_jitter(bands([[0.0]], 1.0))
    with pytest.raises(ValueError, match="percentile 15"):
        median_jitter(bands([[0.0], [1.0]], 1.0), percentiles=(10, 50, 90))


def test_frozen_noise_repeats_one_draw_and_restores_the_generator():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), NoisyBatchNorm1d(6), nn.Linear(6, 2)).train()
    own = net[1].generator
    x = torch.randn(16, 4)
    with frozen_noise(net, seed=3):
        a, b = net(x), net(x)
        draws = (net[1].last_scale.clone(), net[1].last_shift.clone())
    assert torch.equal(a, b)
    assert net[1].generator is own
    # the draws are those of a generator seeded with 3, scale first (NoisyBatchNorm's order)
    u = torch.rand(2, 6, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(draws[0], 0.5 + u[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(draws[1], 6 * u[1] - 3, rtol=0, atol=1e-6)
    assert not torch.equal(net(x), net(x))  # outside, a fresh draw every pass


def test_linear_bn_is_scale_invariant_and_rejects_bad_shapes():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    z = x @ w.T
    expected = (z - z.mean(0)) / z.std(0, unbiased=False)
    torch.testing.assert_close(linear_bn(w, x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(linear_bn(7.0 * w, x), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="weight must be"):
        linear_bn(w.T, x)


def test_landscape_run_measures_the_step_it_takes(data):
    run = landscape_run("bn", seed=1, steps=6, checkpoints=(0, 3, 6), sharpness_at=(6,), hessian_iters=20,
                        depth=2, data=data)
    assert run.steps == [0, 3, 6] and len(run.paths) == 3 and len(run.loss) == 6
    assert set(run.sharpness) == {6} and np.isfinite(run.sharpness[6])
    # checkpoint 0 is the freshly initialized net on the first minibatch, as seeded
    torch.manual_seed(1)
    from bnlab.experiments import deep_mlp
    net = deep_mlp(2, 100, "relu", norm="torch_bn", init="he", in_features=64, out_features=10).train()
    idx = torch.randint(len(data.x_train), (128,), generator=torch.Generator().manual_seed(1))
    path = loss_along_gradient(net, nn.CrossEntropyLoss(), (data.x_train[idx], data.y_train[idx]), 0.1,
                               ks=run.paths[0].ks)
    np.testing.assert_allclose(run.paths[0].losses, path.losses, rtol=1e-6)
    assert run.loss[0] == pytest.approx(path.loss, rel=1e-6)
    np.testing.assert_allclose(run.summary("loss_range", 3), [run.paths[1].loss_range, run.paths[2].loss_range])
    cos = run.summary("cosine")
    assert cos.shape == (3,) and np.all(np.abs(cos) <= 1)
    with pytest.raises(ValueError, match="unknown summary"):
        run.summary("loss")
    with pytest.raises(ValueError, match="checkpoints must lie"):
        landscape_run(None, steps=5, checkpoints=(0, 9), data=data)


def test_scale_invariant_run_same_net_for_scaled_init_and_lr(data):
    base = scale_invariant_run(1.0, steps=8, hidden=(20, 20), data=data)
    scaled = scale_invariant_run(10.0, steps=8, hidden=(20, 20), data=data)
    np.testing.assert_allclose(scaled.loss, base.loss, rtol=1e-9)
    np.testing.assert_allclose(scaled.weight_norm, 10 * base.weight_norm, rtol=1e-9)
    np.testing.assert_allclose(scaled.grad_norm, base.grad_norm / 10, rtol=1e-9)
    slow = scale_invariant_run(10.0, scale_lr=False, steps=8, hidden=(20, 20), data=data)
    assert np.abs(slow.loss[1:] - base.loss[1:]).max() > 1e-3   # lr / c^2 on the sphere: another run
    # without weight decay ||W||^2 grows by exactly lr^2 ||grad||^2 per step (the gradient is orthogonal to W)
    grown = base.weight_norm[1:] ** 2 - base.weight_norm[:-1] ** 2
    np.testing.assert_allclose(grown, (0.1 * base.grad_norm[:-1]) ** 2, rtol=1e-6)
    with pytest.raises(ValueError, match="scale must be > 0"):
        scale_invariant_run(0.0, data=data)


def test_full_batch_run_measures_the_full_batch_loss_and_starts_each_power_iteration_warm():
    from bnlab.experiments import FULL_BATCH, full_batch_run, half_square_loss
    from bnlab.landscape import top_hessian_eigenvalue
    from bnlab.models import mlp

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 64, generator=g)
    y = torch.randint(0, 10, (60,), generator=g)
    split = Split(x, y, x[:10], y[:10])
    run = full_batch_run("bn", 0.1, seed=1, steps=20, every=10, data=split, hessian_iters=300)
    assert run.steps == [0, 10, 20] and len(run.loss) == 20 and run.loss[-1] < run.loss[0]
    torch.manual_seed(1)
    fresh = mlp(64, FULL_BATCH["hidden"], 10, norm="bn", activation=FULL_BATCH["activation"]).train()
    exact = top_hessian_eigenvalue(fresh, half_square_loss, (x, y), iters=2000, tol=1e-8).eigenvalue
    assert run.sharpness[0] == pytest.approx(exact, rel=1e-2)
    assert np.array_equal(run.after(10), run.sharpness[1:])
    with pytest.raises(ValueError, match="every"):
        full_batch_run(None, 0.1, every=0, data=split)


def test_half_square_loss_is_half_the_squared_distance_to_the_one_hot_target():
    from bnlab.experiments import half_square_loss

    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([1, 0])
    # (1^2 + 1^2 + 0) / 2 and (1^2 + 0 + 3^2) / 2, averaged
    assert half_square_loss(logits, target).item() == pytest.approx((1.0 + 5.0) / 2)
