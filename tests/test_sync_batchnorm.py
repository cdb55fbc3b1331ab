"""bnlab.SyncBatchNorm with real processes (bnlab.distributed.spawn, gloo on 127.0.0.1): ranks holding
unequal shards of one batch, an empty one included, get torch's single-process BN on the whole batch
(outputs, input gradients, summed dgamma and dbeta, running statistics on every rank); DDP takes the
full-batch steps; eval, groups of one and the fallback communicate nothing; combine_moments is Chan's
formula, safe where sum x^2 is not; spawn names a failing rank and leaves no process behind.

A process group costs seconds to start here, so one 4-rank spawn (the `runs` fixture) runs every
multi-process check and the tests below read its results.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
from bn_testing import TORCH_BN_HAS_BIAS, max_err, random_bn_input, share_affine
from torch import nn

import bnlab
from bnlab import distributed as D

WORLD = 4
TOL = 1e-10


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    torch.set_num_threads(1)


def torch_bn_class(dims: int):
    return {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[dims]


def make_case(name, example_shape, sizes, seed, dtype=torch.float64, layer_dtype=None, mean_range=5.0, **kwargs):
    """A parity case: one batch and output gradient per step, split by that step's sizes."""
    g = torch.Generator().manual_seed(1000 + seed)
    channels = example_shape[0]
    xs, grads = [], []
    for step, step_sizes in enumerate(sizes):
        shape = (sum(step_sizes),) + tuple(example_shape)
        xs.append(random_bn_input(shape, seed=seed * 10 + step, mean_range=mean_range).to(dtype))
        grads.append(torch.randn(shape, generator=g, dtype=torch.float64).to(dtype))
    weight = torch.randn(channels, generator=g, dtype=torch.float64) + 1
    bias = torch.randn(channels, generator=g, dtype=torch.float64)
    layer_dtype = layer_dtype or dtype
    return dict(name=name, xs=xs, grads=grads, sizes=sizes, kwargs=kwargs, dtype=layer_dtype,
                weight=weight.to(layer_dtype), bias=bias.to(layer_dtype))


# every step has a rank with an empty shard but the last steps of the 4-D/5-D cases; the last step
# of the first case gives ranks 1 and 3 one value per channel each (two in all)
CASES = [
    make_case("2d-momentum", (3,), [[4, 0, 2, 3], [1, 3, 3, 0], [0, 1, 0, 1]], seed=1),
    make_case("3d-cumulative", (2, 5), [[1, 2, 0, 3], [2, 2, 2, 2], [0, 0, 5, 1]], seed=2, momentum=None),
    make_case("4d-no-affine", (3, 2, 3), [[2, 2, 3, 0], [3, 0, 0, 1]], seed=3, affine=False),
    make_case("5d-no-running-stats", (2, 2, 2, 3), [[0, 1, 1, 3], [1, 1, 1, 1]], seed=4, track_running_stats=False),
    make_case("2d-no-bias", (4,), [[3, 3, 0, 2], [2, 0, 5, 1]], seed=5, bias=False),
    # float32 with means up to 100: the statistics must not lose digits to the offset
    make_case("4d-float32-offset", (3, 4, 4), [[5, 3, 0, 4], [1, 6, 2, 2]], seed=6, dtype=torch.float32,
              mean_range=100.0),
    # float16 input, float32 parameters and buffers (mixed precision)
    make_case("4d-float16", (3, 3, 3), [[2, 3, 1, 0]], seed=7, dtype=torch.float16, layer_dtype=torch.float32),
]
CASE_IDS = [c["name"] for c in CASES]

