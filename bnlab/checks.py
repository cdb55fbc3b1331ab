"""Checks for the claims a lesson makes, and the gradient-checking tools of lesson 02.

``check`` prints ``✓ claim`` or raises ``CheckFailed`` with the numbers behind the claim, so a
notebook whose result changes fails under nbval instead of silently telling a story that is no longer true.
``mask_measurements`` is the other half of that contract: what nbval compares of a lesson's output.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["CheckFailed", "check", "check_close", "rel_error", "numerical_gradient", "mask_measurements"]


class CheckFailed(AssertionError):
    """A lesson's claim does not hold for the numbers it was run with."""


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


MEASURED = "  [measured: "


def _details(numbers: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in numbers.items())


def check(condition, claim: str, measured: dict | None = None, **numbers) -> None:
    """Print ``✓ claim`` when condition is true; otherwise raise CheckFailed showing ``numbers``.

    check(acc_bn > acc_plain + 0.3, "BN is far ahead after 200 steps", acc_bn=acc_bn, acc_plain=acc_plain)

    measured: numbers shown on the ✓ line too, after the claim: ``✓ claim  [measured: max_difference=2e-16]``.
    They are what was measured this time, not part of the claim: nbval masks their digits.
    """
    if not bool(condition):
        detail = _details({**(measured or {}), **numbers})
        raise CheckFailed(f"✗ {claim}" + (f"  [{detail}]" if detail else ""))
    print(f"✓ {claim}" + (f"{MEASURED}{_details(measured)}]" if measured else ""))


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensors, without importing torch here
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def check_close(actual, expected, claim: str, atol: float = 1e-10) -> None:
    """check that max |actual - expected| <= atol (shapes must match exactly; nothing broadcasts).

    Prints the tolerance as part of the claim and the measured max difference after it:
    ``✓ claim (tolerance: max |difference| <= 1e-10)  [measured: max_difference=2.22045e-16]``.
    """
    a, e = _as_numpy(actual), _as_numpy(expected)
    if a.shape != e.shape:
        raise ValueError(f"check_close: shapes differ, {a.shape} vs {e.shape}")
    err = float(np.max(np.abs(a - e))) if a.size else 0.0
    check(err <= atol, f"{claim} (tolerance: max |difference| <= {atol:g})", measured={"max_difference": err})


def rel_error(x, y) -> float:
    """max |x - y| / max(1e-8, |x| + |y|): the relative error gradient checks report (CS231n's)."""
    x, y = _as_numpy(x), _as_numpy(y)
    if x.shape != y.shape:
        raise ValueError(f"rel_error: shapes differ, {x.shape} vs {y.shape}")
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def numerical_gradient(f, x: np.ndarray, dout: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Centred finite differences of L(x) = sum(f(x) * dout) with respect to x.

    dL/dx_i ~ (L(x + h e_i) - L(x - h e_i)) / (2h), error O(h^2). x is perturbed in place and restored.
    Use float64: in float32, h = 1e-5 is below the rounding error of f.
    """
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"numerical_gradient needs a floating-point x, got {x.dtype}")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        plus = np.sum(f(x) * dout)
        x[i] = old - h
        minus = np.sum(f(x) * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
        it.iternext()
    return grad


# A measured value as lessons print it: 0.953, -5.07, 1.3e-10, 25., 12%, 0/400, and nan / inf, which a
# diverged run prints where a converged one prints a number. Letters around nan/inf make it a word.
_MEASURED = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?<![A-Za-z])(?:nan|inf)(?![A-Za-z])",
                       re.IGNORECASE)
_AROUND_MASK = re.compile(r"\s*#\s*")
_SPACES = re.compile(r"[ \t]+")


def mask_measurements(text: str) -> str:
    """What nbval compares of a lesson's output: ``✓`` lines exactly (but for the numbers of their
    ``[measured: ...]`` part), every other line with its numbers masked.

    A lesson's contract is its claims. ``check`` raises when one fails, and a ``✓ claim`` line says
    which claims a cell makes, so it must match the committed notebook character for character. The
    digits of a measured number (an accuracy, a gradient norm, a time) differ between torch versions,
    BLAS builds and machines, and are not part of the contract: on every other line each number
    becomes ``#``. The space around a number (column padding that follows its width) is dropped and
    other runs of spaces count as one, so a table still has to keep its rows, columns and words:
    a line that appears, disappears or is reworded is still a difference.

        "with BN         0.232  0.909"        ->  "with BN##"
        "lr 1: NaN @ step 4"                  ->  "lr#:#@ step#"
        "✓ BN is above 90% from batch 8 up"   ->  unchanged
        "✓ x equals y (tolerance: max |difference| <= 1e-10)  [measured: max_difference=3e-16]"
            ->  "✓ x equals y (tolerance: max |difference| <= 1e-10)  [measured: max_difference=#]"
    """
    lines = []
    for line in text.split("\n"):
        if not line.lstrip().startswith("✓"):
            line = _mask_numbers(line)
        elif MEASURED in line:
            claim, _, shown = line.partition(MEASURED)
            line = claim + MEASURED + _mask_numbers(shown)
        lines.append(line)
    return "\n".join(lines)


def _mask_numbers(line: str) -> str:
    return _SPACES.sub(" ", _AROUND_MASK.sub("#", _MEASURED.sub("#", line))).strip()
