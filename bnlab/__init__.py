"""bnlab: the machinery behind the batch-normalization course.

    from bnlab import BatchNorm, batch_norm, check      # torch BN from scratch, and claim checks
    from bnlab import batch_norm_plain                  # the same formula in five plain lines
    from bnlab import BatchRenorm2d, RangeBatchNorm2d   # its relatives (Ioffe 2017, Banner et al. 2018)
    from bnlab import GhostBatchNorm2d, NoisyBatchNorm2d  # lessons 09-10 (Hoffer et al. 2017, Santurkar et al. 2018)
    from bnlab import fold_batchnorm                    # merge BN into the conv before it, for inference
    from bnlab import LSTM, SequenceBatchNorm           # lesson 11: BN-, LN-LSTMs (Cooijmans et al. 2016)
    from bnlab import LayerNorm, GroupNorm, RMSNorm     # per-example norms from scratch (lesson 11), as torch's
    from bnlab import TokenNorm, TinyTransformer        # lesson 11: LN, RMSNorm, BN over tokens in a transformer
    from bnlab import invariance_table, BA_TABLE_1      # Ba et al. 2016's Table 1, measured and as printed
    from bnlab import SyncBatchNorm, spawn              # BN over several processes (gloo on CPU), and their launcher
    from bnlab import CONVENTIONS, to_torch_momentum    # BN's conventions in torch, Keras, Flax, CS231n, d2l, makemore
    from bnlab.claims import CLAIMS, run_all            # lesson 13: every seed claim judged, with a proof that runs
    from bnlab.reference import batchnorm_forward       # NumPy BN with caches, for the math lessons
    from bnlab.myths import MYTHS, run_all              # lesson 13: widely held BN myths, each judged by running code
"""

from .checks import CheckFailed, check, check_close, numerical_gradient, rel_error
from .conventions import CONVENTIONS, conventions_table, to_torch_momentum
from .distributed import SyncBatchNorm, combine_moments, spawn
from .doctor import doctor
from .folding import count_batchnorms, fold_batchnorm
from .functional import (
                         batch_norm,
                         batch_norm_compiled,
                         batch_norm_plain,
                         batch_renorm,
                         example_weighted_batch_norm,
                         range_batch_norm,
)
from .invariances import BA_TABLE_1, format_invariance_table, invariance_table
from .layers import (
                         BatchNorm,
                         BatchNorm1d,
                         BatchNorm2d,
                         BatchNorm3d,
                         BatchRenorm,
                         BatchRenorm1d,
                         BatchRenorm2d,
                         GhostBatchNorm,
                         GhostBatchNorm1d,
                         GhostBatchNorm2d,
                         NoisyBatchNorm,
                         NoisyBatchNorm1d,
                         NoisyBatchNorm2d,
                         RangeBatchNorm,
                         RangeBatchNorm1d,
                         RangeBatchNorm2d,
                         is_batchnorm,
)
from .norms import (
                         GroupNorm,
                         InstanceNorm1d,
                         InstanceNorm2d,
                         InstanceNorm3d,
                         LayerNorm,
                         RMSGroupNorm,
                         RMSNorm,
                         WeightNormLinear,
                         group_norm,
                         instance_norm,
                         layer_norm,
                         rms_group_norm,
                         rms_norm,
)
from .recurrent import LSTM, SequenceBatchNorm
from .runtime import pick_device, setup
from .transformer import TinyTransformer, TokenNorm

__version__ = "0.1.0"

__all__ = [
    "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm", "batch_norm_compiled", "batch_norm_plain",
    "example_weighted_batch_norm",
    "is_batchnorm",
    "BatchRenorm", "BatchRenorm1d", "BatchRenorm2d", "batch_renorm",
    "RangeBatchNorm", "RangeBatchNorm1d", "RangeBatchNorm2d", "range_batch_norm",
    "GhostBatchNorm", "GhostBatchNorm1d", "GhostBatchNorm2d",
    "NoisyBatchNorm", "NoisyBatchNorm1d", "NoisyBatchNorm2d",
    "fold_batchnorm", "count_batchnorms",
    "LSTM", "SequenceBatchNorm",
    "TokenNorm", "TinyTransformer",
    "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "RMSNorm", "RMSGroupNorm",
    "WeightNormLinear", "layer_norm", "group_norm", "instance_norm", "rms_norm", "rms_group_norm",
    "invariance_table", "format_invariance_table", "BA_TABLE_1",
    "SyncBatchNorm", "combine_moments", "spawn",
    "CONVENTIONS", "conventions_table", "to_torch_momentum",
    "CheckFailed", "check", "check_close", "numerical_gradient", "rel_error",
    "pick_device", "setup",
    "doctor",
]
