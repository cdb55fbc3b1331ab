"""The loss landscape around the current parameters: how far the gradient can be trusted (lesson 09).

Santurkar et al. (2018), "How does batch normalization help optimization?", argue that BN's benefit
is not a reduction of internal covariate shift (`bnlab.ics`) but a smoother loss: along the gradient
direction the loss changes less erratically and the gradient itself changes less, so larger steps
are safe. `loss_along_gradient` measures that, as their Figure 4 does. Cohen et al. (2021),
"Gradient descent on neural networks typically occurs at the edge of stability", measure the
sharpness, the top eigenvalue of the Hessian: `top_hessian_eigenvalue`. Gradient descent with
learning rate eta is stable on a quadratic only while sharpness < 2 / eta (`edge_of_stability`), and
full-batch training drives the sharpness up to that value and holds it there.

Every function evaluates the model through `torch.func.functional_call` with copies of its buffers:
the model's parameters, gradients, BN running statistics and train/eval modes are exactly as they
were afterwards (BN in training mode would otherwise update its running statistics on every extra
forward pass).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

__all__ = ["GRADIENT_STEPS", "GradientPath", "loss_along_gradient", "HessianEigenvalue", "top_hessian_eigenvalue",
           "edge_of_stability"]

# multiples k of the learning rate: Santurkar et al. step 0.05 to 0.4 along the gradient at lr 0.1
GRADIENT_STEPS = tuple(np.linspace(0.5, 4.0, 8).tolist())


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2 or not all(isinstance(t, torch.Tensor) for t in batch):
        raise ValueError(f"batch must be a pair (inputs, targets) of tensors, got {type(batch).__name__}")
    x, y = batch
    if len(x) != len(y):
        raise ValueError(f"batch has {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise ValueError("batch is empty")
    return x, y


def _check_lr(lr) -> float:
    # not (lr > 0) also rejects NaN
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return float(lr)


@contextlib.contextmanager
def _mode(model: nn.Module, train: bool):
    """model.train(train) inside, every module's own flag back afterwards (a model may be partly in eval)."""
    modes = [(module, module.training) for module in model.modules()]
    model.train(train)
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class _Objective:
    """theta -> L(theta) on one batch, for parameter lists in the order of `names`, without writing to
    the model: each forward runs on fresh copies of its buffers, which BN in training mode updates."""

    def __init__(self, model: nn.Module, loss_fn: Callable, batch):
        self.model, self.loss_fn = model, loss_fn
        self.x, self.y = _check_batch(batch)
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no parameter with requires_grad=True")
        self.names = [name for name, _ in trainable]
        self.index = {id(p): i for i, (_, p) in enumerate(trainable)}
        self.theta = [p.detach() for _, p in trainable]
        self.buffers = dict(model.named_buffers())

    def loss(self, params: Sequence[torch.Tensor]) -> torch.Tensor:
        state = {**{name: b.clone() for name, b in self.buffers.items()}, **dict(zip(self.names, params))}
        loss = self.loss_fn(functional_call(self.model, state, (self.x,)), self.y)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r:.80}")
        return loss.reshape(())

    def gradient(self, params: Sequence[torch.Tensor], create_graph: bool = False):
        """(L, dL/dtheta, the leaves) at params; create_graph keeps the graph for a second derivative."""
        leaves = [p.detach().requires_grad_(True) for p in params]
        loss = self.loss(leaves)
        grads = torch.autograd.grad(loss, leaves, create_graph=create_graph, allow_unused=True)
        # a parameter the loss does not depend on has gradient 0, not None
        return loss, [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)], leaves


