"""How long each lesson takes top to bottom, as a student runs it: a fresh kernel, every cell in
order (nbclient, what nbconvert --execute uses), nothing saved.

Printed: seconds per lesson (kernel start included) against its budget on a 2-core CPU machine,
and the kernel's peak resident memory (ru_maxrss, read in the kernel after the last cell): what a
JupyterHub needs per student running that lesson. The budgets are for CI's 2-core VM; a faster
machine meets them more easily, so the closing note of a change states where it was measured.
Run: make bench, or
    python benchmarks/bench_lessons.py [--lessons 04 08]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nbformat
from _report import Row, emit
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
# seconds on a 2-core CPU VM (issue 13: lesson 04 <= 60 s, 08 <= 90 s; 09-13 are given 120 s each)
BUDGETS = {"04": 60.0, "08": 90.0, "09": 120.0, "10": 120.0, "11": 120.0, "12": 120.0, "13": 120.0}
DEFAULT_BUDGET = 90.0


# ru_maxrss is in bytes on macOS and in KiB on Linux: the kernel prints MiB
PEAK_RSS = ("import resource, sys\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "      / (2 ** 20 if sys.platform == 'darwin' else 2 ** 10))")


def run_lesson(path: Path) -> tuple[float, float]:
    """(seconds, peak MB of the kernel) to execute the notebook at path in a fresh kernel, from its folder."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
        seconds = time.perf_counter() - start
        probe = nbformat.v4.new_code_cell(PEAK_RSS)
        notebook.cells.append(probe)
        client.execute_cell(probe, len(notebook.cells) - 1)
    return seconds, float(probe.outputs[0]["text"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="*", default=None, help="lesson numbers (default: every lesson)")
    parser.add_argument("--json", default=None, help="write the rows here (make bench's report)")
    args = parser.parse_args()
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.lessons:
        paths = [p for p in paths if p.name[:2] in args.lessons]
    rows = []
    for path in paths:
        seconds, peak = run_lesson(path)
        budget = BUDGETS.get(path.name[:2], DEFAULT_BUDGET)
        rows.append(Row(f"lesson {path.stem} top to bottom", seconds, None, "s", target=1.0, ratio=seconds / budget,
                        note=f"budget {budget:.0f} s on a 2-core VM; ratio = seconds / budget"))
        rows.append(Row(f"lesson {path.stem} kernel peak memory", peak, None, "MB",
                        note="ru_maxrss of the kernel after the last cell"))
        print(f"{path.name:<40} {seconds:6.1f} s   (budget {budget:.0f} s)   kernel peak {peak:6.0f} MB")
    emit(rows, args.json)


if __name__ == "__main__":
    main()
