"""bnlab: the machinery behind the batch-normalization course.

    from bnlab import BatchNorm, batch_norm, check      # torch BN from scratch, and claim checks
    from bnlab.reference import batchnorm_forward       # NumPy BN with caches, for the math lessons
"""

from .checks import CheckFailed, check, check_close, numerical_gradient, rel_error
from .functional import batch_norm
from .layers import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d
from .runtime import pick_device, setup

__version__ = "0.1.0"

__all__ = [
    "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm",
    "CheckFailed", "check", "check_close", "numerical_gradient", "rel_error",
    "pick_device", "setup",
]
