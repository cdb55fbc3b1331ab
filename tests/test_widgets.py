"""Explorers redraw from recorded data when a control moves, and never train anything (only
GradientFlowExplorer's train button does)."""

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

matplotlib.use("Agg")

from bnlab import plots  # noqa: E402
from bnlab.data import digits, gaussian_blobs  # noqa: E402
from bnlab.experiments import ioffe_fig1  # noqa: E402
from bnlab.models import mlp  # noqa: E402
from bnlab.train import train_classifier  # noqa: E402
from bnlab.widgets import (  # noqa: E402
    ActivationExplorer,
    GradientFlowExplorer,
    base_sample,
)


def bar_heights(ax):
    return np.array([p.get_height() for p in ax.patches])


def test_base_sample_is_standardized_and_rejects_unknown_shapes():
    for shape in ("normal", "skewed", "bimodal"):
        z = base_sample(shape, 300)
        assert abs(z.mean()) < 1e-12 and z.std() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        base_sample("uniform")


# ----------------------------------------------------------------------------- lessons 04, 05
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread, as the lessons run (bnlab.setup): on a loaded 2-core machine two threads made
    GradientFlowExplorer's 216 small float64 backward passes 20x slower (55 s instead of 2 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fig1_runs(one_thread):
    """Lesson 04's recordings of 30 steps: records at steps 0, 10, 20."""
    data = digits()
    return {key: ioffe_fig1(norm, steps=30, data=data, progress=False, device="cpu").probe
            for key, norm in (("plain", None), ("bn", "bn"))}


@pytest.fixture(scope="module")
def flow(one_thread):
    """Precomputes gradient norms for every configuration in the menus (a few seconds): built once."""
    return GradientFlowExplorer(digits(), steps=5)


def probed(every, steps):
    data = gaussian_blobs(n_per_class=20, seed=0)
    torch.manual_seed(0)
    net = mlp(data.num_features, (8,), data.num_classes, activation="sigmoid")
    return train_classifier(net, data, steps=steps, device="cpu", progress=False, probe=dict(every=every)).probe


def test_activation_explorer_redraws_on_every_control(fig1_runs, capsys):
    e = ActivationExplorer(fig1_runs)
    capsys.readouterr()
    assert e.redraws == 1 and e.values == {"step": 20, "layer": "hidden3", "quantity": "activations at this step"}
    png = bytes(e.image.value)
    assert png.startswith(b"\x89PNG")
    e.controls["step"].value = 0
    assert e.redraws == 2 and bytes(e.image.value) != png
    assert "step 0" in e.axes[0].get_title() and "step 0" in e.axes[1].get_title()
    pngs = {png, bytes(e.image.value)}
    e.controls["layer"].value = "hidden1"
    e.controls["quantity"].value = "gradients at this step"
    e.controls["quantity"].value = "activations over training"
    assert e.redraws == 5 and len(e.axes[0].images) == 1
    pngs.add(bytes(e.image.value))
    e.controls["step"].value = 10  # moves the marker on the image
    assert e.redraws == 6 and bytes(e.image.value) not in pngs
    assert capsys.readouterr().out == ""  # a redraw prints nothing (nbval would record it)
    assert "hidden1" in e.axes[0].get_title()
    record = fig1_runs["bn"]["hidden1"]
    assert f"{record.mean[1]:.3f}" in e.readout.value  # the readout shows the marked record


def test_activation_explorer_histogram_is_the_recorded_one(fig1_runs):
    e = ActivationExplorer(fig1_runs, layer="hidden2", step=10)
    for ax, key in zip(e.axes, ("plain", "bn")):
        np.testing.assert_allclose(ax.patches[0].get_data().values, fig1_runs[key]["hidden2"].hist[1])
        assert [line.get_xdata()[0] for line in ax.lines] == pytest.approx(fig1_runs[key]["hidden2"].percentiles[1])


def test_activation_explorer_index_maps_steps_to_records(fig1_runs):
    e = ActivationExplorer(fig1_runs)
    assert [e.index(s) for s in (0, 9, 10, 19, 20, 25, 10_000, -5)] == [0, 0, 1, 1, 2, 2, 2, 0]
    assert e.controls["step"].min == 0 and e.controls["step"].max == 20 and e.controls["step"].step == 10


