"""Synchronized batch normalization from scratch: ``SyncBatchNorm`` normalizes with the statistics of
the whole batch when its examples are spread over several processes, each holding a shard, and
``spawn`` runs such processes on one machine (gloo on CPU), so a lesson can watch them agree.
torch's own SyncBatchNorm refuses CPU input; this one runs wherever torch.distributed does.

Forward: each rank reduces its shard to (n_r, mu_r, M2_r) per channel, one all-gather shares them,
and every rank combines them with Chan et al.'s formula (`combine_moments`), never with sum x^2.
Backward: one all-reduce of (sum dy, sum dy * x_hat) per channel; dx is then computed locally, and
dgamma, dbeta stay local (DistributedDataParallel averages them over ranks, as every gradient).
Eval communicates nothing. What that costs on the wire: `sync_bytes_per_step`.

On GPUs and across machines the same code runs unchanged, with torchrun in place of `spawn`: start
one process per GPU with ``torchrun --nproc_per_node=NUM_GPUS train.py`` (on M machines add
``--nnodes=M --node_rank=I --master_addr=HOST --master_port=PORT`` and run it on each, I = 0..M-1), and
in train.py call ``torch.distributed.init_process_group("nccl")`` (torchrun sets RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT), ``torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))``, convert the
model with ``bnlab.SyncBatchNorm.convert_sync_batchnorm(model)``, move it to the GPU and wrap it in
``DistributedDataParallel(model, device_ids=[local_rank])``. The collectives then go through NCCL
(NVLink within a machine, the network between machines) instead of gloo over 127.0.0.1; nothing in
the layer depends on the device or the backend.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import math
import multiprocessing.connection
import os
import pickle
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.autograd.function import once_differentiable

from .functional import check_batch_norm_inputs, reduction_shapes, update_running_stats_
from .layers import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["SyncBatchNorm", "sync_batch_norm", "combine_moments", "channel_moments", "sync_bytes_per_step",
           "spawn", "shard", "WorkerError"]


# ----------------------------------------------------------------------------- moments
def channel_moments(input: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(n, mu, M2) of each channel of input (N, C, *spatial), over the batch and spatial dims:

        n = N * prod(spatial),   mu = mean x_c,   M2 = sum (x_c - mu)^2

    mu and M2 are (C,) in the input's dtype (float32 for float16/bfloat16 input). An empty input
    (N = 0) gives n = 0, mu = M2 = 0, so that it joins `combine_moments` as a group that adds nothing.
    """
    if not isinstance(input, torch.Tensor) or input.dim() < 2:
        raise ValueError(f"input must be a tensor (N, C, *spatial), got "
                         f"{tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__}")
    x = _compute_precision(input)
    count = x.numel() // x.shape[1] if x.shape[1] else 0
    if count == 0:
        zeros = x.new_zeros(x.shape[1])
        return 0, zeros, zeros.clone()
    dims, shape = reduction_shapes(x)
    mean = x.mean(dims)
    centred = x - mean.view(shape)
    # two passes, the second corrected by the residual mean: squares of values far from zero
    # (sum x^2) would cancel catastrophically, and a float32 mean is a few ulps off
    shift = centred.mean(dims)
    centred -= shift.view(shape)
    return count, mean + shift, (centred * centred).sum(dims)


