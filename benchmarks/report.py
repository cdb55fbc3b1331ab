"""`make bench`: run every benchmark script, print one table of every ratio they measured, and write
benchmarks/results.json so that a later change can be compared with this one.

Each bench_*.py runs in its own process (a script's threads or compiled kernels do not leak into
the next) with --json; a row is: measure, ours, reference (measured in the same run), ratio,
target (ratio <= target is met), met. A script that fails is named and the others still run.
With --compare OLD.json, the ratio of each measure in OLD is printed next to today's. Run:
    python benchmarks/report.py [--only probes batchnorm] [--compare benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import machine

HERE = Path(__file__).resolve().parent
# the order of the table: the measures first
SCRIPTS = ["probes", "batchnorm", "lessons", "suite", "widgets", "folding"]


def run(name: str, out: Path) -> tuple[list[dict], str | None, float]:
    """(rows, error or None, seconds) of benchmarks/bench_<name>.py."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(HERE / f"bench_{name}.py"), "--json", str(out)],
                          cwd=HERE.parent, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    sys.stdout.write(done.stdout)
    if done.returncode != 0 or not out.exists():
        return [], (done.stderr.strip().splitlines() or ["no output"])[-1], seconds
    return json.loads(out.read_text())["rows"], None, seconds


def fmt(value, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:.3g}{(' ' + unit) if unit else ''}"


def table(rows: list[dict], old: dict[str, float]) -> str:
    header = ["measure", "ours", "reference", "ratio", "target", "met"] + (["before"] if old else [])
    lines = [header]
    for r in rows:
        met = {True: "yes", False: "NO", None: "–"}[r["met"]]
        line = [r["measure"], fmt(r["ours"], r["unit"]), fmt(r["reference"], r["unit"]), fmt(r["ratio"]),
                "≤ " + fmt(r["target"]) if r["target"] is not None else "–", met]
        if old:
            line.append(fmt(old.get(r["measure"])))
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=SCRIPTS, choices=SCRIPTS)
    parser.add_argument("--compare", default=None, help="an earlier results.json to print next to this run")
    parser.add_argument("--output", default=str(HERE / "results.json"))
    args = parser.parse_args()
    old = {}
    if args.compare:
        old = {r["measure"]: r["ratio"] for r in json.loads(Path(args.compare).read_text())["rows"]}
    rows, failed, seconds = [], {}, {}
    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            print(f"\n=== benchmarks/bench_{name}.py", flush=True)
            script_rows, error, seconds[name] = run(name, Path(tmp) / f"{name}.json")
            rows += [r | {"script": name} for r in script_rows]
            if error:
                failed[name] = error
    print(f"\n=== every ratio (load average before {before['load_1min']}, after {machine()['load_1min']}; "
          f"torch {before['torch']}, {before['cores']} cores{', ' + before['cuda'] if before['cuda'] else ''})")
    print(table(rows, old))
    for name, error in failed.items():
        print(f"bench_{name}.py FAILED: {error}")
    missed = [r["measure"] for r in rows if r["met"] is False]
    print(f"{sum(r['met'] is True for r in rows)} targets met, {len(missed)} missed"
          + (": " + "; ".join(missed) if missed else ""))
    result = {"machine": before | {"load_1min_after": machine()["load_1min"]}, "seconds": seconds,
              "failed": failed, "rows": rows}
    Path(args.output).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.output}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