def test_activation_explorer_rejects_runs_recorded_at_different_steps():
    with pytest.raises(ValueError, match="same steps"):
        ActivationExplorer({"plain": probed(every=1, steps=4), "bn": probed(every=2, steps=8)})  # 4 records each
    with pytest.raises(ValueError, match="same steps"):
        ActivationExplorer({"plain": probed(every=1, steps=4), "bn": probed(every=1, steps=5)})


def test_gradient_flow_explorer_redraws_without_training(flow, monkeypatch, capsys):
    import bnlab.train

    def no_training(*args, **kwargs):
        raise AssertionError("a control change must not train")

    monkeypatch.setattr(bnlab.train, "train_classifier", no_training)
    runs, norms = dict(flow.runs), dict(flow.norms)
    assert len(norms) == len(flow.DEPTHS) * len(flow.ACTIVATIONS) * len(flow.INITS) * 2
    capsys.readouterr()
    before, png = flow.redraws, bytes(flow.image.value)
    flow.controls["depth"].value = 30 if flow.controls["depth"].value != 30 else 20
    assert flow.redraws == before + 1 and bytes(flow.image.value) != png
    depth = flow.controls["depth"].value
    assert f"depth {depth}" in flow.axes[0].get_title()
    assert [len(line.get_xdata()) for line in flow.axes[0].lines] == [depth, depth]
    np.testing.assert_array_equal(flow.axes[0].lines[1].get_ydata(), flow.norms[("bn", depth, "relu", "he")])
    flow.controls["lr"].value = 0.03
    flow.controls["activation"].value = "tanh"
    assert flow.redraws == before + 3
    assert flow.runs == runs and flow.norms.keys() == norms.keys()
    assert capsys.readouterr().out == ""


def test_gradient_flow_explorer_trains_the_selected_configuration(flow):
    flow.controls["depth"].value = 2
    flow.controls["activation"].value = "relu"
    flow.controls["init"].value = "lecun"
    flow.controls["lr"].value = 0.1
    assert "not been trained" in flow.readout.value
    before, keys = flow.redraws, set(flow.runs)
    flow.train_selected()
    added = set(flow.runs) - keys
    assert added == {(None, 2, "relu", "lecun", 0.1), ("bn", 2, "relu", "lecun", 0.1)}
    assert all(len(flow.runs[k].loss) == 5 for k in added)
    assert flow.redraws == before + 1 and "test accuracy" in flow.readout.value
    curves = flow.axes[1]
    assert curves.axison
    assert [to_hex(line.get_color()) for line in curves.lines] == [plots.COLORS["plain"], plots.COLORS["bn"]]
    flow.controls["lr"].value = 1.0  # another learning rate: not trained
    assert "not been trained" in flow.readout.value and not flow.axes[1].lines


def test_gradient_flow_explorer_takes_a_table_and_refuses_an_incomplete_one(flow):
    table = dict(flow.norms)
    e = GradientFlowExplorer(digits(), steps=5, table=table)   # nothing computed: the table is used
    assert e.norms == table and e.norms is not table
    np.testing.assert_array_equal(e.axes[0].lines[1].get_ydata(), table[("bn", 10, "relu", "he")])
    del table[("bn", 2, "tanh", "default")]
    with pytest.raises(ValueError, match="missing"):
        GradientFlowExplorer(digits(), table=table)


def test_gradient_flow_explorer_trains_with_the_default_init(flow):
    """'default' goes to the models as it is (models.initialize takes it): torch's own init."""
    flow.controls["depth"].value = 2
    flow.controls["init"].value = "default"
    flow.controls["lr"].value = 0.1
    flow.train_selected()
    run = flow.runs[("bn", 2, "relu", "default", 0.1)]
    assert len(run.loss) == 5
    first = [m for m in run.model.modules() if isinstance(m, torch.nn.Linear)][0]
    # after 5 small steps the weights are still near torch's default, uniform with |w| <= 1/sqrt(64);
    # He init, N(0, 2/64), would have weights beyond 0.5
    assert first.weight.abs().max().item() < 1.5 / 8


