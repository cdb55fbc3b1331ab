"""bnlab.checks: check / check_close / rel_error / numerical_gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bnlab.checks import CheckFailed, check, check_close, mask_measurements, numerical_gradient, rel_error


# ----------------------------------------------------------------------------- check
def test_check_prints_the_claim_when_true(capsys):
    check(1 + 1 == 2, "arithmetic works", a=1)
    assert capsys.readouterr().out == "✓ arithmetic works\n"


def test_check_raises_with_claim_and_numbers_when_false(capsys):
    with pytest.raises(CheckFailed) as info:
        check(0.25 > 0.5, "BN is far ahead", acc_bn=0.25, steps=200, name="bn")
    msg = str(info.value)
    assert "BN is far ahead" in msg
    assert "acc_bn=0.25" in msg and "steps=200" in msg and "name='bn'" in msg
    assert capsys.readouterr().out == ""  # nothing printed on failure


def test_check_failed_is_an_assertion_error():
    """So plain pytest / nbval machinery treats a failed claim as a failed assertion."""
    assert issubclass(CheckFailed, AssertionError)
    with pytest.raises(AssertionError):
        check(False, "nope")


def test_check_formats_floats_compactly():
    with pytest.raises(CheckFailed, match=r"err=1\.23457e-07"):
        check(False, "small", err=1.2345678e-7)


def test_check_accepts_numpy_and_torch_booleans(capsys):
    check(np.bool_(True), "numpy bool")
    check(torch.tensor(True), "torch bool")
    with pytest.raises(CheckFailed):
        check(torch.tensor(False), "torch false")
    assert capsys.readouterr().out.count("✓") == 2


# ----------------------------------------------------------------------------- check_close
def test_check_close_passes_at_and_fails_beyond_tolerance(capsys):
    """The difference 0.5 is exact in binary, so the boundary case is not a rounding accident."""
    check_close(np.array([1.0, 2.0]), np.array([1.5, 2.0]), "at tolerance", atol=0.5)
    assert "✓ at tolerance" in capsys.readouterr().out
    with pytest.raises(CheckFailed, match=r"just beyond.*max_difference=0\.5"):
        check_close(np.array([1.0, 2.0]), np.array([1.5, 2.0]), "just beyond", atol=0.4999)


def test_check_close_prints_the_measured_difference_apart_from_the_tolerance(capsys):
    check_close(np.array([1.0, 2.0]), np.array([1.25, 2.0]), "close", atol=0.5)
    line = capsys.readouterr().out.strip()
    claim, _, measured = line.partition("[measured:")
    assert "0.5" in claim and "0.25" not in claim       # the tolerance belongs to the claim ...
    assert "0.25" in measured and "0.5" not in measured   # ... the measured difference does not


def test_check_shows_measured_numbers_only_when_asked(capsys):
    check(True, "plain claim")
    check(True, "claim with a measurement", measured={"accuracy": 0.953})
    plain, shown = capsys.readouterr().out.splitlines()
    assert plain == "✓ plain claim"
    assert shown.startswith("✓ claim with a measurement") and "accuracy=0.953" in shown
    with pytest.raises(CheckFailed, match="accuracy=0.5"):
        check(False, "failing claim", measured={"accuracy": 0.5})


def test_check_close_default_tolerance_is_tight():
    check_close([1.0], [1.0 + 1e-11], "tiny difference")
    with pytest.raises(CheckFailed):
        check_close([1.0], [1.0 + 1e-9], "too big for 1e-10")


def test_check_close_takes_torch_tensors():
    check_close(torch.tensor([1.0, 2.0], dtype=torch.float64), np.array([1.0, 2.0]), "torch vs numpy")
    t = torch.ones(3, requires_grad=True) * 2  # a tensor that needs detaching
    check_close(t, np.full(3, 2.0), "grad tensor")


@pytest.mark.parametrize("a_shape,b_shape", [((3,), (1, 3)), ((3,), ()), ((2, 3), (3, 2)), ((1,), (3,))])
def test_check_close_rejects_shape_mismatch(a_shape, b_shape):
    """No broadcasting: a (3,) result must not 'equal' a scalar or a (1, 3) array."""
    with pytest.raises(ValueError, match="shapes differ"):
        check_close(np.ones(a_shape), np.ones(b_shape), "shapes")


# ----------------------------------------------------------------------------- rel_error
@pytest.mark.parametrize("x,y,expected", [
    ([1.0, 2.0], [1.0, 3.0], 0.2),          # max(0 / 2, 1 / 5)
    ([2.0], [-2.0], 1.0),                   # 4 / 4
    ([0.0, 4.0], [0.0, 4.0], 0.0),          # identical, zeros included
    ([0.0], [1e-9], 0.1),                   # 1e-9 / max(1e-8, 1e-9): the floor applies
    ([[1.0, -1.0], [3.0, 5.0]], [[1.5, -1.0], [3.0, 4.0]], 0.2),  # max(0.5 / 2.5, 1 / 9)
])
def test_rel_error_known_values(x, y, expected):
    assert rel_error(np.array(x), np.array(y)) == pytest.approx(expected, rel=1e-12)


def test_rel_error_is_symmetric_and_takes_tensors():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([1.1, 2.0, 2.5])
    assert rel_error(a, b) == rel_error(b, a)
    assert rel_error(torch.tensor(a), b) == rel_error(a, b)


def test_rel_error_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.ones(3), np.ones((1, 3)))


# ----------------------------------------------------------------------------- numerical_gradient
def test_numerical_gradient_of_cube():
    """f(x) = x**3 elementwise: dL/dx = 3 x^2 * dout. Centred differences are off by h^2 * dout
    for a cubic (1e-10 here), plus rounding."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4))
    dout = rng.normal(size=(3, 4))
    grad = numerical_gradient(lambda v: v**3, x, dout)
    assert grad.shape == x.shape
    assert np.max(np.abs(grad - 3 * x**2 * dout)) < 1e-8


