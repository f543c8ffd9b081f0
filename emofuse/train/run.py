"""A training run: cache + head + fold plan → a self-contained, resumable run folder.

Run folder layout (contract, docs/architecture.md §5)::

    config.json            everything needed to rerun (head, config, split, seed, loop, cache fingerprint)
    folds.json             the fold plan (FoldPlan JSON)
    fold_01/               curves.jsonl (one JSON line per epoch), checkpoint.pt (best val loss),
                           predictions.csv (test), val_predictions.csv, metrics.json (UA/WA/F1,
                           best epoch, wall minutes; written last: its presence marks the fold
                           finished, so a rerun skips it)
    predictions.csv        pooled test predictions: id, fold, true, predicted, p_<label>…
    val_predictions.csv    the same for validation (late fusion picks its weights on these)
    summary.json           per-fold, mean, std, pooled UA/WA/F1 (fractions) + pooled confusion
    report.md, confusion.png, curves.png

Folds are independent and seeded from (seed, fold) alone, so they can run in any order, resume
after a kill, or spread over ``torchrun`` ranks (round-robin) with results identical to a serial run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import errno
import json
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist

from emofuse import __version__, faults
from emofuse.errors import EmofuseError, check_out_path, os_reason
from emofuse.locks import output_lock
from emofuse.train import parallel
from emofuse.train.data import TrainData
from emofuse.train.folds import Fold, FoldPlan, build_folds_from_columns
from emofuse.train.loop import FoldOutput, LoopConfig, train_fold
from emofuse.train.metrics import summarize
from emofuse.train.recipes import resolve_loop

# config.json keys that may change between a run and its resume without changing any result
RESUME_FREE = ("folds", "device", "cache", "loop_sources")


def resolve_head(spec: str) -> type:
    """``NAME`` from the head registry, or ``path/to/file.py:Class`` for a user's own head.

    The registry raises a one-line EmofuseError listing the built-in names for an unknown head.
    """
    from emofuse.heads import get_head

    return get_head(spec)


def make_dims(data: TrainData) -> Any:
    """The heads' ``InputDims`` from what the data layer loaded ((L, D) per stream, speaker (1, F))."""
    from emofuse.heads.base import InputDims

    dims = {k: (v[0] if len(v) == 1 else v) for k, v in data.dims().items()}
    return InputDims(**dims)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """Write ``path`` through ``<path>.tmp`` renamed into place when the block ends: a kill or a
    full disk never leaves a half-written file under the final name. A failed write removes the
    temporary file and raises an OSError that names ``path`` (a write error on an open file
    carries no file name of its own)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open(mode, **kw) as fh:
            yield fh
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def _json_write(path: Path, obj: Any) -> None:
    """Write atomically (tmp + rename): a kill never leaves a half-written marker file."""
    with atomic_open(path) as fh:
        fh.write(json.dumps(obj, indent=1) + "\n")


def _dist_env() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def fold_dir(out: Path, k: int) -> Path:
    return out / f"fold_{k:02d}"


def write_predictions(
    path: Path, fold: int, ids: Sequence[str], true: Sequence[str], probs: np.ndarray, labels
) -> None:
    """CSV with id, fold, true, predicted, one probability column per class (full precision)."""
    with atomic_open(path, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "fold", "true", "predicted", *[f"p_{lab}" for lab in labels]])
        pred = np.asarray(labels)[probs.argmax(1)]
        for i, t, p, row in zip(ids, true, pred, probs, strict=True):
            w.writerow([i, fold, t, p, *[repr(float(x)) for x in row]])


def read_predictions(path: Path) -> dict[str, Any]:
    """``{"ids", "fold", "true", "predicted", "labels", "probs" (N, C)}`` from a predictions CSV;
    a file that is not one (cut, edited, overwritten) is a one-line error naming it."""
    if not path.is_file():
        raise EmofuseError(f"{path} is missing; rerun `emofuse train` for this run folder")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            raise ValueError("empty file")
        header, body = rows[0], rows[1:]
        if header[:4] != ["id", "fold", "true", "predicted"] or len(header) < 6:
            raise ValueError("not the header id,fold,true,predicted,p_<label>…")
        labels = [h[2:] for h in header[4:]]
        if any(len(r) != len(header) for r in body):
            raise ValueError(f"a row without {len(header)} fields")
        probs = np.array([[float(x) for x in r[4:]] for r in body], dtype=np.float64).reshape(
            len(body), len(labels)
        )
        if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1 + 1e-6).any():
            raise ValueError("a probability outside [0, 1]")
        part = {
            "ids": [r[0] for r in body],
            "fold": [int(r[1]) for r in body],
            "true": [r[2] for r in body],
            "predicted": [r[3] for r in body],
            "labels": labels,
            "probs": probs,
        }
        if not set(part["true"]) | set(part["predicted"]) <= set(labels):
            raise ValueError("a label without its p_<label> column")
    except (UnicodeDecodeError, csv.Error, ValueError) as err:
        reason = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        raise EmofuseError(f"{path} is damaged ({reason}); {_redo_advice(path)}") from None
    return part


def _redo_advice(path: Path) -> str:
    """What remakes a damaged file of a run folder: its fold retrained, or the report rewritten."""
    folder = path.parent
    if not re.fullmatch(r"fold_\d+", folder.name):  # a pooled file of the run
        return f"rerun `emofuse report {folder}` (it rewrites it from the folds)"
    run = folder.parent
    with contextlib.suppress(EmofuseError):
        if not is_trained_run(read_json(run / "config.json")):
            return f"fuse the runs of {run} again into a new --out"
    return f"delete {folder} and rerun `emofuse train` for {run} (it retrains that fold only)"


def read_fold_predictions(run: Path, plan: FoldPlan, k: int, kind: str) -> dict[str, Any]:
    """Fold ``k``'s ``predictions.csv`` (test) or ``val_predictions.csv``, which must hold exactly
    that fold's utterances of ``plan``: a cut or edited file is never summarised or fused."""
    path = fold_dir(run, k) / kind
    part = read_predictions(path)
    fold = plan.fold(k)
    expected = fold.test if kind == "predictions.csv" else fold.val
    if sorted(part["ids"]) != sorted(expected):
        raise EmofuseError(
            f"{path} does not hold the {len(expected)} utterances of fold {k} "
            f"({len(part['ids'])} rows); {_redo_advice(path)}"
        )
    return part


