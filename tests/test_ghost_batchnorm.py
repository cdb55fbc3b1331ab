"""bnlab.GhostBatchNorm (Hoffer et al. 2017): equal to torch's BN applied to each virtual batch in
turn (outputs, running statistics, gradients), plain BN when one chunk holds the batch, BN's eval,
torch's state_dict, finite differences, refusals, and the 'gbn' models."""

from __future__ import annotations

import pytest
import torch
from bn_testing import forward_backward, max_err, random_bn_input, share_affine
from torch import nn

import bnlab
import bnlab.layers as L
from bnlab import models, variants

TOL = 1e-12  # float64 everywhere in this file; values are O(1) to O(10)


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """Small tensors: a second thread costs more than it gives on a loaded machine."""
    torch.set_num_threads(1)


# (ours, torch's, an input shape both accept, virtual batch size): chunks of k with a smaller last
# chunk (3 of 10), an exact split, and a last chunk of one example that still has spatial values
CASES = [
    (L.GhostBatchNorm1d, nn.BatchNorm1d, (10, 3), 4),
    (L.GhostBatchNorm1d, nn.BatchNorm1d, (8, 3), 2),
    (L.GhostBatchNorm1d, nn.BatchNorm1d, (9, 2, 5), 4),
    (L.GhostBatchNorm2d, nn.BatchNorm2d, (7, 3, 2, 3), 3),
    (L.GhostBatchNorm, nn.BatchNorm3d, (5, 2, 2, 2, 3), 2),
]
CASE_IDS = [f"{o.__name__}-{len(s)}d-N{s[0]}-k{k}" for o, _, s, k in CASES]


def make_pair(ours_cls, torch_cls, num_features, k, seed=0, **kwargs):
    ours = ours_cls(num_features, k, dtype=torch.float64, **kwargs)
    theirs = torch_cls(num_features, dtype=torch.float64, **kwargs)
    if ours.affine:
        share_affine((ours, theirs), num_features, seed)
    return ours, theirs


def per_chunk(bn, x, k):
    """The reference: torch's BN applied to x[0:k], x[k:2k], ... in turn, outputs concatenated."""
    return torch.cat([bn(x[i:i + k]) for i in range(0, len(x), k)])


