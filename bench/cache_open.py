"""Time of opening a finished cache (``open_store``: the seal and the metadata structure checked at
open, headers only) — what every `info`, `train`, `report --tsne` and extract resume pays.

    .venv/bin/python bench/cache_open.py [--opens 200] [--utterances 400] [--backend both]

Writes a synthetic cache of the extraction's streams (speech frames, per-layer statistics, word
segments, text tokens, speaker vectors), opens and closes it ``--opens`` times per backend and prints
the median milliseconds per open. To compare two commits, run it under each with ``PYTHONPATH``
pointing at that checkout (the cache is written with the checkout under test).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from emofuse.cache import CacheWriter, fixed, ragged
from emofuse.cache.store import open_store

L, D, D_TEXT = 7, 64, 32


def write(path: Path, n: int) -> None:
    layers = list(range(L))
    specs = [
        ragged("speech", {"data": ("float16", (L, D))}, model="m", layers=layers, num_layers=L,
               dim=D, frame_rate=50.0),
        fixed("speech_mean", {"data": ("float16", (L, D))}, model="m", layers=layers),
        ragged("word", {"data": ("float16", (L, D)), "spans": ("int32", (2,)),
                        "symbols": ("str", ())}, model="m", layers=layers, frame_rate=50.0),
        ragged("text", {"data": ("float16", (1, D_TEXT)), "word_ids": ("int32", ())}, model="t",
               layers=[0], num_layers=1),
        fixed("speaker", {"data": ("float16", (8,))}, model="s"),
    ]  # fmt: skip
    w = CacheWriter(path, settings={"bench": "open", "n": n}, streams=specs, progress=False)
    rng = np.random.default_rng(0)
    for i in range(n):
        frames, words = int(rng.integers(20, 200)), int(rng.integers(1, 10))
        w.add(
            {"id": f"u{i:05d}", "label": "neu", "speaker": f"s{i % 10}"},
            {
                "speech": {"data": rng.standard_normal((frames, L, D))},
                "speech_mean": {"data": rng.standard_normal((L, D))},
                "word": {"data": rng.standard_normal((words, L, D)),
                         "spans": np.tile([0, 1], (words, 1)), "symbols": ["a"] * words},
                "text": {"data": rng.standard_normal((words, 1, D_TEXT)),
                         "word_ids": np.arange(words)},
                "speaker": {"data": rng.standard_normal(8)},
            },
        )  # fmt: skip
    w.close(order=[f"u{i:05d}" for i in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opens", type=int, default=200)
    ap.add_argument("--utterances", type=int, default=400)
    ap.add_argument("--backend", choices=("h5", "zarr", "both"), default="both")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="emofuse-open-"))
    try:
        for suffix in (".h5", ".zarr") if args.backend == "both" else (f".{args.backend}",):
            path = tmp / f"c{suffix}"
            write(path, args.utterances)
            times = []
            for _ in range(args.opens):
                start = time.perf_counter()
                store, _meta = open_store(path)
                store.close()
                times.append(time.perf_counter() - start)
            print(f"{suffix[1:]:5s} open_store: median {1000 * statistics.median(times):.2f} ms, "
                  f"min {1000 * min(times):.2f} ms over {args.opens} opens")  # fmt: skip
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
