"""Segmentation (lesson 07): segmentation_scores against a NumPy computation written here,
train_segmenter's records and callback, and the mask plots (MaskExplorer: tests/test_explorer_masks.py)."""

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from bnlab import plots  # noqa: E402
from bnlab.data import shapes  # noqa: E402
from bnlab.models import encoder_decoder  # noqa: E402
from bnlab.train import History, segmentation_scores, train_segmenter  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread", "close_figures")


class Oracle(nn.Module):
    """A fake segmenter: its logits' argmax is the class index stored in the input's channel 0."""

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.offset = nn.Parameter(torch.zeros(()))  # a parameter tells the caller the device
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        one_hot = F.one_hot(x[:, 0].long(), self.num_classes).permute(0, 3, 1, 2).float()
        return 3.0 * one_hot - 1.0 + self.offset


def as_input(pred: np.ndarray) -> torch.Tensor:
    """(N, H, W) class indices -> (N, 1, H, W) input that makes Oracle predict them."""
    return torch.from_numpy(pred).float().unsqueeze(1)


def numpy_scores(pred: np.ndarray, true: np.ndarray, num_classes: int) -> dict:
    """IoU and Dice per class over all pixels of all images; a class neither predicted nor present
    scores 1; means over the foreground classes 1..K-1."""
    iou, dice = [], []
    for c in range(num_classes):
        p, g = pred == c, true == c
        both, either, sizes = np.sum(p & g), np.sum(p | g), np.sum(p) + np.sum(g)
        iou.append(both / either if either else 1.0)
        dice.append(2 * both / sizes if sizes else 1.0)
    return {"pixel_accuracy": float(np.mean(pred == true)), "iou": float(np.mean(iou[1:])),
            "dice": float(np.mean(dice[1:])), "per_class_iou": iou}


# ----------------------------------------------------------------------------- segmentation_scores
def test_scores_of_a_hand_computed_example():
    """true 0 1 1 2, predicted 0 1 2 2: class 1 has |P & G| = 1, |P | G| = 2, |P| + |G| = 3, and
    class 2 the same, so IoU 1/2 and Dice 2/3 for each; 3 of 4 pixels are right."""
    true = torch.tensor([[[0, 1, 1, 2]]])
    pred = np.array([[[0, 1, 2, 2]]])
    scores = segmentation_scores(Oracle(3), as_input(pred), true, 3)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 4)
    assert scores["iou"] == pytest.approx(1 / 2) and scores["dice"] == pytest.approx(2 / 3)
    assert scores["per_class_iou"] == pytest.approx([1.0, 1 / 2, 1 / 2])


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_scores_match_numpy_over_the_whole_set(batch_size):
    """Random masks over 4 classes, class 3 neither present nor predicted (counts as 1). The scores
    pool all pixels of all images, so they do not depend on the batching."""
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, size=(10, 6, 5))
    pred = np.where(rng.random(true.shape) < 0.6, true, rng.integers(0, 3, size=true.shape))
    pred[0] = 0  # one image all background, so a per-image mean would differ from the pooled one
    expected = numpy_scores(pred, true, 4)
    assert expected["per_class_iou"][3] == 1.0
    scores = segmentation_scores(Oracle(4), as_input(pred), torch.from_numpy(true), 4, batch_size=batch_size)
    for name in ("pixel_accuracy", "iou", "dice"):
        assert scores[name] == pytest.approx(expected[name], rel=1e-12), name
    assert scores["per_class_iou"] == pytest.approx(expected["per_class_iou"], rel=1e-12)


def test_a_class_predicted_but_absent_scores_zero():
    true = np.zeros((2, 4, 4), dtype=np.int64)
    true[:, :2] = 1
    pred = true.copy()
    pred[0, 3, 3] = 2  # class 2 predicted once, never true
    scores = segmentation_scores(Oracle(3), as_input(pred), torch.from_numpy(true), 3)
    expected = numpy_scores(pred, true, 3)
    assert expected["per_class_iou"][2] == 0.0
    assert scores["per_class_iou"] == pytest.approx(expected["per_class_iou"])
    assert scores["iou"] == pytest.approx(0.5)  # class 1 perfect, class 2 zero


@pytest.mark.parametrize("training", [True, False])
def test_scores_run_in_eval_mode_and_restore_the_mode(training):
    model = Oracle(3).train(training)
    pred = np.zeros((4, 2, 2), dtype=np.int64)
    segmentation_scores(model, as_input(pred), torch.from_numpy(pred), 3, batch_size=2)
    assert model.modes == [False, False] and model.training == training


