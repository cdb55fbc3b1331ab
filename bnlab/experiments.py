"""The lessons' experiments, configured as they were calibrated, so a notebook cell is one call.

Each function says which lesson it serves; the numbers in the defaults are the calibrated ones
(digits, 70/30 split, inputs / 16).
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Split, digits, shapes, vary_scans
from .layers import BatchRenorm, is_batchnorm
from .models import _linear_block, conv_net, encoder_decoder, initialize, mlp
from .probes import activation_layers
from .train import History, train_classifier, train_segmenter

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
