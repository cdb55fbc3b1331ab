"""The tools of lessons 06 to 08: frozen BN and SGD momentum in the training loop, History's records,
the new article mistakes (seeds 000-002), run_grid and cnn_run, the sweep plot, and the lesson
clock (SweepExplorer: tests/test_explorer_sweep.py). Expectations are derived here (by hand, by
formula or by a second computation)."""

import copy
import re
import time

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402

import bnlab.runtime  # noqa: E402
from bnlab import layers, plots  # noqa: E402
from bnlab.data import Split, digits, gaussian_blobs  # noqa: E402
from bnlab.experiments import CNN, cnn_run, run_grid  # noqa: E402
from bnlab.mistakes import Seed002BNLayer, evaluate_in_train_mode, seed000_postprocess  # noqa: E402
from bnlab.models import mlp  # noqa: E402
from bnlab.runtime import elapsed, on_accelerator  # noqa: E402
from bnlab.train import History, accuracy, freeze_batchnorm, train_classifier  # noqa: E402
from bnlab.widgets import final_results  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread", "close_figures")


@pytest.fixture(scope="module")
def blobs():
    data = gaussian_blobs(n_per_class=50, seed=0)
    # torch's first training step pays a one-off setup; not the tests'
    train_classifier(mlp(data.num_features, (4,), data.num_classes), data, steps=1, device="cpu", progress=False)
    return data


# ----------------------------------------------------------------------------- freeze_batchnorm
def test_freeze_batchnorm_freezes_every_layer_with_running_statistics():
    bn_kinds = [nn.BatchNorm1d(8), layers.BatchNorm1d(8), layers.BatchRenorm1d(8), layers.RangeBatchNorm1d(8)]
    others = [nn.Linear(4, 8), nn.GroupNorm(2, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Linear(8, 2)]
    model = nn.Sequential(others[0], *bn_kinds, *others[1:]).train()
    assert freeze_batchnorm(model) == 4
    assert all(not m.training for m in bn_kinds) and all(m.training for m in others) and model.training
    images = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.InstanceNorm2d(4, affine=True),
                           layers.BatchNorm2d(4), layers.BatchRenorm2d(4), layers.RangeBatchNorm2d(4)).train()
    assert freeze_batchnorm(images) == 4
    assert [m.training for m in images] == [True, False, True, False, False, False]
    model.train()  # undoes it
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("norm", ["bn", "torch_bn", "brn", "rbn"])
def test_freeze_bn_keeps_running_statistics_while_the_weights_train(norm, blobs):
    torch.manual_seed(0)
    net = mlp(blobs.num_features, (16, 16), blobs.num_classes, norm=norm)
    bns = [m for m in net.modules() if hasattr(m, "running_mean")]
    with torch.no_grad():  # running statistics away from their initial (0, 1)
        net.train()(blobs.x_train[:64])
    stats = {name: b.clone() for name, b in net.named_buffers()}
    weights = {name: p.detach().clone() for name, p in net.named_parameters()}
    modes_in_steps = []
    hooks = [b.register_forward_pre_hook(lambda m, i: modes_in_steps.append(m.training)) for b in bns]
    history = train_classifier(net, blobs, steps=10, lr=0.1, eval_every=5, device="cpu", progress=False,
                               freeze_bn=True)
    for h in hooks:
        h.remove()
    assert len(bns) == 2 and not any(modes_in_steps)
    for name, before in stats.items():
        assert torch.equal(dict(net.named_buffers())[name], before), name
    changed = [name for name, p in net.named_parameters() if not torch.equal(p.detach(), weights[name])]
    assert "0.weight" in changed and "3.weight" in changed and "6.weight" in changed
    assert np.all(np.isfinite(history.loss)) and len(history.loss) == 10
    # between and after the evaluations the BN layers stay frozen, the rest trains
    assert not any(b.training for b in bns) and net.training


def test_without_freeze_bn_the_running_statistics_move(blobs):
    """The counterpart: the same run without freeze_bn does update them (so the test above can fail)."""
    torch.manual_seed(0)
    net = mlp(blobs.num_features, (16,), blobs.num_classes, norm="bn")
    before = net[1].running_mean.clone()
    train_classifier(net, blobs, steps=3, device="cpu", progress=False)
    assert not torch.equal(net[1].running_mean, before)


