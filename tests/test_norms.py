"""bnlab.norms as drop-in replacements for torch's LayerNorm, GroupNorm, InstanceNorm1d/2d/3d and RMSNorm
(outputs, gradients, running statistics, state_dicts, in float64 and float32), gradchecks, the identities
between them (GroupNorm with one group is LayerNorm, with C groups InstanceNorm), RMS norm against its
closed formula, weight normalization against torch's, and the refusals of bad input."""

from __future__ import annotations

import copy
import inspect
import warnings

import numpy as np
import pytest
import torch
from bn_testing import assert_close, max_err, random_bn_input
from torch import nn

import bnlab
from bnlab import norms

pytestmark = pytest.mark.usefixtures("one_thread")

HAS_TORCH_RMSNORM = hasattr(nn, "RMSNorm")  # torch >= 2.4
needs_torch_rmsnorm = pytest.mark.skipif(not HAS_TORCH_RMSNORM, reason="torch.nn.RMSNorm needs torch >= 2.4")


def torch_takes(name: str, argument: str) -> bool:
    """Whether torch's module of that name takes the constructor argument (bias= came in different
    torch versions for different modules)."""
    return hasattr(nn, name) and argument in inspect.signature(getattr(nn, name).__init__).parameters


def spec(name, args, kwargs, shape, id_):
    marks = []
    if name == "RMSNorm":
        marks.append(needs_torch_rmsnorm)
    if "bias" in kwargs and not torch_takes(name, "bias"):
        marks.append(pytest.mark.skip(reason=f"this torch's {name} has no bias argument"))
    return pytest.param(name, args, kwargs, shape, id=id_, marks=marks)


# (module name in both bnlab.norms and torch.nn, positional args, keyword args, an input shape)
SPECS = [
    spec("LayerNorm", ((5,),), {}, (4, 3, 5), "ln-last"),
    spec("LayerNorm", ([3, 5],), {}, (2, 4, 3, 5), "ln-two-dims"),
    spec("LayerNorm", (5,), {}, (5,), "ln-one-example"),
    spec("LayerNorm", (torch.Size([3, 2]),), {"eps": 1e-3}, (4, 3, 2), "ln-size-eps"),
    spec("LayerNorm", (5,), {"elementwise_affine": False}, (6, 5), "ln-no-affine"),
    spec("LayerNorm", (5,), {"bias": False}, (6, 5), "ln-no-bias"),
    spec("GroupNorm", (3, 6), {}, (4, 6, 3, 2), "gn-3-groups"),
    spec("GroupNorm", (2, 8), {}, (5, 8), "gn-vectors"),
    spec("GroupNorm", (1, 6), {}, (2, 6, 5), "gn-1-group"),
    spec("GroupNorm", (6, 6), {}, (2, 6, 2, 2, 2), "gn-C-groups-3d"),
    spec("GroupNorm", (2, 4), {"affine": False}, (3, 4, 5), "gn-no-affine"),
    spec("GroupNorm", (2, 4), {"bias": False}, (3, 4, 5), "gn-no-bias"),
    spec("RMSNorm", (5,), {}, (4, 3, 5), "rms-last"),
    spec("RMSNorm", ([3, 5],), {"eps": 1e-6}, (2, 4, 3, 5), "rms-two-dims-eps"),
    spec("RMSNorm", (5,), {"elementwise_affine": False}, (6, 5), "rms-no-affine"),
    spec("RMSNorm", (5,), {}, (5,), "rms-one-example"),
]
for dim, shape in ((1, (4, 3, 5)), (2, (2, 3, 4, 5)), (3, (2, 3, 2, 3, 4))):
    for affine in (False, True):
        for track in (False, True):
            SPECS.append(spec(f"InstanceNorm{dim}d", (3,), {"affine": affine, "track_running_stats": track},
                              shape, f"in{dim}d-affine={affine}-track={track}"))
    SPECS.append(spec(f"InstanceNorm{dim}d", (3,), {"affine": True, "track_running_stats": True},
                      shape[1:], f"in{dim}d-unbatched"))
SPECS += [
    spec("InstanceNorm2d", (3,), {"track_running_stats": True, "momentum": None}, (2, 3, 4, 5), "in2d-momentum-None"),
    spec("InstanceNorm2d", (3,), {"track_running_stats": True, "momentum": 0.5, "eps": 1e-3}, (2, 3, 4, 5),
         "in2d-momentum-eps"),
    spec("InstanceNorm2d", (3,), {"affine": True, "bias": False}, (2, 3, 4, 5), "in2d-no-bias"),
]


