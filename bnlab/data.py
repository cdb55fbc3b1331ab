"""Offline, deterministic data for the lessons: generators we write, and readers for files the user
already has (MNIST, Fashion-MNIST). Nothing is ever downloaded.

Every generator takes a seed and returns the same numbers for the same seed on every machine.
Classification data comes as a `Split`; segmentation data (images with per-pixel class masks) as a
`SegmentationSplit`; sequence data (lesson 11) as tensors x (N, T, F) and y (N,).
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Split", "digits", "gaussian_blobs", "drifting_batches", "base_sample",
           "SegmentationSplit", "ShapeGeometry", "shapes", "lesions", "read_idx", "mnist",
           "vary_scans", "digit_sequences", "adding_problem", "pad_sequences"]


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


BASE_SHAPES = ("normal", "skewed", "bimodal")


def base_sample(shape: str, n: int = 512, seed: int = 0) -> np.ndarray:
    """n values z of one feature, standardized to mean 0 and std 1 (biased), of a given shape:

        normal:  z ~ N(0, 1)
        skewed:  z ~ Exp(1), a long right tail
        bimodal: z ~ +-2 with equal probability, plus N(0, 0.5^2)

    Lesson 01 maps it to x = mean + scale * z, so a slider move rescales recorded numbers. Returns (n,).
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 (a std needs two values), got {n}")
    rng = np.random.default_rng(seed)
    if shape == "normal":
        z = rng.normal(size=n)
    elif shape == "skewed":
        z = rng.exponential(size=n)
    elif shape == "bimodal":
        z = np.where(rng.random(n) < 0.5, -2.0, 2.0) + 0.5 * rng.normal(size=n)
    else:
        raise ValueError(f"shape must be one of {BASE_SHAPES}, got {shape!r}")
    return (z - z.mean()) / z.std()


