"""bnlab.batch_norm against torch.nn.functional.batch_norm: values, gradients, running stats, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from bn_testing import assert_close, bn_shapes, max_err, random_bn_input
from hypothesis import given, settings
from hypothesis import strategies as st

import bnlab

HYPO = settings(max_examples=100, deadline=None, derandomize=True)
DTYPES = st.sampled_from([torch.float64, torch.float32])
# which of weight / bias are given (None means the affine part is skipped, as in torch)
AFFINE = st.sampled_from([(True, True), (False, False), (True, False), (False, True)])


def _affine(c, dtype, seed, has_weight, has_bias):
    g = torch.Generator().manual_seed(seed + 1)
    w = (torch.randn(c, generator=g, dtype=torch.float64) + 1).to(dtype) if has_weight else None
    b = torch.randn(c, generator=g, dtype=torch.float64).to(dtype) if has_bias else None
    return w, b


def _running(c, dtype, seed):
    g = torch.Generator().manual_seed(seed + 2)
    rm = (torch.randn(c, generator=g, dtype=torch.float64) * 3).to(dtype)
    rv = (torch.rand(c, generator=g, dtype=torch.float64) * 5 + 0.1).to(dtype)
    return rm, rv


def _leaf(t):
    return None if t is None else t.detach().clone().requires_grad_(True)


def _forward_backward(fn, x, w, b, rm, rv, training, momentum, grad_out):
    """Run fn (ours or torch's) on fresh leaf copies; return output and gradients."""
    x, w, b = _leaf(x), _leaf(w), _leaf(b)
    out = fn(x, rm, rv, w, b, training=training, momentum=momentum, eps=1e-5)
    out.backward(grad_out)
    return out.detach(), x.grad, (w.grad if w is not None else None), (b.grad if b is not None else None)


def _f64(t):
    return None if t is None else t.double()


class Runs:
    """Ours and torch's F.batch_norm on the same data, with their own copies of the running stats;
    in float32 also torch in float64 on the same (float32) values: the ground truth that tells how
    far torch's own float32 result is off."""

    NAMES = ("output", "grad input", "grad weight", "grad bias")

    def __init__(self, dtype, running):
        self.dtype = dtype
        def clone(t, dt=None):
            return None if t is None else t.clone().to(dt or t.dtype)
        self.stats = {"ours": [clone(t) for t in running], "torch": [clone(t) for t in running],
                      "truth": [clone(t, torch.float64) for t in running]}

    def step(self, x, w, b, training, momentum, grad_out, what=""):
        res = {}
        for who, fn, cast in (("ours", bnlab.batch_norm, lambda t: t), ("torch", F.batch_norm, lambda t: t),
                              ("truth", F.batch_norm, _f64)):
            if who == "truth" and self.dtype == torch.float64:
                continue
            rm, rv = self.stats[who]
            res[who] = _forward_backward(fn, cast(x), cast(w), cast(b), rm, rv, training, momentum,
                                         cast(grad_out))
        for i, name in enumerate(self.NAMES):
            self.compare(res["ours"][i], res["torch"][i], res.get("truth", [None] * 4)[i], f"{what} {name}")
        for i, name in enumerate(("running_mean", "running_var")):
            truth = self.stats["truth"][i] if self.dtype == torch.float32 else None
            self.compare(self.stats["ours"][i], self.stats["torch"][i], truth, f"{what} {name}")

    def compare(self, ours, ref, truth, what):
        if ref is None:
            assert ours is None, what
            return
        assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} vs torch's {ref.dtype}"
        if self.dtype == torch.float64:
            assert_close(ours, ref, torch.float64, what)
            return
        # float32: within 1e-5 (relative where values are large) of torch, give or take torch's own
        # float32 error on these values (tiny on standard-normal-scale data, but not where a
        # channel's spread is small next to its mean, e.g. two close values of a large mean) ...
        torch_err = max_err(ref, truth)
        assert_close(ours, ref, torch.float32, what, slack=torch_err)
        # ... and never further from the float64 truth than torch is, give or take 1e-5
        assert_close(ours.double(), truth, torch.float32, what + " vs float64 truth", slack=torch_err)


