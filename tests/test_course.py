"""The course map lists every notebook in notebooks/ and links exactly those that exist."""

from pathlib import Path

from bnlab.course import LESSONS, course_map

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