def test_set_name(split: str, fold: Fold, table: dict[str, Any]) -> str:
    """What fold k tests, for the report: the session (loso), the speaker (lopo), or the tenth."""
    column = {"loso": "session", "lopo": "speaker"}.get(split)
    if column is None:
        return "test rows" if split == "predefined" else f"tenth {fold.fold}"
    test = set(fold.test)
    values = {str(v) for i, v in zip(table["id"], table[column], strict=True) if str(i) in test}
    return ",".join(sorted(values))


def save_fold(
    out: Path,
    result: FoldOutput,
    data: TrainData,
    head_meta: dict[str, Any],
    test_set: str = "",
    seconds: float | None = None,
) -> dict:
    """Write one finished fold; metrics.json goes last and marks the fold done.

    ``seconds``: the fold's wall time (training and predictions), stored as ``minutes``.
    """
    d = fold_dir(out, result.fold)
    d.mkdir(parents=True, exist_ok=True)
    faults.reach("fold-write")
    names = data.label_names
    # through a Python file object: torch.save to a path turns a full disk into a RuntimeError
    with atomic_open(d / "checkpoint.pt", "wb") as fh:
        torch.save({**head_meta, "fold": result.fold, "state_dict": result.state_dict}, fh)
    for fname, idx, probs in (
        ("val_predictions.csv", result.val_idx, result.val_probs),
        ("predictions.csv", result.test_idx, result.test_probs),
    ):
        ids = [data.ids[i] for i in idx.tolist()]
        true = [names[int(y)] for y in data.labels[idx.to(data.labels.device)].tolist()]
        write_predictions(d / fname, result.fold, ids, true, probs, names)
    test = read_predictions(d / "predictions.csv")
    fold_summary = summarize([(result.fold, test["true"], test["predicted"])], names)
    metrics = {
        "fold": result.fold,
        "test_set": test_set,
        **{m: fold_summary["pooled"][m] for m in ("UA", "WA", "F1")},
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curves),
        **({"minutes": round(seconds / 60, 3)} if seconds is not None else {}),
        "confusion": fold_summary["confusion"],
    }
    _json_write(d / "metrics.json", metrics)
    return metrics


