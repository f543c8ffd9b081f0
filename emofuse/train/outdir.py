"""Which folders ``emofuse train`` / ``emofuse fuse`` may write into as ``--out``.

A run folder's files have fixed names (config.json, folds.json, predictions.csv …), so writing
into a folder of the user's that happens to hold a ``config.json`` would replace it. ``--out``
must therefore be new, empty, or a run folder of emofuse, recognised by its own files: a
``config.json`` that is a run's (train's carries ``emofuse_version``, a late fusion's
``fused_runs``), a ``folds.json`` that is a fold plan (a fuse stopped before its config.json), or
only the temporary file a run killed while writing its first config.json leaves behind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from emofuse.errors import EmofuseError
from emofuse.fileio import write_json

RUN_CONFIG_KEYS = ("emofuse_version", "fused_runs")  # one of them is in every run's config.json
PLAN_KEYS = {"split", "seed", "folds"}
FIRST_WRITE_LEFTOVERS = {"config.json.tmp"}  # a run killed while writing its first file


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def is_run_folder(out: Path) -> bool:
    """``out`` holds a run of emofuse (trained or fused, finished or not), by its own files."""
    config = _json_object(out / "config.json")
    if config is not None and any(key in config for key in RUN_CONFIG_KEYS):
        return True
    plan = _json_object(out / "folds.json")
    if plan is not None and PLAN_KEYS <= set(plan) and isinstance(plan.get("folds"), list):
        return True
    try:
        names = {p.name for p in out.iterdir()}
    except OSError:  # not there (or not a readable folder): holds no run
        return False
    return bool(names) and names <= FIRST_WRITE_LEFTOVERS


def check_run_out(out: Path, command: str) -> None:
    """One-line refusal of an ``--out`` that is a non-empty folder but not an emofuse run folder:
    ``command`` would overwrite the user's files in it (nothing is written here)."""
    if not out.is_dir():
        return
    try:
        empty = next(out.iterdir(), None) is None
        if empty or is_run_folder(out):
            return
    except OSError:  # unreadable: the writability checks and the lock say what is wrong
        return
    raise EmofuseError(
        f"--out {out} is a folder that is not empty and not an emofuse run folder (no run "
        f"config.json or folds.json in it); {command} would overwrite its files there: give a "
        "new or empty --out"
    )


def enclosing_run(out: Path) -> Path | None:
    """The run folder (trained or fused) that ``out`` lies inside, or None: a run written into
    another's folder is one ``rm -rf fold_01`` (advice other commands give) away from loss."""
    for parent in Path(out).resolve().parents:
        if is_run_folder(parent):
            return parent
    return None


def check_outside_runs(out: Path, what: str) -> None:
    """One line when ``out`` is inside a run folder; ``what`` names what ``out`` is for."""
    run = enclosing_run(out)
    if run is not None:
        raise EmofuseError(
            f"--out {out} is inside the run folder {run}; give {what} outside any run folder"
        )


def not_a_run(run: Path, command: str) -> EmofuseError:
    """The one-line refusal for a folder that holds no run, pointing at the run inside it where
    it is a folder of ``emofuse reproduce`` (its root holds rows, each row holds seed runs)."""
    config = _json_object(run / "config.json") if (run / "config.json").is_file() else None
    plan = run / "folds.json"
    if config and any(k in config for k in RUN_CONFIG_KEYS) and not plan.is_file():
        return EmofuseError(  # a run that lost its fold plan
            f"{plan} "
            + ("is not a regular file: move it away, then " if plan.exists() else "is missing (deleted or lost); ")
            + _remake_plan(run, config)
        )  # fmt: skip
    parent = run.parent
    if re.fullmatch(r"fold_\d+", run.name) and (parent / "folds.json").is_file():
        return EmofuseError(f"{run} is one fold of the run {parent}: give the run folder {parent}")
    return reproduce_refusal(run, command) or EmofuseError(
        f"{run} is not a run folder (no folds.json/config.json): train it first"
    )


def _remake_plan(run: Path, config: dict[str, Any]) -> str:
    if "cache" in config:  # a trained run (fuse writes no cache)
        from emofuse.train.command import train_command

        return (
            f"rerun {train_command(run)} (it writes the fold plan again and keeps the finished "
            "folds)"
        )
    return "fuse its runs again into a new --out"


def plan_fix(plan: Path) -> str:
    """What to do about a run's folds.json that is torn or edited: delete it and let the run's
    own command write it again (train keeps the finished folds); outside a run, restore it."""
    config = _json_object(plan.parent / "config.json")
    if config and any(k in config for k in RUN_CONFIG_KEYS):
        return "restore it, or delete it and " + _remake_plan(plan.parent, config)
    return "restore it, or train again into a new --out"


