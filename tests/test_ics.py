"""bnlab.ics.internal_covariate_shift: Santurkar et al.'s definition checked in closed form on a
two-layer linear net and against a copy whose lower layers are stepped by hand; the model left
bit-identical."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bnlab.ics import CovariateShift, internal_covariate_shift
from bnlab.models import mlp


def data(n=10, d_in=3, d_out=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d_in, generator=gen, dtype=torch.float64),
            torch.randn(n, d_out, generator=gen, dtype=torch.float64))


def test_two_layer_linear_net_in_closed_form():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)).double()
    x, y = data()
    lr = 0.2
    result = internal_covariate_shift(model, nn.MSELoss(), (x, y), lr)
    # L = |W2 W1 x - y|^2 / (n d): with R = 2 (W2 W1 X^T - Y^T) / (n d),
    # dL/dW2 = R (W1 X^T)^T and dL/dW1 = W2^T R X
    X, Y = x.numpy(), y.numpy()
    W1, W2 = (m.weight.detach().numpy() for m in model)
    scale = 2 / Y.size

    def grads(W1, W2):
        R = scale * (W2 @ W1 @ X.T - Y.T)
        return W2.T @ R @ X, R @ (W1 @ X.T).T

    G1, G2 = grads(W1, W2)
    _, G2_shifted = grads(W1 - lr * G1, W2)     # only W1 is below W2
    change = np.linalg.norm(G2 - G2_shifted)
    assert isinstance(result, CovariateShift) and result.layers == ["0", "1"]
    np.testing.assert_allclose(result.ics, [0.0, change], rtol=1e-12, atol=0)
    np.testing.assert_allclose(result.grad_norm, [np.linalg.norm(G1), np.linalg.norm(G2)], rtol=1e-12)
    np.testing.assert_allclose(result.relative, [0.0, change / np.linalg.norm(G2)], rtol=1e-12)
    cos = (G2 * G2_shifted).sum() / (np.linalg.norm(G2) * np.linalg.norm(G2_shifted))
    np.testing.assert_allclose(result.cosine, [1.0, cos], rtol=1e-12)
    assert change > 0


def ics_by_hand(model, x, y, lr):
    """For each Linear at position i of the Sequential: step every parameter of model[:i] by -lr * grad
    on a copy, and compare the Linear's weight gradient before and after."""
    def weight_grads(net):
        net.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        return [m.weight.grad.clone() for m in net if isinstance(m, nn.Linear)]

    base = copy.deepcopy(model).train()
    before = weight_grads(base)
    positions = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    changes, cosines = [], []
    for layer, i in enumerate(positions):
        twin = copy.deepcopy(base)
        with torch.no_grad():
            for p, p0 in zip(twin[:i].parameters(), base[:i].parameters()):
                p -= lr * p0.grad
        after = weight_grads(twin)[layer]
        changes.append((before[layer] - after).norm().item())
        cosines.append(nn.functional.cosine_similarity(before[layer].flatten(), after.flatten(), dim=0).item())
    return np.array(changes), np.array(cosines)


@pytest.mark.parametrize("norm", [None, "torch_bn"])
def test_matches_lower_layers_stepped_by_hand(norm):
    torch.manual_seed(1)
    model = mlp(5, (6, 6, 6), 3, norm=norm, init="he").double()
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 5, generator=gen, dtype=torch.float64), torch.randint(3, (16,), generator=gen)
    result = internal_covariate_shift(model, nn.CrossEntropyLoss(), (x, y), lr=0.5)
    changes, cosines = ics_by_hand(model, x, y, 0.5)
    np.testing.assert_allclose(result.ics, changes, rtol=1e-10)
    np.testing.assert_allclose(result.cosine, cosines, rtol=1e-10)
    # nothing below the first layer: exactly no shift
    assert result.ics[0] == 0.0 and result.relative[0] == 0.0 and result.cosine[0] == 1.0
    assert (result.ics[1:] > 0).all()


def test_parameters_before_the_first_layer_shift_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm1d(5), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5, generator=gen, dtype=torch.float64), torch.randint(3, (16,), generator=gen)
    result = internal_covariate_shift(model, nn.CrossEntropyLoss(), (x, y), lr=0.5)
    changes, _ = ics_by_hand(model, x, y, 0.5)
    assert result.layers == ["1", "3"] and result.ics[0] > 0
    np.testing.assert_allclose(result.ics, changes, rtol=1e-10)


def test_model_comes_back_bit_identical():
    torch.manual_seed(0)
    model = mlp(5, (6, 6), 3, norm="torch_bn", init="he").double()
    model[1].momentum = None
    model[4].eval()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 5, generator=gen, dtype=torch.float64), torch.randint(3, (16,), generator=gen)
    nn.functional.cross_entropy(model(x), y).backward()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    internal_covariate_shift(model, nn.CrossEntropyLoss(), (x, y), lr=0.5)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert [m.training for m in model.modules()] == modes


def test_bad_input_is_named():
    x, y = data()
    with pytest.raises(ValueError, match="Linear"):
        internal_covariate_shift(nn.Sequential(nn.BatchNorm1d(3)).double(), nn.MSELoss(), (x, x), 0.1)
    with pytest.raises(ValueError, match="lr"):
        internal_covariate_shift(nn.Linear(3, 2).double(), nn.MSELoss(), (x, y), -0.1)
    with pytest.raises(ValueError, match="targets"):
        internal_covariate_shift(nn.Linear(3, 2).double(), nn.MSELoss(), (x, y[:4]), 0.1)
