"""Generated padded batches for head tests (no cache, no models: heads only see tensors)."""

from __future__ import annotations

import pytest
import torch

from emofuse.heads.base import InputDims
from tests.helpers import DIMS, make_batch


@pytest.fixture
def dims() -> InputDims:
    return DIMS


@pytest.fixture
def batch16() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """16 utterances of mixed lengths (a few unaligned) and balanced labels of 4 classes."""
    speech = [6 + (7 * i) % 23 for i in range(16)]
    text = [2 + (5 * i) % 9 for i in range(16)]
    segs = [0 if i % 5 == 4 else 1 + (3 * i) % 7 for i in range(16)]
    aligned = [s > 0 and i % 7 != 3 for i, s in enumerate(segs)]
    labels = torch.arange(16) % 4
    return make_batch(DIMS, speech, text, segs, aligned, seed=1), labels


@pytest.fixture
def batch_mixed() -> dict[str, torch.Tensor]:
    """5 utterances of very different lengths (incl. odd lengths and a 1-frame one) for invariance."""
    return make_batch(
        DIMS,
        speech_lens=[9, 31, 1, 14, 22],
        text_lens=[3, 11, 2, 7, 1],
        seg_lens=[2, 9, 0, 4, 6],
        aligned=[True, True, False, False, True],
        seed=2,
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny heads gain nothing from a second thread, and on a shared 2-core box the OpenMP threads
    of concurrent test runs fight (10x slower steps); restore the setting for other areas' tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