@HYPO
@given(shape=bn_shapes(training=True), dtype=DTYPES, affine=AFFINE,
       momentum=st.sampled_from([0.1, 0.5, 1.0]), seed=st.integers(0, 2**31 - 1))
def test_training_parity_with_torch(shape, dtype, affine, momentum, seed):
    """Training mode: outputs, grads of input/weight/bias and running stats over several
    consecutive steps agree with F.batch_norm (<= 1e-10 in float64, <= 1e-5 in float32)."""
    c = shape[1]
    w, b = _affine(c, dtype, seed, *affine)
    rm0, rv0 = _running(c, dtype, seed)
    runs = Runs(dtype, (rm0, rv0))
    for step in range(3):
        x = random_bn_input(shape, dtype, seed=seed + 10 * step)
        grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(seed + step),
                               dtype=torch.float64).to(dtype)
        runs.step(x, w, b, True, momentum, grad_out, f"step {step}")
    # the running stats really moved (so the comparison above was not trivially between initial values)
    assert max_err(runs.stats["ours"][0], rm0) > 1e-3


@HYPO
@given(shape=bn_shapes(training=False), dtype=DTYPES, affine=AFFINE, seed=st.integers(0, 2**31 - 1))
def test_eval_parity_with_torch(shape, dtype, affine, seed):
    """Eval mode: normalize with the given running stats; outputs and grads match torch, and the
    running stats are left untouched."""
    c = shape[1]
    w, b = _affine(c, dtype, seed, *affine)
    rm, rv = _running(c, dtype, seed)
    runs = Runs(dtype, (rm, rv))
    x = random_bn_input(shape, dtype, seed=seed)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    runs.step(x, w, b, False, 0.1, grad_out)
    assert torch.equal(runs.stats["ours"][0], rm) and torch.equal(runs.stats["ours"][1], rv)


@HYPO
@given(shape=bn_shapes(training=True), dtype=DTYPES, affine=AFFINE, seed=st.integers(0, 2**31 - 1))
def test_training_without_running_stats(shape, dtype, affine, seed):
    """running_mean = running_var = None with training=True: batch statistics only, like torch."""
    w, b = _affine(shape[1], dtype, seed, *affine)
    x = random_bn_input(shape, dtype, seed=seed)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    Runs(dtype, (None, None)).step(x, w, b, True, 0.1, grad_out)


def test_training_output_is_normalized_independent_math():
    """Independent of torch's kernel: per channel the output has mean beta and (biased) std
    gamma * sqrt(var / (var + eps)), straight from the definition."""
    x = random_bn_input((7, 3, 4, 2), torch.float64, seed=5)
    w = torch.tensor([0.5, 2.0, -3.0], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.25], dtype=torch.float64)
    out = bnlab.batch_norm(x, None, None, w, b, training=True, eps=1e-5)
    dims = (0, 2, 3)
    var = x.var(dims, unbiased=False)
    assert_close(out.mean(dims), b, torch.float64, "mean")
    assert_close(out.std(dims, unbiased=False), w.abs() * torch.sqrt(var / (var + 1e-5)), torch.float64, "std")


@pytest.mark.parametrize("path", ["small", "large"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 4), (2, 3, 2, 3)])
def test_gradcheck(monkeypatch, path, training, shape):
    """torch.autograd.gradcheck (float64 finite differences) on input, weight and bias, on both
    kernel paths (these shapes take the few-ops path unless SMALL_INPUT is 0)."""
    if path == "large":
        monkeypatch.setattr(bnlab.functional, "SMALL_INPUT", 0)
    g = torch.Generator().manual_seed(0)
    c = shape[1]
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    rm = torch.randn(c, generator=g, dtype=torch.float64)
    rv = torch.rand(c, generator=g, dtype=torch.float64) + 0.5

    def fn(x, w, b):
        # fresh copies: gradcheck calls fn many times and training updates the stats in place
        return bnlab.batch_norm(x, rm.clone(), rv.clone(), w, b, training=training, eps=1e-5)

    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-8, rtol=1e-6)


