"""Segmentation generators (bnlab.data.shapes, lesions) and the MNIST/IDX readers.

Masks are checked against a second rasterization written here from the documented geometry, the
lesion model against its documented formula, and the readers against IDX files written here.
"""

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from bnlab.data import SegmentationSplit, Split, lesions, mnist, read_idx, shapes


# ============================================================================= SegmentationSplit
def tiny_split(**changes):
    parts = dict(x_train=torch.zeros(3, 2, 5, 5), masks_train=torch.zeros(3, 5, 5, dtype=torch.int64),
                 x_test=torch.zeros(2, 2, 5, 5), masks_test=torch.zeros(2, 5, 5, dtype=torch.int64),
                 class_names=["background", "thing", "other"])
    parts.update(changes)
    return SegmentationSplit(**parts)


def test_segmentation_split_properties():
    split = tiny_split()
    assert split.num_classes == 3 and split.in_channels == 2 and split.image_size == 5
    assert split.class_names == ("background", "thing", "other")
    assert split.labels_train is None and split.labels_test is None


@pytest.mark.parametrize("changes, match", [
    (dict(masks_train=torch.zeros(3, 5, 5, dtype=torch.int32)), "masks_train"),
    (dict(masks_test=torch.zeros(2, 4, 5, dtype=torch.int64)), "masks_test"),
    (dict(x_train=torch.zeros(3, 2, 5, 5, dtype=torch.float64)), "x_train"),
    (dict(x_test=torch.zeros(2, 5, 5)), "x_test"),
    (dict(x_train=torch.zeros(3, 2, 5, 6), masks_train=torch.zeros(3, 5, 6, dtype=torch.int64)), "square"),
    (dict(x_test=torch.zeros(2, 1, 5, 5)), "differ"),
    (dict(labels_train=torch.zeros(4, dtype=torch.int64)), "labels_train"),
    (dict(class_names=("background",)), "class_names"),
])
def test_segmentation_split_rejects_inconsistent_parts(changes, match):
    with pytest.raises(ValueError, match=match):
        tiny_split(**changes)


# ============================================================================= shapes
TRIANGLE_CIRCUMRADIUS = math.sqrt(4 * math.pi / (3 * math.sqrt(3)))  # per unit equal-area radius


def polygon(centre, radius, angle, corners):
    """Vertices (x, y) = (col, row) of a regular polygon, read off the ShapeGeometry docstring."""
    if corners == 4:
        circumradius, first = radius * math.sqrt(math.pi) / math.sqrt(2), angle + math.pi / 4
        step = math.pi / 2
    else:
        circumradius, first, step = radius * TRIANGLE_CIRCUMRADIUS, angle, 2 * math.pi / 3
    row, col = centre
    return [(col + circumradius * math.cos(first + k * step), row + circumradius * math.sin(first + k * step))
            for k in range(corners)]


def inside_convex(vertices, x, y):
    """Point-in-convex-polygon by the sign of every edge's cross product (either orientation)."""
    crosses = [(bx - ax) * (y - ay) - (by - ay) * (x - ax)
               for (ax, ay), (bx, by) in zip(vertices, vertices[1:] + vertices[:1])]
    return np.all([c >= 0 for c in crosses], axis=0) | np.all([c <= 0 for c in crosses], axis=0)


