"""Offline, deterministic data for the lessons: generators we write, nothing downloaded.

Every generator takes a seed and returns the same numbers for the same seed on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Split", "digits", "gaussian_blobs", "drifting_batches"]


@dataclass
class Split:
    """A train/test split of a classification dataset (float32 inputs, int64 labels)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def digits(test_fraction: float = 0.3, seed: int = 0, images: bool = False) -> Split:
    """scikit-learn's bundled handwritten digits: 1,797 8x8 grey images of 0-9, no download.

    Pixels 0..16 are scaled to x = pixel / 16 in [0, 1]. A seeded, class-stratified shuffle puts
    test_fraction of each class in the test set (70/30 by default). x is (N, 64), or (N, 1, 8, 8)
    with images=True.
    """
    from sklearn.datasets import load_digits  # imported here: only the lessons that use digits pay for it

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = load_digits()
    x, y = bunch.data.astype(np.float32) / 16.0, bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test, train = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(test_fraction * members.size))
        test.append(members[:n_test])
        train.append(members[n_test:])
    train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    if images:
        x = x.reshape(-1, 1, 8, 8)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return Split(xt[train], yt[train], xt[test], yt[test])


def gaussian_blobs(n_per_class: int = 300, n_classes: int = 4, dim: int = 8, spread: float = 1.0,
                   offset: float = 5.0, scale: float = 3.0, test_fraction: float = 0.3,
                   seed: int = 0) -> Split:
    """Classes as Gaussian clouds around random centres, in raw units that are far from N(0, 1).

    Centres ~ N(0, I_dim); each sample = centre + spread * N(0, I_dim); then every feature is mapped
    to offset + scale * value, so an un-normalized net sees inputs around `offset` with std ~ `scale`.
    Shuffled, then split test_fraction / 1 - test_fraction, stratified by nothing but the shuffle.
    """
    if n_per_class < 2 or n_classes < 2 or dim < 1:
        raise ValueError(f"need n_per_class >= 2, n_classes >= 2, dim >= 1; got {n_per_class}, {n_classes}, {dim}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * 2.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(y.size, dim))
    x = offset + scale * x
    order = rng.permutation(y.size)
    x, y = x[order], y[order]
    n_test = int(round(test_fraction * y.size))
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)
    return Split(xt[n_test:], yt[n_test:], xt[:n_test], yt[:n_test])


def drifting_batches(steps: int = 400, batch_size: int = 32, drift: float = 0.02, kind: str = "ramp",
                     noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """One feature whose distribution drifts during training: returns x of shape (steps, batch_size).

    kind='ramp': the true mean at step t is drift * t;  kind='sine': 20 * drift * sin(2 pi t / 200);
    kind='step': 0, then 10 * drift * 20 from steps // 2 on. Each batch adds noise * N(0, 1).
    """
    if kind not in ("ramp", "sine", "step"):
        raise ValueError(f"kind must be 'ramp', 'sine' or 'step', got {kind!r}")
    if steps < 1 or batch_size < 2:
        raise ValueError(f"need steps >= 1 and batch_size >= 2, got {steps}, {batch_size}")
    t = np.arange(steps)
    if kind == "ramp":
        mean = drift * t
    elif kind == "sine":
        mean = 20 * drift * np.sin(2 * np.pi * t / 200)
    else:
        mean = np.where(t >= steps // 2, 200 * drift, 0.0)
    rng = np.random.default_rng(seed)
    return mean[:, None] + noise * rng.normal(size=(steps, batch_size))
