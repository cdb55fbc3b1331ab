"""`batch_norm`: torch.nn.functional.batch_norm written from scratch, with a hand-written backward.

It calls none of torch's batch-norm kernels: the forward is the lesson-01 formula in plain tensor
ops and the backward is the lesson-02 closed form, wrapped in a ``torch.autograd.Function``. Same
signature, same results and same running-statistics update as torch's, so either can replace the other.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["batch_norm"]


def _shapes(x: torch.Tensor):
    """Reduction dims (all but the channel dim) and the shape that broadcasts a (C,) vector over x."""
    dims = [0] + list(range(2, x.dim()))
    return dims, (1, x.shape[1]) + (1,) * (x.dim() - 2)


class BatchNormFunction(torch.autograd.Function):
    """y = weight * (x - mu) / sqrt(var + eps) + bias with a closed-form backward (lesson 02)."""

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, training, momentum, eps):
        # Few big tensors on purpose: each fresh one costs a page fault per 4 KiB on first write,
        # which on a small VM took longer than the arithmetic. x_hat and out are the only two;
        # out doubles as scratch space for the squares.
        dims, shape = _shapes(input)
        if training:
            m = input.numel() // input.shape[1]
            # Centre first, then square: E[x^2] - E[x]^2 cancels catastrophically when
            # |mean| >> std, e.g. float32 inputs offset by 1e4. And centre twice ("corrected
            # two-pass"): at 1e4 a float32 mean is only good to ~1e-3, so we also subtract the
            # residual mean `shift` of the centred values, which are small and exact enough.
            mean = input.mean(dims)
            x_hat = input - mean.view(shape)
            shift = x_hat.mean(dims)
            out = torch.mul(x_hat, x_hat)
            var = out.mean(dims) - shift * shift
            invstd = torch.rsqrt(var + eps)
            mean = mean + shift
            if running_mean is not None:
                with torch.no_grad():
                    running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                    # unbiased variance for the running estimate, as torch does
                    running_var.mul_(1 - momentum).add_(var.to(running_var.dtype) * (m / (m - 1)), alpha=momentum)
            # x_hat = (centred - shift) * invstd, in one fused pass, in place
            torch.addcmul((-shift * invstd).view(shape), x_hat, invstd.view(shape), out=x_hat)
        else:
            invstd = torch.rsqrt(running_var + eps)
            x_hat = input - running_mean.view(shape)
            x_hat.mul_(invstd.view(shape))
            out = torch.empty_like(x_hat)
        if weight is not None and bias is not None:
            torch.addcmul(bias.view(shape), x_hat, weight.view(shape), out=out)
        else:
            out.copy_(x_hat)
            if weight is not None:
                out.mul_(weight.view(shape))
            if bias is not None:
                out.add_(bias.view(shape))
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.training = training
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x_hat, invstd, weight = ctx.saved_tensors
        dims, shape = _shapes(x_hat)
        sum_dy = grad_out.sum(dims)
        # one big tensor: scratch for dy * x_hat first, then overwritten with dx
        scratch = grad_out * x_hat
        sum_dy_xhat = scratch.sum(dims)
        grad_input = None
        if ctx.needs_input_grad[0]:
            scale = invstd if weight is None else weight * invstd
            grad_input = scratch
            if ctx.training:
                # dx = gamma / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat)),
                # as two fused passes: scale*dy - scale*mean(dy), then - scale*mean(dy*x_hat) * x_hat
                m = x_hat.numel() // x_hat.shape[1]
                torch.addcmul((-scale * sum_dy / m).view(shape), grad_out, scale.view(shape), out=grad_input)
                grad_input.addcmul_(x_hat, (-scale * sum_dy_xhat / m).view(shape))
            else:
                # eval: mu and var are constants, BN is an affine map of x
                torch.mul(grad_out, scale.view(shape), out=grad_input)
        grad_weight = sum_dy_xhat if ctx.needs_input_grad[1] else None
        grad_bias = sum_dy if ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _check_inputs(input, running_mean, running_var, weight, bias, training, eps):
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
    if training and input.numel() // max(C, 1) < 2:
        raise ValueError("expected more than 1 value per channel when training, "
                         f"got input shape {tuple(input.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean and running_var are required when training=False")


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
    """
    _check_inputs(input, running_mean, running_var, weight, bias, training, eps)
    return BatchNormFunction.apply(input, weight, bias, running_mean, running_var,
                                   bool(training), float(momentum), float(eps))
