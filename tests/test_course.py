"""The course map lists every notebook in notebooks/ and links exactly those that exist."""

import json
from pathlib import Path

import pytest

from bnlab.course import LESSONS, course_map, lesson_problems

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_notebook_is_in_the_plan():
    stems = {lesson.stem for lesson in LESSONS}
    for nb in NOTEBOOKS.glob("*.ipynb"):
        assert nb.stem in stems, f"{nb.name} is not in bnlab.course.LESSONS"


def test_map_links_existing_lessons_and_marks_others_coming(tmp_path):
    (tmp_path / "01_forward.ipynb").write_text("{}")
    table = course_map(tmp_path)
    assert "[Forward](01_forward.ipynb)" in table
    assert "| 02 | Backward |" in table and table.count("ready") == 1
    assert table.count("coming") == len(LESSONS) - 1


def _notebook(tmp_path, cells):
    path = tmp_path / "lesson.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    return path


def _md(text):
    return {"cell_type": "markdown", "source": text}


def _code(count, outputs=()):
    return {"cell_type": "code", "source": "x = 1", "execution_count": count, "outputs": list(outputs)}


def test_a_lesson_in_the_course_pattern_has_no_problems(tmp_path):
    path = _notebook(tmp_path, [_md("# 01\n**Learning goals.** ..."), _code(1), _code(2), _md("## Summary\n...")])
    assert lesson_problems(path) == []


@pytest.mark.parametrize("cells, problem", [
    ([_md("# 01"), _code(1), _md("## Summary")], "learning goals"),
    ([_md("Learning goals"), _code(1), _md("more"), _md("more"), _md("the end")], "summary"),
    ([_md("Learning goals"), _code(2), _code(1), _md("## Summary")], "executed"),
    ([_md("Learning goals"), _code(1), _code(None), _md("## Summary")], "executed"),
    ([_md("Learning goals"), _code(1, [{"output_type": "error"}]), _md("## Summary")], "error output"),
])
def test_each_departure_from_the_pattern_is_named(tmp_path, cells, problem):
    problems = lesson_problems(_notebook(tmp_path, cells))
    assert len(problems) == 1 and problem in problems[0]


def test_committed_lessons_follow_the_pattern():
    for lesson in LESSONS:
        path = NOTEBOOKS / f"{lesson.stem}.ipynb"
        if path.exists() and lesson.number not in ("00", "H"):
            assert lesson_problems(path) == []
