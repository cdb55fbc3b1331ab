"""Training and evaluation loops for the lessons' classifiers and segmenters (torch optimizers and losses).

A run is described by a `TrainConfig` (seeded, on the device ``bnlab.pick_device`` chooses unless
told otherwise, with a ``tqdm.auto`` progress bar) and returns a History that plots and checks read
from, so nothing has to be retrained to be looked at again. With ``probe=dict(...)`` a
`bnlab.probes.Probe` records what flows through the network during the run.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Split
from .layers import is_batchnorm
from .metrics import iou, mask_scores
from .probes import Probe, Recording
from .runtime import pick_device

__all__ = ["History", "TrainConfig", "OPTIMIZERS", "make_optimizer", "train_classifier", "train_segmenter",
           "segmentation_scores", "mask_scores", "iou", "freeze_batchnorm", "recompute_batchnorm_statistics",
           "accuracy", "batched_accuracy"]

OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, params: Iterable, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The optimizer a run uses: 'sgd' (torch.optim.SGD, heavy-ball momentum when momentum > 0) or
    'adam' (torch.optim.Adam, which has its own momentum: momentum must be 0). weight_decay adds
    weight_decay * theta to each gradient, in both."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
    if momentum and name != "sgd":
        raise ValueError(f"momentum is SGD's; {name} has its own, got momentum={momentum}")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _is_count(value, minimum: int) -> bool:
    # True is an int to Python; as a number of steps it is a mistake
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """How a training run goes; `train_classifier` and `train_segmenter` build one from their keywords.

    steps optimizer steps on minibatches of batch_size drawn with replacement (seeded by seed);
    optimizer, lr, momentum, weight_decay: see `make_optimizer`; an evaluation every eval_every
    steps (and at steps 0 and `steps`), after which on_eval(step, model) may return a snapshot;
    device None: `bnlab.pick_device()`; progress: a tqdm bar; stop_on_nonfinite: stop at the first
    non-finite loss; freeze_bn: `freeze_batchnorm` throughout; probe: keyword arguments for
    `bnlab.probes.Probe`, probe_batch: the first n training examples the probe sees on each
    recorded step. Every value is checked on construction: a ValueError names the bad one.
    """

    steps: int = 500
    batch_size: int = 32
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    eval_every: int = 50
    seed: int = 0
    device: torch.device | str | None = None
    progress: bool = True
    stop_on_nonfinite: bool = True
    freeze_bn: bool = False
    probe: dict | None = None
    probe_batch: int | None = None
    on_eval: Callable | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            if not _is_count(getattr(self, name), 1):
                raise ValueError(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        # not (x > 0) also rejects NaN
        if not _is_number(self.lr) or not self.lr > 0:
            raise ValueError(f"lr must be a number > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if not _is_number(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum is SGD's; {self.optimizer} has its own, got momentum={self.momentum}")
        if not _is_number(self.weight_decay) or not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if self.probe is not None and not isinstance(self.probe, dict):
            raise ValueError(f"probe must be a dict of Probe keyword arguments or None, got {self.probe!r}")
        if self.probe_batch is not None:
            if self.probe is None:
                raise ValueError("probe_batch needs a probe: pass probe=dict(...) too")
            if not _is_count(self.probe_batch, 1):
                raise ValueError(f"probe_batch must be an int >= 1 or None, got {self.probe_batch!r}")
        if self.on_eval is not None and not callable(self.on_eval):
            raise ValueError(f"on_eval must be a function (step, model) -> snapshot or None, got {self.on_eval!r}")


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
    exactly as it would without the recording pass. For a floating-point x the backward computes
    only the gradients w.r.t. the activations (what a probe records), not the parameters'.
    """
    # every buffer, not only those of BN layers (is_batchnorm): whatever else keeps state in
    # buffers must not see the fixed batch either
    buffers = [b.clone() for b in model.buffers()]
    # the parameters' gradients would be thrown away: with the parameters frozen and the input
    # requiring grad instead, backward skips them (for a linear layer, half of its work)
    frozen = [p for p in model.parameters() if p.requires_grad] if x.is_floating_point() else []
    try:
        for p in frozen:
            p.requires_grad_(False)
        loss_fn(model(x.detach().requires_grad_() if frozen else x), y).backward()
    finally:
        for p in frozen:
            p.requires_grad_(True)
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


def recompute_batchnorm_statistics(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> int:
    """Replace the running statistics of every BN layer of model by averages over x.

    Each BN layer is reset (running_mean 0, running_var 1) and set to momentum=None, the cumulative
    average; x then passes through the model in training mode, in batches of batch_size, under
    no_grad, so that running_mean becomes the mean of the batch means over x (and running_var that of
    the unbiased batch variances). Weights are not touched; each layer's momentum and the model's
    mode are restored. Returns the number of BN layers recomputed.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (BN needs two values per channel in training), got {batch_size}")
    if len(x) < batch_size:
        raise ValueError(f"x has {len(x)} examples, fewer than one batch of {batch_size}")
    layers = [m for m in model.modules() if is_batchnorm(m) and m.running_mean is not None]
    momenta = [m.momentum for m in layers]
    was_training = model.training
    device = next(model.parameters()).device
    for module in layers:
        module.reset_running_stats()
        module.momentum = None
    model.train()
    with torch.no_grad():
        # only full batches: a short last batch would count as much as a full one in the average
        for start in range(0, len(x) - batch_size + 1, batch_size):
            model(x[start:start + batch_size].to(device))
    for module, momentum in zip(layers, momenta):
        module.momentum = momentum
    model.train(was_training)
    return len(layers)


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
    at the first non-finite loss when stop_on_nonfinite (History.diverged_at says when). The
    keywords become a `TrainConfig`, which rejects a bad value with a ValueError naming it.
    """
    def evaluate(model, x_test, y_test):
        return {"accuracy": accuracy(model, x_test, y_test)}

    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                         eval_every=eval_every, seed=seed, device=device, progress=progress,
                         stop_on_nonfinite=stop_on_nonfinite, freeze_bn=freeze_bn, probe=probe,
                         probe_batch=probe_batch)
    return _fit(model, data.x_train, data.y_train, data.x_test, data.y_test, evaluate, config)