def _offset_case():
    """float32 input 1e4 + randn and its float64 ground truth: the definition evaluated in float64
    on the very same (float32-rounded) values."""
    g = torch.Generator().manual_seed(0)
    x32 = (1e4 + torch.randn(32, 8, 16, 16, generator=g)).float()
    x64 = x32.double()
    dims = (0, 2, 3)
    mu = x64.mean(dims, keepdim=True)
    var = ((x64 - mu) ** 2).mean(dims, keepdim=True)
    return x32, (x64 - mu) / torch.sqrt(var + 1e-5)


@pytest.mark.parametrize("small_input", [0, 1 << 30], ids=["large-input path", "small-input path"])
def test_float32_stability_not_worse_than_torch(monkeypatch, small_input):
    """float32 input 1e4 + randn: ours is as accurate as torch's own float32 kernel, on both paths.
    (A plain float32 mean at 1e4 is off by a few ulps, ~2e-3, which would make ours 3x worse than
    torch: this test needs the corrected two-pass statistics.)"""
    monkeypatch.setattr(bnlab.functional, "SMALL_INPUT", small_input)
    x32, truth = _offset_case()
    ours_err = max_err(bnlab.batch_norm(x32, None, None, training=True), truth)
    torch_err = max_err(F.batch_norm(x32, None, None, training=True), truth)
    assert ours_err <= 1.5 * torch_err + 1e-6, (ours_err, torch_err)


@pytest.mark.parametrize("small_input", [0, 1 << 30], ids=["large-input path", "small-input path"])
def test_float32_gradients_with_large_offset_not_worse_than_torch(monkeypatch, small_input):
    """float32 input 1e4 + randn: the grads of input and weight, against torch in float64 on the same
    values, are as accurate as torch's and within a few float32 ulps of the largest value (torch's
    are 50x and 3000x further off here), on both kernel paths. The large-input path keeps
    xc = x - mu~, whose residual mean (a few ulps of 1e4) its backward must account for: without,
    grad input is 10 ulps off."""
    monkeypatch.setattr(bnlab.functional, "SMALL_INPUT", small_input)
    x32, _ = _offset_case()
    grad_out = torch.randn(x32.shape, generator=torch.Generator().manual_seed(3))
    w = torch.linspace(0.5, 2.0, x32.shape[1])
    truth = _forward_backward(F.batch_norm, x32.double(), w.double(), None, None, None, True, 0.1, grad_out.double())
    ours = _forward_backward(bnlab.batch_norm, x32, w, None, None, None, True, 0.1, grad_out)
    ref = _forward_backward(F.batch_norm, x32, w, None, None, None, True, 0.1, grad_out)
    ulp = torch.finfo(torch.float32).eps
    for i, name, ulps in ((1, "grad input", 4), (2, "grad weight", 16)):
        ours_err, torch_err = max_err(ours[i], truth[i]), max_err(ref[i], truth[i])
        assert ours_err <= 1.5 * torch_err + 1e-6, (name, ours_err, torch_err)
        assert ours_err <= ulps * ulp * float(truth[i].abs().max()), (name, ours_err)


def test_float32_two_pass_far_better_than_naive():
    """float32 input 1e4 + randn: ours is far more accurate than the naive one-pass
    E[x^2] - E[x]^2 formula (which loses all digits of the variance), and usable in absolute terms."""
    x32, truth = _offset_case()
    dims = (0, 2, 3)
    ours_err = max_err(bnlab.batch_norm(x32, None, None, training=True), truth)
    mu32 = x32.mean(dims, keepdim=True)
    naive_var = ((x32 * x32).mean(dims, keepdim=True) - mu32 * mu32).clamp_min(0)
    naive_err = max_err((x32 - mu32) / torch.sqrt(naive_var + 1e-5), truth)
    assert naive_err > 100 * ours_err, (naive_err, ours_err)
    assert ours_err < 1e-2, ours_err


