"""Students' batch norms for tests/test_homework.py: right ones, and each known mistake in several spellings.

Each factory takes a mistake id (None: the right code) and returns a forward, a backward or a module
class written in one style: CS231n's layers.py (bn_param.get, dict writes, momentum on the old value,
mode 'test'), a compact vectorized NumPy style (torch's convention), sums written by hand in loops,
torch tensors inside a NumPy function; for modules, an nn.Module with register_buffer, a subclass of
torch.nn.BatchNorm1d, and one that keeps its statistics as plain attributes.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


# ----------------------------------------------------------------------------- CS231n's style
def cs231n_forward(mistake=None):
    """CS231n assignment 2's batchnorm_forward as its reference solution writes it (momentum 0.9 is the
    weight of the old value, biased running variance, mode 'train' / 'test'), with one mistake."""

    def batchnorm_forward(x, gamma, beta, bn_param):
        mode = bn_param["mode"]
        eps = bn_param.get("eps", 1e-5)
        momentum = bn_param.get("momentum", 0.9)

        N, D = x.shape
        running_mean = bn_param.get("running_mean", np.zeros(D, dtype=x.dtype))
        running_var = bn_param.get("running_var", np.zeros(D, dtype=x.dtype))

        out, cache = None, None
        if mistake == "not_implemented":
            return out, cache  # the untouched starter cell
        if mode == "train":
            if mistake == "wrong_axis":
                sample_mean = np.mean(x, axis=1, keepdims=True)
                sample_var = np.var(x, axis=1, keepdims=True)
            else:
                sample_mean = np.mean(x, axis=0)
                if mistake == "one_pass_variance":
                    sample_var = np.mean(x**2, axis=0) - sample_mean**2
                elif mistake == "unbiased_batch_variance":
                    sample_var = np.var(x, axis=0, ddof=1)
                else:
                    sample_var = np.var(x, axis=0)
            if mistake == "divide_by_variance":
                x_hat = (x - sample_mean) / (sample_var + eps)
            elif mistake == "eps_misplaced":
                x_hat = (x - sample_mean) / (np.sqrt(sample_var) + eps)
            else:
                x_hat = (x - sample_mean) / np.sqrt(sample_var + eps)
            out = x_hat + gamma + beta if mistake == "gamma_added" else gamma * x_hat + beta
            cache = (x, x_hat, sample_mean, sample_var, gamma, eps)

            if mistake == "momentum_reversed":
                running_mean = (1 - momentum) * running_mean + momentum * sample_mean
                running_var = (1 - momentum) * running_var + momentum * sample_var
            else:
                running_mean = momentum * running_mean + (1 - momentum) * sample_mean
                running_var = momentum * running_var + (1 - momentum) * sample_var
            if mistake == "running_stats_not_updated":
                return out, cache  # the new values were never stored back in bn_param
        elif mode == "test":
            if mistake == "test_batch_statistics":
                x_hat = (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + eps)
            else:
                if mistake == "eval_updates_running_stats":
                    running_mean = momentum * running_mean + (1 - momentum) * x.mean(axis=0)
                    running_var = momentum * running_var + (1 - momentum) * x.var(axis=0)
                x_hat = (x - running_mean) / np.sqrt(running_var + eps)
            out = gamma * x_hat + beta
        else:
            raise ValueError('Invalid forward batchnorm mode "%s"' % mode)

        bn_param["running_mean"] = running_mean
        bn_param["running_var"] = running_var
        return out, cache

    return batchnorm_forward


def cs231n_forward_unbiased_running_var(x, gamma, beta, bn_param):
    """CS231n's style, but running_var tracks the unbiased variance: wrong for CS231n's convention."""
    out, cache = cs231n_forward()(x, gamma, beta, bn_param)
    if bn_param["mode"] == "train":
        # undo the biased update and redo it with the unbiased variance
        N = x.shape[0]
        m = bn_param["momentum"]
        old = (bn_param["running_var"] - (1 - m) * x.var(axis=0)) / m
        bn_param["running_var"] = m * old + (1 - m) * x.var(axis=0) * N / (N - 1)
    return out, cache


def cs231n_backward(mistake=None):
    """CS231n's staged backward, one node of the graph at a time, for cs231n_forward's tuple cache."""

    def batchnorm_backward(dout, cache):
        dx, dgamma, dbeta = None, None, None
        if mistake == "not_implemented":
            return dx, dgamma, dbeta
        x, x_hat, mu, var, gamma, eps = cache
        N = x.shape[0]
        dbeta = np.sum(dout, axis=0)
        dgamma = np.sum(dout * (x if mistake == "dgamma_uses_x" else x_hat), axis=0)
        dx_hat = dout * gamma
        xc = x - mu
        std = np.sqrt(var + eps)
        dxc = dx_hat / std
        if mistake != "missing_variance_path":
            dstd = -np.sum(dx_hat * xc, axis=0) / std**2
            dvar = 0.5 * dstd / std
            dxc += 2.0 * xc * dvar / N
        dmu = -np.sum(dxc, axis=0)
        dx = dxc if mistake == "missing_mean_path" else dxc + dmu / N
        if mistake == "dgamma_dbeta_swapped":
            return dx, dbeta, dgamma
        return dx, dgamma, dbeta

    return batchnorm_backward


# ----------------------------------------------------------------------------- compact NumPy, torch's convention
def compact_forward(mistake=None):
    """A vectorized forward in torch's convention (momentum on the new batch, unbiased running variance,
    mode 'eval'), updating the running statistics in place, with one mistake."""

    def forward(x, gamma, beta, bn_param):
        if mistake == "not_implemented":
            raise NotImplementedError("batch norm forward")
        eps, momentum = bn_param["eps"], bn_param["momentum"]
        running_mean, running_var = bn_param["running_mean"], bn_param["running_var"]
        train = bn_param["mode"] == "train" or mistake == "test_batch_statistics"  # that one ignores the mode
        if train:
            axis = 1 if mistake == "wrong_axis" else 0
            mu = x.mean(axis=axis, keepdims=True)
            if mistake == "one_pass_variance":
                var = (x * x).mean(axis=axis, keepdims=True) - mu * mu
            else:
                var = x.var(axis=axis, keepdims=True, ddof=1 if mistake == "unbiased_batch_variance" else 0)
            if mistake != "running_stats_not_updated":
                weight = 1 - momentum if mistake == "momentum_reversed" else momentum
                running_mean *= 1 - weight
                running_mean += weight * x.mean(axis=0)
                running_var *= 1 - weight
                running_var += weight * x.var(axis=0, ddof=0 if mistake == "biased_running_variance" else 1)
        else:
            mu, var = running_mean.copy(), running_var.copy()
            if mistake == "eval_updates_running_stats":
                running_mean += momentum * (x.mean(axis=0) - running_mean)
                running_var += momentum * (x.var(axis=0, ddof=1) - running_var)
        if mistake == "divide_by_variance":
            std = var
        elif mistake == "eps_misplaced":
            std = np.sqrt(var)
        else:
            std = np.sqrt(var + eps)
        x_hat = (x - mu) / std
        out = x_hat + gamma + beta if mistake == "gamma_added" else gamma * x_hat + beta
        return out, {"x": x, "x_hat": x_hat, "std": std, "gamma": gamma}

    return forward


def compact_backward(mistake=None):
    """The closed-form backward, for compact_forward's dict cache."""

    def backward(dout, cache):
        if mistake == "not_implemented":
            raise NotImplementedError
        x_hat, std, gamma = cache["x_hat"], cache["std"], cache["gamma"]
        dbeta = dout.sum(axis=0)
        dgamma = (dout * (cache["x"] if mistake == "dgamma_uses_x" else x_hat)).sum(axis=0)
        g = dout * gamma
        if mistake == "missing_mean_path":
            dx = g / std
        elif mistake == "missing_variance_path":
            dx = (g - g.mean(axis=0)) / std
        else:
            dx = (g - g.mean(axis=0) - x_hat * (g * x_hat).mean(axis=0)) / std
        if mistake == "dgamma_dbeta_swapped":
            dgamma, dbeta = dbeta, dgamma
        return dx, dgamma, dbeta

    return backward


