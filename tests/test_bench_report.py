"""make bench's report (benchmarks/report.py, benchmarks/_report.py): the rows, the verdicts, the table."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import report  # noqa: E402
from _report import Row, emit  # noqa: E402


def test_a_row_is_met_when_its_ratio_is_within_the_target():
    assert Row("x", 3.0, 4.0, "ms", target=1.0).ratio == pytest.approx(0.75)
    assert Row("x", 3.0, 4.0, "ms", target=1.0).met is True
    assert Row("x", 5.0, 4.0, "ms", target=1.0).met is False
    assert Row("x", 5.0, 4.0, "ms").met is None                     # reported only
    assert Row("x", 5.0, None, "s", target=1.0, ratio=0.5).met is True  # a budget, no reference


def test_emit_writes_rows_with_their_verdict_and_the_machine(tmp_path):
    path = tmp_path / "rows.json"
    emit([Row("fwd", 2.0, 1.0, "ms", target=1.0)], str(path))
    written = json.loads(path.read_text())
    assert written["rows"][0]["met"] is False and written["rows"][0]["ratio"] == pytest.approx(2.0)
    assert {"torch", "cores", "load_1min"} <= written["machine"].keys()
    emit([], None)  # no path: nothing written, no error


def test_the_table_has_one_line_per_row_and_names_a_missed_target():
    rows = [Row("fast enough", 1.0, 2.0, "ms", target=1.0), Row("too slow", 3.0, 2.0, "ms", target=1.0)]
    rows = [r.__dict__ | {"met": r.met} for r in rows]
    lines = report.table(rows, old={"too slow": 1.2}).splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[2].split()[-2:] == ["yes", "–"]
    assert "NO" in lines[3].split() and lines[3].endswith("1.2")


def test_every_benchmark_script_is_in_the_report_and_writes_rows():
    scripts = {p.stem.removeprefix("bench_") for p in BENCHMARKS.glob("bench_*.py")}
    assert scripts == set(report.SCRIPTS)
    for name in scripts:
        source = (BENCHMARKS / f"bench_{name}.py").read_text()
        assert '"--json"' in source and "emit(" in source, f"bench_{name}.py does not write its rows"
