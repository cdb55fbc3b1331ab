"""Lesson 12's experiments: per-device BN is ghost BN and sync BN is BN on the whole batch (against
torch's batch_norm per shard and on the whole batch); the law of total variance across shards, and the
unweighted average that unequal shards break (against sums written out here); gradient accumulation
against one large batch; the cost table's arithmetic and ResNet-50's counts (against a ResNet-50 built
here on the meta device, and torchvision's published parameter count); and one real 2-rank spawn of
the data-parallel worker, whose first step matches torch's BN on the global batch (sync) or on each
shard (per device).
"""

from __future__ import annotations

import math

import pytest
import torch
from bn_testing import max_err, random_bn_input
from torch import nn
from torch.nn import functional as F

import bnlab
from bnlab.data import Split, digits
from bnlab.distributed import sync_bytes_per_step
from bnlab.experiments import (
    DEVICES,
    RESNET50,
    DevicesRun,
    accumulation_vs_large_batch,
    device_statistics,
    devices_runs,
    simulate_devices,
    sync_cost_table,
)
from bnlab.models import conv_net

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = 1e-12


def class_dependent(n=240, features=3, classes=4, seed=0):
    """(x (n, features), labels): each class shifts every feature's mean by its own amount."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centres = 3 * torch.randn(classes, features, generator=g, dtype=torch.float64)
    return centres[labels] + torch.randn(n, features, generator=g, dtype=torch.float64), labels


# ----------------------------------------------------------------------------- the simulator
@pytest.mark.parametrize("shape", [(24, 3), (24, 3, 2, 2)])
def test_per_device_bn_is_ghost_bn_and_sync_is_bn_on_the_whole_batch(shape):
    x = random_bn_input(shape, seed=1)
    labels = torch.arange(24) % 5
    for order in ("iid", "sorted"):
        split = simulate_devices(x, 4, order=order, labels=labels)
        ordered = x[split.index]
        ghost = bnlab.GhostBatchNorm(3, virtual_batch_size=6, dtype=torch.float64)
        assert max_err(split.per_device[split.index], ghost(ordered)) <= TOL
        # torch's batch_norm on each device's shard, independently of bnlab
        by_torch = torch.cat([F.batch_norm(s, None, None, training=True) for s in ordered.split(6)])
        assert max_err(split.per_device[split.index], by_torch) <= TOL
        assert max_err(split.sync, F.batch_norm(x, None, None, training=True)) <= TOL
        assert max_err(split.sync, bnlab.BatchNorm(3, dtype=torch.float64)(x)) <= TOL
    # sorted: each device's examples in label order; iid: consecutive blocks of x as it comes
    assert torch.equal(labels[split.index], torch.sort(labels).values)
    assert torch.equal(simulate_devices(x, 4).index, torch.arange(24))


def test_unequal_and_empty_shards_each_get_their_own_statistics():
    x, labels = class_dependent(16)
    sizes = [5, 0, 9, 2]
    split = simulate_devices(x, sizes=sizes, order="sorted", labels=labels)
    shards = split.shards(x)
    assert [len(s) for s in shards] == sizes
    for out, s in zip(split.shards(split.per_device), shards):
        if len(s):
            assert max_err(out, F.batch_norm(s, None, None, training=True)) <= TOL
    assert torch.equal(split.counts, torch.tensor(sizes, dtype=torch.float64))
    assert torch.isnan(split.variances[1]).all()
    assert max_err(split.means[2], shards[2].mean(0)) <= TOL
    assert max_err(split.var, x.var(0, unbiased=False)) <= TOL


def test_simulator_refusals():
    x = torch.randn(10, 3, dtype=torch.float64)
    for kwargs, match in [(dict(world_size=3), "equal shards"), (dict(), "world_size .* or sizes"),
                          (dict(world_size=2, sizes=[5, 5]), "not both"), (dict(sizes=[5, 4]), "add up"),
                          (dict(world_size=2, order="random"), "order"), (dict(world_size=2, order="sorted"), "labels"),
                          (dict(world_size=2, order="sorted", labels=torch.zeros(9)), r"labels must be \(N,\)"),
                          (dict(sizes=[9, 1]), "more than 1 value")]:
        with pytest.raises(ValueError, match=match):
            simulate_devices(x, **kwargs)


# ----------------------------------------------------------------------------- the law of total variance
def test_law_of_total_variance_across_class_sorted_unequal_shards():
    x, labels = class_dependent(240)
    sizes = [100, 70, 50, 20]
    stats = device_statistics(x, sizes=sizes, order="sorted", labels=labels)
    # written out here: the shards of the label-sorted batch, their counts, means, biased variances
    shards = torch.sort(labels, stable=True).indices.split(sizes)
    n = torch.tensor(sizes, dtype=torch.float64).view(-1, 1)
    mu = torch.stack([x[s].mean(0) for s in shards])
    var = torch.stack([x[s].var(0, unbiased=False) for s in shards])
    total = x.var(0, unbiased=False)
    within = (n * var).sum(0) / 240
    between = (n * (mu - x.mean(0)) ** 2).sum(0) / 240
    assert max_err(stats.var, total) <= TOL
    assert max_err(stats.within, within) <= TOL and max_err(stats.between, between) <= TOL
    # the identity, exact: the mean of the devices' variances misses the variance of their means
    assert max_err(stats.within + stats.between, stats.var) <= TOL
    assert max_err(stats.combined, stats.var) <= TOL
    # sorted shards: a large gap, over half of the total variance
    assert bool((stats.between > 0).all()) and float(stats.between.sum()) > 0.5 * float(stats.var.sum())
    # unweighted averages, wrong for unequal shards
    assert max_err(stats.naive_mean, mu.mean(0)) <= TOL
    assert max_err(stats.naive_var, var.mean(0) + ((mu - mu.mean(0)) ** 2).mean(0)) <= TOL
    assert max_err(stats.naive_mean, x.mean(0)) > 0.1
    assert max_err(stats.naive_var, total) > 0.1
    rows = stats.rows([0, 2])
    assert [r["channel"] for r in rows] == [0, 2] and rows[1]["var"] == pytest.approx(float(total[2]), abs=TOL)


def test_equal_iid_shards_the_weights_do_not_matter_and_the_gap_is_small():
    x, labels = class_dependent(240)
    equal = device_statistics(x, 4)
    assert max_err(equal.naive_mean, x.mean(0)) <= TOL and max_err(equal.naive_var, equal.var) <= TOL
    sorted_ = device_statistics(x, 4, order="sorted", labels=labels)
    assert max_err(sorted_.naive_var, sorted_.var) <= TOL
    assert float(equal.between.sum()) < 0.1 * float(sorted_.between.sum())


# ----------------------------------------------------------------------------- gradient accumulation
@pytest.fixture(scope="module")
def tiny_images():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(80, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (80,), generator=g)
    return Split(x[:64], y[:64], x[64:], y[64:])


@pytest.mark.parametrize("norm", [None, "gn", "ln"])
def test_accumulation_is_the_large_batch_without_bn(tiny_images, norm):
    r = accumulation_vs_large_batch(norm, micro_batch=4, accumulation_steps=4, data=tiny_images)
    assert r.grad_difference <= 1e-10 and r.grad_relative <= 1e-10
    assert r.running_mean_difference is None and r.ghost_difference is None


@pytest.mark.parametrize("norm", ["bn", "torch_bn"])
def test_accumulation_with_bn_differs_and_is_ghost_bn(tiny_images, norm):
    r = accumulation_vs_large_batch(norm, micro_batch=4, accumulation_steps=4, data=tiny_images)
    assert r.grad_relative > 0.05 and r.grad_difference > 1e-3
    assert r.running_mean_difference > 1e-4 and r.running_var_difference > 1e-4
    assert r.ghost_difference <= 1e-12
    # one micro-batch is the large batch: nothing differs
    whole = accumulation_vs_large_batch(norm, micro_batch=16, accumulation_steps=1, data=tiny_images)
    assert whole.grad_difference <= 1e-12 and whole.running_var_difference <= 1e-12
    with pytest.raises(ValueError, match="exceeds"):
        accumulation_vs_large_batch(norm, micro_batch=16, accumulation_steps=5, data=tiny_images)


# ----------------------------------------------------------------------------- the cost
def meta_resnet50() -> nn.Module:
    """ResNet-50 as torchvision builds it (v1.5), on the meta device: shapes, no memory."""
    kw = dict(bias=False, device="meta")

    def bn(c):
        return nn.BatchNorm2d(c, device="meta")

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, width, 1, **kw), bn(width), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride, 1, **kw), bn(width), nn.ReLU(),
                                      nn.Conv2d(width, 4 * width, 1, **kw), bn(4 * width))
            self.down = (nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, **kw), bn(4 * width))
                         if stride != 1 or cin != 4 * width else None)

    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, **kw), bn(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for b in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if b == 0 and i > 0 else 1))
            cin = 4 * width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000, device="meta"))


def test_resnet50_counts_match_a_built_resnet50():
    net = meta_resnet50()
    bns = [m.num_features for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 53 and RESNET50["bn_channels"] == bns
    assert RESNET50["parameters"] == sum(p.numel() for p in net.parameters()) == 25_557_032  # torchvision's docs


def test_cost_table_arithmetic():
    w = 8
    net = conv_net(1, 10, DEVICES["widths"], norm="bn", hidden=DEVICES["hidden"])
    table = sync_cost_table({"lesson 08": net, "resnet": (RESNET50["bn_channels"], RESNET50["parameters"])}, w)
    row = table["lesson 08"]
    channels = (16, 32, 64)
    # conv 3x3 1->16 and 16->32 without bias, 3 BN layers' gamma and beta, FC 512->64 (no bias), FC 64->10
    params = 9 * 16 + 9 * 16 * 32 + 2 * sum(channels) + 32 * 4 * 4 * 64 + 64 * 10 + 10
    assert row["parameters"] == params and row["bn_layers"] == 3 and row["syncbn_collectives"] == 6
    sent = sum((w - 1) * (2 * c + 1) * 4 + 2 * (w - 1) / w * 2 * c * 4 for c in channels)
    assert row["syncbn_sent"] == pytest.approx(sent, rel=1e-12)
    assert row["syncbn_payload"] == sum((2 * c + 1) * 4 + 2 * c * 4 for c in channels)
    assert row["ddp_sent"] == pytest.approx(2 * 7 / 8 * 4 * params, rel=1e-12)
    assert row["sent_ratio"] == pytest.approx(sent / (2 * 7 / 8 * 4 * params), rel=1e-12)
    res = table["resnet"]
    assert res["syncbn_collectives"] == 106 and res["ddp_buckets"] == math.ceil(4 * 25_557_032 / 2**20 / 25)
    assert res["syncbn_sent"] == pytest.approx(sum(sync_bytes_per_step(c, w)["sent"] for c in RESNET50["bn_channels"]))
    assert res["sent_ratio"] < row["sent_ratio"] < 0.05
    with pytest.raises(ValueError, match="world_size"):
        sync_cost_table({"x": net}, 1)
    with pytest.raises(ValueError, match="nn.Module or"):
        sync_cost_table({"x": [16, 32]}, 2)


# ----------------------------------------------------------------------------- real processes
@pytest.fixture(scope="module")
def images():
    return digits(images=True)


@pytest.fixture(scope="module")
def spawned(images):
    """One 2-rank spawn: first steps in float64 (sync, per device, and one process at the global batch,
    rank 1 idle) and a short float32 training run."""
    configs = [dict(world_size=2, per_device_batch=3, sync=True, seed=5, steps=2, dtype=torch.float64,
                    record_first_step=True),
               dict(world_size=2, per_device_batch=3, sync=False, seed=5, steps=2, dtype=torch.float64,
                    record_first_step=True),
               dict(world_size=1, per_device_batch=6, seed=5, steps=1, dtype=torch.float64, record_first_step=True),
               dict(world_size=2, per_device_batch=8, sync=True, seed=0, steps=60)]
    return devices_runs(configs, data=images, timeout=120)


def reference_first_step(images, record, per_shard: int | None):
    """torch's BN (norm='torch_bn'), from the run's initial weights, on the run's first global batch:
    (logits, gradients of the mean loss); per_shard=b: each b examples normalized on their own."""
    model = conv_net(1, 10, DEVICES["widths"], norm="torch_bn", hidden=DEVICES["hidden"]).double()
    model.load_state_dict(record["initial_state"])
    x, y = images.x_train[record["indices"]].double(), images.y_train[record["indices"]]
    chunks = list(zip(x.split(per_shard), y.split(per_shard))) if per_shard else [(x, y)]
    logits = [model(xc) for xc, _ in chunks]
    loss = sum(F.cross_entropy(out, yc) for out, (_, yc) in zip(logits, chunks)) / len(chunks)
    loss.backward()
    return torch.cat(logits), {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("which, per_shard", [(0, None), (1, 3)], ids=["sync", "per_device"])
def test_first_step_matches_torch_bn(spawned, images, which, per_shard):
    run = spawned[which]
    ranks = run.first_step
    assert len(ranks) == 2 and torch.equal(ranks[0]["indices"], ranks[1]["indices"])
    logits, grads = reference_first_step(images, ranks[0], per_shard)
    assert max_err(torch.cat([r["logits"] for r in ranks]), logits) <= 1e-10
    for r in ranks:
        assert r["grads"].keys() == grads.keys()
        for name, g in grads.items():
            assert max_err(r["grads"][name], g) <= 1e-10, name
    if per_shard is None:
        # a single process at the global batch takes the same batch and the same first step
        single = spawned[2].first_step
        assert len(single) == 1 and torch.equal(single[0]["indices"], ranks[0]["indices"])
        assert max_err(single[0]["logits"], logits) <= 1e-10


def test_a_short_training_run_reports_sensible_numbers(spawned):
    run = spawned[3]
    assert isinstance(run, DevicesRun) and run.mode == "sync" and run.global_batch == 16 and run.steps == 60
    assert run.lr == pytest.approx(0.1 * 16 / 32)
    assert 0.3 < run.test_accuracy <= 1.0          # chance is 0.1
    assert 0 < run.seconds < run.spawn_seconds and run.seconds_per_step == run.seconds / 60
    assert spawned[2].mode == "single" and spawned[1].mode == "per_device" and run.first_step is None


def test_devices_config_refusals(images):
    for config, match in [(dict(world_size=2), "per_device_batch"),
                          (dict(world_size=1, per_device_batch=1), "at least 2"),
                          (dict(world_size=2, per_device_batch=1000), "larger than the training set"),
                          (dict(world_size=2, per_device_batch=2, steps=3, epochs=1), "not both"),
                          (dict(world_size=0, per_device_batch=2), "world_size"),
                          (dict(world_size=2, per_device_batch=2, lr=1.0), "optionally")]:
        with pytest.raises(ValueError, match=match):
            devices_runs([config], data=images)
    with pytest.raises(ValueError, match="empty"):
        devices_runs([], data=images)


def test_devices_grid_runs_every_setting_seed_and_mode_in_one_spawn(monkeypatch):
    import bnlab.experiments as E

    calls = []

    def fake_runs(configs, data=None, timeout=600):
        calls.append(configs)
        return [DevicesRun(c["world_size"], c["per_device_batch"], c.get("sync", False), c["seed"], 1, 0.1,
                           0.5, 1.0, 2.0) for c in configs]

    monkeypatch.setattr(E, "devices_runs", fake_runs)
    runs = E.devices_grid(settings=((4, 2, 1), (2, 16, 2)), seeds=(0, 1))
    assert len(calls) == 1 and len(runs) == 2 * 2 * 3
    assert runs[(4, 2, "single", 1)].global_batch == 8 and runs[(4, 2, "single", 1)].world_size == 1
    assert runs[(2, 16, "sync", 0)].sync and not runs[(2, 16, "per_device", 0)].sync
    assert {c["epochs"] for c in calls[0] if c["per_device_batch"] in (16, 32)} == {2}
    assert len(E.devices_grid(settings=((4, 2, 1),), seeds=(0,), single=False)) == 2


def test_sync_parity_run_compares_real_processes_with_torchs_bn_and_reports_torchs_refusal():
    from bnlab.experiments import sync_parity_run

    result = sync_parity_run(sizes=(3, 0), channels=2, steps=2, seed=1)
    assert max(result.output, result.grad_input, result.grad_weight, result.grad_bias, result.running) < 1e-10
    # one all-gather forward, one all-reduce backward, on the empty rank too
    assert result.collectives == [[2, 2], [2, 2]]
    assert "GPU" in result.torch_on_cpu or result.torch_on_cpu == ""
