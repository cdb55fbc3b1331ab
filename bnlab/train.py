"""Training and evaluation loops for the lessons' classifiers (torch optimizers and losses).

Seeded, on the device ``bnlab.pick_device`` chooses unless told otherwise, with a ``tqdm.auto``
progress bar; returns a History that plots and checks read from, so nothing has to be retrained
to be looked at again. With ``probe=dict(...)`` a `bnlab.probes.Probe` records what flows through
the network during the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import contextlib
import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Split
from .layers import is_batchnorm
from .probes import Probe, Recording
from .runtime import pick_device

__all__ = ["History", "train_classifier", "train_segmenter", "segmentation_scores", "freeze_batchnorm",
           "accuracy", "batched_accuracy"]


@dataclass
class History:
    """What a training run recorded: loss per step, test accuracy (eval mode) every eval_every steps
    (step 0 = before training), other test metrics at the same steps (e.g. 'iou'), the probe's
    Recording if there was a probe, the step at which the loss stopped being finite (None if it
    never did), the wall-clock seconds the run took, the trained model itself, and what an
    on_eval callback returned at each evaluation step (snapshots: {step: value})."""

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    probe: Recording | None = None
    diverged_at: int | None = None
    seconds: float = 0.0
    metrics: dict[str, list[float]] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False)
    snapshots: dict = field(default_factory=dict, repr=False)

    def record(self, scores: dict[str, float]) -> None:
        """Append one evaluation: scores['accuracy'] to test_accuracy, the others to metrics."""
        self.test_accuracy.append(scores["accuracy"])
        for name, value in scores.items():
            if name != "accuracy":
                self.metrics.setdefault(name, []).append(value)

    def accuracy_at(self, step: int) -> float:
        """Test accuracy at the last evaluation at or before step."""
        earlier = [i for i, s in enumerate(self.eval_steps) if s <= step]
        if not earlier:
            raise ValueError(f"no evaluation at or before step {step}; evaluated at {self.eval_steps[:5]}...")
        return self.test_accuracy[earlier[-1]]

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None


def batched_accuracy(predict, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Fraction of correct argmax predictions when predict(x_batch) -> logits sees batch_size rows at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            # both sides on the CPU: the labels may live on the GPU with the test images
            correct += (predict(x[i:i + batch_size]).argmax(1).cpu() == y[i:i + batch_size].cpu()).sum().item()
    return correct / len(x)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """model.eval() for the duration; then every module gets its own mode back (model.train(mode)
    would undo a freeze_batchnorm)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Fraction of correct argmax predictions in eval mode (running statistics), in batches of batch_size.

    Every layer's train/eval mode is restored afterwards (BN layers frozen by `freeze_batchnorm`
    stay frozen).
    """
    with _eval_mode(model):
        device = next(model.parameters()).device
        return batched_accuracy(lambda xb: model(xb.to(device)), x, y, batch_size or len(x))


def _recording_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> None:
    """Forward and backward on a fixed batch so a probe sees it; leaves no trace in the model.

    BN's running statistics are restored afterwards and the gradients cleared: the run trains
    exactly as it would without the recording pass.
    """
    buffers = [b.clone() for b in model.buffers()]
    loss_fn(model(x), y).backward()
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    model.zero_grad(set_to_none=True)


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BN layer of model (`bnlab.layers.is_batchnorm`) that has running statistics in eval
    mode: it normalizes with them and stops updating them, while the rest of the model trains
    (fine-tuning with batches too small for BN). A BN layer without running statistics would use
    batch statistics in eval too, so it is left alone. model.train() undoes this. Returns the
    number of layers frozen."""
    frozen = 0
    for module in model.modules():
        if is_batchnorm(module) and module.running_mean is not None:
            module.eval()
            frozen += 1
    return frozen


def _train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn and freeze_batchnorm(model) == 0:
        raise ValueError("freeze_bn=True, but the model has no BatchNorm layer with running statistics")