def finished_folds(out: Path) -> list[int]:
    return sorted(
        int(p.parent.name[len("fold_") :])
        for p in out.glob("fold_*/metrics.json")
        if p.is_file() and re.fullmatch(r"fold_\d+", p.parent.name)  # not fold_01_backup
    )


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole checkpoint (missing, cut short, not a torch file), or None.

    Cheap: reads the zip directory that torch.save writes at the end of the file (a file cut short
    has none) and checks that every member ends inside the file; no tensor is read."""
    if not path.is_file():
        return "is missing"
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "is damaged (cut short, or not a torch checkpoint)"
    if not members or any(m.header_offset + m.compress_size > size for m in members):
        return "is damaged (cut short)"
    return None


def is_trained_run(config: dict[str, Any]) -> bool:
    """A run trained here (its folds keep checkpoints), not a late fusion of runs (none)."""
    return "fused_runs" not in config


def check_finished_folds(run: Path, folds: Sequence[int], trained: bool = True) -> None:
    """The files a finished fold must keep whole (its curves.jsonl; a trained run's checkpoint.pt),
    checked before a resume trains anything and before a report: a damaged one is one line naming
    it, never a run reported complete with a fold that predict cannot load."""
    for k in folds:
        if (fold_dir(run, k) / "curves.jsonl").is_file():
            read_curves(fold_dir(run, k) / "curves.jsonl")
    if trained:
        check_checkpoints(run, folds)


def check_checkpoints(run: Path, folds: Sequence[int]) -> None:
    """Each fold's checkpoint.pt is whole (:func:`checkpoint_problem`), else one line naming it."""
    for k in folds:
        d = fold_dir(run, k)
        problem = checkpoint_problem(d / "checkpoint.pt")
        if problem:
            raise EmofuseError(
                f"{d / 'checkpoint.pt'} {problem}, so fold {k} is not finished; delete {d} and "
                f"rerun `emofuse train` for {run} (it retrains that fold only)"
            )


def missing_folds_note(run: Path, plan: FoldPlan, advice: str) -> str | None:
    """``k of n folds finished; missing: …`` for a run that lacks folds of its plan (None when it
    has them all): report and fuse print it, so a partial result is never shown as a whole one."""
    done = set(finished_folds(run))
    missing = [f.fold for f in plan.folds if f.fold not in done]
    if not missing:
        return None
    return (
        f"{len(done)} of {len(plan.folds)} folds finished; missing: "
        f"{', '.join(map(str, missing))} ({advice})"
    )


def write_summary(out: Path, plan: FoldPlan) -> dict[str, Any]:
    """summary.json + pooled predictions CSVs from every finished fold (in fold order)."""
    done = finished_folds(out)
    if not done:
        raise EmofuseError(f"{out} has no finished fold yet; run `emofuse train` first")
    pooled = {
        kind: [read_fold_predictions(out, plan, k, kind) for k in done]
        for kind in ("predictions.csv", "val_predictions.csv")
    }
    labels = pooled["predictions.csv"][0]["labels"]
    # summary.json goes first and comes back last: it never describes pooled files that a failed
    # rewrite (a full disk) left from another set of folds
    (out / "summary.json").unlink(missing_ok=True)
    for kind, parts in pooled.items():
        with atomic_open(out / kind, newline="") as fh:
            w = csv.writer(fh)
            header = [f"p_{lab}" for lab in parts[0]["labels"]]
            w.writerow(["id", "fold", "true", "predicted", *header])
            for p in parts:
                for r in zip(
                    p["ids"], p["fold"], p["true"], p["predicted"], p["probs"], strict=True
                ):
                    w.writerow([*r[:4], *[repr(float(x)) for x in r[4]]])
    per_fold = [
        (k, p["true"], p["predicted"]) for k, p in zip(done, pooled["predictions.csv"], strict=True)
    ]
    summary = summarize(per_fold, labels)
    summary["split"] = plan.split
    summary["folds_planned"] = len(plan.folds)
    _json_write(out / "summary.json", summary)
    return summary


def run_config(
    head_spec: str,
    head_cls: type,
    cfg: Any,
    preset: str | None,
    sets: dict[str, str],
    cache: Any,
    split: str,
    loop: LoopConfig,
    labels: list[str],
    folds: list[int] | None,
    device: str,
    loop_sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "emofuse_version": __version__,
        "head": head_spec,
        "head_name": getattr(head_cls, "name", head_cls.__name__),
        "preset": preset,
        "set": dict(sets),
        "head_config": dataclasses.asdict(cfg),
        "cache": str(getattr(cache, "path", cache)),
        "cache_fingerprint": cache.fingerprint,
        # the extraction settings (encoders, layers, text normalisation): what predict re-creates
        "cache_settings": getattr(cache, "settings", None),
        "split": split,
        "seed": loop.seed,
        "loop": dataclasses.asdict(loop),
        # per loop field: "default" (the papers' protocol), "recipe" (the head's preset) or "flag"
        "loop_sources": loop_sources or {k: "given" for k in dataclasses.asdict(loop)},
        "labels": labels,
        "folds": folds,
        "device": device,
    }


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file (config, metrics, summary: each one object); a damaged one is a
    one-line error naming it."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = type(err).__name__
    else:
        if isinstance(obj, dict):
            return obj
        reason = f"a JSON {type(obj).__name__}, not an object"
    raise EmofuseError(
        f"{path} is unreadable ({reason}); restore it, or delete the run folder and train again"
    )


def read_curves(path: Path) -> list[dict[str, Any]]:
    """One fold's curves.jsonl; a damaged line is a one-line error naming the file and line."""
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not {"epoch", "train_loss", "val_loss", "val_UA"} <= set(
            row
        ):
            raise EmofuseError(
                f"{path} line {n} is damaged; delete {path.parent} and rerun `emofuse train` "
                "(it retrains that fold only)"
            )
        rows.append(row)
    return rows


def check_buildable(
    head_spec: str, head_cls: type, cfg: Any, dims: Any, n_classes: int, sets: dict[str, str]
) -> None:
    """Build the head once before anything is written: a config value that only its layers
    refuse (a user head without checks of its own) is one line, and leaves no run folder."""
    try:
        head_cls(cfg, dims, n_classes)
    except EmofuseError:
        raise
    except (ValueError, TypeError, RuntimeError, AssertionError, KeyError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        given = " ".join(f"--set {k}={v}" for k, v in sets.items()) or "its preset's values"
        raise EmofuseError(
            f"head {head_spec} cannot be built with this config ({type(err).__name__}: {reason}); "
            f"check {given}"
        ) from None


def check_out(out: Path, cache_path: str | Path | None) -> None:
    """One-line errors for an ``--out`` that cannot be a run folder: a file, a path under a regular
    file, or a place inside the cache (a Zarr cache is a folder; ``.parts`` is its journal)."""
    if out.exists() and not out.is_dir():
        raise EmofuseError(f"--out {out} is a file, not a folder; give a folder for the run")
    check_out_path(out)  # a parent that is a regular file, or not writable
    from emofuse.cache.store import check_outside_caches

    check_outside_caches(out, "a run folder", [cache_path] if cache_path is not None else [])


def prepare_out(out: Path) -> None:
    """Create the run folder ``out``; what the file system refuses is a one-line error."""
    if out.exists() and not out.is_dir():
        raise EmofuseError(f"--out {out} is a file, not a folder; give a folder for the run")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise EmofuseError(
            f"--out {out}: a parent is a regular file, not a folder; choose another --out"
        ) from None
    except OSError as err:
        raise EmofuseError(
            f"cannot create the run folder {out} ({os_reason(err)}); choose a writable --out"
        ) from None


WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


@contextlib.contextmanager
def writes_into(out: Path) -> Any:
    """A write that the file system refuses (disk full, read-only, no permission) is one line
    saying that the finished folds are kept and the same command resumes."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRORS:
            raise
        for tmp in out.glob("**/*.tmp"):  # a half-written file never stays behind
            with contextlib.suppress(OSError):
                tmp.unlink()
        where = f" writing {err.filename}" if err.filename else ""
        fix = (
            "free disk space"
            if err.errno in (errno.ENOSPC, errno.EDQUOT)
            else "make it writable (or choose another --out)"
        )
        kept = len(finished_folds(out)) if out.is_dir() else 0
        raise EmofuseError(
            f"cannot write the run folder {out} ({os_reason(err)}{where}); {fix}, then rerun the "
            f"same command: its {kept} finished fold(s) are kept and only the rest is trained"
        ) from None


def check_resume(out: Path, config: dict[str, Any]) -> None:
    """Refuse to mix results of different settings in one run folder (a folder with no finished
    fold holds no result, so a corrected command simply starts it again)."""
    path = out / "config.json"
    if not path.is_file() or not finished_folds(out):
        return
    old = read_json(path)
    for key in sorted(set(old) | set(config)):
        if key in RESUME_FREE:
            continue
        if old.get(key) != config.get(key):
            raise EmofuseError(
                f"run folder {out} was made with different settings ({key}: {old.get(key)!r} vs "
                f"{config.get(key)!r}); use a new --out or the original settings"
            )


def load_data(
    cache: Any, head_spec: str, head_cls: type, cfg: Any, loop: LoopConfig, device: str
) -> TrainData:
    """The streams ``cfg`` reads, loaded once (per-speaker standardised with ``--speaker-norm``)."""
    needs = set(head_cls.required_streams(cfg))
    if "speaker" in needs and "speaker" not in cache.streams and hasattr(cfg, "use_speaker"):
        raise EmofuseError(
            f"head {head_spec} reads a speaker vector but cache {getattr(cache, 'path', '')} has "
            "no 'speaker' stream; train without it (--set use_speaker=false) or re-extract with "
            "a --speaker-model"
        )
    data = TrainData.from_cache(cache, needs, cfg, device)
    if loop.speaker_norm:
        speakers = ["" if x is None else str(x) for x in cache.table["speaker"]]
        if "" in speakers:
            raise EmofuseError(
                f"--speaker-norm needs a speaker for every utterance; {speakers.count('')} in "
                f"{getattr(cache, 'path', 'the cache')} have none (fill the manifest's speaker column)"
            )
        data.normalize_per_speaker(speakers)
    return data


def train_run(
    cache: Any,
    head_spec: str,
    out: str | Path,
    split: str,
    preset: str | None = None,
    sets: dict[str, str] | None = None,
    loop: LoopConfig | None = None,
    folds: Sequence[int] | None = None,
    device: str = "auto",
    progress: bool = True,
    loop_flags: dict[str, Any] | None = None,
    jobs: int | None = None,
    lopo_val: str = "partner",
) -> dict[str, Any] | None:
    """Train every selected fold not already finished in ``out``; return the summary (rank 0).

    ``lopo_val``: how ``lopo`` draws validation (emofuse.train.folds: ``partner`` or ``train``).

    The loop: ``loop`` as given, or (``loop`` None) the head's recipe for ``preset`` with
    ``loop_flags`` (the command-line options that were given) on top (emofuse.train.recipes).

    ``cache`` is a path (opened with ``emofuse.cache.open_cache``) or an open cache object.
    Under torchrun (RANK / WORLD_SIZE set) folds are dealt round-robin to ranks; rank 0 writes the
    summary after every rank has finished (other ranks return None). ``jobs``: folds trained at
    once in worker processes on a CPU (None = ``parallel.choose_jobs``'s automatic choice; 1 =
    in this process); the results are the same either way.
    """
    sets = dict(sets or {})
    out = Path(out)
    if isinstance(cache, str | Path):
        from emofuse.cache import open_cache

        cache = open_cache(cache)
    head_cls = resolve_head(head_spec)
    cfg = head_cls.make_config(preset, sets)
    adapted = head_cls.fit_to_cache(cfg, cache.table, set(sets))  # {option: why}
    if loop is None:
        loop, loop_sources = resolve_loop(head_cls, preset, loop_flags)
    else:
        loop.validate()
        loop_sources = None
    rank, world = _dist_env()
    if world > 1 and device == "auto" and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    data = load_data(cache, head_spec, head_cls, cfg, loop, device)
    table = cache.table
    plan = build_folds_from_columns(
        ids=[str(i) for i in table["id"]],
        labels=[str(x) for x in table["label"]],
        speakers=[str(x) for x in table["speaker"]],
        sessions=[None if x in (None, "") else str(x) for x in table["session"]],
        splits=[
            None if x in (None, "") else str(x) for x in table.get("split", [None] * len(data.ids))
        ],
        split=split,
        seed=loop.seed,
        lopo_val=lopo_val,
    )
    valid = [f.fold for f in plan.folds]
    selected = list(folds) if folds else valid
    bad = [k for k in selected if k not in valid]
    if bad:
        raise EmofuseError(
            f"--folds {bad[0]} is not a fold of the {split} plan; valid folds: "
            f"{','.join(map(str, valid))}"
        )
    config = run_config(
        head_spec, head_cls, cfg, preset, sets, cache, split, loop, data.label_names,
        list(folds) if folds else None, str(data.device), loop_sources,
    )  # fmt: skip
    if adapted:
        config["adapted"] = adapted
    if split == "lopo" and lopo_val != "partner":  # absent = partner: older runs resume as before
        config["lopo_val"] = lopo_val
    check_buildable(head_spec, head_cls, cfg, make_dims(data), len(data.label_names), sets)
    check_out(out, getattr(cache, "path", None))
    with contextlib.ExitStack() as stack:
        if rank == 0:  # one writer per run folder (torchrun's ranks share rank 0's lock)
            stack.enter_context(output_lock(out, "train"))
            faults.reach("lock-taken")
        stack.enter_context(writes_into(out))
        prepare_out(out)
        return _train_folds(
            out, cache, head_cls, cfg, plan, config, data, loop, selected, progress, rank, world,
            jobs,
        )  # fmt: skip


def _train_folds(
    out: Path,
    cache: Any,
    head_cls: type,
    cfg: Any,
    plan: FoldPlan,
    config: dict[str, Any],
    data: TrainData,
    loop: LoopConfig,
    selected: list[int],
    progress: bool,
    rank: int,
    world: int,
    jobs: int | None = None,
) -> dict[str, Any] | None:
    """The run folder's work once it is locked: config, every selected unfinished fold, summary."""
    head_spec, table = config["head"], cache.table
    check_resume(out, config)
    finished = finished_folds(out)
    if (
        finished
        and (out / "folds.json").is_file()
        and FoldPlan.load(out / "folds.json").to_dict() != plan.to_dict()
    ):
        raise EmofuseError(
            f"run folder {out} holds a different fold plan (the cache changed?); use a new --out"
        )
    check_finished_folds(out, finished)  # the report reads them at the end: damage fails now
    if rank == 0:
        _json_write(out / "config.json", config)
        plan.save(out / "folds.json")

    dims = make_dims(data)
    head_meta = {
        "head": head_spec,
        "head_name": config["head_name"],
        "head_config": config["head_config"],
        "dims": dims.as_dict(),
        "labels": data.label_names,
        "cache_fingerprint": cache.fingerprint,
    }
    if world > 1:
        # gloo works on CPU and GPU alike: the only collective is one barrier
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=24))
        dist.barrier()  # rank 0 has written config.json / folds.json
    done = set(finished_folds(out))
    todo = [k for k in selected if k not in done]
    mine = todo[rank::world]
    path = getattr(cache, "path", None)  # workers reopen the cache: an in-memory one stays here
    n_jobs = (
        1
        if path is None
        else parallel.choose_jobs(jobs, len(mine), len(data.ids), data.device, world, data.nbytes())
    )
    started = time.perf_counter()
    if n_jobs > 1:  # worker processes, each loading the cache once (spawned: no forked OpenMP)
        spec = {
            "cache": str(path), "head_spec": head_spec, "cfg": dataclasses.asdict(cfg),
            "loop": loop, "device": str(data.device), "out": str(out), "head_meta": head_meta,
        }  # fmt: skip
        parallel.run_tasks(_worker_init, spec, _worker_fold, mine, n_jobs, progress, "folds")
    else:
        for k in mine:
            run_fold(out, k, head_cls, cfg, dims, data, plan, loop, head_meta, table, progress)
    if mine and world == 1:  # torchrun's ranks would race on one file
        record_wall(out, mine, n_jobs, time.perf_counter() - started)
    if world > 1:
        dist.barrier()  # every rank's folds are on disk before rank 0 summarises
        dist.destroy_process_group()
    if rank != 0:
        return None
    summary = write_summary(out, plan)
    from emofuse.train.report import write_report

    write_report(out)
    return summary