def assert_same_state(ours, theirs, what):
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        a, b = getattr(ours, name), getattr(theirs, name)
        if a is None or b is None:
            assert a is None and b is None, f"{what}: {name}"
            continue
        assert max_err(a, b) <= TOL, f"{what}: {name} differs by {max_err(a, b):.3g}"


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("ours_cls, torch_cls, shape, k", CASES, ids=CASE_IDS)
def test_training_equals_torch_bn_applied_to_each_chunk(ours_cls, torch_cls, shape, k, momentum):
    """Three training steps: outputs, running statistics and num_batches_tracked (one update per
    chunk), and the gradients w.r.t. input, weight and bias, all equal to torch's per-chunk BN."""
    ours, theirs = make_pair(ours_cls, torch_cls, shape[1], k, momentum=momentum)
    for step in range(3):
        x = random_bn_input(shape, seed=step)
        grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(10 + step), dtype=torch.float64)
        out, grads = forward_backward(ours, x, grad_out)
        ref, ref_grads = forward_backward(theirs, x, grad_out, fn=lambda t: per_chunk(theirs, t, k))
        assert max_err(out, ref) <= TOL, f"step {step}: output"
        for name, g, r in zip(("input", "weight", "bias"), grads, ref_grads):
            assert max_err(g, r) <= TOL * max(1.0, float(r.abs().max())), f"step {step}: grad {name}"
        assert_same_state(ours, theirs, f"step {step}")
    chunks = -(-shape[0] // k)
    assert int(ours.num_batches_tracked) == 3 * chunks


@pytest.mark.parametrize("affine, track", [(False, True), (True, False), (False, False)])
def test_training_and_eval_without_affine_or_running_stats(affine, track):
    """Without running buffers torch's BN uses batch statistics in eval too; ghost BN then uses them
    per chunk, in eval as in training."""
    shape, k = (10, 3, 2), 4
    ours, theirs = make_pair(L.GhostBatchNorm1d, nn.BatchNorm1d, 3, k, affine=affine, track_running_stats=track)
    x = random_bn_input(shape, seed=3)
    with torch.no_grad():
        assert max_err(ours.train()(x), per_chunk(theirs.train(), x, k)) <= TOL
        assert max_err(ours.eval()(x), per_chunk(theirs.eval(), x, k)) <= TOL
    assert_same_state(ours, theirs, "after train and eval")
    assert (ours.weight is None) == (not affine) and (ours.running_mean is None) == (not track)


def test_chunks_are_normalized_on_their_own():
    """Bump one value in chunk 1: only the outputs of that channel in chunk 1 move (the other
    chunks' statistics do not see it), where plain BN moves the channel in every example."""
    k = 4
    x = random_bn_input((12, 3), seed=4)
    bumped = x.clone()
    bumped[5, 2] += 2.0
    with torch.no_grad():
        moved = (L.GhostBatchNorm1d(3, k).double()(bumped) - L.GhostBatchNorm1d(3, k).double()(x)).abs() > 1e-12
        moved_bn = (L.BatchNorm1d(3).double()(bumped) - L.BatchNorm1d(3).double()(x)).abs() > 1e-12
    expected = torch.zeros(12, 3, dtype=torch.bool)
    expected[4:8, 2] = True
    assert torch.equal(moved, expected)
    assert moved_bn[:, 2].all() and not moved_bn[:, :2].any()


@pytest.mark.parametrize("k", [6, 7, 100])
def test_one_chunk_is_plain_batch_norm(k):
    """virtual_batch_size >= N: one chunk, the whole batch; equal to bnlab's BatchNorm and torch's,
    including the running statistics after one update."""
    x = random_bn_input((6, 3, 2, 2), seed=5)
    ours, theirs = make_pair(L.GhostBatchNorm2d, nn.BatchNorm2d, 3, k)
    plain = L.BatchNorm2d(3, dtype=torch.float64)
    plain.load_state_dict(theirs.state_dict())
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, grads = forward_backward(ours, x, grad_out)
    for other in (theirs, plain):
        ref, ref_grads = forward_backward(other, x, grad_out)
        assert max_err(out, ref) <= TOL
        assert all(max_err(g, r) <= TOL * max(1.0, float(r.abs().max())) for g, r in zip(grads, ref_grads))
        assert_same_state(ours, other, type(other).__name__)
    assert int(ours.num_batches_tracked) == 1


def test_eval_is_batch_norm_eval():
    """After training steps, eval uses the running statistics on the whole batch: equal to torch's
    BN eval with the same state, and each example's output is its own (no chunk statistics)."""
    ours, theirs = make_pair(L.GhostBatchNorm2d, nn.BatchNorm2d, 3, 2)
    for step in range(3):
        with torch.no_grad():
            x = random_bn_input((6, 3, 2, 2), seed=step)
            per_chunk(theirs, x, 2), ours(x)
    ours.eval(), theirs.eval()
    x = random_bn_input((5, 3, 2, 2), seed=9)
    with torch.no_grad():
        out = ours(x)
        assert max_err(out, theirs(x)) <= TOL
        assert max_err(out[3:4], ours(x[3:4])) <= TOL
    assert_same_state(ours, theirs, "eval changes nothing")


def test_virtual_batch_size_can_change_between_steps():
    ours, theirs = make_pair(L.GhostBatchNorm1d, nn.BatchNorm1d, 2, 4)
    x = random_bn_input((8, 2), seed=6)
    with torch.no_grad():
        ours(x), per_chunk(theirs, x, 4)
        ours.virtual_batch_size = 8
        assert max_err(ours(x), theirs(x)) <= TOL
    assert_same_state(ours, theirs, "after k=4 then k=8")
    assert int(ours.num_batches_tracked) == 3


# ----------------------------------------------------------------------------- gradients
def test_gradcheck():
    """Finite differences against autograd through the chunked forward, w.r.t. input, weight and
    bias (chunks of 2, 2 and 1 example, the last with 4 values per channel)."""
    layer = L.GhostBatchNorm2d(2, 2, dtype=torch.float64)
    x = random_bn_input((5, 2, 2, 2), seed=8).requires_grad_(True)
    params = list(layer.parameters())
    with torch.no_grad():
        params[0].copy_(torch.tensor([1.5, 0.7], dtype=torch.float64))
        params[1].copy_(torch.tensor([0.3, -1.0], dtype=torch.float64))

    def f(x, weight, bias):
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, *[p.detach().clone().requires_grad_(True) for p in params]),
                                    eps=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- module protocol
def test_state_dict_is_torch_batch_norms_both_ways():
    ours, theirs = make_pair(L.GhostBatchNorm2d, nn.BatchNorm2d, 3, 2)
    with torch.no_grad():
        theirs(random_bn_input((4, 3, 2, 2), seed=1))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == [
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    ours.load_state_dict(theirs.state_dict())
    assert_same_state(ours, theirs, "torch -> ours")
    back = nn.BatchNorm2d(3, dtype=torch.float64)
    back.load_state_dict(ours.state_dict())
    assert_same_state(back, ours, "ours -> torch")


def test_repr_is_batch_norm_and_is_batchnorm():
    layer = bnlab.GhostBatchNorm2d(8, 16)
    assert repr(layer) == ("GhostBatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, "
                           "track_running_stats=True, virtual_batch_size=16)")
    assert L.is_batchnorm(layer) and L.is_batchnorm(bnlab.GhostBatchNorm(3, 2))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "16", None])