# ----------------------------------------------------------------------------- sums by hand
def loop_forward(mistake=None):
    """Torch's convention, every statistic a Python loop over features and samples, with one mistake."""

    def forward(x, gamma, beta, bn_param):
        N, D = x.shape
        eps, momentum = bn_param["eps"], bn_param["momentum"]
        out = np.empty_like(x)
        new_mean = np.array(bn_param["running_mean"], dtype=float)
        new_var = np.array(bn_param["running_var"], dtype=float)
        for k in range(D):
            column = [float(v) for v in x[:, k]]
            if bn_param["mode"] == "train":
                total = 0.0
                for v in column:
                    total += v
                mu = total / N
                squares = 0.0
                if mistake == "one_pass_variance":
                    for v in column:
                        squares += v * v
                    var = squares / N - mu * mu
                else:
                    for v in column:
                        squares += (v - mu) ** 2
                    var = squares / (N - 1 if mistake == "unbiased_batch_variance" else N)
                unbiased = var if mistake == "unbiased_batch_variance" else var * N / (N - 1)
                weight = 1 - momentum if mistake == "momentum_reversed" else momentum
                new_mean[k] = (1 - weight) * new_mean[k] + weight * mu
                tracked = unbiased * (N - 1) / N if mistake == "biased_running_variance" else unbiased
                new_var[k] = (1 - weight) * new_var[k] + weight * tracked
            else:
                mu, var = new_mean[k], new_var[k]
            for n, v in enumerate(column):
                if mistake == "eps_misplaced":
                    x_hat = (v - mu) / math.sqrt(var) if var > 0 else float("nan")
                elif mistake == "divide_by_variance":
                    x_hat = (v - mu) / (var + eps)
                else:
                    x_hat = (v - mu) / math.sqrt(var + eps)
                out[n, k] = gamma[k] * x_hat + beta[k]
        bn_param["running_mean"] = new_mean
        bn_param["running_var"] = new_var
        return out, None

    return forward


