"""Lesson 11's sequence data (bnlab.data.digit_sequences, adding_problem, pad_sequences): shapes,
determinism per seed, digit sequences that reassemble scikit-learn's images, adding-problem
targets recomputed here from the markers, and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.data import adding_problem, digit_sequences, digits, pad_sequences


# ============================================================================= digits
@pytest.fixture(scope="module")
def digit_data():
    return {(split, order): digit_sequences(split, order)
            for split in ("train", "test") for order in ("rows", "pixels")}


def test_digit_sequences_shapes_and_labels(digit_data):
    flat = digits()
    for split, (x_flat, y_flat) in (("train", (flat.x_train, flat.y_train)), ("test", (flat.x_test, flat.y_test))):
        x_rows, y_rows = digit_data[split, "rows"]
        x_pixels, y_pixels = digit_data[split, "pixels"]
        n = len(x_flat)
        assert x_rows.shape == (n, 8, 8) and x_pixels.shape == (n, 64, 1)
        assert x_rows.dtype == x_pixels.dtype == torch.float32 and y_rows.dtype == torch.int64
        assert torch.equal(y_rows, y_flat) and torch.equal(y_pixels, y_flat)
        # scaled as digits(): pixel / 16 in [0, 1]
        assert float(x_rows.min()) == 0.0 and float(x_rows.max()) == 1.0
    assert len(digit_data["train", "rows"][0]) + len(digit_data["test", "rows"][0]) == 1797


def test_digit_rows_reassemble_scikit_learns_images(digit_data):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = {(image.astype(np.int64).tobytes(), int(label)) for image, label in zip(bunch.images, bunch.target)}
    for split in ("train", "test"):
        x_rows, y = digit_data[split, "rows"]
        x_pixels, _ = digit_data[split, "pixels"]
        # step t of the rows is image row t; pixel step 8 r + c is pixel (r, c)
        for seq, label in zip(x_rows, y):
            pixels = np.rint(seq.numpy() * 16).astype(np.int64)
            assert (pixels.tobytes(), int(label)) in images
        assert torch.equal(x_pixels[:, :, 0].reshape(-1, 8, 8), x_rows)
        assert torch.equal(x_pixels[:, 8 * 3 + 5, 0], x_rows[:, 3, 5])


def test_digit_sequences_are_deterministic_and_follow_the_split_seed(digit_data):
    again = digit_sequences("test", "rows")
    assert torch.equal(again[0], digit_data["test", "rows"][0])
    other = digit_sequences("test", "rows", seed=1)
    assert not torch.equal(other[0], again[0])


@pytest.mark.parametrize("kwargs, match", [(dict(split="valid"), "split"), (dict(order="columns"), "order")])
def test_digit_sequences_refusals(kwargs, match):
    with pytest.raises(ValueError, match=match):
        digit_sequences(**kwargs)


# ============================================================================= adding problem
@pytest.mark.parametrize("length", [2, 7, 50])
def test_adding_problem_markers_and_targets(length):
    x, y = adding_problem(500, length, seed=3)
    assert x.shape == (500, length, 2) and y.shape == (500,) and x.dtype == y.dtype == torch.float32
    values, markers = x[..., 0].numpy(), x[..., 1].numpy()
    assert set(np.unique(markers)) <= {0.0, 1.0}
    assert np.all(markers.sum(1) == 2)
    assert np.all((values >= 0) & (values < 1))
    half = length // 2
    assert np.all(markers[:, :half].sum(1) == 1) and np.all(markers[:, half:].sum(1) == 1)
    # the target, recomputed from the marked steps
    expected = np.array([values[i][markers[i] == 1].astype(np.float64).sum() for i in range(500)])
    assert np.abs(y.numpy() - expected).max() <= 1e-6


def test_adding_problem_statistics():
    """y = u + u' with u, u' ~ U(0, 1) independent: mean 1, variance 1/6 (the MSE of always answering 1)."""
    _, y = adding_problem(20_000, 10, seed=0)
    # standard errors: 0.41 / sqrt(20000) = 0.003 for the mean, about 0.0012 for the variance
    assert abs(float(y.mean()) - 1.0) < 0.012 and abs(float(y.var()) - 1 / 6) < 0.005


def test_adding_problem_is_deterministic_per_seed_and_split():
    a, b = adding_problem(100, 12, seed=5), adding_problem(100, 12, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for other in (adding_problem(100, 12, seed=6), adding_problem(100, 12, seed=5, split="test")):
        assert not torch.equal(a[0], other[0])


@pytest.mark.parametrize("kwargs, match", [(dict(n=0, length=5), "n must"), (dict(n=5, length=1), "length"),
                                           (dict(n=5, length=5, split="dev"), "split")])
def test_adding_problem_refusals(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adding_problem(**kwargs)


# ============================================================================= padding
def test_pad_sequences():
    g = torch.Generator().manual_seed(0)
    sequences = [torch.randn(n, 3, generator=g) for n in (4, 1, 6)]
    padded, lengths = pad_sequences(sequences)
    assert padded.shape == (3, 6, 3) and lengths.tolist() == [4, 1, 6] and lengths.dtype == torch.int64
    for row, seq in zip(padded, sequences):
        assert torch.equal(row[:len(seq)], seq) and torch.all(row[len(seq):] == 0)
    filled, _ = pad_sequences(sequences, padding_value=-1.0)
    assert torch.all(filled[1, 1:] == -1.0)


@pytest.mark.parametrize("sequences, match", [
    ([], "at least one"),
    ([torch.zeros(3)], "sequence 0"),
    ([torch.zeros(2, 3), torch.zeros(0, 3)], "sequence 1 is empty"),
    ([torch.zeros(2, 3), torch.zeros(2, 4)], "same F"),
    ([torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float64)], "dtype"),
])
def test_pad_sequences_refusals(sequences, match):
    with pytest.raises(ValueError, match=match):
        pad_sequences(sequences)