SUBGROUP_X = random_bn_input((10, 3, 2), seed=20)
SUBGROUP_SIZES = [3, 2, 4, 1]  # pairs (0, 1) and (2, 3) hold 5 examples each
GRADCHECK_SHAPE = (3, 2, 2)
EVAL_X = random_bn_input((5, 3, 2, 2), seed=21)
EVAL_STATE = dict(weight=torch.tensor([1.5, 0.5, -1.0], dtype=torch.float64),
                  bias=torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64),
                  running_mean=torch.tensor([0.5, -2.0, 4.0], dtype=torch.float64),
                  running_var=torch.tensor([2.0, 0.25, 9.0], dtype=torch.float64),
                  num_batches_tracked=torch.tensor(7))
DDP_SIZES = [3, 0, 4, 2]
DDP_LR = 0.1
_g = torch.Generator().manual_seed(30)
DDP_XS = [torch.randn(9, 2, 4, 4, generator=_g, dtype=torch.float64) * 2 + 1 for _ in range(3)]
DDP_TARGETS = [torch.randn(9, 3, generator=_g, dtype=torch.float64) for _ in range(3)]


@pytest.fixture(scope="module")
def runs():
    """Every multi-process check, in one 4-rank spawn: {check name: [rank 0's result, ...]}."""
    checks = [("_parity_worker", (CASES,)),
              ("_subgroup_worker", (SUBGROUP_X, SUBGROUP_SIZES)),
              ("_gradcheck_worker", (GRADCHECK_SHAPE, 40)),
              ("_eval_alone_worker", (EVAL_X, EVAL_STATE)),
              ("_too_few_worker", ()),
              ("_ddp_worker", (DDP_XS, DDP_TARGETS, DDP_SIZES, DDP_LR))]
    per_rank = D.spawn(D._checks_worker, WORLD, args=(checks,), timeout=120)
    return {name: [results[i] for results in per_rank] for i, (name, _) in enumerate(checks)}


def reference_steps(case, dtype):
    """torch's BN in dtype on each whole batch in turn (the same values, cast): the module, and per
    step the output, gradients and module state."""
    x0 = case["xs"][0]
    kwargs = dict(case["kwargs"])
    if kwargs.get("bias") is False and not TORCH_BN_HAS_BIAS:
        pytest.skip("torch's BatchNorm(bias=False) needs torch >= 2.10")
    bn = torch_bn_class(x0.dim())(x0.shape[1], dtype=dtype, **kwargs)
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(case["weight"])
        if bn.bias is not None:
            bn.bias.copy_(case["bias"])
    steps = []
    for x, grad in zip(case["xs"], case["grads"]):
        x = x.to(dtype).clone().requires_grad_(True)
        out = bn(x)
        out.backward(grad.to(dtype))
        steps.append(dict(out=out.detach(), grad_input=x.grad,
                          grad_weight=None if bn.weight is None else bn.weight.grad.clone(),
                          grad_bias=None if bn.bias is None else bn.bias.grad.clone(),
                          running_mean=None if bn.running_mean is None else bn.running_mean.clone(),
                          running_var=None if bn.running_var is None else bn.running_var.clone(),
                          num_batches_tracked=None if bn.num_batches_tracked is None
                          else int(bn.num_batches_tracked)))
        bn.zero_grad(set_to_none=True)
    return bn, steps


# max |ours - exact| / max(1, max |exact|) allowed, by input dtype: float16 outputs are rounded to it
RELATIVE_TOL = {torch.float64: TOL, torch.float32: 1e-5, torch.float16: 1e-3}


def check_close(ours, exact, torch_own, case, what):
    """ours against exact (torch's BN in float64 on the same values) within RELATIVE_TOL, plus twice
    torch's own error in the case's dtype (torch_own): float32 data far from zero loses digits in
    x - mu_B that no implementation gets back. In float64 torch_own is exact, and the bound 1e-10."""
    scale = max(1.0, float(exact.abs().max())) if exact.numel() else 1.0
    tol = RELATIVE_TOL[case["xs"][0].dtype] * scale + 2 * max_err(torch_own, exact)
    err = max_err(ours, exact)
    assert ours.shape == exact.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(exact.shape)}"
    assert err <= tol, f"{what}: max |difference| {err:.3g} > {tol:.3g}"


