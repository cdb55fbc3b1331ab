"""Widely held beliefs about batch normalization that are not in the course's seed articles, each
judged by running code (lesson 13).

Every myth is a function that measures what the belief is about on the course's data and models,
and returns a `MythResult`: the numbers it measured, and a verdict ("false", "half-true", "true")
that follows from those numbers by a threshold the function states. `MYTHS` lists them with the
belief in one line; `run_all` runs them all (under 10 s on one CPU thread).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split, digits
from .experiments import REGULARIZATION, deep_mlp, regularization_run, subset
from .folding import fold_batchnorm
from .layers import is_batchnorm
from .models import conv_net, mlp
from .train import accuracy, recompute_batchnorm_statistics, train_classifier

__all__ = ["VERDICTS", "MythResult", "Myth", "MYTHS", "run_all", "fold_into_next_layer", "border_mask",
           "PLACEMENTS", "placement_mlp", "bn_placement", "no_grad_vs_eval", "bn_and_dropout",
           "eval_vs_batch_of_one", "LR_GRID", "learning_rate_sweep", "folding_exactness"]

VERDICTS = ("false", "half-true", "true")
# "exact" for a fold: the course's parity tolerances (float64 ~1e-10 and below, float32 ~1e-5),
# relative to the size of the outputs compared
EXACT = {torch.float64: 1e-12, torch.float32: 1e-5}


@dataclass
class MythResult:
    """What one myth's function measured: numbers (plain Python values, nested dicts for tables),
    the verdict those numbers give, and a summary sentence that quotes them."""

    name: str
    verdict: str
    numbers: dict
    summary: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def __str__(self) -> str:
        return f"{self.name}: {self.verdict}. {self.summary}"


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _exact(error: float, reference: torch.Tensor, dtype) -> bool:
    return error <= EXACT[dtype] * max(1.0, float(reference.detach().abs().max()))


# ----------------------------------------------------------------------------- folding into the next layer
FOLD_NEXT_TARGETS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fold_into_next_layer(norm: nn.Module, layer: nn.Module) -> nn.Module:
    """A copy of layer that computes layer(norm(x)) with norm in eval mode, for a BN *before* layer.

    In eval, BN is x -> s * x + t per input channel i, with
        s_i = gamma_i / sqrt(running_var_i + eps),   t_i = beta_i - s_i * running_mean_i
    so  W x' + b  with x' = s * x + t  is  W' x + b'  with
        W'[:, i, ...] = W[:, i, ...] * s_i,   b' = b + sum_{i, k} W[:, i, k] t_i
    layer: nn.Linear or nn.Conv1d/2d/3d with groups=1, whose in_features / in_channels equals
    norm.num_features. Exact for a Linear and for a conv without zero padding. With zero padding
    (padding_mode='zeros', padding > 0) it is not: the original conv pads norm's *output* with 0,
    the folded one pads the *input* with 0, which BN would have mapped to t, not 0; so the output
    positions whose window reaches into the padding (`border_mask`) lose sum_k W[:, i, k] t_i over
    the padded taps. Reflect, replicate and circular padding copy real inputs, and fold exactly.
    The weights are computed in float64 and rounded once to layer's dtype.
    """
    if not is_batchnorm(norm):
        raise ValueError(f"norm must be a BN layer, got {type(norm).__name__}")
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("norm has no running statistics (track_running_stats=False): in eval it normalizes "
                         "with each batch's own statistics, which no fixed weights can reproduce")
    if not isinstance(layer, FOLD_NEXT_TARGETS):
        raise ValueError(f"layer must be nn.Linear or nn.Conv1d/2d/3d, got {type(layer).__name__}")
    if isinstance(layer, nn.Linear):
        inputs = layer.in_features
    else:
        inputs = layer.in_channels
        if layer.groups != 1:
            raise ValueError(f"layer has groups={layer.groups}; only groups=1 is supported")
    if inputs != norm.num_features:
        raise ValueError(f"norm has {norm.num_features} features but layer takes {inputs} input channels")
    options = {"dtype": torch.float64, "device": layer.weight.device}
    c = norm.num_features
    gamma = norm.weight.detach().to(**options) if norm.weight is not None else torch.ones(c, **options)
    beta = norm.bias.detach().to(**options) if norm.bias is not None else torch.zeros(c, **options)
    scale = gamma / torch.sqrt(norm.running_var.detach().to(**options) + norm.eps)
    shift = beta - scale * norm.running_mean.detach().to(**options)
    w = layer.weight.detach().to(**options)
    view = (1, c) + (1,) * (w.dim() - 2)      # dim 1 of (out, in, *kernel) is the input channel
    bias = layer.bias.detach().to(**options) if layer.bias is not None else torch.zeros(w.shape[0], **options)
    new_bias = bias + (w * shift.reshape(view)).sum(dim=tuple(range(1, w.dim())))
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        folded.weight.copy_((w * scale.reshape(view)).to(layer.weight.dtype))
        if folded.bias is None:
            folded.bias = nn.Parameter(new_bias.to(layer.weight.dtype), requires_grad=layer.weight.requires_grad)
        else:
            folded.bias.copy_(new_bias.to(folded.bias.dtype))
    return folded


def border_mask(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """(H_out, W_out) bool: the output positions of conv whose window reaches into its padding."""
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"conv must be nn.Conv2d, got {type(conv).__name__}")
    ones = torch.ones(1, 1, height, width, dtype=torch.float64)
    window = torch.ones(1, 1, *conv.kernel_size, dtype=torch.float64)
    # counting the real pixels under each window: fewer than the kernel has means padding
    counts = F.conv2d(ones, window, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    return counts[0, 0] < window.numel()


def _fold_following(model: nn.Sequential) -> nn.Sequential:
    """model (eval) with every BN that is directly followed by a Linear folded into that Linear."""
    modules = list(model)
    out: list[nn.Module] = []
    i = 0
    while i < len(modules):
        if i + 1 < len(modules) and is_batchnorm(modules[i]) and isinstance(modules[i + 1], nn.Linear):
            out.append(fold_into_next_layer(modules[i], modules[i + 1]))
            i += 2
        else:
            out.append(copy.deepcopy(modules[i]))
            i += 1
    return nn.Sequential(*out).eval()


# ----------------------------------------------------------------------------- 1. before or after the ReLU
PLACEMENTS = ("before", "after")
PLACEMENT = dict(hidden=(100, 100), steps=300, batch_size=32, lr=0.1, seeds=(0, 1, 2), accuracy_tolerance=0.03)


def placement_mlp(placement: str, hidden=PLACEMENT["hidden"], in_features: int = 64,
                  out_features: int = 10) -> nn.Sequential:
    """An MLP with torch's BatchNorm1d on one side of each ReLU, then a Linear head:

        'before':  Linear (no bias) -> BN -> ReLU     (Ioffe & Szegedy; bnlab.models.mlp)
        'after':   Linear -> ReLU -> BN               (the bias matters here: ReLU comes first)
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {hidden}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        if placement == "before":
            layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
        else:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.BatchNorm1d(h)]
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def _next_layer_input(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """What the second Linear of model receives for x (model's mode as it is)."""
    second = [m for m in model if isinstance(m, nn.Linear)][1]
    seen = []
    hook = second.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        hook.remove()
    return seen[0]


def _distribution(u: torch.Tensor) -> dict:
    channel_mean = u.mean(0)
    return {"zero_fraction": float((u == 0).double().mean()), "negative_fraction": float((u < 0).double().mean()),
            "mean_channel_mean": float(channel_mean.mean()), "max_abs_channel_mean": float(channel_mean.abs().max())}


def _swap_relu_and_bn(model: nn.Sequential) -> nn.Sequential:
    """Linear -> ReLU -> BN blocks reordered to Linear -> BN -> ReLU, the same modules (copies):
    what folding a BN into the Linear before it, past the ReLU, would compute."""
    modules = [copy.deepcopy(m) for m in model]
    for i in range(len(modules) - 2):
        if isinstance(modules[i + 1], nn.ReLU) and is_batchnorm(modules[i + 2]):
            modules[i + 1], modules[i + 2] = modules[i + 2], modules[i + 1]
    return nn.Sequential(*modules)


def bn_placement(seeds=PLACEMENT["seeds"], steps: int = PLACEMENT["steps"], hidden=PLACEMENT["hidden"],
                 data: Split | None = None, accuracy_tolerance: float = PLACEMENT["accuracy_tolerance"]) -> MythResult:
    """Myth: it makes no difference whether BN goes before or after the ReLU.

    Trains `placement_mlp('before')` and `placement_mlp('after')` on digits (SGD lr 0.1, batch 32)
    for each seed, and measures:
      - the final test accuracies (eval mode); 'accuracies close': |mean difference| <= accuracy_tolerance;
      - what the next Linear receives, at initialization (train mode, 256 training digits: after-ReLU
        BN hands it x_hat = zero-mean per channel exactly, since beta = 0) and after training (eval,
        test set): BN-before hands it ReLU outputs, half-rectified (zeros, nothing negative);
      - folding (in float64, on the test set): fold_batchnorm folds BN-before into the Linear before
        it exactly; for BN-after it folds nothing, and moving the BN past the ReLU into the Linear
        before it changes the net (ReLU(s z + t) != s ReLU(z) + t); `fold_into_next_layer` folds it
        into the Linear *after* it exactly.
    Verdict: 'false' if the accuracies are not close; 'half-true' if they are but the next layer's
    inputs or the folding differ; 'true' if nothing differs.
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    data = data if data is not None else digits()
    batch = data.x_train[:256]
    acc = {p: [] for p in PLACEMENTS}
    init, trained, fold = {p: [] for p in PLACEMENTS}, {p: [] for p in PLACEMENTS}, {}
    naive_accuracy, true_accuracy, output_scale = [], [], []
    for seed in seeds:
        for placement in PLACEMENTS:
            torch.manual_seed(seed)
            model = placement_mlp(placement, tuple(hidden), data.num_features, data.num_classes)
            # on a copy: the probe's batch must not enter the running statistics of the net that trains
            init[placement].append(_distribution(_next_layer_input(copy.deepcopy(model).train(), batch)))
            history = train_classifier(model, data, steps=steps, batch_size=PLACEMENT["batch_size"],
                                       lr=PLACEMENT["lr"], eval_every=steps, seed=seed, device="cpu",
                                       progress=False)
            acc[placement].append(history.test_accuracy[-1])
            model.eval()
            trained[placement].append(_distribution(_next_layer_input(model, data.x_test)))
            model64, x64 = copy.deepcopy(model).double(), data.x_test.double()
            with torch.no_grad():
                reference = model64(x64)
                output_scale.append(float(reference.abs().max()))
                folded, report = fold_batchnorm(model64, return_report=True)
                entry = fold.setdefault(placement, {"folded_by_fold_batchnorm": [], "fold_error": [],
                                                    "fold_into_next_error": [], "fold_into_previous_error": []})
                entry["folded_by_fold_batchnorm"].append(len(report.folded))
                entry["fold_error"].append(_max_error(folded(x64), reference))
                if placement == "after":
                    entry["fold_into_next_error"].append(_max_error(_fold_following(model64)(x64), reference))
                    naive = fold_batchnorm(_swap_relu_and_bn(model64))
                    entry["fold_into_previous_error"].append(_max_error(naive(x64), reference))
                    naive_accuracy.append(accuracy(naive, x64, data.y_test))
                    true_accuracy.append(accuracy(model64, x64, data.y_test))
    layers = len(hidden)

    numbers = {
        "test_accuracy": {p: acc[p] for p in PLACEMENTS},
        "mean_accuracy_difference": float(np.mean(acc["after"]) - np.mean(acc["before"])),
        "init_max_abs_channel_mean": {p: max(d["max_abs_channel_mean"] for d in init[p]) for p in PLACEMENTS},
        "init_mean_channel_mean": {p: float(np.mean([d["mean_channel_mean"] for d in init[p]])) for p in PLACEMENTS},
        "trained_zero_fraction": {p: float(np.mean([d["zero_fraction"] for d in trained[p]])) for p in PLACEMENTS},
        "trained_negative_fraction": {p: float(np.mean([d["negative_fraction"] for d in trained[p]]))
                                      for p in PLACEMENTS},
        "bn_layers": layers,
        "folded_by_fold_batchnorm": {p: min(fold[p]["folded_by_fold_batchnorm"]) for p in PLACEMENTS},
        "fold_error_before": max(fold["before"]["fold_error"]),
        "fold_into_next_error_after": max(fold["after"]["fold_into_next_error"]),
        "fold_into_previous_error_after": min(fold["after"]["fold_into_previous_error"]),
        "fold_into_previous_accuracy_after": naive_accuracy,
        "accuracy_after": true_accuracy,
        "output_scale": max(output_scale),
        "accuracy_tolerance": accuracy_tolerance,
    }
    close = abs(numbers["mean_accuracy_difference"]) <= accuracy_tolerance
    inputs_differ = (numbers["trained_negative_fraction"]["before"] == 0
                     and numbers["trained_negative_fraction"]["after"] > 0.1)
    exact = EXACT[torch.float64] * max(1.0, numbers["output_scale"])
    folds_differ = (numbers["folded_by_fold_batchnorm"]["before"] == layers
                    and numbers["folded_by_fold_batchnorm"]["after"] == 0
                    and numbers["fold_error_before"] <= exact
                    and numbers["fold_into_next_error_after"] <= exact
                    and numbers["fold_into_previous_error_after"] > 1e-3)
    verdict = "false" if not close else ("half-true" if inputs_differ or folds_differ else "true")
    summary = (("both train" if close else "they do not train alike")
               + f": mean test accuracy {np.mean(acc['before']):.3f} (BN before ReLU) vs "
               f"{np.mean(acc['after']):.3f} (after), over {len(seeds)} seeds. What differs: the next layer "
               f"gets half-rectified inputs from BN-before ({100 * numbers['trained_zero_fraction']['before']:.0f}% "
               f"zeros, none negative) but centred ones from BN-after "
               f"({100 * numbers['trained_negative_fraction']['after']:.0f}% negative); fold_batchnorm folds "
               f"BN-before exactly (error {numbers['fold_error_before']:.1e}) and no BN-after, which folds "
               f"exactly into the next Linear instead ({numbers['fold_into_next_error_after']:.1e}), while moving "
               f"it into the Linear before the ReLU changes the outputs by "
               f"{numbers['fold_into_previous_error_after']:.2g} or more (test accuracy "
               f"{min(naive_accuracy):.2f}-{max(naive_accuracy):.2f} instead of "
               f"{min(true_accuracy):.2f}-{max(true_accuracy):.2f}).")
    return MythResult("bn_placement", verdict, numbers, summary)


# ----------------------------------------------------------------------------- 2. no_grad is not eval
def no_grad_vs_eval(norm: str = "torch_bn", batch_size: int = 64, seed: int = 0,
                    data: Split | None = None) -> MythResult:
    """Myth: torch.no_grad() puts a model in inference mode, like model.eval().

    For an MLP with norm (`bnlab.models.mlp`, one hidden layer of 32, running statistics first
    estimated over the training set), each of the 4 combinations of {model.train(), model.eval()}
    x {gradients on, torch.no_grad()} runs one batch of batch_size training digits through a fresh
    copy, and records: how far the BN's running_mean moved and how many batches it counted; how
    much example 0's output changes when the other examples of its batch are replaced
    ('batch_dependence': BN in training normalizes with mu_B, sigma^2_B); whether the output
    requires grad; and, per mode, the largest difference between the outputs with and without
    no_grad. Verdict: 'true' if train mode under no_grad behaves like eval (running statistics
    untouched, no dependence on the batch, up to 1e-6), else 'false'.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (BN needs two values per channel in training), got {batch_size}")
    data = data if data is not None else digits()
    if len(data.x_train) < 2 * batch_size:
        raise ValueError(f"need at least {2 * batch_size} training examples, got {len(data.x_train)}")
    torch.manual_seed(seed)
    model = mlp(data.num_features, (32,), data.num_classes, norm=norm)
    recompute_batchnorm_statistics(model, data.x_train)
    batch = data.x_train[:batch_size]
    # example 0 among other batch-mates
    other = torch.cat([data.x_train[:1], data.x_train[batch_size:2 * batch_size - 1]])
    table, outputs = {}, {}
    for mode in ("train", "eval"):
        for grad in ("grad", "no_grad"):
            net = copy.deepcopy(model).train(mode == "train")
            bn = next(m for m in net.modules() if is_batchnorm(m))
            mean_before, tracked_before = bn.running_mean.clone(), int(bn.num_batches_tracked)
            context = torch.no_grad() if grad == "no_grad" else contextlib.nullcontext()
            with context:
                out = net(batch)
                out_other = copy.deepcopy(model).train(mode == "train")(other)
            outputs[mode, grad] = out.detach()
            table[f"{mode}, {grad}"] = {
                "running_mean_change": float((bn.running_mean - mean_before).abs().max()),
                "batches_tracked": int(bn.num_batches_tracked) - tracked_before,
                "batch_dependence": _max_error(out[0], out_other[0]),
                "output_requires_grad": bool(out.requires_grad)}
    numbers = {"table": table,
               "grad_makes_no_difference": {mode: _max_error(outputs[mode, "grad"], outputs[mode, "no_grad"])
                                            for mode in ("train", "eval")}}
    row = table["train, no_grad"]
    like_eval = row["running_mean_change"] <= 1e-6 and row["batch_dependence"] <= 1e-6
    verdict = "true" if like_eval else "false"
    if like_eval:
        summary = (f"under no_grad in train mode BN behaved like eval here (batch dependence "
                   f"{row['batch_dependence']:.1g}, running_mean moved {row['running_mean_change']:.1g}).")
    else:
        summary = (f"under no_grad in train mode BN still normalizes with the batch's statistics (example 0's "
                   f"output moves by {row['batch_dependence']:.2f} when its batch-mates change) and still updates "
                   f"its running statistics (running_mean moved by {row['running_mean_change']:.2g}, "
                   f"{row['batches_tracked']} batch counted); eval mode uses the running statistics with or without "
                   f"gradients (dependence {table['eval, grad']['batch_dependence']:.1g}, nothing updated). no_grad "
                   f"only switches off the graph: the two are orthogonal.")
    return MythResult("no_grad_vs_eval", verdict, numbers, summary)


# ----------------------------------------------------------------------------- 3. BN and dropout
DROPOUT = dict(batch_size=64, p=0.5, seeds=(0, 1, 2), threshold=0.02)


def bn_and_dropout(seeds=DROPOUT["seeds"], batch_size: int = DROPOUT["batch_size"], p: float = DROPOUT["p"],
                   steps: int | None = None, data: Split | None = None,
                   threshold: float = DROPOUT["threshold"]) -> MythResult:
    """Myth: BN removes the need for dropout.

    Lesson 10's overfitting regime: `bnlab.experiments.regularization_run` (3 x 100 MLP, the
    300-digit training subset, REGULARIZATION['steps'] SGD steps, lr 0.05, momentum 0.9) at
    batch_size, with dropout 0 and p after every block, for each seed, with torch's BN and, as the
    control that shows whether dropout can help at all here, without any norm. Measures the test
    accuracy and the train-test gap (eval mode); 'gain': mean test accuracy with dropout minus
    without, for each net.
    Verdict: 'false' if dropout still adds at least threshold to the BN net (BN did not remove the
    need); otherwise 'half-true': here BN alone does as well, which one small setting cannot make a
    rule (a larger net, longer training or less data can still need dropout).
    """
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    data = data if data is not None else subset(digits(), REGULARIZATION["train_size"])
    nets = {"bn": "torch_bn", "plain": None}
    runs = {(net, dropout, seed): regularization_run(batch_size, dropout=dropout, seed=seed, norm=norm, data=data,
                                                     steps=steps)
            for net, norm in nets.items() for dropout in (0.0, p) for seed in seeds}

    def values(net, dropout, attr):
        return [float(getattr(runs[net, dropout, seed], attr)) for seed in seeds]

    numbers = {attr: {f"{net}{'_dropout' if dropout else ''}": values(net, dropout, attr)
                      for net in nets for dropout in (0.0, p)} for attr in ("test_accuracy", "gap")}
    numbers.update(p=p, batch_size=batch_size, train_size=len(data.x_train), threshold=threshold)
    mean = {key: float(np.mean(v)) for key, v in numbers["test_accuracy"].items()}
    numbers["gain"] = {net: mean[f"{net}_dropout"] - mean[net] for net in nets}
    numbers["gap_change"] = {net: float(np.mean(numbers["gap"][f"{net}_dropout"]) - np.mean(numbers["gap"][net]))
                             for net in nets}
    gain = numbers["gain"]["bn"]
    verdict = "false" if gain >= threshold else "half-true"
    control = (f"without BN, dropout adds {100 * numbers['gain']['plain']:+.1f} points "
               f"({mean['plain']:.3f} -> {mean['plain_dropout']:.3f}); with BN it adds {100 * gain:+.1f} "
               f"({mean['bn']:.3f} -> {mean['bn_dropout']:.3f}) and moves the train-test gap by "
               f"{100 * numbers['gap_change']['bn']:+.1f}")
    summary = (f"on {len(data.x_train)} training digits at batch {batch_size}, dropout {p:g}, {len(seeds)} seeds: "
               f"{control}. Threshold {100 * threshold:.0f} points: "
               + ("dropout still helps the BN net." if verdict == "false" else
                  "here BN alone does as well, but that is one setting, not a rule."))
    return MythResult("bn_and_dropout", verdict, numbers, summary)


# ----------------------------------------------------------------------------- 4. eval is not a batch of one
def eval_vs_batch_of_one(seed: int = 0, steps: int = 100, examples: int = 100,
                         data: Split | None = None) -> MythResult:
    """Myth: evaluating a BN net equals running it on a batch of one example.

    Trains lesson 06's conv net (`bnlab.models.conv_net`, torch's BN, digits images) for steps SGD
    steps, then on `examples` test images measures:
      - eval mode, one image at a time vs all in one batch: the same (running statistics);
      - train mode, one image at a time vs eval: different, and the accuracy each gives. A batch of
        one (1, C, H, W) normalizes each channel over its own H*W pixels: instance norm, checked
        against torch.nn.functional.instance_norm on the first BN's input;
      - a (1, C) input: x - mu_B = 0 exactly, so BN would output beta whatever x; torch refuses it
        ("Expected more than 1 value per channel when training"); the message is recorded.
    Verdict: 'true' if eval is batch-independent (<= 1e-5 on the logits) and train mode at batch 1
    agrees with it (<= 0.1); else 'false'.
    """
    data = data if data is not None else digits(images=True)
    if data.x_train.dim() != 4:
        raise ValueError(f"need images (N, C, H, W), e.g. digits(images=True); got shape {tuple(data.x_train.shape)}")
    torch.manual_seed(seed)
    model = conv_net(data.x_train.shape[1], data.num_classes, norm="torch_bn", image_size=data.x_train.shape[-1])
    train_classifier(model, data, steps=steps, batch_size=32, lr=0.1, eval_every=steps, seed=seed, device="cpu",
                     progress=False)
    x, y = data.x_test[:examples], data.y_test[:examples]
    model.eval()
    in_train_mode = copy.deepcopy(model).train()
    with torch.no_grad():
        batched = model(x)
        one_by_one = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
        train_one = torch.cat([in_train_mode(x[i:i + 1]) for i in range(len(x))])
        conv, bn = model[0][0], model[0][1]
        z = conv(x[:1])
        bn_train = copy.deepcopy(bn).train()(z)
        instance = F.instance_norm(z, weight=bn.weight, bias=bn.bias, eps=bn.eps)
        features = z.mean(dim=(2, 3))            # (1, C): one value per channel
    try:
        nn.BatchNorm1d(features.shape[1]).train()(features)
        refusal = ""
    except ValueError as error:
        refusal = str(error)

    def acc(logits):
        return float((logits.argmax(1) == y).double().mean())

    numbers = {"eval_one_vs_batch": _max_error(one_by_one, batched),
               "train_batch_of_one_vs_eval": _max_error(train_one, batched),
               "eval_accuracy": acc(batched), "eval_one_at_a_time_accuracy": acc(one_by_one),
               "train_batch_of_one_accuracy": acc(train_one),
               "instance_norm_error": _max_error(bn_train, instance),
               "centred_batch_of_one": float((features - features.mean(0)).abs().max()),
               "refused": bool(refusal), "refusal": refusal}
    eval_independent = numbers["eval_one_vs_batch"] <= 1e-5
    differs = numbers["train_batch_of_one_vs_eval"] > 0.1
    verdict = "true" if eval_independent and not differs else "false"
    summary = (f"eval gives each image the same output alone or in a batch (max difference "
               f"{numbers['eval_one_vs_batch']:.1g}): it uses running statistics. A batch of one in train mode "
               f"uses the image's own statistics, instance norm (error {numbers['instance_norm_error']:.1g} against "
               f"torch's), and changes the logits by up to {numbers['train_batch_of_one_vs_eval']:.1f}: test accuracy "
               f"{numbers['train_batch_of_one_accuracy']:.2f} instead of {numbers['eval_accuracy']:.2f}. For (1, C) "
               f"input x - mu_B = 0 and torch refuses to train on it.")
    return MythResult("eval_vs_batch_of_one", verdict, numbers, summary)


# ----------------------------------------------------------------------------- 5. the learning rate still matters
# half a decade apart, from far too small to far too large for plain SGD
LR_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
LR_SWEEP = dict(depth=6, width=100, steps=200, batch_size=60, usable_accuracy=0.9)


def learning_rate_sweep(lrs=LR_GRID, depth: int = LR_SWEEP["depth"], steps: int = LR_SWEEP["steps"],
                        seed: int = 0, data: Split | None = None,
                        usable_accuracy: float = LR_SWEEP["usable_accuracy"]) -> MythResult:
    """Myth: with BN the learning rate no longer matters.

    Lesson 05's sweep, smaller: a `deep_mlp` of depth ReLU layers (He init), with and without BN,
    trained by plain SGD (batch 60) for steps steps at each lr, seeded alike. An lr is usable when
    the run stays finite and ends at test accuracy >= usable_accuracy. For the BN net it also
    records ||W_l|| of each hidden layer before and after: those weights are followed by BN, so the
    loss is scale invariant in them and their effective learning rate is lr / ||W_l||^2 (lesson 09);
    'effective_lr_drop' = mean over l of (||W_l, end|| / ||W_l, start||)^2.
    Verdict: 'false' if some lr of the grid is not usable with BN; 'true' if all are.
    """
    lrs = tuple(float(lr) for lr in lrs)
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty sequence of positive learning rates, got {lrs}")
    data = data if data is not None else digits()
    accuracy_of, diverged, drop = {}, {}, {}
    for norm in (None, "bn"):
        name = "bn" if norm else "plain"
        accuracy_of[name], diverged[name] = [], []
        for lr in lrs:
            torch.manual_seed(seed)
            model = deep_mlp(depth, LR_SWEEP["width"], "relu", norm, "he", in_features=data.num_features,
                             out_features=data.num_classes)
            hidden = [m for m in model if isinstance(m, nn.Linear)][:-1]
            start = [float(m.weight.detach().norm()) for m in hidden]
            history = train_classifier(model, data, steps=steps, batch_size=LR_SWEEP["batch_size"], lr=lr,
                                       eval_every=steps, seed=seed, device="cpu", progress=False)
            diverged[name].append(history.diverged)
            # a diverged net's last evaluation is from before it diverged: measure what it is now
            accuracy_of[name].append(accuracy(model, data.x_test, data.y_test))
            if norm:
                end = [float(m.weight.detach().norm()) for m in hidden]
                drop[lr] = float(np.mean([(e / s) ** 2 for e, s in zip(end, start)]))

    def usable(name):
        return [lr for lr, a, d in zip(lrs, accuracy_of[name], diverged[name]) if a >= usable_accuracy and not d]

    def decades(used):
        return float(math.log10(max(used) / min(used))) if used else float("nan")

    numbers = {"lrs": list(lrs), "test_accuracy": accuracy_of, "diverged": diverged,
               "usable": {name: usable(name) for name in ("plain", "bn")},
               "usable_decades": {name: decades(usable(name)) for name in ("plain", "bn")},
               "effective_lr_drop": {str(lr): v for lr, v in drop.items()}, "usable_accuracy": usable_accuracy}
    bn_usable, plain_usable = numbers["usable"]["bn"], numbers["usable"]["plain"]
    verdict = "true" if len(bn_usable) == len(lrs) else "false"
    too_small = [lr for lr in lrs if bn_usable and lr < min(bn_usable)]
    too_large = [lr for lr in lrs if bn_usable and lr > max(bn_usable)]
    wider = len(bn_usable) > len(plain_usable)

    def span(used):
        return f"{min(used):g} to {max(used):g}" if used else "none"

    summary = (f"usable lrs (finite, test accuracy >= {usable_accuracy:.0%} after {steps} steps): {span(bn_usable)} "
               f"with BN, {span(plain_usable)} without: "
               + ("BN widens the range" if wider else "BN does not widen the range")
               + (f", but it is still a range: {len(too_small)} lr(s) below it are too slow"
                  if bn_usable else ", and nothing in the grid trains")
               + (f" and {len(too_large)} above it fail" if too_large else "") + ".")
    if too_large:
        first = lrs.index(too_large[0])
        summary += (f" At lr {too_large[0]:g} the BN net's hidden ||W||^2 grows {drop[too_large[0]]:.3g}x, "
                    f"cutting its effective lr lr/||W||^2 as much, and it ends at test accuracy "
                    f"{accuracy_of['bn'][first]:.2f}"
                    + (" after a non-finite loss." if diverged["bn"][first] else " with a finite loss: it stalls."))
    return MythResult("learning_rate_sweep", verdict, numbers, summary)


# ----------------------------------------------------------------------------- 6. folding is exact
def _padded_with(x: torch.Tensor, values: torch.Tensor, padding) -> torch.Tensor:
    """x (N, C, H, W) padded on each side by padding (rows, cols) with values[c] in channel c."""
    view = (1, -1, 1, 1)
    rows, cols = padding
    return F.pad(x - values.reshape(view), (cols, cols, rows, rows)) + values.reshape(view)


def _fold_case(dtype, seed: int, data: Split) -> dict:
    torch.manual_seed(seed)
    first = nn.Conv2d(data.x_train.shape[1], 8, 3, padding=1)
    norm = nn.BatchNorm2d(8)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    after_conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
    # BN after a ReLU (pre-activation style): its input is >= 0, so its running_mean is far from 0
    recompute_batchnorm_statistics(nn.Sequential(first, nn.ReLU(), norm), data.x_train)
    with torch.no_grad():
        z_train = torch.relu(first(data.x_train))
        recompute_batchnorm_statistics(after_conv, z_train)
        for bn in (norm, after_conv[1]):
            bn.weight.copy_(1 + 0.2 * torch.randn(bn.num_features))
            bn.bias.copy_(0.2 * torch.randn(bn.num_features))
    first, norm, conv, after_conv = (m.to(dtype).eval() for m in (first, norm, conv, after_conv))
    with torch.no_grad():
        z = torch.relu(first(data.x_test.to(dtype)))
        reference = conv(norm(z))
        folded = fold_into_next_layer(norm, conv)
        error = (folded(z) - reference).abs().amax(dim=(0, 1))          # (H, W): worst over images, channels
        border = border_mask(conv, *z.shape[-2:])
        unpadded = nn.Conv2d(8, 16, 3, padding=0).to(dtype)
        unpadded.load_state_dict(conv.state_dict())
        unpadded_error = _max_error(fold_into_next_layer(norm, unpadded)(z), unpadded(norm(z)))
        # the cause, shown by removing it: pad with the input value that BN maps to 0,
        # x0 = running_mean - beta * sqrt(running_var + eps) / gamma, and the fold is exact everywhere
        zero_of_bn = norm.running_mean - norm.bias * torch.sqrt(norm.running_var + norm.eps) / norm.weight
        repadded = F.conv2d(_padded_with(z, zero_of_bn, conv.padding), folded.weight, folded.bias)
        conv_bn_reference = after_conv(z)
        conv_bn_error = _max_error(fold_batchnorm(after_conv)(z), conv_bn_reference)
    return {"conv_bn_fold_error": conv_bn_error, "conv_bn_exact": _exact(conv_bn_error, conv_bn_reference, dtype),
            "bn_conv_unpadded_error": unpadded_error,
            "bn_conv_padded_interior_error": float(error[~border].max()),
            "bn_conv_padded_border_error": float(error[border].max()),
            "bn_conv_padded_with_bn_zero_error": _max_error(repadded, reference),
            "output_scale": float(reference.abs().max()),
            "border_pixels": int(border.sum()), "interior_pixels": int((~border).sum())}


def folding_exactness(seed: int = 0, data: Split | None = None, dtypes=(torch.float64, torch.float32)) -> MythResult:
    """Myth: folding BN into a neighbouring convolution is always exact.

    On digits images: conv 1->8 (padding 1) -> ReLU -> BN(8) -> conv 8->16 (3x3, padding 1), seeded,
    the BN's running statistics averaged over the training set, gamma and beta random; and
    conv 8->16 (padding 1) -> BN(16) on the same inputs. For each dtype, on the test images:
      - conv -> BN, folded by `bnlab.folding.fold_batchnorm`: exact;
      - BN -> conv without padding, folded by `fold_into_next_layer`: exact;
      - BN -> conv with padding 1, folded the same way: exact at the interior pixels, wrong at the
        border pixels (`border_mask`), whose window covers padded zeros that BN never normalized;
      - the same fold with the input padded not by 0 but by the value BN maps to 0,
        running_mean - beta * sqrt(running_var + eps) / gamma: exact everywhere, which shows that the
        padding is the cause.
    'Exact': max error <= 1e-12 (float64) or 1e-5 (float32) times max(1, max |output|).
    Verdict: 'half-true' if conv -> BN folds exactly and BN -> padded conv is exact inside but
    wrong (> 1e-3 times the output scale) at the border; 'true' if it is exact there too; 'false'
    if even conv -> BN is not exact.
    """
    data = data if data is not None else digits(images=True)
    if data.x_train.dim() != 4:
        raise ValueError(f"need images (N, C, H, W), e.g. digits(images=True); got shape {tuple(data.x_train.shape)}")
    numbers = {str(dtype).replace("torch.", ""): _fold_case(dtype, seed, data) for dtype in dtypes}
    tolerance = {str(dtype).replace("torch.", ""): EXACT[dtype] for dtype in dtypes}
    exact_inside = all(case["bn_conv_padded_interior_error"] <= tolerance[name] * max(1.0, case["output_scale"])
                       and case["bn_conv_unpadded_error"] <= tolerance[name] * max(1.0, case["output_scale"])
                       for name, case in numbers.items())
    wrong_border = all(case["bn_conv_padded_border_error"] > 1e-3 * case["output_scale"] for case in numbers.values())
    conv_bn = all(case["conv_bn_exact"] for case in numbers.values())
    verdict = "false" if not conv_bn else ("half-true" if exact_inside and wrong_border else
                                           "true" if exact_inside else "false")
    case = next(iter(numbers.values()))
    name = next(iter(numbers))
    summary = (f"conv -> BN folds exactly ({name}: error {case['conv_bn_fold_error']:.1g}), and so does BN -> conv "
               f"without padding ({case['bn_conv_unpadded_error']:.1g}). BN -> conv with zero padding does not: "
               f"exact at the interior pixels ({case['bn_conv_padded_interior_error']:.1g}) but off by "
               f"{case['bn_conv_padded_border_error']:.2f} at the border (outputs up to {case['output_scale']:.1f}), "
               f"because the padded zeros were never normalized; padding with the value BN maps to 0 restores it "
               f"({case['bn_conv_padded_with_bn_zero_error']:.1g}).")
    return MythResult("folding_exactness", verdict, numbers, summary)


# ----------------------------------------------------------------------------- the registry
class Myth(NamedTuple):
    """One entry of MYTHS: the function that judges the myth, and the myth in one line."""

    function: Callable[..., MythResult]
    statement: str


MYTHS: dict[str, Myth] = {
    "bn_placement": Myth(bn_placement, "It makes no difference whether BN goes before or after the ReLU."),
    "no_grad_vs_eval": Myth(no_grad_vs_eval, "torch.no_grad() puts a model in inference mode, like model.eval()."),
    "bn_and_dropout": Myth(bn_and_dropout, "BN removes the need for dropout."),
    "eval_vs_batch_of_one": Myth(eval_vs_batch_of_one, "Evaluating a BN net equals running it on a batch of one."),
    "learning_rate_sweep": Myth(learning_rate_sweep, "With BN the learning rate no longer matters."),
    "folding_exactness": Myth(folding_exactness, "Folding BN into a neighbouring convolution is always exact."),
}


def run_all(names=None) -> dict[str, MythResult]:
    """{name: MythResult} for each myth of names (default: all of MYTHS, in its order), with the
    functions' calibrated defaults."""
    names = list(MYTHS) if names is None else list(names)
    unknown = [n for n in names if n not in MYTHS]
    if unknown:
        raise ValueError(f"unknown myth(s) {unknown}; the myths are {list(MYTHS)}")
    return {name: MYTHS[name].function() for name in names}