def run_fold(
    out: Path,
    k: int,
    head_cls: type,
    cfg: Any,
    dims: Any,
    data: TrainData,
    plan: FoldPlan,
    loop: LoopConfig,
    head_meta: dict[str, Any],
    table: dict[str, Any],
    progress: bool,
) -> None:
    """Train fold ``k`` from scratch into its folder (a fold killed mid-way left one behind)."""
    d = fold_dir(out, k)
    if d.exists():  # a fold killed mid-way restarts from scratch (its seed makes it identical)
        shutil.rmtree(d)
    d.mkdir(parents=True)
    started = time.perf_counter()
    with (d / "curves.jsonl").open("w") as curves:

        def log(row: dict[str, Any], fh=curves) -> None:
            fh.write(json.dumps(row) + "\n")
            fh.flush()

        result = train_fold(
            lambda: head_cls(cfg, dims, len(data.label_names)),
            data,
            plan.fold(k),
            loop,
            on_epoch=log,
            progress=progress,
        )
    save_fold(
        out,
        result,
        data,
        head_meta,
        test_set_name(plan.split, plan.fold(k), table),
        seconds=time.perf_counter() - started,
    )


_WORKER: dict[str, Any] = {}  # a fold worker's loaded state (one per worker process)


def _worker_init(spec: dict[str, Any]) -> None:
    """In a worker process: open the cache and load the streams once, for every fold it trains."""
    from emofuse.cache import open_cache

    head_cls = resolve_head(spec["head_spec"])
    cfg = head_cls.Config(**spec["cfg"])
    cache = open_cache(spec["cache"])
    if cache.fingerprint != spec["head_meta"]["cache_fingerprint"]:  # replaced since the start
        raise EmofuseError(
            f"cache {spec['cache']} changed while emofuse train was starting (fingerprint "
            f"{cache.fingerprint[:12]} vs {spec['head_meta']['cache_fingerprint'][:12]}); leave it "
            "alone while training, then rerun the same command"
        )
    data = load_data(cache, spec["head_spec"], head_cls, cfg, spec["loop"], spec["device"])
    out = Path(spec["out"])
    _WORKER.update(
        spec, head_cls=head_cls, cfg=cfg, data=data, dims=make_dims(data), table=cache.table,
        out=out, plan=FoldPlan.load(out / "folds.json"),
    )  # fmt: skip