def _norm(tensors: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


@dataclass
class GradientPath:
    """What `loss_along_gradient` measured along theta - k * lr * g.

    ks: the multiples k; losses: L(theta - k lr g) for each k; loss: L(theta); grad_norm: ||g||;
    gradient_changes: ||grad L(theta - k lr g) - g|| for each k; and the summaries:
    loss_range = max - min of losses, gradient_change = max of gradient_changes (Santurkar et al.'s
    "gradient predictiveness": small means the gradient here predicts the gradient there), and
    beta_smoothness = max over k of gradient_changes / ||k lr g|| (their "effective beta-smoothness",
    a local Lipschitz constant of the gradient; NaN where g = 0 and there is no path).
    """

    ks: np.ndarray
    losses: np.ndarray
    loss: float
    grad_norm: float
    lr: float
    gradient_changes: np.ndarray = field(repr=False)
    loss_range: float = field(init=False)
    gradient_change: float = field(init=False)
    beta_smoothness: float = field(init=False)

    def __post_init__(self):
        self.loss_range = float(self.losses.max() - self.losses.min())
        self.gradient_change = float(self.gradient_changes.max())
        distances = self.ks * self.lr * self.grad_norm
        self.beta_smoothness = float((self.gradient_changes / distances).max()) if self.grad_norm > 0 else math.nan


def loss_along_gradient(model: nn.Module, loss_fn: Callable, batch, lr: float, ks: Sequence[float] = GRADIENT_STEPS,
                        train: bool = True) -> GradientPath:
    """The loss and its gradient at points along the step SGD is about to take (Santurkar et al. 2018,
    Section 3.1 and Figure 4).

    With g = grad L(theta) on batch = (x, y), L(theta) = loss_fn(model(x), y):

        losses[j]           = L(theta - k_j * lr * g)
        gradient_changes[j] = || grad L(theta - k_j * lr * g) - g ||
        loss_range          = max_j losses[j] - min_j losses[j]
        gradient_change     = max_j gradient_changes[j]
        beta_smoothness     = max_j gradient_changes[j] / (k_j * lr * ||g||)

    k runs over ks (default 0.5 ... 4: from half of SGD's step to four of them). A smooth loss, the
    paper's finding with BN, has a small loss_range (the step's outcome barely depends on its size)
    and a small gradient_change (the gradient stays a good guide over the whole path), so a large
    lr is safe. theta is every parameter with requires_grad, ||.|| the norm over all of them at once.

    train=True evaluates in training mode, the objective SGD minimizes (BN normalizes with the
    batch's statistics); train=False uses each module's eval behaviour. Dropout would draw new masks
    for every point: use the measure on models without it, or in eval mode. The model comes back
    unchanged: parameters, .grad, buffers and modes (see the module docstring).
    """
    lr = _check_lr(lr)
    ks = np.asarray(ks, dtype=np.float64)
    if ks.ndim != 1 or ks.size == 0 or not np.all(np.isfinite(ks)) or not np.all(ks > 0):
        raise ValueError(f"ks must be a non-empty 1-D sequence of finite multiples > 0, got {ks.tolist()}")
    objective = _Objective(model, loss_fn, batch)
    with _mode(model, train):
        loss, g, _ = objective.gradient(objective.theta)
        g = [t.detach() for t in g]
        losses, changes = [], []
        for k in ks:
            point = [p - (k * lr) * d for p, d in zip(objective.theta, g)]
            loss_k, g_k, _ = objective.gradient(point)
            losses.append(loss_k.item())
            changes.append(_norm([a - b for a, b in zip(g_k, g)]))
    return GradientPath(ks=ks, losses=np.array(losses), loss=loss.item(), grad_norm=_norm(g), lr=lr,
                        gradient_changes=np.array(changes))


@dataclass
class HessianEigenvalue:
    """What `top_hessian_eigenvalue` found: eigenvalue, the estimate after `iterations` products
    Hv (both power iterations together, see there); converged: whether it met tol before the limit;
    history: the estimate after every iteration."""

    eigenvalue: float
    iterations: int
    converged: bool
    history: list[float] = field(repr=False)
    # the unit vector of the last iteration, one tensor per parameter: a warm start for the next call
    vector: list[torch.Tensor] | None = field(default=None, repr=False)


def top_hessian_eigenvalue(model: nn.Module, loss_fn: Callable, batch, iters: int = 300, tol: float = 1e-3,
                           seed: int = 0, train: bool = True, start=None) -> HessianEigenvalue:
    """lambda_max of the Hessian H = d^2 L / d theta^2 of the loss on batch (Cohen et al. 2021's
    sharpness), by power iteration on Hessian-vector products.

        v_0 ~ N(0, I) (seeded), normalized;   w = H v_t;   lambda_t = <v_t, w>;   v_{t+1} = w / ||w||

    H v is the gradient of <grad L, v>: one double backward through the graph of grad L, which is
    built once (create_graph=True), so H itself (P x P for P parameters) is never formed. The
    iteration stops when the residual ||H v_t - lambda_t v_t|| <= tol * |lambda_t|, or after iters
    products. For symmetric H some eigenvalue lies within the residual of lambda_t, and lambda_t's
    error is about residual^2 / gap (gap: to the nearest other eigenvalue). A stop on the change of
    lambda_t instead ends too early while lambda_t creeps up. Still, from a start with little of the
    top eigenvector, v_t can linger near a lower eigenvector with a small residual: on the digits MLPs
    tol = 1e-2 once stopped at 18.0 where lambda_max = 19.7, tol = 1e-3 (the default) found it.
    Another seed is the check.

    Power iteration finds the eigenvalue of largest magnitude. Away from a minimum H has negative
    eigenvalues too; if the one found is negative, a second power iteration on H - lambda I (whose
    eigenvalues are lambda_i - lambda >= 0, largest at lambda_max) finds lambda_max. Gradient
    descent at learning rate lr is stable along the top eigenvector only while lambda_max < 2 / lr
    (`edge_of_stability`).

    start: the first vector instead of a random one (tensors shaped as the model's parameters, e.g. the
    `vector` of the previous call): along a training run the top eigenvector turns slowly, so a warm
    start converges in a few products where a random one needs tens.

    Needs a model whose layers are twice differentiable (torch's BatchNorm is; a custom autograd
    Function marked once_differentiable raises a RuntimeError). train: as in `loss_along_gradient`.
    The model comes back unchanged.
    """
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    objective = _Objective(model, loss_fn, batch)
    with _mode(model, train):
        _, grads, leaves = objective.gradient(objective.theta, create_graph=True)
        # entries of grad L that do not depend on theta (a loss linear in them) have no second derivative
        pairs = [(i, g) for i, g in enumerate(grads) if g.requires_grad]

        def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
            # backward() into the leaves' .grad rather than autograd.grad(inputs=leaves): autograd.grad
            # skips graph nodes with no path to the inputs, and the node a once_differentiable Function
            # leaves in the graph of grad L has none, so its part of H v would silently be dropped;
            # backward() runs it and it raises. The leaves are our own detached tensors, not the model's.
            for p in leaves:
                p.grad = None
            if pairs:
                torch.autograd.backward([g for _, g in pairs], [v[i] for i, _ in pairs], retain_graph=True)
            return [torch.zeros_like(p) if p.grad is None else p.grad for p in leaves]

        if start is None:
            gen = torch.Generator().manual_seed(seed)
            start = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in leaves]
        else:
            start = _check_start(start, leaves)
        history: list[float] = []
        eigenvalue, converged, vector = _power_iteration(hvp, start, 0.0, iters, tol, history)
        if eigenvalue < 0 and len(history) < iters:
            # the dominant eigenvalue is negative: lambda_max - eigenvalue is the dominant one of H - eigenvalue I
            shift = eigenvalue
            eigenvalue, converged, vector = _power_iteration(hvp, start, shift, iters - len(history), tol, history)
    return HessianEigenvalue(eigenvalue=eigenvalue, iterations=len(history), converged=converged, history=history,
                             vector=[t.detach() for t in vector])


