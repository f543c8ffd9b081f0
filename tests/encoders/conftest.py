"""Tiny random models of every family, built once per test session (no model hub needed)."""

from __future__ import annotations

import numpy as np
import pytest

from emofuse.encoders import build_tiny_models


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def wavs() -> list[np.ndarray]:
    """Four utterances of different lengths (one not a multiple of the hop), plus noise + tone so
    that each has structure; seeded."""
    rng = np.random.default_rng(7)
    out = []
    for n in (16_000, 9_000, 23_456, 4_001):
        t = np.arange(n) / 16_000
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t)
        out.append((tone + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return out