def combine_moments(counts, means, m2s) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chan, Golub & LeVeque's parallel combination of the moments of G groups, over the first axis.

    Group r holds n_r values with mean mu_r and M2_r = sum (x - mu_r)^2 (n_r * its biased variance);
    the union of all groups has

        N  = sum_r n_r
        mu = sum_r n_r mu_r / N
        M2 = sum_r M2_r + sum_r n_r (mu_r - mu)^2

    so var_B = M2 / N (BN normalizes with it) and M2 / (N - 1) is the unbiased estimate. Only
    deviations from the mean are squared: the naive E[x^2] - E[x]^2, from sum x^2, loses every digit
    when |mu| >> sigma (a mean of 1e8 with sigma 1 in float64). Groups with n_r = 0 add nothing,
    whatever their mean and M2 hold. With N = 0, mu is NaN and M2 is 0.

    counts: (G,) non-negative; means, m2s: (G, *F) (F = (C,) per channel). Anything torch.as_tensor
    takes (lists, NumPy arrays). Returns (N: 0-d tensor of counts' dtype, mu: (*F), M2: (*F)).
    """
    counts, means, m2s = (torch.as_tensor(t) for t in (counts, means, m2s))
    if counts.dim() != 1:
        raise ValueError(f"counts must be 1-D (one count per group), got shape {tuple(counts.shape)}")
    if not means.is_floating_point() or not m2s.is_floating_point():
        raise ValueError(f"means and m2s must be floating point, got {means.dtype} and {m2s.dtype}")
    if means.shape != m2s.shape or means.dim() < 1 or means.shape[0] != counts.shape[0]:
        raise ValueError(f"means {tuple(means.shape)} and m2s {tuple(m2s.shape)} must have the same shape, "
                         f"(G, *F) with G = len(counts) = {counts.shape[0]}")
    if counts.is_floating_point() and not bool(torch.isfinite(counts).all()):
        raise ValueError(f"counts must be finite, got {counts.tolist()}")
    if bool((counts < 0).any()):
        raise ValueError(f"counts must be >= 0, got {counts.tolist()}")
    total = counts.sum()
    weights = counts.to(means.dtype).view((-1,) + (1,) * (means.dim() - 1))
    present = weights > 0
    # where() rather than 0 * mu_r: an empty group's mean may be NaN (the mean of nothing)
    means = torch.where(present, means, torch.zeros_like(means))
    m2s = torch.where(present, m2s, torch.zeros_like(m2s))
    n = weights.sum(0)
    mean = (weights * means).sum(0) / n
    # one correction step: the weighted sum rounds at the scale of |mu|, the residual at that of
    # the spread of the group means
    mean = mean + (weights * (means - mean)).sum(0) / n
    deviation = torch.where(present, means - mean, torch.zeros_like(means))
    m2 = m2s.sum(0) + (weights * deviation * deviation).sum(0)
    return total, mean, m2


# ----------------------------------------------------------------------------- the collectives
def _compute_precision(input: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 in float32, as torch's BN computes them (and as the statistics travel)."""
    return input.float() if input.dtype in (torch.float16, torch.bfloat16) else input


def _all_gather_rows(packed: torch.Tensor, group, world_size: int) -> torch.Tensor:
    """(world_size, len(packed)): every rank's packed vector, in rank order of the group."""
    if dist.get_backend(group) == "gloo":
        # gloo (before torch 2.6 at least) has no all_gather_into_tensor
        parts = [torch.empty_like(packed) for _ in range(world_size)]
        dist.all_gather(parts, packed, group=group)
        return torch.stack(parts)
    # NCCL and the rest: one contiguous buffer, their fast path
    rows = packed.new_empty(world_size * packed.numel())
    dist.all_gather_into_tensor(rows, packed, group=group)
    return rows.view(world_size, -1)


def _group_world_size(group) -> int:
    """Ranks in group (None: the default group); 1 when torch.distributed is not initialized."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    world_size = dist.get_world_size(group)
    if world_size < 1:
        raise ValueError("this rank is not a member of the SyncBatchNorm's process_group; every rank that "
                         "runs the layer must belong to its group (see torch.distributed.new_group)")
    return world_size


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BN over the union of every rank's shard; see sync_batch_norm."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, eps, momentum, group, world_size):
        x = _compute_precision(input)
        dims, shape = reduction_shapes(x)
        channels = x.shape[1]
        count, mean, m2 = channel_moments(x)
        # a fixed-size vector on every rank, so that an empty shard joins the collective with n = 0
        packed = torch.cat([mean.new_tensor([count]), mean, m2])
        rows = _all_gather_rows(packed, group, world_size)
        total, mean, m2 = combine_moments(rows[:, 0], rows[:, 1:1 + channels], rows[:, 1 + channels:])
        # every rank gathered the same rows, so every rank raises here, or none does
        n = round(float(total))
        if n <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n} over the "
                             f"{world_size} ranks of the process group (this rank: {count}, input shape "
                             f"{tuple(input.shape)})")
        var = m2 / n
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            # the global unbiased M2 / (N - 1), the same bits on every rank
            update_running_stats_(running_mean, running_var, mean, var, momentum, count=n)
        scale = invstd if weight is None else invstd * weight
        out = (x - mean.view(shape)) * scale.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count, ctx.group = n, group
        ctx.dtypes = input.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype
        return out.to(input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        x, weight, mean, invstd = ctx.saved_tensors
        dims, shape = reduction_shapes(x)
        n = ctx.count
        dy = _compute_precision(grad_output)
        x_hat = (x - mean.view(shape)) * invstd.view(shape)
        # this rank's sums (zeros for an empty shard, which still joins the all-reduce below)
        sum_dy = dy.sum(dims)
        sum_dy_xhat = (dy * x_hat).sum(dims)
        grad_input = None
        if ctx.needs_input_grad[0]:
            # dx depends on every rank's dy through mu_B and sigma_B: one all-reduce of both sums
            packed = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=ctx.group)
            global_sum_dy, global_sum_dy_xhat = packed.split(x.shape[1])
            scale = invstd if weight is None else invstd * weight.to(invstd.dtype)
            # dx = gamma / sigma * (dy - sum dy / N - x_hat * sum (dy x_hat) / N), sums over all ranks
            grad_input = (dy - (global_sum_dy / n).view(shape) - x_hat * (global_sum_dy_xhat / n).view(shape))
            grad_input = (grad_input * scale.view(shape)).to(ctx.dtypes[0])
        # dgamma, dbeta: this rank's share only; DDP's gradient all-reduce brings in the other ranks'
        grad_weight = sum_dy_xhat.to(ctx.dtypes[1]) if ctx.needs_input_grad[1] else None
        grad_bias = sum_dy.to(ctx.dtypes[2]) if ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None, None, None, None, None, None


def _check_sync_inputs(input, running_mean, running_var, weight, bias, eps) -> None:
    """batch_norm's checks without its count check: a rank may hold one value per channel, or none."""
    check_batch_norm_inputs(input, running_mean, running_var, weight, bias, True, eps, min_values=0)


def sync_batch_norm(input, running_mean, running_var, weight=None, bias=None, momentum=0.1, eps=1e-5,
                    process_group=None):
    """Training-mode batch normalization over the union of the shards that the ranks of process_group
    (None: the default group) hold; every rank calls it with its own shard, in the same order.

    Per channel c, with rank r holding n_r values (n_r = 0 allowed) of mean mu_r and M2_r:
        (n_r, mu_r, M2_r) of every rank by one all-gather, combined as in combine_moments:
        N = sum n_r,   mu_B = sum n_r mu_r / N,   sigma^2_B = (sum M2_r + sum n_r (mu_r - mu_B)^2) / N
        x_hat = (x - mu_B) / sqrt(sigma^2_B + eps),   y = weight * x_hat + bias
        running_mean <- (1 - momentum) running_mean + momentum mu_B
        running_var  <- (1 - momentum) running_var  + momentum sigma^2_B N / (N - 1)   (in place, if given)
    Backward, with sums over all ranks' values (one all-reduce of the two (C,) sums):
        dx = weight / sqrt(sigma^2_B + eps) * (dy - sum dy / N - x_hat * sum(dy x_hat) / N)
    and this rank's own dgamma = sum dy x_hat, dbeta = sum dy (DDP averages them over ranks).

    input: (N_r, C, *spatial); running_mean, running_var, weight, bias: (C,) or None. ValueError,
    on every rank alike, when N <= 1. Communicates even in a group of one (then it is batch_norm);
    differentiable once (torch's SyncBatchNorm is too). Launch with `spawn` on one machine, or with
    torchrun and NCCL on GPUs (see the module docstring).
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("sync_batch_norm needs an initialized process group (torch.distributed."
                         "init_process_group, or run it under bnlab.distributed.spawn); SyncBatchNorm falls "
                         "back to bnlab.batch_norm without one")
    _check_sync_inputs(input, running_mean, running_var, weight, bias, eps)
    group = process_group if process_group is not None else dist.group.WORLD
    return _SyncBatchNormFunction.apply(input, weight, bias, running_mean, running_var, float(eps),
                                        float(momentum), group, _group_world_size(group))


def sync_bytes_per_step(num_features: int, world_size: int, dtype=torch.float32) -> dict[str, float]:
    """Bytes one SyncBatchNorm layer communicates per training step (forward + backward), per rank.

    With C = num_features, W = world_size and s the bytes of one statistic (the input's dtype;
    float32 for float16/bfloat16 input, whose statistics are computed in float32):
        forward_payload  = (2C + 1) s        each rank's (n_r, mu_r, M2_r), handed to all_gather
        forward_received = W (2C + 1) s      the gathered table every rank ends with
        backward_payload = 2C s              (sum dy, sum dy * x_hat), handed to all_reduce
    and what each rank sends with the ring algorithms (gloo's and NCCL's for large tensors):
        forward_sent  = (W - 1)(2C + 1) s    all-gather: the W - 1 other rows pass through
        backward_sent = 2 (W - 1) / W * 2C s all-reduce: a reduce-scatter, then an all-gather
        sent = forward_sent + backward_sent
    W = 1 communicates nothing (SyncBatchNorm falls back to BN). The backward all-reduce happens
    when the layer's input needs a gradient (not for a first layer fed with data). C = 64, W = 8,
    float32: payloads of 516 B and 512 B; each rank sends 3612 + 896 = 4508 B, where DDP's all-reduce
    of the same layer's dgamma and dbeta (also 2C values) sends 896 B. The all-gather's traffic
    grows with W (W - 1 rows pass through each rank), the all-reduce's does not: at C = 512, W = 64
    it is 258 KB against 8 KB a step, still small next to a conv layer's weight gradients.
    """
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be a positive int, got {num_features!r}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if world_size == 1:
        return dict(forward_payload=0, forward_received=0, backward_payload=0, forward_sent=0,
                    backward_sent=0, sent=0)
    size = torch.empty((), dtype=dtype).element_size()
    if dtype in (torch.float16, torch.bfloat16):
        size = torch.empty((), dtype=torch.float32).element_size()
    forward = (2 * num_features + 1) * size
    backward = 2 * num_features * size
    forward_sent = (world_size - 1) * forward
    backward_sent = 2 * (world_size - 1) / world_size * backward
    return dict(forward_payload=forward, forward_received=world_size * forward, backward_payload=backward,
                forward_sent=forward_sent, backward_sent=backward_sent, sent=forward_sent + backward_sent)


# ----------------------------------------------------------------------------- the module
class SyncBatchNorm(BatchNorm):
    """Batch normalization whose training statistics are those of the whole batch, spread over the
    ranks of process_group (None: the default group): a drop-in for torch.nn.SyncBatchNorm that also
    runs on CPU (gloo). Same constructor, parameters, buffers and state_dict keys as torch's.

    Training, on every rank with its shard x_r (any size, 0 included): sync_batch_norm, i.e. per
    channel mu_B and sigma^2_B (biased) of the union of the shards,
        x_hat = (x_r - mu_B) / sqrt(sigma^2_B + eps),   y_r = weight * x_hat + bias
    and the running statistics updated with mu_B and the unbiased sigma^2_B N / (N - 1), identical on
    every rank. Eval: y = weight * (x - running_mean) / sqrt(running_var + eps) + bias, with no
    communication at all (without running statistics, each rank's own batch statistics: no sync in
    eval, as torch). Without an initialized process group, or in a group of one rank, it is BatchNorm.

    Input: (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W). Every rank of the group must run each
    training forward (and backward) together, as with any collective. On one machine `spawn` starts
    the ranks; on GPUs torchrun does, with NCCL, and nothing here changes (see the module docstring).
    """

    _valid_dims = (2, 3, 4, 5)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None, *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    def _normalize(self, input, running_mean, running_var, use_batch_stats, momentum):
        if self.training and use_batch_stats:
            group = self.process_group if self.process_group is not None else (
                dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
            world_size = _group_world_size(group)
            if world_size > 1:
                _check_sync_inputs(input, running_mean, running_var, self.weight, self.bias, self.eps)
                return _SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean, running_var,
                                                    float(self.eps), float(momentum), group, world_size)
        return super()._normalize(input, running_mean, running_var, use_batch_stats, momentum)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """module with every BN layer replaced by a SyncBatchNorm, as torch.nn.SyncBatchNorm's method:
        torch's BatchNorm1d/2d/3d and SyncBatchNorm and bnlab's BatchNorm, BatchNorm1d/2d/3d and
        SyncBatchNorm. The new layer takes over the old one's weight and bias (the same Parameter
        objects, so an optimizer built before still holds them), its running_mean, running_var and
        num_batches_tracked, and its training flag; state_dict keys stay as they were. A BN module
        itself comes back as a new SyncBatchNorm. bnlab's other variants (ghost, noisy, renorm,
        range BN) normalize differently and are left as they are.
        """
        converted = module
        if isinstance(module, nn.modules.batchnorm._BatchNorm) or type(module) in _OUR_BATCHNORMS:
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, bias=module.bias is not None)
            if module.affine:
                with torch.no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.training = module.training
            if hasattr(module, "qconfig"):
                converted.qconfig = module.qconfig
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted


_OUR_BATCHNORMS = (BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm)


# ----------------------------------------------------------------------------- the launcher
class WorkerError(RuntimeError):
    """A rank of `spawn` raised, or exited without reporting. rank: the first rank that failed;
    traceback: its traceback, as text (the exception itself may not survive the trip)."""

    def __init__(self, message: str, rank: int, traceback: str = ""):
        super().__init__(message)
        self.rank = rank
        self.traceback = traceback


# seconds for the processes to start Python and import torch (2-4 s each here, more on a loaded
# machine), on top of spawn's timeout
STARTUP_TIMEOUT = 120.0


def shard(x: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    """x split along dim 0 into consecutive shards of the given sizes (0 allowed: an empty
    (0, C, ...) shard): rank r takes shard(x, sizes)[r]. Views, not copies. sum(sizes) must be len(x)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError(f"x must be a tensor with a batch dim, got {type(x).__name__}")
    sizes = list(sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of ints >= 0, got {sizes!r}")
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"sizes {sizes} add up to {sum(sizes)}, but x holds {x.shape[0]} examples (dim 0)")
    starts = [0]
    for s in sizes:
        starts.append(starts[-1] + s)
    return [x[a:b] for a, b in zip(starts, starts[1:])]


