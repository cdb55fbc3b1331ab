"""bnlab.BatchNorm / BatchNorm1d/2d/3d as drop-in replacements for torch.nn.BatchNorm1d/2d/3d."""

from __future__ import annotations

import copy

import pytest
import torch
from bn_testing import TORCH_BN_HAS_BIAS, max_err, needs_torch_bn_bias, random_bn_input, share_affine
from torch import nn

import bnlab

TOL = 1e-10  # float64 everywhere in this file

# (ours, torch's, an input shape it accepts)
PAIRS = [
    (bnlab.BatchNorm1d, nn.BatchNorm1d, (6, 3)),
    (bnlab.BatchNorm1d, nn.BatchNorm1d, (4, 3, 5)),
    (bnlab.BatchNorm2d, nn.BatchNorm2d, (4, 3, 5, 4)),
    (bnlab.BatchNorm3d, nn.BatchNorm3d, (2, 3, 3, 4, 2)),
    (bnlab.BatchNorm, nn.BatchNorm1d, (6, 3)),
    (bnlab.BatchNorm, nn.BatchNorm2d, (4, 3, 5, 4)),
    (bnlab.BatchNorm, nn.BatchNorm3d, (2, 3, 3, 4, 2)),
]
PAIR_IDS = [f"{o.__name__}-{len(s)}d" for o, _, s in PAIRS]
# affine=True with bias=False (torch >= 2.10's keyword-only argument): a learned gamma, no beta
SETTINGS = [pytest.param(dict(affine=a, track_running_stats=t), id=f"affine={a}-track={t}")
            for a in (True, False) for t in (True, False)] + [
    pytest.param(dict(affine=True, bias=False, track_running_stats=t), id=f"affine=True-nobias-track={t}",
                 marks=needs_torch_bn_bias) for t in (True, False)]


def make_pair(ours_cls, torch_cls, num_features, seed=0, **kwargs):
    """Ours and torch's module in float64 with the same random weight and bias (set by hand)."""
    ours = ours_cls(num_features, dtype=torch.float64, **kwargs)
    if kwargs.get("bias") is True:  # the default, and a torch before 2.10 does not take the argument
        kwargs = {k: v for k, v in kwargs.items() if k != "bias"}
    theirs = torch_cls(num_features, dtype=torch.float64, **kwargs)
    if theirs.affine:
        share_affine((ours, theirs), num_features, seed)
    return ours, theirs


def _params(m):
    return [p for p in (m.weight, m.bias) if p is not None]


def assert_same_state(ours, theirs, what=""):
    """Parameters and buffers (running stats, num_batches_tracked) agree, None where torch's are None."""
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        a, b = getattr(ours, name), getattr(theirs, name)
        if b is None:
            assert a is None, f"{what} {name}: ours is set, torch's is None"
            continue
        assert a.dtype == b.dtype, f"{what} {name}: dtype {a.dtype} vs {b.dtype}"
        assert a.shape == b.shape, f"{what} {name}: shape {a.shape} vs {b.shape}"
        assert max_err(a, b) <= TOL, f"{what} {name}: differs by {max_err(a, b):.3g}"


def step_both(ours, theirs, shape, seed, lr=0.1):
    """One identical forward/backward (+ SGD update when affine) on both; compare out and grads."""
    x = random_bn_input(shape, seed=seed)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    results = []
    for m in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        out.backward(grad_out)
        grads = [xi.grad] + [p.grad for p in _params(m)]
        results.append((out.detach(), grads))
        with torch.no_grad():
            for p in _params(m):
                p -= lr * p.grad
                p.grad = None
    (o1, g1), (o2, g2) = results
    assert max_err(o1, o2) <= TOL, f"output differs by {max_err(o1, o2):.3g}"
    assert len(g1) == len(g2)
    for name, a, b in zip(("input", "weight", "bias"), g1, g2):
        assert max_err(a, b) <= TOL, f"grad {name} differs by {max_err(a, b):.3g}"
    return o1