def random_input(shape, dtype, seed):
    if len(shape) < 2:
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2).to(dtype)
    return random_bn_input(shape, dtype=dtype, seed=seed)


def make_pair(name, args, kwargs, dtype, seed=0):
    """Ours and torch's module with the same arguments and the same random parameters (set by hand)."""
    ours = getattr(norms, name)(*args, dtype=dtype, **kwargs)
    theirs = getattr(nn, name)(*args, dtype=dtype, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (name_o, p_o), (name_t, p_t) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            assert name_o == name_t and p_o.shape == p_t.shape
            around = 1.0 if name_t == "weight" else 0.0   # gamma near 1, beta near 0
            value = torch.randn(p_t.shape, generator=g, dtype=torch.float64) * 0.5 + around
            p_o.copy_(value)
            p_t.copy_(value)
    return ours, theirs


def forward_backward(module, x, grad_out):
    """The output and {name: gradient} for the input and every parameter; the gradients are reset."""
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.backward(grad_out)
    grads = {"input": x.grad}
    for name, p in module.named_parameters():
        grads[name] = p.grad
        p.grad = None
    return out.detach(), grads


def compare_step(ours, theirs, shape, dtype, seed, what):
    """One forward and backward through both on the same data: outputs, gradients and buffers agree.

    In float32 the tolerance adds torch's own float32 error, measured against a float64 copy of its
    module on the same numbers (assert_close's slack): on a group of two close values torch's float32
    GroupNorm was off by 3e-5 (ours: 2.7e-6)."""
    x = random_input(shape, dtype, seed)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64).to(dtype)
    exact = copy.deepcopy(theirs).double() if dtype != torch.float64 else None
    (out_o, grads_o), (out_t, grads_t) = forward_backward(ours, x, grad_out), forward_backward(theirs, x, grad_out)
    if exact is None:
        out_e, grads_e, buffers_e = out_t, grads_t, dict(theirs.named_buffers())
    else:
        out_e, grads_e = forward_backward(exact, x.double(), grad_out.double())
        buffers_e = dict(exact.named_buffers())

    assert out_o.dtype == out_t.dtype == dtype
    assert_close(out_o, out_t, dtype, f"{what} output", slack=max_err(out_t, out_e))
    assert list(grads_o) == list(grads_t)
    for name in grads_t:
        assert_close(grads_o[name], grads_t[name], dtype, f"{what} grad {name}",
                     slack=max_err(grads_t[name], grads_e[name]))
    buffers_o, buffers_t = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert list(buffers_o) == list(buffers_t), what
    for name, b in buffers_t.items():
        assert buffers_o[name].dtype == b.dtype, f"{what} {name}"
        assert_close(buffers_o[name], b, dtype, f"{what} {name}", slack=max_err(b, buffers_e[name]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, args, kwargs, shape", SPECS)
def test_matches_torch_in_train_and_eval(name, args, kwargs, shape, dtype):
    """Three training steps (running statistics, where tracked, move each time), then eval."""
    ours, theirs = make_pair(name, args, kwargs, dtype)
    assert repr(ours) == repr(theirs)
    for step in range(3):
        compare_step(ours, theirs, shape, dtype, seed=step, what=f"train step {step}")
    ours.eval()
    theirs.eval()
    compare_step(ours, theirs, shape, dtype, seed=10, what="eval")


@pytest.mark.parametrize("name, args, kwargs, shape", SPECS)
def test_state_dicts_load_both_ways(name, args, kwargs, shape):
    ours, theirs = make_pair(name, args, kwargs, torch.float64, seed=1)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    x = random_input(shape, torch.float64, seed=3)
    theirs(x)  # moves running statistics, where tracked
    fresh_ours, fresh_theirs = make_pair(name, args, kwargs, torch.float64, seed=2)
    fresh_ours.load_state_dict(theirs.state_dict())     # strict: same keys, same shapes
    fresh_theirs.load_state_dict(ours.state_dict())
    for module, source in ((fresh_ours, theirs), (fresh_theirs, ours)):
        for key, value in source.state_dict().items():
            assert torch.equal(module.state_dict()[key], value), key
    for module in (fresh_ours, fresh_theirs, ours, theirs):
        module.eval()
    assert max_err(fresh_ours(x), theirs(x)) <= 1e-10
    assert max_err(fresh_theirs(x), ours(x)) <= 1e-10


def test_instance_norm_loads_a_state_dict_without_num_batches_tracked():
    """A state_dict from before torch 0.4.1 (metadata version 1) has no num_batches_tracked; as torch, the
    module keeps its own."""
    ours = norms.InstanceNorm2d(3, track_running_stats=True)
    state = ours.state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    ours.load_state_dict(state)
    assert int(ours.num_batches_tracked) == 0


def test_per_example_norms_are_the_same_in_train_and_eval():
    x = random_input((4, 6, 3, 3), torch.float64, seed=0)
    for module in (norms.LayerNorm((6, 3, 3)), norms.GroupNorm(3, 6), norms.RMSNorm(3), norms.RMSGroupNorm(2, 6),
                   norms.InstanceNorm2d(6)):
        module.double()
        assert torch.equal(module.train()(x), module.eval()(x)), type(module).__name__
        assert not bnlab.is_batchnorm(module)


def test_instance_norm_running_statistics_by_hand():
    """running_mean and running_var after one step, from each instance's mean and unbiased variance
    (computed here with NumPy), averaged over the batch; eval then normalizes with them."""
    x = random_input((3, 2, 4, 5), torch.float64, seed=4)
    m = norms.InstanceNorm2d(2, momentum=0.3, track_running_stats=True).double()
    m(x)
    values = x.numpy().reshape(3, 2, -1)
    mean = values.mean(axis=2).mean(axis=0)
    var = values.var(axis=2, ddof=1).mean(axis=0)
    np.testing.assert_allclose(m.running_mean.numpy(), 0.3 * mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(), 0.7 + 0.3 * var, rtol=0, atol=1e-12)
    assert int(m.num_batches_tracked) == 0   # torch never advances it for InstanceNorm
    m.eval()
    expected = (values - m.running_mean.numpy()[:, None]) / np.sqrt(m.running_var.numpy()[:, None] + 1e-5)
    np.testing.assert_allclose(m(x).numpy().reshape(3, 2, -1), expected, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- RMS norm
def rms_by_hand(x: torch.Tensor, dims: int, weight, eps: float) -> np.ndarray:
    """y = x / sqrt(mean over the last `dims` dims of x^2 + eps) * weight, in NumPy float64."""
    values = x.double().numpy()
    axes = tuple(range(-dims, 0))
    y = values / np.sqrt((values ** 2).mean(axis=axes, keepdims=True) + eps)
    return y if weight is None else y * weight.detach().double().numpy()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_rms_norm_closed_formula(dtype):
    x = random_input((4, 3, 5), dtype, seed=5)
    m = norms.RMSNorm((3, 5), eps=1e-4, dtype=dtype)
    with torch.no_grad():
        m.weight.copy_(torch.linspace(0.5, 2.0, 15, dtype=torch.float64).view(3, 5))
    expected = torch.from_numpy(rms_by_hand(x, 2, m.weight, 1e-4))
    assert_close(m(x), expected.to(dtype), dtype, "RMSNorm")


@pytest.mark.parametrize("dtype, scale", [(torch.float64, 1e-9), (torch.float32, 1e-4)], ids=["float64", "float32"])
def test_rms_norm_default_eps_is_the_dtypes_machine_epsilon(dtype, scale):
    """Inputs so small that mean(x^2) is below machine epsilon: there eps=None decides the output."""
    x = random_input((3, 6), dtype, seed=6) * scale
    out = norms.RMSNorm(6, dtype=dtype)(x)
    expected = torch.from_numpy(rms_by_hand(x, 1, None, torch.finfo(dtype).eps)).to(dtype)
    assert_close(out, expected, dtype, "eps=None")
    assert max_err(out, norms.RMSNorm(6, eps=0.0, dtype=dtype)(x)) > 0.1   # eps=None is not eps=0
    if HAS_TORCH_RMSNORM:
        assert_close(out, nn.RMSNorm(6, dtype=dtype)(x), dtype, "eps=None vs torch")


def test_rms_group_norm_with_one_group_is_rms_norm_over_the_example():
    x = random_input((3, 4, 2, 5), torch.float64, seed=7)
    group = norms.RMSGroupNorm(1, 4, eps=1e-6, bias=False).double()
    with torch.no_grad():
        group.weight.copy_(torch.tensor([0.5, 1.0, 1.5, -2.0]))
    layer = norms.RMSNorm((4, 2, 5), eps=1e-6).double()
    with torch.no_grad():
        layer.weight.copy_(group.weight.view(4, 1, 1).expand(4, 2, 5))
    assert max_err(group(x), layer(x)) <= 1e-10
    expected = rms_by_hand(x, 3, layer.weight, 1e-6)
    assert max_err(group(x), torch.from_numpy(expected)) <= 1e-10


def test_rms_group_norm_on_centred_groups_is_group_norm():
    """Where each group's values have mean 0 already, centring changes nothing: RMSGroupNorm = GroupNorm."""
    x = random_input((3, 6, 4), torch.float64, seed=8).view(3, 3, -1)
    x = (x - x.mean(2, keepdim=True)).view(3, 6, 4)
    rms, gn = norms.RMSGroupNorm(3, 6, eps=1e-5).double(), norms.GroupNorm(3, 6).double()
    with torch.no_grad():
        for m in (rms, gn):
            m.weight.copy_(torch.arange(1.0, 7.0))
            m.bias.copy_(torch.arange(6.0) - 2)
    assert max_err(rms(x), gn(x)) <= 1e-10
    assert repr(rms) == "RMSGroupNorm(3, 6, eps=1e-05, affine=True, bias=True)"


# ----------------------------------------------------------------------------- identities
def test_group_norm_with_one_group_is_layer_norm_over_channels_and_positions():
    x = random_input((3, 4, 2, 5), torch.float64, seed=9)
    gn, ln = make_pair("GroupNorm", (1, 4), {}, torch.float64)[0], norms.LayerNorm((4, 2, 5)).double()
    with torch.no_grad():
        ln.weight.copy_(gn.weight.view(4, 1, 1).expand(4, 2, 5))
        ln.bias.copy_(gn.bias.view(4, 1, 1).expand(4, 2, 5))
    assert max_err(gn(x), ln(x)) <= 1e-10


def test_group_norm_with_a_group_per_channel_is_instance_norm():
    x = random_input((3, 4, 2, 5), torch.float64, seed=10)
    gn, instance = norms.GroupNorm(4, 4).double(), norms.InstanceNorm2d(4, affine=True).double()
    with torch.no_grad():
        for m in (gn, instance):
            m.weight.copy_(torch.tensor([0.5, 1.0, 1.5, -2.0]))
            m.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 3.0]))
    assert max_err(gn(x), instance(x)) <= 1e-10


