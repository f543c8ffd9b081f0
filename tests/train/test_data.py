"""The in-memory data layer: batches equal per-utterance slices, truncation, bucketing, errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emofuse.errors import EmofuseError
from emofuse.train.data import TrainData
from tests.helpers import FakeCache


def cfg(**kw):
    base = {
        "speech_layers": None,
        "text_layers": None,
        "max_speech_len": None,
        "max_text_len": None,
    }
    return SimpleNamespace(**{**base, **kw})


def test_batch_matches_each_utterance_slice(fake_cache):
    data = TrainData.from_cache(fake_cache, {"speech", "text", "speaker"}, cfg(), "cpu")
    idx = torch.tensor([5, 0, 17, 3])
    batch = data.batch(idx)
    values, offsets = fake_cache.arrays["speech"]
    t_max = int(max(offsets[i + 1] - offsets[i] for i in idx.tolist()))
    assert batch["speech"].shape == (4, t_max, 3, 8)
    assert batch["speech"].dtype == torch.float32
    for row, i in enumerate(idx.tolist()):
        n = offsets[i + 1] - offsets[i]
        want = torch.from_numpy(values[offsets[i] : offsets[i + 1]].astype(np.float32))
        assert torch.equal(batch["speech"][row, :n], want)
        assert batch["speech_mask"][row].sum() == n
        assert batch["speech_mask"][row, :n].all()
        assert (batch["speech"][row, n:] == 0).all()  # padding is zeros
    assert torch.equal(
        batch["speaker"], torch.from_numpy(fake_cache.arrays["speaker"][0][idx.numpy()]).float()
    )
    assert batch["text"].shape[:2] == batch["text_mask"].shape


def test_layers_and_truncation_follow_the_head_config(fake_cache):
    data = TrainData.from_cache(
        fake_cache, {"speech", "text"}, cfg(speech_layers=[2]), "cpu", max_lengths={"speech": 5}
    )
    assert ("speech", [2]) in fake_cache.loads and ("text", None) in fake_cache.loads
    assert data.dims()["speech"] == (1, 8)
    lens = np.diff(fake_cache.arrays["speech"][1])
    idx = torch.arange(len(lens))
    batch = data.batch(idx)
    assert batch["speech"].shape[1] == 5
    assert torch.equal(batch["speech_mask"].sum(1), torch.from_numpy(np.minimum(lens, 5)))
    values, offsets = fake_cache.arrays["speech"]
    first = torch.from_numpy(values[offsets[0] : offsets[0] + 5, 2:3].astype(np.float32))
    assert torch.equal(batch["speech"][0, : min(5, lens[0])], first[: min(5, lens[0])])


def test_bucketed_batches_cover_each_index_once_with_less_padding(fake_cache):
    data = TrainData.from_cache(fake_cache, {"speech"}, cfg(), "cpu")
    idx = torch.arange(0, 120, 2)
    gen = torch.Generator().manual_seed(0)
    batches = data.train_batches(idx, 8, gen)
    assert sorted(torch.cat(batches).tolist()) == idx.tolist()

    def padded(bs):
        return sum(int(data.cost[b].max()) * len(b) for b in bs)

    shuffled = list(torch.split(idx[torch.randperm(len(idx), generator=gen)], 8))
    assert padded(batches) < padded(shuffled)
    again = data.train_batches(idx, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_speaker_norm_standardises_the_acoustic_streams_of_each_speaker():
    cache = FakeCache(streams=("speech", "text", "speaker", "speech_mean"))
    streams = {"speech", "text", "speaker", "speech_mean"}
    data = TrainData.from_cache(cache, streams, cfg(), "cpu")
    text, speaker = data.streams["text"].values.clone(), data.streams["speaker"].values.clone()
    speakers = cache.table["speaker"]
    data.normalize_per_speaker(speakers)
    speech = data.streams["speech"]
    offsets = speech.offsets.numpy()
    for who in sorted(set(speakers)):
        utts = np.flatnonzero(speakers == who)
        rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in utts])
        frames = speech.values[rows].float()  # (R, L, D) of this speaker
        assert torch.allclose(frames.mean(0), torch.zeros(3, 8), atol=2e-3)
        assert torch.allclose(frames.std(0, correction=0), torch.ones(3, 8), atol=2e-3)
        pooled = data.streams["speech_mean"].values[utts].float()  # (U, L, D): over utterances
        assert torch.allclose(pooled.mean(0), torch.zeros(3, 8), atol=2e-3)
        assert torch.allclose(pooled.std(0, correction=0), torch.ones(3, 8), atol=2e-3)
    assert torch.equal(data.streams["text"].values, text)  # text and speaker vectors untouched
    assert torch.equal(data.streams["speaker"].values, speaker)
    with pytest.raises(EmofuseError, match="speakers for"):
        data.normalize_per_speaker(speakers[:3])


def test_missing_stream_names_it_and_the_extract_option():
    cache = FakeCache(n_per_speaker=2, streams=("speech", "speaker"))
    with pytest.raises(EmofuseError, match="stream .text.*--text-model"):
        TrainData.from_cache(cache, {"speech", "text"}, cfg(), "cpu")


def test_unknown_plan_id_is_a_user_error(fake_cache):
    data = TrainData.from_cache(fake_cache, {"speaker"}, cfg(), "cpu")
    with pytest.raises(EmofuseError, match="nope.*not in the cache"):
        data.indices(["nope"])