# ----------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS, ids=PAIR_IDS)
def test_state_dict_keys_match_torch(ours_cls, torch_cls, shape, kwargs):
    """Same state_dict keys in the same order (num_batches_tracked included), shapes and dtypes."""
    ours, theirs = make_pair(ours_cls, torch_cls, shape[1], **kwargs)
    sd_ours, sd_torch = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_torch)
    assert ("num_batches_tracked" in sd_ours) == kwargs["track_running_stats"]
    assert ("weight" in sd_ours) == kwargs["affine"]
    assert ("bias" in sd_ours) == (kwargs["affine"] and kwargs.get("bias", True))
    for k in sd_torch:
        assert sd_ours[k].shape == sd_torch[k].shape and sd_ours[k].dtype == sd_torch[k].dtype, k
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS[:4], ids=PAIR_IDS[:4])
def test_state_dict_loads_both_ways(ours_cls, torch_cls, shape, kwargs):
    """A trained torch module's state_dict loads strictly into ours (and vice versa); the two then
    give identical outputs in eval and train mode."""
    c = shape[1]
    # torch -> ours
    src, _ = make_pair(torch_cls, torch_cls, c, seed=1, **kwargs)
    dst, _ = make_pair(ours_cls, ours_cls, c, seed=2, **kwargs)
    # ours -> torch
    src2, _ = make_pair(ours_cls, ours_cls, c, seed=3, **kwargs)
    dst2, _ = make_pair(torch_cls, torch_cls, c, seed=4, **kwargs)
    for s, d in ((src, dst), (src2, dst2)):
        s.train()
        with torch.no_grad():
            for i in range(3):
                s(random_bn_input(shape, seed=10 + i))
        d.load_state_dict(s.state_dict())  # strict
        assert_same_state(d, s, "after load")
        for mode in ("eval", "train"):
            getattr(s, mode)()
            getattr(d, mode)()
            x = random_bn_input(shape, seed=99)
            with torch.no_grad():
                assert max_err(d(x), s(x)) <= TOL, mode


@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS[:4], ids=PAIR_IDS[:4])
def test_old_state_dict_without_num_batches_tracked(ours_cls, torch_cls, shape):
    """A pre-0.4.1 state_dict (version 1, no num_batches_tracked) loads strictly, as in torch's own
    test: into a fresh module num_batches_tracked is 0; into a trained one it behaves like torch."""
    c = shape[1]
    old, _ = make_pair(torch_cls, torch_cls, c, seed=5)
    with torch.no_grad():
        old(random_bn_input(shape, seed=0))
    for version in ({"version": 1}, {}):  # version 1, then no version at all
        sd = old.state_dict()
        del sd["num_batches_tracked"]
        sd._metadata[""] = dict(version)

        fresh_ours, fresh_torch = make_pair(ours_cls, torch_cls, c)
        fresh_ours.load_state_dict(copy.copy(sd))
        fresh_torch.load_state_dict(copy.copy(sd))
        assert fresh_ours.num_batches_tracked.dtype == torch.long
        assert fresh_ours.num_batches_tracked.item() == 0
        assert_same_state(fresh_ours, fresh_torch, f"fresh, metadata {version}")

        trained_ours, trained_torch = make_pair(ours_cls, torch_cls, c)
        for i in range(3):
            step_both(trained_ours, trained_torch, shape, seed=20 + i)
        trained_ours.load_state_dict(copy.copy(sd))
        trained_torch.load_state_dict(copy.copy(sd))
        assert_same_state(trained_ours, trained_torch, f"trained, metadata {version}")


def test_partial_load_keeps_num_batches_tracked_like_torch():
    """torch's test_batchnorm_load_state_dict: loading an empty dict non-strictly leaves
    num_batches_tracked alone."""
    for cls in (nn.BatchNorm2d, bnlab.BatchNorm2d):
        bn = cls(3)
        bn.num_batches_tracked = torch.tensor(10)
        bn.load_state_dict({}, strict=False)
        assert bn.state_dict()["num_batches_tracked"].item() == 10, cls


# ----------------------------------------------------------------------------- training and eval
@pytest.mark.parametrize("bias", [pytest.param(True, id="bias"),
                                  pytest.param(False, id="nobias", marks=needs_torch_bn_bias)])
@pytest.mark.parametrize("momentum", [0.1, 0.6, None], ids=["m0.1", "m0.6", "cumulative"])
@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS, ids=PAIR_IDS)
def test_training_steps_match_torch(ours_cls, torch_cls, shape, momentum, bias):
    """Several SGD steps on identical inputs: identical outputs, grads of input/weight/bias, running
    stats and num_batches_tracked after every step; eval afterwards matches too. momentum=None is
    torch's cumulative average (factor 1 / num_batches_tracked). bias=False: gamma only."""
    ours, theirs = make_pair(ours_cls, torch_cls, shape[1], momentum=momentum, bias=bias)
    for step in range(4):
        step_both(ours, theirs, shape, seed=step)
        assert_same_state(ours, theirs, f"step {step}")
    assert ours.num_batches_tracked.item() == 4
    ours.eval(), theirs.eval()
    step_both(ours, theirs, shape, seed=100)
    assert_same_state(ours, theirs, "after eval step")
    assert ours.num_batches_tracked.item() == 4


