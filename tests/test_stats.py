"""bnlab.stats.effective_sample_size: n_eff on pools whose answer is known from the model that made
them (i.i.d. values, values shared by a whole example, a mix), and on the exact finite-pool formula."""

import math

import pytest
import torch

from bnlab import probes, stats
from bnlab.stats import EffectiveSampleSize, effective_sample_size


def gaussian(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def per_example(n, c, h, w, seed=0):
    """Each example and channel one random number, broadcast over its h x w positions."""
    return gaussian(n, c, 1, 1, seed=seed).expand(n, c, h, w).contiguous()


# relative tolerances: the draws' variance has sd sqrt(2 / num_batches) ~ 3 %, the pool's own
# variances sd sqrt(2 / N) ~ 2 %; 15 % is about 4 sd, while the alternatives below differ by 8x or more
TOL = 0.15


def test_independent_values_are_worth_their_nominal_count():
    result = effective_sample_size(gaussian(4096, 4, 4, 4), batch_size=8)
    assert isinstance(result, EffectiveSampleSize)
    assert result.nominal == 8 * 16 and result.positions == 16 and result.n_eff.shape == (4,)
    assert torch.allclose(result.n_eff, torch.full((4,), 128.0, dtype=result.n_eff.dtype), rtol=TOL)
    assert torch.allclose(result.per_example, torch.full((4,), 16.0, dtype=result.n_eff.dtype), rtol=TOL)


def test_values_shared_by_an_example_are_worth_one_per_example():
    """All 8 x 8 values of an example alike: the batch mean is the mean of B numbers, n_eff = B, not 64 B."""
    result = effective_sample_size(per_example(4096, 4, 8, 8), batch_size=8)
    assert result.nominal == 512
    assert torch.allclose(result.n_eff, torch.full((4,), 8.0, dtype=result.n_eff.dtype), rtol=TOL)
    assert "nominal B*positions = 8*64 = 512" in str(result)


def test_a_mix_matches_its_model():
    """x = a_example + e_position with Var(a) = Var(e) = 1 and P = 16: Var(x) = 2 and
    Var(mu_B) = (1 + 1/16) / B, so n_eff = 2 B / (1 + 1/16) = 15.06 at B = 8."""
    x = gaussian(4096, 3, 1, 1, seed=1) + gaussian(4096, 3, 4, 4, seed=2)
    result = effective_sample_size(x, batch_size=8, num_batches=4000)
    expected = 2 * 8 / (1 + 1 / 16)
    assert torch.allclose(result.n_eff, torch.full((3,), expected, dtype=result.n_eff.dtype), rtol=TOL)


@pytest.mark.parametrize("n, batch_size", [(64, 32), (200, 10)])
def test_the_draws_agree_with_the_exact_finite_pool_formula(n, batch_size):
    """Sampling B of N examples without replacement, Var(mu_B) = var_ex / B * (N - B) / (N - 1),
    var_ex the (divisor-N) variance of the example means; corrected, n_eff = B Var(x) / var_ex for
    this very pool. Uncorrected, the draws vary less and n_eff is (N - 1) / (N - B) times larger."""
    x = gaussian(n, 3, 2, 5, seed=3) + gaussian(n, 3, 1, 1, seed=4)
    pool_var = x.double().var((0, 2, 3), unbiased=False)
    example_var = x.double().mean((2, 3)).var(0, unbiased=False)
    exact = batch_size * pool_var / example_var
    corrected = effective_sample_size(x, batch_size, num_batches=8000)
    uncorrected = effective_sample_size(x, batch_size, num_batches=8000, finite_pool_correction=False)
    rtol = 4 * math.sqrt(2 / 8000)
    assert torch.allclose(corrected.n_eff, exact, rtol=rtol)
    assert torch.allclose(uncorrected.n_eff, exact * (n - 1) / (n - batch_size), rtol=rtol)


def test_the_variance_statistic():
    """i.i.d. values: Var(s2) ~ (mu4 - sigma^4) / n, n_eff ~ B P. Values shared by an example: s2 is
    the variance of B numbers, whose (divisor-B) variance has Var = 2 (B - 1) / B^2 for Gaussians:
    n_eff = B^2 / (B - 1) = 33.0 at B = 32."""
    iid = effective_sample_size(gaussian(4096, 4, 4, 4), batch_size=8, statistic="var")
    assert iid.statistic == "var"
    assert torch.allclose(iid.n_eff, torch.full((4,), 128.0, dtype=iid.n_eff.dtype), rtol=TOL)
    shared = effective_sample_size(per_example(4096, 4, 8, 8), batch_size=32, statistic="var")
    assert torch.allclose(shared.n_eff, torch.full((4,), 32 ** 2 / 31, dtype=shared.n_eff.dtype), rtol=TOL)


def test_flat_features_and_seeding():
    x = gaussian(500, 2)
    a, b = effective_sample_size(x, 10, seed=5), effective_sample_size(x, 10, seed=5)
    assert a.positions == 1 and a.nominal == 10 and torch.equal(a.n_eff, b.n_eff)
    assert not torch.equal(a.n_eff, effective_sample_size(x, 10, seed=6).n_eff)


@pytest.mark.parametrize("values, kwargs, match", [
    (gaussian(10), dict(batch_size=2), r"\(N, C, \*spatial\)"),
    (gaussian(1, 3, 4, 4), dict(batch_size=1), "pool of N >= 2"),
    (torch.ones(10, 3, dtype=torch.int64), dict(batch_size=2), "floating-point"),
    (gaussian(10, 3, 2, 2).numpy(), dict(batch_size=2), "floating-point tensor"),
    (gaussian(10, 3, 2, 2), dict(batch_size=11), "batch_size 11 is not smaller than the pool of 10"),
    (gaussian(10, 3, 2, 2), dict(batch_size=10), "whole pool"),
    (gaussian(10, 3, 2, 2), dict(batch_size=0), "batch_size must be an int >= 1"),
    (gaussian(10, 3, 2, 2), dict(batch_size=2.0), "batch_size must be an int"),
    (gaussian(10, 3, 2, 2), dict(batch_size=2, num_batches=1), "num_batches"),
    (gaussian(10, 3, 2, 2), dict(batch_size=2, statistic="median"), "statistic must be one of"),
    (gaussian(10, 3), dict(batch_size=1, statistic="var"), "at least 2 values per channel"),
])
def test_bad_input_is_named(values, kwargs, match):
    with pytest.raises(ValueError, match=match):
        effective_sample_size(values, **kwargs)


def test_probes_still_export_the_statistics_they_did():
    for name in ("median_drift", "SATURATION", "DEFAULT_PERCENTILES"):
        assert getattr(probes, name) is getattr(stats, name)
