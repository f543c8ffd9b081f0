"""Fixtures of the cache tests: both backends, and a finished reference cache per backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cache.cache_synth import write_cache


@pytest.fixture(params=[".h5", ".zarr"], ids=["hdf5", "zarr"])
def suffix(request) -> str:
    return request.param


@pytest.fixture
def reference(tmp_path, suffix) -> tuple[Path, str]:
    path = tmp_path / f"ref{suffix}"
    return path, write_cache(path)
