"""MaskExplorer (lesson 07) sends the test images, the true masks and every recorded prediction once;
its view picks the step and the rows per move and paints them (tests/js/mask_explorer.test.mjs).
Expected values come from the arrays built here and from what bnlab.plots.plot_masks draws."""

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex

matplotlib.use("Agg")

from bnlab import plots, widgets  # noqa: E402
from bnlab.widgets import MaskExplorer, bundle  # noqa: E402

CLASSES = ("background", "a", "b")


def masks_example(n=5, size=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, 1, size, size)) * 3 + 1
    masks = rng.integers(0, classes, (n, size, size))
    return images, masks, rng


def mask_snapshots(masks, rng, steps=(0, 10, 20)):
    """{variant: {step: predicted masks}}: noisy at first, the truth at the last step."""
    return {name: {s: (masks if s == steps[-1] else rng.integers(0, 3, masks.shape)) for s in steps}
            for name in ("plain", "bn")}


def digits_of(strings, shape):
    return np.array([[int(c) for c in s] for s in strings]).reshape(-1, *shape)


def test_mask_explorer_sends_images_masks_and_every_prediction():
    images, masks, rng = masks_example(n=6, size=5)
    snapshots = mask_snapshots(masks, rng)
    scores = {"plain": {0: 0.1, 10: 0.2, 20: 0.345}, "bn": {0: 0.1, 20: 0.876}}
    data = MaskExplorer(images, masks, snapshots, CLASSES, scores).data
    assert data["steps"] == [0, 10, 20] and data["rows"] == 3 and (data["height"], data["width"]) == (5, 5)
    assert data["initial"] == {"step": 20, "first": 0}
    assert data["variants"] == ["plain", "bn"]
    assert data["names"] == {"plain": plots.LABELS["plain"], "bn": plots.LABELS["bn"]}
    # each image on its own grey range, as imshow(cmap="gray") shows it: its min black, its max white
    grey = np.array(data["images"]).reshape(6, 5, 5)
    lo, hi = images.min(axis=(1, 2, 3)), images.max(axis=(1, 2, 3))
    # in 256 equal bins of the image's range, as a 256-colour map bins them
    np.testing.assert_allclose(grey, (images[:, 0] - lo[:, None, None]) / (hi - lo)[:, None, None] * 256 - 0.5,
                               atol=0.5 + 1e-9)
    assert grey.min() == 0 and grey.max() == 255 and grey.dtype.kind == "i"
    np.testing.assert_array_equal(digits_of(data["masks"], (5, 5)), masks)
    for name in ("plain", "bn"):
        for i, step in enumerate((0, 10, 20)):
            np.testing.assert_array_equal(digits_of(data["predictions"][name][i], (5, 5)), snapshots[name][step])
    assert data["scores"] == {"plain": [0.1, 0.2, 0.345], "bn": [0.1, None, 0.876]}


def test_mask_explorer_sends_the_class_colours_plot_masks_draws():
    images, masks, rng = masks_example()
    for classes in (("background", "shape"), CLASSES, tuple("abcdef")):
        e = MaskExplorer(images, masks % len(classes), {"bn": {0: masks % len(classes)}}, classes)
        fig = plots.plot_masks(images, masks, {"bn": masks}, classes, n=3)
        drawn = fig.axes[1].images[0].get_cmap()
        assert e.data["class_colors"] == [to_hex(c) for c in drawn.colors]
        assert e.data["class_names"] == list(classes)


def test_mask_explorer_without_scores_sends_none():
    images, masks, rng = masks_example()
    e = MaskExplorer(images, masks, mask_snapshots(masks, rng), CLASSES)
    assert e.data["scores"] == {}


def test_mask_explorer_takes_tensors_as_the_lesson_gives_them():
    import torch

    images, masks, rng = masks_example()
    snapshots = {k: {s: torch.as_tensor(m) for s, m in v.items()} for k, v in mask_snapshots(masks, rng).items()}
    e = MaskExplorer(torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(masks), snapshots, CLASSES)
    np.testing.assert_array_equal(digits_of(e.data["predictions"]["bn"][2], (6, 6)), masks)