# ----------------------------------------------------------------------------- multi-process
@pytest.mark.parametrize("index", range(len(CASES)), ids=CASE_IDS)
def test_ranks_with_unequal_shards_equal_single_process_bn(runs, index):
    """Outputs and input gradients (concatenated over ranks), dgamma and dbeta (summed over ranks),
    running statistics and num_batches_tracked (on every rank), after every step, then eval."""
    case = CASES[index]
    exact_bn, exact_steps = reference_steps(case, torch.float64)
    torch_bn, torch_steps = reference_steps(case, case["dtype"])
    records = [rank_records[index] for rank_records in runs["_parity_worker"]]
    for step, (exact, own) in enumerate(zip(exact_steps, torch_steps)):
        ranks = [r["steps"][step] for r in records]
        what = f"{case['name']} step {step} (sizes {case['sizes'][step]})"

        def check(ours, name, detail):
            check_close(ours, exact[name], own[name], case, f"{what}: {detail}")

        check(torch.cat([r["out"] for r in ranks]), "out", "output")
        check(torch.cat([r["grad_input"] for r in ranks]), "grad_input", "dL/dx")
        for name in ("grad_weight", "grad_bias"):
            if exact[name] is None:
                assert all(r[name] is None for r in ranks), f"{what}: {name}"
            else:
                check(sum(r[name] for r in ranks), name, f"{name} summed over ranks")
        for rank, r in enumerate(ranks):
            for name in ("running_mean", "running_var"):
                if exact[name] is None:
                    assert r[name] is None, f"{what}: rank {rank} {name}"
                else:
                    check(r[name], name, f"rank {rank} {name}")
            assert r["num_batches_tracked"] == exact["num_batches_tracked"], f"{what}: rank {rank}"
        # bit for bit the same running statistics on every rank (the same gathered rows, combined alike)
        if exact["running_var"] is not None:
            assert all(torch.equal(r["running_var"], ranks[0]["running_var"]) for r in ranks), what
    exact_bn.eval()
    torch_bn.eval()
    last = D.shard(case["xs"][-1], case["sizes"][-1])
    for rank, r in enumerate(records):
        if last[rank].numel() == 0 and not exact_bn.track_running_stats:
            continue  # batch statistics of nothing: torch refuses, and so do we (see the fallback test)
        with torch.no_grad():
            check_close(r["eval_out"], exact_bn(last[rank].double()), torch_bn(last[rank].to(case["dtype"])), case,
                        f"{case['name']} eval on rank {rank}")


def test_each_step_makes_one_all_gather_and_one_all_reduce_of_the_predicted_size(runs):
    """The collectives the ranks made, as sync_bytes_per_step predicts them."""
    for index, case in enumerate(CASES):
        expected = D.sync_bytes_per_step(case["xs"][0].shape[1], WORLD, case["xs"][0].dtype)
        for rank, records in enumerate(runs["_parity_worker"]):
            for step, record in enumerate(records[index]["steps"]):
                assert record["collectives"] == [("all_gather", expected["forward_payload"]),
                                                 ("all_reduce", expected["backward_payload"])], \
                    f"{case['name']} rank {rank} step {step}"


def test_sync_bytes_per_step():
    """Payloads of 2C + 1 and 2C values (float32 ones for float16 input), and the ring traffic: an
    all-gather passes on the W - 1 rows a rank does not hold, an all-reduce sends 2 (W - 1) / W of it."""
    for dtype, size in ((torch.float64, 8), (torch.float32, 4), (torch.float16, 4), (torch.bfloat16, 4)):
        b = D.sync_bytes_per_step(64, 8, dtype)
        assert b["forward_payload"] == 129 * size and b["backward_payload"] == 128 * size, dtype
        assert b["forward_received"] == 8 * b["forward_payload"]
        assert b["forward_sent"] == b["forward_received"] - b["forward_payload"]
        assert b["backward_sent"] == pytest.approx(2 * 7 / 8 * b["backward_payload"])
        assert b["sent"] == pytest.approx(b["forward_sent"] + b["backward_sent"])
    assert all(v == 0 for v in D.sync_bytes_per_step(64, 1).values())
    for bad in (dict(num_features=0, world_size=2), dict(num_features=3, world_size=0),
                dict(num_features=3, world_size=2, dtype=torch.int64)):
        with pytest.raises(ValueError):
            D.sync_bytes_per_step(**bad)


