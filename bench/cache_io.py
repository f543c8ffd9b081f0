"""Cache I/O benchmark: an IEMOCAP-sized synthetic cache against the per-utterance layouts peers use.

    .venv/bin/python bench/cache_io.py [--scale 1.0] [--backend h5|zarr|both] [--tmp /tmp]

Scale 1.0 = 5,531 utterances, ~1.25 M frames x 1024 fp16 (one layer, ~2.6 GB) plus word segments
(data, spans, symbols), text tokens (data, word_ids) and speaker vectors. Reports, from one run:
size on disk against raw bytes, write throughput (CacheWriter add + close, which includes the
consolidation and the read-back verification), and the full read of everything a head needs through
``Cache.load`` against (a) one HDF5 dataset per utterance and (b) one .npy file per utterance —
cold (page cache dropped for the files with posix_fadvise) and warm. For .h5 it also times what
``emofuse train`` does: ``Cache.load(mmap=True)`` (zero-copy map of the file) plus faulting in every
4 KiB page of every array, so the bytes are really brought into memory, not just mapped. Random
data: content does not matter to uncompressed I/O. Everything is written under a temp dir and
removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from emofuse.cache import CacheWriter, fixed, open_cache, ragged

D, D_TEXT, F = 1024, 768, 192
FRAME_RATE = 50.0
HEAD_NEEDS = [("speech", "data"), ("word", "data"), ("word", "spans"), ("text", "data"),
              ("text", "word_ids"), ("speaker", "data")]  # fmt: skip


def iemocap_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Durations (s): lognormal with IEMOCAP's mean 4.55 s, clipped to its 0.6-35 s range."""
    sigma = 0.65
    dur = rng.lognormal(np.log(4.55) - sigma**2 / 2, sigma, n).clip(0.6, 35.0)
    return dur * (4.55 / dur.mean())