# ============================================================================= segmentation
@dataclass
class SegmentationSplit:
    """A train/test split of a segmentation dataset.

    x_*: (N, C, H, W) float32 images; masks_*: (N, H, W) int64, the class of every pixel, an index
    into class_names (0 is the background). labels_*: optional (N,) int64 image-level labels (for
    lesions: whether the scan has one), or None. Images are square: image_size is H = W.
    """

    x_train: torch.Tensor
    masks_train: torch.Tensor
    x_test: torch.Tensor
    masks_test: torch.Tensor
    class_names: tuple[str, ...]
    labels_train: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None

    def __post_init__(self):
        self.class_names = tuple(self.class_names)
        if len(self.class_names) < 2:
            raise ValueError(f"class_names needs the background and at least one class, got {self.class_names}")
        for part in ("train", "test"):
            x, masks, labels = (getattr(self, f"{name}_{part}") for name in ("x", "masks", "labels"))
            if x.ndim != 4 or x.dtype != torch.float32:
                raise ValueError(f"x_{part} must be (N, C, H, W) float32, got {tuple(x.shape)} {x.dtype}")
            if x.shape[2] != x.shape[3]:
                raise ValueError(f"x_{part} must hold square images, got H x W = {x.shape[2]} x {x.shape[3]}")
            if masks.dtype != torch.int64 or tuple(masks.shape) != (x.shape[0], *x.shape[2:]):
                raise ValueError(f"masks_{part} must be int64 of shape (N, H, W) = {(x.shape[0], *x.shape[2:])}, "
                                 f"got {tuple(masks.shape)} {masks.dtype}")
            if labels is not None and (labels.dtype != torch.int64 or tuple(labels.shape) != (x.shape[0],)):
                raise ValueError(f"labels_{part} must be int64 of shape ({x.shape[0]},) or None, "
                                 f"got {tuple(labels.shape)} {labels.dtype}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"train and test images differ in shape: {tuple(self.x_train.shape[1:])} "
                             f"vs {tuple(self.x_test.shape[1:])}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]

    def foreground(self, name: str = "shape") -> "SegmentationSplit":
        """The same images with the classes 1..K-1 merged into one: background vs foreground."""
        return SegmentationSplit(self.x_train, (self.masks_train > 0).long(), self.x_test,
                                 (self.masks_test > 0).long(), (self.class_names[0], name),
                                 self.labels_train, self.labels_test)


@dataclass
class ShapeGeometry:
    """What `shapes(..., return_params=True)` drew, for checking masks against another rasterization.

    For image n and slot s (slots are painted in order 0, 1, 2, ..., later over earlier):
      kind[n, s]       0 (empty slot), 1 disc, 2 square, 3 triangle          (N, S) int64
      centre[n, s]     (row, col) in pixel coordinates; pixel (i, j) sits at (i, j)   (N, S, 2)
      radius[n, s]     r, the equal-area radius: every shape has area pi r^2        (N, S)
      angle[n, s]      a, rotation in radians from the +col axis towards +row          (N, S)
      intensity[n, s]  the shape's mean grey value (stripes of +-0.05 ride on it)      (N, S)
    A disc is |p - c| <= r. A square has side r sqrt(pi) and its corners at angles a + pi/4 + k pi/2;
    a triangle is equilateral with circumradius r sqrt(4 pi / (3 sqrt 3)) and vertices at a + 2 pi k / 3.
    background: (N, H, W) the noise-free background the shapes were painted over.
    """

    kind: np.ndarray
    centre: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    intensity: np.ndarray
    background: np.ndarray


SHAPE_CLASSES = ("background", "disc", "square", "triangle")
# circumradius / equal-area radius: a shape's extent from its centre, for keeping it in the image
_EXTENT = np.array([0.0, 1.0, math.sqrt(math.pi / 2), math.sqrt(4 * math.pi / (3 * math.sqrt(3)))])
_STRIPE_AMPLITUDE = 0.05


def _seed_pair(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for train and test, so the test set does not depend on n_train."""
    train, test = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train), np.random.default_rng(test)


def _check_counts(n_train: int, n_test: int, size: int, min_size: int) -> None:
    if n_train < 2 or n_test < 2:
        raise ValueError(f"need n_train >= 2 and n_test >= 2, got {n_train}, {n_test}")
    if size < min_size:
        raise ValueError(f"size must be >= {min_size} pixels, got {size}")


def _low_frequency_field(rng: np.random.Generator, n: int, size: int, waves: int,
                         cycles: tuple[float, float]) -> np.ndarray:
    """(n, size, size): a sum of `waves` plane waves of random direction, phase and frequency
    (cycles per image in `cycles`), each of amplitude sqrt(2 / waves), so the field's std is 1."""
    coords = np.arange(size, dtype=np.float64) / size
    direction = rng.uniform(0, 2 * np.pi, (n, waves, 1, 1))
    frequency = rng.uniform(*cycles, (n, waves, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, waves, 1, 1))
    along = np.cos(direction) * coords[None, None, None, :] + np.sin(direction) * coords[None, None, :, None]
    return np.sqrt(2 / waves) * np.sin(2 * np.pi * frequency * along + phase).sum(axis=1)


def _rasterize_shapes(kind, centre, radius, angle, size):
    """(N, S, H, W) bool: which pixels each slot's shape covers (the half-plane form of ShapeGeometry)."""
    grid = np.arange(size, dtype=np.float64)
    dy = grid[None, None, :, None] - centre[..., 0, None, None]
    dx = grid[None, None, None, :] - centre[..., 1, None, None]
    r, a = radius[..., None, None], angle[..., None, None]
    # coordinates along the shape's own axes
    u = dx * np.cos(a) + dy * np.sin(a)
    v = -dx * np.sin(a) + dy * np.cos(a)
    disc = dx ** 2 + dy ** 2 <= r ** 2
    half_side = r * math.sqrt(math.pi) / 2
    square = (np.abs(u) <= half_side) & (np.abs(v) <= half_side)
    # an equilateral triangle is where all three edge normals (opposite the vertices at 0, 120,
    # 240 degrees in (u, v)) see the point within the inradius, half the circumradius
    inradius = r * _EXTENT[3] / 2
    triangle = np.ones_like(disc)
    for k in range(3):
        normal = np.pi + 2 * np.pi * k / 3
        triangle &= u * np.cos(normal) + v * np.sin(normal) <= inradius
    kind = kind[..., None, None]
    return ((kind == 1) & disc) | ((kind == 2) & square) | ((kind == 3) & triangle)


def _draw_shapes(rng: np.random.Generator, n: int, size: int, noise: float, max_shapes: int):
    count = rng.integers(1, max_shapes + 1, n)
    used = np.arange(max_shapes)[None, :] < count[:, None]
    kind = np.zeros((n, max_shapes), dtype=np.int64)
    # deal the classes like cards: each appears equally often over the whole set (to within one)
    kind[used] = rng.permutation(np.resize(np.arange(1, 4), used.sum()))
    radius = rng.uniform(0.10, 0.17, (n, max_shapes)) * size
    extent = radius * _EXTENT[kind]
    angle = rng.uniform(0, 2 * np.pi, (n, max_shapes))

    def place(rows, slot):
        low, high = extent[rows, slot], size - 1 - extent[rows, slot]
        return low[:, None] + rng.random((rows.size, 2)) * (high - low)[:, None]

    centre = np.zeros((n, max_shapes, 2))
    centre[:, 0] = place(np.arange(n), 0)
    for slot in range(1, max_shapes):
        centre[:, slot] = place(np.arange(n), slot)
        # a few rounds of rejection keep most shapes apart; the rest overlap, and the later shape
        # wins in image and mask alike, so the masks stay right either way
        for _ in range(10):
            gap = np.linalg.norm(centre[:, slot, None] - centre[:, :slot], axis=-1)
            clash = (gap < 0.9 * (extent[:, slot, None] + extent[:, :slot])) & used[:, :slot]
            rows = np.flatnonzero(clash.any(axis=1) & used[:, slot])
            if rows.size == 0:
                break
            centre[rows, slot] = place(rows, slot)

    # background: a brightness level, a linear ramp across the image and a faint low-frequency texture
    level = rng.uniform(0.3, 0.7, n)
    grid = np.arange(size) - (size - 1) / 2
    ramp_direction = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    ramp = (np.cos(ramp_direction) * grid[None, None, :] + np.sin(ramp_direction) * grid[None, :, None])
    ramp *= rng.uniform(0, 0.08, n)[:, None, None] / (np.sqrt(2) * (size - 1) / 2)   # |ramp| <= 0.08
    # three waves of amplitude sqrt(2/3) add up to at most sqrt(6): scaled so that |texture| <= 0.04
    texture = 0.04 / np.sqrt(6) * _low_frequency_field(rng, n, size, waves=3, cycles=(1.0, 4.0))
    background = level[:, None, None] + ramp + texture

    # a shape's grey value is uniform on [0.05, 0.95] minus (level - 0.25, level + 0.25): the same
    # distribution for every class, so only the outline tells disc from square from triangle
    gap_start = level[:, None] - 0.30
    spot = rng.uniform(0, 0.4, (n, max_shapes))
    intensity = np.where(spot < gap_start, 0.05 + spot, level[:, None] + 0.25 + spot - gap_start)
    stripe_direction = rng.uniform(0, np.pi, (n, max_shapes, 1, 1))
    stripe_period = rng.uniform(2.5, 5.0, (n, max_shapes, 1, 1))
    stripe_phase = rng.uniform(0, 2 * np.pi, (n, max_shapes, 1, 1))
    pixel_row, pixel_col = np.arange(size)[:, None], np.arange(size)[None, :]
    across = np.cos(stripe_direction) * pixel_col + np.sin(stripe_direction) * pixel_row
    stripes = _STRIPE_AMPLITUDE * np.sin(2 * np.pi * across / stripe_period + stripe_phase)
    fill = intensity[..., None, None] + stripes

    inside = _rasterize_shapes(kind, centre, radius, angle, size)
    image, masks = background.copy(), np.zeros((n, size, size), dtype=np.int64)
    for slot in range(max_shapes):
        image = np.where(inside[:, slot], fill[:, slot], image)
        masks = np.where(inside[:, slot], kind[:, slot, None, None], masks)
    image = image + noise * rng.standard_normal(image.shape)
    radius, angle, intensity = (np.where(used, value, 0.0) for value in (radius, angle, intensity))
    centre = np.where(used[..., None], centre, 0.0)
    geometry = ShapeGeometry(kind, centre, radius, angle, intensity, background.astype(np.float32))
    return image.astype(np.float32)[:, None], masks, geometry


def shapes(n_train: int = 512, n_test: int = 128, size: int = 32, seed: int = 0, noise: float = 0.15,
           max_shapes: int = 3, return_params: bool = False):
    """Grey images with 1 to max_shapes discs, squares and triangles, and their pixel masks.

    Classes: 0 background, 1 disc, 2 square, 3 triangle. Each shape has a random position, rotation
    and size (equal-area radius r ~ U(0.10, 0.17) * size, so the three kinds are equally big); the
    classes are dealt evenly over the images' shapes. Shapes are placed mostly apart; where two
    overlap, the later one covers the earlier in image and mask alike.

    Intensities are in [0, 1] before noise: the background is a level ~ U(0.3, 0.7) plus a linear
    ramp (up to +-0.08) and a faint low-frequency texture (+-0.04); a shape is filled with a grey
    value at least 0.25 away from its image's level, drawn the same way for every class, plus
    stripes (+-0.05) of random direction and period. Then Gaussian pixel noise of std `noise` is
    added, without clipping. Intensity alone does not give the class; the outline does.

    x: (N, 1, size, size) float32, masks: (N, size, size) int64, labels None. Train and test come
    from independent streams of `seed`: the test set does not change with n_train. With
    return_params=True, returns (split, {"train": ShapeGeometry, "test": ShapeGeometry}).
    """
    _check_counts(n_train, n_test, size, min_size=16)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if max_shapes < 1:
        raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
    train_rng, test_rng = _seed_pair(seed)
    x_train, masks_train, geometry_train = _draw_shapes(train_rng, n_train, size, noise, max_shapes)
    x_test, masks_test, geometry_test = _draw_shapes(test_rng, n_test, size, noise, max_shapes)
    split = SegmentationSplit(torch.from_numpy(x_train), torch.from_numpy(masks_train),
                              torch.from_numpy(x_test), torch.from_numpy(masks_test), SHAPE_CLASSES)
    if return_params:
        return split, {"train": geometry_train, "test": geometry_test}
    return split


LESION_CLASSES = ("background", "lesion")
# slower than any lesion: at most 0.8 cycles per scan, so a blob is not one of the field's bumps
_LESION_FIELD_CYCLES = (0.2, 0.8)


def _draw_lesions(rng: np.random.Generator, n: int, size: int, contrast: float, radius: tuple[float, float],
                  noise: float, intensity_spread: float):
    # every random number is drawn whatever the parameters, so two calls that differ only in
    # contrast, noise or intensity_spread see the same scans, blobs and noise
    label = rng.permutation(np.repeat(np.array([0, 1], dtype=np.int64), n // 2))
    field = _low_frequency_field(rng, n, size, waves=4, cycles=_LESION_FIELD_CYCLES)
    pixel_noise = rng.standard_normal((n, size, size))
    half_max_radius = rng.uniform(*radius, n) * size
    centre = half_max_radius[:, None] + rng.random((n, 2)) * (size - 1 - 2 * half_max_radius)[:, None]
    log_gain = rng.uniform(-np.log(3), np.log(3), n)
    offset = rng.uniform(-2, 2, n)

    background_std = math.sqrt(1 + noise ** 2)
    grid = np.arange(size, dtype=np.float64)
    squared_distance = ((grid[None, :, None] - centre[:, 0, None, None]) ** 2
                        + (grid[None, None, :] - centre[:, 1, None, None]) ** 2)
    # Gaussian profile exp(-d^2 / (2 sigma^2)) that falls to half its peak at the half-max radius
    sigma_squared = half_max_radius ** 2 / (2 * np.log(2))
    profile = np.exp(-squared_distance / (2 * sigma_squared[:, None, None])) * label[:, None, None]
    masks = (profile > 0.5).astype(np.int64)
    scan = field + contrast * background_std * profile + noise * pixel_noise
    gain = np.exp(intensity_spread * log_gain)[:, None, None]
    image = intensity_spread * background_std * offset[:, None, None] + gain * scan
    return image.astype(np.float32)[:, None], masks, label


def lesions(n_train: int = 1024, n_test: int = 512, size: int = 16, seed: int = 0, contrast: float = 1.0,
            radius: tuple[float, float] = (0.1, 0.2), noise: float = 0.25,
            intensity_spread: float = 1.0) -> SegmentationSplit:
    """Small noisy "scans", half of which hold one faint round lesion: lesson 08's medical images.

    A scan is  x = offset + gain * (field + contrast * s * profile + noise * z),  where
      field    a smooth random texture: 4 plane waves of 0.2-0.8 cycles per scan, std 1;
      z        pixel noise ~ N(0, 1), so the background's std is s = sqrt(1 + noise^2);
      profile  exp(-|p - c|^2 / (2 sigma^2)), a Gaussian blob of peak 1 whose half-max radius
               r = sigma sqrt(2 ln 2) ~ U(radius) * size, centred at c at least r from every edge;
               zero in scans without a lesion;
      gain     exp(intensity_spread * U(-ln 3, ln 3)): log-uniform over x0.33..x3 by default;
      offset   intensity_spread * U(-2, 2) * s: up to two background stds either way.
    Each scan draws its own gain and offset, as scans from different scanners and patients do, so
    a small batch's mean and variance swing with whichever scans it happens to hold. With
    intensity_spread=0 every scan has gain 1 and offset 0.

    `contrast` is the blob's peak in background stds s (before gain). The default 1.0 keeps a lesion
    faint, a bump no higher than the background's typical swing and well inside the field's range
    across a scan, yet learnable: a three-layer conv net with GroupNorm and global max pooling,
    after 400 Adam steps on batches of 32, gets 80-93 % of the test labels right, by its seed.

    Labels (lesion present) are exactly half 0 and half 1 in train and in test, so n_train and
    n_test must be even. masks: 1 where profile > 1/2 (inside the half-max radius), else 0; all
    zero for label 0. x: (N, 1, size, size) float32, not normalized. class_names
    ("background", "lesion"). Train and test come from independent streams of `seed`.
    """
    _check_counts(n_train, n_test, size, min_size=8)
    if n_train % 2 or n_test % 2:
        raise ValueError(f"n_train and n_test must be even (labels are exactly half 0, half 1), "
                         f"got {n_train}, {n_test}")
    if contrast < 0 or noise < 0 or intensity_spread < 0:
        raise ValueError(f"contrast, noise and intensity_spread must be >= 0, got {contrast}, {noise}, "
                         f"{intensity_spread}")
    if not isinstance(radius, (tuple, list)) or len(radius) != 2:
        raise ValueError(f"radius must be a pair (low, high) of fractions of size, got {radius!r}")
    low, high = radius
    if not 0 < low <= high or size - 1 - 2 * high * size < 0 or low * size < 1:
        raise ValueError(f"radius must be (low, high) fractions of size with 1 / size <= low <= high and a "
                         f"lesion of radius high fitting the image; got {radius} for size {size}")
    parts = []
    for rng, n in zip(_seed_pair(seed), (n_train, n_test)):
        x, masks, label = _draw_lesions(rng, n, size, contrast, (low, high), noise, intensity_spread)
        parts += [torch.from_numpy(x), torch.from_numpy(masks), torch.from_numpy(label)]
    x_train, masks_train, labels_train, x_test, masks_test, labels_test = parts
    return SegmentationSplit(x_train, masks_train, x_test, masks_test, LESION_CLASSES,
                             labels_train=labels_train, labels_test=labels_test)


# ============================================================================= MNIST files on disk
# IDX type codes (the third byte of the magic number) and their big-endian NumPy types
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path) -> np.ndarray:
    """Read one IDX file (the format of MNIST and Fashion-MNIST), plain or gzip-compressed.

    Layout: magic 0x00 0x00 <type> <ndim>, then ndim big-endian uint32 sizes, then the values in
    C order, big-endian. Types: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64. Returns an array of shape (sizes...) in native byte order. A gzip file is
    recognised by its content, whatever its name.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:  # BadGzipFile is an OSError; a cut stream is an EOFError
            raise ValueError(f"{path}: broken gzip data ({error})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header, {len(raw)} bytes")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file, magic starts {raw[:4].hex(' ')} instead of 00 00")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{type_code:02X}; known: "
                         + ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES))
    if ndim == 0:
        raise ValueError(f"{path}: IDX header says 0 dimensions")
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise ValueError(f"{path}: truncated IDX header, {len(raw)} bytes for {ndim} dimensions")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header_bytes
    if found != expected:
        what = "truncated data" if found < expected else "data longer than the header says"
        raise ValueError(f"{path}: {what}: shape {shape} of {dtype.name} needs {expected} bytes, found {found}")
    values = np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


_MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
                "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
# torchvision keeps each dataset in root/<its class name>/raw. Fashion-MNIST and KMNIST use the same
# file names as MNIST, so these folders are only searched for their own kind.
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion": "FashionMNIST"}
_LOOKALIKE_FOLDERS = {"MNIST", "FashionMNIST", "KMNIST", "QMNIST", "EMNIST"}


def _find_mnist_folder(root: Path, kind: str) -> dict[str, Path]:
    """The four files' paths from the first folder that has all of them, plain or .gz."""
    own = root / _TORCHVISION_FOLDER[kind] / "raw"
    others = sorted(folder for folder in root.glob("*/raw")
                    if folder.is_dir() and folder.parent.name not in _LOOKALIKE_FOLDERS)
    searched = [root, own, *others]
    for folder in searched:
        found = {}
        for key, name in _MNIST_FILES.items():
            # plain first: it reads without decompressing
            found[key] = next((folder / file for file in (name, name + ".gz") if (folder / file).is_file()), None)
        if all(found.values()):
            return found
    names = ", ".join(f"{name}[.gz]" for name in _MNIST_FILES.values())
    raise FileNotFoundError(
        f"no {'Fashion-MNIST' if kind == 'fashion' else 'MNIST'} files in any of: "
        + ", ".join(str(folder) for folder in searched)
        + f". Each folder needs all four of {names}. Nothing is downloaded: copy the files there yourself.")


def mnist(root, kind: str = "mnist", images: bool = True, limit: int | tuple[int, int] | None = None) -> Split:
    """MNIST or Fashion-MNIST from IDX files already on disk (never downloaded).

    Looks for train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte (each plain or .gz) in root, then in root/MNIST/raw or
    root/FashionMNIST/raw (torchvision's layout, chosen by kind), then in any other root/*/raw
    except torchvision's other look-alikes (KMNIST, QMNIST, EMNIST); the first folder with all four
    is used. The files of both kinds have the same names, so in root itself, or in a folder of
    another name, kind cannot tell them apart: the files found are read as they are.

    Pixels 0..255 are scaled to x = pixel / 255 in [0, 1]. x: (N, 1, 28, 28) float32, or (N, 784)
    with images=False; y: (N,) int64. The official 60,000 / 10,000 split is kept; limit keeps the
    first `limit` training and test examples (an int for both, or (n_train, n_test)).
    """
    if kind not in _TORCHVISION_FOLDER:
        raise ValueError(f"kind must be 'mnist' or 'fashion', got {kind!r}")
    if limit is None:
        limits = (None, None)
    else:
        limits = (limit, limit) if not isinstance(limit, (tuple, list)) else tuple(limit)
        if (len(limits) != 2 or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                                    for n in limits)):
            raise ValueError(f"limit must be None, a positive int or (n_train, n_test) of positive ints, got {limit!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder. Nothing is downloaded: point root at the folder that "
                                f"holds the {kind} IDX files.")
    files = _find_mnist_folder(root, kind)
    tensors = []
    for part, keep in zip(("train", "test"), limits):
        pixels, labels = read_idx(files[f"{part}_images"]), read_idx(files[f"{part}_labels"])
        if pixels.dtype != np.uint8 or pixels.ndim != 3:
            raise ValueError(f"{files[f'{part}_images']}: expected (N, H, W) unsigned bytes, "
                             f"got {pixels.shape} {pixels.dtype}")
        if labels.ndim != 1 or len(labels) != len(pixels):
            raise ValueError(f"{files[f'{part}_labels']}: expected {len(pixels)} labels, one per image in "
                             f"{files[f'{part}_images'].name}, got shape {labels.shape}")
        pixels, labels = pixels[:keep], labels[:keep]
        x = pixels.astype(np.float32) / 255.0
        x = x.reshape(len(x), 1, *x.shape[1:]) if images else x.reshape(len(x), -1)
        tensors += [torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))]
    return Split(*tensors)