def _worker_fold(k: int) -> int:
    w = _WORKER
    with writes_into(w["out"]):
        run_fold(
            w["out"], k, w["head_cls"], w["cfg"], w["dims"], w["data"], w["plan"], w["loop"],
            w["head_meta"], w["table"], progress=False,
        )  # fmt: skip
    return k


def record_wall(out: Path, folds: list[int], jobs: int, seconds: float) -> None:
    """Append this call's wall time to ``wall.json`` (a plan resumed over several calls sums them;
    with parallel jobs the folds' own minutes add up to more than the wall)."""
    path = out / "wall.json"
    calls = read_json(path)["calls"] if path.is_file() else []
    calls.append({"folds": folds, "jobs": jobs, "minutes": round(seconds / 60, 3)})
    _json_write(path, {"calls": calls})


def load_fold_model(run: Path, k: int, device: str | torch.device = "cpu") -> Any:
    """The best checkpoint of fold ``k`` as a ready head in eval mode."""
    from emofuse.heads.base import InputDims

    ckpt_path = fold_dir(run, k) / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise EmofuseError(f"{ckpt_path} is missing; rerun `emofuse train` for {run}")
    try:
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise EmofuseError(
            f"{ckpt_path} is damaged ({str(err).splitlines()[0][:80]}); delete {ckpt_path.parent} "
            f"and rerun `emofuse train` for {run} (it retrains that fold only)"
        ) from None
    head_cls = resolve_head(ckpt["head"])
    cfg = head_cls.config_from_saved(ckpt["head_config"])
    model = head_cls(
        cfg, InputDims(**{k2: tuple(v) for k2, v in ckpt["dims"].items()}), len(ckpt["labels"])
    )
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:  # e.g. a head whose defaults changed since the run was made
        first = str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)
        raise EmofuseError(
            f"{ckpt_path} does not fit head {ckpt['head']} as configured now ({first}); "
            "retrain the run with this emofuse version"
        ) from None
    return model.to(device).eval()