def test_bad_virtual_batch_size(bad):
    with pytest.raises(ValueError, match="virtual_batch_size must be an int >= 1"):
        L.GhostBatchNorm1d(3, bad)
    # set as an attribute, it is refused at the next training step
    layer = L.GhostBatchNorm1d(3, 4)
    layer.virtual_batch_size = bad
    with pytest.raises(ValueError, match="virtual_batch_size"):
        layer(torch.randn(8, 3))


@pytest.mark.parametrize("kwargs, match", [(dict(num_features=0), "num_features"), (dict(eps=-1.0), "eps"),
                                           (dict(momentum=1.5), "momentum")])
def test_bad_bn_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.GhostBatchNorm(**{"num_features": 3, "virtual_batch_size": 4, **kwargs})


@pytest.mark.parametrize("shape, k", [((9, 3), 4), ((1, 3), 16), ((4, 3), 1)])
def test_a_chunk_of_one_value_per_channel_is_refused_and_changes_nothing(shape, k):
    """A chunk of one example without spatial positions has no variance (torch refuses a batch of
    one); the whole batch is refused before the first chunk updates the running statistics."""
    layer = L.GhostBatchNorm1d(3, k, dtype=torch.float64)
    before = {name: t.clone() for name, t in layer.state_dict().items()}
    with pytest.raises(ValueError, match="single value per channel"):
        layer(torch.randn(shape, dtype=torch.float64))
    assert all(torch.equal(t, before[name]) for name, t in layer.state_dict().items())
    # torch's BN on that last chunk refuses it too
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.BatchNorm1d(3)(torch.randn(1, 3))
    # in eval, with running statistics, any batch is fine
    assert layer.eval()(torch.randn(shape, dtype=torch.float64)).shape == shape


def test_virtual_batch_size_one_with_spatial_positions_normalizes_each_example():
    """k = 1 on (N, C, L): each example's channel over its own L positions, as instance norm."""
    x = random_bn_input((4, 3, 5), seed=2)
    with torch.no_grad():
        out = L.GhostBatchNorm1d(3, 1).double()(x)
        ref = nn.functional.instance_norm(x, eps=1e-5)
    assert max_err(out, ref) <= TOL


@pytest.mark.parametrize("cls, shape", [(L.GhostBatchNorm1d, (4, 3, 2, 2)), (L.GhostBatchNorm2d, (4, 3)),
                                        (L.GhostBatchNorm2d, (4, 5, 2, 2))])
def test_bad_input_shapes(cls, shape):
    with pytest.raises(ValueError, match="expected"):
        cls(3, 2)(torch.randn(shape))


# ----------------------------------------------------------------------------- the models' 'gbn'
def test_models_build_ghost_batch_norm_with_the_default_virtual_batch_size():
    assert variants.VIRTUAL_BATCH_SIZE == models.VIRTUAL_BATCH_SIZE == 16
    net = models.mlp(5, (8, 8), 3, norm="gbn")
    ghosts = [m for m in net.modules() if isinstance(m, L.GhostBatchNorm)]
    assert len(ghosts) == 2 and all(type(m) is L.GhostBatchNorm1d and m.virtual_batch_size == 16 for m in ghosts)
    conv = models.conv_net(1, 10, (4,), norm="gbn", hidden=8, image_size=4)
    assert [type(m) for m in conv.modules() if isinstance(m, L.GhostBatchNorm)] == [L.GhostBatchNorm2d,
                                                                                    L.GhostBatchNorm1d]
    assert variants.label("gbn") == "ghost BN" and variants.color("gbn") == variants.VARIANTS["gbn"].color


def test_mlp_with_ghost_bn_shares_statistics_within_16_examples():
    """Training mode, a batch of 32: changing example 0 changes the logits of examples 0-15 only."""
    torch.manual_seed(0)
    net = models.mlp(4, (6,), 2, norm="gbn", activation="tanh").double().train()  # tanh: no dead units
    x = torch.randn(32, 4, dtype=torch.float64)
    bumped = x.clone()
    bumped[0] += 1.0
    with torch.no_grad():
        moved = (net(bumped) - net(x)).abs().amax(1) > 1e-12
    assert moved[:16].all() and not moved[16:].any()