@pytest.mark.parametrize("norm", [None, "gn", "ln"])
def test_freeze_bn_refuses_a_model_without_batchnorm(norm, blobs):
    torch.manual_seed(0)
    net = mlp(blobs.num_features, (16,), blobs.num_classes, norm=norm)
    with pytest.raises(ValueError, match="freeze_bn"):
        train_classifier(net, blobs, steps=2, device="cpu", progress=False, freeze_bn=True)


# ----------------------------------------------------------------------------- SGD momentum
def one_example_split():
    """Every training row is the same example, so every minibatch gives the same gradient and the
    run is deterministic gradient descent on that example, whatever the sampling."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, generator=g).repeat(20, 1)
    y = torch.full((20,), 2, dtype=torch.int64)
    return Split(x, y, x[:3].clone(), torch.tensor([0, 1, 2]))


def manual_momentum_losses(momentum, lr, steps):
    """Heavy-ball SGD written out: v <- mu v + g, w <- w - lr v (v starts at 0)."""
    data = one_example_split()
    torch.manual_seed(0)
    net = mlp(4, (8,), 3, norm=None)
    velocity = [torch.zeros_like(p) for p in net.parameters()]
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(data.x_train[:1]), data.y_train[:1])
        grads = torch.autograd.grad(loss, list(net.parameters()))
        with torch.no_grad():
            for p, v, g in zip(net.parameters(), velocity, grads):
                v.mul_(momentum).add_(g)
                p.sub_(lr * v)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_momentum_is_heavy_ball_sgd(momentum):
    torch.manual_seed(0)
    net = mlp(4, (8,), 3, norm=None)
    history = train_classifier(net, one_example_split(), steps=6, batch_size=5, lr=0.1, device="cpu",
                               progress=False, momentum=momentum)
    np.testing.assert_allclose(history.loss, manual_momentum_losses(momentum, 0.1, 6), rtol=1e-5)


def test_momentum_changes_the_run():
    runs = {}
    for momentum in (0.0, 0.9):
        torch.manual_seed(0)
        net = mlp(4, (8,), 3, norm=None)
        runs[momentum] = train_classifier(net, one_example_split(), steps=6, lr=0.1, device="cpu",
                                          progress=False, momentum=momentum).loss
    assert runs[0.0][0] == runs[0.9][0]                 # the first step sees no velocity yet
    assert runs[0.9][-1] < runs[0.0][-1]                # then momentum goes faster downhill


@pytest.mark.parametrize("kwargs", [dict(momentum=0.9, optimizer="adam"), dict(momentum=1.0),
                                    dict(momentum=-0.1)])
def test_momentum_refuses_bad_values(kwargs, blobs):
    torch.manual_seed(0)
    net = mlp(blobs.num_features, (8,), blobs.num_classes, norm=None)
    with pytest.raises(ValueError, match="momentum"):
        train_classifier(net, blobs, steps=1, device="cpu", progress=False, **kwargs)


# ----------------------------------------------------------------------------- History
def test_history_record_splits_accuracy_from_other_metrics():
    history = History()
    history.record({"accuracy": 0.5, "iou": 0.2, "dice": 0.3})
    history.record({"accuracy": 0.7, "iou": 0.4, "dice": 0.6})
    assert history.test_accuracy == [0.5, 0.7]
    assert history.metrics == {"iou": [0.2, 0.4], "dice": [0.3, 0.6]}
    with pytest.raises(KeyError):
        history.record({"iou": 1.0})  # every evaluation has an accuracy


def test_history_keeps_the_model(blobs):
    torch.manual_seed(0)
    net = mlp(blobs.num_features, (8,), blobs.num_classes, norm="bn")
    history = train_classifier(net, blobs, steps=2, device="cpu", progress=False)
    assert history.model is net and history.metrics == {}
    assert "model" not in repr(history)


# ----------------------------------------------------------------------------- mistakes: seeds 000, 001, 002
def test_seed000_postprocess_broadcasts_one_output_to_every_channel():
    """An (N, 1) output and a BN of C = 5 channels give an (N, 5) byte "image":
    clamp((out * sqrt(running_var) + running_mean + 1) * 255, 0, 255), truncated to uint8."""
    bn = nn.BatchNorm2d(5)
    bn.running_mean.copy_(torch.tensor([-1.2, 0.0, 0.3, -0.5, 2.0]))
    bn.running_var.copy_(torch.tensor([0.25, 1.0, 0.01, 4.0, 0.5]))
    g = torch.Generator().manual_seed(0)
    outputs = torch.rand(6, 1, generator=g) * 2 - 1.2
    result = seed000_postprocess(outputs, bn)
    assert result.shape == (6, 5) and result.dtype == torch.uint8
    o = outputs.numpy().astype(np.float32)                        # (6, 1)
    rv, rm = bn.running_var.numpy(), bn.running_mean.numpy()       # (5,)
    expected = np.clip((o * np.sqrt(rv) + rm + np.float32(1)) * np.float32(255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(result.numpy(), expected)
    assert (expected == 0).any() and (expected == 255).any()      # both clamps are exercised
    # the same output value became five different "pixels", one per unrelated channel statistic
    assert all(len(set(row)) > 1 for row in result.numpy())


def test_seed000_postprocess_takes_bnlab_batchnorm():
    bn = layers.BatchNorm1d(3)
    result = seed000_postprocess(torch.zeros(4, 1), bn)   # running (0, 1): (0 + 0 + 1) * 255
    assert torch.equal(result, torch.full((4, 3), 255, dtype=torch.uint8))


@pytest.fixture(scope="module")
def trained_bn(blobs):
    torch.manual_seed(0)
    net = mlp(blobs.num_features, (16,), blobs.num_classes, norm="bn")
    train_classifier(net, blobs, steps=60, lr=0.1, device="cpu", progress=False)
    # 12 test examples of each class, grouped by class: a batch of 12 holds one class
    keep = torch.cat([torch.nonzero(blobs.y_test == c).flatten()[:12] for c in range(blobs.num_classes)])
    return net.eval(), blobs.x_test[keep], blobs.y_test[keep]


def test_evaluate_in_train_mode_uses_and_updates_batch_statistics(trained_bn):
    net, x, y = trained_bn
    assert len(y) == 48 and all(len(set(y[i:i + 12].tolist())) == 1 for i in range(0, 48, 12))
    results = {}
    for batch_size in (12, 48):
        model = copy.deepcopy(net)
        # seed 001's loop, written out on a twin: training mode, batch by batch
        twin = copy.deepcopy(net).train()
        with torch.no_grad():
            expected = sum((twin(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                           for i in range(0, len(x), batch_size)) / len(x)
        results[batch_size] = evaluate_in_train_mode(model, x, y, batch_size)
        assert results[batch_size] == expected
        # side effect: the running statistics now hold the test batches'
        assert not torch.equal(model[1].running_mean, net[1].running_mean)
        torch.testing.assert_close(model[1].running_mean, twin[1].running_mean)
        torch.testing.assert_close(model[1].running_var, twin[1].running_var)
    # one-class batches lose the class information that BN's batch mean removes
    assert results[12] < results[48] - 0.2


def test_accuracy_is_neither_batch_dependent_nor_changes_running_statistics(trained_bn):
    net, x, y = trained_bn
    model = copy.deepcopy(net)
    values = {b: accuracy(model, x, y, batch_size=b) for b in (1, 12, 48)}
    assert len(set(values.values())) == 1
    for name, buffer in net.named_buffers():
        assert torch.equal(dict(model.named_buffers())[name], buffer), name


def test_seed002_layer_fails_unless_height_equals_channels():
    """gamma gets input_shape[1] = H entries, multiplied into the last axis (C)."""
    x = torch.randn(2, 5, 5, 3)
    with pytest.raises(RuntimeError, match="size"):
        Seed002BNLayer()(x)
    with pytest.raises(RuntimeError, match="size"):
        Seed002BNLayer()(torch.randn(2, 4, 7, 3))


def test_seed002_layer_standardizes_each_pixel_over_its_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 3, generator=g, dtype=torch.float64) * 10 + 5   # H = C = 3
    layer = Seed002BNLayer()
    out = layer(x).detach().numpy()
    v = x.numpy()
    mean = v.mean(axis=-1, keepdims=True)
    var = ((v - mean) ** 2).mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(out, (v - mean) / np.sqrt(var + 1e-3), rtol=1e-10, atol=1e-12)
    assert np.abs(out.mean(axis=-1)).max() < 1e-10
    np.testing.assert_allclose(out.var(axis=-1), 1.0, atol=1e-2)
    assert layer.gamma.shape == (x.shape[1],)
    # no batch statistics: an example's output does not depend on its batch-mates
    alone = Seed002BNLayer()(x[2:3]).detach()
    torch.testing.assert_close(alone, torch.from_numpy(out[2:3]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("flag", [None, False, 0])
def test_seed002_layer_without_training_flag_is_frozen_and_drops_beta(flag):
    x = torch.randn(2, 3, 4, 3)
    layer = Seed002BNLayer(training=flag)
    before = layer(x).detach()
    assert all(not p.requires_grad for p in layer.parameters()) and len(list(layer.parameters())) == 2
    with torch.no_grad():
        layer.beta.fill_(7.0)
    assert torch.equal(layer(x).detach(), before)   # beta has no effect


def test_seed002_layer_with_training_flag_trains_and_adds_beta():
    x = torch.randn(2, 3, 4, 3)
    layer = Seed002BNLayer(training=True)
    before = layer(x).detach()
    assert all(p.requires_grad for p in layer.parameters()) and len(list(layer.parameters())) == 2
    with torch.no_grad():
        layer.beta.fill_(7.0)
    torch.testing.assert_close(layer(x).detach(), before + 7.0)


# ----------------------------------------------------------------------------- run_grid, cnn_run
def test_run_grid_calls_every_combination_once_in_order():
    calls = []

    def train_one(a, b):
        calls.append((a, b))
        return f"{a}-{b}"

    runs = run_grid(train_one, progress=False, a=[1, 2], b=["x", "y", "z"])
    expected = [(a, b) for a in (1, 2) for b in ("x", "y", "z")]
    assert calls == expected and list(runs) == expected
    assert all(runs[(a, b)] == f"{a}-{b}" for a, b in expected)


def test_run_grid_single_axis_keys_are_bare_values():
    runs = run_grid(lambda norm: f"trained {norm}", progress=False, norm=[None, "bn", "gn"])
    assert list(runs) == [None, "bn", "gn"]
    assert runs == {None: "trained None", "bn": "trained bn", "gn": "trained gn"}


@pytest.mark.parametrize("axes", [dict(a=[1], b=[]), dict(a=[]), {}])
def test_run_grid_refuses_an_empty_axis(axes):
    with pytest.raises(ValueError, match="at least one value"):
        run_grid(lambda **kw: None, progress=False, **axes)


@pytest.fixture(scope="module")
def digit_images():
    return digits(images=True)


@pytest.mark.parametrize("norm", [None, "bn", "gn"])
def test_cnn_run_returns_the_trained_conv_net(norm, digit_images):
    history = cnn_run(norm, lr=0.05, steps=3, data=digit_images, device="cpu")
    assert isinstance(history, History) and isinstance(history.model, nn.Sequential)
    convs = [m for m in history.model.modules() if isinstance(m, nn.Conv2d)]
    assert tuple(c.out_channels for c in convs) == CNN["widths"]
    assert len(history.loss) == 3 and history.eval_steps == [0, 3] and np.all(np.isfinite(history.loss))
    # the History's accuracy is the returned model's on the test set
    assert history.test_accuracy[-1] == accuracy(history.model, digit_images.x_test, digit_images.y_test)


def test_cnn_run_is_seeded_and_passes_model_options(digit_images):
    a = cnn_run("bn", lr=0.05, steps=3, data=digit_images, device="cpu", hidden=12)
    b = cnn_run("bn", lr=0.05, steps=3, data=digit_images, device="cpu", hidden=12)
    c = cnn_run("bn", lr=0.05, steps=3, data=digit_images, device="cpu", hidden=12, seed=1)
    assert a.loss == b.loss and a.loss != c.loss
    assert [m.out_features for m in a.model.modules() if isinstance(m, nn.Linear)] == [12, 10]


# ----------------------------------------------------------------------------- plots: variant, plot_sweep
@pytest.mark.parametrize("norm, key", [(None, "plain"), ("bn", "bn"), ("torch_bn", "bn"), ("gn", "gn"),
                                       ("ln", "ln"), ("in", "in"), ("brn", "brn"), ("rbn", "rbn")])
def test_variant_maps_norm_names_to_colour_keys(norm, key):
    assert plots.variant(norm) == key and key in plots.COLORS and key in plots.LABELS


@pytest.mark.parametrize("key", list(plots.COLORS))
def test_variant_keeps_colour_keys(key):
    assert plots.variant(key) == key


@pytest.mark.parametrize("bad", ["batchnorm", "BN", "", 3])
def test_variant_refuses_unknown_names(bad):
    with pytest.raises(ValueError, match="unknown variant"):
        plots.variant(bad)


SWEEP = {None: {1.0: [0.2, 0.4, 0.3], 0.1: [0.5, 0.7]}, "torch_bn": {0.1: 0.9, 1.0: [0.8, 0.85]},
         "gn": {0.1: [0.6], 1.0: [0.7]}}


def test_plot_sweep_one_line_per_variant_at_the_mean():
    fig = plots.plot_sweep(SWEEP, "learning rate")
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    for line, (name, by_value) in zip(ax.lines, SWEEP.items()):
        np.testing.assert_allclose(line.get_xdata(), [0.1, 1.0])
        means = [sum(np.atleast_1d(by_value[v])) / len(np.atleast_1d(by_value[v])) for v in (0.1, 1.0)]
        np.testing.assert_allclose(line.get_ydata(), means)
        key = {None: "plain", "torch_bn": "bn", "gn": "gn"}[name]
        assert to_hex(line.get_color()) == plots.COLORS[key] and line.get_label() == plots.LABELS[key]
    assert ax.get_xlabel() == "learning rate" and ax.get_ylabel() and ax.get_title()
    assert ax.get_xscale() == "log"
    # min-max bands only where there is more than one seed somewhere: not for gn
    assert len(ax.collections) == 2


def test_plot_sweep_marker_chance_and_linear_axis():
    fig, (ax,) = plots.new_figure(1)
    assert plots.plot_sweep(SWEEP, "batch size", ax=ax, log_base=None, marker=1.0, chance=0.25) is fig
    assert ax.get_xscale() == "linear" and len(ax.lines) == 3 + 2
    assert any(np.allclose(line.get_xdata(), [1.0, 1.0]) for line in ax.lines)      # the marker
    assert any(np.allclose(line.get_ydata(), [0.25, 0.25]) for line in ax.lines)    # chance


# ----------------------------------------------------------------------------- final_results
def fake(final, loss=0.5, metrics=None, diverged_at=None):
    return History(loss=[2.0, loss], eval_steps=[0, 5], test_accuracy=[0.1, final], metrics=metrics or {},
                   diverged_at=diverged_at)


def test_final_results_groups_by_variant_and_setting():
    runs = {("bn", 0.1, 0): fake(0.8), ("bn", 0.1, 1): fake(0.7), ("bn", 1.0, 0): fake(0.6),
            (None, 0.1, 0): fake(0.3)}
    assert final_results(runs) == {"bn": {0.1: [0.8, 0.7], 1.0: [0.6]}, None: {0.1: [0.3]}}
    assert final_results({("gn", 16): fake(0.5), ("gn", 32): fake(0.4)}) == {"gn": {16: [0.5], 32: [0.4]}}
    with_iou = {("bn", 0.1): fake(0.9, metrics={"iou": [0.0, 0.42]})}
    assert final_results(with_iou, metric="iou") == {"bn": {0.1: [0.42]}}


# ----------------------------------------------------------------------------- runtime: the lesson clock
def test_elapsed_reports_seconds_since_setup_and_the_device(monkeypatch):
    monkeypatch.setattr(bnlab.runtime, "_started", time.perf_counter() - 42.3)
    text = elapsed(torch.device("cpu"))
    assert re.search(r"\b42 s\b", text) and "cpu" in text
    assert "cuda" in elapsed(torch.device("cuda")) and "on " not in elapsed()
    assert re.search(r"\b42 s\b", elapsed())


def test_setup_restarts_the_clock(restore_threads, monkeypatch):
    monkeypatch.setattr(bnlab.runtime, "_started", time.perf_counter() - 1000.0)
    assert "1000 s" in elapsed()
    bnlab.runtime.setup(verbose=False)
    assert re.search(r"\b0 s\b", elapsed())


@pytest.mark.parametrize("device, expected", [("cpu", False), ("cuda", True), ("cuda:1", True), ("mps", True),
                                              ("meta", False)])
def test_on_accelerator(device, expected):
    assert on_accelerator(torch.device(device)) is expected


# ----------------------------------------------------------------------------- lesson 07 / 08 data and runs
def test_vary_scans_is_a_per_image_affine_map():
    from bnlab.data import Split, digits, vary_scans

    base = digits(images=True)
    varied = vary_scans(base, spread=1.0, seed=3)
    assert torch.equal(varied.y_train, base.y_train) and torch.equal(varied.y_test, base.y_test)
    for original, scan in ((base.x_train[:20], varied.x_train[:20]), (base.x_test[:20], varied.x_test[:20])):
        for a, b in zip(original.flatten(1).double(), scan.flatten(1).double()):
            slope, offset = np.polyfit(a.numpy(), b.numpy(), 1)
            assert np.exp(-1) - 1e-4 <= slope <= np.exp(1) + 1e-4 and abs(offset) <= 1 + 1e-4
            assert np.allclose(slope * a.numpy() + offset, b.numpy(), atol=1e-4)
    pairs = zip(base.x_train[:50].flatten(1), varied.x_train[:50].flatten(1))
    gains = [np.polyfit(a.numpy(), b.numpy(), 1)[0] for a, b in pairs]
    assert np.std(np.log(gains)) > 0.3                      # the gains really differ from scan to scan
    assert torch.equal(vary_scans(base, spread=0.0).x_train, base.x_train)
    assert torch.equal(vary_scans(base, seed=3).x_train, varied.x_train)
    with pytest.raises(ValueError, match="images"):
        vary_scans(digits())
    with pytest.raises(ValueError, match="spread"):
        vary_scans(base, spread=-1.0)
    assert isinstance(varied, Split)


def test_foreground_merges_the_shape_classes():
    from bnlab.data import shapes

    data = shapes(n_train=16, n_test=8, size=16)
    merged = data.foreground()
    assert merged.num_classes == 2 and merged.class_names[0] == data.class_names[0]
    assert torch.equal(merged.masks_train == 1, data.masks_train > 0)
    assert torch.equal(merged.masks_test == 0, data.masks_test == 0)
    assert merged.x_train is data.x_train


def test_small_batch_run_trains_the_same_epochs_at_every_batch_size():
    from bnlab.data import Split, digits
    from bnlab.experiments import SMALL_BATCH, small_batch_run
    from bnlab.layers import BatchRenorm

    full = digits(images=True)
    data = Split(full.x_train[:64], full.y_train[:64], full.x_test[:32], full.y_test[:32])
    for batch_size in (4, 16):
        history = small_batch_run("brn", batch_size, data=data, epochs=2, device="cpu")
        assert len(history.loss) == 2 * (64 // batch_size)
        renorms = [m for m in history.model.modules() if isinstance(m, BatchRenorm)]
        assert len(renorms) == 3 and all(m.warmup_steps == 64 // batch_size for m in renorms)
    head = small_batch_run("in", 8, data=data, epochs=1, device="cpu").model
    assert isinstance(head[4][1], torch.nn.GroupNorm) and head[4][1].num_groups == 1   # LayerNorm in the FC head
    assert SMALL_BATCH["batch_sizes"][0] == 2


def test_segmentation_run_keeps_predicted_masks_at_every_evaluation():
    from bnlab.data import shapes
    from bnlab.experiments import SEGMENTATION, segmentation_run

    data = shapes(n_train=32, n_test=16, size=16).foreground()
    history = segmentation_run("bn", steps=6, data=data, device="cpu", eval_every=3)
    assert sorted(history.snapshots) == history.eval_steps == [0, 3, 6]
    keep = min(SEGMENTATION["keep"], 16)
    assert all(masks.shape == (keep, 16, 16) for masks in history.snapshots.values())
    # the kept masks are the model's predictions on the first test images, in eval mode
    history.model.eval()
    with torch.no_grad():
        assert torch.equal(history.snapshots[6], history.model(data.x_test[:keep]).argmax(1))
    assert len(history.metrics["iou"]) == len(history.metrics["dice"]) == 3
