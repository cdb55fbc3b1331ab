"""bnlab.homework: right students' code passes, each known mistake is named, and wrong answers never crash a checker.

The students' code is in homework_variants.py: every mistake in at least two spellings (styles), and
the right code in each style.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from homework_variants import (
    NoCounterBatchNorm1d,
    PlainAttributeBatchNorm1d,
    buffer_module,
    compact_backward,
    compact_forward,
    cs231n_backward,
    cs231n_forward,
    cs231n_forward_unbiased_running_var,
    loop_forward,
    subclass_module,
    torch_forward,
)

import bnlab
from bnlab.homework import (
    MISTAKES,
    HomeworkCheckFailed,
    check_batchnorm_backward,
    check_batchnorm_forward,
    check_batchnorm_module,
)
from bnlab.reference import batchnorm_backward, batchnorm_forward

FORWARD_MISTAKES = ["not_implemented", "wrong_axis", "divide_by_variance", "eps_misplaced", "gamma_added",
                    "unbiased_batch_variance", "biased_running_variance", "momentum_reversed",
                    "running_stats_not_updated", "test_batch_statistics", "eval_updates_running_stats",
                    "one_pass_variance"]
BACKWARD_MISTAKES = ["not_implemented", "missing_mean_path", "missing_variance_path", "dgamma_dbeta_swapped",
                     "dgamma_uses_x"]
MODULE_ONLY = ["statistics_as_parameters", "running_stats_with_grad", "state_dict_keys"]

# (style, factory, convention, the mistakes that style spells)
FORWARD_STYLES = [
    # biased_running_variance is CS231n's convention, not a mistake there
    ("cs231n", cs231n_forward, "cs231n", [m for m in FORWARD_MISTAKES if m != "biased_running_variance"]),
    ("compact", compact_forward, "torch", FORWARD_MISTAKES),
    ("loops", loop_forward, "torch", ["divide_by_variance", "eps_misplaced", "unbiased_batch_variance",
                                      "biased_running_variance", "momentum_reversed", "one_pass_variance"]),
    ("torch-inside", torch_forward, "torch", ["wrong_axis", "eps_misplaced", "gamma_added", "unbiased_batch_variance",
                                              "running_stats_not_updated", "test_batch_statistics"]),
]
BACKWARD_STYLES = [("cs231n", cs231n_backward, cs231n_forward, "cs231n"),
                   ("compact", compact_backward, compact_forward, "torch")]
MODULE_STYLES = [
    ("register_buffer", buffer_module, FORWARD_MISTAKES + MODULE_ONLY),
    ("subclass-of-BatchNorm1d", subclass_module,
     [m for m in FORWARD_MISTAKES if m != "one_pass_variance"]
     + ["running_stats_with_grad", "statistics_as_parameters"]),
]
MODULE_CLASSES = [("plain-attributes", PlainAttributeBatchNorm1d, "state_dict_keys"),
                  ("no-num_batches_tracked", NoCounterBatchNorm1d, "state_dict_keys")]


def _cases(styles):
    return [pytest.param(style, factory, conv, m, id=f"{style}-{m}") for style, factory, conv, ms in styles for m in ms]


def _mistake_of(run) -> HomeworkCheckFailed:
    with pytest.raises(HomeworkCheckFailed) as info:
        run()
    return info.value


def _assert_only_ticks(out: str, at_least: int):
    lines = out.strip().splitlines()
    assert len(lines) >= at_least, out
    assert all(line.startswith("✓ ") for line in lines), out


# ----------------------------------------------------------------------------- every id is tested
def test_every_mistake_id_has_a_variant_in_at_least_two_styles():
    spellings = {}
    for style, _, _, ms in FORWARD_STYLES:
        for m in ms:
            spellings.setdefault(m, set()).add(f"forward-{style}")
    for style, *_ in BACKWARD_STYLES:
        for m in BACKWARD_MISTAKES:
            spellings.setdefault(m, set()).add(f"backward-{style}")
    for style, _, ms in MODULE_STYLES:
        for m in ms:
            spellings.setdefault(m, set()).add(f"module-{style}")
    for style, _, m in MODULE_CLASSES:
        spellings.setdefault(m, set()).add(f"module-{style}")
    assert set(spellings) == set(MISTAKES)
    assert {m: len(s) for m, s in spellings.items() if len(s) < 2} == {}


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("forward, convention", [
    pytest.param(cs231n_forward(), "cs231n", id="cs231n"),
    pytest.param(compact_forward(), "torch", id="compact"),
    pytest.param(loop_forward(), "torch", id="loops"),
    pytest.param(torch_forward(), "torch", id="torch-inside"),
    pytest.param(batchnorm_forward, "torch", id="bnlab.reference"),
])
def test_right_forward_passes_and_prints_ticks(forward, convention, capsys):
    check_batchnorm_forward(forward, convention=convention)
    out = capsys.readouterr().out
    _assert_only_ticks(out, 7)
    assert "1e8" in out and "eps = 0.5" in out and "running_var" in out


@pytest.mark.parametrize("style, factory, convention, mistake", _cases(FORWARD_STYLES))
def test_forward_mistake_is_named(style, factory, convention, mistake, capsys):
    failure = _mistake_of(lambda: check_batchnorm_forward(factory(mistake), convention=convention))
    assert failure.mistake == mistake, str(failure)
    assert isinstance(failure, bnlab.CheckFailed)
    message = str(failure)
    assert message.startswith("✗ ") and f"Mistake: {mistake}" in message and "Hint: " in message


def test_cs231n_reference_style_is_rejected_under_torch_convention():
    failure = _mistake_of(lambda: check_batchnorm_forward(cs231n_forward(), convention="torch"))
    assert failure.mistake in ("momentum_reversed", "biased_running_variance"), str(failure)


def test_torch_style_is_rejected_under_cs231n_convention():
    failure = _mistake_of(lambda: check_batchnorm_forward(compact_forward(), convention="cs231n"))
    assert failure.mistake == "momentum_reversed", str(failure)


def test_unbiased_running_var_is_wrong_for_cs231n_but_no_listed_mistake():
    failure = _mistake_of(lambda: check_batchnorm_forward(cs231n_forward_unbiased_running_var, convention="cs231n"))
    assert failure.mistake is None
    assert "unbiased" in str(failure) and "running_var" in str(failure)


def test_forward_messages_name_what_was_observed():
    failure = _mistake_of(lambda: check_batchnorm_forward(compact_forward("wrong_axis")))
    assert "layer norm" in str(failure) and "differs from the correct output by up to" in str(failure)
    failure = _mistake_of(lambda: check_batchnorm_forward(cs231n_forward("eps_misplaced"), convention="cs231n"))
    assert "sqrt(var) + eps" in str(failure)
    failure = _mistake_of(lambda: check_batchnorm_forward(compact_forward("one_pass_variance")))
    assert "1e8" in str(failure)


def test_unknown_convention_is_a_value_error():
    with pytest.raises(ValueError, match="convention"):
        check_batchnorm_forward(compact_forward(), convention="keras")


def test_forward_sees_every_bn_param_key():
    seen = []

    def forward(x, gamma, beta, bn_param):
        seen.append(set(bn_param))
        return compact_forward()(x, gamma, beta, bn_param)

    check_batchnorm_forward(forward)
    assert all(keys >= {"mode", "eps", "momentum", "running_mean", "running_var"} for keys in seen)
    assert len(seen) >= 10


# ----------------------------------------------------------------------------- forward: wrong answers do not crash
def _transposed(x, gamma, beta, bn_param):
    out, cache = compact_forward()(x, gamma, beta, bn_param)
    return out.T, cache


def _nan(x, gamma, beta, bn_param):
    return np.full_like(x, np.nan), None


def _raises_value_error(x, gamma, beta, bn_param):
    raise ValueError("operands could not be broadcast together")


def _returns_out_only(x, gamma, beta, bn_param):
    return compact_forward()(x, gamma, beta, bn_param)[0]


def _returns_none(x, gamma, beta, bn_param):
    pass


def _returns_text(x, gamma, beta, bn_param):
    return "done", None


@pytest.mark.parametrize("forward, mistake, words", [
    (_transposed, None, "shape"),
    (_nan, None, "NaN"),
    (_raises_value_error, None, "ValueError: operands could not be broadcast"),
    (_returns_out_only, None, "not (out, cache)"),
    (_returns_text, None, "str"),
    (_returns_none, "not_implemented", "None"),
])
def test_forward_checker_survives_wrong_answers(forward, mistake, words):
    failure = _mistake_of(lambda: check_batchnorm_forward(forward))
    assert failure.mistake == mistake
    assert words in str(failure)


# ----------------------------------------------------------------------------- backward
@pytest.mark.parametrize("backward, forward, convention", [
    pytest.param(cs231n_backward(), cs231n_forward(), "cs231n", id="cs231n"),
    pytest.param(compact_backward(), compact_forward(), "torch", id="compact"),
    pytest.param(batchnorm_backward, batchnorm_forward, "torch", id="bnlab.reference"),
])
def test_right_backward_passes_and_prints_ticks(backward, forward, convention, capsys):
    check_batchnorm_backward(backward, forward, convention=convention)
    _assert_only_ticks(capsys.readouterr().out, 4)


@pytest.mark.parametrize("style, backward, forward, convention, mistake", [
    pytest.param(style, b, f, conv, m, id=f"{style}-{m}") for style, b, f, conv in BACKWARD_STYLES
    for m in BACKWARD_MISTAKES])
def test_backward_mistake_is_named(style, backward, forward, convention, mistake):
    failure = _mistake_of(lambda: check_batchnorm_backward(backward(mistake), forward(), convention=convention))
    assert failure.mistake == mistake, str(failure)
    assert f"Mistake: {mistake}" in str(failure) and "Hint: " in str(failure)


def test_missing_mean_path_message_reports_the_sum_of_dx():
    failure = _mistake_of(lambda: check_batchnorm_backward(compact_backward("missing_mean_path"), compact_forward()))
    assert "sum of dx over the batch is" in str(failure) and "not 0" in str(failure)


def test_backward_of_a_wrong_forward_points_at_the_forward():
    failure = _mistake_of(lambda: check_batchnorm_backward(compact_backward(), compact_forward("gamma_added")))
    assert failure.mistake is None and "check_batchnorm_forward" in str(failure)


def _backward_keepdims(dout, cache):
    dx, dgamma, dbeta = compact_backward()(dout, cache)
    return dx, dgamma[None, :], dbeta


def _backward_nan(dout, cache):
    dx, dgamma, dbeta = compact_backward()(dout, cache)
    return dx * np.nan, dgamma, dbeta


def _backward_raises(dout, cache):
    raise ValueError("bad cache")


def _backward_pair(dout, cache):
    return compact_backward()(dout, cache)[:2]


@pytest.mark.parametrize("backward, words", [
    (_backward_keepdims, "dgamma has shape (1, 4)"),
    (_backward_nan, "NaN"),
    (_backward_raises, "ValueError: bad cache"),
    (_backward_pair, "not (dx, dgamma, dbeta)"),
])
def test_backward_checker_survives_wrong_answers(backward, words):
    failure = _mistake_of(lambda: check_batchnorm_backward(backward, compact_forward()))
    assert failure.mistake is None
    assert words in str(failure)


def test_backward_gets_the_students_own_cache():
    caches = []

    def forward(x, gamma, beta, bn_param):
        out, cache = compact_forward()(x, gamma, beta, bn_param)
        caches.append(cache)
        return out, cache

    def backward(dout, cache):
        assert any(cache is c for c in caches)
        return compact_backward()(dout, cache)

    check_batchnorm_backward(backward, forward)


# ----------------------------------------------------------------------------- module
@pytest.mark.parametrize("cls", [
    pytest.param(torch.nn.BatchNorm1d, id="torch.nn.BatchNorm1d"),
    pytest.param(bnlab.BatchNorm1d, id="bnlab.BatchNorm1d"),
    pytest.param(buffer_module(), id="register_buffer"),
    pytest.param(subclass_module(), id="subclass-of-BatchNorm1d"),
])
def test_right_module_passes_and_prints_ticks(cls, capsys):
    check_batchnorm_module(cls)
    out = capsys.readouterr().out
    _assert_only_ticks(out, 10)
    assert "state_dict" in out and "autograd" in out


@pytest.mark.parametrize("style, factory, mistake", [
    pytest.param(style, f, m, id=f"{style}-{m}") for style, f, ms in MODULE_STYLES for m in ms])
def test_module_mistake_is_named(style, factory, mistake):
    failure = _mistake_of(lambda: check_batchnorm_module(factory(mistake)))
    assert failure.mistake == mistake, str(failure)
    assert f"Mistake: {mistake}" in str(failure) and "Hint: " in str(failure)


@pytest.mark.parametrize("style, cls, mistake", [pytest.param(*c, id=c[0]) for c in MODULE_CLASSES])
def test_module_class_mistake_is_named(style, cls, mistake):
    failure = _mistake_of(lambda: check_batchnorm_module(cls))
    assert failure.mistake == mistake, str(failure)


def test_state_dict_message_lists_the_keys():
    failure = _mistake_of(lambda: check_batchnorm_module(buffer_module("state_dict_keys")))
    assert "'gamma'" in str(failure) and "missing ['weight', 'bias']" in str(failure)


class _WrongShapeModule(torch.nn.BatchNorm1d):
    def forward(self, x):
        return super().forward(x)[:, :2]


class _RaisingModule(torch.nn.BatchNorm1d):
    def forward(self, x):
        raise ValueError("mat1 and mat2 shapes cannot be multiplied")


class _NoKeywordsModule(torch.nn.BatchNorm1d):
    def __init__(self, num_features):
        super().__init__(num_features)


class _NotAModule:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        pass

    def __call__(self, x):
        return x


class _NumpyOutputModule(torch.nn.BatchNorm1d):
    def forward(self, x):
        return super().forward(x).detach().numpy()


@pytest.mark.parametrize("cls, words", [
    (_WrongShapeModule, "shape"),
    (_RaisingModule, "ValueError: mat1 and mat2"),
    (_NoKeywordsModule, "TypeError"),
    (_NotAModule, "not a torch.nn.Module"),
    (_NumpyOutputModule, "autograd"),
])
def test_module_checker_survives_wrong_answers(cls, words):
    failure = _mistake_of(lambda: check_batchnorm_module(cls))
    assert failure.mistake is None
    assert words in str(failure)


# ----------------------------------------------------------------------------- attempt
def test_attempt_returns_the_result_and_names_an_untouched_stub():
    from bnlab.homework import HomeworkCheckFailed, attempt

    assert attempt(lambda a, b=1: a + b, 2, b=3) == 5

    def fold(conv, bn):
        raise NotImplementedError("your code here")

    def forgot_return(model):
        model.eval()

    for stub in (fold, forgot_return):
        with pytest.raises(HomeworkCheckFailed) as failed:
            attempt(stub, None, None) if stub is fold else attempt(stub, torch.nn.Linear(1, 1))
        assert failed.value.mistake == "not_implemented" and stub.__name__ in str(failed.value)
        assert "Hint" in str(failed.value)

    def broken():
        raise KeyError("weight")

    with pytest.raises(KeyError):
        attempt(broken)
