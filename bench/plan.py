"""Whole fold plan timing: `emofuse train` over every fold of a split on an IEMOCAP-sized cache.

    .venv/bin/python bench/plan.py --head tdfnet --preset small --split loso [--scale 1.0]
    python3 bench/plan.py --head tdfnet --preset paper --split lopo --device cuda   # on a GPU

Writes the synthetic IEMOCAP-shaped cache of bench/train.py (5,531 utterances at scale 1.0: one
1024-d speech layer at 50 frames/s with IEMOCAP's duration distribution, 768-d text tokens, a 192-d
speaker vector; random fp16), then runs ``emofuse.train.run.train_run`` — exactly what
``emofuse train`` does, early stopping included — and prints wall minutes for the whole plan, the
epochs each fold ran and seconds per epoch (so a 20-epoch plan can be extrapolated: random features
make early stopping fire sooner than real ones do).

``--cache PATH`` times the plan on an existing cache instead (real features, e.g. the ravdess-dev
cache of bench/RESULTS.md) with the head's recipe for ``--preset`` (``--epochs`` then overrides
the recipe's, as the CLI flag does), and ``--set key=value`` head options, so the figures are what
``emofuse train --cache PATH --head H --preset P`` does:

    .venv/bin/python bench/plan.py --cache /tmp/ravdess/whisper-minilm.h5 --split lopo \
        --head tdfnet --preset small --set use_speaker=false --folds 1 --epochs 6

``--run DIR`` keeps the run folder in DIR instead of a temporary one: a plan cut off by ``timeout``
resumes there on the next call (finished folds are skipped; the cache is written again, the same
bytes), and the plan's minutes are the sum of every finished fold's own wall minutes
(``metrics.json``), whichever call ran it. That is how a plan longer than one device call is timed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train import write_cache  # noqa: E402  (bench/train.py, the same cache)

from emofuse.train.loop import LoopConfig  # noqa: E402
from emofuse.train.run import train_run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = IEMOCAP 4-class size")
    ap.add_argument("--head", default="tdfnet")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--split", default="loso")
    ap.add_argument("--epochs", type=int, default=None, help="default 20 (--cache: the recipe's)")
    ap.add_argument("--cache", default=None, help="an existing cache: real features, the recipe")
    ap.add_argument("--set", action="append", default=[], help="head option key=value")
    ap.add_argument("--folds", default=None, help="only these folds, e.g. 1,2 (default: all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--run", default=None, help="keep the run folder here (resumable)")
    args = ap.parse_args()
    n = int(5531 * args.scale)
    tmp = Path(tempfile.mkdtemp(dir=args.tmp))
    try:
        if args.cache:
            cache = Path(args.cache)
            loop, loop_flags = None, {"epochs": args.epochs}  # the recipe, as `emofuse train`
        else:
            cache = tmp / "bench.h5"
            t0 = time.perf_counter()
            write_cache(cache, n)
            print(f"cache: {n} utterances written in {time.perf_counter() - t0:.1f} s", flush=True)
            loop, loop_flags = LoopConfig(epochs=args.epochs or 20, seed=0), None
        folds = [int(f) for f in args.folds.split(",")] if args.folds else None
        run = Path(args.run) if args.run else tmp / "run"
        done_before = sorted(run.glob("fold_*/metrics.json"))
        t0 = time.perf_counter()
        # cut off by `timeout` (SIGTERM): still report the folds and epochs completed so far
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        summary = None
        try:
            summary = train_run(
                cache,
                args.head,
                run,
                args.split,
                preset=args.preset,
                sets=dict(kv.split("=", 1) for kv in args.set),
                loop=loop,
                loop_flags=loop_flags,
                folds=folds,
                device=args.device,
                progress=False,
            )
        except KeyboardInterrupt:
            pass
        wall = time.perf_counter() - t0
        epochs, per_epoch = [], []
        for f in sorted(run.glob("fold_*/curves.jsonl")):
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
            epochs.append(len(rows))
            per_epoch += [r["seconds"] for r in rows]
        mean_epoch = sum(per_epoch) / max(len(per_epoch), 1)
        finished = [json.loads(m.read_text()) for m in sorted(run.glob("fold_*/metrics.json"))]
        fold_minutes = [m["minutes"] for m in finished if "minutes" in m]
        if args.run:
            print(
                f"run folder {run}: {len(finished)} folds finished ({len(done_before)} before this "
                f"call, {wall / 60:.2f} min this call); their own wall minutes "
                f"{[round(x, 2) for x in fold_minutes]}, sum {sum(fold_minutes):.2f} min"
            )
        if summary is None:
            print(
                f"{args.head} {args.preset} {args.split}: CUT OFF after {wall / 60:.2f} min "
                f"(epochs logged per fold so far {epochs}, the last fold possibly unfinished; "
                f"{mean_epoch:.1f} s per epoch over {len(per_epoch)} epochs)"
            )
            return
        span = f"in {wall / 60:.2f} min"
        if done_before:  # resumed: the wall of this call covers only the folds it ran
            span = f"({len(done_before)} from earlier calls; this call {wall / 60:.2f} min)"
        print(
            f"{args.head} {args.preset} {args.split}: {len(epochs)} folds {span} "
            f"(epochs per fold {epochs}; {mean_epoch:.1f} s per epoch; a full 20-epoch plan would "
            f"take ≈ {len(epochs) * 20 * mean_epoch / 60:.1f} min); pooled UA "
            f"{summary['pooled']['UA']:.3f} "
            + ("on the cache's labels" if args.cache else "on random features (chance 0.25)")
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
