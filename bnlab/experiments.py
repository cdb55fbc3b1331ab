"""The lessons' experiments, configured as they were calibrated, so a notebook cell is one call.

Each function says which lesson it serves; the numbers in the defaults are the calibrated ones
(digits, 70/30 split, inputs / 16).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Split, digits, shapes, vary_scans
from .ics import internal_covariate_shift
from .landscape import loss_along_gradient, top_hessian_eigenvalue
from .layers import BatchRenorm, NoisyBatchNorm, is_batchnorm
from .models import _linear_block, conv_net, encoder_decoder, initialize, mlp
from .probes import activation_layers
from .runtime import pick_device
from .train import History, accuracy, train_classifier, train_segmenter

__all__ = ["FIG1", "ioffe_fig1", "nonlinearity_inputs", "bn_gradient_growth", "residual_mlp", "ResidualBlock",
           "weight_gradient_alignment", "deep_mlp", "weight_grad_norms", "growth_factor", "BN_RELU_GROWTH",
           "lr_sweep", "run_grid", "CNN", "cnn_run", "SMALL_BATCH", "small_batch_run",
           "SEGMENTATION", "segmentation_run"]

# ----------------------------------------------------------------------------- lesson 04
# Ioffe & Szegedy (2015), Figure 1, at digits scale: 3 hidden layers of 100 sigmoids, "small random
# Gaussian" weights N(0, 0.1^2), plain SGD, batch 60.
FIG1 = dict(hidden=(100, 100, 100), activation="sigmoid", init=0.1, lr=0.5, batch_size=60, steps=3000)
FIG1_PROBE = dict(every=10, capture="input", units=100, hist_range=(-8.0, 8.0), bins=64)


def ioffe_fig1(norm: str | None, seed: int = 0, steps: int = FIG1["steps"], lr: float = FIG1["lr"],
               init: float | str | None = FIG1["init"], data: Split | None = None, eval_every: int = 10,
               probe_batch: int = 500, device=None, progress: bool = True) -> History:
    """Train the Figure 1 MLP (norm=None or 'bn' before each sigmoid) and record its sigmoid inputs.

    The probe records every 10 steps, on the same 500 training examples each time (training mode,
    so BN uses that batch's own statistics), the input of every sigmoid: layer 'hidden3' is the
    last layer. Model weights and minibatches are seeded with seed.
    """
    data = data if data is not None else digits()
    torch.manual_seed(seed)
    model = mlp(data.num_features, FIG1["hidden"], data.num_classes, norm=norm,
                activation=FIG1["activation"], init=init)
    return train_classifier(model, data, steps=steps, batch_size=FIG1["batch_size"], lr=lr,
                            eval_every=eval_every, seed=seed, device=device, progress=progress,
                            probe=FIG1_PROBE, probe_batch=probe_batch)


def nonlinearity_inputs(model: nn.Module, x: torch.Tensor, train: bool = True) -> dict[str, torch.Tensor]:
    """{'hidden1': u, ...}: the input u of each nonlinearity of model for one forward pass of x,
    in training mode (BN normalizes with x's own statistics) or eval mode (with its running ones).

    Nothing is updated: the pass runs under no_grad on a copy, so BN's running statistics stay.
    Names as `bnlab.probes.activation_layers` gives them (and a Probe records them).
    """
    twin = copy.deepcopy(model).train(train)
    captured = {}
    hooks = [module.register_forward_pre_hook(lambda _, inputs, name=name: captured.__setitem__(name, inputs[0]))
             for name, module in activation_layers(twin).items()]
    with torch.no_grad():
        twin(x)
    for hook in hooks:
        hook.remove()
    return captured


# ----------------------------------------------------------------------------- lesson 05
# Yang et al. (2019): in a deep BN-ReLU net at initialization the gradient grows by
# sqrt(pi / (pi - 1)) per layer going backwards, whatever the weights' scale.
BN_RELU_GROWTH = math.sqrt(math.pi / (math.pi - 1))


def bn_gradient_growth(activation: str) -> float:
    """The factor by which the gradient norm grows per layer, going backwards, in a deep BN net at
    initialization (wide layers, large batch; Yang et al. 2019):

        sqrt(E[phi'(u)^2] / Var[phi(u)]),   u ~ N(0, 1),

    since BN makes each pre-activation u standard normal, the layer above divides by the std of
    phi(u) (BN removes its mean), and the backward pass multiplies by phi'(u). For ReLU that is
    sqrt((1/2) / ((pi - 1) / (2 pi))) = sqrt(pi / (pi - 1)) = BN_RELU_GROWTH. The expectations are
    integrals against the Gaussian density on a fine grid.
    """
    u = np.linspace(-12.0, 12.0, 240_001)
    density = np.exp(-u**2 / 2) / math.sqrt(2 * math.pi)
    functions = {"relu": (np.maximum(u, 0.0), (u > 0).astype(np.float64)),
                 "tanh": (np.tanh(u), 1.0 - np.tanh(u) ** 2),
                 "sigmoid": (1 / (1 + np.exp(-u)), np.exp(-u) / (1 + np.exp(-u)) ** 2)}
    if activation not in functions:
        raise ValueError(f"activation must be one of {sorted(functions)}, got {activation!r}")
    phi, slope = functions[activation]
    integrate = np.trapezoid if hasattr(np, "trapezoid") else np.trapz   # numpy < 2 has only trapz
    mean = integrate(phi * density, u)
    variance = integrate(phi**2 * density, u) - mean**2
    return float(math.sqrt(integrate(slope**2 * density, u) / variance))


class ResidualBlock(nn.Module):
    """x + activation(norm(W x)): the identity path carries the signal and the gradient past the block."""

    def __init__(self, width: int, norm: str | None, activation: str):
        super().__init__()
        self.branch = nn.Sequential(*_linear_block(width, width, norm, activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def residual_mlp(depth: int, width: int = 100, activation: str = "relu", norm: str | None = "bn",
                 init: float | str | None = None, in_features: int = 64, out_features: int = 10) -> nn.Sequential:
    """`deep_mlp` with a skip connection around every hidden block: Linear(in, width), then depth
    blocks x -> x + act(BN(W x)), then a Linear head. weight_grad_norms sees depth + 1 hidden layers."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    net = nn.Sequential(nn.Linear(in_features, width),
                        *[ResidualBlock(width, norm, activation) for _ in range(depth)],
                        nn.Linear(width, out_features))
    return initialize(net, init)


def deep_mlp(depth: int, width: int = 100, activation: str = "relu", norm: str | None = None,
             init: float | str | None = None, gain: float = 1.0, in_features: int = 64,
             out_features: int = 10) -> nn.Sequential:
    """depth hidden layers of the same width: Linear -> [BN] -> activation, then a Linear head."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return mlp(in_features, (width,) * depth, out_features, norm=norm, activation=activation, init=init, gain=gain)


def weight_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """||dL/dW_l|| for each hidden Linear l (the output layer excluded), from one cross-entropy
    forward/backward in training mode (BN uses the batch's statistics).

    Computed on a float64 copy of model: a vanishing gradient of 1e-40 is a number to look at, not
    an underflow to 0. model itself is not changed.
    """
    twin = copy.deepcopy(model).double().train()
    linears = [m for m in twin.modules() if isinstance(m, nn.Linear)][:-1]
    if not linears:
        raise ValueError("the model has no hidden nn.Linear layer")
    nn.functional.cross_entropy(twin(x.double()), y).backward()
    return np.array([m.weight.grad.norm().item() for m in linears])


def weight_gradient_alignment(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
    """For each nn.Linear of model: cos(W, dL/dW), ||W||, ||dL/dW|| and whether a BN layer follows it,
    from one cross-entropy forward/backward in training mode on a float64 copy.

    Where BN follows, the loss does not change when W is scaled (BN(aWx) = BN(Wx) for a > 0, up to eps),
    so its derivative along W is zero: <W, dL/dW> = 0, the gradient is orthogonal to W.
    """
    twin = copy.deepcopy(model).double().train()
    modules = list(twin.modules())
    linears = {name: m for name, m in twin.named_modules() if isinstance(m, nn.Linear)}
    if not linears:
        raise ValueError("the model has no nn.Linear layer")
    nn.functional.cross_entropy(twin(x.double()), y).backward()
    report = {}
    for name, linear in linears.items():
        after = modules[modules.index(linear) + 1] if modules.index(linear) + 1 < len(modules) else None
        w, g = linear.weight.detach(), linear.weight.grad
        report[name] = {"cos": float((w * g).sum() / (w.norm() * g.norm())), "weight_norm": w.norm().item(),
                        "grad_norm": g.norm().item(), "before_bn": after is not None and is_batchnorm(after)}
    return report


def growth_factor(norms, skip: int = 5) -> float:
    """Average factor by which the gradient norm grows per layer going backwards (towards the input):
    exp of minus the mean slope of log(norms) over the layers, leaving out skip layers at each end
    where the input and the output layer disturb the pattern."""
    logs = np.log(np.asarray(norms, dtype=np.float64))
    if len(logs) < 2 * skip + 2:
        raise ValueError(f"need at least {2 * skip + 2} layers to leave out {skip} at each end, got {len(logs)}")
    middle = logs[skip:len(logs) - skip]
    return float(np.exp(-np.polyfit(np.arange(len(middle)), middle, 1)[0]))


def run_grid(train_one, progress: bool = True, **axes) -> dict:
    """Call train_one(**combination) for every combination of the axes' values, with one progress
    bar over all runs. Returns {key: result}; key is the tuple of values in the axes' order, or
    the value itself for a single axis.

        run_grid(lambda norm, lr: ..., norm=[None, "bn"], lr=[0.1, 1.0])  ->  {(None, 0.1): ..., ...}
    """
    if not axes or any(len(values) == 0 for values in axes.values()):
        raise ValueError(f"every axis needs at least one value, got {axes}")
    names = list(axes)
    keys = list(itertools.product(*axes.values()))
    runs = {}
    for key in tqdm(keys, disable=not progress, desc="runs", leave=False):
        runs[key if len(names) > 1 else key[0]] = train_one(**dict(zip(names, key)))
    return runs


def lr_sweep(lrs, norms=(None, "bn"), depth: int = 10, width: int = 100, activation: str = "relu",
             init: float | str | None = "he", steps: int = 300, batch_size: int = 60, seed: int = 0,
             data: Split | None = None, device=None, progress: bool = True) -> dict:
    """{(norm, lr): History} for deep MLPs trained with plain SGD at each learning rate (one progress
    bar over all runs)."""
    data = data if data is not None else digits()

    def train_one(norm, lr):
        torch.manual_seed(seed)
        model = deep_mlp(depth, width, activation, norm, init, in_features=data.num_features,
                         out_features=data.num_classes)
        return train_classifier(model, data, steps=steps, batch_size=batch_size, lr=lr,
                                eval_every=max(1, steps // 10), seed=seed, device=device, progress=False)

    return run_grid(train_one, progress, norm=norms, lr=lrs)


# ----------------------------------------------------------------------------- lesson 06
# conv16-BN-ReLU, conv32-BN-ReLU, maxpool, linear on the 8x8 digits; plain SGD, batch 32
CNN = dict(widths=(16, 32), batch_size=32, steps=300)


def cnn_run(norm: str | None, lr: float, seed: int = 0, steps: int = CNN["steps"], data: Split | None = None,
            device=None, eval_every: int = 25, **model_kwargs) -> History:
    """Train `bnlab.models.conv_net` (digits images unless data is given) with plain SGD at lr."""
    data = data if data is not None else digits(images=True)
    torch.manual_seed(seed)
    model = conv_net(data.x_train.shape[1], data.num_classes, CNN["widths"], norm=norm,
                     image_size=data.x_train.shape[-1], **model_kwargs)
    return train_classifier(model, data, steps=steps, batch_size=CNN["batch_size"], lr=lr,
                            eval_every=eval_every, seed=seed, device=device, progress=False)


# ----------------------------------------------------------------------------- lesson 08
# Wu & He (2018), Figure 1, at digits scale: conv16-norm-ReLU, conv32-norm-ReLU, pool, FC64-norm-ReLU,
# FC10; the same number of epochs at every batch size, lr 0.1 * B / 32 (the linear scaling rule),
# SGD with momentum 0.9, evaluated with running statistics.
SMALL_BATCH = dict(widths=(16, 32), hidden=64, epochs=3, lr_per_32=0.1, momentum=0.9,
                   batch_sizes=(2, 4, 8, 16, 32, 64))


def small_batch_run(norm: str | None, batch_size: int, seed: int = 0, data: Split | None = None,
                    epochs: int = SMALL_BATCH["epochs"], device=None, head_norm: str | None = "same") -> History:
    """Train lesson 08's conv net with `norm` in every block and in the FC head for `epochs` epochs
    at batch_size (data: digits images with scanner variation unless given).

    head_norm: the FC head's norm ('same': norm; None: an unnormalized head, the conv layers alone
    normalized). InstanceNorm has nothing to average in a fully connected layer, so its head uses
    LayerNorm.
    Batch Renorm runs its first epoch as plain BN (r = 1, d = 0), then clips at r_max = 1.5,
    d_max = 0.5: the paper relaxes the limits from (1, 0) to (3, 5) over a long run, and in a
    3-epoch run the full limits, applied against running statistics that lag the fast-changing
    net, cost up to half the accuracy at batch 64 (calibrated: 0.41 against 0.88).
    """
    data = data if data is not None else vary_scans(digits(images=True))
    torch.manual_seed(seed)
    model = conv_net(data.x_train.shape[1], data.num_classes, SMALL_BATCH["widths"], norm=norm,
                     hidden=SMALL_BATCH["hidden"],
                     head_norm="ln" if norm == "in" and head_norm == "same" else head_norm,
                     image_size=data.x_train.shape[-1])
    steps_per_epoch = max(1, len(data.x_train) // batch_size)
    for module in model.modules():
        if isinstance(module, BatchRenorm):
            module.warmup_steps, module.r_max, module.d_max = steps_per_epoch, 1.5, 0.5
    steps = epochs * steps_per_epoch
    return train_classifier(model, data, steps=steps, batch_size=batch_size,
                            lr=SMALL_BATCH["lr_per_32"] * batch_size / 32, momentum=SMALL_BATCH["momentum"],
                            eval_every=max(1, steps // 10), seed=seed, device=device, progress=False)


# ----------------------------------------------------------------------------- lesson 07
# the encoder-decoder on 32x32 shapes, foreground vs background; SGD with momentum, batch 16
SEGMENTATION = dict(widths=(8, 16, 32), batch_size=16, steps=200, momentum=0.9, keep=12)


def segmentation_run(norm: str | None, lr: float = 0.1, seed: int = 0, data=None,
                     steps: int = SEGMENTATION["steps"], device=None, eval_every: int = 25,
                     init: str | float | None = None) -> History:
    """Train `bnlab.models.encoder_decoder` on `bnlab.data.shapes` (shape vs background unless data
    is given). History.metrics has the test IoU and Dice; History.snapshots[step] the predicted
    masks of the first SEGMENTATION['keep'] test images at every evaluation, for `MaskExplorer`.
    init: see `bnlab.models.initialize` (None keeps torch's default)."""
    data = data if data is not None else shapes().foreground()
    torch.manual_seed(seed)
    model = encoder_decoder(data.in_channels, data.num_classes, SEGMENTATION["widths"], norm=norm, init=init)
    shown = data.x_test[:SEGMENTATION["keep"]]

    def keep_masks(step, model):
        return model(shown.to(next(model.parameters()).device)).argmax(1).cpu()

    return train_segmenter(model, data, steps=steps, batch_size=SEGMENTATION["batch_size"], lr=lr,
                           momentum=SEGMENTATION["momentum"], eval_every=eval_every, seed=seed,
                           device=device, progress=False, on_eval=keep_masks)


# ----------------------------------------------------------------------------- explorers' data
# The tables and summaries the explorers of bnlab.widgets show, computed here so that a widget only
# draws and a notebook or a test can use the same numbers without a widget.
__all__ += ["final_results", "ramp_lag", "gradient_flow_table"]


def final_results(runs: dict, metric: str = "test_accuracy") -> dict:
    """{variant: {setting: [final value of each seed]}} from runs keyed (variant, setting) or
    (variant, setting, seed): the shape `bnlab.plots.plot_sweep` draws. metric: 'test_accuracy' or
    a key of History.metrics (e.g. 'iou'); the final value is the last evaluation's."""
    finals: dict = {}
    for key, history in runs.items():
        if not isinstance(key, tuple) or len(key) < 2:
            raise ValueError(f"runs must be keyed (variant, setting) or (variant, setting, seed), got {key!r}")
        if metric != "test_accuracy" and metric not in history.metrics:
            raise ValueError(f"run {key!r} has no metric {metric!r}; it has {sorted(history.metrics)}")
        name, value = key[0], key[1]
        series = history.test_accuracy if metric == "test_accuracy" else history.metrics[metric]
        finals.setdefault(name, {}).setdefault(value, []).append(series[-1])
    return finals


def ramp_lag(true_mean, running_mean, last: int = 100) -> float:
    """How far the running mean trails the true mean (lesson 03): mean over the last steps of
    true_mean - running_mean, both (steps,); averaging over steps lets the batch noise cancel.
    For a ramp of slope drift per step and momentum m the lag tends to drift * (1 - m) / m."""
    true_mean, running_mean = np.asarray(true_mean, dtype=np.float64), np.asarray(running_mean, dtype=np.float64)
    if true_mean.shape != running_mean.shape or true_mean.ndim != 1:
        raise ValueError(f"true_mean and running_mean must be 1-D of one length, got shapes "
                         f"{true_mean.shape} and {running_mean.shape}")
    if last < 1:
        raise ValueError(f"last must be >= 1, got {last}")
    return float(np.mean(true_mean[-last:] - running_mean[-last:]))


def gradient_flow_table(x: torch.Tensor, y: torch.Tensor, depths=(2, 5, 10, 20, 30, 50),
                        activations=("relu", "tanh", "sigmoid"), inits=("he", "lecun", "default"),
                        seed: int = 0, norms=(None, "bn"), width: int = 100, num_classes: int | None = None,
                        progress: bool = False) -> dict:
    """Lesson 05's gradient norms at initialization for every configuration of a grid:
    {(norm, depth, activation, init): ||dL/dW_l|| for l = 1..depth} (`weight_grad_norms` of a
    `deep_mlp`, seeded with seed before each net, so a net's weights do not depend on the grid).

    x: (N, features), y: (N,) class indices; the head has num_classes outputs (default y.max() + 1).
    init: 'he', 'lecun', 'default' (torch's) or a std, as `bnlab.models.initialize` takes it.
    """
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"x must be (N, features) and y (N,), got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    grid = list(itertools.product(depths, activations, inits, norms))
    if not grid:
        raise ValueError("every axis of the grid needs at least one value")
    table = {}
    for depth, activation, init, norm in tqdm(grid, disable=not progress, desc="nets", leave=False):
        torch.manual_seed(seed)
        model = deep_mlp(depth, width, activation=activation, norm=norm, init=init, in_features=x.shape[1],
                         out_features=num_classes or int(y.max()) + 1)
        table[(norm, depth, activation, init)] = weight_grad_norms(model, x, y)
    return table


# ----------------------------------------------------------------------------- lesson 09
# Santurkar et al. (2018) at digits scale: a deep ReLU MLP, He init, plain SGD at lr 0.1 (their
# VGG's rate), batch 128. At every checkpoint the landscape is measured on the minibatch the next
# step will use, so each number describes the step SGD actually takes there.
LANDSCAPE = dict(depth=8, width=100, activation="relu", init="he", lr=0.1, batch_size=128, steps=100,
                 checkpoints=tuple(range(0, 101, 10)))
# k, in multiples of the learning rate, at which the loss slices are taken: a quarter of SGD's step to four
SLICE_STEPS = tuple(np.linspace(0.25, 4.0, 16).tolist())
__all__ += ["LANDSCAPE", "SLICE_STEPS", "LandscapeRun", "landscape_run", "frozen_noise", "linear_bn",
            "ScaleRun", "scale_invariant_run", "EXACT_EPS"]


@contextlib.contextmanager
def frozen_noise(model: nn.Module, seed: int = 0):
    """Inside, every NoisyBatchNorm of model draws the same scale and shift at every forward pass
    (those of a private generator seeded with seed + its index, reseeded before each pass): the loss
    at different parameters is then the loss of one noisy net, as a training step sees it, rather
    than each point with noise of its own. The layers' own generators are back afterwards."""
    noisy = [m for m in model.modules() if isinstance(m, NoisyBatchNorm)]
    kept = [m.generator for m in noisy]
    for m in noisy:
        m.generator = torch.Generator()

    def reseed(_module, _inputs):
        for i, m in enumerate(noisy):
            m.generator.manual_seed(seed + i)

    hook = model.register_forward_pre_hook(reseed) if noisy else None
    try:
        yield model
    finally:
        if hook is not None:
            hook.remove()
        for m, generator in zip(noisy, kept):
            m.generator = generator


@dataclass
class LandscapeRun:
    """What `landscape_run` recorded. steps: the checkpoints (updates done before each measurement);
    per checkpoint: paths (`bnlab.landscape.GradientPath` along the coming step), shifts
    (`bnlab.ics.CovariateShift`, or None when not measured); sharpness: {step: top Hessian
    eigenvalue} where measured; loss: the training loss of every step; test_accuracy at the end."""

    norm: str | None
    seed: int
    lr: float
    steps: list[int]
    paths: list = field(repr=False)
    shifts: list = field(repr=False)
    sharpness: dict = field(default_factory=dict)
    loss: list[float] = field(default_factory=list, repr=False)
    test_accuracy: float = math.nan

    def summary(self, name: str, start: int = 0) -> np.ndarray:
        """One number per checkpoint at or after step start: 'loss_range', 'gradient_change',
        'beta_smoothness' (of the paths), 'ics' and 'cosine' (of the shifts, the median over the
        layers that have layers below them: the first has G' = G by definition)."""
        chosen = [i for i, s in enumerate(self.steps) if s >= start]
        if name in ("loss_range", "gradient_change", "beta_smoothness"):
            return np.array([getattr(self.paths[i], name) for i in chosen])
        if name in ("ics", "cosine"):
            if any(self.shifts[i] is None for i in chosen):
                raise ValueError("this run measured no internal covariate shift (ics=False)")
            return np.array([float(np.median(getattr(self.shifts[i], name)[1:])) for i in chosen])
        raise ValueError(f"unknown summary {name!r}: loss_range, gradient_change, beta_smoothness, ics or cosine")


def landscape_run(norm: str | None, seed: int = 0, steps: int = LANDSCAPE["steps"], lr: float = LANDSCAPE["lr"],
                  checkpoints=LANDSCAPE["checkpoints"], sharpness_at=(), hessian_iters: int = 100,
                  ks=SLICE_STEPS, ics: bool = True, depth: int = LANDSCAPE["depth"], data: Split | None = None,
                  device=None) -> LandscapeRun:
    """Train a `deep_mlp` (LANDSCAPE: 8 x 100 ReLU, He init, SGD lr 0.1, batch 128) and measure, at
    every checkpoint, on the minibatch the next update uses and in training mode:

        paths:     `loss_along_gradient` at the multiples ks of lr (L(theta - k lr g), ||grad change||)
        shifts:    `internal_covariate_shift` (Santurkar et al.'s ||G - G'|| and cos(G, G'))
        sharpness: `top_hessian_eigenvalue` at the checkpoints in sharpness_at (hessian_iters products)

    A noisy BN net is measured with its noise frozen (`frozen_noise`). The Hessian needs twice
    differentiable layers: bnlab's BN is (norm='bn'; its backward, asked for a graph, runs in plain ops).
    Weights and minibatches are seeded with seed, as `train_classifier` does.
    """
    checkpoints = sorted(set(int(s) for s in checkpoints))
    if any(s < 0 or s > steps for s in checkpoints) or not set(sharpness_at) <= set(checkpoints):
        raise ValueError(f"checkpoints must lie in 0..steps={steps} and include sharpness_at, got {checkpoints} "
                         f"and {list(sharpness_at)}")
    data = data if data is not None else digits()
    device = torch.device(device) if device is not None else pick_device()
    torch.manual_seed(seed)
    model = deep_mlp(depth, LANDSCAPE["width"], LANDSCAPE["activation"], norm=norm, init=LANDSCAPE["init"],
                     in_features=data.num_features, out_features=data.num_classes).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    run = LandscapeRun(norm=norm, seed=seed, lr=lr, steps=checkpoints, paths=[], shifts=[])
    for step in range(steps + 1):
        idx = torch.randint(len(data.x_train), (LANDSCAPE["batch_size"],), generator=gen)
        batch = (data.x_train[idx].to(device), data.y_train[idx].to(device))
        if step in checkpoints:
            with frozen_noise(model, seed=1000 * seed + step):
                run.paths.append(loss_along_gradient(model, loss_fn, batch, lr, ks=ks))
                run.shifts.append(internal_covariate_shift(model, loss_fn, batch, lr) if ics else None)
                if step in sharpness_at:
                    run.sharpness[step] = top_hessian_eigenvalue(model, loss_fn, batch, iters=hessian_iters,
                                                                 seed=seed).eigenvalue
        if step == steps:
            break
        loss = loss_fn(model(batch[0]), batch[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        run.loss.append(loss.item())
    run.test_accuracy = accuracy(model, data.x_test.to(device), data.y_test.to(device))
    return run


# Cohen et al. (2021)'s setting at digits scale: full-batch gradient descent on a fixed training set
# with the square loss (their cleanest edge-of-stability runs; with cross-entropy on separable digits
# the sharpness falls once the margins grow), a 2 x 100 tanh MLP, bnlab's BN (twice differentiable).
FULL_BATCH = dict(hidden=(100, 100), activation="tanh", train_size=1000, steps=1200, every=50, lrs=(0.1, 0.2),
                  hessian_iters=10)
__all__ += ["FULL_BATCH", "half_square_loss", "FullBatchRun", "full_batch_run"]


def half_square_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cohen et al.'s square loss for classification: mean over examples of 1/2 ||f(x) - e_y||^2,
    e_y the one-hot vector of the class."""
    one_hot = nn.functional.one_hot(target, logits.shape[1]).to(logits.dtype)
    return 0.5 * ((logits - one_hot) ** 2).sum(1).mean()


@dataclass
class FullBatchRun:
    """Sharpness lambda_max of the full-batch loss at steps (every `every`), and the loss at every step."""

    norm: str | None
    lr: float
    seed: int
    steps: list[int]
    sharpness: np.ndarray
    loss: np.ndarray = field(repr=False)

    def after(self, step: int) -> np.ndarray:
        """The sharpness at the recorded steps >= step."""
        return self.sharpness[np.array(self.steps) >= step]


def full_batch_run(norm: str | None, lr: float, seed: int = 0, steps: int = FULL_BATCH["steps"],
                   every: int = FULL_BATCH["every"], data: Split | None = None,
                   hessian_iters: int = FULL_BATCH["hessian_iters"], device=None) -> FullBatchRun:
    """Full-batch gradient descent at lr on the first FULL_BATCH['train_size'] examples of a seeded
    shuffle of digits (`subset`, seed 0, the same set for every run), square loss, and the sharpness
    (`top_hessian_eigenvalue` of that loss, training mode) every `every` steps. Each power iteration
    starts from the previous top eigenvector (it turns slowly from one measurement to the next), so
    hessian_iters products are enough; the first starts at random.

    Full batch: BN's statistics are those of the whole training set at every step, so BN adds no
    noise and the sharpness is that of one deterministic loss, as in Cohen et al.
    """
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in (steps, every)):
        raise ValueError(f"steps and every must be >= 1, got {steps} and {every}")
    data = data if data is not None else subset(digits(), FULL_BATCH["train_size"])
    device = torch.device(device) if device is not None else pick_device()
    x, y = data.x_train.to(device), data.y_train.to(device)
    torch.manual_seed(seed)
    model = mlp(data.num_features, FULL_BATCH["hidden"], data.num_classes, norm=norm,
                activation=FULL_BATCH["activation"]).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    recorded, sharpness, losses, vector = [], [], [], None
    for step in range(steps + 1):
        if step % every == 0:
            top = top_hessian_eigenvalue(model, half_square_loss, (x, y), iters=hessian_iters, seed=seed,
                                         start=vector)
            recorded.append(step)
            sharpness.append(top.eigenvalue)
            vector = top.vector
        if step == steps:
            break
        loss = half_square_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return FullBatchRun(norm, float(lr), seed, recorded, np.array(sharpness), np.array(losses))


# torch's BN refuses eps = 0 in training; in float64 1e-300 vanishes next to any variance that is not itself 0
EXACT_EPS = 1e-300


def linear_bn(weight: torch.Tensor, x: torch.Tensor, eps: float = EXACT_EPS) -> torch.Tensor:
    """BN(x W^T) over the batch, without gamma and beta: a Linear layer followed by BN (lesson 09's
    scale invariance). x: (N, in), weight: (out, in). With eps = EXACT_EPS (0 in effect) the output is exactly the same
    for W and c W, c > 0: the batch mean and standard deviation of c W x are c times those of W x."""
    if weight.ndim != 2 or x.ndim != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must be (out, in) and x (N, in), got {tuple(weight.shape)} and {tuple(x.shape)}")
    return nn.functional.batch_norm(x @ weight.T, None, None, training=True, eps=eps)


@dataclass
class ScaleRun:
    """What `scale_invariant_run` recorded: loss per step; weight_norm and grad_norm, (steps + 1, layers):
    ||W_l|| and ||dL/dW_l|| of each hidden layer (those followed by BN) before each step (and after
    the last); weight_lr: the learning rate those weights had."""

    loss: np.ndarray
    weight_norm: np.ndarray
    grad_norm: np.ndarray
    weight_lr: float


def scale_invariant_run(scale: float = 1.0, lr: float = 0.1, scale_lr: bool = True, steps: int = 100,
                        weight_decay: float = 0.0, hidden=(100, 100, 100), batch_size: int = 128, seed: int = 0,
                        eps: float = EXACT_EPS, data: Split | None = None, dtype=torch.float64) -> ScaleRun:
    """A BN MLP (torch's BN, ReLU, He init, float64) whose hidden Linear weights are multiplied by scale
    at the start, trained by SGD on seeded minibatches.

    Those weights are followed by BN, so the loss is the same at W and c W and its gradient is 1/c
    times as large: with lr c^2 eta for them (scale_lr) every step moves c W_t to c W_{t+1}, the
    same net in all its outputs. Without scale_lr they keep lr eta, an effective learning rate
    eta / c^2 (van Laarhoven 2017). Every other parameter (BN's gamma and beta, the output layer)
    keeps lr. weight_decay: SGD's, on every parameter. eps: BN's (the default, 0 in effect, makes
    the invariance exact in float64).
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    data = data if data is not None else digits()
    torch.manual_seed(seed)
    model = mlp(data.num_features, tuple(hidden), data.num_classes, norm="torch_bn", activation="relu", init="he")
    model = model.to(dtype).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eps = eps
    hidden_weights = [m.weight for m in model if isinstance(m, nn.Linear)][:-1]
    with torch.no_grad():
        for w in hidden_weights:
            w.mul_(scale)
    chosen = {id(w) for w in hidden_weights}
    weight_lr = lr * scale**2 if scale_lr else lr
    opt = torch.optim.SGD([{"params": hidden_weights, "lr": weight_lr},
                           {"params": [p for p in model.parameters() if id(p) not in chosen], "lr": lr}],
                          lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train.to(dtype), data.y_train
    losses, weight_norm, grad_norm = [], [], []
    for step in range(steps + 1):
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        weight_norm.append([w.detach().norm().item() for w in hidden_weights])
        grad_norm.append([w.grad.norm().item() for w in hidden_weights])
        if step == steps:
            break
        opt.step()
        losses.append(loss.item())
    return ScaleRun(loss=np.array(losses), weight_norm=np.array(weight_norm), grad_norm=np.array(grad_norm),
                    weight_lr=weight_lr)


# ----------------------------------------------------------------------------- lesson 10
# BN as a regularizer, at digits scale. The dropout/BN disharmony (Li et al. 2019): a 3 x 256 ReLU
# MLP with torch's BN, SGD lr 0.1 momentum 0.9, batch 64. The regularization grid: a 3 x 100 BN
# MLP on a 300-example training subset, trained for the same number of SGD steps at every batch size
# (lr 0.05, momentum 0.9): only the noise of the batch statistics and of the gradient differ.
DROPOUT_BN = dict(hidden=(256, 256, 256), lr=0.1, momentum=0.9, batch_size=64, steps=600, p=0.5)
REGULARIZATION = dict(hidden=(100, 100, 100), train_size=300, steps=400, lr=0.05, momentum=0.9,
                      batch_sizes=(4, 16, 64, 300), dropouts=(0.0, 0.5), weight_decays=(0.0, 5e-3))
__all__ += ["DROPOUT_BN", "dropout_bn_mlp", "bn_input_variances", "VarianceShiftRun", "variance_shift_run",
            "REGULARIZATION", "subset", "regularized_mlp", "fit", "RegularizationRun", "regularization_run",
            "regularization_grid"]


def dropout_bn_mlp(dropout: str | None, p: float = DROPOUT_BN["p"], hidden=DROPOUT_BN["hidden"],
                   in_features: int = 64, out_features: int = 10) -> nn.Sequential:
    """Linear -> BN -> ReLU blocks (torch's BN) with dropout placed as Li et al. (2019) discuss:

        dropout=None:     no dropout
        'before_bn':      Dropout(p) after every block but the last, so it feeds BN2, BN3, ...
        'after_bn':       one Dropout(p) after the last block, before the output layer: no BN follows it
    """
    if dropout not in (None, "before_bn", "after_bn"):
        raise ValueError(f"dropout must be None, 'before_bn' or 'after_bn', got {dropout!r}")
    layers: list[nn.Module] = []
    width = in_features
    for i, h in enumerate(hidden):
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
        if dropout == "before_bn" and i < len(hidden) - 1 or dropout == "after_bn" and i == len(hidden) - 1:
            layers.append(nn.Dropout(p))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def bn_input_variances(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Per BN layer of model, the variance over x of each channel of its input in eval mode (no
    dropout, running statistics): what the layer really sees at test time. One pass, no gradients;
    the model's mode is restored."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    seen: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inputs, i=i: seen.__setitem__(i, inputs[0].detach()))
             for i, m in enumerate(layers)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [seen[i].var(dim=0, unbiased=False) for i in range(len(layers))]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, lr: float,
        momentum: float = 0.0, weight_decay: float = 0.0, seed: int = 0) -> list[float]:
    """SGD (momentum, weight decay on every parameter) on seeded minibatches drawn without
    replacement, epoch after epoch (a batch of len(x) is full-batch gradient descent). Returns the
    training loss of every step; the model is left in training mode."""
    if not 1 <= batch_size <= len(x):
        raise ValueError(f"batch_size must be in 1..{len(x)} (the training set), got {batch_size}")
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses, order = [], torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.randperm(len(x), generator=gen)
        idx, order = order[:batch_size], order[batch_size:]
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@dataclass
class VarianceShiftRun:
    """What `variance_shift_run` measured for BN2, BN3, ...: ratio[l] = the median over channels of
    running_var / (the input's true variance over the test set in eval mode); recomputed: the same
    after `recompute_batchnorm_statistics` with dropout off; test accuracies before and after."""

    dropout: str | None
    seed: int
    ratio: np.ndarray
    recomputed: np.ndarray
    test_accuracy: float
    recomputed_accuracy: float


def variance_shift_run(dropout: str | None, seed: int = 0, steps: int = DROPOUT_BN["steps"],
                       data: Split | None = None) -> VarianceShiftRun:
    """Train `dropout_bn_mlp(dropout)` (DROPOUT_BN) on digits and compare each later BN layer's
    running_var with the variance its input really has at test time. Li et al.'s variance shift
    predicts a ratio above 1 where dropout feeds the BN in training: running_var ~ Var_train =
    (c^2 + v)/p - c^2 > Var_test = v. The fix measured as 'recomputed': the running statistics are
    recomputed over the training set with dropout off (dropout layers in eval mode)."""
    from .train import recompute_batchnorm_statistics

    data = data if data is not None else digits()
    torch.manual_seed(seed)
    model = dropout_bn_mlp(dropout, in_features=data.num_features, out_features=data.num_classes)
    fit(model, data.x_train, data.y_train, steps, DROPOUT_BN["batch_size"], DROPOUT_BN["lr"],
        momentum=DROPOUT_BN["momentum"], seed=seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]

    def ratios():
        true = bn_input_variances(model, data.x_test)
        return np.array([float((bn.running_var / v.clamp_min(1e-8)).median()) for bn, v in zip(bns[1:], true[1:])])

    before, acc = ratios(), accuracy(model, data.x_test, data.y_test)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()      # stays in eval inside recompute's model.train(): dropout off while BN averages
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    _train = model.train

    def train_without_dropout(mode=True):
        _train(mode)
        for m in dropouts:
            m.eval()
        return model

    model.train = train_without_dropout
    try:
        recompute_batchnorm_statistics(model, data.x_train, batch_size=DROPOUT_BN["batch_size"])
    finally:
        del model.train
    return VarianceShiftRun(dropout=dropout, seed=seed, ratio=before, recomputed=ratios(), test_accuracy=acc,
                            recomputed_accuracy=accuracy(model, data.x_test, data.y_test))


def subset(data: Split, n: int, seed: int = 0) -> Split:
    """The first n of a seeded shuffle of data's training set (test set unchanged)."""
    if not 1 <= n <= len(data.x_train):
        raise ValueError(f"n must be in 1..{len(data.x_train)} (the training set), got {n}")
    idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:n]
    return Split(data.x_train[idx], data.y_train[idx], data.x_test, data.y_test)


def regularized_mlp(norm: str | None = "torch_bn", dropout: float = 0.0, hidden=REGULARIZATION["hidden"],
                    in_features: int = 64, out_features: int = 10, virtual_batch_size: int | None = None):
    """`mlp` blocks Linear -> norm -> ReLU, with Dropout(dropout) after each block (dropout > 0).
    norm='gbn' needs virtual_batch_size (ghost batches of that many examples)."""
    from .models import norm_layer

    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if norm == "gbn":
            from .layers import GhostBatchNorm1d
            if virtual_batch_size is None:
                raise ValueError("norm='gbn' needs virtual_batch_size")
            layers.append(GhostBatchNorm1d(h, virtual_batch_size=virtual_batch_size))
        elif norm is not None:
            layers.append(norm_layer(norm, h, spatial=False))
        layers.append(nn.ReLU())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


@dataclass
class RegularizationRun:
    """One net of the grid: final train and test accuracy (eval mode) and their gap."""

    batch_size: int
    dropout: float
    weight_decay: float
    seed: int
    train_accuracy: float
    test_accuracy: float

    @property
    def gap(self) -> float:
        return self.train_accuracy - self.test_accuracy


def regularization_run(batch_size: int, dropout: float = 0.0, weight_decay: float = 0.0, seed: int = 0,
                       norm: str | None = "torch_bn", data: Split | None = None, steps: int | None = None,
                       virtual_batch_size: int | None = None) -> RegularizationRun:
    """Train `regularized_mlp` on a REGULARIZATION['train_size'] subset of digits (the subset drawn
    with seed 0, the same for every run) for REGULARIZATION['steps'] SGD steps (lr 0.05, momentum
    0.9) whatever the batch size, and measure train and test accuracy in eval mode."""
    cfg = REGULARIZATION
    data = data if data is not None else subset(digits(), cfg["train_size"])
    steps = cfg["steps"] if steps is None else steps
    torch.manual_seed(seed)
    model = regularized_mlp(norm, dropout, in_features=data.num_features, out_features=data.num_classes,
                            virtual_batch_size=virtual_batch_size)
    fit(model, data.x_train, data.y_train, steps, batch_size, cfg["lr"], momentum=cfg["momentum"],
        weight_decay=weight_decay, seed=seed)
    return RegularizationRun(batch_size, dropout, weight_decay, seed,
                             accuracy(model, data.x_train, data.y_train), accuracy(model, data.x_test, data.y_test))


def regularization_grid(batch_sizes=REGULARIZATION["batch_sizes"], dropouts=REGULARIZATION["dropouts"],
                        weight_decays=REGULARIZATION["weight_decays"], seeds=(0, 1, 2), data: Split | None = None,
                        steps: int | None = None, progress: bool = True) -> dict:
    """{(batch_size, dropout, weight_decay, seed): RegularizationRun} over the whole grid."""
    data = data if data is not None else subset(digits(), REGULARIZATION["train_size"])
    combos = list(itertools.product(batch_sizes, dropouts, weight_decays, seeds))
    return {c: regularization_run(*c, data=data, steps=steps)
            for c in tqdm(combos, disable=not progress, desc="grid")}


# ----------------------------------------------------------------------------- lesson 10, section 4
# Inference example weighting (Summers & Dinneen 2020) on lesson 08's conv net: trained at batch 32
# on clean digit scans (or on scans with scanner variation), then evaluated one scan at a time on
# test scans whose gain and offset vary (bnlab.data.vary_scans, spread 1).
EXAMPLE_WEIGHTING = dict(batch_size=32, alphas=(0.0, 0.25, 0.5, 0.75, 0.9, 1.0), test_spread=1.0)
__all__ += ["EXAMPLE_WEIGHTING", "ExampleWeightingRun", "example_weighting_run"]


@dataclass
class ExampleWeightingRun:
    """Test accuracy against alpha, evaluated as at batch 1, on clean and on varied test scans.
    accuracy[test] is a list over alphas; test is 'clean' or 'varied'."""

    seed: int
    train_spread: float
    alphas: tuple
    accuracy: dict
    model: nn.Module = field(repr=False)

    def at(self, test: str, alpha: float) -> float:
        if alpha not in self.alphas:
            raise ValueError(f"alpha must be one of the evaluated {self.alphas}, got {alpha!r}")
        return self.accuracy[test][self.alphas.index(alpha)]


def example_weighting_run(seed: int = 0, train_spread: float = 0.0, alphas=EXAMPLE_WEIGHTING["alphas"],
                          test_spread: float = EXAMPLE_WEIGHTING["test_spread"], device=None) -> ExampleWeightingRun:
    """Train lesson 08's BN conv net (`small_batch_run`, bnlab's BN, batch 32) on digit scans varied
    with train_spread (0: clean), then measure its test accuracy with example weighting at each
    alpha on the clean test scans and on test scans varied with test_spread (another stream of the
    seed than training's). Only the conv layers' BN mixes in the scan's own statistics
    (`bnlab.layers.example_weighting`, spatial_only): the FC head keeps eval BN.

    With example weighting each scan is normalized on its own statistics and the running ones, never
    on the rest of its batch, so evaluating the whole test set at once gives what batch 1 gives
    (tests/test_example_weighting.py checks that): the accuracies are those of batch-1 inference.
    """
    from .layers import example_weighting

    clean = digits(images=True)
    train = vary_scans(clean, spread=train_spread, seed=seed) if train_spread else clean
    model = small_batch_run("bn", EXAMPLE_WEIGHTING["batch_size"], seed=seed, data=train, device=device).model
    model = model.cpu().eval()
    tests = {"clean": clean, "varied": vary_scans(clean, spread=test_spread, seed=1000 + seed)}
    alphas = tuple(float(a) for a in alphas)
    result = {}
    for name, data in tests.items():
        result[name] = []
        for alpha in alphas:
            with example_weighting(model, alpha):
                result[name].append(accuracy(model, data.x_test, data.y_test))
    return ExampleWeightingRun(seed, float(train_spread), alphas, result, model)


# ----------------------------------------------------------------------------- lesson 12
# BN's statistics when a batch is spread over devices. In-process: per-device BN is ghost BN, the
# law of total variance across shards, gradient accumulation, the bytes SyncBatchNorm adds. In real
# processes (bnlab.distributed.spawn, gloo): lesson 08's conv net trained data-parallel with per-device
# BN or SyncBatchNorm, settings (W ranks, per-device batch b, epochs). Calibrated on 2 cores, where
# SyncBN's 6 collectives a step (3 BN layers) cost ~40 ms a step at W = 4 (4 processes on 2 cores)
# against ~12 ms without: the batch-2 setting trains 1 epoch (157 steps), the batch-16 one 2 (78 steps).
DEVICES = dict(widths=SMALL_BATCH["widths"], hidden=SMALL_BATCH["hidden"], lr_per_32=SMALL_BATCH["lr_per_32"],
               momentum=SMALL_BATCH["momentum"], settings=((4, 2, 1), (2, 16, 2)), seeds=(0, 1, 2))
DEVICE_ORDERS = ("iid", "sorted")
__all__ += ["DEVICES", "DEVICE_ORDERS", "DeviceSplit", "simulate_devices", "DeviceStatistics", "device_statistics",
            "DevicesRun", "devices_runs", "devices_run", "devices_grid", "resnet50_counts", "RESNET50",
            "sync_cost_table", "AccumulationResult", "accumulation_vs_large_batch"]


def _device_shards(x: torch.Tensor, world_size: int | None, sizes, order: str, labels) -> tuple[torch.Tensor, list]:
    """(index, sizes): device r holds x[index][sum(sizes[:r]):sum(sizes[:r + 1])]."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ValueError(f"x must be a tensor (N, C, *spatial), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if (world_size is None) == (sizes is None):
        raise ValueError("give one of world_size (equal shards) or sizes (one shard size per device), not both")
    if world_size is not None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        if len(x) % world_size:
            raise ValueError(f"{len(x)} examples do not split into {world_size} equal shards; pass sizes= "
                             "for unequal ones")
        sizes = [len(x) // world_size] * world_size
    sizes = list(sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of ints >= 0, got {sizes!r}")
    if sum(sizes) != len(x):
        raise ValueError(f"sizes {sizes} add up to {sum(sizes)}, but x holds {len(x)} examples (dim 0)")
    if order not in DEVICE_ORDERS:
        raise ValueError(f"order must be one of {DEVICE_ORDERS}, got {order!r}")
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape != (len(x),):
            raise ValueError(f"labels must be (N,) = ({len(x)},), one per example, got shape {tuple(labels.shape)}")
    if order == "iid":
        return torch.arange(len(x)), sizes
    if labels is None:
        raise ValueError("order='sorted' needs labels (the examples are sorted by them before sharding)")
    return torch.sort(labels, stable=True).indices, sizes


@dataclass
class DeviceSplit:
    """What `simulate_devices` computed. Device r holds x[index] in the rows of sizes[r]; counts (W,),
    means and variances (W, C): its n_r, mu_r and biased sigma^2_r per channel (NaN for an empty
    shard); mean and var (C,): those of the whole batch (Chan's combination of the shards'); per_device
    and sync: the normalized batch (x's shape, x's order) with each device's statistics and with the
    global ones. All statistics in float64."""

    sizes: list[int]
    index: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor
    per_device: torch.Tensor = field(repr=False)
    sync: torch.Tensor = field(repr=False)

    def shards(self, t: torch.Tensor) -> list[torch.Tensor]:
        """t (in x's order, N along dim 0) as the devices hold it: [device 0's rows, ...]."""
        from .distributed import shard
        return shard(t[self.index], self.sizes)


def simulate_devices(x: torch.Tensor, world_size: int | None = None, sizes=None, order: str = "iid",
                     labels=None, eps: float = 1e-5) -> DeviceSplit:
    """Normalize x (N, C, *spatial) as W devices would, each holding a shard of it, in one process.

    order='iid': device r holds the r-th consecutive block of x (a shuffled batch: each shard a random
    sample); 'sorted': the examples sorted by labels first (stable), so each device sees few classes.
    world_size: W equal shards (N divisible by W), or sizes: one size per device (0 allowed).

        per-device BN:   x_hat = (x - mu_r) / sqrt(sigma^2_r + eps)    each shard its own statistics
        SyncBatchNorm:   x_hat = (x - mu_B) / sqrt(sigma^2_B + eps)    mu_B, sigma^2_B of all N, from the
                         shards' (n_r, mu_r, M2_r) by `bnlab.distributed.combine_moments`, as SyncBatchNorm

    With equal shards per-device BN is `bnlab.GhostBatchNorm` with virtual_batch_size = N / W applied to
    x[index], and sync is plain BN on the whole batch. No gamma and beta (they are 1 and 0 at the start,
    and the same on every device). A non-empty shard of a single value per channel is refused, as BN
    refuses it in training.
    """
    from .distributed import channel_moments, combine_moments, shard
    from .functional import batch_norm, reduction_shapes

    index, sizes = _device_shards(x, world_size, sizes, order, labels)
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got dtype {x.dtype}")
    shards = shard(x[index], sizes)
    moments = [channel_moments(s.double()) for s in shards]
    counts = torch.tensor([n for n, _, _ in moments], dtype=torch.float64)
    means = torch.stack([mu for _, mu, _ in moments])
    m2s = torch.stack([m2 for _, _, m2 in moments])
    empty = (counts == 0).view(-1, 1)
    variances = torch.where(empty, torch.full_like(m2s, math.nan), m2s / counts.clamp_min(1).view(-1, 1))
    total, mean, m2 = combine_moments(counts, means, m2s)
    var = m2 / total
    per_device = torch.cat([batch_norm(s, None, None, training=True, eps=eps) for s in shards if len(s)])
    _, shape = reduction_shapes(x)
    sync_mean, sync_var = mean.to(x.dtype).view(shape), var.to(x.dtype).view(shape)
    sync = (x[index] - sync_mean) / torch.sqrt(sync_var + eps)
    # back to x's order: row i of x[index] is example index[i]
    back = torch.empty_like(index)
    back[index] = torch.arange(len(index))
    return DeviceSplit(sizes=sizes, index=index, counts=counts, means=means, variances=variances, mean=mean,
                       var=var, per_device=per_device[back], sync=sync[back])


@dataclass
class DeviceStatistics:
    """Per channel (C,), float64, what `device_statistics` measured for shards of sizes:

        var              sigma^2_B of the whole batch, computed directly (two passes over all N)
        within           sum_r n_r sigma^2_r / N: the count-weighted mean of the devices' variances
        between          sum_r n_r (mu_r - mu_B)^2 / N: the weighted variance of the devices' means
        combined         M2 / N from `combine_moments` of the devices' (n_r, mu_r, M2_r)
        naive_mean       mean_r mu_r, unweighted over the non-empty devices
        naive_within     mean_r sigma^2_r, unweighted
        naive_var        naive_within + mean_r (mu_r - naive_mean)^2: total variance without the counts
    and mean (C,), mu_B. var = within + between exactly (the law of total variance): averaging the
    devices' variances misses `between`, the spread of their means, which class-sorted shards make
    large. The naive estimates weigh every device alike: wrong as soon as the shards differ in size
    (and in their statistics).
    """

    sizes: list[int]
    mean: torch.Tensor
    var: torch.Tensor
    within: torch.Tensor
    between: torch.Tensor
    combined: torch.Tensor
    naive_mean: torch.Tensor
    naive_within: torch.Tensor
    naive_var: torch.Tensor

    def rows(self, channels=None) -> list[dict]:
        """One dict of floats per channel (all, or those listed), for a table."""
        chosen = range(len(self.var)) if channels is None else channels
        names = ("mean", "var", "within", "between", "combined", "naive_mean", "naive_within", "naive_var")
        return [{"channel": int(c), **{n: float(getattr(self, n)[c]) for n in names}} for c in chosen]


def device_statistics(x: torch.Tensor, world_size: int | None = None, sizes=None, order: str = "iid",
                      labels=None) -> DeviceStatistics:
    """The numbers of lesson 12's table for x (N, C, *spatial) spread over devices as in
    `simulate_devices` (same world_size, sizes, order, labels): see DeviceStatistics. Float64."""
    from .functional import reduction_shapes

    split = simulate_devices(x, world_size, sizes, order, labels)
    present = split.counts > 0
    counts, means, variances = split.counts[present], split.means[present], split.variances[present]
    n = counts.sum()
    weights = counts.view(-1, 1)
    dims, shape = reduction_shapes(x)
    mean = x.double().mean(dims)
    centred = x.double() - mean.view(shape)
    var = (centred * centred).mean(dims)
    naive_mean = means.mean(0)
    naive_within = variances.mean(0)
    return DeviceStatistics(
        sizes=split.sizes, mean=mean, var=var,
        within=(weights * variances).sum(0) / n,
        between=(weights * (means - split.mean) ** 2).sum(0) / n,
        combined=split.var,
        naive_mean=naive_mean, naive_within=naive_within,
        naive_var=naive_within + ((means - naive_mean) ** 2).mean(0))


@dataclass
class DevicesRun:
    """One data-parallel training run of `devices_runs`: W ranks of per_device_batch examples each
    (global batch W * b), BN per device (sync=False) or SyncBatchNorm (sync=True); test accuracy in
    eval mode with rank 0's running statistics; seconds: rank 0's training loop; spawn_seconds: the
    whole spawn it ran in (process start-up included, shared by every run of that spawn);
    first_step: what the worker recorded of step 1 on each rank (record_first_step), else None."""

    world_size: int
    per_device_batch: int
    sync: bool
    seed: int
    steps: int
    lr: float
    test_accuracy: float
    seconds: float
    spawn_seconds: float
    first_step: list | None = field(default=None, repr=False)

    @property
    def global_batch(self) -> int:
        return self.world_size * self.per_device_batch

    @property
    def mode(self) -> str:
        """'single' (one process: plain BN), 'sync' or 'per_device'."""
        return "single" if self.world_size == 1 else "sync" if self.sync else "per_device"

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps


def _devices_config(config: dict, num_train: int) -> dict:
    """A worker config from a lesson's: DEVICES' net, lr 0.1 * (W * b) / 32, momentum 0.9, and steps
    from epochs of the global batch unless steps is given."""
    allowed = {"world_size", "per_device_batch", "sync", "seed", "epochs", "steps", "dtype", "record_first_step"}
    if not isinstance(config, dict) or not {"world_size", "per_device_batch"} <= set(config) <= allowed:
        raise ValueError(f"a config is a dict with world_size and per_device_batch, and optionally "
                         f"{sorted(allowed - {'world_size', 'per_device_batch'})}; got {config!r}")
    w, b = config["world_size"], config["per_device_batch"]
    for name, value in (("world_size", w), ("per_device_batch", b)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if isinstance(config.get("seed", 0), bool) or not isinstance(config.get("seed", 0), int):
        raise ValueError(f"seed must be an int, got {config['seed']!r}")
    if w * b < 2:
        raise ValueError("BN needs a global batch of at least 2 examples (world_size * per_device_batch)")
    if w * b > num_train:
        raise ValueError(f"the global batch {w} * {b} is larger than the training set ({num_train})")
    if "steps" in config and "epochs" in config:
        raise ValueError("give epochs or steps, not both")
    steps = config["steps"] if "steps" in config else max(1, round(config.get("epochs", 1) * (num_train // (w * b))))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return dict(world_size=w, per_device_batch=b, sync=bool(config.get("sync", False)), seed=config.get("seed", 0),
                steps=steps, lr=DEVICES["lr_per_32"] * w * b / 32, momentum=DEVICES["momentum"],
                model=dict(widths=DEVICES["widths"], hidden=DEVICES["hidden"]),
                dtype=config.get("dtype", torch.float32), record_first_step=bool(config.get("record_first_step")))


def devices_runs(configs, data: Split | None = None, timeout: float = 600) -> list[DevicesRun]:
    """Train lesson 08's conv net (bnlab's BN) data-parallel, for every config, all in ONE
    `bnlab.distributed.spawn` of max(world_size) ranks (starting a process group costs seconds;
    a config of fewer ranks runs on ranks 0..W-1 while the others wait).

    A config: dict(world_size=W, per_device_batch=b, sync=False, seed=0, epochs=1 or steps=...,
    dtype=torch.float32, record_first_step=False). Every step the global batch is the next W * b
    examples of a seeded permutation of the training set (the same batches as a single process at
    batch W * b with that seed), rank r normalizes its own b of them (sync=False: per-device BN, which
    is ghost BN with virtual batch b) or the global batch's statistics (SyncBatchNorm); DDP averages
    the gradients. SGD at lr 0.1 * W b / 32, momentum 0.9 (lesson 08's linear scaling rule, on the
    global batch). data: vary_scans(digits(images=True)) unless given. See
    `bnlab.distributed._devices_worker`.
    """
    import time

    from .distributed import _devices_worker, spawn

    data = data if data is not None else vary_scans(digits(images=True))
    configs = [_devices_config(c, len(data.x_train)) for c in configs]
    if not configs:
        raise ValueError("configs is empty: give at least one run")
    world_size = max(c["world_size"] for c in configs)
    started = time.perf_counter()
    per_rank = spawn(_devices_worker, world_size, args=(configs, (data.x_train, data.y_train, data.x_test,
                                                                  data.y_test)), timeout=timeout)
    spawn_seconds = time.perf_counter() - started
    runs = []
    for i, c in enumerate(configs):
        results = [per_rank[r][i] for r in range(c["world_size"])]
        first = [r["first_step"] for r in results] if c["record_first_step"] else None
        runs.append(DevicesRun(c["world_size"], c["per_device_batch"], c["sync"], c["seed"], c["steps"], c["lr"],
                               results[0]["test_accuracy"], results[0]["seconds"], spawn_seconds, first))
    return runs


def devices_run(world_size: int, per_device_batch: int, sync: bool, seed: int = 0, epochs: float = 1,
                steps: int | None = None, data: Split | None = None, timeout: float = 600) -> DevicesRun:
    """One config of `devices_runs`, in a spawn of its own (a lesson batches several instead)."""
    config = dict(world_size=world_size, per_device_batch=per_device_batch, sync=sync, seed=seed)
    if steps is None:
        config["epochs"] = epochs
    else:
        config["steps"] = steps
    return devices_runs([config], data, timeout)[0]


def devices_grid(settings=DEVICES["settings"], seeds=DEVICES["seeds"], single: bool = True,
                 data: Split | None = None, timeout: float = 600) -> dict:
    """Lesson 12's runs in one spawn: {(W, b, mode, seed): DevicesRun} for every setting (W, b, epochs)
    and seed, mode 'per_device' and 'sync', and with single=True 'single': one process at batch W * b
    on the same batches (the run SyncBatchNorm should reproduce)."""
    configs, keys = [], []
    for (w, b, epochs), seed in itertools.product(settings, seeds):
        modes = [("per_device", w, b, False), ("sync", w, b, True)] + ([("single", 1, w * b, False)] if single else [])
        for mode, world_size, batch, sync in modes:
            configs.append(dict(world_size=world_size, per_device_batch=batch, sync=sync, seed=seed, epochs=epochs))
            keys.append((w, b, mode, seed))
    return dict(zip(keys, devices_runs(configs, data, timeout)))


def resnet50_counts() -> tuple[list[int], int]:
    """(num_features of each of ResNet-50's 53 BN layers, in order, and its number of parameters),
    derived from the architecture (He et al. 2016, Table 1, as torchvision builds it; torchvision is
    not installed here): a 7x7 conv of 64 channels and its BN, then 3, 4, 6, 3 bottleneck blocks of
    widths 64, 128, 256, 512 (1x1 to width, 3x3, 1x1 to 4 * width, a BN after each, convs without
    bias), the first block of each stage with a 1x1 projection and its BN, then FC 2048 -> 1000."""
    channels, parameters = [64], 3 * 64 * 7 * 7 + 2 * 64
    in_channels = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        out = 4 * width
        for block in range(blocks):
            parameters += in_channels * width + 9 * width * width + width * out
            channels += [width, width, out]
            if block == 0:
                parameters += in_channels * out
                channels.append(out)
            in_channels = out
    parameters += 2 * sum(channels[1:])          # gamma and beta of every BN but the stem's, counted above
    parameters += 2048 * 1000 + 1000
    return channels, parameters


RESNET50 = dict(zip(("bn_channels", "parameters"), resnet50_counts()))


def sync_cost_table(models: dict, world_size: int, dtype=torch.float32) -> dict[str, dict]:
    """What SyncBatchNorm adds to a data-parallel step, per rank, against DDP's own gradient all-reduce.

    models: {name: nn.Module, or (list of BN num_features, number of parameters)}; a module's BN
    layers are those `bnlab.layers.is_batchnorm` finds, its parameters those that require grad.
    Per model, with L BN layers of C_l channels, P parameters, s bytes a value, W = world_size:
        syncbn_collectives  2 L            an all-gather in forward, an all-reduce in backward, per layer
        syncbn_payload      sum_l (2 C_l + 1) s + 2 C_l s       (`bnlab.distributed.sync_bytes_per_step`)
        syncbn_sent         sum_l sync_bytes_per_step(C_l, W)['sent']
        ddp_payload         s P            the gradients DDP all-reduces
        ddp_sent            2 (W - 1) / W * s P                    (ring all-reduce)
        ddp_buckets         ceil(s P / 25 MiB): DDP's all-reduces a step, about (bucket_cap_mb = 25)
        sent_ratio          syncbn_sent / ddp_sent
    Every BN layer is counted with its backward all-reduce (its input needs a gradient: a conv is
    before it). The bytes are small; the 2 L collectives, each a synchronization of all W ranks, are
    what costs (latency), as lesson 12's timed runs show.
    """
    from .distributed import sync_bytes_per_step
    from .layers import is_batchnorm

    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"world_size must be an int >= 2 (one rank communicates nothing), got {world_size!r}")
    size = torch.empty((), dtype=dtype).element_size()
    table = {}
    for name, model in models.items():
        if isinstance(model, nn.Module):
            channels = [m.num_features for m in model.modules() if is_batchnorm(m)]
            parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        elif isinstance(model, tuple) and len(model) == 2:
            channels, parameters = list(model[0]), int(model[1])
        else:
            raise ValueError(f"models[{name!r}] must be an nn.Module or (BN channel list, parameter count), "
                             f"got {type(model).__name__}")
        per_layer = [sync_bytes_per_step(c, world_size, dtype) for c in channels]
        ddp_payload = size * parameters
        ddp_sent = 2 * (world_size - 1) / world_size * ddp_payload
        syncbn_sent = sum(b["sent"] for b in per_layer)
        table[name] = dict(bn_layers=len(channels), bn_channels=sum(channels), parameters=parameters,
                           syncbn_collectives=2 * len(channels),
                           syncbn_payload=sum(b["forward_payload"] + b["backward_payload"] for b in per_layer),
                           syncbn_sent=syncbn_sent, ddp_payload=ddp_payload, ddp_sent=ddp_sent,
                           ddp_buckets=math.ceil(ddp_payload / (25 * 1024 * 1024)),
                           sent_ratio=syncbn_sent / ddp_sent)
    return table


@dataclass
class AccumulationResult:
    """`accumulation_vs_large_batch`'s measurements, max |difference| over every parameter's gradient
    (grad_difference) and over every BN layer's running statistics (None without BN), between one
    batch of micro_batch * accumulation_steps examples and the same examples accumulated in micro-
    batches; grad_relative: ||g_large - g_accumulated|| / ||g_large||; ghost_difference: max |difference|
    of the gradients and running statistics of the accumulation against one batch through the same
    net with GhostBatchNorm of virtual batch micro_batch (norm 'bn' or 'torch_bn' only, else None)."""

    norm: str | None
    micro_batch: int
    accumulation_steps: int
    grad_difference: float
    grad_relative: float
    running_mean_difference: float | None
    running_var_difference: float | None
    ghost_difference: float | None


def accumulation_vs_large_batch(norm: str | None = "bn", micro_batch: int = 4, accumulation_steps: int = 8,
                                seed: int = 0, data: Split | None = None, dtype=torch.float64) -> AccumulationResult:
    """One step's gradient of lesson 08's conv net (norm in every layer, as `small_batch_run`) on a batch
    of B = k m examples (k = accumulation_steps, m = micro_batch, the first B of a seeded permutation
    of the training set), against the same B examples as k micro-batches whose losses L_i / k are
    backpropagated one after the other and their gradients summed (gradient accumulation):

        large:        g = d/dtheta  (1 / B) sum_n loss_n                 BN statistics of all B
        accumulated:  g' = sum_i d/dtheta (1 / k)(1 / m) sum_{n in i} loss_n   BN statistics of each m

    Without BN (norm None, 'gn', 'ln': per-example norms) g' = g up to rounding; with BN in training
    mode they differ (mu_B and sigma^2_B of m examples, not B), and the running statistics are updated
    k times instead of once. The accumulation is exactly ghost BN (virtual batch m) on the large batch.
    Float64 by default, so that 'equal' means ~1e-15.
    """
    from .layers import GhostBatchNorm

    for name, value in (("micro_batch", micro_batch), ("accumulation_steps", accumulation_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    data = data if data is not None else vary_scans(digits(images=True))
    total = micro_batch * accumulation_steps
    if total > len(data.x_train):
        raise ValueError(f"micro_batch * accumulation_steps = {total} exceeds the training set ({len(data.x_train)})")
    torch.manual_seed(seed)
    model = conv_net(data.x_train.shape[1], data.num_classes, SMALL_BATCH["widths"], norm=norm,
                     hidden=SMALL_BATCH["hidden"], head_norm="ln" if norm == "in" else "same",
                     image_size=data.x_train.shape[-1]).to(dtype).train()
    idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:total]
    x, y = data.x_train[idx].to(dtype), data.y_train[idx]
    loss_fn = nn.CrossEntropyLoss()
    large, accumulated = copy.deepcopy(model), copy.deepcopy(model)
    loss_fn(large(x), y).backward()
    for xi, yi in zip(x.split(micro_batch), y.split(micro_batch)):
        (loss_fn(accumulated(xi), yi) / accumulation_steps).backward()

    def gradients(m):
        return torch.cat([p.grad.flatten() for p in m.parameters()])

    def running(m):
        layers = [layer for layer in m.modules() if is_batchnorm(layer) and layer.running_mean is not None]
        return [torch.cat([layer.running_mean, layer.running_var]) for layer in layers]

    g, g_acc = gradients(large), gradients(accumulated)
    bns = [(a, b) for a, b in zip(large.modules(), accumulated.modules())
           if is_batchnorm(a) and a.running_mean is not None]
    ghost_difference = None
    if norm in ("bn", "torch_bn"):
        # the same net with every BN made a GhostBatchNorm of virtual batch m (same parameters, buffers)
        ghost = copy.deepcopy(model)
        for parent in list(ghost.modules()):
            for child_name, child in list(parent.named_children()):
                if is_batchnorm(child):
                    replacement = GhostBatchNorm(child.num_features, micro_batch, eps=child.eps,
                                                 momentum=child.momentum, dtype=dtype)
                    replacement.load_state_dict(child.state_dict())
                    setattr(parent, child_name, replacement)
        loss_fn(ghost(x), y).backward()
        ghost_difference = max([float((gradients(ghost) - g_acc).abs().max())]
                               + [float((a - b).abs().max()) for a, b in zip(running(ghost), running(accumulated))])
    def largest(name):
        return max(float((getattr(a, name) - getattr(b, name)).abs().max()) for a, b in bns) if bns else None

    return AccumulationResult(
        norm=norm, micro_batch=micro_batch, accumulation_steps=accumulation_steps,
        grad_difference=float((g - g_acc).abs().max()), grad_relative=float((g - g_acc).norm() / g.norm()),
        running_mean_difference=largest("running_mean"), running_var_difference=largest("running_var"),
        ghost_difference=ghost_difference)


@dataclass
class SyncParity:
    """What `sync_parity_run` measured: max |difference| between bnlab.SyncBatchNorm on the ranks'
    shards and torch's BatchNorm1d on the whole batch, over every step: outputs, input gradients,
    dgamma and dbeta summed over ranks, running statistics (every rank's); collectives: the
    collectives each rank made per training step; torch_on_cpu: what torch.nn.SyncBatchNorm said
    to CPU input in the same process group."""

    sizes: list[int]
    steps: int
    output: float
    grad_input: float
    grad_weight: float
    grad_bias: float
    running: float
    collectives: list
    torch_on_cpu: str


def sync_parity_run(sizes=(5, 0, 7, 3), channels: int = 4, steps: int = 3, seed: int = 0,
                    timeout: float = 120) -> SyncParity:
    """bnlab.SyncBatchNorm in len(sizes) real processes (gloo, `bnlab.distributed.spawn`), rank r
    holding sizes[r] examples of each step's batch (0 allowed: an empty shard still joins the
    collectives), float64, against torch's BatchNorm1d on the concatenated batch in this process."""
    from .distributed import _checks_worker, spawn

    sizes = [int(n) for n in sizes]
    gen = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    xs = [torch.randn(n, channels, generator=gen, dtype=torch.float64) * 3 + 2 for _ in range(steps)]
    grads = [torch.randn(n, channels, generator=gen, dtype=torch.float64) for _ in range(steps)]
    weight = torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5
    bias = torch.randn(channels, generator=gen, dtype=torch.float64)
    case = dict(xs=xs, grads=grads, sizes=[sizes] * steps, weight=weight, bias=bias)
    checks = [("_parity_worker", ([case],)), ("_torch_sync_cpu_worker", ())]
    per_rank = spawn(_checks_worker, len(sizes), args=(checks,), timeout=timeout)
    reference = nn.BatchNorm1d(channels, dtype=torch.float64)
    with torch.no_grad():
        reference.weight.copy_(weight)
        reference.bias.copy_(bias)
    errors = dict(output=0.0, grad_input=0.0, grad_weight=0.0, grad_bias=0.0, running=0.0)
    collectives = []
    for step, (x, grad) in enumerate(zip(xs, grads)):
        x = x.clone().requires_grad_(True)
        out = reference(x)
        out.backward(grad)
        records = [per_rank[r][0][0]["steps"][step] for r in range(len(sizes))]
        out_ranks = torch.cat([rec["out"] for rec in records])
        grad_ranks = torch.cat([rec["grad_input"] for rec in records])
        worst = lambda a, b: float((a - b).abs().max()) if a.numel() else 0.0   # noqa: E731
        errors["output"] = max(errors["output"], worst(out_ranks, out.detach()))
        errors["grad_input"] = max(errors["grad_input"], worst(grad_ranks, x.grad))
        errors["grad_weight"] = max(errors["grad_weight"], worst(sum(rec["grad_weight"] for rec in records),
                                                                 reference.weight.grad))
        errors["grad_bias"] = max(errors["grad_bias"], worst(sum(rec["grad_bias"] for rec in records),
                                                             reference.bias.grad))
        for rec in records:
            errors["running"] = max(errors["running"], worst(rec["running_mean"], reference.running_mean),
                                    worst(rec["running_var"], reference.running_var))
        collectives.append([len(rec["collectives"]) for rec in records])
        reference.zero_grad(set_to_none=True)
    return SyncParity(sizes, steps, **errors, collectives=collectives, torch_on_cpu=per_rank[0][1])


__all__ += ["SyncParity", "sync_parity_run"]
