"""`BatchNorm`, a from-scratch ``torch.nn`` module that can stand in for ``torch.nn.BatchNorm1d/2d/3d``.

Same constructor arguments, parameters, buffers and state_dict keys as torch's modules, so a
state_dict loads both ways. One class handles (N, C) to (N, C, D, H, W) inputs; ``BatchNorm1d``,
``BatchNorm2d`` and ``BatchNorm3d`` add torch's input-rank checks for drop-in use.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .functional import batch_norm

__all__ = ["BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]

# torch >= 2.10 has BatchNorm(..., *, bias=True) and shows it in the repr; print what the installed
# torch prints, so that swapping the two modules changes nothing visible
_TORCH_REPR_HAS_BIAS = "bias" in inspect.signature(nn.BatchNorm2d.__init__).parameters


class BatchNorm(nn.Module):
    """Batch normalization over dim 1 (features or channels) of a 2-D to 5-D input.

    Training: normalize with the batch's own mu and var (biased) and update
        running_mean <- (1 - momentum) * running_mean + momentum * mu
        running_var  <- (1 - momentum) * running_var  + momentum * var * m / (m - 1)
    (momentum=None: cumulative average, factor 1 / num_batches_tracked).
    Eval: normalize with running_mean and running_var. Either way y = weight * x_hat + bias.
    With track_running_stats=False there are no running buffers and eval also uses batch statistics.
    affine=False: no weight or bias; affine=True, bias=False: a weight (gamma) but no bias (beta).
    """

    _version = 2  # torch's: state_dicts with num_batches_tracked
    _valid_dims = (2, 3, 4, 5)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 *, bias: bool = True):
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            # bias=False (torch >= 2.10): learn gamma only
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in self._valid_dims:
            want = " or ".join(f"{d}D" for d in self._valid_dims)
            raise ValueError(f"{type(self).__name__} expected {want} input, got {input.dim()}D "
                             f"(shape {tuple(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}({self.num_features}) expected {self.num_features} "
                             f"channels on dim 1, got input of shape {tuple(input.shape)}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not isinstance(input, torch.Tensor):
            raise ValueError(f"input must be a torch.Tensor, got {type(input).__name__}")
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        # no running buffers means batch statistics in eval too (as torch)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # in training without tracking, do not touch the buffers
        keep = not self.training or self.track_running_stats
        return batch_norm(input,
                          self.running_mean if keep else None,
                          self.running_var if keep else None,
                          self.weight, self.bias, use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        bias = f"bias={self.bias is not None}, " if _TORCH_REPR_HAS_BIAS else ""
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"{bias}track_running_stats={self.track_running_stats}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # state_dicts from before torch 0.4.1 (version < 2) have no num_batches_tracked
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            # as torch: keep the module's own count (0 when fresh), not reset it
            state_dict[key] = (self.num_batches_tracked if self.num_batches_tracked.device.type != "meta"
                               else torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


class BatchNorm1d(BatchNorm):
    """BatchNorm for (N, C) or (N, C, L) input, like torch.nn.BatchNorm1d."""
    _valid_dims = (2, 3)


class BatchNorm2d(BatchNorm):
    """BatchNorm for (N, C, H, W) input, like torch.nn.BatchNorm2d."""
    _valid_dims = (4,)


class BatchNorm3d(BatchNorm):
    """BatchNorm for (N, C, D, H, W) input, like torch.nn.BatchNorm3d."""
    _valid_dims = (5,)