def test_process_groups_scope_the_statistics(runs):
    """Pairs of ranks normalize over their pair's shards only; a group of one rank is plain BN
    (no collective: the worker forbids them) with BatchNorm's state_dict."""
    results = runs["_subgroup_worker"]
    shards = D.shard(SUBGROUP_X, SUBGROUP_SIZES)
    for pair in D._pair_groups(WORLD):
        ref = nn.BatchNorm1d(3, dtype=torch.float64)
        out = ref(torch.cat([shards[r] for r in pair]))
        ours = torch.cat([results[r]["pair_out"] for r in pair])
        assert max_err(ours, out) <= TOL, f"pair {pair}"
        for r in pair:
            assert max_err(results[r]["pair_running_var"], ref.running_var) <= TOL, f"rank {r}"
            assert max_err(results[r]["pair_running_mean"], ref.running_mean) <= TOL, f"rank {r}"
    for rank, r in enumerate(results):
        assert max_err(r["solo_out"], r["plain_out"]) <= TOL, f"rank {rank}"
        assert list(r["solo_state"]) == list(r["plain_state"])
        for key in r["plain_state"]:
            assert torch.equal(r["solo_state"][key], r["plain_state"][key]), f"rank {rank} {key}"


def test_gradcheck_of_sync_batch_norm_in_a_group_of_one(runs):
    assert runs["_gradcheck_worker"] == [True] * WORLD


def test_eval_communicates_nothing_while_the_other_ranks_never_call_the_layer(runs):
    result = runs["_eval_alone_worker"][0]
    assert all(r == {} for r in runs["_eval_alone_worker"][1:])
    ref = nn.BatchNorm2d(3, dtype=torch.float64)
    ref.load_state_dict(EVAL_STATE)
    assert max_err(result["running"], ref.eval()(EVAL_X)) <= TOL
    untracked = nn.BatchNorm2d(3, track_running_stats=False, dtype=torch.float64).eval()
    assert max_err(result["batch"], untracked(EVAL_X)) <= TOL


def test_one_value_per_channel_over_all_ranks_raises_on_every_rank(runs):
    """torch's message, on every rank (none is left waiting), the running statistics untouched; the
    next step, two values on rank 0 and none elsewhere, trains."""
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]], dtype=torch.float64)
    ref = nn.BatchNorm1d(3, dtype=torch.float64)
    out = ref(x)
    for rank, r in enumerate(runs["_too_few_worker"]):
        assert r["message"] is not None and "Expected more than 1 value per channel" in r["message"], rank
        assert "got 1 over the 4 ranks" in r["message"]
        assert r["untouched"], rank
        assert max_err(r["running_var"], ref.running_var) <= TOL
        if rank == 0:
            assert max_err(r["out"], out) <= TOL
        else:
            assert r["out"].shape == (0, 3)


def test_ddp_takes_the_full_batch_steps(runs):
    """DDP over 4 ranks (shards of 3, 0, 4 and 2 examples) with SyncBatchNorm, three SGD steps:
    the parameters and running statistics of single-process full-batch training, on every rank."""
    model = D._ddp_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=DDP_LR, momentum=0.9)
    for x, target in zip(DDP_XS, DDP_TARGETS):
        loss = ((model(x) - target) ** 2).sum() / x.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    expected = model.state_dict()
    start = D._ddp_model().state_dict()
    assert max_err(expected["0.weight"], start["0.weight"]) > 1e-3  # the steps did move the weights
    for rank, state in enumerate(runs["_ddp_worker"]):
        assert list(state) == list(expected), f"rank {rank}: state_dict keys"
        for key, value in expected.items():
            assert max_err(state[key], value) <= TOL, f"rank {rank}: {key} differs by {max_err(state[key], value):.3g}"