def reproduce_refusal(run: Path, command: str) -> EmofuseError | None:
    """The refusal naming a run inside ``run`` where it is an ``emofuse reproduce`` folder or one
    of its rows; None for any other folder. The example is a finished row run (an interrupted
    reproduce has unfinished ones, and no table yet)."""

    def example(r: Path) -> str:
        if command in ("report", "predict"):
            return f"`emofuse report {r}`" if command == "report" else f"--run {r}"
        return str(r)

    def pick(runs: list[Path]) -> str:
        done = [r for r in runs if (r / "summary.json").is_file()] or runs
        return example(done[0])

    rows = sorted(p.parent for p in run.glob("*/seed*/config.json"))
    if rows:
        if not (run / "table.md").is_file():
            return EmofuseError(
                f"{run} is an unfinished `emofuse reproduce` folder (no table.md yet): rerun the "
                f"same `emofuse reproduce … --out {run}` to finish it"
                + ("" if not any((r / "summary.json").is_file() for r in rows) else
                   f", or give one of its finished row runs, e.g. {pick(rows)}")
            )  # fmt: skip
        return EmofuseError(
            f"{run} is an `emofuse reproduce` folder (its table: {run / 'table.md'}), not a run: "
            f"give one of its row runs, e.g. {pick(rows)}"
        )
    seeds = sorted(p.parent for p in run.glob("seed*/config.json"))
    if seeds:
        return EmofuseError(
            f"{run} is a row of an `emofuse reproduce` folder, not a run: give one of its seed "
            f"runs, e.g. {pick(seeds)} ({len(seeds)} seed runs)"
        )
    return None


def unfinished_advice(run: Path) -> str:
    """How to finish a run with no finished fold: a row run of ``emofuse reproduce``
    (DIR/row/seedN) is finished by rerunning the reproduce, any other by ``emofuse train``."""
    root = run.parent.parent
    if run.name.startswith("seed") and reproduce_refusal(root, "report") is not None:
        return f"rerun the same `emofuse reproduce … --out {root}` to finish it"
    return "run `emofuse train` to completion first"


def finish_advice(fused: bool) -> str:
    """How to finish a run's missing folds: train resumes a trained run; a late fusion is made
    again from finished members (train refuses a fused folder as --out)."""
    if fused:
        return (
            "finish those folds in every member run with `emofuse train`, then fuse them again "
            "into a new --out"
        )
    return (
        "rerun `emofuse train` with the same options, but without --folds (or with --folds "
        "naming the missing ones): it trains the missing folds only"
    )


def record_wall(out: Path, folds: list[int], jobs: int, seconds: float) -> None:
    """Append this call's wall time to ``wall.json`` (a plan resumed over several calls sums them;
    with parallel jobs the folds' own minutes add up to more than the wall)."""
    path = out / "wall.json"
    try:
        calls = list(json.loads(path.read_text())["calls"]) if path.is_file() else []
    except (OSError, ValueError, KeyError, TypeError):
        raise EmofuseError(
            f"{path} is damaged (it only records wall times; the folds are saved): delete it and "
            "rerun the same command"
        ) from None
    calls.append({"folds": folds, "jobs": jobs, "minutes": round(seconds / 60, 3)})
    write_json(path, {"calls": calls})


def is_fused_folder(run: Path) -> bool:
    """``run`` holds a late fusion, finished (its config.json records ``fused_runs``) or not:
    a fold plan without config.json (train writes config.json first, fuse writes it last)."""
    config = _json_object(run / "config.json")
    if config is not None:
        return "fused_runs" in config
    return (run / "folds.json").is_file() and not (run / "config.json").exists()


def unfinished_fuse_members(run: Path) -> list[str]:
    """The member runs an unfinished fuse into ``run`` was given (from its folds' metrics.json,
    which record each member's weight), or [] when no fold of it got that far."""
    for path in sorted(run.glob("fold_*/metrics.json")):
        metrics = _json_object(path)
        weights = metrics.get("weights") if metrics is not None else None
        if isinstance(weights, dict) and weights:
            return [str(m) for m in weights]
    return []


def config_missing_error(run: Path) -> EmofuseError | None:
    """The refusal for a run folder with a fold plan but no config.json (None: not that case):
    a fuse stopped before its last file (train writes config.json before folds.json, fuse copies
    folds.json first), or a trained run whose config was lost."""
    config = run / "config.json"
    if not (run / "folds.json").is_file() or config.is_file():
        return None
    gone = "is not a regular file" if config.exists() else "is missing (deleted or lost)"
    if any(run.glob("fold_*/checkpoint.pt")):  # trained folds: a train run lost its config
        return EmofuseError(
            f"{config} {gone}, and a trained run cannot be "
            "reported, resumed or predicted without the settings it records; restore it, or "
            "train again into a new --out"
        )
    members = " ".join(unfinished_fuse_members(run)) or "RUN RUN …"
    return EmofuseError(
        f"{run} is an unfinished `emofuse fuse` (it stopped before writing config.json): "
        f"rerun the same `emofuse fuse {members} --out {run}`"
    )
