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