def test_float32_running_var_with_large_offset():
    """The running variance update in float32 at offset 1e4 is close to the float64 truth too."""
    g = torch.Generator().manual_seed(1)
    x32 = (1e4 + 2 * torch.randn(16, 4, 8, 8, generator=g)).float()
    rm, rv = torch.zeros(4), torch.ones(4)
    bnlab.batch_norm(x32, rm, rv, training=True, momentum=1.0)
    true_var = x32.double().var((0, 2, 3), unbiased=True)
    assert max_err(rv, true_var) / float(true_var.max()) < 1e-3
    assert max_err(rm, x32.double().mean((0, 2, 3))) < 1e-2  # float32 spacing at 1e4 is ~1e-3


# ----------------------------------------------------------------------------- bad input
def _ok(c=3):
    return torch.randn(4, c, 2), torch.zeros(c), torch.ones(c), torch.ones(c), torch.zeros(c)


@pytest.mark.parametrize("which", ["running_mean", "running_var", "weight", "bias"])
def test_wrong_channel_count_is_rejected(which):
    """A (C,) tensor whose length is not the input's channel count names itself and the channels."""
    x, rm, rv, w, b = _ok(3)
    kwargs = dict(running_mean=rm, running_var=rv, weight=w, bias=b)
    kwargs[which] = torch.ones(4)
    with pytest.raises(ValueError, match=rf"{which} has shape \(4,\).*3 channels"):
        bnlab.batch_norm(x, training=True, **kwargs)


def test_fewer_than_two_dims_is_rejected():
    with pytest.raises(ValueError, match="at least 2 dims"):
        bnlab.batch_norm(torch.randn(5), None, None, training=True)


def test_integer_input_is_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        bnlab.batch_norm(torch.arange(12).reshape(4, 3), None, None, training=True)


def test_one_value_per_channel_while_training_is_rejected():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnlab.batch_norm(torch.randn(1, 3), None, None, training=True)
    # torch agrees that this is an error (and so do we in eval, where it is fine)
    with pytest.raises(ValueError):
        F.batch_norm(torch.randn(1, 3), None, None, training=True)
    out = bnlab.batch_norm(torch.randn(1, 3), torch.zeros(3), torch.ones(3), training=False)
    assert out.shape == (1, 3)


def test_negative_eps_is_rejected():
    x, rm, rv, w, b = _ok()
    with pytest.raises(ValueError, match="eps must be >= 0"):
        bnlab.batch_norm(x, rm, rv, w, b, training=True, eps=-1e-5)


@pytest.mark.parametrize("missing", ["running_mean", "running_var", "both"])
def test_eval_without_running_stats_is_rejected(missing):
    x, rm, rv, _, _ = _ok()
    if missing in ("running_mean", "both"):
        rm = None
    if missing in ("running_var", "both"):
        rv = None
    with pytest.raises(ValueError, match="running_mean and running_var (are required|must both)"):
        bnlab.batch_norm(x, rm, rv, training=False)


def test_one_running_stat_without_the_other_is_refused():
    """torch refuses running_mean without running_var; so do we, with a ValueError."""
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="both"):
        bnlab.batch_norm(x, torch.zeros(3), None, training=True)
    with pytest.raises(ValueError, match="both"):
        bnlab.batch_norm(x, None, torch.ones(3), training=True)


