"""Fixtures for the train tests: an in-memory cache with the reader API and a learnable signal."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

TINY_HEAD = str(Path(__file__).with_name("tiny_head.py")) + ":TinyHead"
LABELS = ("ang", "hap", "neu", "sad")


@dataclass
class FakeStream:
    kind: str
    attrs: dict = field(default_factory=dict)


class FakeCache:
    """The reader API of docs/architecture.md §2 over numpy arrays (no file).

    Each label shifts the speech/text means in its own direction, so a working loop learns it and
    a broken one (labels shuffled against features) does not.
    """

    def __init__(
        self, n_per_speaker: int = 12, seed: int = 0, streams=("speech", "text", "speaker")
    ):
        rng = np.random.default_rng(seed)
        rows = []
        for s in range(1, 6):
            for letter in "FM":
                for i in range(n_per_speaker):
                    rows.append((f"Ses0{s}_{letter}_{i:03d}", f"Ses0{s}_{letter}", f"Ses0{s}"))
        n = len(rows)
        labels = np.array([LABELS[i % 4] for i in rng.permutation(n)], dtype=object)
        self.ids = [r[0] for r in rows]
        self.table = {
            "id": np.array(self.ids, dtype=object),
            "speaker": np.array([r[1] for r in rows], dtype=object),
            "session": np.array([r[2] for r in rows], dtype=object),
            "label": labels,
            "split": np.array(["train"] * n, dtype=object),
            "aligned": np.ones(n, dtype=bool),
        }
        self.fingerprint = f"fake-{seed}-{n_per_speaker}"
        self.path = "fake.h5"
        y = np.array([LABELS.index(x) for x in labels])
        direction = rng.normal(size=(4, 8)).astype(np.float32)
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.streams: dict[str, FakeStream] = {}
        lens = rng.integers(3, 20, size=n)
        if "speech" in streams:
            offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            data = rng.normal(size=(offsets[-1], 3, 8)).astype(np.float32)
            data += np.repeat(direction[y], lens, axis=0)[:, None, :]
            self.arrays["speech"] = (data.astype(np.float16), offsets)
            self.streams["speech"] = FakeStream("ragged", {"layers": [0, 1, 2]})
        if "text" in streams:
            tl = rng.integers(2, 9, size=n)
            offsets = np.concatenate([[0], np.cumsum(tl)]).astype(np.int64)
            data = rng.normal(size=(offsets[-1], 2, 6)).astype(np.float32)
            data += 0.5 * np.repeat(direction[y][:, :6], tl, axis=0)[:, None, :]
            self.arrays["text"] = (data.astype(np.float16), offsets)
            self.streams["text"] = FakeStream("ragged", {"layers": [0, 1]})
        if "speech_mean" in streams:  # what extract writes: per-layer mean over the frames
            values, offsets = self.arrays["speech"]
            means = np.stack(
                [
                    values[a:b].astype(np.float32).mean(0)
                    for a, b in zip(offsets[:-1], offsets[1:], strict=True)
                ]
            )
            self.arrays["speech_mean"] = (means.astype(np.float16), None)
            self.streams["speech_mean"] = FakeStream("fixed", {"layers": [0, 1, 2]})
        if "speaker" in streams:
            self.arrays["speaker"] = (rng.normal(size=(n, 4)).astype(np.float16), None)
            self.streams["speaker"] = FakeStream("fixed")
        self.loads: list[tuple[str, list[int] | None]] = []

    def load(self, stream, array="data", layers=None, ids=None, mmap=False):
        self.loads.append((stream, layers))
        values, offsets = self.arrays[stream]
        if layers is not None:
            pos = [self.streams[stream].attrs["layers"].index(x) for x in layers]
            values = values[:, pos]
        return values, offsets


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
