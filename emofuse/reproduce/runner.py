"""Train a reproduced table's rows: one ordinary run folder per row and seed, ``DIR/<slug>/seed<k>``.

Every training run goes through ``emofuse.train.run.train_run``, so each folder is what
``emofuse train`` would write (``emofuse report``/``compare``/``predict`` read it). A finished run
(summary.json and every planned fold finished, made with the same head, preset, overrides, split,
seed and cache) is reused without training; any other folder is handed to ``train_run``, which
resumes the folds it has finished and refuses one made with other settings. A late-fusion row is
``emofuse fuse`` of its members' runs; it is reused while it is finished and newer than every
member, and fused again (seconds) otherwise.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError
from emofuse.reproduce.plan import Row, run_dir
from emofuse.train import run as run_module
from emofuse.train.folds import FoldPlan
from emofuse.train.metrics import summarize
from emofuse.train.paths import absolute
from emofuse.train.rundir import (
    check_finished_folds,
    finished_folds,
    read_fold_predictions,
    read_json,
    write_summary,
)


def open_cache_arg(cache: Any) -> Any:
    """A path (one line if it does not exist) or an already open cache -> an open cache."""
    if not isinstance(cache, str | Path):
        return cache
    from emofuse.cache import open_cache

    if not Path(cache).exists():
        from emofuse.cache.store import missing_cache_error

        raise missing_cache_error(Path(cache), "--cache")
    return open_cache(cache)


def check_streams(cache: Any, rows: Sequence[Row], preset: str | None) -> None:
    """One line naming the first row whose streams the cache lacks, and the extract option."""
    from emofuse.heads.registry import head_streams
    from emofuse.streams import advice
    from emofuse.train.checkpoints import resolve_head

    for row in rows:
        if row.fused:
            continue
        head_cls = resolve_head(row.head)
        cfg = head_cls.make_config(preset, row.overrides)
        missing = sorted(head_streams(head_cls, cfg, row.head) - set(cache.streams))
        if missing:
            name = missing[0]
            raise EmofuseError(
                f"row {row.slug} needs the '{name}' stream, which cache {cache.path} lacks; "
                f"{advice(name)}"
            )


def settings_mismatch(
    config: dict, row: Row, preset: str | None, seed: int, cache: Any, loop_flags: dict
) -> str | None:
    """The first setting in which a run folder's config.json differs from this row and seed."""
    wanted = {
        "head": row.head,
        "preset": preset,
        "set": dict(row.overrides),
        "split": row.split,
        "seed": seed,
        "cache_fingerprint": cache.fingerprint,
    }
    for key, value in wanted.items():
        if config.get(key) != value:
            return f"{key} {config.get(key)!r}, the row's is {value!r}"
    was, now = config.get("cache_digest"), (getattr(cache, "meta", None) or {}).get("digest")
    if was is not None and now is not None and was != now:  # same settings, other contents
        return f"cache content digest {str(was)[:12]}…, the cache's now is {str(now)[:12]}…"
    loop = config.get("loop", {})
    for key, value in loop_flags.items():
        if value is not None and key != "seed" and loop.get(key) != value:
            return f"loop {key} {loop.get(key)!r}, this command's is {value!r}"
    return None


def is_finished(
    out: Path, row: Row, preset: str | None, seed: int, cache: Any, loop_flags: dict
) -> bool:
    """Whether ``out`` is a finished run of exactly this row, seed, preset and cache; a finished
    fold whose files are damaged is one line naming them (never reused into the table)."""
    paths = [out / n for n in ("summary.json", "config.json", "folds.json")]
    if not all(p.is_file() for p in paths):
        return False
    plan = FoldPlan.load(out / "folds.json")
    folds = finished_folds(out)
    if set(folds) != {f.fold for f in plan.folds}:
        return False
    check_finished_folds(out, folds)
    if settings_mismatch(read_json(out / "config.json"), row, preset, seed, cache, loop_flags):
        return False
    _summary_from_folds(out, plan)
    return True


