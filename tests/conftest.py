"""Fixtures for the bnlab unit tests (helpers to import live in bn_testing.py)."""

import pytest
import torch


@pytest.fixture
def restore_threads():
    """Put torch's CPU thread count back as it was after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
