"""bnlab.runtime: setup() (threads, seeds, device line) and pick_device()."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bnlab.runtime import environment_summary, pick_device, setup


@pytest.fixture
def no_accelerator(monkeypatch):
    """Pretend neither CUDA nor MPS is there, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_setup_sets_thread_count(restore_threads, no_accelerator, threads):
    setup(threads=threads, verbose=False)
    assert torch.get_num_threads() == threads


def test_setup_seeds_reproducibly(restore_threads, no_accelerator):
    """Two setup(seed=3) calls give the same torch, NumPy and Python random draws; seed 4 differs."""
    draws = []
    for seed in (3, 3, 4):
        setup(seed=seed, verbose=False)
        draws.append((torch.randn(5), np.random.rand(5), random.random()))
    (t1, n1, r1), (t2, n2, r2), (t3, n3, r3) = draws
    assert torch.equal(t1, t2) and np.array_equal(n1, n2) and r1 == r2
    assert not torch.equal(t1, t3) and not np.array_equal(n1, n3) and r1 != r3


def test_setup_prints_the_device_line(restore_threads, no_accelerator, capsys):
    device = setup(seed=3, threads=2)
    out = capsys.readouterr().out
    assert device == torch.device("cpu")
    assert out.startswith("bnlab: device cpu, 2 CPU threads, seed 3, torch ")
    assert torch.__version__.split("+")[0] in out
    setup(seed=0, threads=1)
    assert "1 CPU thread," in capsys.readouterr().out  # singular


def test_setup_quiet(restore_threads, no_accelerator, capsys):
    setup(verbose=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("threads", [0, -1])
def test_setup_rejects_nonpositive_threads(restore_threads, threads):
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        setup(threads=threads)
    assert torch.get_num_threads() == before  # rejected before touching anything


def test_pick_device_cpu_without_accelerators(no_accelerator):
    assert pick_device() == torch.device("cpu")


def test_pick_device_prefers_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")


def test_pick_device_mps_when_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")


def test_setup_returns_pick_device(restore_threads, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert setup(verbose=True) == torch.device("cuda")
    assert "device cuda" in capsys.readouterr().out


# ----------------------------------------------------------------------------- environment_summary
@pytest.mark.parametrize("cuda,hip,build", [(None, None, "CPU-only build"), ("13.0", None, "CUDA 13.0 build"),
                                            (None, "6.2", "ROCm 6.2 build")])
def test_environment_summary_names_the_build_and_the_cpu(monkeypatch, no_accelerator, cuda, hip, build):
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch.version, "hip", hip, raising=False)
    line = environment_summary()
    assert f"torch {torch.__version__} ({build})" in line
    assert "the lessons will run on the CPU" in line
    # a GPU build on a machine without a GPU is the surprise worth a word
    assert ("none is visible" in line) == (build != "CPU-only build")


def test_environment_summary_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    line = environment_summary()
    assert line.endswith("the lessons will run on CUDA (NVIDIA H200)") and "none is visible" not in line


# ----------------------------------------------------------------------------- inference_ms
def test_inference_ms_warms_up_once_times_repeats_and_records_no_graph():
    from torch import nn

    from bnlab.runtime import inference_ms

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.calls, self.grad_enabled = nn.Linear(4, 2), 0, []

        def forward(self, x):
            self.calls += 1
            self.grad_enabled.append(torch.is_grad_enabled())
            return self.linear(x)

    net = Counting()
    ms = inference_ms(net, torch.randn(3, 4), repeats=7)
    assert isinstance(ms, float) and ms > 0
    assert net.calls == 8 and not any(net.grad_enabled)
    assert net.linear.weight.grad is None and torch.is_grad_enabled()   # grad mode restored afterwards


def test_inference_ms_is_the_time_per_call():
    import time

    from bnlab.runtime import inference_ms

    def slow(x):
        time.sleep(0.01)
        return x

    ms = inference_ms(slow, torch.zeros(1), repeats=5)
    assert 9.5 < ms < 100   # 10 ms of sleep a call, not 50 ms for all five or 10 s


@pytest.mark.parametrize("repeats", [0, -1, 2.5])
def test_inference_ms_refuses_bad_repeats(repeats):
    from bnlab.runtime import inference_ms

    with pytest.raises(ValueError, match="repeats"):
        inference_ms(lambda x: x, torch.zeros(1), repeats=repeats)