def _summary_from_folds(out: Path, plan: FoldPlan) -> None:
    """The table reads summary.json: one that is not what the (digest-checked) fold files give
    (edited, or stale) is written again from them before the run is reused."""
    parts = [
        (k, read_fold_predictions(out, plan, k, "predictions.csv")) for k in finished_folds(out)
    ]
    fresh = summarize([(k, p["true"], p["predicted"]) for k, p in parts], parts[0][1]["labels"])
    stored = read_json(out / "summary.json")
    if any(json.dumps(stored.get(key)) != json.dumps(fresh[key]) for key in fresh):
        write_summary(out, plan)


def row_mismatch(
    out: Path, row: Row, preset: str | None, seed: int, cache: Any, loop_flags: dict
) -> str | None:
    """How a row's folder that holds a run (a hand-made run, another row's, an earlier reproduce
    with other settings) differs from this row and seed; None when it holds none or the same."""
    if not (out / "config.json").is_file():
        return None
    return settings_mismatch(read_json(out / "config.json"), row, preset, seed, cache, loop_flags)


def check_row_folders(
    out: Path, rows: Sequence[Row], preset: str | None, seeds: Sequence[int], cache: Any,
    loop_flags: dict,
) -> None:  # fmt: skip
    """Every row folder checked before any is trained: a reproduce asked with other settings
    than ``out`` was made with is one line counting all such folders (it was refused one row at
    a time, each after the rows before it had been trained anew)."""
    odd = [
        (path, row, seed, mismatch)
        for row in rows
        if not row.fused
        for seed in seeds
        if (
            mismatch := row_mismatch(
                path := run_dir(out, row.slug, seed), row, preset, seed, cache, loop_flags
            )
        )  # fmt: skip
    ]
    if not odd:
        return
    path, row, seed, mismatch = odd[0]
    more = f", and so do {len(odd) - 1} more row folders of {out}" if len(odd) > 1 else ""
    redo = "those folders" if len(odd) > 1 else "that folder"
    raise EmofuseError(
        f"{path} holds a run made with other settings than row {row.slug} seed {seed} "
        f"({mismatch}){more}; give another --out for these settings, or delete or move {redo} "
        "and rerun"
    )


def fused_is_current(out: Path, members: list[Path]) -> bool:
    """A finished fusion of exactly ``members``, written after each member's summary."""
    summary = out / "summary.json"
    if not (summary.is_file() and (out / "config.json").is_file()):
        return False
    if read_json(out / "config.json").get("fused_runs") != [absolute(m) for m in members]:
        return False
    done = summary.stat().st_mtime_ns
    if any((m / "summary.json").stat().st_mtime_ns > done for m in members):
        return False
    try:  # a damaged fold of a fusion is simply fused again
        check_finished_folds(out, finished_folds(out), trained=False)
    except EmofuseError:
        return False
    return True


def fuse_row(out: Path, members: list[Path]) -> None:
    """Fuse ``members`` into ``out``, replacing an earlier (stale or interrupted) fusion there."""
    from emofuse.train.fuse import fuse_runs

    if out.exists():
        config = out / "config.json"
        if config.is_file() and "fused_runs" not in read_json(config):
            raise EmofuseError(
                f"{out} holds a trained run, not a late fusion; move it away and rerun"
            )
        shutil.rmtree(out)  # a fusion is recomputed from its members in seconds
    fuse_runs(members, out)


TABLE_FILES = ("table.md", "table.png")


def check_reproduce_out(out: Path, rows: Sequence[Row]) -> None:
    """``out`` is new, empty, or an earlier reproduce of these rows: never a run folder or a
    folder of other files (an ordinary run's folder got nine row runs written into it)."""
    if not out.is_dir():
        return
    if (out / "config.json").is_file() or (out / "folds.json").is_file():
        raise EmofuseError(
            f"--out {out} is a run folder (train or fuse wrote it); give reproduce a new folder"
        )
    ours = {r.slug for r in rows} | set(TABLE_FILES)
    other = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if other and any((out / r.slug).is_dir() for r in rows):
        raise EmofuseError(
            f"--out {out} is an earlier run of this table but also holds {other[0]}, which "
            "reproduce did not write: move it out of the folder and rerun"
        )
    if other:
        raise EmofuseError(
            f"--out {out} holds {other[0]}, which is not a row of this table: give a new or empty "
            "folder, or the folder of an earlier run of the same reproduce command"
        )