def _check_importable(fn) -> None:
    """ValueError unless a fresh Python process can import fn by its module and qualified name."""
    while hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        fn = fn.func
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    name = qualname or repr(fn)
    advice = ("spawn starts fresh Python processes (the 'spawn' start method), which import fn by module "
              "and name; define it at the top level of a .py module and import it from there (the course's "
              "workers live in bnlab.distributed, e.g. bnlab.distributed._parity_worker)")
    if module is None or qualname is None:
        raise ValueError(f"fn {name} has no module and name to import it by; {advice}")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(f"fn {qualname} is a lambda or a function defined inside another function; {advice}")
    main = sys.modules.get("__main__")
    if module == "__main__" and not getattr(main, "__file__", None):
        raise ValueError(f"fn {qualname} is defined in a notebook or an interactive session (module "
                         f"__main__), which the worker processes cannot import; {advice}")
    try:
        # a script's __main__ is imported again in each worker (so the script needs a __main__ guard)
        obj = main if module == "__main__" else importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"fn {module}.{qualname} cannot be imported ({error}); {advice}") from None
    if obj is not fn:
        raise ValueError(f"importing {module}.{qualname} gives another object than fn; {advice}")


@contextlib.contextmanager
def _environ(**values):
    """os.environ with values set, restored after: spawned processes inherit it at start."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _write(path: str, obj) -> None:
    """pickle obj to path atomically: the parent never reads half a file."""
    with open(path + ".tmp", "wb") as f:
        pickle.dump(obj, f)
    os.replace(path + ".tmp", path)


def _exit_with_parent(parent_pid: int) -> None:
    """A daemon thread in each rank: if spawn's process dies (killed, kernel restarted), the rank
    exits too instead of running on as an orphan."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="bnlab-parent-watch").start()


