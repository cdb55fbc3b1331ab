"""NumPy batch and layer normalization with explicit caches: the reference the lessons derive by hand.

Forward passes return ``(out, cache)``; backward passes take ``(dout, cache)``. Each backward comes
twice: a *staged* version that walks the computational graph one node at a time (lesson 02 draws
that graph) and the *compact* closed form. Tests check both against torch and against centred
finite differences.

Batch norm and layer norm share one graph and differ only in the axes the statistics are taken
over: BN over the batch (and spatial positions), one (mu, var) per channel; LN over each sample's
features, one (mu, var) per sample.

The interface is CS231n's (assignment 2): ``batchnorm_forward(x, gamma, beta, bn_param)`` with
``bn_param['mode']`` 'train' or 'eval', or 'test' as CS231n calls it, so their notebook cells run on
this module (tests/test_cs231n_checks.py re-creates them). Their ``batchnorm_backward`` is our
staged one, their ``batchnorm_backward_alt`` our compact ``batchnorm_backward``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "batchnorm_forward",
    "batchnorm_backward",
    "batchnorm_backward_staged",
    "layernorm_forward",
    "layernorm_backward",
    "layernorm_backward_staged",
    "running_average",
]


# ----------------------------------------------------------------------------- input checks
def _check_array(x, name: str, min_ndim: int) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {x.shape}")
    return x


def _check_param(p, name: str, shape: tuple) -> np.ndarray:
    _check_array(p, name, 0)
    if p.shape != shape:
        raise ValueError(f"{name} has shape {p.shape}, expected {shape}")
    return p


def _check_eps(eps) -> float:
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"eps must be >= 0, got {eps}")
    return float(eps)


# ----------------------------------------------------------------------------- shared graph
def _normalize(x, stat_axes, eps):
    """x_hat = (x - mu) / sqrt(var + eps), with mu and var taken over stat_axes (kept as dims)."""
    mu = x.mean(axis=stat_axes, keepdims=True)
    xc = x - mu
    # two passes: E[x^2] - E[x]^2 cancels catastrophically when |mean| >> std
    var = (xc * xc).mean(axis=stat_axes, keepdims=True)
    std = np.sqrt(var + eps)
    inv_std = 1.0 / std
    x_hat = xc * inv_std
    return x_hat, {"mu": mu, "xc": xc, "var": var, "std": std, "inv_std": inv_std, "x_hat": x_hat}


def _dx_staged(dx_hat, c):
    """Back through x_hat = (x - mu) * inv_std one graph node at a time, in reverse order."""
    axes, m = c["stat_axes"], c["m"]
    xc, std, inv_std = c["xc"], c["std"], c["inv_std"]
    # x_hat = xc * inv_std: both factors depend on x
    dxc = dx_hat * inv_std
    dinv_std = (dx_hat * xc).sum(axis=axes, keepdims=True)
    # inv_std = 1 / std
    dstd = -dinv_std / std**2
    # std = sqrt(var + eps)
    dvar = 0.5 * dstd / std
    # var = mean(xc^2): every element of xc feeds var
    dxc = dxc + 2.0 * xc * dvar / m
    # xc = x - mu
    dmu = -dxc.sum(axis=axes, keepdims=True)
    # mu = mean(x)
    return dxc + dmu / m


def _dx_compact(dx_hat, c):
    """dx = inv_std / m * (m * dx_hat - sum(dx_hat) - x_hat * sum(dx_hat * x_hat))."""
    axes, m, x_hat = c["stat_axes"], c["m"], c["x_hat"]
    return (c["inv_std"] / m) * (
        m * dx_hat
        - dx_hat.sum(axis=axes, keepdims=True)
        - x_hat * (dx_hat * x_hat).sum(axis=axes, keepdims=True)
    )


def _affine_backward(dout, c):
    """y = gamma * x_hat + beta: returns (dx_hat, dgamma, dbeta)."""
    dbeta = dout.sum(axis=c["param_axes"]).reshape(c["param_shape"])
    dgamma = (dout * c["x_hat"]).sum(axis=c["param_axes"]).reshape(c["param_shape"])
    return dout * c["gamma_b"], dgamma, dbeta


def _check_dout(dout, c):
    _check_array(dout, "dout", 1)
    if dout.shape != c["x_hat"].shape:
        raise ValueError(f"dout has shape {dout.shape}, expected the forward output's {c['x_hat'].shape}")


# ----------------------------------------------------------------------------- batch norm
# bn_param['mode'] -> the mode the cache records. CS231n's assignments call evaluation 'test'; one
# name inside, so the backward passes test a single value
_MODES = {"train": "train", "eval": "eval", "test": "eval"}


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization, forward pass.

    For each feature k (each channel for conv inputs) over the batch B (and spatial positions):
        mu_k = mean_B x_k,   var_k = mean_B (x_k - mu_k)^2
        x_hat = (x - mu) / sqrt(var + eps),   y = gamma * x_hat + beta

    x: (N, D) or (N, C, *spatial); gamma, beta: (C,). bn_param is a dict:
        mode: 'train' or 'eval' (required); 'test' is accepted as CS231n's name for 'eval', so
              their test cells run unchanged, and bn_param['mode'] is left as given;
        eps: default 1e-5;
        momentum: default 0.1, PyTorch's convention new = (1 - momentum) * old + momentum * batch;
                  None means a cumulative average over all batches seen so far;
        running_mean, running_var: (C,) arrays, created as zeros / ones when missing and updated
                  in place in 'train' mode (running_var with the unbiased batch variance, as torch).
    In 'eval' mode x is normalized with running_mean and running_var; nothing is updated.
    The (N, C, H, W) input is CS231n's spatial batch norm (spatial_batchnorm_forward): the statistics
    are taken over N, H and W, one (mu, var) per channel, without the transposes and reshapes.
    Note CS231n's own momentum (0.9 on the old value) is torch momentum 0.1, this default.
    Returns (y, cache); the cache feeds batchnorm_backward and batchnorm_backward_staged, whose
    cache['mode'] is 'train' or 'eval' ('test' already mapped).
    """
    _check_array(x, "x", 2)
    C = x.shape[1]
    _check_param(gamma, "gamma", (C,))
    _check_param(beta, "beta", (C,))
    given = bn_param.get("mode")
    mode = _MODES.get(given) if isinstance(given, str) else None
    if mode is None:
        raise ValueError(f"bn_param['mode'] must be 'train' or 'eval' (or CS231n's 'test'), got {given!r}")
    eps = _check_eps(bn_param.get("eps", 1e-5))
    momentum = bn_param.get("momentum", 0.1)
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
    running_mean = bn_param.setdefault("running_mean", np.zeros(C, dtype=x.dtype))
    running_var = bn_param.setdefault("running_var", np.ones(C, dtype=x.dtype))
    _check_param(running_mean, "running_mean", (C,))
    _check_param(running_var, "running_var", (C,))

    stat_axes = (0,) + tuple(range(2, x.ndim))
    param_shape = (1, C) + (1,) * (x.ndim - 2)
    m = x.size // C  # values per channel
    if mode == "train":
        if m < 2:
            raise ValueError(f"expected more than 1 value per channel when training, got input shape {x.shape}")
        x_hat, cache = _normalize(x, stat_axes, eps)
        if momentum is None:
            bn_param["num_batches_tracked"] = bn_param.get("num_batches_tracked", 0) + 1
            factor = 1.0 / bn_param["num_batches_tracked"]
        else:
            factor = momentum
        unbiased_var = cache["var"].reshape(C) * m / (m - 1)
        running_mean *= 1.0 - factor
        running_mean += factor * cache["mu"].reshape(C)
        running_var *= 1.0 - factor
        running_var += factor * unbiased_var
    else:
        mu = running_mean.reshape(param_shape)
        std = np.sqrt(running_var.reshape(param_shape) + eps)
        xc = x - mu
        x_hat = xc / std
        cache = {"xc": xc, "std": std, "inv_std": 1.0 / std, "x_hat": x_hat}

    y = gamma.reshape(param_shape) * x_hat + beta.reshape(param_shape)
    cache.update(mode=mode, stat_axes=stat_axes, param_axes=stat_axes, m=m,
                 param_shape=(C,), gamma_b=gamma.reshape(param_shape))
    return y, cache


