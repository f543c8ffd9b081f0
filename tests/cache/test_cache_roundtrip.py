"""Round trip of every stream kind through both backends, bulk loading and layer selection."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emofuse.cache import fingerprint_of, open_cache, verify_cache
from emofuse.errors import EmofuseError
from emofuse.train.data import TrainData
from tests.cache.cache_synth import (
    L_ALL,
    LAYERS,
    N_UTTS,
    SETTINGS,
    all_utterances,
    is_skipped,
    order,
    utterance,
    write_cache,
)


def expected(stream: str, array: str, ids: list[str]) -> tuple[list, np.ndarray]:
    """Per-utterance source arrays in ``ids`` order, cast like the writer casts (fp16, int32)."""
    by_id = {m["id"]: d for m, d in all_utterances(N_UTTS)}
    rows = []
    for uid in ids:
        d = by_id[uid].get(stream)
        rows.append(None if d is None else d[array])
    return rows, np.array([0 if r is None else len(r) for r in rows])


def test_round_trip_every_stream(reference) -> None:
    path, _digest = reference
    stored = [uid for uid in order(N_UTTS) if not is_skipped(int(uid[-3:]))]
    with open_cache(path) as c:
        assert c.complete and c.ids == stored
        assert c.fingerprint == fingerprint_of(SETTINGS) and c.settings == SETTINGS
        assert {s["id"] for s in c.skipped} == {utterance(i)[0]["id"] for i in (10, 21)}
        # ragged, layered: all stored layers, (rows, L, D), exact after the fp16 cast
        values, offsets = c.load("speech")
        src, counts = expected("speech", "data", c.ids)
        assert values.dtype == np.float16 and values.shape == (counts.sum(), 2, 6)
        assert np.array_equal(offsets, np.concatenate([[0], np.cumsum(counts)]))
        assert 0 in counts and 1 in counts  # empty and 1-frame utterances are in there
        for i, s in enumerate(src):
            assert np.array_equal(values[offsets[i] : offsets[i + 1]], s.astype(np.float16))
        # segments: data, int spans, str symbols; unaligned utterances have 0 segments
        spans, soff = c.load("word", "spans")
        symbols, yoff = c.load("word", "symbols")
        seg, goff = c.load("word", "data", layers=[3])
        assert spans.dtype == np.int32 and np.array_equal(soff, yoff) and np.array_equal(soff, goff)
        src_spans, seg_counts = expected("word", "spans", c.ids)
        src_syms, _ = expected("word", "symbols", c.ids)
        src_seg, _ = expected("word", "data", c.ids)
        assert 0 in seg_counts and np.array_equal(np.diff(soff), seg_counts)
        for i in range(len(c.ids)):
            if seg_counts[i]:
                assert np.array_equal(spans[soff[i] : soff[i + 1]], src_spans[i])
                assert list(symbols[soff[i] : soff[i + 1]]) == src_syms[i]
                want = src_seg[i][:, 1:2].astype(np.float16)  # absolute layer 3 = position 1
                assert np.array_equal(seg[goff[i] : goff[i + 1]], want)
        # text token states + word ids (0 tokens for some)
        wid, toff = c.load("text", "word_ids")
        src_wid, tcounts = expected("text", "word_ids", c.ids)
        assert wid.dtype == np.int32 and np.array_equal(np.diff(toff), tcounts)
        assert np.array_equal(wid, np.concatenate(src_wid).astype(np.int32))
        # fixed streams: one row per utterance
        mean, moff = c.load("speech_mean")
        assert mean.shape == (len(c.ids), L_ALL, 6) and np.array_equal(
            moff, np.arange(len(c.ids) + 1)
        )
        src_mean, _ = expected("speech_mean", "data", c.ids)
        assert np.array_equal(mean, np.stack(src_mean).astype(np.float16))
        spk, _ = c.load("speaker")
        assert spk.shape == (len(c.ids), 4)


def test_table_keeps_every_field(reference) -> None:
    path, _ = reference
    with open_cache(path) as c:
        t = c.table
        metas = {m["id"]: m for m, _ in all_utterances(N_UTTS)}
        for i, uid in enumerate(c.ids):
            m = metas[uid]
            for col in ("speaker", "session", "gender", "label", "text", "text_norm", "split"):
                assert t[col][i] == m[col]
            assert t["duration"][i] == m["duration"] and t["n_frames"][i] == m["n_frames"]
            assert bool(t["aligned"][i]) == m["aligned"] and t["flags"][i] == m["flags"]
            assert json.loads(t["extra"][i]) == m["extra"]
        assert t["duration"].dtype == np.float64 and t["aligned"].dtype == bool


def test_subset_and_layer_selection(reference) -> None:
    path, _ = reference
    with open_cache(path) as c:
        full, off = c.load("speech", layers=[3, 1])  # reordered layers
        pick = [c.ids[7], c.ids[0], c.ids[12], c.ids[13]]  # out of order, one adjacent pair
        sub, soff = c.load("speech", layers=[1], ids=pick)
        for k, uid in enumerate(pick):
            i = c.ids.index(uid)
            assert np.array_equal(sub[soff[k] : soff[k + 1], 0], full[off[i] : off[i + 1], 1])
        assert sub.flags.c_contiguous and full.flags.c_contiguous
        assert c.streams["speech"].layers == LAYERS
        with pytest.raises(EmofuseError, match="layer"):
            c.load("speech", layers=[0])
        with pytest.raises(EmofuseError, match="no stream 'phone'"):
            c.load("phone")
        with pytest.raises(EmofuseError, match="no utterance"):
            c.load("speech", ids=["nope"])


def test_mmap_load_is_the_same_content_and_never_writes_the_file(reference, tmp_path) -> None:
    path, digest = reference
    with open_cache(path) as c:
        for stream, array, layers in [
            ("speech", "data", None),  # both layers: a strided view
            ("speech", "data", [3]),  # one layer: one contiguous byte range
            ("speech", "data", [3, 1]),  # reordered: not a slice, read instead
            ("word", "data", [1]),
            ("word", "spans", None),
            ("speech_mean", "data", None),
            ("speaker", "data", None),
        ]:
            read, off = c.load(stream, array, layers=layers)
            mapped, moff = c.load(stream, array, layers=layers, mmap=True)
            assert np.array_equal(mapped, read) and np.array_equal(moff, off)
            assert mapped.dtype == read.dtype and mapped.shape == read.shape
        speech, _ = c.load("speech", mmap=True)
    if path.suffix == ".h5":  # zero copy: a view of the file, strided (rows, L, D) of (L, rows, D)
        assert speech.base is not None and not speech.flags.owndata
        assert not speech.flags.c_contiguous and speech.flags.writeable
    speech[:] = 7  # copy-on-write: private to this process, even after the cache was closed
    with open_cache(path) as c:
        assert not (c.load("speech")[0] == 7).any()
    assert verify_cache(path).digest == digest
    gz = tmp_path / "gz.h5"  # a compressed HDF5 cache cannot be mapped: the same values, read
    write_cache(gz, compression="gzip")
    with open_cache(gz) as c, open_cache(path) as ref:
        mapped, _ = c.load("speech", mmap=True)
        assert mapped.flags.owndata and np.array_equal(mapped, ref.load("speech")[0])


def test_train_data_maps_the_cache_and_speaker_norm_leaves_it_intact(reference) -> None:
    path, digest = reference
    cfg = SimpleNamespace(speech_layers=None, max_speech_len=None)
    with open_cache(path) as c:
        data = TrainData.from_cache(c, {"speech", "speech_mean"}, cfg, "cpu")
        read, offsets = c.load("speech")
        speakers = c.table["speaker"]
    speech = data.streams["speech"].values
    assert torch.equal(speech, torch.from_numpy(read))
    assert speech.is_contiguous() == (path.suffix == ".zarr")  # .h5: the strided file map
    long = int(np.argmax(np.diff(offsets)))
    batch = data.batch(torch.tensor([long, 0]))  # utterance 0 is shorter: padded with zeros
    n0 = int(offsets[1] - offsets[0])
    assert torch.equal(batch["speech"][1, :n0], torch.from_numpy(read[: offsets[1]]).float())
    assert (batch["speech"][1, n0:] == 0).all() and batch["speech_mask"][1].sum() == n0
    data.normalize_per_speaker(speakers)
    assert not torch.equal(data.streams["speech"].values, torch.from_numpy(read))
    assert verify_cache(path).digest == digest  # in place on a private copy, never the file


def test_mmap_reads_the_file_that_was_opened_even_after_a_rename_over_it(tmp_path) -> None:
    first, second = tmp_path / "first.h5", tmp_path / "second.h5"
    write_cache(first, seed=0)
    write_cache(second, seed=1)  # same shapes, other values
    with open_cache(first) as c:
        read, _ = c.load("speech")
        os.replace(second, first)  # a consolidation renames a new cache over the path
        mapped, _ = c.load("speech", mmap=True)
        assert np.array_equal(mapped, read) and not mapped.flags.owndata
