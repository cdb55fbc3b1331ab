"""Checkers for the batch-normalization homework: a student's forward, backward or module against crafted inputs.

Each checker runs the student's code on inputs that separate the usual mistakes (a large eps, a
near-constant feature, an offset of 1e8, several training steps then eval on a class-sorted batch) and
prints ``✓`` lines for what holds, or raises `HomeworkCheckFailed` (a `bnlab.CheckFailed`) whose
``mistake`` attribute names the mistake (an id of `MISTAKES`, or None) and whose message gives a hint.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from . import reference
from .checks import CheckFailed, check

__all__ = ["check_batchnorm_forward", "check_batchnorm_backward", "check_batchnorm_module", "attempt",
           "HomeworkCheckFailed", "MISTAKES", "CONVENTIONS"]

# id -> (what the code does, a hint towards the fix)
MISTAKES = {
    "not_implemented": ("the code is still the starter code (NotImplementedError, or it returns None)",
                        "fill in the function and return its results"),
    "wrong_axis": ("statistics per sample, over the features, instead of per feature over the batch "
                   "(that is layer normalization)",
                   "take the mean and variance over the batch, axis 0 of (N, D): one value per feature"),
    "divide_by_variance": ("x - mu is divided by the variance instead of the standard deviation",
                           "divide by sqrt(var + eps): the result must have unit variance"),
    "eps_misplaced": ("eps is missing, ignored, or outside the square root",
                      "use bn_param's eps inside the square root, sqrt(var + eps): it keeps a constant feature finite"),
    "gamma_added": ("gamma is added (x_hat + gamma + beta) instead of multiplied",
                    "gamma scales and beta shifts: y = gamma * x_hat + beta"),
    "unbiased_batch_variance": ("the batch is normalized with the unbiased variance (divided by N - 1)",
                                "normalize with the biased batch variance, mean((x - mu)**2) over the batch"),
    "biased_running_variance": ("running_var is updated with the biased batch variance; torch tracks the unbiased one",
                                "multiply the batch variance by N / (N - 1) for the running estimate only"),
    "momentum_reversed": ("the running averages put momentum on the wrong side for this convention",
                          "see which term momentum multiplies in the convention's update"),
    "running_stats_not_updated": ("the running statistics never change in training",
                                  "update running_mean and running_var on every training call and store them "
                                  "(bn_param['running_mean'] = ..., or the module's buffers)"),
    "test_batch_statistics": ("eval normalizes with the eval batch's own mean and variance",
                              "in eval, normalize with running_mean and running_var"),
    "eval_updates_running_stats": ("eval changes the running statistics",
                                   "only training updates the running statistics; eval only reads them"),
    "one_pass_variance": ("the variance is computed as E[x^2] - E[x]^2, which cancels catastrophically "
                          "when the mean is large",
                          "compute the variance in two passes, mean((x - mu)**2), in float64"),
    "missing_mean_path": ("the backward treats mu (and sigma) as constants, so sum over the batch of dx is not 0",
                          "mu depends on every x of the batch: add the gradient that flows through mu"),
    "missing_variance_path": ("the backward drops the path through the variance",
                              "var depends on x too: add the gradient that flows through var"),
    "dgamma_dbeta_swapped": ("dgamma and dbeta are exchanged",
                             "dbeta = sum of dout, dgamma = sum of dout * x_hat; return (dx, dgamma, dbeta)"),
    "dgamma_uses_x": ("dgamma is computed from x instead of x_hat",
                      "gamma multiplies x_hat, so dgamma sums dout * x_hat"),
    "statistics_as_parameters": ("the running statistics are nn.Parameters, so an optimizer would move them",
                                 "register them with self.register_buffer(name, tensor)"),
    "running_stats_with_grad": ("the running statistics are updated under autograd: they carry a grad_fn and the "
                                "graph grows every step",
                                "update them under torch.no_grad(), or from detached batch statistics"),
    "state_dict_keys": ("the state_dict's names differ from torch's, so torch's state_dict cannot load",
                        "use torch's names: parameters weight, bias; buffers running_mean, running_var, "
                        "num_batches_tracked"),
}

# batch_weight: the weight of the new batch in the running averages, given the momentum the checker passes
CONVENTIONS = {
    "torch": {"train": "train", "eval": "eval", "momentum": 0.1, "batch_weight": 0.1, "unbiased_running_var": True,
              "update": "running = (1 - momentum) * running + momentum * batch, momentum = 0.1",
              "var": "running_var tracks the unbiased batch variance (N / (N - 1) times the biased one)"},
    "cs231n": {"train": "train", "eval": "test", "momentum": 0.9, "batch_weight": 0.1, "unbiased_running_var": False,
               "update": "running = momentum * running + (1 - momentum) * batch, momentum = 0.9",
               "var": "running_var tracks the biased batch variance"},
}

STATE_DICT_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class HomeworkCheckFailed(CheckFailed):
    """A homework check failed; ``mistake`` is the id of the mistake it points to (see MISTAKES), or None."""

    def __init__(self, message: str, mistake: str | None = None):
        super().__init__(message)
        self.mistake = mistake


def _fail(observed: str, mistake: str | None, hint: str | None = None):
    if mistake is None:
        lines = [f"✗ {observed}", "  Mistake: none of the known ones."]
        if hint:
            lines.append(f"  Hint: {hint}")
    else:
        what, default_hint = MISTAKES[mistake]
        lines = [f"✗ {observed}", f"  Mistake: {mistake}: {what}.", f"  Hint: {hint or default_hint}."]
    raise HomeworkCheckFailed("\n".join(lines), mistake)


def _ok(claim: str, err: float | None = None) -> None:
    check(True, claim, measured=None if err is None else {"max_difference": err})


def _convention(convention: str) -> dict:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")
    return CONVENTIONS[convention]


# ----------------------------------------------------------------------------- calling student code
def _call(fn, args, what: str):
    """fn(*args); NotImplementedError -> not_implemented, any other exception -> mistake None."""
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args)
    except NotImplementedError:
        _fail(f"{what} raised NotImplementedError", "not_implemented")
    except Exception as e:  # the student's bug, whatever it is, becomes a failed check
        _fail(f"{what} raised {type(e).__name__}: {e}", None,
              "read the exception: it comes from your code, run on the input described above")


def attempt(function, *args, **kwargs):
    """function(*args, **kwargs) for a check cell of a task without its own checker: the result, or
    HomeworkCheckFailed('not_implemented') when the function still raises NotImplementedError or
    returns None, as an untouched stub does. Any other exception propagates: it is the student's to read."""
    name = getattr(function, "__name__", "the function")
    try:
        result = function(*args, **kwargs)
    except NotImplementedError:
        _fail(f"{name} raised NotImplementedError", "not_implemented",
              f"write {name} in the cell above, in place of its raise NotImplementedError line")
    if result is None:
        _fail(f"{name} returned None", "not_implemented", f"{name} must return its result")
    return result