# ----------------------------------------------------------------------------- in one process
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (4, 3, 2, 3), (3, 3, 2, 2, 2)], ids=lambda s: f"{len(s)}d")
def test_without_a_process_group_it_is_batch_norm(shape):
    """Training steps and eval, outputs, gradients, running statistics and state_dict: bnlab.BatchNorm's."""
    assert not dist.is_initialized()
    ours, plain = bnlab.SyncBatchNorm(3, dtype=torch.float64), bnlab.BatchNorm(3, dtype=torch.float64)
    share_affine((ours, plain), 3)
    for step in range(3):
        x = random_bn_input(shape, seed=step)
        grad = torch.randn(shape, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        for bn in (ours, plain):
            bn.train(step < 2)
        a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ours(a).backward(grad)
        plain(b).backward(grad)
        assert torch.equal(a.grad, b.grad)
        assert torch.equal(ours.weight.grad, plain.weight.grad) and torch.equal(ours.bias.grad, plain.bias.grad)
    assert ours.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ours.train()(torch.ones((1, 3), dtype=torch.float64))


def test_constructor_parameters_buffers_and_state_dict_are_torchs():
    ours = bnlab.SyncBatchNorm(5, eps=1e-3, momentum=0.2, dtype=torch.float64)
    theirs = nn.SyncBatchNorm(5, eps=1e-3, momentum=0.2, dtype=torch.float64)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    with torch.no_grad():
        theirs.running_mean.uniform_()
        theirs.weight.uniform_()
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert torch.equal(ours.running_mean, theirs.running_mean) and torch.equal(ours.weight, theirs.weight)
    for name in ("num_features", "eps", "momentum", "affine", "track_running_stats", "process_group"):
        assert getattr(ours, name) == getattr(theirs, name), name
    bare = bnlab.SyncBatchNorm(2, affine=False, track_running_stats=False)
    assert bare.weight is None and bare.running_mean is None and bare.num_batches_tracked is None
    assert bnlab.is_batchnorm(ours)


def test_bad_input_is_refused():
    bn = bnlab.SyncBatchNorm(3)
    with pytest.raises(ValueError, match="expected 3 channels"):
        bn(torch.randn(4, 2))
    with pytest.raises(ValueError, match="2D or 3D or 4D or 5D"):
        bn(torch.randn(4, 3, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="num_features"):
        bnlab.SyncBatchNorm(0)
    with pytest.raises(ValueError, match="initialized process group"):
        D.sync_batch_norm(torch.randn(4, 3), None, None)


def test_convert_sync_batchnorm_takes_over_parameters_and_buffers():
    """torch's and bnlab's BN layers become SyncBatchNorm with the same Parameters and buffers (as
    torch's method), flags and state_dict; other modules and bnlab's BN variants are left alone."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), bnlab.BatchNorm2d(4, momentum=None),
                          nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.BatchNorm1d(5, affine=False)),
                          bnlab.BatchNorm(5, track_running_stats=False, eps=1e-3), bnlab.GhostBatchNorm1d(5, 2),
                          nn.BatchNorm3d(2))
    for m in model.modules():
        if getattr(m, "running_mean", None) is not None:
            with torch.no_grad():
                m.running_mean.uniform_()
                m.num_batches_tracked.fill_(3)
    model[2].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    originals = [model[1], model[2], model[3][2], model[4], model[6]]
    group = object()
    converted = bnlab.SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
    assert converted is model
    layers = [converted[1], converted[2], converted[3][2], converted[4], converted[6]]
    for old, new in zip(originals, layers):
        assert type(new) is bnlab.SyncBatchNorm and new.process_group is group
        for name in ("num_features", "eps", "momentum", "affine", "track_running_stats", "training"):
            assert getattr(new, name) == getattr(old, name), name
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert getattr(new, name) is getattr(old, name), name
    assert isinstance(converted[0], nn.Conv2d) and isinstance(converted[5], bnlab.GhostBatchNorm1d)
    assert list(converted.state_dict()) == list(before)
    for key, value in before.items():
        assert torch.equal(converted.state_dict()[key], value), key
    single = bnlab.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(3))
    assert type(single) is bnlab.SyncBatchNorm


# ----------------------------------------------------------------------------- combine_moments
def numpy_moments(values: np.ndarray):
    return len(values), values.mean(axis=0), ((values - values.mean(axis=0)) ** 2).sum(axis=0)


def test_combine_moments_matches_numpy_on_random_groups():
    """Random groups (empty ones included) of 3-channel data: count, mean and M2 of their union."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        sizes = rng.integers(0, 6, size=rng.integers(1, 7))
        if sizes.sum() == 0:
            sizes[0] = 1
        groups = [rng.normal(rng.uniform(-50, 50), rng.uniform(0.1, 10), size=(s, 3)) for s in sizes]
        stats = [numpy_moments(g) if len(g) else (0, np.full(3, np.nan), np.full(3, np.nan)) for g in groups]
        count, mean, m2 = D.combine_moments([s[0] for s in stats], np.stack([s[1] for s in stats]),
                                            np.stack([s[2] for s in stats]))
        _, ref_mean, ref_m2 = numpy_moments(np.concatenate(groups))
        assert int(count) == sizes.sum()
        np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-12, atol=1e-12, err_msg=f"trial {trial}")
        np.testing.assert_allclose(m2.numpy(), ref_m2, rtol=1e-11, atol=1e-11, err_msg=f"trial {trial}")


def test_combine_moments_is_exact_where_sum_of_squares_is_not():
    """Mean 1e8, sigma 1, float64: the naive E[x^2] - E[x]^2 from per-group sums of squares is off by
    more than the variance itself; Chan's formula agrees with NumPy's two-pass variance."""
    rng = np.random.default_rng(1)
    groups = [1e8 + rng.normal(0, 1, size=(n, 2)) for n in (50, 0, 70, 30)]
    full = np.concatenate(groups)
    ref_var = full.var(axis=0)
    stats = [numpy_moments(g) if len(g) else (0, np.zeros(2), np.zeros(2)) for g in groups]
    counts = np.array([s[0] for s in stats], dtype=np.float64)
    means, m2s = np.stack([s[1] for s in stats]), np.stack([s[2] for s in stats])
    count, mean, m2 = D.combine_moments(counts, means, m2s)
    np.testing.assert_allclose(m2.numpy() / float(count), ref_var, rtol=1e-8)
    # the naive combination: each group's sum of squares n (var + mu^2), then E[x^2] - E[x]^2
    sum_squares = (m2s + counts[:, None] * means ** 2).sum(axis=0)
    naive_var = sum_squares / counts.sum() - ((counts[:, None] * means).sum(axis=0) / counts.sum()) ** 2
    assert np.all(np.abs(naive_var - ref_var) > 0.5 * ref_var), naive_var
    # and the per-rank step of the layer: channel_moments is two-pass too
    n, mu, m2_full = D.channel_moments(torch.from_numpy(full))
    assert n == len(full)
    np.testing.assert_allclose(m2_full.numpy() / n, ref_var, rtol=1e-8)


def test_channel_moments_and_combine_give_batch_norm_statistics():
    """Shards of a (N, C, H, W) batch through channel_moments and combine_moments: the whole batch's
    mean and biased variance, as a lesson's shard simulator uses them; an empty shard counts 0."""
    x = random_bn_input((7, 3, 2, 2), seed=3)
    parts = [D.channel_moments(s) for s in D.shard(x, [2, 0, 5])]
    assert parts[1][0] == 0 and torch.equal(parts[1][1], torch.zeros(3))
    count, mean, m2 = D.combine_moments([p[0] for p in parts], torch.stack([p[1] for p in parts]),
                                        torch.stack([p[2] for p in parts]))
    assert int(count) == 28
    assert max_err(mean, x.mean((0, 2, 3))) <= TOL
    assert max_err(m2 / count, x.var((0, 2, 3), unbiased=False)) <= TOL


def test_combine_moments_refuses_mismatched_input():
    means = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="1-D"):
        D.combine_moments(torch.ones(3, 1), means, means)
    with pytest.raises(ValueError, match="same shape"):
        D.combine_moments(torch.ones(2), means, means)
    with pytest.raises(ValueError, match="same shape"):
        D.combine_moments(torch.ones(3), means, torch.zeros(3, 3))
    with pytest.raises(ValueError, match=">= 0"):
        D.combine_moments(torch.tensor([1, -1, 2]), means, means)
    count, mean, m2 = D.combine_moments(torch.zeros(3), means, means)
    assert int(count) == 0 and torch.isnan(mean).all() and (m2 == 0).all()