def train_segmenter(model: nn.Module, data, steps: int = 300, batch_size: int = 16, lr: float = 0.1,
                    optimizer: str = "sgd", eval_every: int = 50, seed: int = 0,
                    device: torch.device | str | None = None, progress: bool = True,
                    momentum: float = 0.9, stop_on_nonfinite: bool = True, on_eval=None) -> History:
    """Minimize per-pixel cross-entropy on a `bnlab.data.SegmentationSplit` (images -> masks).

    History.test_accuracy holds the pixel accuracy and History.metrics['iou'] / ['dice'] the mean
    IoU and Dice over the foreground classes (`segmentation_scores`), all in eval mode.
    on_eval(step, model), if given, is called after each evaluation (model in eval mode, no
    gradients); what it returns, unless None, is kept in History.snapshots[step] (e.g. predicted
    masks for a widget). The keywords become a `TrainConfig`.
    """
    def evaluate(model, x_test, masks_test):
        scores = segmentation_scores(model, x_test, masks_test, data.num_classes)
        return {"accuracy": scores["pixel_accuracy"], "iou": scores["iou"], "dice": scores["dice"]}

    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, momentum=momentum,
                         eval_every=eval_every, seed=seed, device=device, progress=progress,
                         stop_on_nonfinite=stop_on_nonfinite, on_eval=on_eval)
    return _fit(model, data.x_train, data.masks_train, data.x_test, data.masks_test, evaluate, config)


def _fit(model: nn.Module, x, y, x_test, y_test, evaluate, config: TrainConfig) -> History:
    """The loop both trainers share; evaluate(model, x_test, y_test) -> {'accuracy': ..., other metrics}."""

    def record(step):
        history.eval_steps.append(step)
        history.record(evaluate(model, x_test, y_test))
        if config.on_eval is not None:
            model.eval()
            with torch.no_grad():
                kept = config.on_eval(step, model)
            if kept is not None:
                history.snapshots[step] = kept
        _train_mode(model, config.freeze_bn)

    device = torch.device(config.device) if config.device is not None else pick_device()
    model.to(device)
    _train_mode(model, config.freeze_bn)
    opt = make_optimizer(config.optimizer, model.parameters(), config.lr, config.momentum, config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(config.seed)
    x_test, y_test = x_test.to(device), y_test.to(device)
    recorder = Probe(model, optimizer=opt, **config.probe) if config.probe is not None else None
    if config.probe_batch is not None:
        x_probe, y_probe = x[:config.probe_batch].to(device), y[:config.probe_batch].to(device)
    history = History(model=model)
    record(0)
    start = time.perf_counter()
    with recorder if recorder is not None else contextlib.nullcontext():
        for step in tqdm(range(1, config.steps + 1), disable=not config.progress, desc="training", leave=False):
            if config.probe_batch is not None and recorder.recording_now:
                _recording_pass(model, x_probe, y_probe, loss_fn)
            idx = torch.randint(len(x), (config.batch_size,), generator=gen)
            loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.loss.append(loss.item())
            if config.stop_on_nonfinite and not math.isfinite(history.loss[-1]):
                history.diverged_at = step
                break
            if step % config.eval_every == 0 or step == config.steps:
                record(step)
    history.seconds = time.perf_counter() - start
    history.probe = recorder.recording if recorder is not None else None
    return history


def segmentation_scores(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, num_classes: int,
                        batch_size: int = 64) -> dict:
    """`bnlab.metrics.mask_scores` of model's argmax masks in eval mode, over the whole set.

    For each class c, with P = predicted pixels of c and G = true pixels of c over all images:
        IoU_c = |P & G| / |P | G|,   Dice_c = 2 |P & G| / (|P| + |G|)
    'iou' and 'dice' average over the foreground classes 1..K-1 (class 0 is the background, which
    is easy and would flatter every model); 'per_class_iou' has all K. A class that is neither
    predicted nor present counts as 1. x: (N, C, H, W), masks: (N, H, W); the model sees batch_size
    images at a time. Every layer's train/eval mode is restored afterwards.
    """
    if masks.dim() != 3 or x.dim() != 4 or len(x) != len(masks) or x.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"need x (N, C, H, W) and masks (N, H, W) of the same N, H, W; got "
                         f"{tuple(x.shape)} and {tuple(masks.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background and at least one class), got {num_classes}")
    if masks.numel() and (masks.min() < 0 or masks.max() >= num_classes):
        raise ValueError(f"mask values must be class indices 0..{num_classes - 1}, got values from "
                         f"{int(masks.min())} to {int(masks.max())}")
    with _eval_mode(model):
        device = next(model.parameters()).device
        with torch.no_grad():
            pred = torch.cat([model(x[i:i + batch_size].to(device)).argmax(1).cpu()
                              for i in range(0, len(x), batch_size)])
    return mask_scores(pred, masks.cpu(), num_classes)