def train_classifier(model: nn.Module, data: Split, steps: int = 500, batch_size: int = 32,
                     lr: float = 0.1, optimizer: str = "sgd", eval_every: int = 50, seed: int = 0,
                     device: torch.device | str | None = None, progress: bool = True,
                     probe: dict | None = None, probe_batch: int | None = None,
                     stop_on_nonfinite: bool = True, momentum: float = 0.0,
                     freeze_bn: bool = False) -> History:
    """Minimize cross-entropy with minibatches drawn (seeded) from data's training set.

    History.test_accuracy: test accuracy in eval mode (running statistics), every eval_every steps.
    momentum: SGD's momentum (0: plain SGD). freeze_bn: BN layers stay in eval mode throughout
    (`freeze_batchnorm`). probe: keyword arguments for `bnlab.probes.Probe` (e.g. dict(every=10,
    capture="input")); the recording is returned in History.probe. probe_batch=n: on each recorded
    step the probe sees a forward/backward pass over the first n training examples (the same
    examples every time, in training mode, with that batch's own statistics) instead of the step's
    random minibatch, so that changes over time are not hidden in minibatch noise. Training stops
    at the first non-finite loss when stop_on_nonfinite (History.diverged_at says when).
    """
    def evaluate(model, x_test, y_test):
        return {"accuracy": accuracy(model, x_test, y_test)}

    return _fit(model, data.x_train, data.y_train, data.x_test, data.y_test, evaluate, steps=steps,
                batch_size=batch_size, lr=lr, optimizer=optimizer, eval_every=eval_every, seed=seed,
                device=device, progress=progress, probe=probe, probe_batch=probe_batch,
                stop_on_nonfinite=stop_on_nonfinite, momentum=momentum, freeze_bn=freeze_bn)


def train_segmenter(model: nn.Module, data, steps: int = 300, batch_size: int = 16, lr: float = 0.1,
                    optimizer: str = "sgd", eval_every: int = 50, seed: int = 0,
                    device: torch.device | str | None = None, progress: bool = True,
                    momentum: float = 0.9, stop_on_nonfinite: bool = True, on_eval=None) -> History:
    """Minimize per-pixel cross-entropy on a `bnlab.data.SegmentationSplit` (images -> masks).

    History.test_accuracy holds the pixel accuracy and History.metrics['iou'] / ['dice'] the mean
    IoU and Dice over the foreground classes (`segmentation_scores`), all in eval mode.
    on_eval(step, model), if given, is called after each evaluation (model in eval mode, no
    gradients); what it returns, unless None, is kept in History.snapshots[step] (e.g. predicted
    masks for a widget).
    """
    def evaluate(model, x_test, masks_test):
        scores = segmentation_scores(model, x_test, masks_test, data.num_classes)
        return {"accuracy": scores["pixel_accuracy"], "iou": scores["iou"], "dice": scores["dice"]}

    return _fit(model, data.x_train, data.masks_train, data.x_test, data.masks_test, evaluate,
                steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, eval_every=eval_every,
                seed=seed, device=device, progress=progress, probe=None, probe_batch=None,
                stop_on_nonfinite=stop_on_nonfinite, momentum=momentum, freeze_bn=False, on_eval=on_eval)


