"""bnlab.metrics: mask_scores and iou on small masks whose scores are counted by hand here."""

import math

import pytest
import torch

from bnlab import metrics, train
from bnlab.metrics import iou, mask_scores

# two 2x3 images; 1 = shape, 0 = background
TRUE = torch.tensor([[[1, 1, 0], [0, 0, 0]],
                     [[0, 1, 1], [0, 1, 0]]])
PRED = torch.tensor([[[1, 0, 0], [0, 0, 1]],
                     [[0, 1, 1], [1, 1, 0]]])
# By hand. Class 1: |G| = 2 + 3 = 5, |P| = 2 + 4 = 6, |P & G| = 1 + 3 = 4, |P | G| = 7.
# Class 0: |G| = 7, |P| = 6, |P & G| = 3 + 2 = 5, |P | G| = 8. Right pixels: 4 + 5 = 9 of 12.


def test_two_classes_by_hand():
    scores = mask_scores(PRED, TRUE, 2)
    assert scores["iou"] == pytest.approx(4 / 7)
    assert scores["dice"] == pytest.approx(2 * 4 / (6 + 5))
    assert scores["per_class_iou"] == pytest.approx([5 / 8, 4 / 7])
    assert scores["per_class_dice"] == pytest.approx([2 * 5 / (6 + 7), 8 / 11])
    assert scores["pixel_accuracy"] == pytest.approx(9 / 12)


def test_iou_of_one_class_by_hand():
    assert iou(PRED, TRUE) == pytest.approx(4 / 7)
    assert iou(PRED, TRUE, cls=0) == pytest.approx(5 / 8)
    assert iou(TRUE, TRUE) == 1.0
    assert iou(1 - TRUE, TRUE) == 0.0  # every shape pixel missed, every background pixel called shape


def test_absent_classes():
    """Class 2 predicted once but never true: IoU 0. Class 3 neither: IoU 1 (nothing to get wrong)."""
    true = torch.tensor([[[0, 1], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 2]]])
    scores = mask_scores(pred, true, 4)
    # class 1: |P & G| = 2, |P | G| = 3, |P| + |G| = 5
    assert scores["per_class_iou"] == pytest.approx([1.0, 2 / 3, 0.0, 1.0])
    assert scores["per_class_dice"] == pytest.approx([1.0, 4 / 5, 0.0, 1.0])
    assert scores["iou"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert iou(pred, true, cls=3) == 1.0 and iou(pred, true, cls=2) == 0.0


def test_no_pixels_no_accuracy():
    empty = torch.zeros(0, 4, 4, dtype=torch.int64)
    assert math.isnan(mask_scores(empty, empty, 2)["pixel_accuracy"])


@pytest.mark.parametrize("pred, true, num_classes, match", [
    (PRED, TRUE[:1], 2, "same shape"),
    (PRED[0], TRUE[0], 2, r"\(N, H, W\)"),
    (PRED.float(), TRUE, 2, "pred must hold integer class indices"),
    (PRED, TRUE * 2, 2, "true mask values must be class indices 0..1"),
    (PRED - 1, TRUE, 2, "pred mask values"),
    (PRED, TRUE, 1, "num_classes must be"),
    (PRED.numpy(), TRUE, 2, "pred must be a torch.Tensor"),
])
def test_bad_masks_are_named(pred, true, num_classes, match):
    with pytest.raises(ValueError, match=match):
        mask_scores(pred, true, num_classes)


def test_iou_rejects_bad_masks():
    with pytest.raises(ValueError, match="same shape"):
        iou(PRED, TRUE[:1])
    with pytest.raises(ValueError, match="integer class indices"):
        iou(PRED.float(), TRUE)


def test_train_re_exports_the_metrics():
    assert train.mask_scores is metrics.mask_scores and train.iou is metrics.iou