def test_layer_norm_by_hand():
    """LN against NumPy: each example's mean and biased variance over its last two dims."""
    x = random_input((3, 4, 5), torch.float64, seed=11)
    values = x.numpy()
    mean = values.mean(axis=(1, 2), keepdims=True)
    var = values.var(axis=(1, 2), keepdims=True)
    expected = (values - mean) / np.sqrt(var + 1e-5)
    assert max_err(norms.LayerNorm((4, 5), elementwise_affine=False)(x), torch.from_numpy(expected)) <= 1e-10


# ----------------------------------------------------------------------------- gradcheck
def _randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_(True)


GRADCHECKS = {
    "layer_norm": (lambda x, w, b: norms.layer_norm(x, (3, 2), w, b), ((2, 3, 2), (3, 2), (3, 2))),
    "group_norm": (lambda x, w, b: norms.group_norm(x, 2, w, b), ((2, 4, 3), (4,), (4,))),
    "instance_norm": (lambda x, w, b: norms.instance_norm(x, weight=w, bias=b), ((2, 3, 4), (3,), (3,))),
    "instance_norm_eval": (lambda x, w, b: norms.instance_norm(
        x, torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64),
        w, b, use_input_stats=False), ((2, 3, 4), (3,), (3,))),
    "rms_norm": (lambda x, w: norms.rms_norm(x, (2, 3), w, eps=1e-6), ((2, 2, 3), (2, 3))),
    "rms_group_norm": (lambda x, w, b: norms.rms_group_norm(x, 2, w, b), ((2, 4, 3), (4,), (4,))),
}


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck(name):
    fn, shapes = GRADCHECKS[name]
    inputs = [_randn(*shape, seed=i) for i, shape in enumerate(shapes)]
    assert torch.autograd.gradcheck(fn, inputs)