def test_scores_restore_the_mode_when_the_model_fails():
    class Broken(Oracle):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Broken(3).train()
    with pytest.raises(RuntimeError, match="boom"):
        segmentation_scores(model, torch.zeros(2, 1, 2, 2), torch.zeros(2, 2, 2, dtype=torch.int64), 3)
    assert model.training


@pytest.mark.parametrize("x_shape, masks_shape", [
    ((4, 1, 8, 8), (4, 1, 8, 8)),   # masks with a channel axis
    ((4, 8, 8), (4, 8, 8)),         # images without one
    ((4, 1, 8, 8), (3, 8, 8)),      # different N
    ((4, 1, 8, 8), (4, 8, 6)),      # different W
    ((4, 1, 6, 8), (4, 8, 8)),      # different H
])
def test_scores_refuse_mismatched_shapes(x_shape, masks_shape):
    with pytest.raises(ValueError, match="masks"):
        segmentation_scores(Oracle(3), torch.zeros(x_shape), torch.zeros(masks_shape, dtype=torch.int64), 3)


def test_scores_refuse_mask_classes_beyond_num_classes():
    true = np.array([[[0, 1, 3, 3]]])   # class 3 with num_classes=3
    pred = np.array([[[0, 1, 2, 2]]])   # the two class-3 pixels are wrong: pixel accuracy would be 2/4
    with pytest.raises(ValueError, match="num_classes|class"):
        segmentation_scores(Oracle(3), as_input(pred), torch.from_numpy(true), 3)


def test_scores_leave_frozen_batchnorm_frozen():
    from bnlab.train import freeze_batchnorm

    torch.manual_seed(0)
    model = encoder_decoder(num_classes=3, widths=(4, 8), norm="bn").train()
    assert freeze_batchnorm(model) == 6
    modes = [m.training for m in model.modules()]
    segmentation_scores(model, torch.randn(2, 1, 8, 8), torch.zeros(2, 8, 8, dtype=torch.int64), 3)
    assert [m.training for m in model.modules()] == modes


def test_scores_need_two_classes():
    with pytest.raises(ValueError, match="num_classes"):
        segmentation_scores(Oracle(2), torch.zeros(2, 1, 2, 2), torch.zeros(2, 2, 2, dtype=torch.int64), 1)


# ----------------------------------------------------------------------------- train_segmenter
@pytest.fixture(scope="module")
def data():
    split = shapes(n_train=32, n_test=8, size=16)
    segmenter_run(split, steps=1)  # torch's first conv backward pays a one-off setup; not the tests'
    return split


def segmenter_run(data, seed=0, steps=20, eval_every=5, on_eval=None):
    torch.manual_seed(0)
    model = encoder_decoder(data.in_channels, data.num_classes, widths=(4, 8))
    return train_segmenter(model, data, steps=steps, eval_every=eval_every, seed=seed, device="cpu",
                           progress=False, on_eval=on_eval)


def test_train_segmenter_records_iou_and_dice_at_every_evaluation(data):
    calls = []

    def on_eval(step, model):
        calls.append((step, model.training, torch.is_grad_enabled(), model))
        assert all(not m.training for m in model.modules())

    history = segmenter_run(data, on_eval=on_eval)
    assert history.eval_steps == [0, 5, 10, 15, 20] and len(history.loss) == 20
    for name in ("iou", "dice"):
        assert len(history.metrics[name]) == 5 and all(0 <= v <= 1 for v in history.metrics[name])
    assert len(history.test_accuracy) == 5
    assert [c[0] for c in calls] == history.eval_steps
    assert all(not training and not grad for _, training, grad, _ in calls)
    assert all(model is history.model for *_, model in calls)
    assert history.model.training and all(m.training for m in history.model.modules())
    # the last record is the final model's score on the test set, recomputed here with NumPy
    model = history.model.eval()
    with torch.no_grad():
        pred = model(data.x_test).argmax(1).numpy()
    expected = numpy_scores(pred, data.masks_test.numpy(), data.num_classes)
    assert history.test_accuracy[-1] == pytest.approx(expected["pixel_accuracy"])
    assert history.metrics["iou"][-1] == pytest.approx(expected["iou"])
    assert history.metrics["dice"][-1] == pytest.approx(expected["dice"])


