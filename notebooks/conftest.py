"""pytest hooks for the nbval run of the lessons (`make test`, `make nbval`).

- What nbval compares is a lesson's contract, not the digits it measured: each output goes through
  `bnlab.checks.mask_measurements`, so `✓` claim lines must match the committed notebook exactly and
  every other line must keep its words and layout, while its numbers may differ between torch
  versions, BLAS builds and machines. A claim that no longer holds raises `CheckFailed` in its cell.
- At the end, a failed lesson is named with what failed: the claim (`✗ ...` and its numbers), an
  output that changed, or another error. nbval's own report buries that in a coloured traceback.
- And how long each lesson took (kernel start included).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from nbval.plugin import IPyNbCell

from bnlab.checks import mask_measurements

# nbval has no hook for its comparison; IPyNbCell.sanitize is what it applies to both the committed
# and the new output of every cell before comparing them. Fail loudly if a new nbval drops it.
if not callable(getattr(IPyNbCell, "sanitize", None)):
    raise ImportError("nbval's IPyNbCell.sanitize is gone: notebooks/conftest.py cannot mask measured numbers")
_nbval_sanitize = IPyNbCell.sanitize


def _sanitize(self, value):
    value = _nbval_sanitize(self, value)  # --nbval-sanitize-with rules, if any were given
    return mask_measurements(value) if isinstance(value, str) else value


IPyNbCell.sanitize = _sanitize

# The student versions of the homework are committed clean, to be filled in: nbval runs the executed
# solutions in homework/solutions/, and tests/test_assignments.py runs the student versions.
_STUDENT_VERSIONS = Path(__file__).resolve().parent / "homework"


def pytest_ignore_collect(collection_path):
    # (collect_ignore_glob would match homework/solutions/ too: fnmatch's * crosses folders)
    if collection_path.suffix == ".ipynb" and collection_path.resolve().parent == _STUDENT_VERSIONS:
        return True
    return None

_seconds = defaultdict(float)
_failures = []  # (nodeid, one line saying what failed)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLAIM = re.compile(r"CheckFailed: (✗.*)")
_ERROR = re.compile(r"^(\w*(?:Error|Exception|Failed)\b.*)$", re.MULTILINE)


def what_failed(report_text: str) -> str:
    """One line for a failed lesson cell: the failed claim, a changed output, or the error raised."""
    text = _ANSI.sub("", report_text)
    claim = _CLAIM.findall(text)
    if claim:
        return "claim failed: " + claim[-1].strip()
    if "Cell outputs differ" in text:
        return ("output differs from the committed notebook (not a claim: a line appeared, disappeared "
                "or was reworded; numbers are masked)")
    errors = _ERROR.findall(text)
    return "error: " + errors[-1].strip() if errors else "failed (see nbval's report above)"


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if not path.endswith(".ipynb"):
        return
    _seconds[path] += report.duration
    if report.failed:
        _failures.append((report.nodeid, what_failed(str(report.longrepr))))


def pytest_terminal_summary(terminalreporter):
    if _seconds:
        terminalreporter.section("nbval time per notebook")
        for path, seconds in sorted(_seconds.items()):
            terminalreporter.write_line(f"{seconds:7.1f} s  {path}")
    if _failures:
        terminalreporter.section("lessons that failed, and what failed", red=True)
        for nodeid, line in _failures:
            terminalreporter.write_line(f"{nodeid}: {line}")