def test_gradcheck_modules_with_tracking_and_weight_norm():
    instance = norms.InstanceNorm1d(3, affine=True, track_running_stats=True).double()
    assert torch.autograd.gradcheck(instance, (_randn(2, 3, 4),))
    layer = norms.WeightNormLinear(4, 3, dtype=torch.float64)

    def weight_normed(x, g, v, b):
        return torch.func.functional_call(layer, {"weight_g": g, "weight_v": v, "bias": b}, (x,))

    assert torch.autograd.gradcheck(weight_normed, (_randn(5, 4), _randn(3, 1, seed=1), _randn(3, 4, seed=2),
                                                    _randn(3, seed=3)))


# ----------------------------------------------------------------------------- weight norm
def torch_weight_norm_linear(in_features, out_features, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch >= 2.1 prefers parametrizations.weight_norm
        return nn.utils.weight_norm(nn.Linear(in_features, out_features, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_weight_norm_linear_matches_torch(dtype):
    ours = norms.WeightNormLinear(4, 3, dtype=dtype)
    theirs = torch_weight_norm_linear(4, 3, dtype=dtype)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict()) == ["bias", "weight_g", "weight_v"]
    g = torch.Generator().manual_seed(12)
    with torch.no_grad():
        for name in ("weight_g", "weight_v", "bias"):
            value = torch.randn(getattr(theirs, name).shape, generator=g, dtype=torch.float64).to(dtype)
            getattr(theirs, name).copy_(value)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 4, generator=g, dtype=torch.float64).to(dtype)
    grad_out = torch.randn(6, 3, generator=g, dtype=torch.float64).to(dtype)
    results = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        out.backward(grad_out)
        results.append([out.detach(), xi.grad] + [getattr(m, n).grad for n in ("weight_g", "weight_v", "bias")])
    for what, a, b in zip(("output", "input", "weight_g", "weight_v", "bias"), *results):
        assert_close(a, b, dtype, what)
    # the effective weight, and torch's newer parametrization computing the same layer
    assert_close(ours.weight, theirs.weight, dtype, "weight")
    param = nn.utils.parametrizations.weight_norm(nn.Linear(4, 3, dtype=dtype))
    with torch.no_grad():
        param.parametrizations.weight.original0.copy_(ours.weight_g)
        param.parametrizations.weight.original1.copy_(ours.weight_v)
        param.bias.copy_(ours.bias)
    assert_close(param(x), ours(x), dtype, "parametrizations.weight_norm")


def test_weight_norm_linear_starts_as_nn_linear_and_normalizes_rows():
    torch.manual_seed(13)
    ours = norms.WeightNormLinear(5, 3, dtype=torch.float64)
    torch.manual_seed(13)
    linear = nn.Linear(5, 3, dtype=torch.float64)
    assert max_err(ours.weight, linear.weight) <= 1e-12 and torch.equal(ours.bias, linear.bias)
    with torch.no_grad():
        ours.weight_v.mul_(torch.tensor([[2.0], [0.1], [7.0]], dtype=torch.float64))  # v_i -> c_i v_i
    assert max_err(ours.weight, linear.weight) <= 1e-12
    assert torch.allclose(ours.weight.norm(dim=1), ours.weight_g.view(-1).abs())
    assert repr(ours) == "WeightNormLinear(in_features=5, out_features=3, bias=True)"
    assert norms.WeightNormLinear(5, 3, bias=False).bias is None


# ----------------------------------------------------------------------------- low precision
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # torch's RMSNorm: no fused kernel
@pytest.mark.parametrize("name, args", [("LayerNorm", (8,)), ("GroupNorm", (2, 4)),
                                        pytest.param("RMSNorm", (8,), marks=needs_torch_rmsnorm)])
def test_bfloat16_input_as_torch(name, args):
    """float32 parameters with bfloat16 input (mixed precision): the statistics in float32, the output
    bfloat16, as torch's; within two bfloat16 ulps of torch."""
    ours, theirs = make_pair(name, args, {}, torch.float32)
    x = random_input((3, 4, 8), torch.float32, seed=14).to(torch.bfloat16)
    with torch.no_grad():
        out_o, out_t = ours(x), theirs(x)
    assert out_o.dtype == out_t.dtype == torch.bfloat16
    assert max_err(out_o, out_t) <= 2 * 2 ** -7 * max(1.0, float(out_t.abs().max()))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("module, x, match", [
    (norms.LayerNorm((3, 5)), torch.randn(2, 3, 4), r"last 2 dim\(s\) are \(3, 5\).*\(2, 3, 4\)"),
    (norms.LayerNorm(5), torch.randn(5, 4), r"last 1 dim\(s\) are \(5,\)"),
    (norms.LayerNorm((2, 5)), torch.randn(5), r"last 2 dim"),
    (norms.RMSNorm((3, 5)), torch.randn(2, 5, 3), r"last 2 dim\(s\) are \(3, 5\)"),
    (norms.GroupNorm(2, 6), torch.randn(2, 4, 3), r"GroupNorm\(2, 6\) expected 6 channels on dim 1.*\(2, 4, 3\)"),
    (norms.GroupNorm(2, 6), torch.randn(6), r"at least 2 dims"),
    (norms.RMSGroupNorm(1, 6), torch.randn(2, 5), r"expected 6 channels"),
    (norms.InstanceNorm2d(3), torch.randn(2, 4, 5, 5), r"InstanceNorm2d\(3\) expected 3 channels on dim 1"),
    (norms.InstanceNorm2d(3, affine=True), torch.randn(4, 5, 5), r"expected 3 channels on dim 0"),
    (norms.InstanceNorm2d(3), torch.randn(3, 4), r"3D \(unbatched\) or 4D"),
    (norms.InstanceNorm1d(3), torch.randn(2, 3, 1), r"more than 1 spatial element"),
    (norms.LayerNorm(5).double(), torch.randn(2, 5), r"weight has dtype torch.float64.*float32"),
    (norms.LayerNorm(5), torch.ones(2, 5, dtype=torch.long), r"floating-point"),
    (norms.WeightNormLinear(4, 3), torch.randn(2, 5), r"expected 4 features on the last dim"),
], ids=lambda v: "" if not isinstance(v, str) else None)
def test_bad_input_is_refused(module, x, match):
    with pytest.raises(ValueError, match=match):
        module(x)


def test_groups_that_do_not_divide_the_channels_are_refused():
    with pytest.raises(ValueError, match=r"num_channels \(6\) must be divisible by num_groups \(4\)"):
        norms.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="divisible"):
        norms.RMSGroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"6 channels .* cannot be split into 4 equal groups"):
        norms.group_norm(torch.randn(2, 6, 3), 4)
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        norms.GroupNorm(0, 6)