def run_rows(
    cache: Any,
    rows: Sequence[Row],
    out: str | Path,
    preset: str | None = "small",
    seeds: Sequence[int] = (0,),
    loop_flags: dict[str, Any] | None = None,
    device: str = "auto",
    progress: bool = True,
    jobs: int | None = None,
    echo: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Train (or reuse) every row for every seed; fuse the late-fusion rows.

    ``cache``: an open cache. ``loop_flags``: loop fields over the preset's recipe (as
    ``emofuse train``'s flags; tests shorten the loop with ``{"epochs": 1}``). Returns
    ``{"runs": {slug: {seed: path}}, "trained": [...], "reused": [...]}``.
    """
    if not seeds:
        raise EmofuseError("--seeds: give at least one seed, e.g. 0,1,2")
    out = Path(out)
    check_streams(cache, rows, preset)
    from emofuse.errors import check_out_path

    check_out_path(out)
    check_reproduce_out(out, rows)
    flags = dict(loop_flags or {})
    check_row_folders(out, rows, preset, seeds, cache, flags)
    stale = [out / name for name in TABLE_FILES]  # the table is of the rows as they were

    def redo() -> None:  # before a row is trained or fused again, its old table goes
        for table in stale:
            table.unlink(missing_ok=True)

    runs: dict[str, dict[int, Path]] = {}
    trained, reused = [], []
    for row in rows:
        for seed in seeds:
            path = run_dir(out, row.slug, seed)
            runs.setdefault(row.slug, {})[seed] = path
            if row.fused:
                members = [runs[m][seed] for m in row.members]
                if fused_is_current(path, members):
                    reused.append(path)
                    echo(f"{row.slug} seed {seed}: finished, reused ({path})")
                else:
                    echo(f"{row.slug} seed {seed}: late fusion of {' + '.join(row.members)}")
                    redo()
                    fuse_row(path, members)
                    trained.append(path)
                continue
            if is_finished(path, row, preset, seed, cache, flags):
                reused.append(path)
                echo(f"{row.slug} seed {seed}: finished, reused ({path})")
                continue
            echo(f"{row.slug} seed {seed}: training into {path}")
            redo()
            run_module.train_run(
                cache, row.head, path, row.split, preset=preset, sets=dict(row.overrides),
                loop_flags={**flags, "seed": seed}, device=device, progress=progress, jobs=jobs,
            )  # fmt: skip
            trained.append(path)
    return {"runs": runs, "trained": trained, "reused": reused}


def reproduce(
    cache: Any, table: int, out: str | Path, preset: str | None = "small", **kwargs: Any
) -> dict[str, Any]:
    """TDFNet's Table ``table``: every row and seed trained (or reused), then table.md/png."""
    from emofuse.reproduce import tdfnet
    from emofuse.reproduce.table import write_table

    rows = tdfnet.rows(table)
    cache = open_cache_arg(cache)
    result = run_rows(cache, rows, out, preset=preset, **kwargs)
    result["table"] = write_table(table, rows, result["runs"], Path(out), cache.table)
    return result


def reproduce_multilevel(
    cache: Any, out: str | Path, split: str = "loso", preset: str | None = "small", **kwargs: Any
) -> dict[str, Any]:
    """The multi-level fusion system's rows (``multilevel.rows``), then table.md/png."""
    from emofuse.reproduce import multilevel

    rows = multilevel.rows(split)
    cache = open_cache_arg(cache)
    result = run_rows(cache, rows, out, preset=preset, **kwargs)
    result["table"] = multilevel.write_table(rows, result["runs"], Path(out))
    return result