def _run_rank(payload: bytes, rank: int, world_size: int, backend: str, port: int, timeout: float,
              folder: str, parent_pid: int) -> None:
    """One rank, in its own process: wait for the others to start, join the process group, run fn,
    report its return value or traceback in folder, and leave the group."""
    _exit_with_parent(parent_pid)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                      OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    try:
        fn, args = pickle.loads(payload)
        # start-up (2-4 s a process) does not count against the timeout: wait here for every rank
        open(os.path.join(folder, f"ready.{rank}"), "w").close()
        started = time.monotonic()
        while sum(name.startswith("ready.") for name in os.listdir(folder)) < world_size:
            if time.monotonic() - started > STARTUP_TIMEOUT:
                raise RuntimeError(f"the other ranks did not start within {STARTUP_TIMEOUT:.0f} s")
            time.sleep(0.01)
        delta = datetime.timedelta(seconds=timeout)
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        # the parent holds the store's server (bound to port 0, so no two runs share a port)
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=delta)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=delta)
        result = fn(rank, world_size, *args)
        _write(os.path.join(folder, f"result.{rank}"), result)
    except BaseException as error:
        _write(os.path.join(folder, f"error.{rank}"),
               (time.time(), f"{type(error).__name__}: {error}", traceback.format_exc()))
        raise SystemExit(1) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _stop(processes) -> None:
    """Terminate, then kill, every process still running, and reap them all."""
    started = [p for p in processes if p.pid is not None]
    for p in started:
        if p.is_alive():
            p.terminate()
    for p in started:
        p.join(2.0)
        if p.is_alive():
            p.kill()
            p.join(5.0)


