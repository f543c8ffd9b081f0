"""Corpus layer benchmark: synthetic corpus writing and IEMOCAP-reader speed at full scale.

Prints, from one run: wall and CPU seconds to write the `counts` profile (10,039 utterances,
≈ 40k files) and the `demo` profile; reading the counts corpus (4-class, 5,531 utterances);
and the reader's parsing share (the same read with wav headers already in the page cache, run
twice so the second is warm). The CPU/wall ratio shows how much of the wall time was waiting
(a shared machine, a slow disk) rather than work.

    .venv/bin/python bench/corpus.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from emofuse.corpus import read_corpus
from emofuse.corpus.synthetic import write_synthetic_corpus


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="emofuse-bench-corpus-"))
    try:
        for profile in ("counts", "demo"):
            corpus, wall, cpu = _timed(
                lambda p=profile: write_synthetic_corpus(work / p, p, seed=0, progress=False)
            )
            n = len(corpus.utterances)
            audio = sum(u.duration for u in corpus.utterances.values())
            print(
                f"[synth {profile}] {n} utterances, {audio / 60:.1f} min audio: wall {wall:.1f} s, "
                f"cpu {cpu:.1f} s ({n / wall:.0f} utt/s wall, {audio / cpu:.1f}x real time per cpu s)"
            )
        for rep in ("first", "second"):
            res, wall, cpu = _timed(
                lambda: read_corpus("iemocap", root=work / "counts", classes="4", progress=False)
            )
            n = len(res.utterances)
            print(
                f"[read counts 4-class, {rep}] {n} utterances, "
                f"{sum(u.aligned for u in res.utterances)} aligned: wall {wall:.2f} s, "
                f"cpu {cpu:.2f} s ({n / wall:.0f} utt/s)"
            )
        res, wall, cpu = _timed(
            lambda: read_corpus("iemocap", root=work / "counts", classes="all", progress=False)
        )
        print(
            f"[read counts all labels] {len(res.utterances)} utterances: wall {wall:.2f} s, "
            f"cpu {cpu:.2f} s ({len(res.utterances) / wall:.0f} utt/s)"
        )
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
