"""Training and evaluation loops for the lessons' classifiers (torch optimizers and losses).

Seeded, on the device ``bnlab.pick_device`` chooses unless told otherwise, with a ``tqdm.auto``
progress bar; returns a History that plots and checks read from, so nothing has to be retrained
to be looked at again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Split
from .runtime import pick_device

__all__ = ["History", "train_classifier", "accuracy", "batched_accuracy"]


@dataclass
class History:
    """What a training run recorded: loss per step, test accuracy every eval_every steps."""

    loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


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


def train_classifier(model: nn.Module, data: Split, steps: int = 500, batch_size: int = 32,
                     lr: float = 0.1, optimizer: str = "sgd", eval_every: int = 50, seed: int = 0,
                     device: torch.device | str | None = None, progress: bool = True) -> History:
    """Minimize cross-entropy with minibatches drawn (seeded) from data's training set."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"need steps >= 1 and batch_size >= 1, got {steps}, {batch_size}")
    optimizers = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
    if optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    device = torch.device(device) if device is not None else pick_device()
    model.to(device).train()
    opt = optimizers[optimizer](model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    history = History()
    for step in tqdm(range(1, steps + 1), disable=not progress, desc="training"):
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.loss.append(loss.item())
        if step % eval_every == 0 or step == steps:
            history.eval_steps.append(step)
            history.test_accuracy.append(accuracy(model, data.x_test, data.y_test))
    return history