def spawn(fn, world_size: int, args: tuple = (), timeout: float = 60, backend: str = "gloo") -> list:
    """Run fn(rank, world_size, *args) in world_size fresh processes that form one process group
    (torch.distributed) on this machine, and return [fn's return value on rank 0, on rank 1, ...].

    Each rank gets MASTER_ADDR=127.0.0.1 and a port no other run holds (the store's server binds
    port 0 here), GLOO_SOCKET_IFNAME=lo, RANK, LOCAL_RANK, WORLD_SIZE, OMP_NUM_THREADS=1 and
    torch.set_num_threads(1), then init_process_group(backend, timeout=timeout) (so a collective that
    waits for a rank that never comes raises after timeout seconds) and, whatever happens,
    destroy_process_group. fn must be importable: a top-level function of a .py module (the course's
    workers are in bnlab.distributed), not one defined in a notebook (ValueError, and nothing starts).
    args and return values travel by pickle.

    timeout: seconds for the group to run (process start-up, a few seconds, is not counted). When a
    rank raises, the others are stopped at once and WorkerError names the rank, with its traceback;
    when the run takes longer, every rank still running is killed and TimeoutError names them. No
    process is left behind either way, nor when spawn itself is interrupted.

    backend: "gloo" (CPU, the course) or "nccl" (one GPU per rank). For several GPUs or machines use
    torchrun instead (see the module docstring): spawn is its single-machine stand-in. Called from a
    script (not a notebook), the script needs ``if __name__ == "__main__":`` around its work, as
    with any multiprocessing "spawn": each rank imports the script again.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not isinstance(args, tuple):
        raise ValueError(f"args must be a tuple (fn is called as fn(rank, world_size, *args)), got "
                         f"{type(args).__name__}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    _check_importable(fn)
    try:
        payload = pickle.dumps((fn, args))
    except Exception as error:
        raise ValueError(f"fn and args must be picklable to reach the worker processes: {error}") from None
    context = torch.multiprocessing.get_context("spawn")
    store = dist.TCPStore("127.0.0.1", 0, None, True, timeout=datetime.timedelta(seconds=timeout),
                          wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="bnlab-spawn-") as folder:
        processes = [context.Process(target=_run_rank, name=f"bnlab-rank-{rank}",
                                     args=(payload, rank, world_size, backend, store.port, timeout, folder,
                                           os.getpid()))
                     for rank in range(world_size)]
        try:
            # OMP_NUM_THREADS must be set before the rank imports torch, so in the environment it starts with
            with _environ(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo"):
                for p in processes:
                    p.start()
            outcome, exitcodes = _wait(processes, folder, timeout)
        finally:
            _stop(processes)
            del store
        return _collect(folder, outcome, exitcodes, timeout)


def _wait(processes, folder: str, timeout: float) -> tuple[str, list]:
    """('done', 'failed' or 'timeout', the exit codes then: None for a rank still running), as soon
    as the outcome is known."""
    world_size = len(processes)
    start_deadline = time.monotonic() + STARTUP_TIMEOUT
    deadline = None
    while True:
        names = os.listdir(folder)
        exitcodes = [p.exitcode for p in processes]
        if any(n.startswith("error.") for n in names) or any(c not in (None, 0) for c in exitcodes):
            return "failed", exitcodes
        if all(c == 0 for c in exitcodes):
            return "done", exitcodes
        if deadline is None and sum(n.startswith("ready.") for n in names) == world_size:
            deadline = time.monotonic() + timeout
        if time.monotonic() > (deadline if deadline is not None else start_deadline):
            return "timeout", exitcodes
        multiprocessing.connection.wait([p.sentinel for p in processes if p.exitcode is None], timeout=0.05)


def _collect(folder: str, outcome: str, exitcodes: list, timeout: float) -> list:
    """The ranks' results, or the error that names the rank that failed first."""
    world_size = len(exitcodes)
    errors = {}
    for rank in range(world_size):
        path = os.path.join(folder, f"error.{rank}")
        if os.path.exists(path):
            with open(path, "rb") as f:
                errors[rank] = pickle.load(f)
    if errors:
        first = min(errors, key=lambda r: errors[r][0])
        _, summary, trace = errors[first]
        others = "".join(f"\n(rank {r} failed afterwards: {errors[r][1]})" for r in sorted(errors) if r != first)
        raise WorkerError(f"rank {first} of {world_size} failed: {summary}{others}\n\nrank {first}'s traceback:\n"
                          f"{trace}", first, trace)
    silent = [r for r, code in enumerate(exitcodes) if code not in (None, 0)]
    if outcome == "failed" and silent:
        rank = silent[0]
        raise WorkerError(f"rank {rank} of {world_size} exited with code {exitcodes[rank]} without reporting: "
                          "killed, crashed in C code, or failed before fn started (see its stderr; a script "
                          "that calls spawn needs `if __name__ == '__main__':`)", rank)
    if outcome == "timeout":
        late = [r for r in range(world_size) if not os.path.exists(os.path.join(folder, f"result.{r}"))]
        started = [r for r in late if os.path.exists(os.path.join(folder, f"ready.{r}"))]
        what = (f"did not finish within timeout={timeout:g} s" if len(started) == len(late)
                else f"did not start within {STARTUP_TIMEOUT:.0f} s")
        raise TimeoutError(f"rank{'s' if len(late) > 1 else ''} {', '.join(map(str, late))} of {world_size} "
                           f"{what} (a hang, or a collective waiting for a rank that never joined it) "
                           f"and {'were' if len(late) > 1 else 'was'} killed")
    results = []
    for rank in range(world_size):
        with open(os.path.join(folder, f"result.{rank}"), "rb") as f:
            results.append(pickle.load(f))
    return results