# ============================================================================= scanner variation
def vary_scans(data: Split, spread: float = 1.0, seed: int = 0) -> Split:
    """Give every image of an image split its own global gain and offset, as scans from different
    scanners and patients have (lesson 08):

        x' = gain * x + offset,   gain = exp(spread * U(-1, 1)),   offset = spread * U(-1, 1)

    so gains range over x0.37..x2.7 at spread 1. Labels are unchanged; train and test draw from
    independent streams of seed. spread=0 returns the images unchanged.
    """
    if data.x_train.dim() != 4:
        raise ValueError(f"vary_scans needs images (N, C, H, W), got x_train of shape {tuple(data.x_train.shape)}")
    if not spread >= 0:
        raise ValueError(f"spread must be >= 0, got {spread}")
    streams = np.random.SeedSequence(seed).spawn(2)

    def vary(x, stream):
        rng = np.random.default_rng(stream)
        gain = np.exp(spread * rng.uniform(-1, 1, size=(len(x), 1, 1, 1)))
        offset = spread * rng.uniform(-1, 1, size=(len(x), 1, 1, 1))
        return (x * torch.from_numpy(gain).float() + torch.from_numpy(offset).float()).contiguous()

    return Split(vary(data.x_train, streams[0]), data.y_train, vary(data.x_test, streams[1]), data.y_test)