def test_train_segmenter_keeps_what_on_eval_returns(data):
    """History.snapshots[step] holds on_eval's return value at each evaluation; None is not kept."""
    shown = data.x_test[:3]
    history = segmenter_run(data, steps=10, on_eval=lambda step, model: model(shown).argmax(1))
    assert sorted(history.snapshots) == history.eval_steps == [0, 5, 10]
    model = history.model.eval()
    with torch.no_grad():
        assert torch.equal(history.snapshots[10], model(shown).argmax(1))   # the final model's masks
    assert segmenter_run(data, steps=5, on_eval=lambda step, model: None).snapshots == {}


def test_train_segmenter_is_reproducible_for_a_seed(data):
    a, b, c = segmenter_run(data, seed=0), segmenter_run(data, seed=0), segmenter_run(data, seed=1)
    assert a.loss == b.loss and a.metrics == b.metrics and a.test_accuracy == b.test_accuracy
    assert a.loss != c.loss  # another seed draws other minibatches
    for (name, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), name


def test_train_segmenter_learns_something(data):
    """The loss falls from its value at initialization (cross-entropy of 4 classes is near ln 4)."""
    history = segmenter_run(data, steps=20, eval_every=20)
    assert np.mean(history.loss[-5:]) < history.loss[0]


# ----------------------------------------------------------------------------- plot_masks, plot_curves
def masks_example(n=5, size=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 1, size, size))
    masks = rng.integers(0, classes, (n, size, size))
    return images, masks, rng


def test_plot_masks_grid_one_row_per_image():
    images, masks, rng = masks_example()
    predictions = {"bn": rng.integers(0, 3, masks.shape), "plain": rng.integers(0, 3, masks.shape),
                   "gn": masks}
    fig = plots.plot_masks(images, masks, predictions, ("background", "a", "b"), n=4)
    assert len(fig.axes) == 4 * (2 + 3)
    grid = np.array(fig.axes).reshape(4, 5)
    for row in range(4):
        panels = [images[row, 0], masks[row]] + [p[row] for p in predictions.values()]
        for ax, panel in zip(grid[row], panels):
            assert len(ax.images) == 1
            np.testing.assert_array_equal(ax.images[0].get_array(), panel)
    titles = [ax.get_title() for ax in grid[0]]
    assert titles[:2] == ["image", "true mask"]
    assert titles[2:] == [plots.LABELS["bn"], plots.LABELS["plain"], plots.LABELS["gn"]]


def test_plot_masks_draws_into_given_axes():
    images, masks, _ = masks_example()
    fig = plt.figure()
    axes = fig.subplots(2, 3, squeeze=False)
    assert plots.plot_masks(images, masks, {"bn": masks}, ("bg", "a", "b"), n=2, axes=axes) is fig
    assert len(fig.axes) == 6 and all(len(ax.images) == 1 for ax in fig.axes)


def test_plot_curves_iou_uses_the_metrics():
    histories = {"bn": History(eval_steps=[0, 5, 10], test_accuracy=[0.1, 0.5, 0.8],
                               metrics={"iou": [0.0, 0.3, 0.6], "dice": [0.0, 0.4, 0.7]}),
                 "plain": History(eval_steps=[0, 5, 10], test_accuracy=[0.1, 0.2, 0.3],
                                  metrics={"iou": [0.0, 0.1, 0.2], "dice": [0.0, 0.2, 0.3]})}
    ax = plots.plot_curves(histories, "iou").axes[0]
    assert len(ax.lines) == 2
    for line, (key, history) in zip(ax.lines, histories.items()):
        np.testing.assert_array_equal(line.get_xdata(), history.eval_steps)
        np.testing.assert_array_equal(line.get_ydata(), history.metrics["iou"])
        assert to_hex(line.get_color()) == plots.COLORS[key]
    assert "IoU" in ax.get_ylabel() and ax.get_xlabel()
    with pytest.raises(ValueError, match="quantity"):
        plots.plot_curves(histories, "f1")


def test_plot_curves_refuses_a_metric_some_runs_lack():
    histories = {"bn": History(eval_steps=[0, 5], test_accuracy=[0.1, 0.5], metrics={"iou": [0.0, 0.3]}),
                 "plain": History(eval_steps=[0, 5], test_accuracy=[0.1, 0.2])}
    with pytest.raises(ValueError, match="iou"):
        plots.plot_curves(histories, "iou")
