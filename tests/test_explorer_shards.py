"""ShardExplorer (lesson 12) sends one feature of a fixed sample and its two orders once; its view
computes every device's moments and Chan's combine per move (tests/js/shard_explorer.test.mjs).
Expected numbers come from torch (BN's batch statistics, ghost BN) and from the digits themselves,
never from what the explorer computed."""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

from bnlab import GhostBatchNorm1d, plots  # noqa: E402
from bnlab.data import digits  # noqa: E402
from bnlab.widgets import DEVICE_COLORS, MAX_PAYLOAD_BYTES, ShardExplorer, bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent / "js"))
from shard_explorer_fixtures import expected_sizes, synthetic_sample  # noqa: E402

SETTINGS = [(w, s, z) for w in (1, 2, 3, 4, 10, 12) for s in ShardExplorer.SHARDINGS for z in ShardExplorer.SIZES]


@pytest.fixture(scope="module")
def explorer():
    return ShardExplorer()


def test_sends_the_digit_pixel_and_both_orders(explorer):
    data = digits()
    x, y = data.x_train.numpy(), data.y_train.numpy()
    first = np.concatenate([np.flatnonzero(y == c)[:24] for c in range(10)])
    sent = explorer.data
    # float32 pixels k/16, sent exactly
    np.testing.assert_array_equal(sent["values"], x[first, 8 * 2 + 5].astype(np.float64))
    np.testing.assert_array_equal(sent["classes"], y[first])
    assert sent["devices"] == [1, 2, 3, 4, 5, 6, 8, 10, 12]           # the divisors of 240 on offer
    iid, by_class = (np.array(sent["orders"][k]) for k in ShardExplorer.SHARDINGS)
    np.testing.assert_array_equal(iid, np.random.default_rng(0).permutation(240))
    np.testing.assert_array_equal(np.sort(by_class), np.arange(240))
    assert (np.diff(np.array(sent["classes"])[by_class]) >= 0).all()
    assert sent["initial"] == {"devices": 4, "sharding": "sorted by class", "sizes": "equal"}
    assert sent["colors"]["bn"] == plots.COLORS["bn"] and sent["device_colors"] == list(DEVICE_COLORS)
    assert explorer.payload_bytes == len(json.dumps(sent, separators=(",", ":"))) < 20_000 < MAX_PAYLOAD_BYTES
    assert "export default" in bundle(ShardExplorer.VIEW)
    assert repr(explorer) == repr(ShardExplorer(devices=2)) and "0x" not in repr(explorer)


@pytest.mark.parametrize("devices, sharding, sizes", SETTINGS)
def test_moments_are_torch_batch_statistics_and_chan_recovers_the_global_ones(explorer, devices, sharding, sizes):
    m = explorer.moments(devices, sharding, sizes)
    x = torch.tensor(explorer.values)
    order = torch.tensor(explorer.orders[sharding])
    counts = expected_sizes(240, devices, sizes)
    assert m["counts"].tolist() == counts and sum(counts) == 240
    for r, shard in enumerate(torch.split(x[order], counts)):
        var, mean = torch.var_mean(shard, unbiased=False)
        assert m["means"][r] == pytest.approx(mean.item(), rel=1e-12, abs=1e-15)
        assert m["variances"][r] == pytest.approx(var.item(), rel=1e-12, abs=1e-15)
    var, mean = torch.var_mean(x, unbiased=False)
    assert m["global"] == pytest.approx((mean.item(), var.item()), rel=1e-12)
    assert m["combined"] == pytest.approx((mean.item(), var.item()), rel=1e-12)
    # the law of total variance: what per-device BN misses is the variance of the device means
    assert m["within"] + m["between"] == pytest.approx(var.item(), rel=1e-12)
    w = np.array(counts) / 240
    assert m["between"] == pytest.approx(float(w @ (m["means"] - mean.item()) ** 2), rel=1e-12)
    assert m["plain_average"] == pytest.approx((m["means"].mean(), m["variances"].mean()), rel=1e-12)