def _as_array(value, name: str, shape: tuple) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(f"{name} is a {type(value).__name__}, not an array", None, f"return {name} as an array of shape {shape}")
    if a.shape != shape:
        _fail(f"{name} has shape {a.shape}, expected {shape}", None, f"return {name} with shape {shape}")
    return a


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|, where NaN matches NaN and inf matches the same inf; shapes must agree."""
    if a.shape != b.shape:
        return float("inf")
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    with np.errstate(invalid="ignore"):
        d = np.where(same, 0.0, np.abs(a - b))
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max()) if d.size else 0.0


def _tol(expected: np.ndarray, rel: float) -> float:
    finite = expected[np.isfinite(expected)]
    return rel * max(1.0, float(np.abs(finite).max()) if finite.size else 1.0)


def _describe(out: np.ndarray) -> str:
    bad = int((~np.isfinite(out)).sum())
    return f"; it has {bad} NaN/inf values" if bad else ""


# ----------------------------------------------------------------------------- the math, right and wrong
def _stats(x: np.ndarray, axis: int = 0, ddof: int = 0):
    # two passes: E[x^2] - E[x]^2 cancels catastrophically for large means
    mu = x.mean(axis=axis, keepdims=True)
    var = ((x - mu) ** 2).sum(axis=axis, keepdims=True) / (x.shape[axis] - ddof)
    return mu, var


def _forward_candidates(x, gamma, beta, eps, default_eps=1e-5):
    """[(mistake id or None, what it computes, output)] for x (N, D): the correct forward first, then
    each known mistake's prediction of what the student's forward returns."""
    g, b = gamma.reshape(1, -1), beta.reshape(1, -1)
    mu, var = _stats(x)
    xc = x - mu
    _, var_unbiased = _stats(x, ddof=1)
    mu_row, var_row = _stats(x, axis=1)
    _, var_row_unbiased = _stats(x, axis=1, ddof=1)
    with np.errstate(all="ignore"):
        std = np.sqrt(var + eps)
        out = [
            (None, "gamma * (x - mu) / sqrt(var + eps) + beta", g * xc / std + b),
            ("wrong_axis", "normalized per sample (layer norm)", g * (x - mu_row) / np.sqrt(var_row + eps) + b),
            ("wrong_axis", "normalized per sample (layer norm)",
             g * (x - mu_row) / np.sqrt(var_row_unbiased + eps) + b),
            ("divide_by_variance", "gamma * (x - mu) / (var + eps) + beta", g * xc / (var + eps) + b),
            ("divide_by_variance", "gamma * (x - mu) / var + beta", g * xc / var + b),
            ("eps_misplaced", "gamma * (x - mu) / (sqrt(var) + eps) + beta", g * xc / (np.sqrt(var) + eps) + b),
            ("eps_misplaced", "gamma * (x - mu) / sqrt(var) + beta (no eps)", g * xc / np.sqrt(var) + b),
            ("gamma_added", "(x - mu) / sqrt(var + eps) + gamma + beta", xc / std + g + b),
            ("unbiased_batch_variance", "normalized with the unbiased variance (N - 1)",
             g * xc / np.sqrt(var_unbiased + eps) + b),
        ]
        if eps != default_eps:
            out.append(("eps_misplaced", f"normalized with eps = {default_eps:g}, not the eps given ({eps:g})",
                        g * xc / np.sqrt(var + default_eps) + b))
    return out


def _check_forward_output(out, x, gamma, beta, eps, what: str, constant_features=(), large_offset=False, rel=1e-6):
    """Compare out with the correct forward, or name the mistake whose prediction it matches."""
    candidates = _forward_candidates(x, gamma, beta, eps)
    correct = candidates[0][2]
    tol = _tol(correct, rel)
    err = _max_diff(out, correct)
    if err <= tol:
        _ok(f"forward {what}: out = gamma * (x - mu) / sqrt(var + eps) + beta, per feature over the batch", err)
        return
    observed = f"forward {what}: out differs from the correct output by up to {err:.3g}{_describe(out)}"
    for mistake, formula, predicted in candidates[1:]:
        if _max_diff(out, predicted) <= tol:
            _fail(f"{observed}; it equals {formula}", mistake)
    if constant_features:
        others = [k for k in range(x.shape[1]) if k not in constant_features]
        if _max_diff(out[:, others], correct[:, others]) <= tol:
            worst = _max_diff(out[:, list(constant_features)], correct[:, list(constant_features)])
            _fail(f"{observed}; it is right on the ordinary features but off by {worst:.3g} on the (near-)constant "
                  f"features {list(constant_features)}", "eps_misplaced")
    if large_offset:
        _fail(f"{observed}; the same code was right on ordinary batches, but here every feature's mean is 1e8 "
              "(float64)", "one_pass_variance")
    _fail(observed, None, "compare your formula with mu = mean(x, axis=0), var = mean((x - mu)**2, axis=0), "
          "out = gamma * (x - mu) / sqrt(var + eps) + beta")


def _formula_probes(rng, D: int = 5, N: int = 16):
    """(what, x, gamma, beta, eps, constant features, large offset) for each forward probe, in checking order."""
    loc = np.array([3.0, -2.0, 0.5, 10.0, -6.0])[:D]
    scale = np.array([2.0, 0.5, 1.0, 3.0, 1.5])[:D]
    gamma = np.array([1.5, 0.5, 2.0, -1.0, 0.8])[:D]
    beta = np.array([0.3, -1.0, 2.0, 0.1, -0.5])[:D]
    x = loc + scale * rng.standard_normal((N, D))
    x_large_eps = loc + np.array([1.0, 0.6, 0.8, 1.2, 0.7])[:D] * rng.standard_normal((N, D))
    x_constant = loc + scale * rng.standard_normal((N, D))
    x_constant[:, 0] = 0.7 + 1e-7 * rng.standard_normal(N)   # near-constant: sigma = 1e-7 << sqrt(eps)
    x_constant[:, 1] = 0.7                                   # constant: sigma = 0, or rounding noise
    x_offset = 1e8 + scale * rng.standard_normal((N, D))
    return [
        (f"on a {N}x{D} batch (eps = 1e-5)", x, gamma, beta, 1e-5, (), False),
        ("with a large eps (eps = 0.5)", x_large_eps, gamma, beta, 0.5, (), False),
        ("with a near-constant and a constant feature (std 1e-7 and 0, eps = 1e-5)", x_constant, gamma, beta, 1e-5,
         (0, 1), False),
        ("with every feature's mean at 1e8 (float64)", x_offset, gamma, beta, 1e-5, (), True),
    ]


def _training_batches(rng, steps: int = 5, N: int = 16, D: int = 5):
    """Training batches whose mean and spread change from step to step, so each running-average rule
    leaves a different trace; and a class-sorted eval batch (one class only), far from the running mean."""
    batches = []
    for t in range(steps):
        loc = np.array([1.0, -2.0, 4.0, 0.5, -1.0])[:D] + 0.8 * t
        scale = np.array([1.0, 2.0, 0.5, 1.5, 3.0])[:D] * (1 + 0.3 * t)
        # two classes at +-scale around loc
        labels = np.where(np.arange(N) % 2 == 0, 1.0, -1.0)[:, None]
        batches.append(loc + labels * scale + 0.5 * scale * rng.standard_normal((N, D)))
    eval_batch = batches[-1][::2] + 0.5  # class +1 only, shifted: its own statistics are far from the running ones
    return batches, eval_batch


def _running_candidates(batches, running_mean, running_var):
    """{(weight of the new batch, unbiased?): (means (T, D), vars (T, D))}, the running statistics after each step."""
    out = {}
    for weight in (0.1, 0.9):
        for unbiased in (True, False):
            rm, rv, means, variances = running_mean.copy(), running_var.copy(), [], []
            for x in batches:
                mu, var = _stats(x, ddof=1 if unbiased else 0)
                rm = (1 - weight) * rm + weight * mu.ravel()
                rv = (1 - weight) * rv + weight * var.ravel()
                means.append(rm)
                variances.append(rv)
            out[(weight, unbiased)] = (np.array(means), np.array(variances))
    return out


def _check_running(means, variances, batches, running_mean, running_var, conv: dict, rel: float, owner: str):
    """Name what the running statistics after each training step (means, variances: (T, D)) follow."""
    cands = _running_candidates(batches, running_mean, running_var)
    weight, unbiased = conv["batch_weight"], conv["unbiased_running_var"]
    T = len(batches)
    means_fixed = _max_diff(means, np.tile(running_mean, (T, 1))) == 0
    vars_fixed = _max_diff(variances, np.tile(running_var, (T, 1))) == 0
    if means_fixed and vars_fixed:
        _fail(f"{owner}: running_mean and running_var are still {running_mean[0]:g} and {running_var[0]:g} after "
              f"{T} training steps", "running_stats_not_updated")

    def close(a, b):
        return _max_diff(a, b) <= _tol(b, rel)

    expected_mean = cands[(weight, unbiased)][0]
    if not close(means, expected_mean):
        err = _max_diff(means, expected_mean)
        observed = f"{owner}: running_mean after {T} training steps is off by up to {err:.3g}"
        if close(means, cands[(1 - weight, unbiased)][0]):
            _fail(f"{observed}; each step it moved {1 - weight:g} of the way to the batch mean, not {weight:g}",
                  "momentum_reversed", f"the convention is {conv['update']}")
        if means_fixed:
            _fail(f"{observed}; it never changed", "running_stats_not_updated")
        _fail(observed, None, f"the convention is {conv['update']}")
    _ok(f"running_mean after {T} training steps: {conv['update']}", _max_diff(means, expected_mean))

    expected_var = cands[(weight, unbiased)][1]
    if not close(variances, expected_var):
        err = _max_diff(variances, expected_var)
        observed = f"{owner}: running_var after {T} training steps is off by up to {err:.3g}"
        if close(variances, cands[(weight, not unbiased)][1]):
            if unbiased:
                _fail(f"{observed}; it follows the biased batch variance", "biased_running_variance")
            _fail(f"{observed}; it follows the unbiased batch variance (N - 1)", None,
                  "CS231n's convention tracks the biased batch variance, the one the batch is normalized with")
        if any(close(variances, cands[(1 - weight, u)][1]) for u in (True, False)):
            _fail(f"{observed}; each step it moved {1 - weight:g} of the way to the batch variance, not {weight:g}",
                  "momentum_reversed", f"the convention is {conv['update']}")
        if vars_fixed:
            _fail(f"{observed}; it never changed", "running_stats_not_updated")
        _fail(observed, None, f"{conv['var']}; {conv['update']}")
    _ok(f"running_var after {T} training steps: {conv['var']}", _max_diff(variances, expected_var))


def _check_eval(out, x, gamma, beta, eps, stats_before, stats_after, rel: float, mode: str):
    """Eval output on the class-sorted batch x, given the running statistics before and after the call."""
    (rm, rv), (rm_after, rv_after) = stats_before, stats_after
    g, b = gamma.reshape(1, -1), beta.reshape(1, -1)
    with np.errstate(all="ignore"):
        expected = g * (x - rm) / np.sqrt(rv + eps) + b
    err = _max_diff(out, expected)
    tol = _tol(expected, rel)
    what = f"{mode} on a class-sorted batch (one class, far from the running mean)"
    observed = f"{what}: out differs from the output with the running statistics by up to {err:.3g}{_describe(out)}"
    batch_outputs = [out_batch for mistake, _, out_batch in _forward_candidates(x, gamma, beta, eps)
                     if mistake in (None, "unbiased_batch_variance")]
    if err > tol and any(_max_diff(out, p) <= tol for p in batch_outputs):
        _fail(f"{observed}; it equals the output normalized with the eval batch's own mean and variance",
              "test_batch_statistics")
    changed = max(_max_diff(rm_after, rm), _max_diff(rv_after, rv))
    if changed > 0:
        _fail(f"{what}: the running statistics changed by up to {changed:.3g} in {mode}", "eval_updates_running_stats")
    if err > tol:
        _fail(observed, None, "in eval, out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta")
    _ok(f"{mode} normalizes with running_mean and running_var, and leaves them unchanged", err)


# ----------------------------------------------------------------------------- backward
def _backward_reference(x, gamma, dout, eps):
    """(dx, dgamma, dbeta) of y = gamma * x_hat + beta with batch statistics, from x alone (never from
    the student's cache): bnlab.reference's forward and closed-form backward."""
    _, cache = reference.batchnorm_forward(x, gamma, np.zeros_like(gamma), {"mode": "train", "eps": eps})
    return reference.batchnorm_backward(dout, cache)


def _check_backward_grads(dx, dgamma, dbeta, x, gamma, dout, eps, what: str, reference=None, rel=1e-7):
    """Compare (dx, dgamma, dbeta) with the correct gradients, or name the mistake they match."""
    ref_dx, ref_dgamma, ref_dbeta = reference if reference is not None else _backward_reference(x, gamma, dout, eps)
    mu, var = _stats(x)
    inv_std = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mu) * inv_std
    dx_hat = dout * gamma.reshape(1, -1)

    def close(a, b):
        return _max_diff(a, b) <= _tol(b, rel)

    if not (close(dgamma, ref_dgamma) and close(dbeta, ref_dbeta)):
        err = max(_max_diff(dgamma, ref_dgamma), _max_diff(dbeta, ref_dbeta))
        observed = f"backward {what}: dgamma or dbeta is off by up to {err:.3g}"
        if close(dgamma, ref_dbeta) and close(dbeta, ref_dgamma):
            _fail(f"{observed}; dgamma equals sum(dout) and dbeta equals sum(dout * x_hat)", "dgamma_dbeta_swapped")
        if close(dgamma, (dout * x).sum(0)):
            _fail(f"{observed}; dgamma equals sum(dout * x)", "dgamma_uses_x")
        _fail(observed, None, "dbeta = sum of dout over the batch, dgamma = sum of dout * x_hat")
    _ok(f"backward {what}: dgamma = sum(dout * x_hat), dbeta = sum(dout)",
        max(_max_diff(dgamma, ref_dgamma), _max_diff(dbeta, ref_dbeta)))

    err = _max_diff(dx, ref_dx)
    if err > _tol(ref_dx, rel):
        observed = f"backward {what}: dx is off by up to {err:.3g}{_describe(dx)}"
        sum_dx = float(np.abs(dx.sum(0)).max()) if np.isfinite(dx).all() else float("nan")
        no_mean = [dx_hat * inv_std,  # mu and sigma constants
                   inv_std * (dx_hat - x_hat * (dx_hat * x_hat).mean(0, keepdims=True))]  # mu constant
        if any(close(dx, p) for p in no_mean):
            _fail(f"{observed}; the sum of dx over the batch is {sum_dx:.3g}, not 0, and dx equals the formula "
                  "without the terms through mu", "missing_mean_path")
        if close(dx, inv_std * (dx_hat - dx_hat.mean(0, keepdims=True))):
            _fail(f"{observed}; dx equals the formula without the term through var", "missing_variance_path")
        if np.isfinite(sum_dx) and sum_dx > _tol(np.abs(dout).sum(0), 1e-6):
            _fail(f"{observed}; the sum of dx over the batch is {sum_dx:.3g}, not 0", "missing_mean_path")
        _fail(observed, None, "dx = (dx_hat - mean(dx_hat) - x_hat * mean(dx_hat * x_hat)) / sqrt(var + eps), "
              "dx_hat = gamma * dout, means over the batch")
    _ok(f"backward {what}: dx matches, through mu and var (sum of dx over the batch = 0)", err)


def _backward_probe(rng, N: int = 10, D: int = 4):
    # a nonzero mean (dout * x differs from dout * x_hat) and gamma != 1
    x = np.array([2.0, -3.0, 5.0, 0.5]) + np.array([1.5, 0.7, 2.0, 1.0]) * rng.standard_normal((N, D))
    gamma = np.array([1.7, -0.6, 0.9, 2.5])
    beta = np.array([0.4, -1.2, 0.0, 0.8])
    dout = rng.standard_normal((N, D)) + np.array([0.5, -0.3, 0.2, 0.0])
    return x, gamma, beta, dout


# ----------------------------------------------------------------------------- functional checkers
def _bn_param(mode: str, eps: float, conv: dict, D: int) -> dict:
    return {"mode": mode, "eps": eps, "momentum": conv["momentum"],
            "running_mean": np.zeros(D), "running_var": np.ones(D)}


def _run_forward(forward, x, gamma, beta, bn_param, what: str):
    result = _call(forward, (x.copy(), gamma.copy(), beta.copy(), bn_param), f"forward {what}")
    if result is None or (isinstance(result, (tuple, list)) and all(r is None for r in result)):
        _fail(f"forward {what} returned {result!r}", "not_implemented")
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        _fail(f"forward {what} returned a {type(result).__name__}, not (out, cache)", None,
              "return the pair (out, cache)")
    if result[0] is None:
        _fail(f"forward {what} returned out = None", "not_implemented")
    return _as_array(result[0], "out", x.shape), result[1]


def _read_running(bn_param: dict, D: int, what: str):
    stats = []
    for name in ("running_mean", "running_var"):
        value = bn_param.get(name) if isinstance(bn_param, dict) else None
        if value is None:
            _fail(f"bn_param has no {name} after {what}", None, f"store it: bn_param['{name}'] = ...")
        a = _as_array(value, f"bn_param['{name}']", np.shape(value))
        if a.size != D:
            _fail(f"bn_param['{name}'] has shape {a.shape} after {what}, expected ({D},)", None,
                  f"keep {name} of shape ({D},)")
        stats.append(a.reshape(D).copy())
    return tuple(stats)


def check_batchnorm_forward(forward, convention: str = "torch", seed: int = 0) -> None:
    """Check a batch-norm forward ``forward(x, gamma, beta, bn_param) -> (out, cache)`` for x (N, D).

    Training, per feature k over the batch: mu_k = mean x_k, var_k = mean (x_k - mu_k)^2 (biased),
        out = gamma * (x - mu) / sqrt(var + eps) + beta,
    run on a 16x5 batch, with eps = 0.5, with a near-constant and a constant feature, and with every
    mean at 1e8 (float64). Then 5 training steps from running_mean = 0, running_var = 1, and eval on a
    class-sorted batch: out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta, no update.

    convention="torch": modes 'train' / 'eval'; momentum = 0.1 is the weight of the new batch,
        running = (1 - momentum) * running + momentum * batch; running_var tracks the unbiased variance.
    convention="cs231n": modes 'train' / 'test'; momentum = 0.9 is the weight of the old value,
        running = momentum * running + (1 - momentum) * batch; running_var tracks the biased variance.
    Every bn_param key is passed (mode, eps, momentum, running_mean, running_var); the running
    statistics are read back from the dict after each call, so replacing them there is fine.
    Prints ✓ lines; raises HomeworkCheckFailed (mistake = an id of MISTAKES, or None) otherwise.
    """
    conv = _convention(convention)
    rng = np.random.default_rng(seed)
    for what, x, gamma, beta, eps, constant, offset in _formula_probes(rng):
        out, _ = _run_forward(forward, x, gamma, beta, _bn_param(conv["train"], eps, conv, x.shape[1]), what)
        _check_forward_output(out, x, gamma, beta, eps, what, constant, offset)

    batches, eval_batch = _training_batches(rng)
    D = eval_batch.shape[1]
    gamma, beta, eps = np.array([1.2, 0.7, -0.5, 2.0, 1.0]), np.array([0.1, 0.2, -0.3, 0.0, 1.0]), 1e-5
    bn_param = _bn_param(conv["train"], eps, conv, D)
    start = (bn_param["running_mean"].copy(), bn_param["running_var"].copy())
    means, variances = [], []
    for t, x in enumerate(batches):
        bn_param["mode"] = conv["train"]
        _run_forward(forward, x, gamma, beta, bn_param, f"at training step {t + 1}")
        rm, rv = _read_running(bn_param, D, f"training step {t + 1}")
        means.append(rm)
        variances.append(rv)
    _check_running(np.array(means), np.array(variances), batches, *start, conv, 1e-8, "forward")

    before = _read_running(bn_param, D, "training")
    bn_param["mode"] = conv["eval"]
    out, _ = _run_forward(forward, eval_batch, gamma, beta, bn_param, f"in mode '{conv['eval']}'")
    after = _read_running(bn_param, D, f"mode '{conv['eval']}'")
    _check_eval(out, eval_batch, gamma, beta, eps, before, after, 1e-6, f"mode '{conv['eval']}'")


def check_batchnorm_backward(backward, forward, convention: str = "torch", seed: int = 0) -> None:
    """Check a batch-norm backward ``backward(dout, cache) -> (dx, dgamma, dbeta)``, cache from ``forward``.

    The student's forward runs in training mode on a (10, 4) batch with nonzero means and gamma != 1,
    and its cache goes, untouched, to the student's backward. The result is compared with
        dbeta = sum dout,   dgamma = sum dout * x_hat,   dx_hat = gamma * dout,
        dx = (dx_hat - mean dx_hat - x_hat * mean(dx_hat * x_hat)) / sqrt(var + eps)
    (sums and means over the batch, so sum dx = 0), computed here from x, gamma and dout alone;
    with eps = 1e-5 and eps = 0.5. convention: as check_batchnorm_forward (only the momentum passed differs).
    Prints ✓ lines; raises HomeworkCheckFailed (mistake = an id of MISTAKES, or None) otherwise.
    """
    conv = _convention(convention)
    rng = np.random.default_rng(seed)
    x, gamma, beta, dout = _backward_probe(rng)
    N, D = x.shape
    for eps in (1e-5, 0.5):
        what = f"(training, {N}x{D} batch, eps = {eps:g})"
        out, cache = _run_forward(forward, x, gamma, beta, _bn_param(conv["train"], eps, conv, D), what)
        expected = _forward_candidates(x, gamma, beta, eps)[0][2]
        err = _max_diff(out, expected)
        if err > _tol(expected, 1e-6):
            _fail(f"forward {what}: out is off by up to {err:.3g}, so its backward cannot be checked", None,
                  "make check_batchnorm_forward pass first")
        result = _call(backward, (dout.copy(), cache), f"backward {what}")
        if result is None or (isinstance(result, (tuple, list)) and all(r is None for r in result)):
            _fail(f"backward {what} returned {result!r}", "not_implemented")
        if not (isinstance(result, (tuple, list)) and len(result) == 3):
            _fail(f"backward {what} returned a {type(result).__name__}, not (dx, dgamma, dbeta)", None,
                  "return the triple (dx, dgamma, dbeta)")
        if any(r is None for r in result):
            names = [n for n, r in zip(("dx", "dgamma", "dbeta"), result) if r is None]
            _fail(f"backward {what} returned None for {', '.join(names)}", "not_implemented")
        dx = _as_array(result[0], "dx", (N, D))
        dgamma = _as_array(result[1], "dgamma", (D,))
        dbeta = _as_array(result[2], "dbeta", (D,))
        _check_backward_grads(dx, dgamma, dbeta, x, gamma, dout, eps, what)


# ----------------------------------------------------------------------------- module checker
def _build(cls, num_features: int, eps: float):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = cls(num_features, eps=eps, momentum=0.1)
    except NotImplementedError:
        _fail(f"{getattr(cls, '__name__', cls)}({num_features}, eps={eps:g}, momentum=0.1) raised NotImplementedError",
              "not_implemented")
    except Exception as e:
        _fail(f"{getattr(cls, '__name__', cls)}({num_features}, eps={eps:g}, momentum=0.1) raised "
              f"{type(e).__name__}: {e}", None, "the constructor must accept (num_features, eps=..., momentum=...)")
    if not isinstance(module, torch.nn.Module):
        _fail(f"{getattr(cls, '__name__', cls)}(...) built a {type(module).__name__}, not a torch.nn.Module", None,
              "subclass torch.nn.Module")
    return module


def _load(module, gamma, beta, dtype):
    C = len(gamma)
    state = {"weight": torch.as_tensor(gamma, dtype=dtype), "bias": torch.as_tensor(beta, dtype=dtype),
             "running_mean": torch.zeros(C, dtype=dtype), "running_var": torch.ones(C, dtype=dtype),
             "num_batches_tracked": torch.tensor(0, dtype=torch.long)}
    _call(module.load_state_dict, (state,), "load_state_dict of torch's BatchNorm1d state_dict")
    return module


def _run_module(module, x: torch.Tensor, what: str) -> np.ndarray:
    out = _call(module, (x,), f"forward {what}")
    if out is None:
        _fail(f"forward {what} returned None", "not_implemented")
    return _as_array(out, "out", tuple(x.shape))


def _module_running(module, C: int):
    state = module.state_dict()
    return tuple(_as_array(state[name], name, (C,)).copy() for name in ("running_mean", "running_var"))


def _check_module_structure(module, name: str) -> None:
    stat_words = ("running", "mean", "var", "mu", "sigma", "std", "avg", "moving")
    parameters = [n for n, _ in module.named_parameters()]
    as_parameters = [n for n in parameters if any(w in n.lower() for w in stat_words)]
    if as_parameters:
        _fail(f"{name}: {', '.join(as_parameters)} {'is an' if len(as_parameters) == 1 else 'are'} nn.Parameter",
              "statistics_as_parameters")
    keys = list(module.state_dict().keys())
    missing = [k for k in STATE_DICT_KEYS if k not in keys]
    unexpected = [k for k in keys if k not in STATE_DICT_KEYS]
    if missing or unexpected:
        _fail(f"{name}: state_dict keys are {keys}; missing {missing}, unexpected {unexpected}", "state_dict_keys")
    if sorted(parameters) != ["bias", "weight"]:
        _fail(f"{name}: its parameters are {parameters}, expected weight and bias", None,
              "make weight and bias nn.Parameters (and nothing else)")
    _ok(f"{name}: parameters weight, bias; buffers running_mean, running_var, num_batches_tracked "
        "(torch's state_dict loads)")


def check_batchnorm_module(cls, seed: int = 0) -> None:
    """Check a batch-norm module class, built as ``cls(num_features, eps=1e-5, momentum=0.1)``, for (N, C) input.

    The module must behave as torch.nn.BatchNorm1d: parameters weight and bias, buffers running_mean,
    running_var and num_batches_tracked (torch's state_dict loads); in training
        out = weight * (x - mu) / sqrt(var + eps) + bias   (mu, var: biased, per feature over the batch),
        running = (1 - momentum) * running + momentum * batch,  running_var with the unbiased variance,
    updated outside autograd; in eval, out uses running_mean and running_var and updates nothing.
    Runs the forward probes of check_batchnorm_forward on float64 copies (``.double()``, eps = 0.5 through the
    constructor), 5 training steps on float32 inputs that require grad, eval on a class-sorted batch, and the
    gradients of input, weight and bias against torch.nn.functional.batch_norm.
    Prints ✓ lines; raises HomeworkCheckFailed (mistake = an id of MISTAKES, or None) otherwise.
    """
    rng = np.random.default_rng(seed)
    name = getattr(cls, "__name__", repr(cls))
    probes = _formula_probes(rng)
    C = probes[0][1].shape[1]

    module = _build(cls, C, 1e-5)
    _run_module(module, torch.as_tensor(probes[0][1], dtype=torch.float32), "on a first batch")
    _check_module_structure(module, name)

    for what, x, gamma, beta, eps, constant, offset in probes:
        module = _load(_build(cls, C, eps).double(), gamma, beta, torch.float64)
        module.train()
        out = _run_module(module, torch.as_tensor(x, dtype=torch.float64), what)
        _check_forward_output(out, x, gamma, beta, eps, what, constant, offset)

    batches, eval_batch = _training_batches(rng)
    batches = [b.astype(np.float32).astype(np.float64) for b in batches]
    eval_batch = eval_batch.astype(np.float32).astype(np.float64)
    gamma = np.array([1.25, 0.75, -0.5, 2.0, 1.0])
    beta = np.array([0.125, 0.25, -0.375, 0.0, 1.0])
    eps = 1e-5
    module = _load(_build(cls, C, eps), gamma, beta, torch.float32)
    module.train()
    start = _module_running(module, C)
    means, variances, with_grad = [], [], []
    for t, x in enumerate(batches):
        # as activations from a layer below: the input requires grad
        x_in = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        _run_module(module, x_in, f"at training step {t + 1}")
        rm, rv = _module_running(module, C)
        means.append(rm)
        variances.append(rv)
        with_grad += [n for n, b in module.named_buffers() if b is not None and (b.requires_grad or b.grad_fn)]
    conv = CONVENTIONS["torch"]
    _check_running(np.array(means), np.array(variances), batches, *start, conv, 1e-4, name)
    if with_grad:
        _fail(f"{name}: after training steps on inputs that require grad, the buffers {sorted(set(with_grad))} "
              "require grad (they carry a grad_fn)", "running_stats_with_grad")
    _ok(f"{name}: running statistics are updated outside autograd (inputs that require grad)")

    before = _module_running(module, C)
    module.eval()
    out = _run_module(module, torch.as_tensor(eval_batch, dtype=torch.float32), "in eval mode")
    after = _module_running(module, C)
    _check_eval(out, eval_batch, gamma, beta, eps, before, after, 1e-5, "eval")

    _check_module_gradients(cls, C, rng)


def _check_module_gradients(cls, C: int, rng) -> None:
    x, gamma, beta, dout = _module_grad_probe(rng, C)
    eps = 1e-5
    module = _load(_build(cls, C, eps).double(), gamma, beta, torch.float64)
    module.train()
    x_in = torch.tensor(x, requires_grad=True)
    what = f"through the module (training, {x.shape[0]}x{C}, float64, autograd)"
    out = _call(module, (x_in,), f"forward {what}")
    params = dict(module.named_parameters())
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        _fail(f"backward {what}: the output does not depend on the input through autograd", None,
              "compute the output with torch operations on the input, without .detach() or NumPy")
    grads = _call(torch.autograd.grad, ((out * torch.as_tensor(dout)).sum(), [x_in, params["weight"], params["bias"]],
                                        None, False, False, True), f"autograd backward {what}")
    grads = [np.zeros(s) if g is None else g.detach().numpy() for g, s in zip(grads, [x.shape, (C,), (C,)])]

    ref_in = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    ref_out = F.batch_norm(ref_in[0], None, None, ref_in[1], ref_in[2], training=True, eps=eps)
    reference = [g.numpy() for g in torch.autograd.grad((ref_out * torch.as_tensor(dout)).sum(), ref_in)]
    _check_backward_grads(*grads, x, gamma, dout, eps, what, reference=reference, rel=1e-7)


def _module_grad_probe(rng, C: int, N: int = 12):
    x = np.linspace(-3.0, 4.0, C) + np.linspace(0.5, 2.0, C) * rng.standard_normal((N, C))
    gamma = np.linspace(1.7, -0.6, C)
    beta = np.linspace(0.4, -1.2, C)
    dout = rng.standard_normal((N, C)) + np.linspace(0.5, -0.3, C)
    return x, gamma, beta, dout
