"""bnlab.probes: Probe records what it claims, computed here independently on the same tensors.

Every expectation is computed with NumPy / torch directly on the tensors the model produced, which
our own forward hooks (`Tap`) capture next to the probe's.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bnlab.probes import Probe, activation_layers, median_drift

RTOL, ATOL = 1e-5, 1e-6  # the probe records float32
DEFAULT_Q = (15.0, 50.0, 85.0)


# ---------------------------------------------------------------------------- helpers
def mlp(seed=0):
    """Linear-Sigmoid-Linear-Tanh-Linear-ReLU-Linear with some saturated and some dead units."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 12), nn.Sigmoid(), nn.Linear(12, 12), nn.Tanh(),
                          nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 1))
    with torch.no_grad():
        model[0].weight.mul_(4)  # some sigmoid outputs saturate
        model[2].weight.mul_(3)  # and some tanh outputs
        model[4].bias[:3] = -10  # three ReLU units are 0 for every input
        model[6].weight[:, 3] = 0  # dL/d(ReLU output) is exactly 0 for unit 3
    return model


def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 5, 3), nn.Tanh(), nn.Conv2d(5, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 5 * 5, 1))


def data(n=32, seed=1, shape=(5,)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randn(n, 1, generator=g)


MLP_LAYERS = {"hidden1": 1, "hidden2": 3, "hidden3": 5}  # name -> index in mlp()
CONV_LAYERS = {"hidden1": 1, "hidden2": 3}
KIND = {"hidden1": "sigmoid", "hidden2": "tanh", "hidden3": "relu"}


class Tap:
    """Our own forward hooks: (input, output) of every call of the given modules, gradients retained."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.calls = {name: [] for name in modules}
        self.handles = [m.register_forward_hook(functools.partial(self._hook, name)) for name, m in modules.items()]

    def _hook(self, name, module, inputs, output):
        if output.requires_grad:
            output.retain_grad()
        self.calls[name].append((inputs[0].detach().clone(), output))

    def values(self, name, capture="output", call=0):
        x, y = self.calls[name][call]
        return (y if capture == "output" else x).detach().double().numpy()

    def output(self, name, call=0):
        return self.calls[name][call][1].detach().double().numpy()

    def grad(self, name, call=0):
        return self.calls[name][call][1].grad.double().numpy()

    def clear(self):
        for calls in self.calls.values():
            calls.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def step(model, x, y, opt=None):
    F.mse_loss(model(x), y).backward()
    if opt is not None:
        opt.step()
        opt.zero_grad()


def hist(values, edges):
    """Fraction of values per bin of edges, values outside [edges[0], edges[-1]] in the end bins,
    NaN in none."""
    finite = values[~np.isnan(values)]
    counts, _ = np.histogram(np.clip(finite, edges[0], edges[-1]), bins=edges)
    return counts / values.size


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def one_recorded_step(capture="output", model=None, force_torch=False, **kwargs):
    """One step of mlp() under a probe (default layers) and a Tap; returns (recording, tap)."""
    model = mlp() if model is None else model
    x, y = data()
    with Tap({n: model[i] for n, i in MLP_LAYERS.items()}) as tap, \
            Probe(model, capture=capture, **kwargs) as probe:
        probe._force_torch = force_torch
        step(model, x, y)
        probe.end_step()
    return probe.recording, tap


# ---------------------------------------------------------------------------- 1. activation statistics
@pytest.mark.parametrize("percentiles", [None, (0, 100), (1, 99)])
@pytest.mark.parametrize("capture", ["output", "input"])
def test_activation_statistics_equal_direct_computation(capture, percentiles):
    kwargs = {} if percentiles is None else {"percentiles": percentiles}
    rec, tap = one_recorded_step(capture, **kwargs)
    q = DEFAULT_Q if percentiles is None else percentiles
    assert len(rec) == 1 and list(rec.steps) == [0] and rec.percentiles == tuple(map(float, q))
    for name, kind in KIND.items():
        r, a, out = rec[name], tap.values(name, capture), tap.output(name)
        close(r.mean, [a.mean()])
        close(r.std, [a.std()])  # population std, ddof=0
        close(r.percentiles, [np.percentile(a, q)])
        assert r.hist.shape == (1, len(r.edges) - 1)
        close(r.hist, [hist(a, r.edges)])
        close(r.hist.sum(1), [1.0])
        saturated = {"sigmoid": np.mean(out * (1 - out) < 0.025), "tanh": np.mean(1 - out ** 2 < 0.1)}.get(kind)
        dead = np.mean(np.all(out == 0, axis=0)) if kind == "relu" else None
        if saturated is None:
            assert np.isnan(r.saturated).all()
        else:
            assert 0 < saturated < 1  # the test data exercise it
            close(r.saturated, [saturated])
        if dead is None:
            assert np.isnan(r.dead).all()
        else:
            assert 0 < dead < 1
            close(r.dead, [dead])


@pytest.mark.parametrize("capture, ranges", [
    ("output", {"hidden1": (0, 1), "hidden2": (-1, 1), "hidden3": (0, 5)}),
    ("input", {"hidden1": (-5, 5), "hidden2": (-5, 5), "hidden3": (-5, 5)}),
])
def test_default_histogram_ranges(capture, ranges):
    probe = Probe(mlp(), capture=capture, bins=8)
    for name, (lo, hi) in ranges.items():
        close(probe.recording[name].edges, np.linspace(lo, hi, 9))
    custom = Probe(mlp(), hist_range=(-2, 3), bins=5)
    for name in ranges:
        close(custom.recording[name].edges, [-2, -1, 0, 1, 2, 3])


def test_layers_by_name_and_nan_where_saturated_dead_do_not_apply():
    model = mlp()
    x, y = data()
    with Tap({"0": model[0], "1": model[1]}) as tap, Probe(model, layers=["0", "1"], bins=10) as probe:
        step(model, x, y)
        probe.end_step()
    rec = probe.recording
    assert list(rec.layers) == ["0", "1"]
    close(rec["0"].mean, [tap.values("0").mean()])  # a Linear layer's output
    assert np.isnan(rec["0"].saturated).all() and np.isnan(rec["0"].dead).all()
    assert np.isfinite(rec["1"].saturated).all() and np.isnan(rec["1"].dead).all()


@pytest.mark.parametrize("capture", ["output", "input"])
def test_unit_percentiles_of_dense_layers(capture):
    model, units, q = mlp(), 4, (5, 50, 95)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Tap({n: model[i] for n, i in MLP_LAYERS.items()}) as tap, \
            Probe(model, optimizer=opt, capture=capture, percentiles=q, units=units) as probe:
        for seed in (1, 2):
            step(model, *data(seed=seed), opt)
    for name in MLP_LAYERS:
        got = probe.recording[name].unit_percentiles
        assert got.shape == (2, units, len(q))
        for t in range(2):
            a = tap.values(name, capture, call=t)
            close(got[t], np.percentile(a[:, :units], q, axis=0).T)


@pytest.mark.parametrize("capture", ["output", "input"])
def test_unit_percentiles_of_conv_layers_are_per_channel_over_batch_and_space(capture):
    model, units = convnet(), 3
    x, y = data(n=6, shape=(2, 7, 7))
    with Tap({n: model[i] for n, i in CONV_LAYERS.items()}) as tap, \
            Probe(model, capture=capture, units=units) as probe:
        step(model, x, y)
        probe.end_step()
    for name in CONV_LAYERS:
        a = tap.values(name, capture)
        assert a.ndim == 4
        got = probe.recording[name].unit_percentiles
        assert got.shape == (1, units, 3)
        close(got[0], np.percentile(a[:, :units], DEFAULT_Q, axis=(0, 2, 3)).T)
        close(probe.recording[name].percentiles, [np.percentile(a, DEFAULT_Q)])


# ---------------------------------------------------------------------------- 2. gradient statistics
@pytest.mark.parametrize("grad_log_range", [(-10.0, 0.0), (-3.5, -2.0)])
@pytest.mark.parametrize("capture", ["output", "input"])
def test_gradient_statistics_are_those_of_dloss_doutput(capture, grad_log_range):
    rec, tap = one_recorded_step(capture, grad_log_range=grad_log_range, grad_bins=12)
    for name in KIND:
        r, g = rec[name], tap.grad(name)  # dL/d(layer output), whatever is captured
        close(r.grad_norm, [np.linalg.norm(g)])
        close(r.grad_std, [g.std()])
        close(r.grad_edges, np.linspace(*grad_log_range, 13))
        with np.errstate(divide="ignore"):
            close(r.grad_hist, [hist(np.log10(np.abs(g)), r.grad_edges)])
        close(r.grad_hist.sum(1), [1.0])
    assert (tap.grad("hidden3") == 0).any()  # log10|0| = -inf counts in the first bin
    assert rec["hidden3"].grad_hist[0, 0] >= np.mean(tap.grad("hidden3") == 0) > 0
    if grad_log_range == (-3.5, -2.0):  # the range clips: values land in both end bins
        assert rec["hidden1"].grad_hist[0, 0] > 0 and rec["hidden1"].grad_hist[0, -1] > 0


# ---------------------------------------------------------------------------- 3. parameter ratios
def norm(t):
    return torch.linalg.vector_norm(t.detach().double()).item()


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=0.01)],
                         ids=["sgd", "adam"])
def test_grad_data_and_update_data(make_opt):
    model = mlp()
    with torch.no_grad():
        model[2].bias.zero_()  # ||theta|| = 0 at step 0
    opt = make_opt(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    expected_grad, expected_update = {n: [] for n in names}, {n: [] for n in names}
    with Probe(model, optimizer=opt) as probe:
        for seed in range(3):
            x, y = data(seed=seed)
            F.mse_loss(model(x), y).backward()
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            for n, p in model.named_parameters():
                expected_grad[n].append(norm(p.grad) / norm(p) if norm(p) > 0 else np.nan)
            opt.step()
            opt.zero_grad()
            for n, p in model.named_parameters():
                d = norm(before[n])
                expected_update[n].append(norm(p - before[n]) / d if d > 0 else np.nan)
    params = probe.recording.params
    assert list(params) == names
    for n in names:
        close(params[n].grad_data, expected_grad[n])
        close(params[n].update_data, expected_update[n])
    assert np.isnan(params["2.bias"].grad_data[0]) and np.isnan(params["2.bias"].update_data[0])
    assert np.isfinite(params["2.bias"].grad_data[1:]).all()
    if isinstance(opt, torch.optim.SGD):
        for n in names:
            close(params[n].update_data, 0.1 * params[n].grad_data)


def test_without_optimizer_end_step_records_grad_data_and_nan_update_data():
    model = mlp()
    with torch.no_grad():
        model[0].bias.zero_()
    with Probe(model) as probe:
        step(model, *data())
        expected = {n: norm(p.grad) / norm(p) if norm(p) > 0 else np.nan for n, p in model.named_parameters()}
        probe.end_step()
    for n, r in probe.recording.params.items():
        close(r.grad_data, [expected[n]])
        assert np.isnan(r.update_data).all()
    assert np.isnan(probe.recording.params["0.bias"].grad_data).all()


# ---------------------------------------------------------------------------- 4. schedule
def test_every_k_steps_ignores_no_grad_and_repeated_calls():
    model, every = mlp(), 3
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    recorded = []
    with Tap({"hidden3": model[5]}) as tap, Probe(model, optimizer=opt, every=every) as probe:
        for s in range(10):
            tap.clear()
            with torch.no_grad():
                model(data(seed=100 + s)[0] * 5)  # an evaluation: ignored
            x1, y1 = data(seed=s)
            x2, y2 = data(seed=50 + s)
            (F.mse_loss(model(x1), y1) + F.mse_loss(model(x2), y2)).backward()  # second call ignored
            if s % every == 0:  # call 0 ran under no_grad, call 1 is the first training call
                recorded.append((tap.values("hidden3", call=1), tap.grad("hidden3", call=1)))
            opt.step()
            opt.zero_grad()
    rec = probe.recording["hidden3"]
    assert list(probe.recording.steps) == [0, 3, 6, 9]
    assert len(probe.recording) == 4 and len(rec.mean) == 4
    close(rec.mean, [a.mean() for a, _ in recorded])
    close(rec.std, [a.std() for a, _ in recorded])
    close(rec.grad_norm, [np.linalg.norm(g) for _, g in recorded])


# ---------------------------------------------------------------------------- 5. hooks
def no_hooks_left(model):
    return all(not m._forward_hooks for m in model.modules())


def train(model, opt, steps=3):
    for s in range(steps):
        step(model, *data(seed=s), opt)


def test_hooks_removed_on_exit():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, optimizer=opt) as probe:
        assert not no_hooks_left(model)
        train(model, opt)
    assert no_hooks_left(model)
    assert len(probe.recording) == 3
    train(model, opt)
    assert len(probe.recording) == 3 and probe.step == 3


def test_hooks_removed_after_an_exception():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, optimizer=opt)
    with pytest.raises(ZeroDivisionError):
        with probe:
            train(model, opt, steps=2)
            1 / 0
    assert no_hooks_left(model)
    train(model, opt)
    assert len(probe.recording) == 2


def test_reentering_an_attached_probe_raises():
    model = mlp()
    probe = Probe(model)
    with probe:
        with pytest.raises(RuntimeError, match="already attached"):
            probe.__enter__()
    assert no_hooks_left(model)


# ---------------------------------------------------------------------------- 6. torch path == NumPy path
def record(make_model, shape, force_torch, capture, buffer_steps=None):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = Probe(model, optimizer=opt, capture=capture, units=3, percentiles=(0, 10, 50, 90, 100),
                  buffer_steps=buffer_steps)
    probe._force_torch = force_torch
    with probe:
        for s in range(3):
            step(model, *data(n=8, seed=s, shape=shape), opt)
    return probe.recording


FIELDS = ["mean", "std", "percentiles", "hist", "saturated", "dead", "unit_percentiles",
          "grad_norm", "grad_std", "grad_hist"]


@pytest.mark.parametrize("buffer_steps", [None, 2])
@pytest.mark.parametrize("capture", ["output", "input"])
@pytest.mark.parametrize("make_model, shape", [(mlp, (5,)), (convnet, (2, 7, 7))], ids=["mlp", "conv"])
def test_torch_path_equals_numpy_path(make_model, shape, capture, buffer_steps):
    np_rec = record(make_model, shape, False, capture)
    torch_rec = record(make_model, shape, True, capture, buffer_steps)
    assert list(np_rec.steps) == list(torch_rec.steps) == [0, 1, 2]
    for name, layer in np_rec.layers.items():
        for field in FIELDS:
            ours, theirs = getattr(torch_rec[name], field), getattr(layer, field)
            assert not np.isnan(theirs).all() or field in ("saturated", "dead"), (name, field)
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5, err_msg=f"{name}.{field}")
    for name, p in np_rec.params.items():
        np.testing.assert_allclose(torch_rec.params[name].grad_data, p.grad_data, rtol=1e-5)
        np.testing.assert_allclose(torch_rec.params[name].update_data, p.update_data, rtol=1e-5)


# ---------------------------------------------------------------------------- 7. bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(every=0), "every"),
    (dict(capture="grad"), "capture"),
    (dict(percentiles=(50, 101)), "percentiles"),
    (dict(percentiles=(-1, 50)), "percentiles"),
    (dict(percentiles=()), "percentiles"),
    (dict(bins=0), "bins"),
    (dict(hist_range=(1.0, 1.0)), "hist_range"),
    (dict(hist_range=(2.0, -2.0)), "hist_range"),
    (dict(layers=["1", "nope"]), "nope"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Probe(mlp(), **kwargs)


def test_model_without_nonlinearity_needs_layers():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="nonlinearity"):
        Probe(model)
    Probe(model, layers=["0"])  # fine by name


def test_units_larger_than_the_layer_width_raise():
    model = mlp()
    with pytest.raises(ValueError, match="units"):
        with Probe(model, units=13) as probe:  # the layers have 12 units
            step(model, *data())
            probe.end_step()
    assert no_hooks_left(model)


def test_recording_lookup_errors():
    rec, _ = one_recorded_step()
    with pytest.raises(KeyError, match="hidden1.*hidden2.*hidden3"):
        rec["nope"]
    with pytest.raises(ValueError, match="units"):
        rec["hidden1"].unit_percentiles  # not recorded: units=0
    assert rec.percentile_index(50) == 1 and rec.percentile_index(85.0) == 2
    with pytest.raises(ValueError, match="42"):
        rec.percentile_index(42)


# ---------------------------------------------------------------------------- 8. memory
def deep_mlp(depth=20, width=16):
    torch.manual_seed(0)
    layers = [nn.Linear(4, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


def recorded_nbytes(segments, bins=40, batch=4):
    """recording.nbytes after each segment of steps; the probe is re-entered for each, trims on exit."""
    model = deep_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = data(n=batch, shape=(4,))
    probe, sizes = Probe(model, optimizer=opt, bins=bins), []
    for steps in segments:
        with probe:
            for _ in range(steps):
                F.mse_loss(model(x), y).backward()
                opt.step()
                opt.zero_grad()
        sizes.append(probe.recording.nbytes)
    assert len(probe.recording) == sum(segments) and len(probe.recording.layers) == 20
    return sizes


def test_memory_grows_with_records_layers_bins_only(restore_threads):
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    n500, n1000 = recorded_nbytes([500, 500])
    assert n1000 <= 50 * 2 ** 20
    assert n1000 == 2 * n500  # linear in records
    # 70 more float32 bins per layer per record, nothing else
    assert recorded_nbytes([40], bins=80)[0] - recorded_nbytes([40], bins=10)[0] == 40 * 20 * 70 * 4
    assert recorded_nbytes([20], batch=8) == recorded_nbytes([20], batch=512)


# ---------------------------------------------------------------------------- 9. median_drift
def bands(median, width):
    """(records, units, 3) 15/50/85 percentiles: median -/+ width / 2."""
    median, width = np.asarray(median, float), np.broadcast_to(width, np.shape(median))
    return np.stack([median - width / 2, median, median + width / 2], axis=-1)


def test_median_drift_known_answers():
    assert median_drift(bands(np.full((4, 3), 0.7), 2.0)) == 0.0
    moving = bands(np.array([[0.0], [1.0], [2.0]]), 1.0)  # median 0 -> 2, band width 1
    assert median_drift(moving) == pytest.approx(2.0)
    two_units = bands(np.array([[0.0, 0.0], [2.0, 0.5], [1.0, 1.0]]), np.array([1.0, 2.0]))
    assert median_drift(two_units) == pytest.approx((2.0 / 1 + 1.0 / 2) / 2)
    # the mean band width over time, not its maximum: median 0 -> 2, width 1 then 3
    assert median_drift(bands(np.array([[0.0], [2.0]]), np.array([[1.0], [3.0]]))) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    values = np.sort(rng.normal(size=(6, 4, 3)), axis=-1)
    assert median_drift(7.5 * values) == pytest.approx(median_drift(values))


def test_median_drift_reads_the_right_columns():
    # 15th and 85th percentiles stay at -1 and 1 while the median moves from 0 to 0.5: drift 0.5 / 2
    values = np.array([[[-1.0, 0.0, 1.0]], [[-1.0, 0.5, 1.0]]])  # columns 15, 50, 85
    assert median_drift(values) == pytest.approx(0.25)
    assert median_drift(values[..., [1, 2, 0]], percentiles=(50, 85, 15)) == pytest.approx(0.25)
    wider = np.concatenate([values[..., :1] - 1, values, values[..., 2:] + 1], axis=-1)  # 5, 15, 50, 85, 95
    assert median_drift(wider, percentiles=(5, 15, 50, 85, 95)) == pytest.approx(0.25)
    assert median_drift(values, percentiles=(15, 50, 85.0), low=15, high=85) == pytest.approx(0.25)


@pytest.mark.parametrize("values, percentiles, match", [
    (np.zeros((3, 2, 2)), (15, 85), "percentile 50"),        # no median
    (np.zeros((3, 2, 3)), (10, 50, 90), "percentile 15"),    # no 15 / 85
    (np.zeros((3, 3)), DEFAULT_Q, "unit_percentiles"),       # not (records, units, P)
    (np.zeros((3, 2, 4)), DEFAULT_Q, "unit_percentiles"),    # P does not match
    (np.zeros((1, 2, 3)), DEFAULT_Q, "unit_percentiles"),    # one record: no drift
])
def test_median_drift_bad_input(values, percentiles, match):
    with pytest.raises(ValueError, match=match):
        median_drift(values, percentiles)


# ---------------------------------------------------------------------------- 10. activation_layers
def test_activation_layers_names_nonlinearities_in_order():
    inner = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), inner, nn.Sigmoid(), nn.Linear(4, 4), nn.GELU())
    found = activation_layers(model)
    assert list(found) == ["hidden1", "hidden2", "hidden3", "hidden4"]
    assert [found[f"hidden{i}"] for i in range(1, 5)] == [model[1], inner[1], model[3], model[5]]
    assert activation_layers(nn.Sequential(nn.Linear(2, 2))) == {}


# ---------------------------------------------------------------------------- diverged nets, GPU
# Regressions: the first version of probes.py crashed on NaN activations (NumPy path), binned inf and
# huge values in the first bin (torch path) and failed on the GPU for layers other than sigmoid/tanh/ReLU.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("force_torch", [False, True], ids=["numpy", "torch"])
def test_nan_activations_are_recorded_and_count_in_no_bin(force_torch):
    model = mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")  # tanh unit 0 is NaN for every example, the ReLU layer all NaN
    rec, tap = one_recorded_step(model=model, force_torch=force_torch)
    assert len(rec) == 1
    close(rec["hidden1"].hist, [hist(tap.values("hidden1"), rec["hidden1"].edges)])
    tanh = tap.values("hidden2")
    assert np.isnan(tanh[:, 0]).all() and not np.isnan(tanh[:, 1:]).any()
    close(rec["hidden2"].hist, [hist(tanh, rec["hidden2"].edges)])
    close(rec["hidden2"].hist.sum(1), [11 / 12])
    close(rec["hidden3"].hist, np.zeros((1, len(rec["hidden3"].edges) - 1)))
    close(rec["hidden3"].grad_hist.sum(1), [0.0])  # the loss is NaN: so is every gradient


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("force_torch", [False, True], ids=["numpy", "torch"])
def test_inf_and_huge_values_count_in_the_end_bins(force_torch):
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    x = torch.tensor([[1.0, float("inf")], [0.5, 1e30]], requires_grad=True)
    with Probe(model, bins=5) as probe:
        probe._force_torch = force_torch
        model(x).sum().backward()
        probe.end_step()
    close(probe.recording["hidden1"].hist, [[0.25, 0.25, 0, 0, 0.5]])  # edges 0, 1, ..., 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_probe_of_a_layer_without_saturated_or_dead():
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 1)).cuda()
    with Probe(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1)) as probe:
        model(torch.randn(8, 3, device="cuda")).sum().backward()
        probe.optimizer.step()
    rec = probe.recording["hidden1"]
    assert np.isnan(rec.saturated).all() and np.isnan(rec.dead).all()
    close(rec.hist.sum(1), [1.0])


# ---------------------------------------------------------------------------- 11. buffered statistics
# The probe copies a recorded step's tensors into buffers and computes their statistics later, in one
# batch: when the buffers fill, when the recording is read, on exit. None of that may show.
LAYER_FIELDS = [f for f in FIELDS if f != "unit_percentiles"]


def train_recording(buffer_steps, steps=7, every=1, read_each_step=False, batch_sizes=None, **kwargs):
    """(recording, tap) of `steps` SGD steps of mlp() (batch sizes from batch_sizes, else 32)."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Tap({n: model[i] for n, i in MLP_LAYERS.items()}) as tap, \
            Probe(model, optimizer=opt, every=every, buffer_steps=buffer_steps, **kwargs) as probe:
        for s in range(steps):
            n = batch_sizes[s] if batch_sizes else 32
            step(model, *data(n=n, seed=s), opt)
            if read_each_step:
                assert len(probe.recording) == s // every + 1  # every finished step is there when read
    return probe.recording, tap


def assert_same_recording(a, b):
    assert list(a.steps) == list(b.steps)
    for name in a.layers:
        for field in LAYER_FIELDS:
            np.testing.assert_array_equal(getattr(a[name], field), getattr(b[name], field), err_msg=f"{name}.{field}")
    for name in a.params:
        np.testing.assert_array_equal(a.params[name].grad_data, b.params[name].grad_data)
        np.testing.assert_array_equal(a.params[name].update_data, b.params[name].update_data)


@pytest.mark.parametrize("buffer_steps", [2, 3, None])
def test_buffering_changes_nothing_recorded(buffer_steps):
    eager, _ = train_recording(buffer_steps=1)  # statistics computed at the end of every step
    assert_same_recording(train_recording(buffer_steps)[0], eager)
    assert_same_recording(train_recording(buffer_steps, read_each_step=True)[0], eager)


def test_a_record_read_mid_training_is_current_and_equals_direct_computation():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = {"a": [], "g": [], "update": []}
    with Tap({"hidden2": model[3]}) as tap, Probe(model, optimizer=opt, buffer_steps=4) as probe:
        held = probe.recording["hidden2"]  # a LayerRecord taken before anything was recorded
        # read inside optimizer.step(), between the probe's hooks: the step's update is still to come
        opt.register_step_pre_hook(lambda *_: expected.setdefault("len", []).append(len(probe.recording)))
        for s in range(7):
            tap.clear()
            x, y = data(seed=s)
            F.mse_loss(model(x), y).backward()
            if s % 2:  # read between backward and the update: the step is unfinished, the earlier ones not
                assert len(held.mean) == s
            expected["a"].append(tap.values("hidden2"))
            expected["g"].append(tap.grad("hidden2"))
            before = model[2].weight.detach().clone()
            expected.setdefault("grad_data", []).append(norm(model[2].weight.grad) / norm(before))
            opt.step()
            expected["update"].append(norm(model[2].weight - before) / norm(before))
            opt.zero_grad()
    assert expected["len"] == list(range(7))
    assert list(probe.recording.steps) == list(range(7))
    close(held.mean, [a.mean() for a in expected["a"]])
    close(held.percentiles, [np.percentile(a, DEFAULT_Q) for a in expected["a"]])
    close(held.hist, [hist(a, held.edges) for a in expected["a"]])
    close(held.grad_norm, [np.linalg.norm(g) for g in expected["g"]])
    close(probe.recording.params["2.weight"].grad_data, expected["grad_data"])
    close(probe.recording.params["2.weight"].update_data, expected["update"])


def test_exit_keeps_buffered_steps_and_drops_the_unfinished_one():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Probe(model, optimizer=opt, buffer_steps=8) as probe:
        train(model, opt, steps=3)
        F.mse_loss(model(data()[0]), data()[1]).backward()  # a fourth step, never closed
    assert list(probe.recording.steps) == [0, 1, 2]
    assert np.isfinite(probe.recording["hidden1"].mean).all() and probe.buffer_nbytes == 0


def test_forward_hooks_are_attached_only_on_recorded_steps():
    model, every = mlp(), 3
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    attached = []
    with Probe(model, optimizer=opt, every=every) as probe:
        for s in range(7):
            attached.append(not no_hooks_left(model))
            step(model, *data(seed=s), opt)
    assert attached == [s % every == 0 for s in range(7)]
    assert list(probe.recording.steps) == [0, 3, 6] and no_hooks_left(model)


def test_a_new_batch_size_starts_new_buffers():
    sizes = [32, 32, 8, 8, 32, 5, 32]
    rec, tap = train_recording(buffer_steps=4, batch_sizes=sizes)
    for name in MLP_LAYERS:
        for t, n in enumerate(sizes):
            a = tap.values(name, call=t)
            assert a.shape[0] == n
            close(rec[name].mean[t], a.mean())
            close(rec[name].percentiles[t], np.percentile(a, DEFAULT_Q))
            close(rec[name].grad_norm[t], np.linalg.norm(tap.grad(name, call=t)))


def test_a_step_without_backward_records_activations_and_nan_gradients():
    model = mlp()
    with Tap({"hidden1": model[1]}) as tap, Probe(model, buffer_steps=4) as probe:
        step(model, *data(seed=0))
        probe.end_step()
        model(data(seed=1)[0]).sum()  # forward only: no dL/da this step
        probe.end_step()
        step(model, *data(seed=2))
        probe.end_step()
    r = probe.recording["hidden1"]
    close(r.mean, [tap.values("hidden1", call=t).mean() for t in range(3)])
    close(r.grad_norm[[0, 2]], [np.linalg.norm(tap.grad("hidden1", call=t)) for t in (0, 2)])
    assert np.isnan(r.grad_norm[1]) and np.isnan(r.grad_hist[1]).all()


def test_buffers_stay_within_their_budget(monkeypatch):
    from bnlab import probes
    monkeypatch.setattr(probes, "BUFFER_BYTES", 3 * 4 * 32 * 12 * 5)  # five steps of x and grad per layer
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Probe(model, optimizer=opt) as probe:
        peak = 0
        for s in range(12):
            step(model, *data(seed=s), opt)
            peak = max(peak, sum(b.nbytes for b in probe._buffers.values()))
    assert 0 < peak <= probes.BUFFER_BYTES
    assert len(probe.recording) == 12
    tiny = Probe(mlp(), buffer_steps=None)
    monkeypatch.setattr(probes, "BUFFER_BYTES", 1)  # less than one step: one row each, still recorded
    with tiny:
        step(tiny.model, *data())
        tiny.end_step()
    assert len(tiny.recording) == 1 and np.isfinite(tiny.recording["hidden1"].mean).all()


# ---------------------------------------------------------------------------- 12. sample=S
def every_kth(a, sample):
    flat = a.reshape(-1)
    return flat[::-(-flat.size // sample)]


def test_sample_records_percentiles_and_histograms_of_an_even_subsample():
    sample = 50  # 32 x 12 = 384 values per layer: every 8th, 48 values
    rec, tap = one_recorded_step(sample=sample, units=3)
    for name, kind in KIND.items():
        r, a = rec[name], tap.values(name)
        sub = every_kth(a, sample)
        assert len(sub) == 48
        close(r.percentiles, [np.percentile(sub, DEFAULT_Q)])
        close(r.hist, [hist(sub, r.edges)])
        with np.errstate(divide="ignore"):
            close(r.grad_hist, [hist(np.log10(np.abs(every_kth(tap.grad(name), sample))), r.grad_edges)])
        close(r.mean, [a.mean()])  # the moments stay exact
        close(r.std, [a.std()])
        close(r.grad_norm, [np.linalg.norm(tap.grad(name))])
        close(r.unit_percentiles[0], np.percentile(a[:, :3], DEFAULT_Q, axis=0).T)  # 32 values per unit: all
        assert not np.allclose(r.percentiles, [np.percentile(a, DEFAULT_Q)], rtol=1e-3)  # it did subsample


def test_sample_at_least_the_size_is_exact():
    exact, _ = one_recorded_step(units=3)
    sampled, _ = one_recorded_step(units=3, sample=384)
    assert_same_recording(sampled, exact)


@pytest.mark.parametrize("kwargs, match", [
    (dict(buffer_steps=0), "buffer_steps"), (dict(buffer_steps=65), "buffer_steps"),
    (dict(buffer_steps=2.0), "buffer_steps"), (dict(buffer_steps=True), "buffer_steps"),
    (dict(sample=1), "sample"), (dict(sample=0), "sample"), (dict(sample=100.0), "sample"),
    (dict(every=2.5), "every"),
])
def test_bad_buffer_and_sample_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Probe(mlp(), **kwargs)


# ---------------------------------------------------------------------------- 13. train_classifier's recording pass
def test_the_recording_pass_records_the_fixed_batchs_gradients():
    """probe_batch=n: at a recorded step the probe sees forward and backward of the first n training
    examples; dL/da is that of their mean cross-entropy, as computed here directly."""
    from bnlab.data import gaussian_blobs
    from bnlab.models import mlp as make_mlp
    from bnlab.train import train_classifier

    blobs = gaussian_blobs(n_per_class=40, seed=3)
    torch.manual_seed(0)
    net = make_mlp(blobs.num_features, (8, 8), blobs.num_classes, norm="bn", activation="tanh")
    twin = copy.deepcopy(net)
    history = train_classifier(net, blobs, steps=3, batch_size=16, lr=0.1, device="cpu", progress=False,
                               probe=dict(every=2), probe_batch=30)
    with Tap({"hidden1": activation_layers(twin)["hidden1"]}) as tap:
        F.cross_entropy(twin(blobs.x_train[:30]), blobs.y_train[:30]).backward()
    record = history.probe["hidden1"]
    close(record.mean[:1], [tap.values("hidden1").mean()])
    close(record.grad_norm[:1], [np.linalg.norm(tap.grad("hidden1"))])
    close(record.grad_std[:1], [tap.grad("hidden1").std()])
    assert all(p.requires_grad for p in net.parameters())


def test_a_copy_of_a_recording_taken_while_attached_holds_the_finished_steps_only():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with Probe(model, optimizer=opt, buffer_steps=8) as probe:
        train(model, opt, steps=3)
        snapshot = copy.deepcopy(probe._recording)  # the buffered steps are computed first
        train(model, opt, steps=2)
    assert snapshot._flush is None and list(snapshot.steps) == [0, 1, 2]
    np.testing.assert_array_equal(snapshot["hidden2"].percentiles, probe.recording["hidden2"].percentiles[:3])
    np.testing.assert_array_equal(snapshot.params["0.weight"].update_data,
                                  probe.recording.params["0.weight"].update_data[:3])
