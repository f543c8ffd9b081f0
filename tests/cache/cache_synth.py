"""Deterministic tiny utterances covering every stream kind (shared by tests and the child writer)."""

from __future__ import annotations

import numpy as np

from emofuse.cache import CacheWriter, fixed, ragged

L_ALL, L, D = 4, 2, 6  # speech model layers, stored layers, dim
LAYERS = [1, 3]  # absolute indices of the stored layers
N_UTTS = 23
SETTINGS = {"speech": {"model": "tiny-hubert", "layers": LAYERS}, "dtype": "float16"}


def specs() -> list:
    rows = ("float16", (L, D))
    return [
        ragged("speech", {"data": rows}, model="tiny-hubert", layers=LAYERS, num_layers=L_ALL,
               dim=D, frame_rate=50.0),
        fixed("speech_mean", {"data": ("float16", (L_ALL, D))}, model="tiny-hubert",
              layers=list(range(L_ALL))),
        ragged("word", {"data": rows, "spans": ("int32", (2,)), "symbols": ("str", ())},
               layers=LAYERS, keep_fillers=False),
        ragged("text", {"data": ("float16", (3, 5)), "word_ids": ("int32", ())}, model="tiny-bert",
               layers=[0, 1, 2], max_tokens=16),
        fixed("speaker", {"data": ("float16", (4,))}, model="tiny-ecapa"),
    ]  # fmt: skip


def utterance(i: int, seed: int = 0) -> tuple[dict, dict]:
    """Utterance i: frames cycle 1, 0, 7, 3, 12 (1-frame and empty included); some unaligned."""
    rng = np.random.default_rng([seed, i])
    t = [1, 0, 7, 3, 12][i % 5]
    s = [2, 0, 1, 3][i % 4]  # 0 segments = unaligned / empty word stream
    n_tok = [0, 1, 4][i % 3]
    meta = {
        "id": f"Ses0{i % 3 + 1}_utt{i:03d}",
        "speaker": f"spk{i % 3}",
        "session": f"Ses0{i % 3 + 1}",
        "gender": "FM"[i % 2],
        "label": ["ang", "hap", "neu", "sad"][i % 4],
        "duration": round(0.02 * max(t, 1), 3),
        "text": f"hello wörld {i}",
        "text_norm": f"hello world {i}",
        "aligned": s > 0,
        "n_frames": t,
        "flags": ["padded"] if t <= 1 else [],
        "split": None,
        "extra": {"corpus_col": i * 2},
    }
    data = {
        "speech": {"data": rng.standard_normal((t, L, D))},
        "speech_mean": {"data": rng.standard_normal((L_ALL, D)).astype(np.float32)},
        "text": {"data": rng.standard_normal((n_tok, 3, 5)), "word_ids": np.arange(n_tok) - 1},
        "speaker": {"data": rng.standard_normal(4)},
    }
    if s:
        data["word"] = {
            "data": rng.standard_normal((s, L, D)),
            "spans": np.sort(rng.integers(0, 12, (s, 2)), axis=1),
            "symbols": [f"w{i}_{j}é" for j in range(s)],
        }
    return meta, data


def all_utterances(n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    return [utterance(i, seed) for i in range(n)]


def is_skipped(i: int) -> bool:
    return i % 11 == 10  # every 11th utterance has "bad audio": listed in `skipped`, not a row


def feed(writer, n: int, seed: int = 0, rank: int = 0, world: int = 1, on_each=None) -> None:
    """Write this rank's share of utterances 0..n-1 that the writer has not stored yet."""
    done = writer.done_ids()
    for i, (meta, data) in enumerate(all_utterances(n, seed)):
        if i % world != rank or meta["id"] in done:
            continue
        if is_skipped(i):
            writer.skip(meta["id"], "unreadable audio")
        else:
            writer.add(meta, data)
        if on_each:
            on_each(i)


def order(n: int) -> list[str]:
    """Canonical (corpus) order: NOT sorted by id, so consolidation order is really exercised."""
    return [utterance(i)[0]["id"] for i in reversed(range(n))]


def write_cache(path, n: int = N_UTTS, seed: int = 0, **kwargs) -> str:
    """An uninterrupted single-process write; returns the digest close() verified."""
    w = CacheWriter(path, settings=SETTINGS, streams=specs(), **kwargs)
    feed(w, n, seed)
    return w.close(order=order(n))