# ----------------------------------------------------------------------------- torch inside a NumPy function
def torch_forward(mistake=None):
    """Torch's convention computed with torch tensors and converted back, with one mistake."""

    def forward(x, gamma, beta, bn_param):
        x_t, g, b = torch.from_numpy(x), torch.from_numpy(gamma), torch.from_numpy(beta)
        eps = 1e-5 if mistake == "eps_misplaced" else bn_param["eps"]  # that one ignores bn_param's eps
        momentum = bn_param["momentum"]
        running_mean = torch.from_numpy(np.array(bn_param["running_mean"]))
        running_var = torch.from_numpy(np.array(bn_param["running_var"]))
        if bn_param["mode"] == "train" or mistake == "test_batch_statistics":
            dim = 1 if mistake == "wrong_axis" else 0
            mu = x_t.mean(dim=dim, keepdim=True)
            var = x_t.var(dim=dim, keepdim=True, unbiased=mistake == "unbiased_batch_variance")
            if mistake != "test_batch_statistics" or bn_param["mode"] == "train":
                running_mean = (1 - momentum) * running_mean + momentum * x_t.mean(0)
                running_var = (1 - momentum) * running_var + momentum * x_t.var(0, unbiased=True)
        else:
            mu, var = running_mean, running_var
        out = (x_t - mu) / torch.sqrt(var + eps)
        out = out + g + b if mistake == "gamma_added" else g * out + b
        if mistake != "running_stats_not_updated":
            bn_param["running_mean"] = running_mean.numpy()
            bn_param["running_var"] = running_var.numpy()
        return out.numpy(), (x, gamma, eps)

    return forward


# ----------------------------------------------------------------------------- modules
def buffer_module(mistake=None):
    """An nn.Module with register_buffer and plain tensor ops, with one mistake."""

    class BufferBatchNorm1d(nn.Module):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            super().__init__()
            if mistake == "not_implemented":
                raise NotImplementedError
            self.eps, self.momentum = eps, momentum
            names = ("gamma", "beta") if mistake == "state_dict_keys" else ("weight", "bias")
            self.register_parameter(names[0], nn.Parameter(torch.ones(num_features)))
            self.register_parameter(names[1], nn.Parameter(torch.zeros(num_features)))
            if mistake == "statistics_as_parameters":
                self.running_mean = nn.Parameter(torch.zeros(num_features), requires_grad=False)
                self.running_var = nn.Parameter(torch.ones(num_features), requires_grad=False)
            else:
                self.register_buffer("running_mean", torch.zeros(num_features))
                self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

        def forward(self, x):
            weight, bias = (self.gamma, self.beta) if mistake == "state_dict_keys" else (self.weight, self.bias)
            if self.training or mistake == "test_batch_statistics":
                dim = 1 if mistake == "wrong_axis" else 0
                mu = x.mean(dim, keepdim=True)
                if mistake == "one_pass_variance":
                    var = (x * x).mean(dim, keepdim=True) - mu**2
                else:
                    var = ((x - mu) ** 2).sum(dim, keepdim=True) / (
                        x.shape[dim] - (1 if mistake == "unbiased_batch_variance" else 0))
                if self.training:
                    batch_mean = x.mean(0)
                    batch_var = x.var(0, unbiased=mistake != "biased_running_variance")
                    m = 1 - self.momentum if mistake == "momentum_reversed" else self.momentum
                    if mistake == "running_stats_with_grad":
                        self.running_mean = (1 - m) * self.running_mean + m * batch_mean
                        self.running_var = (1 - m) * self.running_var + m * batch_var
                    elif mistake == "statistics_as_parameters":
                        self.running_mean.data = (1 - m) * self.running_mean.data + m * batch_mean.detach()
                        self.running_var.data = (1 - m) * self.running_var.data + m * batch_var.detach()
                    elif mistake != "running_stats_not_updated":
                        with torch.no_grad():
                            self.running_mean.mul_(1 - m).add_(m * batch_mean)
                            self.running_var.mul_(1 - m).add_(m * batch_var)
                    self.num_batches_tracked += 1
            else:
                mu, var = self.running_mean, self.running_var
                if mistake == "eval_updates_running_stats":
                    with torch.no_grad():
                        self.running_mean.lerp_(x.mean(0), self.momentum)
                        self.running_var.lerp_(x.var(0), self.momentum)
            if mistake == "divide_by_variance":
                x_hat = (x - mu) / (var + self.eps)
            elif mistake == "eps_misplaced":
                x_hat = (x - mu) / var.sqrt()
            else:
                x_hat = (x - mu) / torch.sqrt(var + self.eps)
            return x_hat + weight + bias if mistake == "gamma_added" else weight * x_hat + bias

    return BufferBatchNorm1d


