"""Fixtures for the train tests: an in-memory cache with the reader API and a learnable signal."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import FakeCache


@pytest.fixture
def fake_cache() -> FakeCache:
    return FakeCache()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster
    (no OpenMP spin contention with other test processes); restored for other areas' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