def test_mask_explorer_figure_draws_what_it_sends():
    images, masks, rng = masks_example(n=6)
    snapshots = mask_snapshots(masks, rng)
    e = MaskExplorer(images, masks, snapshots, CLASSES)
    fig = e.figure(step=10, first=2)
    grid = np.array(fig.axes).reshape(3, 4)
    assert [ax.get_title() for ax in grid[0]] == ["image", "true mask", plots.LABELS["plain"], plots.LABELS["bn"]]
    assert fig._suptitle.get_text() == "Test images 2–4: true masks and predictions at step 10"
    for row in range(3):
        shown = grid[row][0].images[0].get_array()
        np.testing.assert_allclose(shown, np.array(e.data["images"][2 + row]).reshape(6, 6))
        # the same picture as the images themselves: a grey level is a linear function of the value
        corr = np.corrcoef(np.ravel(shown), images[2 + row, 0].ravel())[0, 1]
        assert corr > 0.9999
        np.testing.assert_array_equal(grid[row][1].images[0].get_array(), masks[2 + row])
        np.testing.assert_array_equal(grid[row][2].images[0].get_array(), snapshots["plain"][10][2 + row])
        np.testing.assert_array_equal(grid[row][3].images[0].get_array(), snapshots["bn"][10][2 + row])
    last = e.figure()
    np.testing.assert_array_equal(np.array(last.axes).reshape(3, 4)[0][3].images[0].get_array(), masks[0])
    with pytest.raises(ValueError, match=r"step must be one of the recorded steps \[0, 10, 20\], got 5"):
        e.figure(step=5)
    with pytest.raises(ValueError, match=r"first must be in 0..3, got 4"):
        e.figure(first=4)


@pytest.mark.parametrize("change, message", [
    (lambda i, m, s: (i, m, {**s, "bn": {0: m, 10: m}}), "same steps"),
    (lambda i, m, s: (i[:2], m[:2], {k: {t: p[:2] for t, p in v.items()} for k, v in s.items()}), "at least 3 images"),
    (lambda i, m, s: (i[:, 0], m, s), r"images must be \(N, 1, H, W\)"),
    (lambda i, m, s: (i, m[:, :3], s), r"masks must be \(N, H, W\)"),
    (lambda i, m, s: (i, m + 1, s), "masks must be class ids 0..2"),
    (lambda i, m, s: (i, m, {**s, "bn": {t: p[:, :2] for t, p in s["bn"].items()}}), "bn's masks at step 0 have shape"),
    (lambda i, m, s: (i, m, {**s, "plain": {t: p - 1 for t, p in s["plain"].items()}}), "plain's predictions must be"),
    (lambda i, m, s: (i, m, {}), "snapshots is empty"),
])
def test_mask_explorer_refuses_what_it_cannot_draw(change, message):
    images, masks, rng = masks_example()
    args = change(images, masks, mask_snapshots(masks, rng))
    with pytest.raises(ValueError, match=message):
        MaskExplorer(*args, CLASSES)


def test_mask_explorer_refuses_scores_of_unknown_variants_and_too_many_classes():
    images, masks, rng = masks_example()
    with pytest.raises(ValueError, match=r"scores for \['gn'\]"):
        MaskExplorer(images, masks, mask_snapshots(masks, rng), CLASSES, {"gn": {0: 0.5}})
    with pytest.raises(ValueError, match="2 to 6 classes"):
        MaskExplorer(images, masks, mask_snapshots(masks, rng), tuple("abcdefg"))


def test_mask_explorer_payload_on_lesson_07s_images():
    """Lesson 07 keeps SEGMENTATION['keep'] test images and records both variants at every evaluation
    (steps 0, 25, ..., 200): the size of what is sent does not depend on what was predicted."""
    from bnlab.data import shapes
    from bnlab.experiments import SEGMENTATION

    keep = SEGMENTATION["keep"]
    data = shapes(n_train=16, n_test=keep, size=32, seed=0).foreground()
    steps = range(0, SEGMENTATION["steps"] + 1, 25)
    rng = np.random.default_rng(0)
    snapshots = {name: {s: rng.integers(0, 2, (keep, 32, 32)) for s in steps} for name in ("bn", "plain_he")}
    e = MaskExplorer(data.x_test, data.masks_test, snapshots, data.class_names)
    assert len(e.data["steps"]) == 9 and len(e.data["images"]) == keep
    assert e.payload_bytes < 350_000, e.payload_bytes


def test_mask_explorer_ships_its_view():
    assert MaskExplorer._esm == bundle("mask_explorer.js")
    assert (widgets.STATIC / "mask_explorer.js").is_file()
