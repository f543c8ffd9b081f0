"""Trained folds as models again: the head class of a run, its input sizes, a fold rebuilt from
its checkpoint, and the fold embeddings the t-SNE plot shows.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.errors import EmofuseError
from emofuse.train.command import retrain_fold, train_command
from emofuse.train.data import TrainData
from emofuse.train.folds import FoldPlan
from emofuse.train.headcode import check_head_code, check_no_unrecorded_modules, head_file_digest
from emofuse.train.paths import absolute_head, head_file, relative_path_error
from emofuse.train.predfiles import HEADER
from emofuse.train.rundir import (
    check_checkpoint_digests,
    check_checkpoints,
    check_finished_folds,
    finished_folds,
    fold_dir,
    read_json,
)


def resolve_head(spec: str) -> type:
    """``NAME`` from the head registry, or ``path/to/file.py:Class`` for a user's own head.

    The registry raises a one-line EmofuseError listing the built-in names for an unknown head.
    """
    from emofuse.heads import get_head

    return get_head(spec)


def resolve_saved_head(run: Path, spec: str) -> type:
    """The head a run (config.json, a checkpoint) records; a head file recorded relative by an
    older emofuse that does not exist from here is one line saying so."""
    _check_head_file_reachable(run, spec)
    file = head_file(spec)
    if file is not None and not Path(file).is_file():  # moved or deleted since training
        raise EmofuseError(
            f"the head file {file} that {run} was trained with is gone (moved, renamed or "
            "deleted); put it back at that path (the run loads its head from there)"
        )
    return resolve_head(spec)


def _check_head_file_reachable(run: Path, spec: str) -> None:
    """A head file recorded relative (by an older emofuse) must exist from here."""
    file = head_file(spec)
    if file is not None and not Path(file).is_absolute() and not Path(file).exists():
        raise relative_path_error(
            run, "head file", file, "run this from the folder the run was trained in"
        )


def _check_own_head(run: Path, ckpt_path: Path, ckpt: Any) -> None:
    """The checkpoint holds this run's head (its config.json's head and classes), not one
    copied from another run: that one would fail later on a stream the run never loads."""

    def fix() -> str:  # only when refusing: it reads config.json and resolves the head's recipe
        return retrain_fold(ckpt_path.parent)

    keys = ("head", "head_config", "dims", "labels", "state_dict")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys):
        raise EmofuseError(f"{ckpt_path} is not a checkpoint of emofuse train; {fix()}")
    path = run / "config.json"
    if not path.is_file():
        return
    config = read_json(path)
    if not isinstance(config.get("head"), str):
        return
    _check_head_file_reachable(run, config["head"])  # else not comparable from here
    same_head = absolute_head(str(ckpt["head"])) == absolute_head(config["head"])
    labels = config.get("labels", ckpt["labels"])
    if same_head and ckpt["labels"] != labels and _fold_labels(ckpt_path.parent) == ckpt["labels"]:
        # the fold's checkpoint and its predictions agree: config.json is what was edited
        raise EmofuseError(
            f"{path} lists the labels {', '.join(map(str, labels))} but fold "
            f"{ckpt_path.parent.name[len('fold_') :].lstrip('0')} of {run} was trained with "
            f"{', '.join(ckpt['labels'])} (its checkpoint.pt and predictions.csv): {_restore('labels', ckpt['labels'])}"
        )
    for section in ("loop", "head_config"):  # absent in checkpoints of an older emofuse
        held, said = ckpt.get(section), config.get(section)
        if not (same_head and isinstance(held, dict) and isinstance(said, dict)):
            continue
        differ = sorted(k for k in held.keys() | said.keys()
                        if json.dumps(held.get(k)) != json.dumps(said.get(k)))  # fmt: skip
        if not differ:
            continue
        key = differ[0]
        if _every_fold_trained_with(run, section, held):  # config.json is the odd one out
            raise EmofuseError(
                f"{path} says {key} {json.dumps(said.get(key))} but every finished fold of "
                f"{run} was trained with {json.dumps(held.get(key))} (their checkpoints): "
                f"{_restore(section, held)}"
            )
        raise EmofuseError(
            f"{ckpt_path} was trained with other settings than {run} ({key} "
            f"{json.dumps(held.get(key))} vs {json.dumps(said.get(key))}), copied from another "
            f"run?; {fix()}"
        )
    if not same_head and _every_fold_trained_with(run, "head", ckpt["head"]):
        raise EmofuseError(  # config.json is the odd one out
            f"{path} says head {config['head']} but every finished fold of {run} was trained "
            f"with {ckpt['head']} (their checkpoints): {_restore('head', ckpt['head'])}"
        )
    if not same_head or ckpt["labels"] != labels:
        held = ckpt.get("head_name") or ckpt["head"]
        trained = config.get("head_name") or config["head"]
        what = "head" if not same_head else "classes"
        raise EmofuseError(
            f"{ckpt_path} is not this run's head's: it holds a {held} model of another "
            f"{what} than {run} trained ({trained}), copied from another run?; {fix()}"
        )


def _every_fold_trained_with(run: Path, section: str, value: Any) -> bool:
    """Do two or more finished folds of ``run`` exist, every one's checkpoint holding this
    ``section`` (its loop, its head config)? Then config.json is what changed, not one copied
    checkpoint. Tensors are not read."""
    folds = finished_folds(run)
    if len(folds) < 2:
        return False
    for k in folds:
        try:
            other = _load(run, fold_dir(run, k) / "checkpoint.pt", "cpu", mmap=True)
        except EmofuseError:
            return False
        if not isinstance(other, dict) or json.dumps(other.get(section), sort_keys=True) != (
            json.dumps(value, sort_keys=True)
        ):
            return False
    return True


def _fold_labels(d: Path) -> list[str] | None:
    """The label order of a fold's predictions.csv header (None: no readable header)."""
    try:
        with (d / "predictions.csv").open(newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return [h[2:] for h in header[4:]] if header[:4] == HEADER else None


def _fold_test_ids(d: Path) -> list[str] | None:
    """The ids in a fold's predictions.csv, if that file is whole and unedited (else None)."""
    from emofuse.train.rundir import read_predictions, recorded_digest

    recorded = recorded_digest(d / "metrics.json", "predictions.csv")
    try:
        part = read_predictions(d / "predictions.csv") if recorded is not None else None
    except (OSError, EmofuseError):
        return None
    return part["ids"] if part is not None and part["sha256"] == recorded else None


def check_run_folds(run: Path, folds: Sequence[int], trained: bool) -> None:
    """A finished run's folds as report, compare and fuse check them before reading any: each
    fold's metrics and curves whole, and a trained run's checkpoints whole and its own."""
    check_finished_folds(run, folds, trained=False)
    if trained:
        check_own_checkpoints(run, folds)


def check_own_checkpoints(run: Path, folds: Sequence[int]) -> None:
    """Every finished fold's checkpoint is whole and is that fold's own: this run's head and
    classes, trained for that fold's test set (what predict checks, checked before a train
    resume or a report calls the run complete). Cheap: tensors are memory-mapped, not read."""
    check_checkpoints(run, folds)
    for k in folds:
        path = fold_dir(run, k) / "checkpoint.pt"
        ckpt = _load(run, path, "cpu", mmap=True)
        _check_own_head(run, path, ckpt)
        _check_own_fold(run, k, path, ckpt)
        del ckpt
    check_checkpoint_digests(run, folds)  # the very bytes that were written


def _load(run: Path, path: Path, device: str | torch.device, mmap: bool = False) -> Any:
    """A fold's checkpoint as torch saved it (``mmap``: tensors mapped, not read); a damaged
    file is one line naming it."""
    try:
        return torch.load(path, map_location=device, mmap=mmap, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise EmofuseError(
            f"{path} is damaged ({str(err).splitlines()[0][:80]}); {retrain_fold(path.parent)}"
        ) from None


def make_dims(data: TrainData) -> Any:
    """The heads' ``InputDims`` from what the data layer loaded ((L, D) per stream, speaker (1, F))."""
    from emofuse.heads.base import InputDims

    dims = {k: (v[0] if len(v) == 1 else v) for k, v in data.dims().items()}
    return InputDims(**dims)


def _check_own_fold(run: Path, k: int, ckpt_path: Path, ckpt: Any) -> None:
    """A checkpoint records the test set it was trained for: one copied from a run of another
    split (the same head) would predict with a model the run's figures do not describe."""
    from emofuse.train.folds import FoldPlan
    from emofuse.train.rundir import ids_digest

    recorded = ckpt.get("test_sha256")  # absent in checkpoints of an older emofuse
    plan_path = run / "folds.json"
    if recorded is None or not plan_path.is_file():
        return
    fold = next((f for f in FoldPlan.load(plan_path).folds if f.fold == k), None)
    if (fold is not None and ids_digest(fold.test) != recorded) or ckpt.get("fold", k) != k:
        tested = _fold_test_ids(ckpt_path.parent)
        if ckpt.get("fold", k) == k and tested is not None and ids_digest(tested) == recorded:
            raise EmofuseError(  # the checkpoint and the fold's predictions agree: the plan moved
                f"{plan_path} was edited: its fold {k} does not test the {len(tested)} "
                f"utterances that fold {k}'s checkpoint and predictions.csv were made for; "
                f"restore folds.json as emofuse train wrote it (keep the folds), or train into a "
                "new --out"
            )
        raise EmofuseError(
            f"{ckpt_path} was trained for another test set than fold {k} of {run} (copied from "
            f"another run?); {retrain_fold(ckpt_path.parent)}"
        )


def load_fold_model(run: Path, k: int, device: str | torch.device = "cpu") -> Any:
    """The best checkpoint of fold ``k`` as a ready head in eval mode."""
    from emofuse.heads.base import InputDims

    ckpt_path = fold_dir(run, k) / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise EmofuseError(f"{ckpt_path} is missing; {retrain_fold(ckpt_path.parent)}")
    ckpt = _load(run, ckpt_path, device)
    _check_own_head(run, ckpt_path, ckpt)
    _check_own_fold(run, k, ckpt_path, ckpt)
    check_checkpoint_digests(run, [k])  # and the very bytes that were written
    head_cls = resolve_saved_head(run, ckpt["head"])
    # same shapes, other code: the head file or a module it imports edited since training
    check_head_code(str(ckpt["head"]), ckpt, run, f"fold {k}'s checkpoint would run")
    cfg = head_cls.config_from_saved(ckpt["head_config"])
    try:
        model = head_cls(
            cfg, InputDims(**{k2: tuple(v) for k2, v in ckpt["dims"].items()}), len(ckpt["labels"])
        )
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, ValueError, TypeError, KeyError) as err:  # the head changed since
        lines = str(err).splitlines()
        first = (lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__).strip()
        file = head_file(str(ckpt["head"]))
        recorded = ckpt.get("head_sha256")
        if (
            file is not None
            and recorded is not None
            and recorded != head_file_digest(str(ckpt["head"]))
        ):
            raise EmofuseError(
                f"head file {file} changed since {run} was trained: {ckpt_path} does not fit it "
                f"now ({first[:120]}); restore the file as it was when the run was trained, or "
                "retrain into a new --out"
            ) from None
        edited = (
            f" (or its head file {file} was edited since training)"
            if file is not None and recorded is None
            else ""
        )
        raise EmofuseError(
            f"{ckpt_path} does not fit head {ckpt['head']} as configured now ({first}){edited}; "
            "retrain the run with this emofuse version"
        ) from None
    return model.to(device).eval()


def fold_embeddings(run: str | Path, device: str = "auto") -> tuple[np.ndarray, list[str]]:
    """``head.embed`` of every finished fold's test utterances, by that fold's model (pooled)."""
    from emofuse.cache import open_cache
    from emofuse.heads.registry import head_streams
    from emofuse.train.headerrors import user_head_code
    from emofuse.train.loop import forward_all

    run = Path(run)
    config = read_json(run / "config.json")
    if "cache" not in config:
        raise EmofuseError(
            f"{run} is a fused run: it has no cache to embed (t-SNE needs a trained run)"
        )
    if not Path(config["cache"]).is_absolute() and not Path(config["cache"]).exists():
        raise relative_path_error(
            run, "cache", config["cache"], "run `emofuse report` from the folder the run was "
            "trained in (t-SNE reads the cache)"
        )  # fmt: skip
    gone = Path(config["cache"])
    if not gone.exists() and not Path(f"{gone}.parts").exists():  # moved: not "run extract first"
        raise EmofuseError(
            f"the cache {gone} that {run} was trained on is gone (moved or deleted), and t-SNE "
            f"reads its features: put it back, or rerun {train_command(run, config, 'NEW')} with "
            "NEW its new place (that records it; the finished folds are kept)"
        )
    cache = open_cache(config["cache"])
    digest, recorded = cache.meta.get("digest"), config.get("cache_digest")
    if cache.fingerprint != config["cache_fingerprint"] or (recorded and digest != recorded):
        what = (
            "fingerprint" if cache.fingerprint != config["cache_fingerprint"] else "content digest"
        )
        raise EmofuseError(
            f"cache {config['cache']} changed since {run} was trained ({what} differs: another "
            "extraction put at its path); t-SNE needs the features the run was trained on: put "
            "the original cache back"
        )
    head_cls = resolve_saved_head(run, config["head"])
    cfg = head_cls.config_from_saved(config["head_config"])
    streams = head_streams(head_cls, cfg, config["head"])
    data = TrainData.from_cache(cache, streams, cfg, device, max_lengths=head_cls.max_lengths(cfg))
    plan = FoldPlan.load(run / "folds.json")
    embs, labels = [], []
    for k in finished_folds(run):
        model = load_fold_model(run, k, data.device)
        idx = data.indices(plan.fold(k).test)
        with user_head_code(
            config["head"],
            k,
            "computing the t-SNE embeddings of",
            "rerun the same `emofuse report`",
        ):
            embs.append(forward_all(model, data, idx, 64, embed=True).numpy())  # (N_k, E)
        labels += [data.label_names[int(y)] for y in data.labels[idx.to(data.labels.device)]]
    check_no_unrecorded_modules(config["head"], config, run, "the t-SNE embeddings ran")
    return np.concatenate(embs), labels


def _restore(key: str, value: Any) -> str:
    """The advice when config.json, not the folds, is the odd one out: it was edited, or is
    another run's (sealed: editing it back by hand then cannot match its checksum)."""
    return (
        "config.json was edited, or is another run's: restore this run's own config.json (its "
        f'"{key}" was {json.dumps(value, sort_keys=True)}; the folds are kept), or train again '
        "into a new --out"
    )
