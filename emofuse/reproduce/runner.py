"""Train a paper table's rows: one ordinary run folder per row and seed, ``DIR/<slug>/seed<k>``.

Every run goes through ``emofuse.train.run.train_run``, so each folder is what ``emofuse train``
would write (``emofuse report``/``compare``/``predict`` read it). A finished run (summary.json and
every planned fold finished, made with the same preset, overrides, split, seed and cache) is
reused without training; any other folder is handed to ``train_run``, which resumes the folds it
has finished and refuses one made with other settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError
from emofuse.reproduce import tdfnet
from emofuse.train import run as run_module
from emofuse.train.folds import FoldPlan
from emofuse.train.rundir import finished_folds, read_json


def run_dir(out: Path, slug: str, seed: int) -> Path:
    return Path(out) / slug / f"seed{seed}"


def check_streams(cache: Any, rows: Sequence[tdfnet.Row], preset: str | None) -> None:
    """One line naming the first row whose streams the cache lacks, and the extract option."""
    from emofuse.streams import advice
    from emofuse.train.checkpoints import resolve_head

    head_cls = resolve_head(tdfnet.HEAD)
    for row in rows:
        cfg = head_cls.make_config(preset, row.overrides)
        missing = sorted(set(head_cls.required_streams(cfg)) - set(cache.streams))
        if missing:
            name = missing[0]
            raise EmofuseError(
                f"row {row.slug} needs the '{name}' stream, which cache {cache.path} lacks; "
                f"{advice(name)}"
            )


def is_finished(
    out: Path, row: tdfnet.Row, preset: str | None, seed: int, cache: Any, loop_flags: dict
) -> bool:
    """Whether ``out`` is a finished run of exactly this row, seed, preset and cache."""
    paths = [out / n for n in ("summary.json", "config.json", "folds.json")]
    if not all(p.is_file() for p in paths):
        return False
    plan = FoldPlan.load(out / "folds.json")
    if set(finished_folds(out)) != {f.fold for f in plan.folds}:
        return False
    config = read_json(out / "config.json")
    wanted = {
        "preset": preset,
        "set": dict(row.overrides),
        "split": row.split,
        "seed": seed,
        "cache_fingerprint": cache.fingerprint,
    }
    if any(config.get(k) != v for k, v in wanted.items()):
        return False
    loop = config.get("loop", {})
    return all(loop.get(k) == v for k, v in loop_flags.items() if v is not None and k != "seed")


def reproduce(
    cache: Any,
    table: int,
    out: str | Path,
    preset: str | None = "small",
    seeds: Sequence[int] = (0,),
    loop_flags: dict[str, Any] | None = None,
    device: str = "auto",
    progress: bool = True,
    jobs: int | None = None,
    echo=lambda line: None,
) -> dict[str, Any]:
    """Train (or reuse) every row of Table ``table`` for every seed, then write the table.

    ``cache``: a path or an open cache. ``loop_flags``: loop fields over the preset's recipe (as
    ``emofuse train``'s flags; tests shorten the loop with ``{"epochs": 1}``). Returns
    ``{"runs": {slug: {seed: path}}, "trained": [...], "reused": [...], "table": path}``.
    """
    from emofuse.reproduce.table import write_table

    rows = tdfnet.rows(table)
    if not seeds:
        raise EmofuseError("--seeds: give at least one seed, e.g. 0,1,2")
    out = Path(out)
    if isinstance(cache, str | Path):
        from emofuse.cache import open_cache

        if not Path(cache).exists():
            from emofuse.cache.store import missing_cache_error

            raise missing_cache_error(Path(cache), "--cache")
        cache = open_cache(cache)
    check_streams(cache, rows, preset)
    from emofuse.errors import check_out_path

    check_out_path(out)
    flags = dict(loop_flags or {})
    runs: dict[str, dict[int, Path]] = {}
    trained, reused = [], []
    for row in rows:
        for seed in seeds:
            path = run_dir(out, row.slug, seed)
            runs.setdefault(row.slug, {})[seed] = path
            if is_finished(path, row, preset, seed, cache, flags):
                reused.append(path)
                echo(f"{row.slug} seed {seed}: finished, reused ({path})")
                continue
            echo(f"{row.slug} seed {seed}: training into {path}")
            run_module.train_run(
                cache, tdfnet.HEAD, path, row.split, preset=preset, sets=dict(row.overrides),
                loop_flags={**flags, "seed": seed}, device=device, progress=progress, jobs=jobs,
            )  # fmt: skip
            trained.append(path)
    table_path = write_table(table, rows, runs, out, cache.table)
    return {"runs": runs, "trained": trained, "reused": reused, "table": table_path}
