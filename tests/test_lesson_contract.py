"""What nbval holds a lesson to (notebooks/conftest.py with bnlab.checks.mask_measurements).

Measured numbers may change (another torch, BLAS or machine) and the lesson still passes. A claim
that becomes false, a `✓` line that changes, a line that appears, disappears or is reworded, all
fail, and the failed claim is named at the end of the run. Each case is a small notebook run by
nbval in a subprocess, as `make test` runs the lessons; one case is the real lesson 01 with every
digit of its committed results changed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

# The committed lesson: a result line and the claim it supports.
COMMITTED_SOURCE = 'acc = 0.953\nprint(f"test accuracy {acc:.3f}")\ncheck(acc > 0.9, "accuracy above 90%")'
COMMITTED_OUTPUT = "test accuracy 0.953\n✓ accuracy above 90%\n"

# What the same cell does today, in each case, and whether nbval should pass it.
CASES = {
    "numbers_changed": ('acc = 0.9412\nprint(f"test accuracy {acc:.4f}")\n'
                        'check(acc > 0.9, "accuracy above 90%")', True),
    "claim_broken": ('acc = 0.853\nprint(f"test accuracy {acc:.3f}")\ncheck(acc > 0.9, "accuracy above 90%")', False),
    "claim_reworded": ('acc = 0.953\nprint(f"test accuracy {acc:.3f}")\n'
                       'check(acc > 0.95, "accuracy above 95%")', False),
    "line_added": (COMMITTED_SOURCE + '\nprint("and one line more")', False),
    "line_reworded": ('acc = 0.953\nprint(f"train accuracy {acc:.3f}")\ncheck(acc > 0.9, "accuracy above 90%")', False),
    "claim_dropped": ('acc = 0.953\nprint(f"test accuracy {acc:.3f}")', False),
}


def notebook(source: str, committed_output: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell("from bnlab import check", execution_count=1)
    cell = nbformat.v4.new_code_cell(source, execution_count=2)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=committed_output)]
    nb.cells = [first, cell]
    return nb


def run_nbval(folder: Path) -> tuple[dict[str, str], str]:
    """nbval over folder with the lessons' conftest, as `make test` runs it: {notebook stem: outcome
    of its last cell}, and pytest's output."""
    shutil.copy(NOTEBOOKS / "conftest.py", folder / "conftest.py")
    result = subprocess.run([sys.executable, "-m", "pytest", str(folder), "--nbval", "--nbval-current-env",
                             "-v", "--color=no", "-p", "no:cacheprovider", f"--rootdir={folder}"],
                            cwd=folder, capture_output=True, text=True, timeout=300)
    outcomes = dict(re.findall(r"(\w+)(?:\.|::)ipynb::Cell 1 (PASSED|FAILED)", result.stdout))
    return outcomes, result.stdout


def test_makefile_runs_the_lessons_under_this_conftest():
    """make test / make nbval run nbval over notebooks/, where conftest.py applies the mask."""
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "nbval"):
        rule = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
        assert "notebooks" in rule and "$(NBVAL)" in rule, rule
    assert re.search(r"^NBVAL := --nbval --nbval-current-env$", makefile, re.MULTILINE)
    assert "mask_measurements" in (NOTEBOOKS / "conftest.py").read_text()


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    for name, (source, _) in CASES.items():
        nbformat.write(notebook(source, COMMITTED_OUTPUT), folder / f"{name}.ipynb")
    return run_nbval(folder)


@pytest.mark.parametrize("case", CASES)
def test_only_the_contract_decides(contract_run, case):
    outcomes, output = contract_run
    expected = "PASSED" if CASES[case][1] else "FAILED"
    assert outcomes.get(case) == expected, output


def test_a_failed_claim_is_named_with_its_numbers(contract_run):
    _, output = contract_run
    summary = output.split("lessons that failed, and what failed", 1)[1]
    (line,) = [ln for ln in summary.splitlines() if ln.startswith("claim_broken.ipynb")]
    assert "claim failed: ✗ accuracy above 90%" in line
    # the cases whose output changed are named as such, not as failed claims
    (line,) = [ln for ln in summary.splitlines() if ln.startswith("line_added.ipynb")]
    assert "output differs from the committed notebook" in line


def _shift_digits(text: str) -> str:
    """Every digit of every non-claim line changed, and every number one digit longer: what another
    torch could print. Claim lines stay as they are."""
    def shift(line):
        if line.lstrip().startswith("✓"):
            return line
        return re.sub(r"\d+", lambda m: "9" + "".join(str((int(d) + 3) % 10) for d in m.group()), line)
    return "\n".join(shift(line) for line in text.split("\n"))


def _rewrite_committed_outputs(nb, rewrite):
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = rewrite(out["text"])
            elif "text/plain" in out.get("data", {}):
                out["data"]["text/plain"] = rewrite(out["data"]["text/plain"])


def test_lesson_01_passes_with_other_digits_and_fails_with_another_claim(tmp_path):
    """The real lesson 01, its committed results' digits all changed: nbval passes. One committed
    claim line changed instead: nbval fails on that cell."""
    lesson = nbformat.read(NOTEBOOKS / "01_forward.ipynb", as_version=4)
    digits = nbformat.from_dict(lesson)
    _rewrite_committed_outputs(digits, _shift_digits)
    assert nbformat.writes(digits) != nbformat.writes(lesson)
    nbformat.write(digits, tmp_path / "digits.ipynb")

    claim = nbformat.from_dict(lesson)
    _rewrite_committed_outputs(claim, lambda t: t.replace("✓ every channel has mean 0 after BN",
                                                          "✓ every channel has mean 1 after BN"))
    assert nbformat.writes(claim) != nbformat.writes(lesson)
    nbformat.write(claim, tmp_path / "claim.ipynb")

    shutil.copy(NOTEBOOKS / "conftest.py", tmp_path / "conftest.py")
    result = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "--nbval", "--nbval-current-env",
                             "-q", "--color=no", "-p", "no:cacheprovider", f"--rootdir={tmp_path}", "-rf"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    failed = re.findall(r"FAILED (\w+)\.ipynb::Cell (\d+)", result.stdout)
    assert [name for name, _ in failed] == ["claim"], result.stdout
    assert "output differs from the committed notebook" in result.stdout