# ----------------------------------------------------------------------------- workers
# spawn imports its fn by name, so the workers that tests and lessons launch live here, not in a
# notebook. Each returns plain data (tensors, numbers, strings) for the caller to compare.
_COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_reduce", "broadcast", "reduce", "reduce_scatter",
                "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "gather", "scatter", "barrier")


@contextlib.contextmanager
def _recorded_collectives(forbid: bool = False):
    """A list of (name, bytes of this rank's payload) for every torch.distributed collective called
    inside the block; forbid=True raises RuntimeError at the first one instead of running it (so that
    an unexpected collective fails at once rather than waiting for ranks that will never join)."""
    log: list[tuple[str, int]] = []
    originals = {name: getattr(dist, name) for name in _COLLECTIVES if hasattr(dist, name)}

    def recorded(name, original):
        def call(*args, **kwargs):
            if forbid:
                raise RuntimeError(f"torch.distributed.{name} was called where no communication is expected")
            # the tensor this rank contributes: all_gather(list, tensor), all_gather_into_tensor(out, tensor)
            tensor = args[1] if name in ("all_gather", "all_gather_into_tensor") and len(args) > 1 else (
                args[0] if args else None)
            log.append((name, tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0))
            return original(*args, **kwargs)
        return call

    for name, original in originals.items():
        setattr(dist, name, recorded(name, original))
    try:
        yield log
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def _parity_worker(rank: int, world_size: int, cases: list[dict]) -> list[dict]:
    """SyncBatchNorm on this rank's shard of each case's batches, for comparison with single-process
    BN on the whole batch. A case: xs, grads (lists of full batches and output gradients, one per step),
    sizes (a list of shard sizes per step), kwargs (for SyncBatchNorm), weight and bias (or None),
    dtype (of the layer; default the input's).
    Per step: this rank's output, input gradient, dgamma, dbeta, running statistics,
    num_batches_tracked and the collectives it made; after the steps, its eval output on its last
    shard (made with communication forbidden)."""
    records = []
    for case in cases:
        xs = case["xs"]
        # dtype: of the parameters and buffers (float32 with float16 input: mixed precision)
        bn = SyncBatchNorm(xs[0].shape[1], dtype=case.get("dtype", xs[0].dtype), **case.get("kwargs", {}))
        with torch.no_grad():
            if bn.weight is not None and case.get("weight") is not None:
                bn.weight.copy_(case["weight"])
            if bn.bias is not None and case.get("bias") is not None:
                bn.bias.copy_(case["bias"])
        steps = []
        for x, grad, sizes in zip(xs, case["grads"], case["sizes"]):
            x_rank = shard(x, sizes)[rank].clone().requires_grad_(True)
            with _recorded_collectives() as log:
                out = bn(x_rank)
                out.backward(shard(grad, sizes)[rank])
            steps.append(dict(
                out=out.detach(), grad_input=x_rank.grad,
                grad_weight=None if bn.weight is None else bn.weight.grad.clone(),
                grad_bias=None if bn.bias is None else bn.bias.grad.clone(),
                running_mean=None if bn.running_mean is None else bn.running_mean.clone(),
                running_var=None if bn.running_var is None else bn.running_var.clone(),
                num_batches_tracked=None if bn.num_batches_tracked is None else int(bn.num_batches_tracked),
                collectives=log))
            bn.zero_grad(set_to_none=True)
        bn.eval()
        with torch.no_grad(), _recorded_collectives(forbid=True):
            eval_out = bn(shard(xs[-1], case["sizes"][-1])[rank])
        records.append(dict(steps=steps, eval_out=eval_out))
    return records


def _pair_groups(world_size: int) -> list[list[int]]:
    """[[0, 1], [2, 3], ...]: the subgroups of _subgroup_worker."""
    return [list(range(i, min(i + 2, world_size))) for i in range(0, world_size, 2)]


