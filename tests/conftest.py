"""Shared test setup: two CPU threads, deterministic seeds."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for training-step tests: OpenMP threads spin-wait on each other,
    so two threads on a 2-core machine that is doing anything else stall (10-50x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