def paint(geometry, n, size):
    """(mask, top slot) of image n, painted slot by slot from the returned geometry."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    mask = np.zeros((size, size), dtype=np.int64)
    top = np.full((size, size), -1)
    for slot, kind in enumerate(geometry.kind[n]):
        if kind == 0:
            continue
        centre, radius, angle = geometry.centre[n, slot], geometry.radius[n, slot], geometry.angle[n, slot]
        if kind == 1:
            covered = (y - centre[0]) ** 2 + (x - centre[1]) ** 2 <= radius ** 2
        else:
            covered = inside_convex(polygon(centre, radius, angle, 4 if kind == 2 else 3), x, y)
        mask[covered], top[covered] = kind, slot
    return mask, top


@pytest.fixture(scope="module")
def default_shapes():
    return shapes(return_params=True)


def test_shapes_is_deterministic_per_seed():
    a, b, c = (shapes(n_train=8, n_test=4, seed=seed) for seed in (5, 5, 6))
    for name in ("x_train", "masks_train", "x_test", "masks_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert not torch.equal(getattr(a, name), getattr(c, name)), name
    # the test set comes from its own stream: asking for more training images leaves it alone
    more = shapes(n_train=20, n_test=4, seed=5)
    assert torch.equal(more.x_test, a.x_test) and torch.equal(more.masks_test, a.masks_test)


def test_shapes_shapes_and_dtypes():
    split = shapes(n_train=6, n_test=4, size=24, seed=1)
    assert split.x_train.shape == (6, 1, 24, 24) and split.x_test.shape == (4, 1, 24, 24)
    assert split.masks_train.shape == (6, 24, 24) and split.masks_test.shape == (4, 24, 24)
    assert split.x_train.dtype == torch.float32 and split.masks_train.dtype == torch.int64
    assert split.class_names == ("background", "disc", "square", "triangle") and split.num_classes == 4
    assert split.in_channels == 1 and split.image_size == 24
    assert split.labels_train is None and split.labels_test is None
    assert set(torch.unique(split.masks_train).tolist()) <= {0, 1, 2, 3}


def test_shapes_masks_match_an_independent_rasterization():
    split, params = shapes(n_train=64, n_test=16, seed=2, return_params=True)
    for part, n_images in (("train", 64), ("test", 16)):
        geometry, masks = params[part], getattr(split, f"masks_{part}").numpy()
        for n in range(n_images):
            expected, _ = paint(geometry, n, 32)
            np.testing.assert_array_equal(masks[n], expected, err_msg=f"{part} image {n}")
    # each image has 1 to 3 shapes, and every drawn shape lies inside the image
    counts = (params["train"].kind > 0).sum(1)
    assert counts.min() == 1 and counts.max() == 3


def test_shapes_paint_the_image_where_the_mask_says():
    """Without noise: the background is untouched outside the mask; inside, a pixel shows its top
    shape's grey value give or take the stripes (+-0.05), and that stands out from the background."""
    split, params = shapes(n_train=48, n_test=2, noise=0.0, seed=3, return_params=True)
    geometry, x = params["train"], split.x_train[:, 0].numpy().astype(np.float64)
    assert x.min() >= 0 and x.max() <= 1
    for n in range(48):
        _, top = paint(geometry, n, 32)
        outside = top < 0
        np.testing.assert_allclose(x[n][outside], geometry.background[n][outside], atol=1e-6)
        intensity = geometry.intensity[n][top[~outside]]
        assert np.all(np.abs(x[n][~outside] - intensity) <= 0.05 + 1e-6)
        # grey value >= 0.25 from the level; background within 0.08 + 0.04 of it; stripes 0.05
        assert np.all(np.abs(x[n][~outside] - geometry.background[n][~outside]) >= 0.25 - 0.08 - 0.04 - 0.05 - 1e-6)


def test_shapes_classes_are_balanced(default_shapes):
    split, params = default_shapes
    for part in ("train", "test"):
        masks = getattr(split, f"masks_{part}")
        foreground = masks[masks > 0]
        share = torch.bincount(foreground, minlength=4)[1:].double() / foreground.numel()
        assert share.min() > 0.25, (part, share)   # a third each, give or take overlaps
        images_with = torch.stack([(masks == k).flatten(1).any(1).sum() for k in (1, 2, 3)]).double()
        assert images_with.min() > 0.85 * images_with.mean(), (part, images_with)
        # the classes are dealt over the shapes: equal counts to within one
        drawn = np.bincount(params[part].kind.ravel(), minlength=4)[1:]
        assert drawn.max() - drawn.min() <= 1


def test_shapes_intensity_does_not_tell_the_class(default_shapes):
    """A shape's grey value (which its pixels show, see the test above) is no better than a coin
    with three sides: the best rule 'grey-value bin -> class' stays near chance."""
    _, params = default_shapes
    geometry = params["train"]
    drawn = geometry.kind > 0
    kind, intensity = geometry.kind[drawn], geometry.intensity[drawn]
    bins = np.digitize(intensity, np.quantile(intensity, np.linspace(0, 1, 9)[1:-1]))
    best = sum(np.bincount(kind[bins == b], minlength=4).max() for b in np.unique(bins))
    assert best / kind.size < 0.40
    assert np.ptp([intensity[kind == k].mean() for k in (1, 2, 3)]) < 0.05 and intensity.std() > 0.2
    # shapes are brighter than their background about as often as darker
    brighter = intensity > geometry.background.mean(axis=(1, 2))[:, None].repeat(drawn.shape[1], 1)[drawn]
    assert 0.35 < brighter.mean() < 0.65


