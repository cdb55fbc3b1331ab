"""Segmentation scores of predicted masks against true ones, without a model (lesson 07).

Pixel accuracy flatters a segmenter when the background dominates, so the lessons measure each
class by how well its predicted and true pixel sets overlap (IoU and Dice), pooled over all
images. `bnlab.train.segmentation_scores` runs a model and hands its argmax masks to `mask_scores`.
"""

from __future__ import annotations

import torch

__all__ = ["mask_scores", "iou"]


def _check_masks(pred, true, num_classes: int) -> None:
    for name, mask in (("pred", pred), ("true", true)):
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of class indices, got {type(mask).__name__}")
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise ValueError(f"{name} must hold integer class indices, got dtype {mask.dtype} "
                             "(for logits, take .argmax(1) first)")
    if pred.dim() != 3 or pred.shape != true.shape:
        raise ValueError(f"pred and true must be masks (N, H, W) of the same shape; got {tuple(pred.shape)} "
                         f"and {tuple(true.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (background and at least one class), got {num_classes!r}")
    for name, mask in (("pred", pred), ("true", true)):
        if mask.numel() and (mask.min() < 0 or mask.max() >= num_classes):
            raise ValueError(f"{name} mask values must be class indices 0..{num_classes - 1}, got values from "
                             f"{int(mask.min())} to {int(mask.max())}")


def mask_scores(pred: torch.Tensor, true: torch.Tensor, num_classes: int) -> dict:
    """Pixel accuracy, IoU and Dice of predicted masks against true ones, over all pixels of all images.

    For each class c, with P = pixels predicted as c and G = pixels truly c (over the whole set):
        IoU_c = |P & G| / |P | G|,   Dice_c = 2 |P & G| / (|P| + |G|)
    A class neither predicted nor present scores 1 (nothing to get wrong). 'iou' and 'dice' average
    over the foreground classes 1..K-1 (for K = 2: the shape class alone), since class 0, the
    background, is easy and would flatter every model; 'per_class_iou' and 'per_class_dice' list
    all K. 'pixel_accuracy' is the fraction of pixels with pred == true.

    pred, true: (N, H, W) integer class indices in 0..num_classes-1, on any device.
    """
    _check_masks(pred, true, num_classes)
    pred, true = pred.detach().cpu().long().flatten(), true.detach().cpu().long().flatten()
    intersection = torch.bincount(true[pred == true], minlength=num_classes).double()
    predicted = torch.bincount(pred, minlength=num_classes).double()
    actual = torch.bincount(true, minlength=num_classes).double()
    union = predicted + actual - intersection
    iou_per_class = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    total = predicted + actual
    dice_per_class = torch.where(total > 0, 2 * intersection / total.clamp(min=1), torch.ones_like(total))
    # no pixels: no accuracy to speak of (0 / 0)
    return {"pixel_accuracy": float(intersection.sum() / len(true)) if len(true) else float("nan"),
            "iou": float(iou_per_class[1:].mean()), "dice": float(dice_per_class[1:].mean()),
            "per_class_iou": iou_per_class.tolist(), "per_class_dice": dice_per_class.tolist()}


def iou(pred: torch.Tensor, true: torch.Tensor, cls: int = 1) -> float:
    """Intersection over union of one class, |P & G| / |P | G|, with P = pixels of pred equal to cls
    and G = pixels of true equal to cls, pooled over all images; 1 when cls is neither predicted
    nor present. pred, true: integer masks of the same shape, e.g. (N, H, W)."""
    for name, mask in (("pred", pred), ("true", true)):
        if not isinstance(mask, torch.Tensor) or mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise ValueError(f"{name} must be a tensor of integer class indices, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if pred.shape != true.shape:
        raise ValueError(f"pred and true must have the same shape; got {tuple(pred.shape)} and {tuple(true.shape)}")
    p, g = pred.detach().cpu() == cls, true.detach().cpu() == cls
    union = int((p | g).sum())
    return int((p & g).sum()) / union if union else 1.0