def test_numerical_gradient_of_matrix_product():
    """f(x) = A @ x (not elementwise): dL/dx = A.T @ dout."""
    rng = np.random.default_rng(1)
    a, x, dout = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    grad = numerical_gradient(lambda v: a @ v, x, dout)
    assert np.max(np.abs(grad - a.T @ dout)) < 1e-8


def test_numerical_gradient_restores_x():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 2))
    before = x.copy()
    numerical_gradient(lambda v: np.sin(v), x, np.ones_like(x))
    assert np.array_equal(x, before)


def test_numerical_gradient_sees_the_perturbed_x():
    """f is called on x itself (perturbed in place): one entry at a time, by +h then -h."""
    x = np.zeros(3)
    seen = []

    def f(v):
        seen.append(v.copy())
        return v

    grad = numerical_gradient(f, x, np.array([1.0, 2.0, 3.0]), h=0.5)
    assert np.allclose(grad, [1.0, 2.0, 3.0])
    assert len(seen) == 6
    assert np.array_equal(seen[0], [0.5, 0, 0]) and np.array_equal(seen[1], [-0.5, 0, 0])


def test_numerical_gradient_rejects_integer_x():
    with pytest.raises(ValueError, match="floating-point"):
        numerical_gradient(lambda v: v, np.arange(3), np.ones(3))


# ----------------------------------------------------------------------------- mask_measurements
def test_mask_keeps_claim_lines_exactly():
    text = "✓ BN is above 90% from batch 8 up, and below 50% at batch 2\n  ✓ indented claim 1e-10"
    assert mask_measurements(text) == text


@pytest.mark.parametrize("committed,now", [
    ("with BN         0.232  0.909  0.952", "with BN         0.126  0.904  0.961"),
    ("input mean per channel: [-0.08 -5.07 48.25]", "input mean per channel: [ 0.12  -5.1  148.3 ]"),
    ("first/last 2.5e-18, 1.4e-18", "first/last 3e-17, 1.45e-18"),
    ("drift 0.949, with BN 0.115 (8.3x)", "drift 0.95, with BN 0.1 (9.5x)"),
    ("   without BN   0.955   0.104", "without BN 0.955 NaN"),       # a run that diverged this time
    ("runs:   0%|          | 0/12 [00:00<?, ?it/s]", "runs: 0%| | 0/20 [00:00<?, ?it/s]"),
    ("mean +0.000 -> -0.013", "mean -0.000 ->  0.013"),             # signs and the padding they move
    ("<Figure size 550x320 with 1 Axes>", "<Figure size 640x480 with 2 Axes>"),
])
def test_mask_ignores_what_measurements_change(committed, now):
    assert mask_measurements(committed) == mask_measurements(now)


@pytest.mark.parametrize("committed,now", [
    ("test accuracy 0.953", "train accuracy 0.953"),                # reworded
    ("test accuracy 0.953", "test accuracy 0.953 0.95"),            # a number more
    ("with BN 0.232\nwithout BN 0.1", "with BN 0.232"),             # a line fewer
    ("with BN 0.232", "with BN 0.232\nextra"),                      # a line more
    ("✓ BN reaches 85 % by step 50", "✓ BN reaches 80 % by step 50"),  # a claim's own number
    ("✓ BN reaches 85 %", "BN reaches 85 %"),                       # a claim line that is no claim now
    ("lr 0.1: 0.957", "lr 0.1: 0.957 (infinite loss)"),
])
def test_mask_still_sees_what_changes_the_story(committed, now):
    assert mask_measurements(committed) != mask_measurements(now)


def test_mask_ignores_the_measured_part_of_a_claim_but_not_the_claim():
    committed = "✓ x matches y (tolerance: max |difference| <= 1e-10)  [measured: max_difference=2.22045e-16]"
    assert mask_measurements(committed) == mask_measurements(committed.replace("2.22045e-16", "0"))
    assert mask_measurements(committed) != mask_measurements(committed.replace("1e-10", "1e-09"))
    assert mask_measurements(committed) != mask_measurements(committed.replace("x matches", "x equals"))


def test_mask_turns_each_number_into_one_mark():
    assert mask_measurements("accuracy 0.953 at step 300, loss 1.2e-3") == "accuracy#at step#, loss#"
    assert mask_measurements("hidden3: [-0.52 0.48]") == "hidden#: [##]"
    assert mask_measurements("info 12 and nan, not nano") == "info#and#, not nano"
