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
from .probes import Probe, Recording
from .runtime import pick_device

__all__ = ["History", "train_classifier", "accuracy", "batched_accuracy"]


@dataclass
class History:
    """What a training run recorded: loss per step, test accuracy (eval mode) every eval_every steps
    (step 0 = before training), the probe's Recording if there was a probe, the step at which the
    loss stopped being finite (None if it never did), and the wall-clock seconds the run took."""

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    probe: Recording | None = None
    diverged_at: int | None = None
    seconds: float = 0.0

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
            correct += (predict(x[i:i + batch_size]).argmax(1).cpu() == y[i:i + batch_size]).sum().item()
    return correct / len(x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Fraction of correct argmax predictions in eval mode (running statistics), in batches of batch_size.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        return batched_accuracy(lambda xb: model(xb.to(device)), x, y, batch_size or len(x))
    finally:
        model.train(was_training)


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


def train_classifier(model: nn.Module, data: Split, steps: int = 500, batch_size: int = 32,
                     lr: float = 0.1, optimizer: str = "sgd", eval_every: int = 50, seed: int = 0,
                     device: torch.device | str | None = None, progress: bool = True,
                     probe: dict | None = None, probe_batch: int | None = None,
                     stop_on_nonfinite: bool = True) -> History:
    """Minimize cross-entropy with minibatches drawn (seeded) from data's training set.

    probe: keyword arguments for `bnlab.probes.Probe` (e.g. dict(every=10, capture="input")); the
    recording is returned in History.probe. probe_batch=n: on each recorded step the probe sees a
    forward/backward pass over the first n training examples (the same examples every time, in
    training mode, with that batch's own statistics) instead of the step's random minibatch, so
    that changes over time are not hidden in minibatch noise. Training stops at the first
    non-finite loss when stop_on_nonfinite (History.diverged_at says when).
    """
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"need steps, batch_size, eval_every >= 1, got {steps}, {batch_size}, {eval_every}")
    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    if probe_batch is not None and probe is None:
        raise ValueError("probe_batch needs a probe: pass probe=dict(...) too")
    device = torch.device(device) if device is not None else pick_device()
    model.to(device).train()
    opt = optimizers[optimizer](model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    recorder = Probe(model, optimizer=opt, **probe) if probe is not None else None
    if probe_batch is not None:
        x_probe, y_probe = x[:probe_batch].to(device), y[:probe_batch].to(device)
    history = History(eval_steps=[0], test_accuracy=[accuracy(model, x_test, y_test)])
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
                history.eval_steps.append(step)
                history.test_accuracy.append(accuracy(model, x_test, y_test))
    history.seconds = time.perf_counter() - start
    history.probe = recorder.recording if recorder is not None else None
    return history

