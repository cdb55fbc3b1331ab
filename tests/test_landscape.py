"""bnlab.landscape: the loss and gradient along the gradient and the top Hessian eigenvalue, checked
against a copy of the model stepped by hand, closed forms on least squares, and the exact Hessian
(torch.autograd.functional.hessian); and the model left bit-identical."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from bnlab.landscape import GradientPath, edge_of_stability, loss_along_gradient, top_hessian_eigenvalue
from bnlab.models import mlp


def small_mlp(norm, seed=0, in_features=3, hidden=(4,), out_features=3):
    torch.manual_seed(seed)
    return mlp(in_features, hidden, out_features, norm=norm, init="he").double()


def batch(n=12, in_features=3, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, in_features, generator=gen, dtype=torch.float64), torch.randint(classes, (n,), generator=gen)


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            [m.training for m in model.modules()])


def assert_unchanged(model, before):
    state, grads, modes = snapshot(model)
    assert state.keys() == before[0].keys()
    for key in state:
        assert torch.equal(state[key], before[0][key]), key
    for g, g0 in zip(grads, before[1]):
        assert (g is None and g0 is None) or torch.equal(g, g0)
    assert modes == before[2]


def gradient_by_hand(model, x, y):
    """(loss, flat gradient) of a training-mode copy of model, with .backward()."""
    twin = copy.deepcopy(model).train()
    loss = nn.functional.cross_entropy(twin(x), y)
    loss.backward()
    return loss.item(), torch.cat([p.grad.reshape(-1) for p in twin.parameters()])


@pytest.mark.parametrize("norm", [None, "torch_bn"])
def test_losses_and_gradient_changes_match_a_copy_stepped_by_hand(norm):
    model = small_mlp(norm)
    x, y = batch()
    lr, ks = 0.3, [0.5, 1.0, 2.5, 4.0]
    path = loss_along_gradient(model, nn.CrossEntropyLoss(), (x, y), lr, ks=ks)
    loss0, g = gradient_by_hand(model, x, y)
    losses, changes = [], []
    for k in ks:
        twin = copy.deepcopy(model)
        with torch.no_grad():
            offset = 0
            for p in twin.parameters():
                p -= k * lr * g[offset:offset + p.numel()].view_as(p)
                offset += p.numel()
        loss_k, g_k = gradient_by_hand(twin, x, y)
        losses.append(loss_k)
        changes.append((g_k - g).norm().item())
    losses, changes = np.array(losses), np.array(changes)
    assert isinstance(path, GradientPath)
    np.testing.assert_array_equal(path.ks, ks)
    np.testing.assert_allclose(path.losses, losses, rtol=1e-12)
    np.testing.assert_allclose(path.gradient_changes, changes, rtol=1e-10)
    assert path.loss == pytest.approx(loss0, rel=1e-12) and path.grad_norm == pytest.approx(g.norm().item())
    assert path.loss_range == pytest.approx(losses.max() - losses.min())
    assert path.gradient_change == pytest.approx(changes.max())
    assert path.beta_smoothness == pytest.approx((changes / (np.array(ks) * lr * g.norm().item())).max())


def least_squares(n=20, d=4, seed=0):
    """A linear model and MSE loss L(w) = |X w - y|^2 / n: gradient 2 X^T (X w - y) / n, Hessian 2 X^T X / n."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    y = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    return model, (x, y), 2 * x.T @ x / n


def test_along_the_gradient_of_a_quadratic_the_gradient_changes_linearly():
    model, (x, y), hessian = least_squares()
    lr, ks = 0.1, np.linspace(0.5, 4, 8)
    path = loss_along_gradient(model, nn.MSELoss(), (x, y), lr, ks=ks)
    w = model.weight.detach().T
    g = 2 * x.T @ (x @ w - y) / len(x)
    # grad L(w - k lr g) - g = -k lr H g, so ||.|| / ||k lr g|| = ||H g|| / ||g|| at every k
    np.testing.assert_allclose(path.gradient_changes, ks * lr * (hessian @ g).norm().item(), rtol=1e-10)
    assert path.beta_smoothness == pytest.approx(((hessian @ g).norm() / g.norm()).item(), rel=1e-10)
    expected = [((x @ (w - k * lr * g) - y).square().mean()).item() for k in ks]
    np.testing.assert_allclose(path.losses, expected, rtol=1e-12)


def test_a_bn_model_in_training_mode_comes_back_bit_identical():
    model = mlp(3, (4, 4), 3, norm="torch_bn", init="he").double()
    model[1].momentum = None            # cumulative average: num_batches_tracked matters too
    model[4].eval()                     # one BN in eval mode, the rest in training mode
    x, y = batch()
    nn.functional.cross_entropy(model(x), y).backward()   # .grad set, running statistics moved
    before = snapshot(model)
    path = loss_along_gradient(model, nn.CrossEntropyLoss(), (x, y), 0.5)
    assert_unchanged(model, before)
    top_hessian_eigenvalue(model, nn.CrossEntropyLoss(), (x, y), iters=5)
    assert_unchanged(model, before)
    assert path.losses.shape == (8,) and path.ks[0] == 0.5 and path.ks[-1] == 4.0


