"""Homework notebooks: student versions generated from the solutions (bnlab.assignments), in step with
them, and failing helpfully until the student writes code."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from bnlab.assignments import STUB, drift, student_version, write_student_notebooks

HOMEWORK = Path(__file__).resolve().parents[1] / "notebooks" / "homework"
SOLUTIONS = HOMEWORK / "solutions"


def _nb(*cells):
    return {"cells": list(cells), "metadata": {"widgets": {"state": {}}}, "nbformat": 4, "nbformat_minor": 5}


def _code(source, tags=(), outputs=None):
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source, "execution_count": 3,
            "outputs": outputs if outputs is not None else [{"output_type": "stream", "name": "stdout", "text": "x"}]}


def _md(source):
    return {"cell_type": "markdown", "metadata": {}, "source": source}


# ----------------------------------------------------------------------------- student_version
def test_solution_blocks_become_stubs_at_their_indentation():
    solution = _nb(_code("def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    y = x * 2\n    # END SOLUTION\n"
                         "    return y\n"))
    source = "".join(student_version(solution)["cells"][0]["source"])
    assert source == f"def f(x):\n    y = 1\n    {STUB}\n    return y\n"
    namespace = {}
    exec(source, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](3)


def test_outputs_solution_cells_and_widget_state_are_dropped():
    solution = _nb(_md("# H1"), _code("answer = 4", tags=["solution"]), _code("print(1)"))
    student = student_version(solution)
    assert [c["cell_type"] for c in student["cells"]] == ["markdown", "code"]
    assert student["cells"][1]["outputs"] == [] and student["cells"][1]["execution_count"] is None
    assert "widgets" not in student["metadata"]
    assert solution["cells"][2]["outputs"], "the solution itself is not changed"


@pytest.mark.parametrize("source, problem", [
    ("# BEGIN SOLUTION\nx = 1\n", "never closed"),
    ("x = 1\n# END SOLUTION\n", "without a"),
    ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "inside another"),
])
def test_unbalanced_markers_are_named(source, problem):
    with pytest.raises(ValueError, match=problem):
        student_version(_nb(_code(source)), "h.ipynb")


def test_markers_in_markdown_are_refused():
    with pytest.raises(ValueError, match="code cells"):
        student_version(_nb(_md("# BEGIN SOLUTION")))


def test_drift_names_missing_stale_and_orphan_student_versions(tmp_path):
    solutions, students = tmp_path / "solutions", tmp_path / "students"
    solutions.mkdir(), students.mkdir()
    for name in ("a.ipynb", "b.ipynb"):
        (solutions / name).write_text(json.dumps(_nb(_code("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n"))))
    assert len(drift(solutions, students)) == 2                       # both missing
    write_student_notebooks(solutions, students)
    assert drift(solutions, students) == []
    (solutions / "a.ipynb").write_text(json.dumps(_nb(_code("y = 2"))))  # the solution changed
    (students / "c.ipynb").write_text("{}")
    problems = drift(solutions, students)
    assert any(p.startswith("a.ipynb: differs") for p in problems) and any(p.startswith("c.ipynb") for p in problems)


# ----------------------------------------------------------------------------- the committed homework
ASSIGNMENTS = sorted(p.name for p in SOLUTIONS.glob("*.ipynb"))


def test_there_are_four_assignments_and_their_students_versions_are_in_step():
    assert [name[:2] for name in ASSIGNMENTS] == ["h1", "h2", "h3", "h4"]
    assert drift(SOLUTIONS, HOMEWORK) == []


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_versions_are_clean(name):
    notebook = json.loads((HOMEWORK / name).read_text())
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    assert any(STUB in "".join(c["source"]) for c in code), "a student version needs something to write"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_a_student_version_fails_at_its_first_check_with_the_not_implemented_hint(name):
    """What a student sees on opening it: the task, a stub, and a check cell that names the
    not_implemented mistake. Cells before the first check run without error."""
    notebook = nbformat.read(HOMEWORK / name, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(HOMEWORK)}}).execute()
    errors = [(i, o) for i, c in enumerate(notebook.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors, "the student version ran through without a failing check"
    first, error = errors[0]
    assert STUB not in notebook.cells[first].source, "the first error must come from a check cell, not a stub"
    assert error.ename in ("CheckFailed", "HomeworkCheckFailed"), (error.ename, error.evalue)
    assert "not_implemented" in error.evalue
    assert "hint" in error.evalue.lower()


def test_nbval_runs_the_solutions_and_leaves_the_student_versions_alone():
    import subprocess
    import sys

    listed = subprocess.run([sys.executable, "-m", "pytest", str(HOMEWORK), "--nbval", "--nbval-current-env",
                             "--collect-only", "-q", "-p", "no:cacheprovider"],
                            capture_output=True, text=True, cwd=HOMEWORK.parents[1]).stdout
    collected = {line.split("::")[0] for line in listed.splitlines() if ".ipynb::" in line}
    assert collected == {f"notebooks/homework/solutions/{name}" for name in ASSIGNMENTS}, listed[-2000:]