def test_mismatched_dtypes_are_refused_by_name():
    """A float32 module given float64 input fails with a message naming the dtypes, not silently."""
    x64 = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="weight has dtype torch.float32 but the input has dtype torch.float64"):
        bnlab.batch_norm(x64, None, None, torch.ones(3), torch.zeros(3), training=True)
    with pytest.raises(ValueError, match="running_mean has dtype"):
        bnlab.BatchNorm1d(3).eval()(x64)
    # float32 parameters with bfloat16 input is allowed (mixed precision), as in torch
    out = bnlab.batch_norm(torch.randn(4, 3).bfloat16(), None, None, torch.ones(3), torch.zeros(3), training=True)
    assert out.shape == (4, 3)


# ----------------------------------------------------------------------------- the plain formula
@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 5), (3, 4, 2, 3), (2, 3, 2, 2, 3)])
@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False)], ids=["affine", "none", "weight"])
def test_plain_formula_equals_the_fast_kernel(shape, affine):
    """batch_norm_plain (autograd's backward) and batch_norm (the closed-form backward): the same
    outputs and gradients of input, weight and bias, float64, to 1e-10."""
    x = random_bn_input(shape, torch.float64, seed=sum(shape))
    w, b = _affine(shape[1], torch.float64, 3, *affine)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    plain = _forward_backward(lambda x, rm, rv, w, b, training, momentum, eps: bnlab.batch_norm_plain(x, w, b, eps),
                              x, w, b, None, None, True, 0.1, grad_out)
    fast = _forward_backward(bnlab.batch_norm, x, w, b, None, None, True, 0.1, grad_out)
    for name, p, f in zip(Runs.NAMES, plain, fast):
        if p is None or f is None:
            assert p is None and f is None, name
        else:
            assert_close(p, f, torch.float64, name)


def test_plain_formula_is_the_definition():
    """On a hand-computable channel: values 1, 2, 3, 6 have mu = 3 and var = (4 + 1 + 0 + 9) / 4 = 3.5."""
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64)
    out = bnlab.batch_norm_plain(x, torch.tensor([2.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                                 eps=0.5)
    expected = 2.0 * (x - 3.0) / 2.0 + 1.0  # sqrt(3.5 + 0.5) = 2
    assert_close(out, expected, torch.float64, "output")


def test_plain_formula_rejects_bad_input_by_name():
    with pytest.raises(ValueError, match="weight has shape"):
        bnlab.batch_norm_plain(torch.randn(4, 3), torch.ones(2))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bnlab.batch_norm_plain(torch.randn(1, 3))


# ----------------------------------------------------------------------------- public helpers
def test_reduction_shapes_reduce_all_but_the_channel_dim():
    from bnlab.functional import reduction_shapes
    assert reduction_shapes(torch.zeros(2, 3)) == ([0], (1, 3))
    assert reduction_shapes(torch.zeros(2, 3, 4, 5)) == ([0, 2, 3], (1, 3, 1, 1))


@pytest.mark.parametrize("count", [None, 5])
def test_update_running_stats_is_the_exponential_average(count):
    """running <- (1 - momentum) running + momentum * batch, with var * m / (m - 1) when count=m."""
    from bnlab.functional import update_running_stats_
    rm, rv = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([4.0, 1.0], dtype=torch.float64)
    mean, var = torch.tensor([3.0, -2.0], dtype=torch.float64), torch.tensor([2.0, 0.5], dtype=torch.float64)
    update_running_stats_(rm, rv, mean, var, 0.25, count=count)
    factor = 1.0 if count is None else 5 / 4
    assert_close(rm, torch.tensor([0.75 * 1 + 0.25 * 3, 0.75 * 2 - 0.25 * 2], dtype=torch.float64), torch.float64)
    assert_close(rv, torch.tensor([0.75 * 4 + 0.25 * 2 * factor, 0.75 + 0.25 * 0.5 * factor], dtype=torch.float64),
                 torch.float64)


def test_functionals_are_importable_from_their_old_homes():
    """bnlab.functional holds them; bnlab.layers and bnlab re-export them for old imports."""
    from bnlab import functional, layers
    for name in ("batch_norm", "batch_renorm", "range_batch_norm", "expected_gaussian_range", "range_correction"):
        assert getattr(layers, name) is getattr(functional, name), name
        assert name in functional.__all__
    for name in ("batch_norm", "batch_norm_plain", "batch_renorm", "range_batch_norm"):
        assert getattr(bnlab, name) is getattr(functional, name), name


# ----------------------------------------------------------------------------- both kernel paths
# Training inputs of up to functional.SMALL_INPUT values take a few-ops path; the tests above use
# small shapes, so these run the same comparisons with every input forced onto the large-input path.
@pytest.fixture
def large_input_path(monkeypatch):
    monkeypatch.setattr(bnlab.functional, "SMALL_INPUT", 0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 5), (3, 4, 2, 3), (2, 3, 2, 2, 3), (16, 4, 8, 8)])
