"""bnlab.recurrent: the plain LSTM equals torch.nn.LSTM (outputs, states, gradients, packed
sequences); BN-, BN-input- and LN-LSTMs equal a reference written here from torch.nn.functional's
batch_norm and layer_norm; gradcheck; BN's statistics really are per step; steps beyond
max_steps; batch one; LN's independence of the batch; masking of padded batches; the
measurements and the training helpers."""

from __future__ import annotations

import math

import pytest
import torch
from bn_testing import assert_close, max_err
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bnlab import recurrent as R

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
TOL = 1e-12  # float64, values O(1)


def randn(*shape, seed=0, dtype=F64, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def randomize(model, seed=1):
    """Weights, gammas and betas away from their initial values (gamma 0.1, beta 0 would hide
    mistakes in which of them is used where)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if name.endswith("norm_c.weight")
                                                                                else 0.0))
    return model


# ============================================================================= plain LSTM = torch's
def torch_pair(input_size=3, hidden_size=5, bias=True, batch_first=True, dtype=F64, seed=0):
    torch.manual_seed(seed)
    theirs = nn.LSTM(input_size, hidden_size, bias=bias, batch_first=batch_first, dtype=dtype)
    return R.LSTM.from_torch(theirs), theirs


def outputs_and_grads(model, x, hx=None, lengths=None, packed=False):
    x = x.clone().requires_grad_(True)
    hx = None if hx is None else tuple(t.clone().requires_grad_(True) for t in hx)
    if packed:
        out, (h, c) = model(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), hx)
        out = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
    elif lengths is not None:
        out, (h, c) = model(x, hx, lengths=lengths)
    else:
        out, (h, c) = model(x, hx)
    g = torch.Generator().manual_seed(9)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out, h, c))
    loss.backward()
    grads = [x.grad] + ([t.grad for t in hx] if hx is not None else [])
    grads += [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return [out.detach(), h.detach(), c.detach()], grads


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("bias, batch_first, with_hx", [(True, True, False), (True, False, True),
                                                        (False, True, True)],
                         ids=["default", "time-first-hx", "no-bias-hx"])
def test_plain_lstm_equals_torch(dtype, bias, batch_first, with_hx):
    ours, theirs = torch_pair(bias=bias, batch_first=batch_first, dtype=dtype)
    x = randn(4, 7, 3, dtype=dtype) if batch_first else randn(7, 4, 3, dtype=dtype)
    hx = (randn(1, 4, 5, seed=2, dtype=dtype), randn(1, 4, 5, seed=3, dtype=dtype)) if with_hx else None
    values, grads = outputs_and_grads(ours, x, hx)
    ref_values, ref_grads = outputs_and_grads(theirs, x, hx)
    for name, a, b in zip(("output", "h_n", "c_n"), values, ref_values):
        assert_close(a, b, dtype, name)
    names = ["x"] + (["h0", "c0"] if with_hx else []) + [n for n, _ in theirs.named_parameters()]
    assert len(grads) == len(ref_grads) == len(names)
    for name, a, b in zip(names, grads, ref_grads):
        assert_close(a, b, dtype, f"grad {name}")


def test_plain_lstm_unbatched_input_equals_torch():
    ours, theirs = torch_pair()
    x = randn(6, 3)
    out, (h, c) = ours(x)
    ref_out, (ref_h, ref_c) = theirs(x)
    for a, b in ((out, ref_out), (h, ref_h), (c, ref_c)):
        assert a.shape == b.shape and max_err(a, b) <= TOL


def test_same_seed_same_initial_weights_as_torch_and_state_dicts_load_both_ways():
    torch.manual_seed(4)
    theirs = nn.LSTM(3, 5)
    torch.manual_seed(4)
    ours = R.LSTM(3, 5)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
    back = ours.to_torch()
    assert isinstance(back, nn.LSTM) and back.batch_first
    x = randn(2, 4, 3, dtype=torch.float32)
    assert max_err(back(x)[0], ours(x)[0]) <= 1e-6


def test_lstm_cell_equals_torch():
    torch.manual_seed(0)
    theirs = nn.LSTMCell(3, 4, dtype=F64)
    torch.manual_seed(0)
    ours = R.LSTMCell(3, 4, dtype=F64)
    x, h, c = randn(5, 3), randn(5, 4, seed=1), randn(5, 4, seed=2)
    for args in ((x,), (x, (h, c)), (x[0], (h[0], c[0]))):
        for a, b in zip(ours(*args), theirs(*args)):
            assert a.shape == b.shape and max_err(a, b) <= TOL


def test_lengths_equal_torch_packed_sequences():
    ours, theirs = torch_pair()
    x, lengths = randn(5, 6, 3), torch.tensor([6, 2, 4, 6, 1])
    values, grads = outputs_and_grads(ours, x, lengths=lengths)
    ref_values, ref_grads = outputs_and_grads(theirs, x, lengths=lengths, packed=True)
    for name, a, b in zip(("output", "h_n", "c_n"), values + grads, ref_values + ref_grads):
        assert_close(a, b, F64, name)


# ============================================================================= references
def reference_lstm(model, x, stats=None, lengths=None):
    """The normalized LSTM from torch.nn.functional, step by step, batch-first x (N, T, I).

    stats: for norm='bn', {(path, k): [running_mean, running_var]} copies that F.batch_norm
    uses (eval) or updates (training), k = min(t, max_steps - 1). lengths: sequence i runs steps
    0..lengths[i] - 1, and every statistic at step t is over the running sequences only."""
    N, T, _ = x.shape
    H, training, norm = model.hidden_size, model.training, model.norm
    h, c = x.new_zeros(N, H), x.new_zeros(N, H)
    lengths = torch.full((N,), T) if lengths is None else lengths
    b = model.bias_ih_l0 + model.bias_hh_l0
    outputs = x.new_zeros(N, T, H)

    def bn(path, value, t):
        module = getattr(model, f"norm_{path}")
        k = min(t, model.max_steps - 1)
        mean, var = stats[path, k]
        return F.batch_norm(value, mean, var, module.weight, module.bias, training, model.momentum, model.eps)

    a_x_all = x @ model.weight_ih_l0.T
    if norm == "bn_input":
        valid = torch.arange(T) < lengths[:, None]
        normed = F.batch_norm(a_x_all[valid], *stats["ih", 0], model.norm_ih.weight, None, training,
                              model.momentum, model.eps)
        a_x_all = a_x_all.clone()
        a_x_all[valid] = normed
    for t in range(T):
        run = lengths > t
        if not run.any():
            continue
        a_x, a_h = a_x_all[run, t], h[run] @ model.weight_hh_l0.T
        if norm == "bn":
            a = bn("ih", a_x, t) + bn("hh", a_h, t) + b
        elif norm == "ln":
            a = (F.layer_norm(a_x, (4 * H,), model.norm_ih.weight, None, model.eps)
                 + F.layer_norm(a_h, (4 * H,), model.norm_hh.weight, None, model.eps) + b)
        else:
            a = a_x + a_h + b
        i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        c_run = torch.sigmoid(f) * c[run] + torch.sigmoid(i) * torch.tanh(g)
        if norm == "bn":
            cell = bn("c", c_run, t)
        elif norm == "ln":
            cell = F.layer_norm(c_run, (H,), model.norm_c.weight, model.norm_c.bias, model.eps)
        else:
            cell = c_run
        h_run = torch.sigmoid(o) * torch.tanh(cell)
        h, c = h.clone(), c.clone()
        h[run], c[run] = h_run, c_run
        outputs[run, t] = h_run
    return outputs, h, c


def running_copies(model):
    """{(path, k): [running_mean, running_var]} copies of a normalized LSTM's running statistics."""
    if model.norm == "bn_input":
        return {("ih", 0): [model.norm_ih.running_mean.clone(), model.norm_ih.running_var.clone()]}
    return {(path, k): [step.running_mean.clone(), step.running_var.clone()]
            for path in ("ih", "hh", "c") for k, step in enumerate(getattr(model, f"norm_{path}").steps)}


def assert_running_equal(model, stats):
    for key, (mean, var) in stats.items():
        module = model.norm_ih if model.norm == "bn_input" else getattr(model, f"norm_{key[0]}").steps[key[1]]
        assert max_err(module.running_mean, mean) <= TOL and max_err(module.running_var, var) <= TOL, key


def time_varying(N=6, T=5, features=3, seed=0):
    """Inputs whose scale and mean grow with the step: x_t ~ (t + 1) * N(0, 1) + t."""
    t = torch.arange(T, dtype=F64)[None, :, None]
    return randn(N, T, features, seed=seed) * (t + 1) + t


def model_for(norm, max_steps=5, seed=1, **kwargs):
    return randomize(R.LSTM(3, 4, norm=norm, max_steps=max_steps, dtype=F64, **kwargs), seed)


@pytest.mark.parametrize("norm", ["bn", "bn_input", "ln"])
def test_normalized_lstm_equals_reference_in_training_then_eval(norm):
    model = model_for(norm)
    x = time_varying()
    for training in (True, False):
        model.train(training)
        stats = running_copies(model) if norm != "ln" else None
        out, (h, c) = model(x)
        ref_out, ref_h, ref_c = reference_lstm(model, x, stats)
        for name, a, b in (("output", out, ref_out), ("h_n", h[0], ref_h), ("c_n", c[0], ref_c)):
            assert max_err(a, b) <= TOL, f"{norm} training={training}: {name} differs by {max_err(a, b):.3g}"
        if stats is not None:
            assert_running_equal(model, stats)


def test_bn_lstm_default_initialization_follows_the_paper():
    model = R.LSTM(3, 4, norm="bn", max_steps=5)
    assert torch.all(model.norm_ih.weight == 0.1) and torch.all(model.norm_hh.weight == 0.1)
    assert torch.all(model.norm_c.weight == 0.1) and torch.all(model.norm_c.bias == 0)
    assert model.norm_ih.bias is None and model.norm_hh.bias is None
    assert len(model.norm_ih.steps) == 5
    # each step's statistics load into torch's BN, which then normalizes as that step does in eval
    step = model.norm_hh.steps[2]
    step.running_mean.copy_(randn(16, dtype=torch.float32))
    step.running_var.copy_(randn(16, seed=1, dtype=torch.float32).abs() + 0.5)
    theirs = nn.BatchNorm1d(16, affine=False)
    theirs.load_state_dict(step.state_dict())
    v = randn(3, 16, seed=2, dtype=torch.float32)
    model.eval()
    assert max_err(model.norm_hh(v, 2), 0.1 * theirs.eval()(v)) <= 1e-6


# ============================================================================= gradients
@pytest.mark.parametrize("norm, with_lengths", [("bn", False), ("bn", True), ("bn_input", True), ("ln", False)])
def test_gradcheck(norm, with_lengths):
    """Finite differences in float64, training mode, with respect to the input, h_0, c_0 and every parameter."""
    model = model_for(norm, max_steps=3)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    x = randn(4, 3, 3, seed=5).requires_grad_(True)
    h0, c0 = randn(1, 4, 4, seed=6).requires_grad_(True), randn(1, 4, 4, seed=7).requires_grad_(True)
    lengths = torch.tensor([3, 3, 2, 3]) if with_lengths else None

    def fn(x, h0, c0, *params):
        out, (h, c) = functional_call(model, dict(zip(names, params)), (x, (h0, c0)), {"lengths": lengths})
        return out, h, c

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


# ============================================================================= per-step statistics
def test_bn_running_statistics_are_per_step_and_eval_uses_its_own_step():
    model = R.LSTM(3, 4, norm="bn", max_steps=5, momentum=None, dtype=F64)
    x = time_varying(N=64)
    model(x)
    # one training pass with momentum=None: steps[t] holds the unbiased variance of W_ih x_t itself
    for t in range(5):
        expected = (x[:, t] @ model.weight_ih_l0.T.detach()).var(0, unbiased=True)
        assert max_err(model.norm_ih.steps[t].running_var, expected) <= 1e-10
    variances = [float(step.running_var.mean()) for step in model.norm_ih.steps]
    # scale (t + 1): variance ~ (t + 1)^2, far from one shared value
    assert variances[4] > 10 * variances[0]
    # in eval, changing step 3's statistics changes the outputs from step 3 on, not before
    model.eval()
    before = model(x)[0]
    model.norm_hh.steps[3].running_mean.add_(1.0)
    after = model(x)[0]
    assert max_err(after[:, :3], before[:, :3]) == 0
    assert max_err(after[:, 3], before[:, 3]) > 1e-3


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_beyond_last_uses_the_last_step(training):
    model = model_for("bn", max_steps=3)
    x = time_varying(T=6)
    model(time_varying(T=3, seed=1))                  # steps 0, 1, 2 with statistics of their own
    model.train(training)
    stats = running_copies(model)
    tracked = int(model.norm_ih.steps[-1].num_batches_tracked)
    out, (h, c) = model(x)
    ref_out, ref_h, _ = reference_lstm(model, x, stats)
    assert max_err(out, ref_out) <= TOL and max_err(h[0], ref_h) <= TOL
    # in training the last BN takes steps 2, 3, 4, 5 into its running statistics, one update each
    assert_running_equal(model, stats)
    assert int(model.norm_ih.steps[-1].num_batches_tracked) == tracked + (4 if training else 0)


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_beyond_none_refuses_longer_sequences_and_changes_nothing(training):
    model = model_for("bn", max_steps=3, beyond="none").train(training)
    stats = running_copies(model)
    with pytest.raises(ValueError, match="max_steps=3"):
        model(time_varying(T=4))
    assert_running_equal(model, stats)
    model(time_varying(T=3))
    # padded to 4 steps, but no sequence is longer than 3
    model(time_varying(T=4), lengths=torch.tensor([3, 2, 3, 1, 3, 3]))
    model.beyond = "last"
    assert model.norm_c.beyond == "last"
    model(time_varying(T=4))


def test_batch_of_one_in_training_bn_refuses_ln_works():
    x = time_varying(N=1)
    model = model_for("bn")
    stats = running_copies(model)
    with pytest.raises(ValueError, match="a batch of one"):
        model(x)
    assert_running_equal(model, stats)
    model.eval()
    model(x)                                           # running statistics: any batch size
    model_for("ln")(x)
    model_for("bn_input")(x)                           # statistics over time: 5 steps of one sequence
    with pytest.raises(ValueError, match="bn_input"):
        model_for("bn_input")(x[:, :1])


def test_bn_refuses_a_step_where_one_padded_sequence_runs_alone():
    model = model_for("bn")
    with pytest.raises(ValueError, match="at step 4 only 1"):
        model(time_varying(N=3), lengths=torch.tensor([5, 3, 4]))


@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_ln_output_of_an_example_does_not_depend_on_the_batch(training):
    model = model_for("ln").train(training)
    x = time_varying(N=6)
    together = model(x)[0]
    for i in range(len(x)):
        assert max_err(model(x[i:i + 1])[0][0], together[i]) <= TOL
    bn = model_for("bn")
    assert max_err(bn(x[:3])[0][0], bn(x)[0][0]) > 1e-3     # BN's does, in training


# ============================================================================= masking
@pytest.mark.parametrize("norm", [None, "bn", "bn_input", "ln"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_padding_content_does_not_matter_with_lengths(norm, training):
    lengths = torch.tensor([5, 3, 5, 2, 3, 5])
    x = time_varying(N=6)
    valid = (torch.arange(5) < lengths[:, None])[:, :, None]
    garbage = torch.where(valid, x, randn(*x.shape, seed=3, scale=1e3))
    results = []
    for inputs in (x * valid, garbage):
        model = model_for(norm).train(training)
        out, (h, c) = model(inputs, lengths=lengths)
        results.append((out, h, c, running_copies(model) if norm in ("bn", "bn_input") else {}))
    (out, h, c, stats), (out2, h2, c2, stats2) = results
    assert max_err(out, out2) <= TOL and max_err(h, h2) <= TOL and max_err(c, c2) <= TOL
    assert torch.all(out[~valid.expand_as(out)] == 0)
    for key in stats:
        assert max_err(stats[key][0], stats2[key][0]) <= TOL and max_err(stats[key][1], stats2[key][1]) <= TOL


@pytest.mark.parametrize("norm", ["bn", "bn_input"])
def test_masked_statistics_equal_the_reference_over_running_sequences(norm):
    model = model_for(norm)
    x, lengths = time_varying(N=6), torch.tensor([5, 3, 5, 2, 3, 5])
    stats = running_copies(model)
    out, (h, c) = model(x, lengths=lengths)
    ref_out, ref_h, ref_c = reference_lstm(model, x, stats, lengths)
    assert max_err(out, ref_out) <= TOL and max_err(h[0], ref_h) <= TOL and max_err(c[0], ref_c) <= TOL
    assert_running_equal(model, stats)


@pytest.mark.parametrize("norm", [None, "ln"])
def test_classifier_with_lengths_reads_each_sequence_at_its_own_end(norm):
    torch.manual_seed(0)
    model = R.SequenceClassifier(3, 4, 3, norm=norm, dtype=F64)
    x, lengths = time_varying(N=4), torch.tensor([5, 2, 4, 1])
    logits = model(x, lengths=lengths)
    assert logits.shape == (4, 3)
    for i, n in enumerate(lengths.tolist()):
        assert max_err(logits[i], model(x[i:i + 1, :n])[0]) <= TOL


def test_padding_effect_shows_padding_corrupts_unmasked_statistics():
    model = model_for("bn", max_steps=6)
    x, lengths = time_varying(N=6, T=6), torch.tensor([6, 6, 6, 6, 3, 3])
    x = x * (torch.arange(6) < lengths[:, None])[:, :, None]
    stats = running_copies(model)
    effect = R.padding_effect(model, x, lengths)
    assert effect.running.tolist() == [6, 6, 6, 4, 4, 4]
    for path in ("input", "hidden", "cell"):
        shift, ratio = effect.mean_shift[path], effect.var_ratio[path]
        assert torch.all(shift[:3] < 1e-9) and torch.all((ratio[:3] - 1).abs() < 1e-9), path
        assert torch.all(shift[3:] > 1e-2) and torch.all((ratio[3:] - 1).abs() > 1e-2), path
    # sequences that ended before the padding began are untouched; the others are not
    assert torch.all(effect.output_change[4:] < 1e-12) and torch.all(effect.output_change[:4] > 1e-6)
    assert_running_equal(model, stats)
    assert model.training
    with pytest.raises(ValueError, match="norm='bn'"):
        R.padding_effect(model_for("ln"), x, lengths)


def test_hidden_preactivation_variance_against_torch_lstm():
    ours, theirs = torch_pair()
    x = time_varying(N=32)
    result = R.hidden_preactivation_variance(ours, x)
    with torch.no_grad():
        out, _ = theirs(x)
        h_prev = torch.cat([torch.zeros(32, 1, 5, dtype=F64), out[:, :-1]], dim=1)
        a_h = h_prev @ theirs.weight_hh_l0.T
        a_x = x @ theirs.weight_ih_l0.T
    assert result["hidden"][0] == 0
    assert max_err(result["hidden"], a_h.var(0, unbiased=False).mean(1)) <= TOL
    assert max_err(result["input"], a_x.var(0, unbiased=False).mean(1)) <= TOL
    # through a classifier, in training mode, the running statistics stay where they were
    model = R.SequenceClassifier(3, 4, 3, norm="bn", max_steps=5, dtype=F64)
    stats = running_copies(model.lstm)
    variance = R.hidden_preactivation_variance(model, x)
    assert variance["hidden"].shape == (5,) and variance["hidden"][0] == 0 and variance["hidden"][1] > 0
    assert_running_equal(model.lstm, stats)


# ============================================================================= refusals
@pytest.mark.parametrize("kwargs, match", [
    (dict(norm="batch"), "norm must be one of"),
    (dict(norm="bn"), "max_steps"),
    (dict(norm="bn", max_steps=0), "max_steps"),
    (dict(num_layers=2), "num_layers"),
    (dict(beyond="first"), "beyond"),
    (dict(gamma_init=float("nan")), "gamma_init"),
])
def test_constructor_refusals(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R.LSTM(3, 4, **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda m: m(torch.zeros(2, 5, 4, dtype=F64)), "3 features"),
    (lambda m: m(torch.zeros(2, 5, 3, dtype=torch.float32)), "dtype"),
    (lambda m: m(torch.zeros(2, 5, 2, 3, dtype=F64)), "2-D or 3-D"),
    (lambda m: m(torch.zeros(2, 5, 3, dtype=F64), lengths=[5, 6]), "lengths must be in 1..5"),
    (lambda m: m(torch.zeros(2, 5, 3, dtype=F64), lengths=[5]), "1 entries"),
    (lambda m: m(torch.zeros(2, 5, 3, dtype=F64), lengths=[5.0, 2.0]), "integers"),
    (lambda m: m(torch.zeros(2, 5, 3, dtype=F64), (torch.zeros(1, 2, 4, dtype=F64),)), "pair"),
    (lambda m: m(torch.zeros(2, 5, 3, dtype=F64), (torch.zeros(2, 4, dtype=F64),) * 2), r"\(1, 2, 4\)"),
])
def test_forward_refusals(call, match):
    with pytest.raises(ValueError, match=match):
        call(model_for(None))


def test_conversion_refusals():
    with pytest.raises(ValueError, match="one-layer"):
        R.LSTM.from_torch(nn.LSTM(3, 4, num_layers=2))
    with pytest.raises(ValueError, match="norm=None"):
        model_for("ln").to_torch()
    # a normalized LSTM takes torch's weights; its norms start fresh
    torch.manual_seed(0)
    theirs = nn.LSTM(3, 4, batch_first=True)
    ours = R.LSTM.from_torch(theirs, norm="ln")
    assert torch.equal(ours.weight_hh_l0, theirs.weight_hh_l0) and torch.all(ours.norm_c.weight == 1)


# ============================================================================= training
def test_training_helper_is_seeded_and_learns_digit_rows():
    runs = [R.train_digit_sequences("bn", steps=100, seed=s, eval_every=50) for s in (0, 0, 1)]
    assert runs[0].loss == runs[1].loss and runs[0].loss != runs[2].loss
    run = runs[0]
    assert run.metric == "accuracy" and run.eval_steps == [0, 50, 100] and len(run.loss) == 100
    assert run.final("test") > 0.6 and run.metrics["test"][0] < 0.3     # chance is 0.1
    assert run.ms_per_step > 0 and run.diverged_at is None
    assert isinstance(run.model.lstm.norm_ih, R.SequenceBatchNorm)


def test_adding_problem_helper_tests_at_longer_lengths():
    run = R.train_adding_problem("bn", length=6, steps=20, eval_every=10, n_train=256, n_test=64)
    assert run.metric == "mse" and list(run.metrics) == ["length 6", "length 12", "length 24"]
    assert all(len(v) == 3 and all(math.isfinite(m) for m in v) for v in run.metrics.values())
    assert run.model.lstm.max_steps == 6
