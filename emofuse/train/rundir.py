"""The run folder: its layout and every file in it, written atomically and read back with one-line errors.

`emofuse train` writes it, `fuse`, `report`, `predict` and `compare` read it (docs/architecture.md §5).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emofuse import faults
from emofuse.errors import (
    MAKE_READABLE,
    RERUN,
    EmofuseError,
    cannot_read,
    os_reason,
    readable_folder,
)
from emofuse.fileio import atomic_open, write_json
from emofuse.train.command import planned_folds, retrain_fold
from emofuse.train.configseal import metrics_edited, seal_metrics
from emofuse.train.curves import read_curves
from emofuse.train.data import TrainData
from emofuse.train.folds import FoldPlan
from emofuse.train.loop import FoldOutput
from emofuse.train.metrics import summarize
from emofuse.train.outdir import is_fused_folder
from emofuse.train.predfiles import file_sha256, parse_predictions, write_predictions


def fold_dir(out: Path, k: int) -> Path:
    return out / f"fold_{k:02d}"


def read_predictions(path: Path) -> dict[str, Any]:
    """``{"ids", "fold", "true", "predicted", "labels", "probs" (N, C)}`` from a predictions CSV;
    a file that is not one (cut, edited, overwritten) is a one-line error naming it."""
    if not path.is_file():
        raise EmofuseError(f"{path} is missing (deleted or lost); {_redo_advice(path)}")
    try:
        return parse_predictions(path)
    except OSError as err:  # its mode: never "cannot write" or "damaged"
        raise cannot_read(path, err) from None
    except (UnicodeDecodeError, csv.Error, ValueError) as err:
        reason = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
        raise EmofuseError(f"{path} is damaged ({reason}); {_redo_advice(path)}") from None


def _redo_advice(path: Path) -> str:
    """What remakes a damaged file of a run folder: its fold retrained, or the report rewritten."""
    folder = path.parent
    if not re.fullmatch(r"fold_\d+", folder.name):  # a pooled file of the run
        return f"rerun `emofuse report {folder}` (it rewrites it from the folds)"
    run = folder.parent
    with contextlib.suppress(EmofuseError):
        if not is_trained_run(read_json(run / "config.json")):
            return f"fuse the runs of {run} again into a new --out"
    return retrain_fold(folder)


def read_fold_predictions(run: Path, plan: FoldPlan, k: int, kind: str) -> dict[str, Any]:
    """Fold ``k``'s ``predictions.csv`` (test) or ``val_predictions.csv``, which must hold exactly
    that fold's utterances of ``plan``: a cut or edited file is never summarised or fused."""
    path = fold_dir(run, k) / kind
    part = read_predictions(path)
    fold = plan.fold(k)
    expected = fold.test if kind == "predictions.csv" else fold.val
    recorded = recorded_digest(fold_dir(run, k) / "metrics.json", kind)
    if sorted(part["ids"]) != sorted(expected):
        if recorded is not None and part["sha256"] == recorded:  # the file is as written
            raise EmofuseError(
                f"{run / 'folds.json'} was edited: its fold {k} does not hold the "
                f"{len(part['ids'])} utterances of {path}, which is as fold {k} wrote it; restore "
                "folds.json as emofuse wrote it (keep the folds), or train into a new --out"
            )
        raise EmofuseError(
            f"{path} does not hold the {len(expected)} utterances of fold {k} "
            f"({len(part['ids'])} rows); {_redo_advice(path)}"
        )
    if other := sorted(set(part["fold"]) - {k}):
        raise EmofuseError(
            f"{path} is damaged (rows of fold {other[0]} in fold {k}'s file); {_redo_advice(path)}"
        )
    if recorded is not None and part["sha256"] != recorded:
        raise EmofuseError(
            f"{path} was changed after fold {k} was written (its sha256 is not the one its "
            f"metrics.json records); {_redo_advice(path)}"
        )
    return part


def recorded_digest(metrics_path: Path, kind: str) -> str | None:
    """The sha256 a fold's metrics.json records for its file ``kind`` (None: written by an older
    emofuse, which recorded none; such folds get the checks a file allows on its own)."""
    if not metrics_path.is_file():
        return None
    digests = read_json(metrics_path).get("sha256")
    value = digests.get(kind) if isinstance(digests, dict) else None
    return value if isinstance(value, str) else None


def prediction_digests(d: Path) -> dict[str, str]:
    """``{"predictions.csv": sha256, "val_predictions.csv": sha256}`` of a fold folder, for its
    metrics.json: a prediction file edited afterwards is refused by every reader."""
    return {kind: file_sha256(d / kind) for kind in ("predictions.csv", "val_predictions.csv")}


