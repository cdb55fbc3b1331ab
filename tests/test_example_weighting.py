"""Inference example weighting (Summers & Dinneen 2020): bnlab.functional.example_weighted_batch_norm
against torch's eval BN (alpha = 0), instance norm (alpha = 1) and the moments of an explicit mixture."""

import pytest
import torch
import torch.nn.functional as F

from bnlab.functional import example_weighted_batch_norm

D = torch.float64


def tensors(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    x = 3.0 + 2.0 * torch.randn(shape, generator=g, dtype=D)
    mean = torch.randn(C, generator=g, dtype=D)
    var = 0.5 + torch.rand(C, generator=g, dtype=D)
    weight = torch.randn(C, generator=g, dtype=D)
    bias = torch.randn(C, generator=g, dtype=D)
    return x, mean, var, weight, bias


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (2, 2, 7)])
def test_alpha_zero_is_eval_mode_batch_norm(shape):
    x, mean, var, weight, bias = tensors(shape)
    ours = example_weighted_batch_norm(x, mean, var, weight, bias, alpha=0.0, eps=1e-3)
    theirs = F.batch_norm(x, mean, var, weight, bias, training=False, eps=1e-3)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_alpha_one_is_instance_norm():
    x, mean, var, weight, bias = tensors((4, 3, 5, 5), seed=1)
    ours = example_weighted_batch_norm(x, mean, var, weight, bias, alpha=1.0, eps=1e-5)
    theirs = F.instance_norm(x, weight=weight, bias=bias, eps=1e-5)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_half_weight_uses_the_moments_of_the_example_pooled_with_a_population_sample():
    # a population sample with exactly the running mean and (biased) variance, as many values as the
    # example has: weight 1/2 each is their concatenation, whose moments are computed directly here
    x, mean, var, _, _ = tensors((3, 2, 4, 4), seed=2)
    g = torch.Generator().manual_seed(3)
    ours = example_weighted_batch_norm(x, mean, var, alpha=0.5, eps=1e-5)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            own = x[n, c].flatten()
            p = torch.randn(own.numel(), generator=g, dtype=D)
            population = mean[c] + torch.sqrt(var[c]) * (p - p.mean()) / p.std(unbiased=False)
            pooled = torch.cat([own, population])
            expected = (x[n, c] - pooled.mean()) / torch.sqrt(pooled.var(unbiased=False) + 1e-5)
            torch.testing.assert_close(ours[n, c], expected, rtol=1e-10, atol=1e-10)


def test_each_example_is_normalized_on_its_own_at_batch_one_too():
    x, mean, var, weight, bias = tensors((5, 3, 4, 4), seed=4)
    batch = example_weighted_batch_norm(x, mean, var, weight, bias, alpha=0.3)
    for n in range(5):
        alone = example_weighted_batch_norm(x[n:n + 1], mean, var, weight, bias, alpha=0.3)
        torch.testing.assert_close(alone[0], batch[n], rtol=0, atol=0)


def test_a_brighter_example_is_pulled_back_towards_the_training_statistics():
    # running statistics of standard inputs; an example shifted by +4 (a brighter scan)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 1, 8, 8, generator=g, dtype=D) + 4.0
    mean, var = torch.zeros(1, dtype=D), torch.ones(1, dtype=D)
    means = [example_weighted_batch_norm(x, mean, var, alpha=a).mean().item() for a in (0.0, 0.25, 0.5, 1.0)]
    assert means[0] > 3.5 and abs(means[-1]) < 1e-12
    assert all(a > b for a, b in zip(means, means[1:]))   # more weight on the example, less offset


def test_gradients_pass_gradcheck():
    x, mean, var, weight, bias = tensors((3, 2, 3, 3), seed=6)
    for t in (x, weight, bias):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, w, b: example_weighted_batch_norm(a, mean, var, w, b, alpha=0.4),
                                    (x, weight, bias))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, "half", True, None])
def test_alpha_outside_zero_to_one_is_refused(alpha):
    x, mean, var, _, _ = tensors((2, 3))
    with pytest.raises(ValueError, match="alpha must be a number in \\[0, 1\\]"):
        example_weighted_batch_norm(x, mean, var, alpha=alpha)


def test_running_statistics_are_required_and_checked():
    x, mean, var, _, _ = tensors((2, 3))
    with pytest.raises(ValueError, match="required when training=False"):
        example_weighted_batch_norm(x, None, None, alpha=0.5)
    with pytest.raises(ValueError, match="running_mean has shape \\(2,\\), but the input has 3 channels"):
        example_weighted_batch_norm(x, mean[:2], var[:2], alpha=0.5)


# ----------------------------------------------------------------------------- on a model
def small_net(seed=0):
    """conv -> BN2d -> ReLU -> flatten -> linear -> BN1d, float64, with non-trivial running statistics."""
    from torch import nn

    import bnlab
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), bnlab.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(3 * 4 * 4, 4), nn.BatchNorm1d(4)).double()
    net.train()
    with torch.no_grad():
        for i in range(5):
            net(2.0 + 3.0 * torch.randn(8, 2, 6, 6, dtype=D, generator=torch.Generator().manual_seed(10 + i)))
    return net.eval()


def test_model_context_applies_the_functional_to_conv_layers_and_restores_them():
    from bnlab.layers import example_weighting

    net = small_net()
    x = torch.randn(5, 2, 6, 6, dtype=D, generator=torch.Generator().manual_seed(1)) * 4 - 1
    before = net(x)
    with torch.no_grad(), example_weighting(net, 0.5):
        inside = net(x)
    conv, bn2d, relu, flat, lin, bn1d = net
    h = example_weighted_batch_norm(conv(x), bn2d.running_mean, bn2d.running_var, bn2d.weight, bn2d.bias, 0.5,
                                    bn2d.eps)
    expected = bn1d(lin(flat(relu(h))))      # the (N, C) head keeps eval BN (spatial_only)
    torch.testing.assert_close(inside, expected, rtol=1e-12, atol=1e-12)
    assert (inside - before).abs().max() > 1e-3
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)
    assert all("forward" not in m.__dict__ for m in net.modules())


def test_model_context_at_alpha_zero_is_eval_and_batch_one_equals_the_whole_batch():
    from bnlab.layers import example_weighting

    net = small_net(seed=2)
    x = torch.randn(6, 2, 6, 6, dtype=D, generator=torch.Generator().manual_seed(3)) * 2 + 1
    with torch.no_grad():
        plain = net(x)
        with example_weighting(net, 0.0, spatial_only=False):
            torch.testing.assert_close(net(x), plain, rtol=1e-12, atol=1e-12)
        with example_weighting(net, 0.75, spatial_only=False):
            whole = net(x)
            one_by_one = torch.cat([net(x[i:i + 1]) for i in range(len(x))])
    torch.testing.assert_close(one_by_one, whole, rtol=1e-12, atol=1e-12)


def test_model_context_refuses_training_mode_bad_alpha_and_missing_statistics_and_restores_after_errors():
    from torch import nn

    from bnlab.layers import example_weighting

    net = small_net()
    with pytest.raises(ValueError, match="eval"), example_weighting(net.train(), 0.5):
        pass
    net.eval()
    with pytest.raises(ValueError, match="alpha"), example_weighting(net, 1.5):
        pass
    untracked = nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match="running statistics"), example_weighting(untracked, 0.5):
        pass
    with pytest.raises(RuntimeError, match="inside"), example_weighting(net, 0.5):
        raise RuntimeError("inside")
    assert all("forward" not in m.__dict__ for m in net.modules())