def _subgroup_worker(rank: int, world_size: int, x: torch.Tensor, sizes: list[int]) -> dict:
    """SyncBatchNorm scoped to process groups: with the pairs of ranks of _pair_groups, this rank's
    output and running statistics (normalized over its pair's shards only); with a group of this
    rank alone (world size 1: plain BN, communication forbidden), its output and those of BatchNorm."""
    # every rank creates every group, in the same order, as torch.distributed.new_group requires
    pairs = [dist.new_group(ranks) for ranks in _pair_groups(world_size)]
    alone = [dist.new_group([r]) for r in range(world_size)]
    x_rank = shard(x, sizes)[rank]
    pair_bn = SyncBatchNorm(x.shape[1], process_group=pairs[rank // 2], dtype=x.dtype)
    pair_out = pair_bn(x_rank)
    solo_bn = SyncBatchNorm(x.shape[1], process_group=alone[rank], dtype=x.dtype)
    plain_bn = BatchNorm(x.shape[1], dtype=x.dtype)
    with _recorded_collectives(forbid=True):
        solo_out = solo_bn(x_rank)
    return dict(pair_out=pair_out.detach(), pair_running_mean=pair_bn.running_mean.clone(),
                pair_running_var=pair_bn.running_var.clone(), solo_out=solo_out.detach(),
                plain_out=plain_bn(x_rank).detach(), solo_state=solo_bn.state_dict(),
                plain_state=plain_bn.state_dict())


def _gradcheck_worker(rank: int, world_size: int, shape: tuple[int, ...], seed: int) -> bool:
    """torch.autograd.gradcheck (float64) of sync_batch_norm, collectives included, in a process
    group of this rank alone, where the shard is the whole batch (in a larger group the other ranks'
    outputs also depend on this rank's input, which a one-rank finite difference cannot see)."""
    alone = [dist.new_group([r]) for r in range(world_size)]
    g = torch.Generator().manual_seed(seed + rank)
    x = torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_(True)
    weight = (torch.randn(shape[1], generator=g, dtype=torch.float64) + 1).requires_grad_(True)
    bias = torch.randn(shape[1], generator=g, dtype=torch.float64).requires_grad_(True)
    return torch.autograd.gradcheck(
        lambda x, w, b: sync_batch_norm(x, None, None, w, b, process_group=alone[rank]), (x, weight, bias))


def _eval_alone_worker(rank: int, world_size: int, x: torch.Tensor, state: dict) -> dict:
    """Eval forward on rank 0 only, the other ranks never calling the layer, with communication
    forbidden: with running statistics (from state), and without them (batch statistics of this
    rank's own input, as torch's SyncBatchNorm in eval). Empty dict on the other ranks."""
    if rank != 0:
        return {}
    with_stats = SyncBatchNorm(x.shape[1], dtype=x.dtype)
    with_stats.load_state_dict(state)
    without = SyncBatchNorm(x.shape[1], track_running_stats=False, dtype=x.dtype)
    with torch.no_grad(), _recorded_collectives(forbid=True):
        return dict(running=with_stats.eval()(x), batch=without.eval()(x))


def _too_few_worker(rank: int, world_size: int) -> dict:
    """A training batch of one value per channel over all ranks (rank 0 one example, the rest none):
    the ValueError every rank raises, and its running statistics after it (untouched); then a batch of
    two examples on rank 0 (the others empty), which trains."""
    bn = SyncBatchNorm(3, dtype=torch.float64)
    message = None
    try:
        bn(torch.ones(1 if rank == 0 else 0, 3, dtype=torch.float64))
    except ValueError as error:
        message = str(error)
    untouched = bool((bn.running_mean == 0).all() and (bn.running_var == 1).all()
                     and int(bn.num_batches_tracked) == 0)
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 6.0, 9.0]], dtype=torch.float64)
    out = bn(x if rank == 0 else x[:0])
    return dict(message=message, untouched=untouched, out=out.detach(), running_var=bn.running_var.clone())


def _ddp_model(seed: int = 0, dtype=torch.float64) -> nn.Module:
    """The small conv net of the DDP check: Conv2d(2, 4) -> BatchNorm2d -> ReLU -> Linear(64, 6) ->
    BatchNorm1d -> ReLU -> Linear(6, 3), for (N, 2, 4, 4) input, with torch's BN layers, random BN
    weights and biases, the same for the same seed (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                              nn.Linear(64, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).to(dtype)
        with torch.no_grad():
            for bn in (model[1], model[5]):
                bn.weight.copy_(1 + 0.5 * torch.randn_like(bn.weight))
                bn.bias.copy_(0.5 * torch.randn_like(bn.bias))
    return model


def _ddp_worker(rank: int, world_size: int, xs: list, targets: list, sizes: list[int], lr: float) -> dict:
    """_ddp_model converted to SyncBatchNorm, wrapped in DistributedDataParallel and trained by SGD
    (momentum 0.9) on this rank's shard of each batch; returns its state_dict after the last step.

    The loss on rank r is W / N * sum over its shard of (output - target)^2: DDP averages the W
    ranks' gradients, so the step is that of the full-batch mean loss 1 / N * sum over all N examples,
    whatever the shard sizes."""
    from torch.nn.parallel import DistributedDataParallel

    model = SyncBatchNorm.convert_sync_batchnorm(_ddp_model(dtype=xs[0].dtype))
    # no buffer broadcast: each rank's running statistics must agree by themselves
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    for x, target in zip(xs, targets):
        loss = world_size / x.shape[0] * ((ddp(shard(x, sizes)[rank]) - shard(target, sizes)[rank]) ** 2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _raising_worker(rank: int, world_size: int, failing_rank: int, folder: str) -> int:
    """Writes its pid to folder/pid.RANK; failing_rank raises ValueError, the others wait in a barrier
    for it (until spawn stops them)."""
    with open(os.path.join(folder, f"pid.{rank}"), "w") as f:
        f.write(str(os.getpid()))
    if rank == failing_rank:
        raise ValueError(f"rank {rank} fails on purpose")
    dist.barrier()
    return rank


def _hanging_worker(rank: int, world_size: int, hanging_rank: int, folder: str) -> int:
    """Writes its pid to folder/pid.RANK; hanging_rank then sleeps for an hour, the others return."""
    with open(os.path.join(folder, f"pid.{rank}"), "w") as f:
        f.write(str(os.getpid()))
    if rank == hanging_rank:
        time.sleep(3600)
    return rank


def _torch_sync_cpu_worker(rank: int, world_size: int) -> str:
    """What torch.nn.SyncBatchNorm says to CPU input in training once a process group is up: the
    error's text ('' if it accepted it), why the course has its own SyncBatchNorm."""
    layer = nn.SyncBatchNorm(3)
    try:
        layer(torch.randn(4, 3, 2, 2))
    except (ValueError, RuntimeError, NotImplementedError) as error:
        return f"{type(error).__name__}: {error}"
    return ""