def utterances(n: int, seed: int = 0):
    """Yield (meta, data) with random fp16 sliced from a pool (fast; values are irrelevant)."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(1 << 24).astype(np.float16)  # 32 MiB of random halves
    for i, dur in enumerate(iemocap_like(n, rng)):
        t = int(round(dur * FRAME_RATE))
        words = max(1, int(dur * 2.5))
        tokens = min(words + 4, 128)

        def take(rows: int, dim: int, i=i) -> np.ndarray:
            start = (i * 7919 * dim) % (len(pool) - rows * dim)
            return pool[start : start + rows * dim].reshape(rows, 1, dim)

        ends = np.sort(rng.integers(1, t + 1, words))
        meta = {"id": f"utt{i:05d}", "label": "ang hap neu sad".split()[i % 4],
                "speaker": f"Ses0{i % 5 + 1}_{'FM'[i % 2]}", "duration": float(dur),
                "aligned": True, "n_frames": t}  # fmt: skip
        data = {
            "speech": {"data": take(t, D)},
            "word": {
                "data": take(words, D),
                "spans": np.stack([np.maximum(ends - 10, 0), ends], 1).astype(np.int32),
                "symbols": [f"w{j}" for j in range(words)],
            },
            "text": {"data": take(tokens, D_TEXT), "word_ids": np.arange(tokens) - 1},
            "speaker": {"data": take(1, F).reshape(F)},
        }
        yield meta, data


def specs() -> list:
    return [
        ragged("speech", {"data": ("float16", (1, D))}, model="bench", layers=[24], dim=D,
               frame_rate=FRAME_RATE),
        ragged("word", {"data": ("float16", (1, D)), "spans": ("int32", (2,)),
                        "symbols": ("str", ())}, layers=[24]),
        ragged("text", {"data": ("float16", (1, D_TEXT)), "word_ids": ("int32", ())}, layers=[12]),
        fixed("speaker", {"data": ("float16", (F,))}, model="bench"),
    ]  # fmt: skip


def files_under(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def drop_cache(root: Path) -> None:
    """Evict these files from the page cache (so a read is a disk read), without root rights."""
    for f in files_under(root):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def disk_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in files_under(root))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def write_ours(path: Path, n: int) -> None:
    w = CacheWriter(path, settings={"bench": n}, streams=specs())
    ids = []
    for meta, data in tqdm(utterances(n), total=n, desc=f"write {path.suffix}", file=sys.stderr):
        w.add(meta, data)
        ids.append(meta["id"])
    w.close(order=ids)


def fault_in(a: np.ndarray) -> float:
    """Read one value in every 4 KiB page of ``a`` (any strides), so every page is brought in."""
    if a.size == 0:
        return 0.0
    per_page = [slice(None, None, max(1, 4096 // abs(a.strides[0])))]  # rows
    if a.ndim > 1:  # middle axes whole; the last one stepped by a page (rows wider than a page)
        per_page += [slice(None)] * (a.ndim - 2) + [slice(None, None, 4096 // a.itemsize)]
    return float(a[tuple(per_page)].sum(dtype=np.float64))


def read_ours(path: Path, mmap: bool = False) -> int:
    total = 0
    with open_cache(path) as c:
        for stream, array in HEAD_NEEDS:
            values, offsets = c.load(stream, array, mmap=mmap)
            if mmap:
                fault_in(values)
            total += values.nbytes + offsets.nbytes
    return total


def write_h5_per_utt(path: Path, n: int) -> None:
    with h5py.File(path, "w") as f:
        for meta, data in tqdm(utterances(n), total=n, desc="write h5/utt", file=sys.stderr):
            for stream, array in HEAD_NEEDS:
                f[f"{stream}/{array}/{meta['id']}"] = np.asarray(data[stream][array])


def read_h5_per_utt(path: Path) -> int:
    total = 0
    with h5py.File(path, "r") as f:
        for stream, array in HEAD_NEEDS:
            group = f[f"{stream}/{array}"]
            for uid in group:
                total += group[uid][()].nbytes
    return total


def write_npy_per_utt(root: Path, n: int) -> None:
    for stream, array in HEAD_NEEDS:
        (root / f"{stream}.{array}").mkdir(parents=True)
    for meta, data in tqdm(utterances(n), total=n, desc="write npy/utt", file=sys.stderr):
        for stream, array in HEAD_NEEDS:
            np.save(
                root / f"{stream}.{array}" / f"{meta['id']}.npy", np.asarray(data[stream][array])
            )


def read_npy_per_utt(root: Path) -> int:
    total = 0
    for stream, array in HEAD_NEEDS:
        folder = root / f"{stream}.{array}"
        for name in sorted(os.listdir(folder)):
            total += np.load(folder / name).nbytes
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 5,531 utterances")
    ap.add_argument("--backend", choices=["h5", "zarr", "both"], default="both")
    ap.add_argument("--tmp", default="/tmp", help="where the temp dir goes")
    args = ap.parse_args()
    n = max(4, int(round(5531 * args.scale)))
    work = Path(tempfile.mkdtemp(prefix="emofuse-cache-bench-", dir=args.tmp))
    try:
        frames = sum(int(m["n_frames"]) for m, _ in utterances(n))
        speech_raw = frames * D * 2
        print(
            f"utterances {n}, speech frames {frames:,} x {D} fp16 = {speech_raw / 1e9:.3f} GB raw"
        )
        results = {}
        backends = ["h5", "zarr"] if args.backend == "both" else [args.backend]
        for b in backends:
            path = work / f"bench.{b}"
            t_write, _ = timed(lambda path=path: write_ours(path, n))
            with open_cache(path) as c:
                raw = c.raw_bytes()
                speech_disk = None
                if b == "zarr":
                    speech_disk = disk_bytes(path / "streams/speech/data")
            disk = disk_bytes(path)
            drop_cache(path)
            t_cold, nbytes = timed(lambda path=path: read_ours(path))
            t_warm, _ = timed(lambda path=path: read_ours(path))
            results[b] = (t_cold, t_warm)
            if b == "h5":
                drop_cache(path)
                m_cold, _ = timed(lambda path=path: read_ours(path, mmap=True))
                m_warm, _ = timed(lambda path=path: read_ours(path, mmap=True))
                results["h5 mmap"] = (m_cold, m_warm)
            print(
                f"[{b}] size on disk {disk / 1e9:.3f} GB vs raw {raw / 1e9:.3f} GB = {disk / raw:.4f}x"
                + (f" (speech/data alone {speech_disk / speech_raw:.4f}x)" if speech_disk else "")
            )
            print(
                f"[{b}] write (add + consolidate + verify) {t_write:.1f} s = {raw / t_write / 1e9:.3f} GB/s"
            )
            print(
                f"[{b}] full read of head streams {nbytes / 1e9:.3f} GB: cold {t_cold:.2f} s = "
                f"{nbytes / t_cold / 1e9:.2f} GB/s, warm {t_warm:.2f} s = {nbytes / t_warm / 1e9:.2f} GB/s"
            )
            if b == "h5":
                print(
                    f"[h5 mmap] map + fault in every page (what emofuse train does): cold {m_cold:.2f} s"
                    f" = {nbytes / m_cold / 1e9:.2f} GB/s, warm {m_warm:.2f} s = "
                    f"{nbytes / m_warm / 1e9:.2f} GB/s"
                )
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        peers = {
            "one HDF5 dataset per utterance": (
                work / "per_utt.h5",
                write_h5_per_utt,
                read_h5_per_utt,
            ),
            "one .npy per utterance": (work / "per_utt_npy", write_npy_per_utt, read_npy_per_utt),
        }
        for label, (path, write, read) in peers.items():
            t_write, _ = timed(lambda path=path, write=write: write(path, n))
            drop_cache(path)
            t_cold, nbytes = timed(lambda path=path, read=read: read(path))
            t_warm, _ = timed(lambda path=path, read=read: read(path))
            print(
                f"[{label}] write {t_write:.1f} s; full read {nbytes / 1e9:.3f} GB: cold {t_cold:.2f} s, "
                f"warm {t_warm:.2f} s; size {disk_bytes(path) / 1e9:.3f} GB"
            )
            for b, (ours_cold, ours_warm) in results.items():
                print(
                    f"    emofuse {b} load is {t_cold / ours_cold:.1f}x faster cold, "
                    f"{t_warm / ours_warm:.1f}x faster warm"
                )
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
