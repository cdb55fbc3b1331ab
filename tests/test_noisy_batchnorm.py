"""bnlab.NoisyBatchNorm (Santurkar et al. 2018's "noisy BN"): BN's eval and running statistics;
in training torch's BN output times s plus m per channel, with s and m recovered from the output
by a least-squares fit, new at every step, in their ranges, reproducible with a seed; gradients
through the scale; refusals; the 'noisy' models."""

from __future__ import annotations

import pytest
import torch
from bn_testing import max_err, random_bn_input, share_affine
from torch import nn

import bnlab
import bnlab.layers as L
from bnlab import models, variants

TOL = 1e-12  # float64 everywhere in this file


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """Small tensors: a second thread costs more than it gives on a loaded machine."""
    torch.set_num_threads(1)


def make_pair(ours_cls, torch_cls, num_features, affine_seed=0, **noise):
    """NoisyBatchNorm (noise arguments as given) and torch's BN, float64, same random weight and bias."""
    ours = ours_cls(num_features, dtype=torch.float64, **noise)
    theirs = torch_cls(num_features, dtype=torch.float64)
    share_affine((ours, theirs), num_features, affine_seed)
    return ours, theirs


def channel_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view((1, -1) + (1,) * (like.dim() - 2))


def fit_scale_shift(y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, the least-squares s, m of y = z * s + m: s = cov(y, z) / var(z),
    m = mean(y) - s * mean(z), over the batch and all positions."""
    dims = [0] + list(range(2, y.dim()))
    zc = z - z.mean(dims, keepdim=True)
    yc = y - y.mean(dims, keepdim=True)
    s = (yc * zc).sum(dims) / (zc * zc).sum(dims)
    return s, y.mean(dims) - s * z.mean(dims)


def noisy_step(ours, theirs, x):
    """One training step of both; returns (ours' output, torch's BN output, fitted s, fitted m)."""
    with torch.no_grad():
        y, z = ours.train()(x), theirs.train()(x)
    s, m = fit_scale_shift(y, z)
    return y, z, s, m


def draws(layer, steps, shape=(6, 4)):
    """The fitted (s, m) of `steps` training steps of layer, stacked: two (steps, C) tensors."""
    reference = nn.BatchNorm1d(shape[1], dtype=torch.float64, affine=False)
    layer.double()
    with torch.no_grad():
        layer.weight.fill_(1), layer.bias.zero_()
    out = [noisy_step(layer, reference, random_bn_input(shape, seed=100 + i))[2:] for i in range(steps)]
    return torch.stack([s for s, _ in out]), torch.stack([m for _, m in out])


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("ours_cls, torch_cls, shape", [
    (L.NoisyBatchNorm1d, nn.BatchNorm1d, (8, 4)), (L.NoisyBatchNorm1d, nn.BatchNorm1d, (5, 3, 4)),
    (L.NoisyBatchNorm2d, nn.BatchNorm2d, (4, 3, 3, 2)), (L.NoisyBatchNorm, nn.BatchNorm3d, (3, 2, 2, 2, 2))])
def test_training_output_is_bn_times_s_plus_m_per_channel(ours_cls, torch_cls, shape):
    """y = BN(x) * s_c + m_c exactly for the s, m fitted per channel, which lie in U(0.5, 1.5) and
    U(-3, 3) and are the draws the layer reports; the running statistics are torch BN's."""
    ours, theirs = make_pair(ours_cls, torch_cls, shape[1], affine_seed=1, seed=3)
    for step in range(3):
        x = random_bn_input(shape, seed=step)
        y, z, s, m = noisy_step(ours, theirs, x)
        assert max_err(y, z * channel_view(s, z) + channel_view(m, z)) <= TOL * max(1.0, float(y.abs().max()))
        assert ((0.5 <= s) & (s <= 1.5)).all() and ((-3 <= m) & (m <= 3)).all()
        assert max_err(s, ours.last_scale) <= 1e-10 and max_err(m, ours.last_shift) <= 1e-10
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert max_err(getattr(ours, name), getattr(theirs, name)) <= TOL, f"step {step}: {name}"


def test_draws_change_every_step_and_fill_their_ranges():
    """200 steps of 4 channels: no two steps draw the same s or m for a channel; the draws lie in
    U(0.5, 1.5) and U(-3, 3) and spread over them like uniform ones (mean, extremes, variance)."""
    s, m = draws(L.NoisyBatchNorm1d(4, seed=0), 200)
    assert (s[1:] != s[:-1]).all() and (m[1:] != m[:-1]).all()
    assert s.min() >= 0.5 and s.max() <= 1.5 and m.min() >= -3 and m.max() <= 3
    # 800 draws each: U(a, b) has mean (a + b) / 2 and variance (b - a)^2 / 12; 5 standard errors
    assert abs(float(s.mean()) - 1.0) < 5 * (1 / 12) ** 0.5 / 800 ** 0.5
    assert abs(float(m.mean())) < 5 * (36 / 12) ** 0.5 / 800 ** 0.5
    assert abs(float(s.var()) - 1 / 12) < 0.015 and abs(float(m.var()) - 3.0) < 0.5
    assert s.min() < 0.52 and s.max() > 1.48 and m.min() < -2.9 and m.max() > 2.9


def test_noise_ranges_follow_the_arguments():
    s, m = draws(L.NoisyBatchNorm1d(4, seed=1, scale_noise=0.1, shift_noise=0.2), 50)
    assert s.min() >= 0.9 and s.max() <= 1.1 and m.abs().max() <= 0.2
    assert s.max() - s.min() > 0.15 and m.max() - m.min() > 0.3


def test_without_noise_it_is_batch_norm_in_training():
    ours, theirs = make_pair(L.NoisyBatchNorm2d, nn.BatchNorm2d, 3, scale_noise=0.0, shift_noise=0.0)
    x = random_bn_input((4, 3, 2, 2), seed=4)
    with torch.no_grad():
        assert max_err(ours(x), theirs(x)) <= TOL


def test_a_seed_or_a_generator_reproduces_the_draws():
    first = draws(L.NoisyBatchNorm1d(4, seed=7), 5)
    again = draws(L.NoisyBatchNorm1d(4, seed=7), 5)
    given = draws(L.NoisyBatchNorm1d(4, generator=torch.Generator().manual_seed(7)), 5)
    other = draws(L.NoisyBatchNorm1d(4, seed=8), 5)
    for a, b in zip(first, again):
        assert max_err(a, b) <= 1e-10
    for a, b in zip(first, given):
        assert max_err(a, b) <= 1e-10
    assert (first[0] != other[0]).all()


def test_without_a_generator_torch_manual_seed_reproduces_the_draws():
    torch.manual_seed(11)
    first = draws(L.NoisyBatchNorm1d(4), 3)
    torch.manual_seed(11)
    again = draws(L.NoisyBatchNorm1d(4), 3)
    assert all(max_err(a, b) <= 1e-10 for a, b in zip(first, again))


def test_a_refused_input_draws_nothing():
    """A batch of one is refused by BN before any noise is drawn: the next draws are a fresh layer's."""
    fresh = draws(L.NoisyBatchNorm1d(4, seed=5), 2)
    layer = L.NoisyBatchNorm1d(4, seed=5)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer(torch.randn(1, 4))
    assert all(max_err(a, b) <= 1e-10 for a, b in zip(fresh, draws(layer, 2)))


def test_gradients_flow_through_the_scale():
    """dL/dx, dL/dweight, dL/dbias are torch BN's for the upstream gradient grad_out * s (s and m
    are constants: the shift adds nothing)."""
    ours, theirs = make_pair(L.NoisyBatchNorm2d, nn.BatchNorm2d, 3, affine_seed=2, seed=0)
    x = random_bn_input((4, 3, 2, 2), seed=6)
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xa = x.clone().requires_grad_(True)
    y = ours(xa)
    y.backward(grad_out)
    with torch.no_grad():
        s, _ = fit_scale_shift(y, theirs(x))
    xb = x.clone().requires_grad_(True)
    theirs(xb).backward(grad_out * channel_view(s, x))
    assert max_err(xa.grad, xb.grad) <= 1e-10
    assert max_err(ours.weight.grad, theirs.weight.grad) <= 1e-10
    assert max_err(ours.bias.grad, theirs.bias.grad) <= 1e-10


# ----------------------------------------------------------------------------- eval and protocol
def test_eval_is_batch_norm_eval_without_noise():
    ours, theirs = make_pair(L.NoisyBatchNorm2d, nn.BatchNorm2d, 3, seed=0)
    for step in range(3):
        noisy_step(ours, theirs, random_bn_input((5, 3, 2, 2), seed=step))
    ours.eval(), theirs.eval()
    x = random_bn_input((4, 3, 2, 2), seed=9)
    scale = ours.last_scale
    with torch.no_grad():
        first, second, ref = ours(x), ours(x), theirs(x)
    assert max_err(first, ref) <= TOL and torch.equal(first, second)
    assert ours.last_scale is scale  # no draw in eval


def test_state_dict_is_torch_batch_norms_and_repr():
    ours, theirs = make_pair(L.NoisyBatchNorm1d, nn.BatchNorm1d, 3, seed=0)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    noisy_step(ours, theirs, random_bn_input((4, 3), seed=1))
    fresh = L.NoisyBatchNorm1d(3, dtype=torch.float64)
    fresh.load_state_dict(theirs.state_dict())
    # torch's statistics and ours agree to rounding (two implementations of BN)
    assert all(max_err(a, b) <= TOL for a, b in zip(fresh.state_dict().values(), ours.state_dict().values()))
    assert repr(bnlab.NoisyBatchNorm2d(8)) == ("NoisyBatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, "
                                                "track_running_stats=True, noise='uniform', scale_noise=0.5, "
                                                "shift_noise=3.0)")
    assert L.is_batchnorm(ours) and fresh.last_scale is None and fresh.last_shift is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(scale_noise=-0.1), "scale_noise"), (dict(scale_noise=1.5), "scale_noise"),
    (dict(scale_noise="0.5"), "scale_noise"),
    (dict(shift_noise=-1.0), "shift_noise"), (dict(shift_noise=float("inf")), "shift_noise"),
    (dict(shift_noise=float("nan")), "shift_noise"),
    (dict(seed=1, generator=torch.Generator()), "not both"), (dict(generator=3), "torch.Generator"),
    (dict(seed="1"), "seed must be an int"), (dict(seed=True), "seed must be an int"),
    (dict(num_features=0), "num_features"), (dict(momentum=2.0), "momentum"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.NoisyBatchNorm(**{"num_features": 3, **kwargs})


# ----------------------------------------------------------------------------- the models' 'noisy'
def test_models_build_noisy_batch_norm():
    net = models.mlp(5, (8,), 3, norm="noisy")
    assert [type(m) for m in net.modules() if isinstance(m, L.NoisyBatchNorm)] == [L.NoisyBatchNorm1d]
    conv = models.conv_net(1, 10, (4,), norm="noisy", image_size=4)
    assert [type(m) for m in conv.modules() if isinstance(m, L.NoisyBatchNorm)] == [L.NoisyBatchNorm2d]
    assert variants.label("noisy") == "noisy BN" and variants.color("noisy") == variants.VARIANTS["noisy"].color
    x = torch.randn(6, 5)
    with torch.no_grad():
        # noise in training, none in eval
        assert not torch.equal(net.train()(x), net(x)) and torch.equal(net.eval()(x), net(x))


# ----------------------------------------------------------------------------- the time-varying form
def test_time_varying_noise_without_jitter_is_bn_times_sigma_plus_mu_in_the_papers_ranges():
    """r = 0: y = BN(x) * sigma_c + mu_c with sigma_c in U(1, n_sigma), mu_c in U(-n_mu, n_mu), new each step."""
    ours, theirs = make_pair(L.NoisyBatchNorm2d, nn.BatchNorm2d, 3, affine_seed=2, noise="time_varying", r=0.0,
                             seed=5)
    fitted = []
    for step in range(4):
        y, z, s, m = noisy_step(ours, theirs, random_bn_input((4, 3, 3, 3), seed=step))
        assert max_err(y, z * channel_view(s, z) + channel_view(m, z)) <= TOL * max(1.0, float(y.abs().max()))
        assert ((1 <= s) & (s <= 1.25)).all() and ((-0.5 <= m) & (m <= 0.5)).all()
        assert max_err(s, ours.last_scale) <= 1e-10 and max_err(m, ours.last_shift) <= 1e-10
        fitted.append(s)
    assert (fitted[0] - fitted[1]).abs().min() > 0


def test_time_varying_noise_jitters_every_activation_with_spread_r():
    """e = y - (BN(x) sigma + mu) = BN(x) (s - sigma) + (m - mu): mean 0, variance r^2 (BN(x)^2 + 1)."""
    r = 0.1
    layer = L.NoisyBatchNorm1d(3, affine=False, noise="time_varying", r=r, seed=7, dtype=torch.float64).train()
    x = random_bn_input((20000, 3), seed=1)
    with torch.no_grad():
        y = layer(x)
    z = nn.functional.batch_norm(x, None, None, training=True, eps=layer.eps)
    e = y - (z * layer.last_scale + layer.last_shift)
    assert e.mean(0).abs().max() < 5 * r / 20000 ** 0.5 * 2
    ratio = (e ** 2 / (z ** 2 + 1)).mean(0) / r ** 2
    assert ((0.95 < ratio) & (ratio < 1.05)).all(), ratio
    # and the jitter is per activation: two examples with the same x get different outputs
    twin = torch.cat([x[:1], x[:1], x[2:10]])
    with torch.no_grad():
        out = layer(twin)
    assert (out[0] - out[1]).abs().min() > 0


def test_time_varying_noise_refuses_bad_constants_and_is_plain_bn_in_eval():
    for kwargs, match in ((dict(noise="gaussian"), "noise must be"), (dict(n_sigma=0.5), "n_sigma"),
                          (dict(n_mu=-1.0), "n_mu"), (dict(r=float("nan")), "r must")):
        with pytest.raises(ValueError, match=match):
            L.NoisyBatchNorm1d(4, **kwargs)
    ours, theirs = make_pair(L.NoisyBatchNorm1d, nn.BatchNorm1d, 4, noise="time_varying", seed=0)
    x = random_bn_input((6, 4), seed=3)
    with torch.no_grad():
        assert max_err(ours.eval()(x), theirs.eval()(x)) <= TOL
