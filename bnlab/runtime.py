"""Where the lessons run: device choice (CUDA, then MPS, then CPU), thread count and seeds.

Results differ bit-wise between CPU thread counts, and for the lessons' small nets one thread is
often faster than two on a loaded 2-core machine, so the thread count is always set explicitly.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

__all__ = ["pick_device", "setup", "elapsed", "on_accelerator", "environment_summary", "inference_ms"]

_started = time.perf_counter()


def pick_device() -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup(seed: int = 0, threads: int = 1, verbose: bool = True) -> torch.device:
    """Seed Python, NumPy and torch, set torch's CPU thread count, start the lesson's clock
    (`elapsed`), and return the device to use."""
    global _started
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _started = time.perf_counter()
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = pick_device()
    if verbose:
        print(f"bnlab: device {device.type}, {threads} CPU thread{'s' if threads > 1 else ''}, "
              f"seed {seed}, torch {torch.__version__.split('+')[0]}")
    return device


def elapsed(device: torch.device | None = None) -> str:
    """How long since `setup` (the lesson's run time so far), and where it ran."""
    where = f" on {device.type}" if device is not None else ""
    return f"bnlab: {time.perf_counter() - _started:.0f} s since setup{where}"


def on_accelerator(device: torch.device) -> bool:
    """Whether lessons may scale their experiments up (a GPU: CUDA or MPS)."""
    return device.type in ("cuda", "mps")


def environment_summary() -> str:
    """One line for `make lab` and `make test`: the torch build installed, and the device the lessons
    will use (what `pick_device` gives them)."""
    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda} build"
    elif getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip} build"
    else:
        build = "CPU-only build"
    device = pick_device()
    if device.type == "cuda":
        where = f"CUDA ({torch.cuda.get_device_name(device)})"
    elif device.type == "mps":
        where = "Apple's MPS"
    else:
        where = "the CPU"
        if build != "CPU-only build":
            where += ": this torch can use a GPU, but none is visible"
    return f"bnlab: torch {torch.__version__} ({build}); the lessons will run on {where}"


def inference_ms(net, x: torch.Tensor, repeats: int = 200) -> float:
    """Milliseconds per forward call net(x), averaged over repeats calls after one warm-up call.

    Runs under torch.no_grad(), as inference does (no graph is recorded); put the net in eval mode
    first if that is what is timed. On CUDA the queue is drained before and after the timed calls,
    since kernels run asynchronously. A rough measure: benchmarks/bench_folding.py interleaves and
    repeats for a careful one.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    cuda = isinstance(x, torch.Tensor) and x.device.type == "cuda"
    with torch.no_grad():
        net(x)  # the first call pays one-off costs (allocations, kernel selection)
        if cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
        if cuda:
            torch.cuda.synchronize(x.device)
    return (time.perf_counter() - start) / repeats * 1e3