def batchnorm_backward(dout, cache):
    """Batch normalization, backward pass in closed form.

    With x_hat from the forward pass and dx_hat = gamma * dout, per channel over its m values:
        dbeta = sum dout,   dgamma = sum dout * x_hat
        dx = 1 / (m * sqrt(var + eps)) * (m * dx_hat - sum dx_hat - x_hat * sum(dx_hat * x_hat))
    so sum dx = 0 over the batch. In 'eval' mode the statistics are constants: dx = dx_hat / sqrt(running_var + eps).
    Returns (dx, dgamma, dbeta) with the shapes of x, gamma, beta.
    """
    _check_dout(dout, cache)
    dx_hat, dgamma, dbeta = _affine_backward(dout, cache)
    if cache["mode"] == "eval":
        return dx_hat * cache["inv_std"], dgamma, dbeta
    return _dx_compact(dx_hat, cache), dgamma, dbeta


def batchnorm_backward_staged(dout, cache):
    """Batch normalization, backward pass one node of the computational graph at a time.

    Forward graph: mu = mean(x); xc = x - mu; var = mean(xc^2); std = sqrt(var + eps);
    inv_std = 1 / std; x_hat = xc * inv_std; y = gamma * x_hat + beta. The backward visits these
    nodes in reverse and adds up the two paths into xc (through x_hat and through var) and the two
    into x (directly and through mu). Same result as batchnorm_backward.
    """
    _check_dout(dout, cache)
    dx_hat, dgamma, dbeta = _affine_backward(dout, cache)
    if cache["mode"] == "eval":
        return dx_hat * cache["inv_std"], dgamma, dbeta
    return _dx_staged(dx_hat, cache), dgamma, dbeta


