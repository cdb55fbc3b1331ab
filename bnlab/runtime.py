"""Where the lessons run: device choice (CUDA, then MPS, then CPU), thread count and seeds.

Results differ bit-wise between CPU thread counts, and for the lessons' small nets one thread is
often faster than two on a loaded 2-core machine, so the thread count is always set explicitly.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["pick_device", "setup"]


def pick_device() -> torch.device:
    """CUDA if available, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def setup(seed: int = 0, threads: int = 1, verbose: bool = True) -> torch.device:
    """Seed Python, NumPy and torch, set torch's CPU thread count, and return the device to use."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = pick_device()
    if verbose:
        print(f"bnlab: device {device.type}, {threads} CPU thread{'s' if threads > 1 else ''}, "
              f"seed {seed}, torch {torch.__version__.split('+')[0]}")
    return device