def test_cumulative_average_is_the_plain_mean():
    """momentum=None: after k batches running_mean is the plain mean of the k batch means
    (independent of torch)."""
    bn = bnlab.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    means = []
    for i in range(5):
        x = random_bn_input((8, 3), seed=i)
        means.append(x.mean(0))
        bn(x)
    assert max_err(bn.running_mean, torch.stack(means).mean(0)) <= TOL


@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS, ids=PAIR_IDS)
def test_no_running_stats_matches_torch_in_train_and_eval(ours_cls, torch_cls, shape):
    """track_running_stats=False: no buffers, batch statistics in train and in eval, like torch."""
    ours, theirs = make_pair(ours_cls, torch_cls, shape[1], track_running_stats=False)
    for mode in ("train", "eval", "train", "eval"):
        getattr(ours, mode)(), getattr(theirs, mode)()
        step_both(ours, theirs, shape, seed=len(mode))
        assert_same_state(ours, theirs, mode)
    # eval really used batch statistics: the output is normalized per channel (mean = bias)
    dims = [0] + list(range(2, len(shape)))
    with torch.no_grad():
        out = ours(random_bn_input(shape, seed=5))
    assert max_err(out.mean(dims), ours.bias) < 1e-10
    assert ours.running_mean is None and ours.num_batches_tracked is None


@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS, ids=PAIR_IDS)
def test_eval_mode_matches_torch(ours_cls, torch_cls, shape, kwargs):
    """Eval mode after loading the same non-trivial running stats: same output and grads, no update."""
    ours, theirs = make_pair(ours_cls, torch_cls, shape[1], **kwargs)
    if kwargs["track_running_stats"]:
        g = torch.Generator().manual_seed(7)
        rm = torch.randn(shape[1], generator=g, dtype=torch.float64)
        rv = torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5
        for m in (ours, theirs):
            m.running_mean.copy_(rm)
            m.running_var.copy_(rv)
    ours.eval(), theirs.eval()
    step_both(ours, theirs, shape, seed=3)
    assert_same_state(ours, theirs)


# ----------------------------------------------------------------------------- module plumbing
@pytest.mark.parametrize("kwargs", [{}, dict(eps=1e-3, momentum=0.3), dict(momentum=None, affine=False),
                                    dict(track_running_stats=False),
                                    pytest.param(dict(bias=False), marks=needs_torch_bn_bias),
                                    pytest.param(dict(affine=False, bias=False), marks=needs_torch_bn_bias)])
@pytest.mark.parametrize("ours_cls,torch_cls,shape", PAIRS, ids=PAIR_IDS)
def test_repr_matches_torch(ours_cls, torch_cls, shape, kwargs):
    """extra_repr is torch's (>= 2.10: older torch has no bias and leaves it out, ours always shows
    it); for the 1d/2d/3d classes the whole repr is too."""
    ours, theirs = ours_cls(shape[1], **kwargs), torch_cls(shape[1], **kwargs)
    expected = theirs.extra_repr()
    if not TORCH_BN_HAS_BIAS:
        expected = expected.replace(", track_running_stats=", f", bias={theirs.affine}, track_running_stats=")
    assert "bias=" in expected
    assert ours.extra_repr() == expected
    name = "BatchNorm" if ours_cls is bnlab.BatchNorm else type(theirs).__name__
    assert repr(ours) == f"{name}({expected})"


@pytest.mark.parametrize("convert", [lambda m: m.double(), lambda m: m.to(torch.float64)], ids=["double", "to"])
def test_conversion_to_float64(convert):
    """.double() / .to(float64) convert parameters and running stats, keep num_batches_tracked
    long, and the module then runs float64 input like torch's converted module."""
    ours, theirs = convert(bnlab.BatchNorm2d(3)), convert(nn.BatchNorm2d(3))
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert getattr(ours, name).dtype == torch.float64, name
    assert ours.num_batches_tracked.dtype == torch.long
    for step in range(2):
        step_both(ours, theirs, (4, 3, 2, 2), seed=step)
        assert_same_state(ours, theirs)


