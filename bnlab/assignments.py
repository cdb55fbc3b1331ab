"""Homework notebooks: the student versions are generated from the solutions (`make homework`).

A solution notebook marks what the student writes, in the spirit of nbgrader and otter-grader:

    def batchnorm_forward(x, gamma, beta, bn_param):
        # BEGIN SOLUTION
        ...the teacher's code...
        # END SOLUTION

becomes, in the student version, the stub ``raise NotImplementedError("...")`` at the same
indentation, so the check cell after it fails with the checkers' ``not_implemented`` hint until the
student writes code. A cell tagged ``solution`` (an answer to a "predict, then run" question, a
teacher's note) is left out of the student version; every output and execution count is cleared.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

__all__ = ["BEGIN", "END", "STUB", "SOLUTION_TAG", "student_version", "student_notebooks", "drift",
           "write_student_notebooks"]

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
STUB = 'raise NotImplementedError("your code here")'
SOLUTION_TAG = "solution"
_BEGIN_LINE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION\s*$")
_END_LINE = re.compile(r"^[ \t]*# END SOLUTION\s*$")


def _strip_solutions(source: str, where: str) -> str:
    """The source with every BEGIN/END SOLUTION block replaced by the stub at the block's indentation."""
    out, indent = [], None
    for number, line in enumerate(source.splitlines(), 1):
        begin, end = _BEGIN_LINE.match(line), _END_LINE.match(line)
        if begin:
            if indent is not None:
                raise ValueError(f"{where}, line {number}: {BEGIN} inside another solution block")
            indent = begin["indent"]
            out.append(f"{indent}{STUB}")
        elif end:
            if indent is None:
                raise ValueError(f"{where}, line {number}: {END} without a {BEGIN}")
            indent = None
        elif indent is None:
            out.append(line)
    if indent is not None:
        raise ValueError(f"{where}: a {BEGIN} block is never closed")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def student_version(notebook: dict, name: str = "notebook") -> dict:
    """The student version of a solution notebook (nbformat 4 JSON as a dict): solution blocks
    replaced by the stub, cells tagged 'solution' removed, outputs, execution counts and times
    cleared, widget state dropped. Raises ValueError for unbalanced markers, naming the cell."""
    student = copy.deepcopy(notebook)
    cells = []
    for index, cell in enumerate(student.get("cells", [])):
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell.get("source", ""))
        cell.get("metadata", {}).pop("execution", None)   # the teacher's run times
        if cell.get("cell_type") == "code":
            source = _strip_solutions(source, f"{name}, cell {index}")
            cell["outputs"], cell["execution_count"] = [], None
        elif BEGIN in source or END in source:
            raise ValueError(f"{name}, cell {index}: solution markers belong in code cells")
        cell["source"] = source.splitlines(keepends=True)
        cells.append(cell)
    student["cells"] = cells
    student.get("metadata", {}).pop("widgets", None)
    return student


def _dumps(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def student_notebooks(solutions: str | Path) -> dict[str, str]:
    """{file name: student notebook text} for every solution notebook in the folder solutions."""
    folder = Path(solutions)
    found = sorted(folder.glob("*.ipynb"))
    if not found:
        raise ValueError(f"no solution notebooks in {folder}")
    return {path.name: _dumps(student_version(json.loads(path.read_text(encoding="utf-8")), path.name))
            for path in found}


def write_student_notebooks(solutions: str | Path, students: str | Path) -> list[Path]:
    """Write the student version of every solution into the folder students; returns the paths."""
    written = []
    for name, text in student_notebooks(solutions).items():
        path = Path(students) / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drift(solutions: str | Path, students: str | Path) -> list[str]:
    """How the committed student versions differ from what `make homework` would write: one sentence
    per notebook that is missing, stale or has no solution (an empty list: in step)."""
    expected = student_notebooks(solutions)
    problems = [f"{name}: missing, run `make homework`" for name in expected
                if not (Path(students) / name).exists()]
    problems += [f"{name}: differs from its solution's student version, run `make homework`"
                 for name, text in expected.items()
                 if (Path(students) / name).exists() and (Path(students) / name).read_text(encoding="utf-8") != text]
    problems += [f"{path.name}: has no solution notebook in {solutions}"
                 for path in sorted(Path(students).glob("*.ipynb")) if path.name not in expected]
    return problems


if __name__ == "__main__":  # make homework
    import sys

    for written in write_student_notebooks(sys.argv[1], sys.argv[2]):
        print(f"wrote {written}")