@pytest.mark.parametrize("affine", [(True, True), (False, False), (True, False), (False, True)],
                         ids=["affine", "none", "weight", "bias"])
def test_large_input_path_matches_torch(large_input_path, shape, affine, dtype):
    """The large-input kernel: outputs, grads and running stats over 3 steps like F.batch_norm
    (float32: within 1e-5 of torch and of the float64 truth, give or take torch's own error)."""
    w, b = _affine(shape[1], dtype, 4, *affine)
    runs = Runs(dtype, _running(shape[1], dtype, 4))
    for step in range(3):
        x = random_bn_input(shape, dtype, seed=step)
        grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(step), dtype=torch.float64).to(dtype)
        runs.step(x, w, b, True, 0.3, grad_out, f"step {step}")


@pytest.mark.parametrize("path", ["small", "large"])
def test_channels_last_and_strided_input(monkeypatch, path):
    """Non-contiguous input (channels_last, a transposed view) gives torch's numbers on both paths."""
    if path == "large":
        monkeypatch.setattr(bnlab.functional, "SMALL_INPUT", 0)
    base = random_bn_input((4, 3, 5, 6), torch.float64, seed=9)
    grad_out = torch.randn(4, 3, 5, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    w, b = _affine(3, torch.float64, 9, True, True)
    for x in (base.contiguous(memory_format=torch.channels_last), base.transpose(2, 3).contiguous().transpose(2, 3)):
        assert not x.is_contiguous()
        Runs(torch.float64, _running(3, torch.float64, 9)).step(x, w, b, True, 0.1, grad_out, path)


@pytest.mark.parametrize("path", ["small", "large"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_matches_torch(monkeypatch, path, training, dtype):
    """float16/bfloat16 input with float32 weight, bias and running stats (autocast's case): the
    output and grad input in the input's dtype, the rest float32, all within a rounding of torch's."""
    if path == "large":
        monkeypatch.setattr(bnlab.functional, "SMALL_INPUT", 0)
    x = random_bn_input((6, 3, 4, 4), torch.float32, seed=2).to(dtype)
    grad_out = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
    w, b = _affine(3, torch.float32, 2, True, True)
    rm, rv = _running(3, torch.float32, 2)
    results = []
    for fn in (bnlab.batch_norm, F.batch_norm):
        stats = rm.clone(), rv.clone()
        results.append(_forward_backward(fn, x, w, b, *stats, training, 0.1, grad_out) + stats)
    names = Runs.NAMES + ("running_mean", "running_var")
    for name, ours, ref in zip(names, *results):
        assert ours.dtype == ref.dtype, f"{name}: {ours.dtype} vs {ref.dtype}"
        # one rounding of the low-precision output (8 or 11 bits) on values up to ~|ref|
        ulp = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10
        tol = (ulp if ref.dtype == dtype else 1e-5) * max(1.0, float(ref.abs().max()))
        assert max_err(ours, ref) <= tol, f"{name}: {max_err(ours, ref):.3g} > {tol:.3g}"