def test_default_dtype_is_float32_and_init_like_torch():
    """Default construction: float32 ones/zeros parameters, zeros/ones buffers, counter 0."""
    ours, theirs = bnlab.BatchNorm1d(4), nn.BatchNorm1d(4)
    assert ours.weight.dtype == torch.float32
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name


def make_net(bn2d):
    torch.manual_seed(0)  # same conv/linear init for both nets; BN itself has no random init
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), bn2d(4), nn.ReLU(),
        nn.Conv2d(4, 3, 3), bn2d(3), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 4 * 4, 5),
    ).double()


def test_conv_net_trains_like_torch():
    """A small conv net with our BatchNorm2d trains identically (losses, all parameters and
    buffers, eval predictions) to the same net with torch's, over a few SGD steps."""
    ours, theirs = make_net(bnlab.BatchNorm2d), make_net(nn.BatchNorm2d)
    opts = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9) for n in (ours, theirs)]
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        x = torch.randn(8, 2, 6, 6, generator=g, dtype=torch.float64) * 2 + 1
        y = torch.randint(0, 5, (8,), generator=g)
        losses = []
        for net, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) <= TOL, (step, losses)
    sd_ours, sd_torch = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_torch)
    for k in sd_torch:
        assert max_err(sd_ours[k], sd_torch[k]) <= TOL, k
    ours.eval(), theirs.eval()
    x = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        assert max_err(ours(x), theirs(x)) <= TOL
    # and training did something (the comparison was not between untouched nets)
    assert max_err(ours[1].running_mean, torch.zeros(4, dtype=torch.float64)) > 1e-3


# ----------------------------------------------------------------------------- errors
def test_wrong_channel_count_is_rejected():
    with pytest.raises(ValueError, match=r"expected 3 channels.*\(2, 4, 5, 5\)"):
        bnlab.BatchNorm2d(3)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="expected 3 channels"):
        bnlab.BatchNorm(3)(torch.randn(2, 5))


@pytest.mark.parametrize("cls", [bnlab.BatchNorm, bnlab.BatchNorm1d])
def test_one_dim_input_is_rejected(cls):
    with pytest.raises(ValueError, match="got 1D"):
        cls(3)(torch.randn(3))


@pytest.mark.parametrize("cls,bad_shape,want", [
    (bnlab.BatchNorm2d, (2, 3, 4), "expected 4D input, got 3D"),
    (bnlab.BatchNorm2d, (2, 3, 4, 4, 4), "expected 4D input, got 5D"),
    (bnlab.BatchNorm1d, (2, 3, 4, 4), "expected 2D or 3D input, got 4D"),
    (bnlab.BatchNorm3d, (2, 3, 4, 4), "expected 5D input, got 4D"),
    (bnlab.BatchNorm, (2, 3, 4, 4, 4, 4), "got 6D"),
])
def test_wrong_rank_is_rejected(cls, bad_shape, want):
    """Rank checks like torch's (which also raises ValueError for these)."""
    with pytest.raises(ValueError, match=want):
        cls(3)(torch.randn(bad_shape))


@pytest.mark.parametrize("num_features", [0, -2, 2.5, "3"])
def test_bad_num_features_is_rejected(num_features):
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        bnlab.BatchNorm(num_features)


def test_negative_eps_is_rejected():
    with pytest.raises(ValueError, match="eps must be >= 0"):
        bnlab.BatchNorm2d(3, eps=-1e-5)


@pytest.mark.parametrize("momentum", [-0.1, 1.5])
def test_momentum_outside_unit_interval_is_rejected(momentum):
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        bnlab.BatchNorm2d(3, momentum=momentum)
    bnlab.BatchNorm2d(3, momentum=0.0), bnlab.BatchNorm2d(3, momentum=1.0)  # the ends are fine


def test_bias_is_keyword_only_like_torch():
    """bias=False must be spelled out: positionally, the 8th argument is rejected by both."""
    for cls in (nn.BatchNorm2d, bnlab.BatchNorm2d) if TORCH_BN_HAS_BIAS else (bnlab.BatchNorm2d,):
        with pytest.raises(TypeError):
            cls(3, 1e-5, 0.1, True, True, None, None, False)
        m = cls(3, bias=False)
        assert m.bias is None and m.weight is not None
