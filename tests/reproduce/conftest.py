"""Fixtures for the reproduce tests: the train tests' in-memory cache, with a log-mel stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import FakeCache, FakeStream


def fake_cache(fbank: bool = True, segments: bool = False) -> FakeCache:
    cache = FakeCache(n_per_speaker=6)
    if segments:  # phone/syllable/word rows: (segments, the speech layers, dim), as extract writes
        rng = np.random.default_rng(2)
        speech = cache.arrays["speech"][0]
        for tier, most in (("phone", 9), ("syllable", 5), ("word", 3)):
            lens = rng.integers(0, most, size=len(cache.ids))  # 0: no segment (frame fallback)
            offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            data = speech[rng.integers(0, len(speech), size=offsets[-1])]
            cache.arrays[tier] = (data, offsets)
            cache.streams[tier] = FakeStream("ragged", {"layers": [0, 1, 2]})
    if fbank:  # "w/o ME" reads log-mel frames: (frames, 1 layer, 5 mels) per utterance
        rng = np.random.default_rng(1)
        lens = rng.integers(4, 12, size=len(cache.ids))
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        data = rng.normal(size=(offsets[-1], 1, 5)).astype(np.float16)
        cache.arrays["fbank"] = (data, offsets)
        cache.streams["fbank"] = FakeStream("ragged")
    return cache


@pytest.fixture
def cache() -> FakeCache:
    return fake_cache()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