_CHECKS = {f.__name__: f for f in (_parity_worker, _subgroup_worker, _gradcheck_worker, _eval_alone_worker,
                                   _too_few_worker, _ddp_worker, _torch_sync_cpu_worker)}


def _checks_worker(rank: int, world_size: int, checks: list[tuple[str, tuple]]) -> list:
    """Several of the workers above in one process group (a group costs seconds to start): checks is
    [(worker name, args), ...]; returns [that worker's result, ...] in order."""
    return [_CHECKS[name](rank, world_size, *args) for name, args in checks]


# ----------------------------------------------------------------------------- lesson 12's training runs
def _devices_model(config: dict, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The net of a _devices_worker config: `bnlab.models.conv_net` with bnlab's BN (norm='bn') and
    config['model'] as its keywords, built from torch.manual_seed(config['seed']), in config['dtype']."""
    from .models import conv_net

    torch.manual_seed(config["seed"])
    model = conv_net(in_channels, num_classes, norm="bn", image_size=image_size, **config.get("model", {}))
    return model.to(config.get("dtype", torch.float32))


def _devices_worker(rank: int, world_size: int, configs: list[dict], data: tuple) -> list:
    """Train a BN conv net data-parallel (DistributedDataParallel over gloo) for each config, one
    after the other in this one process group; data = (x_train, y_train, x_test, y_test).

    A config: world_size w (ranks 0..w-1 take part; the others skip it), per_device_batch b, sync
    (True: the BN layers become SyncBatchNorm, statistics of the global batch of w * b; False:
    bnlab's BN, statistics of each rank's own b examples), seed, steps, lr, momentum (SGD), model
    (`conv_net` keywords), dtype (default float32), record_first_step (default False).
    Every step all ranks take the next w * b indices of one seeded epoch-by-epoch permutation of the
    training set (as a DistributedSampler would) and rank r the r-th b of them; each rank's loss is
    the mean cross-entropy on its b, which DDP's gradient average makes the global batch's mean.
    Buffers are not broadcast: each rank keeps the running statistics its own layers computed.

    Returns per config, on rank 0: dict(test_accuracy (eval mode, rank 0's running statistics),
    seconds (the training loop's wall time), steps); on other ranks of the group dict(seconds,
    steps); None on ranks outside it. With record_first_step, every rank of the group adds first_step:
    the global batch's indices, the initial state_dict, this rank's logits on its shard (training
    mode) and the gradients after DDP's all-reduce, of the first step.
    """
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    from .train import accuracy

    x_train, y_train, x_test, y_test = data
    # new_group must be called by every rank, in the same order, for every group
    sizes = sorted({c["world_size"] for c in configs if c["world_size"] < world_size})
    groups = {w: dist.new_group(list(range(w))) for w in sizes}
    groups[world_size] = dist.group.WORLD
    results = []
    for config in configs:
        w, b = config["world_size"], config["per_device_batch"]
        if w > world_size:
            raise ValueError(f"a config asks for world_size {w}, but the process group has {world_size} ranks")
        if rank >= w:
            results.append(None)
            continue
        group = groups[w]
        dtype = config.get("dtype", torch.float32)
        model = _devices_model(config, x_train.shape[1], int(y_train.max()) + 1, x_train.shape[-1])
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        if config["sync"]:
            model = SyncBatchNorm.convert_sync_batchnorm(model, process_group=group)
        with warnings.catch_warnings():
            # recent torch deprecates broadcast_buffers, yet its replacement still syncs buffers at init
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
            ddp = DistributedDataParallel(model, process_group=group, broadcast_buffers=False)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=config["lr"], momentum=config["momentum"])
        loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(config["seed"])
        order = torch.empty(0, dtype=torch.long)
        record = None
        started = time.perf_counter()
        for step in range(config["steps"]):
            if len(order) < w * b:
                order = torch.randperm(len(x_train), generator=gen)
            batch, order = order[:w * b], order[w * b:]
            mine = batch[rank * b:(rank + 1) * b]
            logits = ddp(x_train[mine].to(dtype))
            loss = loss_fn(logits, y_train[mine])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step == 0 and config.get("record_first_step", False):
                record = dict(indices=batch.clone(), initial_state=initial, logits=logits.detach().clone(),
                              grads={name: p.grad.clone() for name, p in model.named_parameters()})
            optimizer.step()
        seconds = time.perf_counter() - started
        result = dict(seconds=seconds, steps=config["steps"])
        if rank == 0:
            result["test_accuracy"] = accuracy(model, x_test.to(dtype), y_test)
        if record is not None:
            result["first_step"] = record
        results.append(result)
    # a rank that left early would tear down the process group under the others' subgroups
    dist.barrier()
    return results