def ids_digest(ids: Sequence[str]) -> str:
    """sha256 of a set of utterance ids (sorted): which test set a fold's checkpoint was made for."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


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
        test_ids = [data.ids[i] for i in result.test_idx.tolist()]
        torch.save(
            {**head_meta, "fold": result.fold, "test_sha256": ids_digest(test_ids),
             "state_dict": result.state_dict},
            fh,
        )  # fmt: skip
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
        "sha256": {
            **prediction_digests(d),
            "checkpoint.pt": file_sha256(d / "checkpoint.pt"),
            "curves.jsonl": file_sha256(d / "curves.jsonl"),  # what report draws, sealed too
        },
    }
    write_json(d / "metrics.json", seal_metrics(metrics))
    faults.reach("fold-written")
    return metrics


def finished_folds(out: Path) -> list[int]:
    """The folds of ``out`` whose metrics.json is written (fold_NN only: not fold_01_backup)."""
    planned = planned_folds(out)
    done = []
    for d in out.glob("fold_*"):
        if not re.fullmatch(r"fold_\d+", d.name):
            continue
        if d.is_dir() and not readable_folder(d):  # not a missing fold: one it may not open
            raise EmofuseError(
                f"{d} cannot be read (Permission denied): make it readable (`chmod u+rwx {d}`, "
                f"or ask its owner), {RERUN}"
            )
        k = int(d.name[len("fold_") :])
        if planned and k not in planned:  # a stray copy, say
            raise EmofuseError(f"{d} is in the run folder, but {retrain_fold(d)}")
        if (d / "metrics.json").is_file():
            done.append(k)
    return sorted(done)


UNREADABLE = "cannot be read (Permission denied)"
READABLE = f"{MAKE_READABLE}, {RERUN}"


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole checkpoint (missing, cut short, not a torch file), or None.

    Cheap: reads the zip directory that torch.save writes at the end of the file (a file cut short
    has none) and checks that every member ends inside the file; no tensor is read."""
    if not path.is_file():
        return "is missing"
    if not os.access(path, os.R_OK):
        return UNREADABLE
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "is damaged (cut short, or not a torch checkpoint)"
    if not members or any(m.header_offset + m.compress_size > size for m in members):
        return "is damaged (cut short)"
    return None