def _fit(model, x, y, x_test, y_test, evaluate, *, steps, batch_size, lr, optimizer, eval_every, seed,
         device, progress, probe, probe_batch, stop_on_nonfinite, momentum, freeze_bn, on_eval=None) -> History:
    """The loop both trainers share; evaluate(model, x_test, y_test) -> {'accuracy': ..., other metrics}."""

    def record(step):
        history.eval_steps.append(step)
        history.record(evaluate(model, x_test, y_test))
        if on_eval is not None:
            model.eval()
            with torch.no_grad():
                kept = on_eval(step, model)
            if kept is not None:
                history.snapshots[step] = kept
        _train_mode(model, freeze_bn)

    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"need steps, batch_size, eval_every >= 1, got {steps}, {batch_size}, {eval_every}")
    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    if momentum and optimizer != "sgd":
        raise ValueError(f"momentum is SGD's; {optimizer} has its own, got momentum={momentum}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if probe_batch is not None and probe is None:
        raise ValueError("probe_batch needs a probe: pass probe=dict(...) too")
    device = torch.device(device) if device is not None else pick_device()
    model.to(device)
    _train_mode(model, freeze_bn)
    opt = (torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum) if optimizer == "sgd"
           else optimizers[optimizer](model.parameters(), lr=lr))
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    x_test, y_test = x_test.to(device), y_test.to(device)
    recorder = Probe(model, optimizer=opt, **probe) if probe is not None else None
    if probe_batch is not None:
        x_probe, y_probe = x[:probe_batch].to(device), y[:probe_batch].to(device)
    history = History(model=model)
    record(0)
    start = time.perf_counter()
    with recorder if recorder is not None else contextlib.nullcontext():
        for step in tqdm(range(1, steps + 1), disable=not progress, desc="training", leave=False):
            if probe_batch is not None and recorder.recording_now:
                _recording_pass(model, x_probe, y_probe, loss_fn)
            idx = torch.randint(len(x), (batch_size,), generator=gen)
            loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.loss.append(loss.item())
            if stop_on_nonfinite and not math.isfinite(history.loss[-1]):
                history.diverged_at = step
                break
            if step % eval_every == 0 or step == steps:
                record(step)
    history.seconds = time.perf_counter() - start
    history.probe = recorder.recording if recorder is not None else None
    return history


def segmentation_scores(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, num_classes: int,
                        batch_size: int = 64) -> dict:
    """Pixel accuracy, IoU and Dice of model's argmax masks in eval mode, over the whole set.

    For each class c, with P = predicted pixels of c and G = true pixels of c over all images:
        IoU_c = |P & G| / |P | G|,   Dice_c = 2 |P & G| / (|P| + |G|)
    'iou' and 'dice' average over the foreground classes 1..K-1 (class 0 is the background, which
    is easy and would flatter every model); 'per_class_iou' has all K. A class that is neither
    predicted nor present counts as 1. Every layer's train/eval mode is restored afterwards.
    """
    if masks.dim() != 3 or x.dim() != 4 or len(x) != len(masks) or x.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"need x (N, C, H, W) and masks (N, H, W) of the same N, H, W; got "
                         f"{tuple(x.shape)} and {tuple(masks.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background and at least one class), got {num_classes}")
    if masks.numel() and (masks.min() < 0 or masks.max() >= num_classes):
        raise ValueError(f"mask values must be class indices 0..{num_classes - 1}, got values from "
                         f"{int(masks.min())} to {int(masks.max())}")
    intersection = torch.zeros(num_classes, dtype=torch.float64)
    predicted = torch.zeros(num_classes, dtype=torch.float64)
    actual = torch.zeros(num_classes, dtype=torch.float64)
    with _eval_mode(model):
        device = next(model.parameters()).device
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                pred = model(x[i:i + batch_size].to(device)).argmax(1).cpu()
                true = masks[i:i + batch_size].cpu()
                intersection += torch.bincount(true[pred == true].flatten(), minlength=num_classes)[:num_classes]
                predicted += torch.bincount(pred.flatten(), minlength=num_classes)[:num_classes]
                actual += torch.bincount(true.flatten(), minlength=num_classes)[:num_classes]
    union = predicted + actual - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    total = predicted + actual
    dice = torch.where(total > 0, 2 * intersection / total.clamp(min=1), torch.ones_like(total))
    return {"pixel_accuracy": float(intersection.sum() / actual.sum()),
            "iou": float(iou[1:].mean()), "dice": float(dice[1:].mean()),
            "per_class_iou": iou.tolist()}