@pytest.mark.parametrize("sizes", [(512, 128), (32, 32)])
def test_shapes_train_and_test_are_different_images(default_shapes, sizes):
    """No test image is a copy of a training image, not even when both sets are equally large."""
    split = default_shapes[0] if sizes == (512, 128) else shapes(*sizes)
    closest = torch.cdist(split.x_test.flatten(1), split.x_train.flatten(1)).min(dim=1).values
    assert closest.min() > 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=12), "size"), (dict(n_train=1), "n_train"), (dict(n_test=0), "n_test"),
    (dict(noise=-0.1), "noise"), (dict(max_shapes=0), "max_shapes"),
])
def test_shapes_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shapes(**kwargs)


# ============================================================================= lesions
@pytest.fixture(scope="module")
def default_lesions():
    return lesions()


def test_lesions_is_deterministic_per_seed():
    a, b, c = lesions(16, 8, seed=5), lesions(16, 8, seed=5), lesions(16, 8, seed=6)
    for name in ("x_train", "masks_train", "labels_train", "x_test", "masks_test", "labels_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.x_test, c.x_test)
    assert torch.equal(lesions(30, 8, seed=5).x_test, a.x_test)


def test_lesions_shapes_dtypes_and_labels(default_lesions):
    split = default_lesions
    assert split.x_train.shape == (1024, 1, 16, 16) and split.x_test.shape == (512, 1, 16, 16)
    assert split.masks_train.shape == (1024, 16, 16) and split.x_train.dtype == torch.float32
    assert split.masks_train.dtype == torch.int64 and split.labels_train.dtype == torch.int64
    assert split.class_names == ("background", "lesion") and split.num_classes == 2
    for part in ("train", "test"):
        labels, masks = getattr(split, f"labels_{part}"), getattr(split, f"masks_{part}")
        assert labels.sum().item() * 2 == len(labels)            # exactly half have a lesion
        assert torch.equal(masks.flatten(1).any(1).long(), labels)
        assert set(torch.unique(masks).tolist()) == {0, 1}
    assert not torch.equal(split.labels_train[:512], split.labels_test)  # shuffled, not a pattern


def test_lesion_mask_is_the_blob_above_half_its_peak():
    """Everything but the blob is drawn whatever the contrast, so the difference of two calls is the
    blob, contrast * s * profile (gain 1 with intensity_spread=0): where it exceeds half of its peak
    contrast * s is the mask, scan by scan. The peak sits at the blob's centre, between pixels."""
    contrast, noise = 1.5, 0.25
    s = math.sqrt(1 + noise ** 2)
    kwargs = dict(n_train=64, n_test=8, seed=4, noise=noise, intensity_spread=0.0)
    split, without = lesions(contrast=contrast, **kwargs), lesions(contrast=0.0, **kwargs)
    blob = (split.x_train - without.x_train)[:, 0].double()
    labels = split.labels_train.bool()
    assert torch.equal(split.masks_train, without.masks_train) and labels.sum() == 32
    assert blob[~labels].abs().max() < 1e-5
    half = 0.5 * contrast * s
    decided = (blob - half).abs() > 1e-4          # float32 rounding right at the rim
    assert torch.equal(split.masks_train[decided], (blob > half).long()[decided])
    # the grid gets close to the peak: the nearest pixel is within 0.71 px of the centre
    peak = blob.flatten(1).max(1).values[labels]
    sigma_min = 0.1 * 16 / math.sqrt(2 * math.log(2))
    assert peak.max() <= contrast * s + 1e-5
    assert peak.min() >= contrast * s * math.exp(-0.5 / (2 * sigma_min ** 2)) - 1e-5
    # scanners change the intensities, not where the lesions are
    assert torch.equal(lesions(contrast=contrast, **{**kwargs, "intensity_spread": 1.0}).masks_train,
                       split.masks_train)


def test_lesion_areas_follow_the_radius_range(default_lesions):
    masks, labels = default_lesions.masks_train, default_lesions.labels_train.bool()
    area = masks.flatten(1).sum(1)[labels].double()
    low, high = 0.1 * 16, 0.2 * 16
    mean_squared_radius = (high ** 3 - low ** 3) / (3 * (high - low))
    assert area.mean().item() == pytest.approx(math.pi * mean_squared_radius, rel=0.1)
    assert area.min() >= 3 and area.max() <= math.pi * (high + 0.71) ** 2
    # a wider radius range gives bigger lesions
    wide = lesions(64, 8, seed=0, radius=(0.2, 0.3))
    assert wide.masks_train.flatten(1).sum(1)[wide.labels_train.bool()].double().mean() > area.mean()


def test_each_scan_has_its_own_gain_and_offset():
    """x = offset + gain * scan: a scan with intensity_spread=1 is an exact affine map of the same
    scan with intensity_spread=0, with gain in [1/3, 3] and |offset| <= 2 background stds."""
    noise = 0.25
    varied, same = lesions(256, 8, seed=7, noise=noise), lesions(256, 8, seed=7, noise=noise, intensity_spread=0.0)
    x1, x0 = varied.x_train.flatten(1).double().numpy(), same.x_train.flatten(1).double().numpy()
    gains, offsets = [], []
    for a, b in zip(x0, x1):
        gain, offset = np.polyfit(a, b, 1)
        np.testing.assert_allclose(offset + gain * a, b, atol=1e-4)
        gains.append(gain), offsets.append(offset)
    gains, offsets = np.array(gains), np.array(offsets) / math.sqrt(1 + noise ** 2)
    assert gains.min() >= 1 / 3 - 1e-4 and gains.max() <= 3 + 1e-4
    assert gains.min() < 0.4 and gains.max() > 2.5            # drawn widely, log-uniform
    assert abs(np.median(np.log(gains))) < 0.2
    assert np.abs(offsets).max() <= 2 + 1e-4 and np.abs(offsets).max() > 1.8
    # which is what makes a small batch's statistics swing: per-scan means differ by whole stds
    assert varied.x_train.mean((1, 2, 3)).std() > 2 * same.x_train.mean((1, 2, 3)).std()


@pytest.mark.parametrize("sizes", [(1024, 512), (64, 64)])
def test_lesions_train_and_test_are_different_images(default_lesions, sizes):
    split = default_lesions if sizes == (1024, 512) else lesions(*sizes)
    assert torch.cdist(split.x_test.flatten(1), split.x_train.flatten(1)).min() > 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_train=1), "n_train"), (dict(n_test=7), "even"), (dict(n_train=101), "even"),
    (dict(size=6), "size"), (dict(contrast=-1.0), "contrast"), (dict(noise=-0.5), "noise"),
    (dict(intensity_spread=-1.0), "intensity_spread"), (dict(radius=(0.3, 0.1)), "radius"),
    (dict(radius=(0.2, 0.6)), "radius"), (dict(radius=(0.01, 0.1)), "radius"), (dict(radius=0.2), "radius"),
])
def test_lesions_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lesions(**kwargs)