# ----------------------------------------------------------------------------- layer norm
def layernorm_forward(x, gamma, beta, ln_param=None):
    """Layer normalization, forward pass.

    For each sample n over its own features F (all axes but the first):
        mu_n = mean_F x_n,   var_n = mean_F (x_n - mu_n)^2
        x_hat = (x - mu) / sqrt(var + eps),   y = gamma * x_hat + beta
    No batch statistics, so no running statistics, and train and eval compute the same thing.

    x: (N, *F); gamma, beta: F (one per feature, like torch.nn.functional.layer_norm(x, F)).
    ln_param: dict with optional eps (default 1e-5). Returns (y, cache).
    """
    _check_array(x, "x", 2)
    features = x.shape[1:]
    _check_param(gamma, "gamma", features)
    _check_param(beta, "beta", features)
    eps = _check_eps((ln_param or {}).get("eps", 1e-5))
    stat_axes = tuple(range(1, x.ndim))
    x_hat, cache = _normalize(x, stat_axes, eps)
    y = gamma * x_hat + beta  # gamma broadcasts over the leading batch axis
    cache.update(mode="train", stat_axes=stat_axes, param_axes=(0,), m=x.size // x.shape[0],
                 param_shape=features, gamma_b=gamma)
    return y, cache


def layernorm_backward(dout, cache):
    """Layer normalization, backward pass in closed form: the BN formula with sums over each
    sample's features instead of over the batch, and dgamma, dbeta summed over the batch."""
    _check_dout(dout, cache)
    dx_hat, dgamma, dbeta = _affine_backward(dout, cache)
    return _dx_compact(dx_hat, cache), dgamma, dbeta


def layernorm_backward_staged(dout, cache):
    """Layer normalization, backward pass one graph node at a time (the graph of batchnorm_backward_staged)."""
    _check_dout(dout, cache)
    dx_hat, dgamma, dbeta = _affine_backward(dout, cache)
    return _dx_staged(dx_hat, cache), dgamma, dbeta


# ----------------------------------------------------------------------------- running statistics
def running_average(batch_values, momentum, initial=0.0):
    """The running estimate BN keeps, step by step, in PyTorch's convention:

        r_t = (1 - momentum) * r_{t-1} + momentum * b_t,   r_0 = initial

    Keras writes the same update as r_t = m * r_{t-1} + (1 - m) * b_t with m = 0.99 by default,
    i.e. torch momentum 1 - m = 0.01; CS231n uses m = 0.9, i.e. torch momentum 0.1.
    momentum=None is torch's cumulative average: r_t = mean(b_1..b_t).
    batch_values: (T,) or (T, C). Returns r_1..r_T with the same shape.
    """
    b = np.asarray(batch_values, dtype=np.float64)
    if b.ndim not in (1, 2) or len(b) == 0:
        raise ValueError(f"batch_values must be a non-empty (T,) or (T, C) array, got shape {b.shape}")
    if momentum is not None and not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] or None, got {momentum}")
    out = np.empty_like(b)
    r = np.full(b.shape[1:], initial, dtype=np.float64)
    for t, value in enumerate(b):
        factor = 1.0 / (t + 1) if momentum is None else momentum
        r = (1.0 - factor) * r + factor * value
        out[t] = r
    return out
