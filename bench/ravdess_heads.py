"""Every head at its defaults on a real-speech cache: the heads-at-defaults acceptance table.

Runs ``emofuse train --split lopo --head H`` with no loop flags for each head (``--preset small``
for tdfnet and coattention; ``--set use_speaker=false`` for tdfnet when the cache has no speaker
stream), exactly as a user would, then prints per head: pooled test UA / WA, per-fold UA mean ± std,
pooled validation UA (the only figure settings may be chosen on), and the plan's minutes: its wall
clock (the run's wall.json: every `emofuse train` call that trained folds, with how many folds ran
at once) and the sum of the folds' own wall minutes (metrics.json). Rerunning resumes finished folds.

    .venv/bin/python bench/ravdess_heads.py --cache /tmp/ravdess/whisper-minilm.h5 --out /tmp/ravdess/final
    .venv/bin/python bench/ravdess_heads.py ... --heads tdfnet,coattention --table-only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from emofuse.cache import open_cache
from emofuse.train.metrics import scores
from emofuse.train.rundir import finished_folds, fold_dir, read_predictions

HEADS = ("audio", "concat", "pooled", "coattention", "tdfnet")
PRESET = {"tdfnet": "small", "coattention": "small"}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def command(head: str, cache: Path, out: Path, has_speaker: bool) -> list[str]:
    cmd = [sys.executable, "-m", "emofuse", "train", "--cache", str(cache), "--split", "lopo"]
    cmd += ["--head", head, "--out", str(out / head), "--quiet"]
    if head in PRESET:
        cmd += ["--preset", PRESET[head]]
    if head == "tdfnet" and not has_speaker:
        cmd += ["--set", "use_speaker=false"]
    return cmd


def row(run: Path) -> dict:
    test = read_predictions(run / "predictions.csv")
    val = read_predictions(run / "val_predictions.csv")
    summary = json.loads((run / "summary.json").read_text())
    minutes = [
        json.loads((fold_dir(run, k) / "metrics.json").read_text()).get("minutes", float("nan"))
        for k in finished_folds(run)
    ]
    t, v = scores(test["true"], test["predicted"]), scores(val["true"], val["predicted"])
    calls = (
        json.loads((run / "wall.json").read_text())["calls"]
        if (run / "wall.json").is_file()
        else []
    )
    return {
        "UA": t["UA"],
        "WA": t["WA"],
        "fold_mean": summary["mean"]["UA"],
        "fold_std": summary["std"]["UA"],
        "val_UA": v["UA"],
        "minutes": float(np.sum(minutes)),
        "wall": sum(c["minutes"] for c in calls) if calls else float("nan"),
        "jobs": max((c["jobs"] for c in calls), default=1),
        "folds": len(minutes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--table-only", action="store_true", help="only print the table of done runs")
    args = ap.parse_args()
    heads = [h for h in args.heads.split(",") if h]
    with open_cache(args.cache) as cache:
        has_speaker = "speaker" in cache.streams
    print(f"cpu: {cpu_model()}; {os.cpu_count()} cores; load {os.getloadavg()}")
    for head in heads:
        if args.table_only:
            continue
        cmd = command(head, args.cache, args.out, has_speaker)
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)
    print(
        "| head | pooled UA | pooled WA | per-fold UA mean ± std | val UA | wall min (folds at "
        "once) | fold minutes (folds) |"
    )
    print("|---|---|---|---|---|---|---|")
    for head in heads:
        if not (args.out / head / "summary.json").is_file():
            print(f"| {head} | — | — | — | — | — | not run |")
            continue
        r = row(args.out / head)
        print(
            f"| {head} | {r['UA']:.4f} | {r['WA']:.4f} | {r['fold_mean']:.3f} ± {r['fold_std']:.3f} "
            f"| {r['val_UA']:.4f} | {r['wall']:.2f} ({r['jobs']}) | {r['minutes']:.2f} ({r['folds']}) |"
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