@pytest.mark.parametrize("devices", [2, 4, 12])
def test_per_device_bn_with_equal_shards_is_ghost_bn(explorer, devices):
    m = explorer.moments(devices, "sorted by class", "equal")
    x = torch.tensor(explorer.values)[torch.tensor(explorer.orders["sorted by class"])][:, None]
    ghost = GhostBatchNorm1d(1, virtual_batch_size=240 // devices, affine=False, dtype=torch.float64)(x)[:, 0]
    per_device = np.concatenate([(v - mu) / np.sqrt(var + 1e-5) for (v, _), mu, var
                                 in zip(explorer.shards(devices, "sorted by class"), m["means"], m["variances"])])
    np.testing.assert_allclose(ghost.detach().numpy(), per_device, rtol=1e-10, atol=1e-12)
    synced = F.batch_norm(x, None, None, training=True)[:, 0]
    mu, var = m["combined"]
    np.testing.assert_allclose(synced.numpy(), (x[:, 0].numpy() - mu) / np.sqrt(var + 1e-5), rtol=1e-10, atol=1e-12)


def test_sorted_shards_lose_the_class_means_iid_ones_keep_them(explorer):
    def seen(sharding):
        m = explorer.moments(10, sharding)
        return m["within"] / m["global"][1]

    # 10 devices sorted by class: one class each, so the class means' share is gone
    assert seen("sorted by class") < 0.6 and seen("iid (shuffled)") > 0.9
    assert explorer.moments(1, "sorted by class")["between"] == pytest.approx(0, abs=1e-15)


def test_titles_state_the_finding(explorer):
    m = explorer.moments(4, "sorted by class")
    var = float(np.var(explorer.values))
    assert explorer.title(4, "sorted by class") == (
        f"4 equal shards, sorted by class: per-device BN normalizes with {100 * m['within'] / var:.0f}% of the batch "
        f"variance; the spread of the device means is the other {100 * m['between'] / var:.0f}%")
    assert explorer.title(1, "iid (shuffled)", "unequal") == ("1 device: its shard is the whole batch, so per-device "
                                                              "BN is global BN")


def test_a_sample_of_its_own():
    values, labels = synthetic_sample()
    e = ShardExplorer(values, labels.astype(np.float64), devices=3, sharding="iid (shuffled)", feature="x (cm)")
    assert e.devices == [1, 2, 3, 4, 5, 6]       # 8 unequal shards of 60 would leave one of a single value
    assert e.data["feature"] == "x (cm)" and e.data["classes"] == labels.tolist()
    assert e.shard_sizes_for(60, 4, "unequal") == expected_sizes(60, 4, "unequal") == [6, 12, 18, 24]


def test_bad_input_is_named():
    values, labels = synthetic_sample()
    with pytest.raises(ValueError, match="give both values and labels"):
        ShardExplorer(values)
    with pytest.raises(ValueError, match="1-D of the same length"):
        ShardExplorer(values, labels[:-1])
    with pytest.raises(ValueError, match="must be finite"):
        ShardExplorer(np.r_[values[:-1], np.nan], labels)
    with pytest.raises(ValueError, match="integer class ids"):
        ShardExplorer(values, labels + 0.5)
    with pytest.raises(ValueError, match="no device count"):
        ShardExplorer(values[:7], labels[:7])
    with pytest.raises(ValueError, match="devices must be one of"):
        ShardExplorer(values, labels, devices=8)
    with pytest.raises(ValueError, match="sharding must be one of"):
        ShardExplorer(values, labels, sharding="sorted")
    with pytest.raises(ValueError, match="sizes must be one of"):
        ShardExplorer(values, labels, sizes="random")
    with pytest.raises(ValueError, match="pixel must be"):
        ShardExplorer.digit_pixel((8, 0))
    e = ShardExplorer(values, labels)
    with pytest.raises(ValueError, match="devices must be one of"):
        e.moments(7, "iid (shuffled)")


def test_figure_draws_the_same_shards(explorer):
    fig = explorer.figure(devices=3, sharding="iid (shuffled)", sizes="unequal")
    strip, bars = fig.axes
    m = explorer.moments(3, "iid (shuffled)", "unequal")
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights[:3], m["variances"])
    # the stacked bar: per-device part, then the device means' part on top, up to sigma^2_B
    assert heights[3] + heights[4] == pytest.approx(np.var(explorer.values), rel=1e-12)
    dots = [line for line in strip.get_lines() if line.get_linestyle() == "None" and len(line.get_ydata()) > 1]
    assert sorted(np.concatenate([d.get_ydata() for d in dots])) == sorted(explorer.values)
    assert fig._suptitle.get_text() == explorer.title(3, "iid (shuffled)", "unequal")
    assert bars.get_ylim()[1] == pytest.approx(1.5 * explorer.largest_variance())