# ----------------------------------------------------------------------------- every explorer: nothing clipped
@pytest.fixture(scope="module")
def explorers(fig1_runs, flow):
    return {"ActivationExplorer": ActivationExplorer(fig1_runs), "GradientFlowExplorer": flow}


def text_px(text: str) -> float:
    """Width in pixels of text in a 13 px sans font (JupyterLab's widget labels), measured with DejaVu
    Sans, which is wider than the Helvetica/Arial a browser uses: an upper bound."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    renderer = RendererAgg(10, 10, 96)
    return renderer.get_text_width_height_descent(text, FontProperties(family="DejaVu Sans", size=13 * 72 / 96),
                                                  ismath=False)[0]


@pytest.mark.parametrize("name", ["ActivationExplorer", "GradientFlowExplorer"])
def test_control_descriptions_fit_their_width(explorers, name):
    """Lesson 01's playground showed 'input m…': a description wider than description_width is cut."""
    for control in explorers[name].controls.values():
        width = control.style.description_width
        assert width.endswith("px"), (name, control.description, width)
        # the label keeps a few pixels of margin to the slider
        assert text_px(control.description) + 8 <= float(width[:-2]), (name, control.description, width)


def assert_inside(explorer, state):
    """Every drawn artist (labels, tick labels, titles, colour bars) lies inside the rendered figure."""
    renderer = explorer.canvas.get_renderer()
    width, height = explorer.fig.get_size_inches()
    slack = 1.0 / explorer.fig.dpi
    box = explorer.fig.get_tightbbox(renderer)
    assert box.x0 >= -slack and box.y0 >= -slack and box.x1 <= width + slack and box.y1 <= height + slack, \
        (type(explorer).__name__, state, box.bounds, (width, height))
    for ax in explorer.fig.axes:
        for label in (ax.xaxis.label, ax.yaxis.label):
            if label.get_visible() and label.get_text():
                extent = label.get_window_extent(renderer)
                assert extent.x0 >= -1 and extent.y0 >= -1, (state, label.get_text())
                assert extent.x1 <= explorer.fig.bbox.x1 + 1 and extent.y1 <= explorer.fig.bbox.y1 + 1, \
                    (state, label.get_text())


def test_activation_explorer_keeps_every_label_inside_in_every_view(explorers):
    """Lesson 04: the y label clipped at late steps, the last x tick of the 'over training' view."""
    e = explorers["ActivationExplorer"]
    for quantity in e.QUANTITIES:
        for layer in e.controls["layer"].options:
            for step in (e.steps[-1], e.steps[0], e.steps[len(e.steps) // 2]):
                e.controls["quantity"].value = quantity
                e.controls["layer"].value = layer
                e.controls["step"].value = int(step)
                assert bytes(e.image.value).startswith(b"\x89PNG")
                assert_inside(e, (quantity, layer, int(step)))
                heatmap = quantity.endswith("over training")
                # a colour bar beside each heatmap, and none beside a histogram
                assert len(e.fig.axes) == len(e.runs) * (2 if heatmap else 1)


def test_a_frozen_layout_stays_frozen_while_nothing_overflows(explorers):
    e = explorers["ActivationExplorer"]
    e.controls["quantity"].value = "activations at this step"
    e.controls["layer"].value = "hidden3"
    solved = e.layouts
    for step in e.steps:
        e.controls["step"].value = int(step)
    assert e.layouts == solved        # step moves redraw without re-solving the layout
    e.controls["quantity"].value = "gradients over training"
    assert e.layouts == solved + 1    # another kind of plot: solved once more


@pytest.mark.parametrize("name", ["GradientFlowExplorer"])
def test_every_explorer_keeps_its_labels_inside(explorers, name):
    e = explorers[name]
    assert_inside(e, "as built")
    for control_name, control in e.controls.items():
        options = getattr(control, "options", None)
        values = list(options)[-1:] if options else [control.max] if hasattr(control, "max") else []
        for value in values:
            control.value = value
            assert_inside(e, (control_name, value))