@pytest.mark.parametrize("call, match", [
    (lambda: norms.LayerNorm(0), "positive int"),
    (lambda: norms.LayerNorm(()), "at least one dim"),
    (lambda: norms.LayerNorm(5, eps=-1.0), "eps must be a number >= 0"),
    (lambda: norms.RMSNorm(5, eps=-1e-6), "eps must be a number >= 0 or None"),
    (lambda: norms.InstanceNorm2d(3, momentum=2.0), "momentum"),
    (lambda: norms.layer_norm(torch.randn(2, 5), 5, weight=torch.ones(4)), r"weight has shape \(4,\), expected \(5,\)"),
    (lambda: norms.group_norm(torch.randn(2, 4, 3), 2, bias=torch.zeros(3)), r"bias has shape \(3,\)"),
    (lambda: norms.instance_norm(torch.randn(2, 3, 4), use_input_stats=False), "required when use_input_stats=False"),
    (lambda: norms.instance_norm(torch.randn(2, 3, 4), running_mean=torch.zeros(3)), "both be given"),
    (lambda: norms.instance_norm(torch.randn(2, 3)), "at least 3 dims"),
])
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- the registry's 'rms'
@pytest.mark.parametrize("shape", [(3, 4, 2, 5), (6, 4)], ids=["images", "vectors"])
def test_registry_rms_is_rms_over_each_whole_example(shape):
    from bnlab import variants

    layer = variants.build_norm("rms", 4, spatial=len(shape) == 4).double()
    assert isinstance(layer, norms.RMSGroupNorm) and layer.num_groups == 1
    assert layer.weight.shape == layer.bias.shape == (4,)
    assert variants.color("rms") not in {v.color for k, v in variants.VARIANTS.items() if k != "rms"}
    x = random_input(shape, torch.float64, seed=15)
    expected = rms_by_hand(x, len(shape) - 1, None, torch.finfo(torch.float64).eps)
    assert max_err(layer(x), torch.from_numpy(expected)) <= 1e-10