def _check_start(start, leaves) -> list[torch.Tensor]:
    if not isinstance(start, (list, tuple)) or len(start) != len(leaves) or not all(
            isinstance(t, torch.Tensor) for t in start):
        raise ValueError(f"start must be a list of {len(leaves)} tensors, one per parameter, got "
                         f"{type(start).__name__} of {len(start) if isinstance(start, (list, tuple)) else '?'}")
    shapes = [(tuple(t.shape), tuple(p.shape)) for t, p in zip(start, leaves) if t.shape != p.shape]
    if shapes:
        raise ValueError(f"start's tensors must have the parameters' shapes; first mismatch: {shapes[0][0]} "
                         f"for a parameter of shape {shapes[0][1]}")
    if _norm(start) == 0 or not math.isfinite(_norm(start)):
        raise ValueError("start must be a finite, non-zero vector")
    return [t.detach().to(dtype=p.dtype, device=p.device) for t, p in zip(start, leaves)]


def _power_iteration(hvp, start, shift: float, iters: int, tol: float, history: list[float]):
    """Power iteration on H - shift I from start; appends each estimate of an eigenvalue of H to history.
    Returns (eigenvalue, converged, the unit vector of the last estimate)."""
    scale = _norm(start)
    v = [t / scale for t in start]
    for _ in range(iters):
        w = [h - shift * t for h, t in zip(hvp(v), v)]
        # the Rayleigh quotient of H - shift I, and the residual of (H - shift I) v = mu v
        mu = sum(float((a * b).sum()) for a, b in zip(v, w))
        history.append(shift + mu)
        residual = _norm([a - mu * b for a, b in zip(w, v)])
        if residual <= tol * abs(shift + mu):
            return shift + mu, True, v
        size = _norm(w)
        if size == 0:
            return shift + mu, True, v
        v = [t / size for t in w]
    return shift + mu, False, v


def edge_of_stability(lr: float) -> float:
    """2 / lr: the sharpness above which gradient descent at learning rate lr diverges on a quadratic.

    On L(x) = lambda x^2 / 2 a step is x <- x - lr lambda x = (1 - lr lambda) x, which shrinks x only
    while |1 - lr lambda| < 1, i.e. lambda < 2 / lr. Cohen et al. (2021) find that full-batch
    gradient descent on neural nets raises lambda_max until it reaches 2 / lr and then hovers there
    (the "edge of stability") while the loss keeps falling, non-monotonically.
    """
    return 2.0 / _check_lr(lr)