# ============================================================================= sequences (lesson 11)
SEQUENCE_ORDERS = ("rows", "pixels")


def digit_sequences(split: str = "train", order: str = "rows", test_fraction: float = 0.3,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits of `digits` (same split, same scaling pixel / 16 in [0, 1]) read as sequences.

    order='rows': step t is image row t, x[n, t, j] = image[n, t, j]: 8 steps of 8 features.
    order='pixels': step t is pixel t in row-major order, x[n, t, 0] = image[n, t // 8, t % 8]:
    64 steps of 1 feature, the 8x8 version of Cooijmans et al.'s sequential MNIST.
    split: 'train' or 'test' of digits(test_fraction, seed). Returns x (N, T, F) float32 and
    y (N,) int64.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if order not in SEQUENCE_ORDERS:
        raise ValueError(f"order must be one of {SEQUENCE_ORDERS}, got {order!r}")
    data = digits(test_fraction, seed)
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    # load_digits flattens each image row by row, so both orders are plain reshapes
    steps, features = (8, 8) if order == "rows" else (64, 1)
    return x.reshape(len(x), steps, features).contiguous(), y


def adding_problem(n: int, length: int, seed: int = 0, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Hochreiter & Schmidhuber's adding problem, in the form of Le et al. 2015: n sequences of
    `length` steps with 2 features each.

        x[:, t, 0] = u_t ~ U(0, 1)                      the values
        x[:, t, 1] = 1 at two steps, 0 elsewhere        the markers
        y = sum of u_t over the two marked steps        in [0, 2]

    One marker falls uniformly in the first half (t < length // 2), the other in the second, so
    the net must carry the first value across at least a few steps. Any length >= 2, so a net
    trained at length T can be tested at 2T and 4T. Predicting the constant 1 scores an MSE of
    Var(u + u') = 1/6; that is the bar to beat.

    split: 'train' or 'test', independent streams of seed (as the segmentation generators), so a
    test set never repeats the training set. Returns x (n, length, 2) float32 and y (n,) float32.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f"length must be an int >= 2 (two marked steps), got {length!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = _seed_pair(seed)[0 if split == "train" else 1]
    values = rng.random((n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    markers = np.zeros((n, length))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    # summed from the float32 values the net sees, so the target is exactly reachable
    y = x[rows, first, 0] + x[rows, second, 0]
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))


def pad_sequences(sequences, padding_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack sequences of different lengths into one batch, padded at the end.

    sequences: a list of N tensors (T_i, F), the same F and dtype, T_i >= 1. Returns padded
    (N, T_max, F), with padded[i, t] = sequences[i][t] for t < T_i and padding_value after, and
    lengths (N,) int64, the T_i (what `bnlab.recurrent.LSTM` takes as lengths=).
    """
    sequences = list(sequences)
    if not sequences:
        raise ValueError("pad_sequences needs at least one sequence")
    for i, seq in enumerate(sequences):
        if not isinstance(seq, torch.Tensor) or seq.dim() != 2:
            shape = tuple(seq.shape) if isinstance(seq, torch.Tensor) else type(seq).__name__
            raise ValueError(f"sequence {i} must be a (T, F) tensor, got {shape}")
        if len(seq) < 1:
            raise ValueError(f"sequence {i} is empty; every sequence needs at least one step")
        if seq.shape[1] != sequences[0].shape[1] or seq.dtype != sequences[0].dtype:
            raise ValueError(f"sequence {i} is {tuple(seq.shape)} {seq.dtype}, but sequence 0 is "
                             f"{tuple(sequences[0].shape)} {sequences[0].dtype}: all need the same F and dtype")
    lengths = torch.tensor([len(seq) for seq in sequences], dtype=torch.int64)
    first = sequences[0]
    padded = torch.full((len(sequences), int(lengths.max()), first.shape[1]), padding_value,
                        dtype=first.dtype, device=first.device)
    for i, seq in enumerate(sequences):
        padded[i, :len(seq)] = seq
    return padded, lengths
