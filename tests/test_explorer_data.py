"""The explorers' data, computed in bnlab.experiments and bnlab.data rather than in the widgets:
final_results, ramp_lag, gradient_flow_table and base_sample; and that bnlab.widgets still offers
them under their old names. Expected values are derived here, by hand or by a second computation."""

import numpy as np
import pytest
import torch

import bnlab.data
import bnlab.experiments
import bnlab.widgets
from bnlab.data import base_sample
from bnlab.experiments import deep_mlp, final_results, gradient_flow_table, ramp_lag, weight_grad_norms
from bnlab.train import History

pytestmark = pytest.mark.usefixtures("one_thread")


def test_widgets_reexport_the_moved_names():
    assert bnlab.widgets.base_sample is bnlab.data.base_sample
    assert bnlab.widgets.final_results is bnlab.experiments.final_results
    assert bnlab.widgets.ramp_lag is bnlab.experiments.ramp_lag
    assert {"final_results", "ramp_lag", "gradient_flow_table"} <= set(bnlab.experiments.__all__)
    assert "base_sample" in bnlab.data.__all__


def fake(final, metrics=None):
    return History(loss=[1.0], eval_steps=[0, 5], test_accuracy=[0.1, final], metrics=metrics or {})


def test_final_results_groups_seeds_and_refuses_bad_keys_and_metrics():
    runs = {("bn", 0.1, 0): fake(0.8), ("bn", 0.1, 1): fake(0.7), (None, 1.0, 0): fake(0.3)}
    assert final_results(runs) == {"bn": {0.1: [0.8, 0.7]}, None: {1.0: [0.3]}}
    assert final_results({("gn", 2): fake(0.5, {"iou": [0.0, 0.25]})}, metric="iou") == {"gn": {2: [0.25]}}
    with pytest.raises(ValueError, match="keyed"):
        final_results({"bn": fake(0.5)})
    with pytest.raises(ValueError, match="no metric 'iou'"):
        final_results({("bn", 1): fake(0.5)}, metric="iou")


def test_ramp_lag_is_the_mean_gap_over_the_last_steps():
    true = np.arange(10.0)
    running = true - np.r_[np.zeros(5), np.full(5, 2.0)]
    assert ramp_lag(true, running, last=5) == pytest.approx(2.0)
    assert ramp_lag(true, running, last=10) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes"):
        ramp_lag(true, running[:5])
    with pytest.raises(ValueError, match="last"):
        ramp_lag(true, running, last=0)


def test_gradient_flow_table_is_weight_grad_norms_of_each_seeded_net():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=g), torch.arange(16) % 3
    table = gradient_flow_table(x, y, depths=(2, 3), activations=("relu", "tanh"), inits=("he", "default"),
                                seed=5, width=8)
    assert set(table) == {(n, d, a, i) for n in (None, "bn") for d in (2, 3) for a in ("relu", "tanh")
                          for i in ("he", "default")}
    for (norm, depth, activation, init), norms in table.items():
        assert norms.shape == (depth,)
        torch.manual_seed(5)
        model = deep_mlp(depth, 8, activation, norm, None if init == "default" else init, in_features=6,
                         out_features=3)
        np.testing.assert_array_equal(norms, weight_grad_norms(model, x, y))
    wider = gradient_flow_table(x, y, depths=(2,), activations=("relu",), inits=("he",), width=8, num_classes=5, seed=5)
    assert not np.array_equal(wider[(None, 2, "relu", "he")], table[(None, 2, "relu", "he")])  # a 5-way head
    with pytest.raises(ValueError, match="shapes"):
        gradient_flow_table(x[:, 0], y)
    with pytest.raises(ValueError, match="at least one value"):
        gradient_flow_table(x, y, depths=())


def test_base_sample_standardized_per_shape_and_seeded():
    for shape in bnlab.data.BASE_SHAPES:
        z = base_sample(shape, 400, seed=1)
        assert z.shape == (400,) and abs(z.mean()) < 1e-12 and z.std() == pytest.approx(1.0)
        np.testing.assert_array_equal(z, base_sample(shape, 400, seed=1))
        assert not np.array_equal(z, base_sample(shape, 400, seed=2))
    def skew(z):
        return float(np.mean(z ** 3))
    assert skew(base_sample("skewed", 2000)) > 1.0 and abs(skew(base_sample("normal", 2000))) < 0.3
    # bimodal: few values near the middle, between the two modes at about +-1
    assert np.mean(np.abs(base_sample("bimodal", 2000)) < 0.3) < 0.05
    with pytest.raises(ValueError, match="shape"):
        base_sample("uniform")
    with pytest.raises(ValueError, match="n must be"):
        base_sample("normal", 1)