def subclass_module(mistake=None):
    """A subclass of torch.nn.BatchNorm1d (its parameters and buffers) whose forward is the student's."""

    class MyBatchNorm1d(nn.BatchNorm1d):
        def __init__(self, num_features, eps=1e-5, momentum=0.1):
            if mistake == "momentum_reversed":
                momentum = 1 - momentum  # read as "the weight of the old value", as in CS231n
            super().__init__(num_features, eps=eps, momentum=momentum)
            if mistake == "statistics_as_parameters":
                # "they are learned state, so they are parameters"; torch's own forward then updates them
                self.running_mean = nn.Parameter(self.running_mean, requires_grad=False)
                self.running_var = nn.Parameter(self.running_var, requires_grad=False)

        def forward(self, x):
            if mistake == "not_implemented":
                raise NotImplementedError("TODO")
            if mistake in ("momentum_reversed", "statistics_as_parameters"):
                return super().forward(x)
            if self.training or mistake == "test_batch_statistics":
                dim = 1 if mistake == "wrong_axis" else 0
                mu = x.mean(dim, keepdim=True)
                # torch's var is unbiased unless told otherwise: the natural spelling of that mistake
                var = x.var(dim, keepdim=True) if mistake == "unbiased_batch_variance" else \
                    x.var(dim, keepdim=True, unbiased=False)
                if self.training and mistake != "running_stats_not_updated":
                    batch_var = x.var(0, unbiased=mistake != "biased_running_variance")
                    if mistake == "running_stats_with_grad":  # in place, but under autograd
                        self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(0))
                        self.running_var.mul_(1 - self.momentum).add_(self.momentum * batch_var)
                    else:
                        with torch.no_grad():
                            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(0))
                            self.running_var.mul_(1 - self.momentum).add_(self.momentum * batch_var)
                if self.training:
                    self.num_batches_tracked.add_(1)
            else:
                mu, var = self.running_mean, self.running_var
                if mistake == "eval_updates_running_stats":
                    with torch.no_grad():
                        self.running_mean.copy_(0.9 * self.running_mean + 0.1 * x.mean(0))
                        self.running_var.copy_(0.9 * self.running_var + 0.1 * x.var(0))
                    mu, var = self.running_mean, self.running_var
            if mistake == "divide_by_variance":
                x_hat = (x - mu) / var
            elif mistake == "eps_misplaced":
                x_hat = (x - mu) / (var.sqrt() + self.eps)
            else:
                x_hat = (x - mu) / (var + self.eps).sqrt()
            if mistake == "gamma_added":
                return x_hat + self.weight + self.bias
            return self.weight * x_hat + self.bias

    return MyBatchNorm1d


class PlainAttributeBatchNorm1d(nn.Module):
    """Right numbers, but the running statistics are plain tensor attributes: not in the state_dict."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.running_mean = torch.zeros(num_features)
        self.running_var = torch.ones(num_features)

    def forward(self, x):
        if self.training:
            mu, var = x.mean(0), x.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mu
                self.running_var = (1 - self.momentum) * self.running_var + self.momentum * x.var(0)
        else:
            mu, var = self.running_mean, self.running_var
        return self.weight * (x - mu) / torch.sqrt(var + self.eps) + self.bias


class NoCounterBatchNorm1d(nn.Module):
    """Right numbers and buffers, but no num_batches_tracked: torch's state_dict has a key it lacks."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.running_mean.lerp_(x.mean(0), self.momentum)
                self.running_var.lerp_(x.var(0), self.momentum)
            mu, var = x.mean(0), x.var(0, unbiased=False)
        else:
            mu, var = self.running_mean, self.running_var
        return self.weight * (x - mu) / torch.sqrt(var + self.eps) + self.bias