def exact_hessian(model, loss_fn, x, y):
    """The Hessian of loss_fn(model(x), y) over all parameters, flattened, by torch.autograd.functional."""
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    buffers = dict(model.named_buffers())

    def loss(theta):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = theta[offset:offset + shape.numel()].view(shape)
            offset += shape.numel()
        copies = {name: b.clone() for name, b in buffers.items()}
        return loss_fn(functional_call(model, {**copies, **params}, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


@pytest.mark.parametrize("norm", [None, "torch_bn"])
def test_top_eigenvalue_is_the_exact_hessians(norm):
    model = small_mlp(norm, hidden=(4, 4)).train()
    x, y = batch()
    exact = torch.linalg.eigvalsh(exact_hessian(model, nn.functional.cross_entropy, x, y))
    result = top_hessian_eigenvalue(model, nn.CrossEntropyLoss(), (x, y), iters=2000, tol=1e-10)
    assert result.converged and result.iterations == len(result.history) <= 2000
    assert result.eigenvalue == pytest.approx(exact.max().item(), rel=1e-8)
    assert exact.min() < 0         # away from a minimum: the top eigenvalue is not the only one that matters


def test_a_dominant_negative_eigenvalue_is_not_mistaken_for_the_top_one():
    class Point(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))

        def forward(self, x):
            return self.w

    a = torch.diag(torch.tensor([-5.0, 2.0, 0.5], dtype=torch.float64))
    result = top_hessian_eigenvalue(Point(), lambda w, _: 0.5 * w @ a @ w, (torch.zeros(1), torch.zeros(1)),
                                    iters=1000, tol=1e-10)
    assert result.converged and result.eigenvalue == pytest.approx(2.0, rel=1e-9)
    assert result.history[0] != pytest.approx(2.0)


def test_top_eigenvalue_of_least_squares_is_that_of_2_xtx_over_n():
    model, data, hessian = least_squares()
    result = top_hessian_eigenvalue(model, nn.MSELoss(), data, iters=500, tol=1e-10, seed=3)
    assert result.eigenvalue == pytest.approx(torch.linalg.eigvalsh(hessian).max().item(), rel=1e-9)


def test_the_returned_vector_is_the_top_eigenvector_and_a_warm_start_from_it_converges_at_once():
    model, data, hessian = least_squares()
    eigenvalues, eigenvectors = torch.linalg.eigh(hessian)
    cold = top_hessian_eigenvalue(model, nn.MSELoss(), data, iters=500, tol=1e-10, seed=3)
    flat = torch.cat([t.reshape(-1) for t in cold.vector])
    assert flat.norm().item() == pytest.approx(1.0, rel=1e-12)
    assert abs(flat @ eigenvectors[:, -1]).item() == pytest.approx(1.0, rel=1e-8)
    warm = top_hessian_eigenvalue(model, nn.MSELoss(), data, iters=500, tol=1e-8, start=cold.vector)
    assert warm.iterations <= 2 < cold.iterations
    assert warm.eigenvalue == pytest.approx(eigenvalues[-1].item(), rel=1e-9)


def test_a_bad_start_is_refused():
    model, data, _ = least_squares()
    shapes = [p.shape for p in model.parameters()]
    for start, match in (([torch.zeros(s, dtype=torch.float64) for s in shapes], "non-zero"),
                         ([torch.ones(1, 4, dtype=torch.float64)] * 2, "list of"),
                         ([torch.ones(*s, 2, dtype=torch.float64) for s in shapes], "shapes")):
        with pytest.raises(ValueError, match=match):
            top_hessian_eigenvalue(model, nn.MSELoss(), data, start=start)


def test_top_eigenvalue_through_bnlabs_batchnorm_is_torchs():
    # bnlab.batch_norm is twice differentiable: its Hessian-vector products are torch BN's
    x, y = batch()
    ours, theirs = small_mlp("bn"), small_mlp("torch_bn")
    theirs.load_state_dict(ours.state_dict())
    kwargs = dict(iters=2000, tol=1e-10)
    expected = top_hessian_eigenvalue(theirs, nn.CrossEntropyLoss(), (x, y), **kwargs).eigenvalue
    assert top_hessian_eigenvalue(ours, nn.CrossEntropyLoss(), (x, y), **kwargs).eigenvalue == pytest.approx(
        expected, rel=1e-8)


def test_edge_of_stability_is_where_gradient_descent_on_a_quadratic_turns_unstable():
    lr = 0.25
    assert edge_of_stability(lr) == 8.0
    for sharpness, grows in ((0.99 * 8.0, False), (1.01 * 8.0, True)):
        x = 1.0
        for _ in range(500):
            x -= lr * sharpness * x          # gradient descent on sharpness * x^2 / 2
        assert (abs(x) > 1.0) == grows


@pytest.mark.parametrize("call, message", [
    (lambda m, b: loss_along_gradient(m, nn.CrossEntropyLoss(), b, lr=0), "lr"),
    (lambda m, b: loss_along_gradient(m, nn.CrossEntropyLoss(), b, lr=float("nan")), "lr"),
    (lambda m, b: loss_along_gradient(m, nn.CrossEntropyLoss(), b, lr=0.1, ks=[]), "ks"),
    (lambda m, b: loss_along_gradient(m, nn.CrossEntropyLoss(), b, lr=0.1, ks=[1.0, -1.0]), "ks"),
    (lambda m, b: loss_along_gradient(m, nn.CrossEntropyLoss(), b[0], lr=0.1), "pair"),
    (lambda m, b: loss_along_gradient(m, nn.CrossEntropyLoss(), (b[0], b[1][:3]), lr=0.1), "targets"),
    (lambda m, b: loss_along_gradient(m, nn.CrossEntropyLoss(reduction="none"), b, lr=0.1), "scalar"),
    (lambda m, b: top_hessian_eigenvalue(m, nn.CrossEntropyLoss(), b, iters=0), "iters"),
    (lambda m, b: top_hessian_eigenvalue(m, nn.CrossEntropyLoss(), b, tol=-1.0), "tol"),
    (lambda m, b: top_hessian_eigenvalue(m.requires_grad_(False), nn.CrossEntropyLoss(), b), "requires_grad"),
    (lambda m, b: edge_of_stability(-0.1), "lr"),
])
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(small_mlp(None), batch())
