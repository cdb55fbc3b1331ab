"""Fixtures for the bnlab unit tests (helpers to import live in bn_testing.py)."""

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture
def restore_threads():
    """Put torch's CPU thread count back as it was after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    # make test runs one pytest-xdist worker per core: a worker with torch's default of one thread
    # per core would fight the others for the same cores
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_addoption(parser):
    parser.addoption("--e2e", action="store_true",
                     help="run the end-to-end browser tests in tests/e2e (what `make e2e` does)")


def pytest_ignore_collect(collection_path, config):
    """tests/e2e needs Chromium and Playwright and takes minutes, so `pytest tests` (make test, make unit)
    leaves it out; --e2e (make e2e), or naming tests/e2e on the command line, collects it."""
    if collection_path == E2E and not config.getoption("--e2e"):
        return True
    return None


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread, as the lessons run: faster for tiny nets on a loaded 2-core machine.
    Opt in per file with pytestmark = pytest.mark.usefixtures("one_thread")."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def close_figures():
    """Close every matplotlib figure a test opened."""
    yield
    import matplotlib.pyplot as plt  # only the plotting tests pay for pyplot

    plt.close("all")


@pytest.fixture(scope="module")
def data():
    """lesson-scale digits (bnlab.data.digits(), seed 0), loaded once per test module; a module that
    defines its own `data` fixture or function uses that instead."""
    from bnlab.data import digits
    return digits()