def fold_embeddings(run: str | Path, device: str = "auto") -> tuple[np.ndarray, list[str]]:
    """``head.embed`` of every finished fold's test utterances, by that fold's model (pooled)."""
    from emofuse.cache import open_cache
    from emofuse.train.loop import forward_all

    run = Path(run)
    config = read_json(run / "config.json")
    if "cache" not in config:
        raise EmofuseError(
            f"{run} is a fused run: it has no cache to embed (t-SNE needs a trained run)"
        )
    cache = open_cache(config["cache"])
    if cache.fingerprint != config["cache_fingerprint"]:
        raise EmofuseError(
            f"cache {config['cache']} changed since {run} was trained (fingerprint differs); "
            "t-SNE needs the same cache"
        )
    head_cls = resolve_head(config["head"])
    cfg = head_cls.config_from_saved(config["head_config"])
    data = TrainData.from_cache(cache, set(head_cls.required_streams(cfg)), cfg, device)
    plan = FoldPlan.load(run / "folds.json")
    embs, labels = [], []
    for k in finished_folds(run):
        model = load_fold_model(run, k, data.device)
        idx = data.indices(plan.fold(k).test)
        embs.append(forward_all(model, data, idx, 64, embed=True).numpy())  # (N_k, E)
        labels += [data.label_names[int(y)] for y in data.labels[idx.to(data.labels.device)]]
    return np.concatenate(embs), labels
