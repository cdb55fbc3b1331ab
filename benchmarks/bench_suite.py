"""How long `make test` takes (unit tests + nbval on every notebook, on every core) in this
checkout, its environment already set up.

A fresh clone adds the set-up (creating .venv and pip-installing torch and the rest: about 2 to
2.5 minutes on CI's 2-core VM), so the budget here is the 6 minutes of a fresh `make test` less
that: 210 s on the VM. Run: make bench, or
    python benchmarks/bench_suite.py [--jobs auto]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from _report import Row, emit

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 210.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="auto", help="pytest-xdist workers, as make test's JOBS")
    parser.add_argument("--json", default=None, help="write the rows here (make bench's report)")
    args = parser.parse_args()
    # make test itself, so that this times what the README's command runs (its set-up is a no-op here)
    command = ["make", "test", f"JOBS={args.jobs}", "PYTEST_ARGS=-q -p no:cacheprovider"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    print("\n".join(done.stdout.strip().splitlines()[-16:]))
    if done.returncode != 0:
        sys.exit(f"make test failed (exit {done.returncode}): {' '.join(command)}")
    emit([Row(f"make test, set up (tests + nbval, JOBS={args.jobs})", seconds, None, "s", target=1.0,
              ratio=seconds / BUDGET_S, note=f"budget {BUDGET_S:.0f} s = 6 min fresh make test less set-up")],
         args.json)
    print(f"make test: {seconds:.0f} s (budget {BUDGET_S:.0f} s on a 2-core VM)")


if __name__ == "__main__":
    main()
