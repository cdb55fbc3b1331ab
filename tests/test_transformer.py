"""bnlab.transformer: TokenNorm against torch's norms on (N, T, D) tokens (BN over real tokens only
equals torch BN on the real tokens flattened, running statistics included); padding never reaches
real tokens except through naive BN; gradcheck; a block equals torch.nn.TransformerEncoderLayer;
the padded adding problem; training; batch composition; the fluctuation measure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bn_testing import assert_close, max_err
from torch import nn
from torch.func import functional_call

from bnlab import transformer as TR

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def randn(*shape, seed=0, dtype=F64, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale + shift


def tokens_and_mask(N=5, T=7, D=4, seed=0, dtype=F64):
    """Features with means and scales away from 0 and 1, lengths 2..T (one sequence of length T);
    padded positions hold random garbage, not zeros, so a leak would show."""
    x = randn(N, T, D, seed=seed, dtype=dtype, scale=2.0, shift=1.5)
    lengths = torch.tensor([T] + [2 + (3 * i) % (T - 1) for i in range(1, N)])
    return x, TR.lengths_to_mask(lengths, T)


def randomize(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return module


def pad_more(x, mask, k, seed=5):
    """k more padded positions per sequence, holding random values."""
    extra = randn(x.shape[0], k, x.shape[2], seed=seed, dtype=x.dtype, scale=3.0, shift=-2.0)
    return torch.cat([x, extra], 1), torch.cat([mask, mask.new_zeros(x.shape[0], k)], 1)


# ============================================================================= TokenNorm
@pytest.mark.parametrize("kind", TR.TOKEN_NORMS)
def test_token_norm_shapes_and_refusals(kind):
    norm = TR.TokenNorm(kind, 4, dtype=F64)
    x, mask = tokens_and_mask()
    assert norm(x, mask).shape == x.shape and norm(x).shape == x.shape
    with pytest.raises(ValueError, match="bool"):
        norm(x, mask.long())
    with pytest.raises(ValueError, match="mask has shape"):
        norm(x, mask[:, :-1])
    with pytest.raises(ValueError, match="D = 4"):
        norm(x[..., :3], mask)
    with pytest.raises(ValueError, match=r"\(N, T, D\)"):
        norm(x[0], mask[0])


def test_token_norm_refuses_unknown_kinds():
    with pytest.raises(ValueError, match="norm must be one of"):
        TR.TokenNorm("gn", 4)
    with pytest.raises(ValueError, match="num_features"):
        TR.TokenNorm("ln", 0)


@pytest.mark.parametrize("kind", ["ln", "rms"])
def test_per_token_norms_equal_torch(kind):
    x, mask = tokens_and_mask()
    ours = randomize(TR.TokenNorm(kind, 4, dtype=F64))
    if kind == "ln":
        theirs = nn.LayerNorm(4, dtype=F64)
    else:
        if not hasattr(nn, "RMSNorm"):
            pytest.skip("torch.nn.RMSNorm needs torch >= 2.4")
        theirs = nn.RMSNorm(4, dtype=F64)
    theirs.load_state_dict(ours.norm.state_dict())
    assert_close(ours(x, mask), theirs(x), F64, kind)


def test_naive_bn_is_batchnorm1d_on_the_flattened_tokens():
    x, mask = tokens_and_mask()
    ours = randomize(TR.TokenNorm("bn", 4, dtype=F64))
    theirs = nn.BatchNorm1d(4, dtype=F64)
    theirs.load_state_dict(ours.norm.state_dict())
    for step in range(3):
        xs = x * (1 + step) - step
        assert_close(ours(xs, mask), theirs(xs.reshape(-1, 4)).reshape(x.shape), F64, f"train {step}")
    assert_close(ours.norm.running_mean, theirs.running_mean, F64, "running_mean")
    assert_close(ours.norm.running_var, theirs.running_var, F64, "running_var")
    ours.eval(), theirs.eval()
    assert_close(ours(x, mask), theirs(x.reshape(-1, 4)).reshape(x.shape), F64, "eval")


def test_masked_bn_equals_torch_bn_on_the_real_tokens_only():
    ours = randomize(TR.TokenNorm("bn_masked", 4, dtype=F64))
    theirs = nn.BatchNorm1d(4, dtype=F64)
    theirs.load_state_dict(ours.norm.state_dict())
    for step in range(3):
        x, mask = tokens_and_mask(seed=step)
        out = ours(x, mask)
        assert_close(out[mask], theirs(x[mask]), F64, f"train step {step}, real tokens")
        assert float(out.detach()[~mask].abs().max()) == 0.0
    # unbiased var over the M real tokens in the running estimate, as torch's
    assert_close(ours.norm.running_mean, theirs.running_mean, F64, "running_mean")
    assert_close(ours.norm.running_var, theirs.running_var, F64, "running_var")
    assert int(ours.norm.num_batches_tracked) == 3
    ours.eval(), theirs.eval()
    x, mask = tokens_and_mask(seed=7)
    assert_close(ours(x, mask)[mask], theirs(x[mask]), F64, "eval")


def test_masked_bn_refuses_a_single_real_token_in_training():
    norm = TR.TokenNorm("bn_masked", 3, dtype=F64)
    x = randn(2, 3, 3)
    mask = torch.tensor([[True, False, False], [False, False, False]])
    with pytest.raises(ValueError, match="at least 2 real tokens"):
        norm(x, mask)
    norm.eval()
    assert norm(x, mask).shape == x.shape


@pytest.mark.parametrize("kind", ["ln", "rms", "bn_masked"])
def test_padding_never_changes_real_tokens(kind):
    x, mask = tokens_and_mask()
    norm = randomize(TR.TokenNorm(kind, 4, dtype=F64))
    out = norm(x, mask)
    x_more, mask_more = pad_more(x, mask, 6)
    assert max_err(norm(x_more, mask_more)[:, :x.shape[1]][mask], out[mask]) <= 1e-12


def test_naive_bn_lets_padding_change_real_tokens():
    x, mask = tokens_and_mask()
    norm = randomize(TR.TokenNorm("bn", 4, dtype=F64))
    out = norm(x, mask)
    x_more, mask_more = pad_more(x, mask, 6)
    assert max_err(norm(x_more, mask_more)[:, :x.shape[1]][mask], out[mask]) > 0.1


@pytest.mark.parametrize("kind", ["bn_masked", "bn"])
def test_gradcheck_token_bn(kind):
    x, mask = tokens_and_mask(N=3, T=4, D=2)
    x.requires_grad_(True)
    norm = randomize(TR.TokenNorm(kind, 2, dtype=F64))
    weight, bias = (p.detach().clone().requires_grad_(True) for p in (norm.norm.weight, norm.norm.bias))

    def f(x, weight, bias):
        return functional_call(norm, {"norm.weight": weight, "norm.bias": bias}, (x, mask))

    assert torch.autograd.gradcheck(f, (x, weight, bias))


# ============================================================================= padding_effect
def test_padding_effect_on_each_norm():
    x, mask = TR.random_token_batch(seed=3)
    effects = {kind: TR.padding_effect(kind, x, mask, extra_padding=5) for kind in TR.TOKEN_NORMS}
    for kind in ("ln", "rms", "bn_masked"):
        assert effects[kind].output_change <= 1e-12, kind
    assert effects["bn_masked"].mean_shift == 0.0 and effects["bn_masked"].var_ratio == 1.0
    naive = effects["bn"]
    assert naive.output_change > 0.1
    # k zeros per sequence: m values become m + N k and the mean and the mean square shrink by
    # m / (m + N k)
    N, T, D = x.shape
    m = N * T
    assert (naive.count, naive.count_padded) == (m, m + 5 * N)
    rows = x.reshape(-1, D)
    mu, square = rows.mean(0), (rows * rows).mean(0)
    var = square - mu * mu
    shrink = m / (m + 5 * N)
    var_more = square * shrink - (mu * shrink) ** 2
    eps = 1e-5
    assert math.isclose(naive.mean_shift, float(((mu - mu * shrink).abs() / (var + eps).sqrt()).mean()), rel_tol=1e-9)
    assert math.isclose(naive.var_ratio, float(((var_more + eps) / (var + eps)).mean()), rel_tol=1e-9)
    assert "bn" in str(naive) and "sd" in str(naive)


def test_padding_effect_leaves_the_norm_as_it_was():
    norm = TR.TokenNorm("bn", 8, dtype=F64)
    norm.eval()
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    TR.padding_effect(norm)
    assert not norm.training
    for key, value in norm.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert set(TR.padding_effects()) == set(TR.TOKEN_NORMS)


# ============================================================================= the model
def model_input(N=4, T=6, F=2, seed=0):
    x = randn(N, T, F, seed=seed)
    lengths = torch.tensor([T, 2, T - 1, 3][:N])
    return x, lengths


@pytest.mark.parametrize("readout, shape", [("mean", (4, 3)), ("first", (4, 3)), ("tokens", (4, 6, 3))])
@pytest.mark.parametrize("layers, pre_norm", [(1, True), (2, False)])
def test_transformer_shapes(readout, shape, layers, pre_norm):
    x, lengths = model_input()
    model = TR.TinyTransformer(2, d_model=8, heads=2, layers=layers, pre_norm=pre_norm, num_outputs=3,
                               readout=readout, max_len=6, dtype=F64)
    assert model(x, lengths=lengths).shape == shape
    assert model(x).shape == shape


def test_transformer_with_tokens_and_each_position_code():
    tokens = torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(0))
    for positions in TR.POSITIONS:
        model = TR.TinyTransformer(vocab_size=11, d_model=8, positions=positions, norm="rms", max_len=5)
        assert model(tokens, lengths=torch.tensor([5, 1, 3])).shape == (3, 1)
    assert TR.TinyTransformer(2, positions="sinusoidal").state_dict().keys().isdisjoint({"position"})


def test_sinusoidal_positions():
    pe = TR.sinusoidal_positions(7, 6, dtype=F64)
    t, i = 5, 2
    assert math.isclose(float(pe[t, 2 * i]), math.sin(t / 10000 ** (2 * i / 6)), rel_tol=1e-12)
    assert math.isclose(float(pe[t, 2 * i + 1]), math.cos(t / 10000 ** (2 * i / 6)), rel_tol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one"), (dict(input_size=2, vocab_size=3), "exactly one"),
    (dict(input_size=2, norm="gn"), "norm must be"), (dict(input_size=2, d_model=6, heads=4), "multiple of heads"),
    (dict(input_size=2, positions="rotary"), "positions"), (dict(input_size=2, readout="max"), "readout"),
    (dict(input_size=2, layers=0), "layers")])
def test_transformer_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TR.TinyTransformer(**kwargs)


def test_transformer_refuses_bad_inputs():
    model = TR.TinyTransformer(2, d_model=8, max_len=6, dtype=F64)
    x, lengths = model_input()
    with pytest.raises(ValueError, match="max_len"):
        model(randn(2, 7, 2))
    with pytest.raises(ValueError, match=r"\(N, T, 2\)"):
        model(x[..., :1])
    with pytest.raises(ValueError, match="not both"):
        model(x, mask=TR.lengths_to_mask(lengths, 6), lengths=lengths)
    with pytest.raises(ValueError, match="at least one real token"):
        model(x, mask=torch.zeros(4, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        model(x, mask=torch.ones(4, 6))
    with pytest.raises(ValueError, match="at least one token"):
        model(x, lengths=torch.tensor([6, 0, 1, 1]))


@pytest.mark.parametrize("pre_norm", [True, False], ids=["pre-norm", "post-norm"])
def test_block_equals_torch_encoder_layer(pre_norm):
    torch.manual_seed(0)
    ours = randomize(TR.TransformerBlock(8, 2, norm="ln", pre_norm=pre_norm, mlp_ratio=3, dtype=F64))
    theirs = nn.TransformerEncoderLayer(8, 2, dim_feedforward=24, dropout=0.0, batch_first=True, norm_first=pre_norm,
                                        dtype=F64)
    with torch.no_grad():
        theirs.self_attn.in_proj_weight.copy_(ours.attn.qkv.weight)
        theirs.self_attn.in_proj_bias.copy_(ours.attn.qkv.bias)
        theirs.self_attn.out_proj.load_state_dict(ours.attn.out.state_dict())
        theirs.linear1.load_state_dict(ours.mlp[0].state_dict())
        theirs.linear2.load_state_dict(ours.mlp[2].state_dict())
        theirs.norm1.load_state_dict(ours.norm1.norm.state_dict())
        theirs.norm2.load_state_dict(ours.norm2.norm.state_dict())
    x, lengths = model_input(F=8)
    mask = TR.lengths_to_mask(lengths, 6)
    # training mode keeps torch off its fast path (which zeroes padded outputs); dropout is 0
    ref = theirs(x, src_key_padding_mask=~mask)
    assert_close(ours(x, mask)[mask], ref[mask], F64, "real tokens")


@pytest.mark.parametrize("norm", ["ln", "rms", "bn_masked", None])
def test_padding_never_reaches_real_tokens_in_the_model(norm):
    x, lengths = model_input()
    model = randomize(TR.TinyTransformer(2, d_model=8, layers=2, norm=norm, readout="tokens", max_len=9,
                                         dtype=F64))
    mask = TR.lengths_to_mask(lengths, 6)
    out = model(x, mask)
    x_more, mask_more = pad_more(x, mask, 3)
    x_more[~mask_more] = randn(int((~mask_more).sum()), 2, seed=8, scale=4.0)   # garbage in the old padding too
    assert max_err(model(x_more, mask_more)[:, :6][mask], out[mask]) <= 1e-10
    model.readout = "mean"
    assert max_err(model(x_more, mask_more), model(x, mask)) <= 1e-10


def test_naive_bn_lets_padding_reach_real_tokens_in_the_model():
    x, lengths = model_input()
    model = randomize(TR.TinyTransformer(2, d_model=8, norm="bn", readout="tokens", max_len=9, dtype=F64))
    mask = TR.lengths_to_mask(lengths, 6)
    x_more, mask_more = pad_more(x, mask, 3)
    assert max_err(model(x_more, mask_more)[:, :6][mask], model(x, mask)[mask]) > 1e-3


# ============================================================================= the task
def test_padded_adding_problem():
    x, lengths, y = TR.padded_adding_problem(400, 4, 13, seed=2)
    assert x.shape == (400, 13, 2) and lengths.shape == y.shape == (400,)
    assert x.dtype == y.dtype == torch.float32 and lengths.dtype == torch.int64
    assert int(lengths.min()) == 4 and int(lengths.max()) == 13
    values, markers = x[..., 0].numpy(), x[..., 1].numpy()
    expected = []
    for i, L in enumerate(lengths.tolist()):
        assert np.all(x[i, L:].numpy() == 0)
        marked = np.flatnonzero(markers[i] == 1)
        assert len(marked) == 2 and markers[i].sum() == 2
        assert marked[0] < L // 2 <= marked[1] < L
        assert np.all((values[i, :L] >= 0) & (values[i, :L] < 1))
        expected.append(float(values[i, marked[0]]) + float(values[i, marked[1]]))
    assert np.abs(y.numpy() - np.array(expected)).max() <= 1e-6
    again = TR.padded_adding_problem(400, 4, 13, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(again, (x, lengths, y)))
    assert not torch.equal(TR.padded_adding_problem(400, 4, 13, seed=3)[0], x)
    assert not torch.equal(TR.padded_adding_problem(400, 4, 13, seed=2, split="test")[0], x)


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(min_length=1), dict(min_length=9, max_length=8),
                                    dict(split="valid")])
def test_padded_adding_problem_refusals(kwargs):
    with pytest.raises(ValueError):
        TR.padded_adding_problem(**{"n": 10, **kwargs})


# ============================================================================= training
@pytest.fixture(scope="module")
def ln_run():
    return TR.train_transformer("ln", steps=150, seed=0, eval_every=50, n_train=2000, n_test=200)


def test_training_reduces_the_loss(ln_run):
    h = ln_run
    assert len(h.loss) == 150 and h.eval_steps == [0, 50, 100, 150] and h.diverged_at is None
    assert h.metrics["test"][0] > 0.5          # untrained outputs near 0, targets near 1
    assert h.final("test") < 0.02              # far below 1/6, answering 1
    assert np.mean(h.loss[-20:]) < 0.1 * np.mean(h.loss[:5])
    assert h.ms_per_step > 0 and h.fluctuation is not None and h.fluctuation.layers == []


def test_training_is_seeded():
    a = TR.train_transformer("bn_masked", steps=5, seed=1, eval_every=5, n_train=200, n_test=50)
    b = TR.train_transformer("bn_masked", steps=5, seed=1, eval_every=5, n_train=200, n_test=50)
    assert a.loss == b.loss and a.metrics == b.metrics


def test_eval_at_batch_one_equals_eval_in_a_batch(ln_run):
    model = ln_run.model
    model.eval()
    x, lengths, _ = TR.padded_adding_problem(40, 5, 30, seed=0, split="test")
    with torch.no_grad():
        batched = model(x, lengths=lengths)
        alone = torch.cat([model(x[i:i + 1, :L], lengths=lengths[i:i + 1]) for i, L in enumerate(lengths.tolist())])
    assert max_err(batched, alone) <= 1e-6


def test_batch_composition():
    x, lengths, y = TR.padded_adding_problem(60, 5, 30, seed=0, split="test")
    for norm in ("ln", "bn"):
        model = TR._seeded(0, lambda: randomize(TR.TinyTransformer(2, d_model=8, norm=norm, max_len=30)))
        table = TR.batch_composition(model, x, lengths, y, batch_size=16)
        assert len(table) == 6
        running = [table["running", b] for b in ("random", "sorted", "batch 1")]
        assert max(running) - min(running) <= 1e-5 * max(running)
        batch = [table["batch", b] for b in ("random", "sorted", "batch 1")]
        if norm == "ln":
            assert max(batch) - min(batch) <= 1e-5 * max(batch)
        else:
            assert max(batch) - min(batch) > 1e-2 * max(batch)


# ============================================================================= fluctuation
def test_fluctuation_recorder_against_a_hand_computation():
    norm = TR.TokenNorm("bn_masked", 4, dtype=F64)
    recorder = TR._FluctuationRecorder({"bn": norm}, TR._token_statistics)
    # scales around 1 so that sigma^2_B / running_var - 1 takes both signs
    batches = [(x * scale, mask) for (x, mask), scale in
               ((tokens_and_mask(seed=s), scale) for s, scale in enumerate((0.2, 1.0, 0.4)))]
    expected_mean, expected_var = [], []
    running_mean, running_var = torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64)
    for x, mask in batches:
        rows = x[mask]
        mu, var = rows.mean(0), rows.var(0, unbiased=False)
        expected_mean.append(float(((mu - running_mean).abs() / (running_var + 1e-5).sqrt()).mean()))
        expected_var.append(float((var / (running_var + 1e-5) - 1).abs().mean()))
        norm(x, mask)
        running_mean = 0.9 * running_mean + 0.1 * mu
        running_var = 0.9 * running_var + 0.1 * rows.var(0, unbiased=True)
    norm.eval()
    norm(*batches[0])                           # eval passes are not recorded
    result = recorder.close()
    np.testing.assert_allclose(result.mean["bn"], expected_mean, rtol=1e-12)
    np.testing.assert_allclose(result.var["bn"], expected_var, rtol=1e-12)
    assert result.count["bn"].tolist() == [float(m.sum()) for _, m in batches]
    assert not norm._forward_pre_hooks


def test_fluctuation_of_a_bn_transformer_and_a_cnn():
    h = TR.train_transformer("bn", steps=12, seed=0, eval_every=12, n_train=300, n_test=20)
    f = h.fluctuation
    assert f.layers == ["blocks.0.norm1", "blocks.0.norm2", "final_norm"]
    for layer in f.layers:
        assert f.mean[layer].shape == f.var[layer].shape == (12,)
        assert np.all(np.isfinite(f.mean[layer])) and np.all(f.var[layer] >= 0)
    # naive BN counts every position of the padded batch: 32 sequences times the longest
    assert np.all(f.count["final_norm"] % 32 == 0)
    assert f.steps.tolist() == list(range(1, 13))
    np.testing.assert_allclose(f.curve("var"), np.mean([f.var[layer] for layer in f.layers], axis=0))
    np.testing.assert_allclose(f.curve("mean", relative=True)[0],
                               np.mean([f.mean[layer][0] * math.sqrt(math.pi * f.count[layer][0] / 2)
                                        for layer in f.layers]))
    summary = f.average(skip=2)
    assert set(summary) == {"mean", "var", "mean_vs_iid", "var_vs_iid"}
    with pytest.raises(ValueError, match="skip"):
        f.average(skip=12)
    cnn, history = TR.cnn_fluctuation(steps=6, batch_size=8)
    assert len(cnn.layers) == 2 and history.eval_steps == [0, 6]
    assert all(cnn.count[layer].tolist() == [8 * 64.0] * 6 for layer in cnn.layers)
    np.testing.assert_allclose(cnn.iid_mean(cnn.layers[0]), math.sqrt(2 / (math.pi * 512)))