# ----------------------------------------------------------------------------- the launcher
def test_shard_splits_along_dim_0():
    x = torch.arange(12.0).view(6, 2)
    parts = D.shard(x, [2, 0, 4])
    assert [p.shape[0] for p in parts] == [2, 0, 4] and torch.equal(torch.cat(parts), x)
    assert parts[1].shape == (0, 2)
    for bad in ([2, 3], [7, -1], [2.0, 4], []):
        with pytest.raises(ValueError):
            D.shard(x, bad)


def _local_function(rank, world_size):
    return rank


def test_spawn_refuses_functions_the_workers_cannot_import(monkeypatch):
    """Nothing starts: a lambda, a function inside a function, one from a notebook (module __main__
    without a file), bad arguments."""
    def inner(rank, world_size):
        return rank

    for fn, match in ((lambda rank, world: rank, "lambda"), (inner, "inside another function")):
        with pytest.raises(ValueError, match=match):
            D.spawn(fn, 2)
    notebook = types.ModuleType("__main__")  # what a Jupyter kernel's __main__ looks like: no __file__
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    notebook_fn = types.FunctionType(_local_function.__code__, {}, "train_step")
    notebook_fn.__module__, notebook_fn.__qualname__ = "__main__", "train_step"
    with pytest.raises(ValueError, match="notebook"):
        D.spawn(notebook_fn, 2)
    for kwargs, match in ((dict(world_size=0), "world_size"), (dict(world_size=2, timeout=0), "timeout"),
                          (dict(world_size=2, args=[1]), "tuple"), (dict(world_size=2, backend="mpi"), "backend")):
        with pytest.raises(ValueError, match=match):
            D.spawn(D._hanging_worker, **kwargs)


def assert_gone(folder, world_size):
    for rank in range(world_size):
        pid = int((folder / f"pid.{rank}").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_raising_rank_is_named_with_its_traceback_and_no_process_is_left(tmp_path):
    """Rank 1 raises while rank 0 waits for it in a barrier: spawn stops rank 0 at once (else it would
    wait for the 60 s collective timeout and fail with a TimeoutError instead)."""
    with pytest.raises(D.WorkerError, match=r"rank 1 of 2 failed: ValueError: rank 1 fails on purpose") as info:
        D.spawn(D._raising_worker, 2, args=(1, str(tmp_path)), timeout=60)
    assert info.value.rank == 1
    assert "_raising_worker" in info.value.traceback and "raise ValueError" in info.value.traceback
    assert_gone(tmp_path, 2)


def test_a_hanging_rank_is_killed_on_timeout(tmp_path):
    with pytest.raises(TimeoutError, match=r"rank 1 of 2 did not finish within timeout=3 s"):
        D.spawn(D._hanging_worker, 2, args=(1, str(tmp_path)), timeout=3)
    assert_gone(tmp_path, 2)