# ============================================================================= IDX files
IDX_TYPES = [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32),
             (0x0D, np.float32), (0x0E, np.float64)]


def idx_bytes(array, type_code):
    """An IDX file's bytes, written from the format's definition (not from bnlab's reader)."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, type_code=0x08, compress=None):
    data = idx_bytes(np.asarray(array), type_code)
    compress = str(path).endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("type_code, dtype", IDX_TYPES)
@pytest.mark.parametrize("name", ["values.idx", "values.idx.gz"])
def test_read_idx_round_trips_every_type(tmp_path, type_code, dtype, name):
    rng = np.random.default_rng(type_code)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(5, 4, 3), endpoint=True).astype(dtype)
    else:
        array = rng.normal(scale=1e3, size=(5, 4, 3)).astype(dtype)
    loaded = read_idx(write_idx(tmp_path / name, array, type_code))
    assert loaded.dtype == dtype and loaded.dtype.isnative and loaded.shape == (5, 4, 3)
    np.testing.assert_array_equal(loaded, array)


def test_read_idx_one_dimension_and_gzip_by_content(tmp_path):
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "labels", labels)), labels)
    # decompressed by what the bytes are, not by the file name
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "packed", labels, compress=True)), labels)


def broken_files():
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)
    return {
        "magic": (b"\x01\x00" + good[2:], "not an IDX file"),
        "type": (good[:2] + b"\x0a" + good[3:], "unknown IDX data type 0x0A"),
        "short": (good[:3], "truncated IDX header"),
        "dims": (good[:10], "truncated IDX header"),
        "zero_dims": (b"\x00\x00\x08\x00", "0 dimensions"),
        "truncated": (good[:-1], "truncated data"),
        "long": (good + b"\x00", "longer than the header says"),
        "bad_gzip": (gzip.compress(good)[:-12], "gzip"),
    }


@pytest.mark.parametrize("case", list(broken_files()))
def test_read_idx_names_the_file_and_the_problem(tmp_path, case):
    content, problem = broken_files()[case]
    path = tmp_path / f"{case}-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nothing-here")


# ----------------------------------------------------------------------------- mnist
NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def fake_mnist(folder, seed=0, n_train=5, n_test=3, size=28, gz=False):
    """Write the four files with random pixels (including 0 and 255) and labels 0-9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train_images": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8)}
    arrays["train_images"][0, 0, :2] = [0, 255]
    for key, array in arrays.items():
        write_idx(folder / (NAMES[key] + (".gz" if gz else "")), array)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_scales_and_shapes(tmp_path, gz):
    arrays = fake_mnist(tmp_path, gz=gz)
    split = mnist(tmp_path)
    assert isinstance(split, Split)
    assert split.x_train.shape == (5, 1, 28, 28) and split.x_test.shape == (3, 1, 28, 28)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    np.testing.assert_allclose(split.x_train.numpy()[:, 0], arrays["train_images"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(split.x_test.numpy()[:, 0], arrays["test_images"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(split.y_train.numpy(), arrays["train_labels"])
    np.testing.assert_array_equal(split.y_test.numpy(), arrays["test_labels"])
    assert split.x_train.min() == 0 and split.x_train.max() == 1
    flat = mnist(tmp_path, images=False)
    assert flat.x_train.shape == (5, 784) and torch.equal(flat.x_train, split.x_train.reshape(5, 784))


def test_mnist_limit(tmp_path):
    fake_mnist(tmp_path, n_train=6, n_test=4, size=4)
    full = mnist(tmp_path)
    both = mnist(tmp_path, limit=2)
    assert torch.equal(both.x_train, full.x_train[:2]) and torch.equal(both.y_test, full.y_test[:2])
    apart = mnist(tmp_path, limit=(5, 1))
    assert len(apart.x_train) == 5 and len(apart.y_train) == 5 and len(apart.x_test) == 1
    assert len(mnist(tmp_path, limit=100).x_train) == 6   # a limit above the size keeps everything
    for bad in (0, -1, (2,), (1, 0), 1.5, True):
        with pytest.raises(ValueError, match="limit"):
            mnist(tmp_path, limit=bad)


def test_mnist_finds_the_torchvision_layout_by_kind(tmp_path):
    digits = fake_mnist(tmp_path / "MNIST" / "raw", seed=1, gz=True)
    fashion = fake_mnist(tmp_path / "FashionMNIST" / "raw", seed=2, gz=True)
    np.testing.assert_array_equal(mnist(tmp_path).y_train.numpy(), digits["train_labels"])
    np.testing.assert_array_equal(mnist(tmp_path, kind="fashion").y_train.numpy(), fashion["train_labels"])


def test_mnist_does_not_take_the_other_kind(tmp_path):
    fake_mnist(tmp_path / "FashionMNIST" / "raw")
    with pytest.raises(FileNotFoundError):
        mnist(tmp_path, kind="mnist")
    assert len(mnist(tmp_path, kind="fashion").x_train) == 5


def test_mnist_searches_other_raw_folders(tmp_path):
    arrays = fake_mnist(tmp_path / "my_copy" / "raw", size=4)
    np.testing.assert_array_equal(mnist(tmp_path).y_test.numpy(), arrays["test_labels"])


def test_mnist_missing_files_say_where_and_that_nothing_is_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="downloaded") as error:
        mnist(tmp_path)
    assert str(tmp_path) in str(error.value) and str(tmp_path / "MNIST" / "raw") in str(error.value)
    # three of the four files are not enough
    fake_mnist(tmp_path, size=4)
    (tmp_path / NAMES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="downloaded"):
        mnist(tmp_path / "no-such-folder")


def test_mnist_rejects_inconsistent_files(tmp_path):
    fake_mnist(tmp_path, size=4)
    write_idx(tmp_path / NAMES["train_labels"], np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte"):
        mnist(tmp_path)
    fake_mnist(tmp_path, size=4)
    write_idx(tmp_path / NAMES["test_images"], np.zeros((3, 4, 4), dtype=np.float32), 0x0D)
    with pytest.raises(ValueError, match="unsigned bytes"):
        mnist(tmp_path)


def test_mnist_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        mnist(tmp_path, kind="kmnist")
