"""Functional batch normalization and its relatives: the ``torch.nn.functional`` of ``bnlab``.

``batch_norm`` is torch.nn.functional.batch_norm without torch's BN kernels: an autograd Function
whose forward is a corrected two-pass mean and variance (centre, then subtract the residual mean,
so float32 stays accurate far from zero) in few passes over memory and three fresh full-size
tensors (on a small VM fresh tensors' page faults cost as much as the arithmetic), and whose
backward is lesson 02's closed form; small training inputs take a path with fewer ops, since
there each op's fixed cost dominates. It is twice differentiable: with create_graph=True (Hessian-
vector products, lesson 09) the backward runs in plain ops that autograd differentiates again,
without it the fast kernels run. ``batch_norm_compiled`` is the same math through
torch.compile, fused into one C++ kernel per direction: forward reads x three times (mu~;
residual mean and sigma2_B; y), backward reads dy and x twice. ``batch_norm_plain`` is lesson
01's formula in plain ops, differentiated by autograd and tested equal to it; ``batch_renorm``
and ``range_batch_norm`` are plain ops too.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["batch_norm", "batch_norm_compiled", "batch_norm_plain", "batch_renorm", "range_batch_norm",
           "example_weighted_batch_norm",
           "check_batch_norm_inputs", "check_renorm_limits", "reduction_shapes", "update_running_stats_",
           "expected_gaussian_range", "range_correction", "RANGE_CORRECTIONS"]


def reduction_shapes(input: torch.Tensor) -> tuple[list[int], tuple[int, ...]]:
    """(dims, shape) for per-channel statistics of input (N, C, *spatial): dims = [0, 2, 3, ...], the
    dims a channel's values lie along, and shape = (1, C, 1, ...), which broadcasts a (C,) vector
    over input: ``input.mean(dims).view(shape)``."""
    dims = [0] + list(range(2, input.dim()))
    return dims, (1, input.shape[1]) + (1,) * (input.dim() - 2)


def update_running_stats_(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                          var: torch.Tensor, momentum: float, count: int | None = None) -> None:
    """The running-statistics update of every BN variant here, in place, outside autograd:

        running_mean <- (1 - momentum) * running_mean + momentum * mean
        running_var  <- (1 - momentum) * running_var  + momentum * var * m / (m - 1)   (count=m)
        running_var  <- (1 - momentum) * running_var  + momentum * var                 (count=None)

    count=m: var is the biased variance of m values, tracked unbiased as torch does; None: var is
    already the estimate to track (range BN's s^2). All tensors (C,); the batch statistics are
    cast to the running tensors' dtype (float32 running stats with float16 input).
    """
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        var = var.to(running_var.dtype)
        if count is not None:
            var = var * (count / (count - 1))
        running_var.mul_(1 - momentum).add_(var, alpha=momentum)


def check_batch_norm_inputs(input, running_mean, running_var, weight, bias, training, eps,
                            min_values: int = 2) -> None:
    """Raise ValueError, naming the argument, unless the arguments fit ``batch_norm``'s contract:
    floating input (N, C, *spatial); running_mean, running_var, weight, bias (C,) or None, of the
    input's dtype (or float32 for float16/bfloat16 input); the running tensors both or neither,
    required in eval; eps >= 0; in training at least min_values values per channel (2; SyncBatchNorm's
    shard of one rank may hold 1 or 0, the whole batch is counted later)."""
    if not isinstance(input, torch.Tensor):
        raise ValueError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if not input.is_floating_point():
        raise ValueError(f"input must be a floating-point tensor, got dtype {input.dtype}")
    if input.dim() < 2:
        raise ValueError(f"input must have at least 2 dims (N, C, ...), got shape {tuple(input.shape)}")
    C = input.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be given or both be None")
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if tuple(t.shape) != (C,):
            raise ValueError(f"{name} has shape {tuple(t.shape)}, but the input has {C} channels "
                             f"(shape {tuple(input.shape)}, channels on dim 1)")
        # float32 statistics with a float16/bfloat16 input is torch's mixed-precision case
        if t.dtype != input.dtype and not (t.dtype == torch.float32 and input.dtype in (torch.float16, torch.bfloat16)):
            raise ValueError(f"{name} has dtype {t.dtype} but the input has dtype {input.dtype}; "
                             "convert one of them (e.g. module.double() or input.float())")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if training and input.numel() // max(C, 1) < min_values:
        raise ValueError("expected more than 1 value per channel when training, "
                         f"got input shape {tuple(input.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are required when training=False")


def _half_to_float(t: torch.Tensor | None) -> torch.Tensor | None:
    """float16/bfloat16 in float32, as torch's BN computes them; other dtypes as they are."""
    return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t


def _rows(t: torch.Tensor) -> torch.Tensor | None:
    """A contiguous (N, C, *spatial) tensor as (N, C, L): per-channel reductions then run along
    contiguous rows (twice as fast on CPU as reducing dims 0, 2, 3 at once). None otherwise."""
    if t.dim() > 2 and t.is_contiguous():
        return t.view(t.shape[0], t.shape[1], -1)
    return None


def _channel_sum(t: torch.Tensor, dims) -> torch.Tensor:
    """sum over all dims but 1, (C,)."""
    rows = _rows(t)
    return t.sum(dims) if rows is None else rows.sum(2).sum(0)


def _channel_sum_squares(t: torch.Tensor, dims) -> torch.Tensor:
    """sum of t^2 over all dims but 1, (C,), in one read of t: no t * t is written."""
    rows = _rows(t)
    if rows is None:
        return torch.linalg.vector_norm(t, 2, dims).square_()
    return torch.linalg.vector_norm(rows, 2, 2).square_().sum(0)


def _blocks(t: torch.Tensor) -> list[slice]:
    """Slices of dim 0 of about BLOCK_BYTES each, for a chain of ops on one block at a time: the
    block the first op writes stays in cache for the next ones (one pass over memory for the
    chain instead of one per op). One block for a non-contiguous tensor."""
    if not t.is_contiguous() or t.dim() == 0 or t.shape[0] < 2:
        return [slice(None)]
    step = max(1, BLOCK_BYTES // max(1, t[0].numel() * t.element_size()))
    return [slice(i, i + step) for i in range(0, t.shape[0], step)]


def _as(t: torch.Tensor, dtype) -> torch.Tensor:
    """t in dtype; no call at all when it is already (t.to costs ~0.7 us even then)."""
    return t if t.dtype == dtype else t.to(dtype)


def _add(total: torch.Tensor | None, part: torch.Tensor) -> torch.Tensor:
    return part if total is None else total.add_(part)


def _batch_norm_grads(x, weight, dy, eps):
    """(dL/dx, dL/dweight, dL/dbias) of training-mode BN in plain differentiable ops, from x itself:

        x_hat = (x - mu_B) / sigma,  sigma = sqrt(sigma2_B + eps)
        dx = gamma / (m sigma) * (m dy - sum dy - x_hat * sum dy x_hat),  dgamma = sum dy x_hat,  dbeta = sum dy

    with sums over a channel's m values. mu_B and sigma are recomputed here from x, not taken from
    the forward pass, so autograd differentiates dx through them too: its derivatives are the
    second derivatives of BN (Hessian-vector products, gradient penalties), to any order.
    weight may be None (gamma = 1); (C,) vectors come back for dgamma and dbeta."""
    dims, shape = reduction_shapes(x)
    m = x.numel() // x.shape[1]
    xc = x - x.mean(dims, keepdim=True)
    # the residual mean, as the forward passes: keeps float32 accurate far from zero
    xc = xc - xc.mean(dims, keepdim=True)
    invstd = torch.rsqrt((xc * xc).mean(dims, keepdim=True) + eps)
    x_hat = xc * invstd
    sum_dy = dy.sum(dims, keepdim=True)
    sum_dy_xhat = (dy * x_hat).sum(dims, keepdim=True)
    scale = invstd if weight is None else invstd * weight.view(shape)
    dx = (scale / m) * (m * dy - sum_dy - x_hat * sum_dy_xhat)
    return dx, sum_dy_xhat.view(-1), sum_dy.view(-1)


# a block of each of the three tensors a chain touches (x, dy, the output) fits the 32 MiB L3 of the
# course's 2-core VM; 4 MiB was a little faster than 2 or 8 (fewer ops, each a parallel region)
BLOCK_BYTES = 4 << 20
# training inputs up to this many values take BatchNormFunction's few-ops path (see _forward_small)
SMALL_INPUT = 1 << 17


class BatchNormFunction(torch.autograd.Function):
    """y = gamma * x_hat + beta, x_hat = (x - mu_B) / sqrt(sigma2_B + eps), with lesson 02's closed-form
    backward, in few passes over memory and few fresh tensors (eager torch cannot fuse ops).

    Passes over an x-sized tensor in training (R: read, W: write; reductions run along contiguous
    rows, see _rows). Ops in brackets run block by block (_blocks, 4 MiB of x each), so that only
    the first touch of a block goes to memory and the rest of the chain finds it in cache:
        forward:  mu~ = mean x (R); [xc = x - mu~ into y's buffer (RW); sum xc; sum xc^2 by
                  vector_norm]; [y = xc * s in place (RW); y += t]              memory: 3R 2W
        backward: [sum dy (R); xc = x - mu~ into a block-sized scratch (R); xc *= dy; its sum];
                  [dx = x - mu~ (RW); dx *= k2; dx += k3; dx += dy * k (R)]     memory: 4R 1W
    that is 10 passes against the 8 that BN needs (benchmarks/bench_batchnorm.py), 14 ops over
    x-sized tensors, with s, t, k, k2, k3 per-channel (C,) vectors and two fresh x-sized tensors
    (y, dx), as torch's BN. Blocks were 10-15% faster than whole-tensor ops. Saving xc instead of x
    (two ops fewer in backward, three fresh tensors) was 5-15% slower: a fresh 16 MiB tensor costs
    more in page faults on this VM than two passes. The kernel before this one made 21 passes
    (11 + 10) with three fresh tensors and slower ops: reductions over dims (0, 2, 3)
    (twice the time of row sums), the squares written out, and addcmul with two broadcast (C,)
    operands, which takes torch's unvectorized CPU loop (1.8 ms where a mul and an in-place add take
    0.75 ms). Measured and dropped: torch.var_mean (Welford, 80x slower than a mean on CPU), bmm or
    einsum as batched dot products for sum dy * xc (3 to 6 ms against 0.9 ms for mul and sum),
    a depthwise 1x1 convolution for the per-channel affine map (25 ms).

    Eval is y = x * s (RW), y += t (RW): 1.6x the time of torch's single pass, for want of a
    vectorized x * s + t with (C,) s and t; run block by block it was 10-15% slower still.

    Training inputs of up to SMALL_INPUT values take _forward_small / _backward_small instead.

    Second derivatives: the kernels above save mu~, sigma and xc, which autograd sees as constants,
    and write into buffers in place, so their dx has no graph back to x. With create_graph=True
    autograd runs backward with grad mode on, and backward then takes _backward_differentiable:
    the same closed form in plain ops (_batch_norm_grads), the statistics recomputed from the saved
    input, so autograd differentiates dx (dgamma, dbeta) in x, gamma and dy to any order. Forward
    plus that backward took 1.6x the fast pair's time at (2, 16, 8, 8) and 3.3x at (64, 64, 32, 32)
    (1 thread), which is why the fast backward still runs whenever no graph is asked for. Each path
    saves (input, weight) for it, as torch's BN does (the few-ops path saved neither before).
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, training, momentum, eps):
        dims, shape = reduction_shapes(input)
        x = _half_to_float(input)
        ctx.training, ctx.small, ctx.eps = training, training and x.numel() <= SMALL_INPUT, eps
        ctx.dtypes = input.dtype, None if weight is None else weight.dtype, None if bias is None else bias.dtype
        if ctx.small:
            return BatchNormFunction._forward_small(ctx, input, x, weight, bias, running_mean, running_var,
                                                    momentum, eps, dims, shape).to(input.dtype)
        if training:
            m = x.numel() // x.shape[1]
            # Corrected two-pass statistics: E[x^2] - E[x]^2 cancels catastrophically when
            # |mu_B| >> sigma_B (float32 inputs offset by 1e4), so square the centred values
            # xc = x - mu~. At 1e4 a float32 mean mu~ is good to only ~1e-3, so the residual mean
            # `shift` of xc (small and exact enough) corrects it: mu_B = mu~ + shift, and
            # sigma2_B = mean xc^2 - shift^2. torch.var_mean (Welford) was 80x slower on CPU.
            mean = _channel_sum(x, dims).div_(m)
            # xc is written where y goes, then turned into y in place: backward recomputes it
            # from x, which costs two passes but no third fresh tensor and 16 MiB less held per
            # layer until backward (x is saved anyway, as torch's BN saves it)
            out = torch.empty_like(x)
            blocks = _blocks(x)
            sum_xc = sum_xc2 = None
            for b in blocks:
                xc = torch.sub(x[b], mean.view(shape), out=out[b])
                sum_xc = _add(sum_xc, _channel_sum(xc, dims))
                sum_xc2 = _add(sum_xc2, _channel_sum_squares(xc, dims))
            shift = sum_xc.div_(m)
            var = sum_xc2.div_(m).sub_(shift * shift)
            invstd = torch.rsqrt(var + eps)
            if running_mean is not None:
                update_running_stats_(running_mean, running_var, mean + shift, var, momentum, count=m)
            # y = gamma * invstd * (xc - shift) + beta
            scale = invstd if weight is None else weight * invstd
            offset = -shift * scale if bias is None else bias - shift * scale
            for b in blocks:
                out[b].mul_(scale.view(shape)).add_(offset.view(shape))
            # every path saves (input, weight) last, for _backward_differentiable (x is input unless
            # the input is float16/bfloat16)
            ctx.save_for_backward(x, mean, shift, invstd, input, weight)
        else:
            invstd = torch.rsqrt(running_var + eps)
            scale = invstd if weight is None else weight * invstd
            offset = -running_mean * scale if bias is None else bias - running_mean * scale
            out = torch.mul(x, scale.view(shape)).add_(offset.view(shape))
            # the input itself (no copy): dL/dgamma needs x - running_mean only in backward
            ctx.save_for_backward(input, running_mean, None, invstd, input, weight)
        return out.to(input.dtype)

    # Small inputs (lesson 08's batches of 2): each torch op costs ~1.5 us whatever its size, so
    # these two count ops instead of passes: statistics kept as (1, C, 1, ...) (no views), xc
    # centred exactly (so no shift terms later), the running statistics updated without
    # update_running_stats_'s no_grad and casts (autograd is off inside Function.forward).
    @staticmethod
    def _forward_small(ctx, input, x, weight, bias, running_mean, running_var, momentum, eps, dims, shape):
        m = x.numel() // x.shape[1]
        # sums, scaled by 1 / m inside the next op (alpha): one op fewer each
        sum_x = x.sum(dims, keepdim=True)
        xc = torch.sub(x, sum_x, alpha=1 / m)
        # the residual mean, as in forward: a float32 mean is a few ulps off, which 1 / sigma_B amplifies
        sum_xc = xc.sum(dims, keepdim=True)
        xc.sub_(sum_xc, alpha=1 / m)
        var = (xc * xc).sum(dims, keepdim=True).mul_(1 / m)
        invstd = (var + eps).rsqrt_()
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(sum_x.add_(sum_xc).view(-1), alpha=momentum / m)
            running_var.mul_(1 - momentum).add_(var.view(-1), alpha=momentum * m / (m - 1))
        scale = invstd if weight is None else invstd * weight.view(shape)
        ctx.save_for_backward(xc, invstd, scale, input, weight)
        return xc * scale if bias is None else torch.addcmul(bias.view(shape), xc, scale)

    @staticmethod
    def _backward_small(ctx, dy):
        xc, invstd, scale, _, _ = ctx.saved_tensors
        dims, _ = reduction_shapes(xc)
        m = xc.numel() // xc.shape[1]
        sum_dy = dy.sum(dims, keepdim=True)
        sum_dy_xhat = (dy * xc).sum(dims, keepdim=True).mul_(invstd)
        grad_input = None
        if ctx.needs_input_grad[0]:
            # dx = scale * (dy - mean(dy) - x_hat * mean(dy * x_hat)), x_hat = xc * invstd; dy - mean(dy)
            # first: with few values the two terms nearly cancel, and this order rounds least
            grad_input = torch.sub(dy, sum_dy, alpha=1 / m).addcmul_(xc, invstd * sum_dy_xhat, value=-1 / m)
            grad_input.mul_(scale)
        return grad_input, sum_dy_xhat.view(-1), sum_dy.view(-1)

    @staticmethod
    def _backward_differentiable(ctx, grad_out):
        """backward in ops autograd can differentiate, for create_graph=True (Hessian-vector products):
        the statistics are recomputed from the saved input, so the graph of dx reaches x, weight
        and dy (the fast kernels' saved mu, sigma and xc are constants to autograd)."""
        saved = ctx.saved_tensors
        input, weight = saved[-2:]
        x, dy = _half_to_float(input), _half_to_float(grad_out)
        if ctx.training:
            grads = _batch_norm_grads(x, weight, dy, ctx.eps)
        else:
            # eval: an affine map of x, with the running statistics as constants
            running_mean, invstd = saved[1], saved[3]
            dims, shape = reduction_shapes(x)
            scale = invstd if weight is None else invstd * weight
            grads = (dy * scale.view(shape), ((x - running_mean.view(shape)) * dy).sum(dims) * invstd,
                     dy.sum(dims))
        return tuple(_as(g, dtype) if need else None
                     for g, need, dtype in zip(grads, ctx.needs_input_grad[:3], ctx.dtypes))

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():
            # create_graph=True: autograd runs backward with grad mode on only then
            return (*BatchNormFunction._backward_differentiable(ctx, grad_out), None, None, None, None, None)
        dy = _half_to_float(grad_out)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if ctx.small:
            grad_input, grad_weight, grad_bias = BatchNormFunction._backward_small(ctx, dy)
            grads = [None if g is None or not need else _as(g, dtype) for g, need, dtype
                     in zip((grad_input, grad_weight, grad_bias), (need_x, need_w, need_b), ctx.dtypes)]
            return (*grads, None, None, None, None, None)
        # training: x, mu~ (xc = x - mu~), xc's residual mean; eval: the input, running_mean, None
        x, centre, shift, invstd, _, weight = ctx.saved_tensors
        dims, shape = reduction_shapes(x)
        scale = invstd if weight is None else weight * invstd
        grad_input = grad_weight = grad_bias = None
        if not ctx.training:
            # eval: mu and sigma^2 are the running constants, BN is an affine map of x
            if need_x:
                grad_input = torch.mul(dy, scale.view(shape))
            if need_w:
                grad_weight = _channel_sum((_half_to_float(x) - centre.view(shape)).mul_(dy), dims).mul_(invstd)
            if need_b:
                grad_bias = _channel_sum(dy, dims)
        else:
            m = x.numel() // x.shape[1]
            # xc * dy for the sums, in a block-sized scratch that stays in cache (dx's buffer when
            # there is one block). xc, not x: sum dy * x - mu * sum dy cancels catastrophically
            # when |mu| >> sigma
            grad_input = torch.empty_like(x)
            blocks = _blocks(x)
            scratch = grad_input if len(blocks) == 1 else torch.empty_like(x[blocks[0]])
            sum_dy = sum_dy_xc = None
            for b in blocks:
                xb = x[b]
                sum_dy = _add(sum_dy, _channel_sum(dy[b], dims))
                xc_dy = torch.sub(xb, centre.view(shape), out=scratch[:xb.shape[0]]).mul_(dy[b])
                sum_dy_xc = _add(sum_dy_xc, _channel_sum(xc_dy, dims))
            # sum dy * x_hat = invstd * (sum dy * xc - shift * sum dy)
            sum_dy_xhat = sum_dy_xc.sub_(shift * sum_dy).mul_(invstd)
            if need_x:
                # dx = gamma * invstd * (dy - mean(dy) - x_hat * mean(dy * x_hat)), x_hat = (xc - shift) * invstd
                #    = k2 * xc + k3 + k * dy
                k2 = -scale * invstd * sum_dy_xhat / m
                k3 = -scale * sum_dy / m - k2 * shift
                for b in blocks:
                    dx = torch.sub(x[b], centre.view(shape), out=grad_input[b])
                    dx.mul_(k2.view(shape)).add_(k3.view(shape)).addcmul_(dy[b], scale.view(shape))
            else:
                grad_input = None
            grad_weight = sum_dy_xhat if need_w else None
            grad_bias = sum_dy if need_b else None
        # back to the dtypes of input, weight and bias (float16 ones were computed in float32)
        grads = [None if g is None else _as(g, dtype)
                 for g, dtype in zip((grad_input, grad_weight, grad_bias), ctx.dtypes)]
        return (*grads, None, None, None, None, None)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalization over dim 1 of ``input``, like ``torch.nn.functional.batch_norm``.

    For each channel c, over the batch and all spatial positions (m values):
        training:  mu_c = mean x_c,  var_c = mean (x_c - mu_c)^2  (biased, used to normalize)
                   running_mean <- (1 - momentum) * running_mean + momentum * mu_c
                   running_var  <- (1 - momentum) * running_var  + momentum * var_c * m / (m - 1)
                   (in place, when the running tensors are given)
        eval:      mu_c = running_mean_c,  var_c = running_var_c
        y = weight_c * (x - mu_c) / sqrt(var_c + eps) + bias_c

    input: (N, C, *spatial); running_mean, running_var, weight, bias: (C,) or None.

    Twice differentiable in input, weight and bias (torch.autograd.grad(..., create_graph=True),
    then differentiate the gradients: Hessian-vector products, gradient penalties), in training
    (through mu_c and var_c too) and eval, as torch's batch_norm; first-order backward keeps the
    fast kernel. The running statistics are constants: no gradient flows into them.
    """
    check_batch_norm_inputs(input, running_mean, running_var, weight, bias, training, eps)
    return BatchNormFunction.apply(input, weight, bias, running_mean, running_var,
                                   bool(training), float(momentum), float(eps))


# ----------------------------------------------------------------------------- compiled
class _FusedBatchNormFunction(torch.autograd.Function):
    """The training-mode formula of BatchNormFunction written for torch.compile: inductor fuses each
    line's elementwise work into the reductions around it, so plain ops cost no extra passes.
    Returns (y, mu_B, sigma2_B); the closed-form backward (lesson 02) keeps inductor from
    differentiating the statistics op by op (that graph was 1.9x slower than this one)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        dims, shape = reduction_shapes(x)
        mean = x.mean(dims, keepdim=True)
        xc = x - mean
        # corrected two-pass, as BatchNormFunction: shift is xc's residual mean (see there)
        shift = xc.mean(dims, keepdim=True)
        var = (xc * xc).mean(dims, keepdim=True) - shift * shift
        invstd = torch.rsqrt(var + eps)
        mean = mean + shift
        scale = invstd if weight is None else invstd * weight.view(shape)
        y = (x - mean) * scale
        if bias is not None:
            y = y + bias.view(shape)
        ctx.save_for_backward(x, mean, invstd, weight)
        ctx.eps = eps
        return y, mean.view(-1), var.view(-1)

    @staticmethod
    def backward(ctx, dy, _grad_mean, _grad_var):
        x, mean, invstd, weight = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph=True, which reaches here only where this runs eagerly (past dynamo's recompile
            # limit): the saved mean and invstd are constants to autograd, so recompute them from x.
            # Compiled, aot_autograd raises on the second backward instead (see batch_norm_compiled).
            grad_input, grad_weight, grad_bias = _batch_norm_grads(x, weight, dy, ctx.eps)
            return grad_input, None if weight is None else grad_weight, grad_bias, None
        dims, shape = reduction_shapes(x)
        m = x.numel() // x.shape[1]
        x_hat = (x - mean) * invstd
        sum_dy = dy.sum(dims, keepdim=True)
        sum_dy_xhat = (dy * x_hat).sum(dims, keepdim=True)
        scale = invstd if weight is None else invstd * weight.view(shape)
        dx = scale * (dy - sum_dy / m - x_hat * (sum_dy_xhat / m))
        grad_weight = None if weight is None else sum_dy_xhat.view(-1)
        return dx, grad_weight, sum_dy.view(-1), None


def _batch_norm_formula(input, running_mean, running_var, weight, bias, training: bool, momentum: float,
                        eps: float):
    """What batch_norm_compiled compiles: batch_norm's math in plain ops, running statistics updated
    in place (inductor writes them back into the caller's tensors)."""
    x = _half_to_float(input)
    if training:
        y, mean, var = _FusedBatchNormFunction.apply(x, weight, bias, eps)
        if running_mean is not None:
            m = x.numel() // x.shape[1]
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(var.to(running_var.dtype), alpha=momentum * m / (m - 1))
    else:
        # an affine map of x: autograd's derivative is the closed form
        _, shape = reduction_shapes(x)
        scale = torch.rsqrt(running_var + eps)
        if weight is not None:
            scale = scale * weight
        y = (x - running_mean.view(shape)) * scale.view(shape)
        if bias is not None:
            y = y + bias.view(shape)
    return y.to(input.dtype)


_compiled_formula = None


def _compiler_missing() -> str | None:
    """Why torch.compile cannot build CPU kernels here (None when it can): inductor needs a C++ compiler."""
    import shutil
    import sys
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if sys.platform == "win32":
        return "torch.compile's CPU backend needs a C++ compiler setup that Windows lacks by default"
    import os
    cxx = os.environ.get("CXX")
    if not any(shutil.which(c) for c in ([cxx] if cxx else []) + ["g++", "c++", "clang++"]):
        return "no C++ compiler (g++, c++ or clang++) on PATH, which torch.compile needs for CPU kernels"
    return None


def batch_norm_compiled(input, running_mean, running_var, weight=None, bias=None, training=False,
                        momentum=0.1, eps=1e-5):
    """batch_norm (same arguments, math, checks and in-place running statistics) compiled by
    torch.compile from bnlab's own formula. Inductor fuses training into one kernel per direction:
    forward reads x for mu~, again for the residual mean and sigma2_B, and once more to write y;
    backward reads dy and x for sum dy and sum dy * x_hat, then again to write dx.

    Compiled with dynamic=False on first use: the first call takes seconds (forward and backward
    are compiled: 5 s on the course's 2-core VM, 10 s with inductor's disk cache cold), and each
    new input shape, dtype, layout, training flag or eps compiles again (about 2 s). After
    torch._dynamo.config.recompile_limit (8) of them torch warns and runs the formula eagerly
    from then on (correct, but slower than batch_norm). Where torch.compile cannot run (no C++
    compiler, Windows, a torch without it) this warns once (RuntimeWarning) and runs the eager
    batch_norm instead.

    Once differentiable where it is compiled: create_graph=True gives the right first derivatives,
    but differentiating them raises torch's RuntimeError "torch.compile with aot_autograd does not
    currently support double backward" (not a wrong answer). For Hessian-vector products use
    batch_norm, which is twice differentiable; so is this function where it runs eagerly (past the
    recompile limit, or without a compiler).
    """
    global _compiled_formula
    check_batch_norm_inputs(input, running_mean, running_var, weight, bias, training, eps)
    if _compiled_formula is None:
        why = _compiler_missing()
        if why is not None:
            import warnings
            warnings.warn(f"batch_norm_compiled runs the eager batch_norm: {why}", RuntimeWarning, stacklevel=2)
            _compiled_formula = BatchNormFunction.apply
        else:
            _compiled_formula = torch.compile(_batch_norm_formula, dynamic=False)
    if _compiled_formula is BatchNormFunction.apply:
        return BatchNormFunction.apply(input, weight, bias, running_mean, running_var,
                                       bool(training), float(momentum), float(eps))
    return _compiled_formula(input, running_mean, running_var, weight, bias, bool(training), float(momentum),
                             float(eps))


def batch_norm_plain(input: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                     eps: float = 1e-5) -> torch.Tensor:
    """Training-mode batch normalization as lesson 01 writes it; autograd does the backward.

    For each channel c, over the batch and all spatial positions:
        mu_c = mean x_c,   var_c = mean (x_c - mu_c)^2,   x_hat = (x - mu_c) / sqrt(var_c + eps)
        y = weight_c * x_hat + bias_c

    input: (N, C, *spatial); weight, bias: (C,) or None. No running statistics: this is the formula
    to read, and `batch_norm` (the same numbers, tested) is the one to run.
    """
    check_batch_norm_inputs(input, None, None, weight, bias, True, eps)
    dims, shape = reduction_shapes(input)
    mu = input.mean(dims, keepdim=True)
    var = ((input - mu) ** 2).mean(dims, keepdim=True)
    y = (input - mu) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight.view(shape)
    if bias is not None:
        y = y + bias.view(shape)
    return y


# ----------------------------------------------------------------------------- relatives of BN
def _affine(x_hat: torch.Tensor, weight, bias, shape, dtype) -> torch.Tensor:
    """weight * x_hat + bias, returned in the input's dtype: with float16/bfloat16 input and
    float32 parameters (mixed precision) the product is float32, and torch's BN returns float16."""
    if weight is not None:
        x_hat = x_hat * weight.view(shape)
    if bias is not None:
        x_hat = x_hat + bias.view(shape)
    return x_hat.to(dtype)


def _compute_precision(input: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 input in float32: with 11 or 8 bits of mantissa, x - mu of values far from
    zero keeps few digits, and sums over many values lose more (torch's BN accumulates in float32)."""
    return input.float() if input.dtype in (torch.float16, torch.bfloat16) else input


def _normalize_with_running_stats(input, running_mean, running_var, eps, shape) -> torch.Tensor:
    """The eval-mode x_hat of both variants, BN's own: (x - running_mean) / sqrt(running_var + eps)."""
    return (input - running_mean.view(shape)) / torch.sqrt(running_var.view(shape) + eps)


def _centre(x: torch.Tensor, dims, shape):
    """(values per channel m, batch mean (C,), x - mean): the start of both variants' training pass."""
    mean = x.mean(dims)
    return x.numel() // x.shape[1], mean, x - mean.view(shape)


def check_renorm_limits(r_max, d_max) -> None:
    """Raise ValueError unless r_max >= 1 and d_max >= 0, batch_renorm's clip limits (numbers, not bools)."""
    # not (x >= 1) also rejects NaN
    if isinstance(r_max, bool) or not isinstance(r_max, (int, float)) or not r_max >= 1:
        raise ValueError(f"r_max must be a number >= 1 (r is clipped to [1/r_max, r_max]), got {r_max!r}")
    if isinstance(d_max, bool) or not isinstance(d_max, (int, float)) or not d_max >= 0:
        raise ValueError(f"d_max must be a number >= 0 (d is clipped to [-d_max, d_max]), got {d_max!r}")


def batch_renorm(input, running_mean, running_var, weight=None, bias=None, training=False,
                 momentum=0.1, eps=1e-5, r_max=3.0, d_max=5.0):
    """Batch renormalization (Ioffe 2017) over dim 1 of ``input``.

    Training, for each channel c over its m values (batch and spatial positions):
        mu_B = mean x_c,   sigma_B = sqrt(var_B + eps)   (var_B biased, as BN normalizes)
        sigma = sqrt(running_var + eps)
        r = clip(sigma_B / sigma, 1/r_max, r_max),   d = clip((mu_B - running_mean) / sigma, -d_max, d_max)
        x_hat = (x - mu_B) / sigma_B * r + d        r and d are constants in the backward pass
    then running_mean and running_var are updated in place exactly as batch_norm does, after r and
    d were computed from the old values. Eval: x_hat = (x - running_mean) / sigma. Then
    y = weight * x_hat + bias.

    Where r and d are not clipped, x_hat = (x - running_mean) / sigma: the eval output, whatever
    else is in the batch. r_max=1, d_max=0 gives r=1, d=0, which is batch_norm. Since r and d
    are constants, dL/dx is r times batch_norm's dL/dx.

    input: (N, C, *spatial); running_mean, running_var: (C,), required; weight, bias: (C,) or None.
    """
    check_batch_norm_inputs(input, running_mean, running_var, weight, bias, training, eps)
    if running_mean is None:
        raise ValueError("batch_renorm needs running_mean and running_var: r and d compare the batch "
                         "statistics with them")
    check_renorm_limits(r_max, d_max)
    dims, shape = reduction_shapes(input)
    x = _compute_precision(input)
    if not training:
        return _affine(_normalize_with_running_stats(x, running_mean, running_var, eps, shape),
                       weight, bias, shape, input.dtype)
    m, mean, centred = _centre(x, dims, shape)
    var = (centred * centred).mean(dims)
    sigma_batch = torch.sqrt(var + eps)
    with torch.no_grad():
        sigma_running = torch.sqrt(running_var + eps)
        r = (sigma_batch / sigma_running).clamp(1.0 / r_max, r_max).to(x.dtype)
        d = ((mean - running_mean) / sigma_running).clamp(-d_max, d_max).to(x.dtype)
    # after r and d: they compare the batch with the running statistics as they were before it
    update_running_stats_(running_mean, running_var, mean, var, momentum, count=m)
    x_hat = centred * (r / sigma_batch).view(shape) + d.view(shape)
    return _affine(x_hat, weight, bias, shape, input.dtype)


RANGE_CORRECTIONS = ("gaussian", "paper")


@functools.lru_cache(maxsize=256)
def expected_gaussian_range(n: int) -> float:
    """E[max - min] of n independent standard normal values (d2(n) in quality-control tables).

        d2(n) = integral over x of 1 - Phi(x)^n - (1 - Phi(x))^n
              = 2 * integral_0^inf of 1 - Phi(x)^n - Phi(-x)^n      (symmetric in x)

    d2(2) = 2/sqrt(pi) = 1.128, d2(3) = 3/sqrt(pi), d2(10) = 3.078; it grows like 2 sqrt(2 ln n).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n == 1:
        return 0.0  # exactly, rather than the integral's rounding error
    # the integrand is smooth and even, so the trapezoid rule converges fast: 4001 points give
    # 2/sqrt(pi) to 1e-15; the upper end lies 8 beyond where the maximum of n values sits
    top = math.sqrt(2 * math.log(max(n, 2))) + 8.0
    x = torch.linspace(0.0, top, 4001, dtype=torch.float64)
    # 1 - Phi^n as -expm1(n log Phi): stays accurate where Phi^n is within rounding of 1
    integrand = -torch.expm1(n * torch.special.log_ndtr(x)) - torch.exp(n * torch.special.log_ndtr(-x))
    return 2.0 * float(torch.trapezoid(integrand, x))


def range_correction(n: int, correction: str = "gaussian") -> float:
    """C(n) in RangeBatchNorm's scale s = C(n) * range, for a channel with n values.

    'gaussian': C(n) = 1 / expected_gaussian_range(n), so that E[s] = sigma for Gaussian data.
    'paper':    C(n) = 1 / sqrt(2 ln n), Banner et al.'s constant. For Gaussian data E[s] is
                0.96 sigma at n=2 but 1.43 sigma at n=10, 1.65 at 100, 1.80 at 10^4: s tends to
                2 sigma, since E[max] ~ sqrt(2 ln n) sigma and the range spans both tails.
    """
    if correction not in RANGE_CORRECTIONS:
        raise ValueError(f"correction must be one of {RANGE_CORRECTIONS}, got {correction!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"the range of a channel needs n >= 2 values, got n={n!r}")
    if correction == "paper":
        return 1.0 / math.sqrt(2.0 * math.log(n))
    return 1.0 / expected_gaussian_range(n)


def range_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                     momentum=0.1, eps=1e-5, correction="gaussian"):
    """Range batch normalization (Banner, Hubara, Hoffer & Soudry 2018) over dim 1 of ``input``.

    Training, for each channel c over its n values (batch and spatial positions):
        mu = mean x_c,   range = max(x_c - mu) - min(x_c - mu),   s = C(n) * range
        x_hat = (x - mu) / sqrt(s^2 + eps)
        running_mean <- (1 - momentum) * running_mean + momentum * mu
        running_var  <- (1 - momentum) * running_var  + momentum * s^2     (in place, when given)
    Eval (or training without running tensors: batch statistics): x_hat = (x - running_mean) /
    sqrt(running_var + eps). Then y = weight * x_hat + bias. C(n) is range_correction(n, correction).
    Gradients flow through mu, max and min by autograd (to the arg-max and arg-min values).

    input: (N, C, *spatial); running_mean, running_var, weight, bias: (C,) or None.
    """
    check_batch_norm_inputs(input, running_mean, running_var, weight, bias, training, eps)
    if correction not in RANGE_CORRECTIONS:
        raise ValueError(f"correction must be one of {RANGE_CORRECTIONS}, got {correction!r}")
    dims, shape = reduction_shapes(input)
    x = _compute_precision(input)
    if not training:
        return _affine(_normalize_with_running_stats(x, running_mean, running_var, eps, shape),
                       weight, bias, shape, input.dtype)
    n, mean, centred = _centre(x, dims, shape)
    scale = range_correction(n, correction) * (centred.amax(dims) - centred.amin(dims))
    scale_sq = scale * scale
    if running_mean is not None:
        # s^2 is already the estimate of var to track: no m / (m - 1)
        update_running_stats_(running_mean, running_var, mean, scale_sq, momentum)
    # eps inside the square root, as BN's sqrt(var + eps): s^2 plays the part of var
    x_hat = centred / torch.sqrt(scale_sq + eps).view(shape)
    return _affine(x_hat, weight, bias, shape, input.dtype)


def example_weighted_batch_norm(input, running_mean, running_var, weight=None, bias=None, alpha=0.0,
                                eps=1e-5):
    """Inference example weighting (Summers & Dinneen 2020, "Four things everyone should know to
    improve batch normalization", section 3): at inference, normalize each example n with the
    moments of a mixture of its own distribution (weight alpha) and the population's (weight
    1 - alpha), instead of the population's alone. For channel c of example n, over its spatial
    values x_{n,c} (one value for (N, C) input):

        mu_n    = alpha * mean(x_{n,c}) + (1 - alpha) * running_mean_c
        var_n   = alpha * (var(x_{n,c}) + (mean(x_{n,c}) - mu_n)^2)
                  + (1 - alpha) * (running_var_c + (running_mean_c - mu_n)^2)
        y       = weight_c * (x - mu_n) / sqrt(var_n + eps) + bias_c

    var(x_{n,c}) is the biased variance (0 for a single value). alpha = 0 is eval-mode BN; alpha = 1
    normalizes each example by its own statistics alone (instance normalization for (N, C, H, W)).
    An example whose brightness differs from the training population's (lesson 08's scans) is then
    partly corrected, with no batch needed: each example is normalized on its own, at batch 1 too.
    Nothing is updated; gradients flow by autograd.

    input: (N, C, *spatial); running_mean, running_var: (C,), required; weight, bias: (C,) or None.
    """
    check_batch_norm_inputs(input, running_mean, running_var, weight, bias, False, eps)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the example's own statistics), "
                         f"got {alpha!r}")
    _, shape = reduction_shapes(input)
    x = _compute_precision(input)
    spatial = tuple(range(2, x.dim()))
    own_mean = x.mean(spatial, keepdim=True) if spatial else x
    own_var = x.var(spatial, unbiased=False, keepdim=True) if spatial else torch.zeros_like(x)
    pop_mean = running_mean.to(x.dtype).view(shape)
    pop_var = running_var.to(x.dtype).view(shape)
    mu = alpha * own_mean + (1 - alpha) * pop_mean
    var = alpha * (own_var + (own_mean - mu) ** 2) + (1 - alpha) * (pop_var + (pop_mean - mu) ** 2)
    return _affine((x - mu) / torch.sqrt(var + eps), weight, bias, shape, input.dtype)
