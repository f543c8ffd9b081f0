"""Fixtures of the cache tests: both backends, and a finished reference cache per backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # cache_synth, shared with the child writer

from cache_synth import write_cache  # noqa: E402


@pytest.fixture(params=[".h5", ".zarr"], ids=["hdf5", "zarr"])
def suffix(request) -> str:
    return request.param


@pytest.fixture
def reference(tmp_path, suffix) -> tuple[Path, str]:
    path = tmp_path / f"ref{suffix}"
    return path, write_cache(path)
