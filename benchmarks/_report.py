"""One row per measured ratio, shared by the benchmark scripts and `make bench`'s report.

Every bench_*.py measures its own rows and, given ``--json PATH``, writes them there with `emit`;
benchmarks/report.py runs the scripts, prints one table of all rows and writes
benchmarks/results.json, so that a later change can be compared with this one.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass

import torch


@dataclass
class Row:
    """measure: what was timed; ours and reference in `unit` (the reference was measured in the same
    run, interleaved with ours); ratio = ours / reference unless given (e.g. an overhead); target:
    the ratio must be <= target (None: reported only); note: anything a reader needs (threads, load)."""

    measure: str
    ours: float
    reference: float | None
    unit: str
    target: float | None = None
    ratio: float | None = None
    note: str = ""

    def __post_init__(self):
        if self.ratio is None and self.reference:
            self.ratio = self.ours / self.reference

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio <= self.target


def machine() -> dict:
    """What the numbers were measured on."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_1min": load, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def emit(rows: list[Row], path: str | None) -> None:
    """Write rows (with `met`) and the machine to path as JSON; nothing when path is None."""
    if path is None:
        return
    with open(path, "w") as f:
        json.dump({"machine": machine(), "rows": [asdict(r) | {"met": r.met} for r in rows]}, f, indent=1)
