"""Lesson 10's experiments on small shapes: where dropout sits, BN input variances against a direct
computation, the training loop, the grid's bookkeeping."""

import pytest
import torch
from torch import nn

from bnlab.data import Split
from bnlab.experiments import (
    bn_input_variances,
    dropout_bn_mlp,
    fit,
    regularization_grid,
    regularization_run,
    subset,
    variance_shift_run,
)
from bnlab.layers import GhostBatchNorm1d


def tiny(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long()
    return Split(x[:80], y[:80], x[80:], y[80:])


def test_dropout_placement():
    def kinds(m):
        return [type(layer).__name__ for layer in m]
    assert kinds(dropout_bn_mlp(None, hidden=(4, 4, 4))).count("Dropout") == 0
    before = kinds(dropout_bn_mlp("before_bn", hidden=(4, 4, 4)))
    # each dropout is followed (after the next Linear) by a BN
    assert [before[i + 2] for i, k in enumerate(before) if k == "Dropout"] == ["BatchNorm1d", "BatchNorm1d"]
    after = kinds(dropout_bn_mlp("after_bn", hidden=(4, 4, 4)))
    assert after.count("Dropout") == 1 and after[-2] == "Dropout"
    with pytest.raises(ValueError, match="dropout must be"):
        dropout_bn_mlp("middle")


def test_bn_input_variances_are_those_of_the_eval_pass():
    torch.manual_seed(0)
    model = dropout_bn_mlp("before_bn", hidden=(6, 5), in_features=3, out_features=2).train()
    x = torch.randn(40, 3)
    v = bn_input_variances(model, x)
    assert model.training
    model.eval()
    h1 = model[0](x)
    h2 = model[4](model[3](model[2](model[1](h1))))     # Linear, BN, ReLU, Dropout(eval), Linear
    torch.testing.assert_close(v[0], h1.var(0, unbiased=False))
    torch.testing.assert_close(v[1], h2.detach().var(0, unbiased=False))


def test_fit_is_seeded_and_rejects_bad_batch():
    data = tiny()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(8, 2))
        runs.append(fit(m, data.x_train, data.y_train, steps=5, batch_size=16, lr=0.1, seed=3))
    assert runs[0] == runs[1] and len(runs[0]) == 5
    with pytest.raises(ValueError, match="batch_size"):
        fit(m, data.x_train, data.y_train, steps=1, batch_size=81, lr=0.1)


def test_variance_shift_run_and_grid_on_a_tiny_split():
    data = tiny(400)
    r = variance_shift_run("before_bn", steps=20, data=Split(data.x_train, data.y_train, data.x_test, data.y_test))
    assert r.ratio.shape == (2,) and r.recomputed.shape == (2,)
    grid = regularization_grid(batch_sizes=(8, 80), dropouts=(0.0,), weight_decays=(0.0,), seeds=(0,), data=data,
                               steps=5, progress=False)
    assert set(grid) == {(8, 0.0, 0.0, 0), (80, 0.0, 0.0, 0)}
    assert 0 <= grid[8, 0.0, 0.0, 0].train_accuracy <= 1
    assert regularization_run(8, data=data, steps=3, norm="gbn", virtual_batch_size=4).batch_size == 8
    assert len(subset(data, 10).x_train) == 10
    with pytest.raises(ValueError, match="n must be"):
        subset(data, 0)


def test_ghost_bn_is_bn_per_chunk():
    x = torch.randn(12, 5, dtype=torch.float64)
    gbn = GhostBatchNorm1d(5, virtual_batch_size=4).double().train()
    expected = torch.cat([nn.functional.batch_norm(c, None, None, training=True, eps=gbn.eps) for c in x.split(4)])
    torch.testing.assert_close(gbn(x), expected)


def test_example_weighting_run_records_batch_one_accuracies_and_alpha_zero_is_eval():
    from bnlab.data import digits
    from bnlab.experiments import example_weighting_run
    from bnlab.layers import example_weighting
    from bnlab.train import accuracy

    torch.set_num_threads(1)
    run = example_weighting_run(seed=0, alphas=(0.0, 0.5))
    clean = digits(images=True)
    assert run.at("clean", 0.0) == accuracy(run.model, clean.x_test, clean.y_test)
    # batch 1 really: the first 20 scans one at a time give the whole-set predictions
    x = clean.x_test[:20]
    with torch.no_grad(), example_weighting(run.model, 0.5):
        whole = run.model(x).argmax(1)
        single = torch.cat([run.model(x[i:i + 1]) for i in range(len(x))]).argmax(1)
    assert torch.equal(whole, single)
    assert set(run.accuracy) == {"clean", "varied"} and all(len(v) == 2 for v in run.accuracy.values())
    with pytest.raises(ValueError, match="alpha must be one of"):
        run.at("clean", 0.3)