def is_transductive(run: Path) -> bool:
    """``run`` standardised features per speaker (``--speaker-norm``, test speakers' unlabelled
    audio included), itself or, for a late fusion, in a member run: its scores compare only with
    runs that do the same."""
    try:
        config = json.loads((Path(run) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict):
        return False
    loop = config.get("loop")
    return bool((isinstance(loop, dict) and loop.get("speaker_norm")) or config.get("transductive"))


def is_trained_run(config: dict[str, Any]) -> bool:
    """A run trained here (its folds keep checkpoints), not a late fusion of runs (none)."""
    return "fused_runs" not in config


def check_finished_folds(run: Path, folds: Sequence[int], trained: bool = True) -> None:
    """The files a finished fold must keep whole (metrics.json, its curves.jsonl; a trained run's
    checkpoint.pt),
    checked before a resume trains anything and before a report: a damaged one is one line naming
    it, never a run reported complete with a fold that predict cannot load."""
    check_metrics(run, folds)
    for k in folds:
        curves = fold_dir(run, k) / "curves.jsonl"
        if curves.is_file():
            rows = read_curves(curves)
            ran = read_metrics(fold_dir(run, k) / "metrics.json", k)["epochs_run"]
            if len(rows) != ran:  # appended to, or cut
                raise EmofuseError(
                    f"{curves} holds {len(rows)} epochs but fold {k} ran {ran} (its "
                    f"metrics.json); {_redo_advice(curves)}"
                )
            recorded = recorded_digest(fold_dir(run, k) / "metrics.json", "curves.jsonl")
            if recorded is not None and file_sha256(curves) != recorded:  # an edited value
                raise EmofuseError(
                    f"{curves} was changed after fold {k} was written (its sha256 is not the one "
                    f"its metrics.json records); {_redo_advice(curves)}"
                )
        elif (fold_dir(run, k) / "checkpoint.pt").exists():  # trained (not fused): train wrote one
            raise EmofuseError(f"{curves} is missing (deleted or lost); {_redo_advice(curves)}")
    if trained:
        check_checkpoints(run, folds)


def check_checkpoints(run: Path, folds: Sequence[int]) -> None:
    """Each fold's checkpoint.pt is whole (:func:`checkpoint_problem`), else one line naming it."""
    for k in folds:
        _refuse_checkpoint(run, k, checkpoint_problem(fold_dir(run, k) / "checkpoint.pt"))


def check_checkpoint_digests(run: Path, folds: Sequence[int]) -> None:
    """Each fold's checkpoint.pt has the sha256 its metrics.json records, if it records one
    (flipped weight bits gave NaN predictions); after the checks that can name a source."""
    for k in folds:
        d = fold_dir(run, k)
        recorded = recorded_digest(d / "metrics.json", "checkpoint.pt")
        if recorded and file_sha256(d / "checkpoint.pt") != recorded:  # which one: unknowable
            _refuse_checkpoint(run, k, f"does not match {d / 'metrics.json'} (its sha256 is not "
                               "the one recorded there: the checkpoint or the fold's result files "
                               "were changed or replaced after the fold was written)")  # fmt: skip


def _refuse_checkpoint(run: Path, k: int, problem: str | None) -> None:
    d = fold_dir(run, k)
    if problem == UNREADABLE:  # an intact fold, perhaps: never "delete it" for a permission
        raise EmofuseError(f"{d / 'checkpoint.pt'} {problem}; {READABLE}")
    if problem:
        raise EmofuseError(f"{d / 'checkpoint.pt'} {problem}, so fold {k} is not finished; "
                           f"{retrain_fold(d)}")  # fmt: skip


def missing_folds_note(run: Path, plan: FoldPlan, advice: str) -> str | None:
    """``k of n folds finished; missing: …`` for a run that lacks folds of its plan (None when it
    has them all): report and fuse print it, so a partial result is never shown as a whole one."""
    done = set(finished_folds(run))
    missing = [f.fold for f in plan.folds if f.fold not in done]
    if not missing:
        return None
    in_way = [fold_dir(run, k) for k in missing if fold_dir(run, k).is_file()]
    if in_way:  # a file where a fold folder goes: train would refuse it, so say so first
        advice = f"{', '.join(map(str, in_way))}: a file where a fold folder goes; move it away, then {advice}"
    return (
        f"{len(done)} of {len(plan.folds)} folds finished; missing: "
        f"{', '.join(map(str, missing))} ({advice})"
    )


def write_summary(out: Path, plan: FoldPlan) -> dict[str, Any]:
    """summary.json + pooled predictions CSVs from every finished fold (in fold order)."""
    done = finished_folds(out)
    if not done:
        from emofuse.train.outdir import unfinished_advice

        raise EmofuseError(f"{out} has no finished fold yet: {unfinished_advice(out)}")
    pooled = {
        kind: [read_fold_predictions(out, plan, k, kind) for k in done]
        for kind in ("predictions.csv", "val_predictions.csv")
    }
    labels = pooled["predictions.csv"][0]["labels"]
    for kind, parts in pooled.items():  # the pooled files are joined by column position
        for k, p in zip(done, parts, strict=True):
            if p["labels"] != labels:
                path = fold_dir(out, k) / kind
                raise EmofuseError(
                    f"{path} has its p_ columns in another label order ({', '.join(p['labels'])}) "
                    f"than fold {done[0]} ({', '.join(labels)}); {_redo_advice(path)}"
                )
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
    check_recorded_scores(out, {f["fold"]: f for f in summary["folds"]})  # scored just above
    summary["split"] = plan.split
    summary["folds_planned"] = len(plan.folds)
    write_json(out / "summary.json", summary)
    return summary


def read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON file (config, metrics, summary: each one object); a damaged one is a
    one-line error naming it."""
    try:
        obj = json.loads(path.read_text())
    except PermissionError as err:  # intact, perhaps: never "delete the fold" for it
        raise EmofuseError(f"{path} cannot be read ({os_reason(err)}); {READABLE}") from None
    except OSError as err:
        reason = os_reason(err)
    except (UnicodeDecodeError, json.JSONDecodeError):
        reason = "not valid JSON: cut short or edited"
    else:
        if isinstance(obj, dict):
            return obj
        reason = f"a JSON {type(obj).__name__}, not an object"
    raise EmofuseError(f"{path} is unreadable ({reason}); {_json_fix(path)}")


def _json_fix(path: Path) -> str:
    """What to do about a damaged JSON file of a run: a fold's file costs that fold only."""
    fold = path.parent
    if not fold.name.startswith("fold_"):
        return "restore it, or delete the run folder and train again"
    run = fold.parent
    if is_fused_folder(run):
        return "restore it, or fuse the same runs again into a new --out"
    return f"restore it, or {retrain_fold(fold)}"


# what every run's config.json must hold, by kind: a trained run's (train writes it) and a late
# fusion's (fuse writes it); report, predict, fuse, compare and a train resume read these keys
TRAINED_KEYS: dict[str, type | tuple[type, ...]] = {
    "head": str, "head_config": dict, "labels": list, "split": str, "seed": int,
}  # fmt: skip
FUSED_KEYS: dict[str, type | tuple[type, ...]] = {"fused_runs": list, "weights": dict, "split": str}


def config_problem(config: dict[str, Any]) -> str | None:
    """Why a run's config.json (read as an object) cannot be used, or None: a required key that is
    missing or of the wrong type (``labels`` a list of names, ``fused_runs`` of paths)."""
    keys = TRAINED_KEYS if is_trained_run(config) else FUSED_KEYS
    for key, kind in keys.items():
        if key not in config or config[key] is None:
            return f"no {key!r}"
        value = config[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{key!r} is a JSON {type(value).__name__}, not a {kind.__name__}"
    names = config.get("labels") if is_trained_run(config) else config.get("fused_runs")
    what = "labels" if is_trained_run(config) else "fused_runs"
    if not names or not all(isinstance(x, str) and x for x in names):
        return f"{what!r} is not a list of names"
    if is_trained_run(config) and not config["head"].strip():
        return "an empty 'head'"
    return None


def read_run_config(path: Path) -> dict[str, Any]:
    """A run folder's config.json, checked (:func:`config_problem`): a damaged one is one line
    naming it, never a run reported, resumed or predicted with settings it does not have."""
    config = read_json(path)
    problem = config_problem(config)
    if problem:
        fix = (
            "retrain into a new --out"
            if is_trained_run(config)
            else "fuse its runs again into a new --out"
        )
        raise EmofuseError(f"{path} is damaged ({problem}); {fix}")
    return config


def check_recorded_scores(out: Path, fresh_scores: dict[int, dict[str, float]]) -> None:
    """Each fold's metrics.json states the UA/WA/F1 that its (digest-checked) predictions give
    (``fresh_scores[k]``, :func:`emofuse.train.metrics.scores` of them): one edited to another
    plausible number is named, not left to contradict the report."""
    for k, fresh in fresh_scores.items():
        path = fold_dir(out, k) / "metrics.json"
        recorded = read_metrics(path, k)
        for key in ("UA", "WA", "F1"):
            if abs(float(recorded[key]) - fresh[key]) > 1e-9:
                raise EmofuseError(
                    f"{path} was edited: its {key} {recorded[key]!r} is not the {fresh[key]:.4f} "
                    f"that fold {k}'s predictions.csv gives; {_redo_advice(path)}"
                )


def _is_fraction(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and 0.0 <= x <= 1.0


def read_metrics(path: Path, k: int) -> dict[str, Any]:
    """Fold ``k``'s metrics.json, checked: UA, WA and F1 are numbers in [0, 1] and the other fields
    the report shows have their types; a damaged one names the file and how to redo the fold."""
    metrics = read_json(path)
    problem = None
    for key in ("UA", "WA", "F1"):
        if key not in metrics:
            problem = f"no {key!r}"
        elif not _is_fraction(metrics[key]):
            problem = f"{key!r} is {metrics[key]!r}, not a number in [0, 1]"
        if problem:
            break
    if problem is None and metrics.get("fold", k) != k:
        problem = f"it is fold {metrics.get('fold')!r}'s"
    checks = {"test_set": (str,), "best_epoch": (int,), "epochs_run": (int,),
              "minutes": (int, float)}  # fmt: skip
    for key, kinds in checks.items():
        if problem is None and key in metrics:
            value = metrics[key]
            if not isinstance(value, kinds) or isinstance(value, bool):
                problem = f"{key!r} is {value!r}"
    ran, best = metrics.get("epochs_run"), metrics.get("best_epoch")
    if problem is None and isinstance(ran, int) and isinstance(best, int) and not 1 <= best <= ran:
        problem = f"'best_epoch' {best} is not one of the {ran} epochs it ran"
    if problem is None and metrics_edited(metrics):  # test_set, best_epoch, minutes …
        problem = (
            "its test_set, best_epoch, epochs_run or minutes was edited after the fold was written"
        )
    if problem:
        raise EmofuseError(f"{path} is damaged ({problem}); {_redo_advice(path)}")
    return metrics


def check_metrics(run: Path, folds: Sequence[int]) -> None:
    """Each finished fold's metrics.json is whole (:func:`read_metrics`), else one line naming it."""
    for k in folds:
        read_metrics(fold_dir(run, k) / "metrics.json", k)
