"""Late fusion of trained runs: per-fold weighted averages of class probabilities.

Weights are chosen for each fold on that fold's validation probabilities only (never the test set), from a
grid over the simplex that includes every single run (its vertices). The chosen weights therefore
score at least as well as the best member on validation by construction; the test set is scored
once, with those weights, and never takes part in the choice.

Criterion: validation UA (the protocol's headline metric); ties go to the lower validation
cross-entropy, then to the earlier grid point (the grid lists single runs first).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, log_loss

from emofuse import __version__
from emofuse.errors import EmofuseError, check_out_path, os_reason, write_fix
from emofuse.fileio import atomic_open, remove_temporaries, write_json
from emofuse.locks import output_lock
from emofuse.progress import progress_bar
from emofuse.train.configseal import write_run_config
from emofuse.train.folds import FoldPlan
from emofuse.train.metrics import summarize
from emofuse.train.outdir import check_outside_runs, check_run_out, config_missing_error
from emofuse.train.paths import absolute
from emofuse.train.rundir import (
    finished_folds,
    fold_dir,
    is_trained_run,
    is_transductive,
    prediction_digests,
    read_fold_predictions,
    read_metrics,
    read_predictions,
    read_run_config,
    write_predictions,
    write_summary,
)
from emofuse.train.runout import prepare_out

GRID_STEPS = 10  # weights in multiples of 1/10
KINDS = ("val_predictions.csv", "predictions.csv")


def weight_grid(n_runs: int, steps: int = GRID_STEPS) -> np.ndarray:
    """(W, n_runs) non-negative weights summing to 1; single-run vertices come first."""
    vertices = np.eye(n_runs)
    points = [
        np.array(c) / steps
        for c in itertools.product(range(steps + 1), repeat=n_runs)
        if sum(c) == steps and max(c) < steps
    ]
    return np.concatenate([vertices, np.array(points).reshape(-1, n_runs)])


def choose_weights(
    val_probs: Sequence[np.ndarray], val_true: Sequence[str], labels: list[str]
) -> tuple[np.ndarray, float, list[float]]:
    """Best grid weights on validation → (weights (R,), fused val UA, each member's val UA)."""
    stack = np.stack(val_probs)  # (R, N, C)
    names = np.asarray(labels)
    y = np.asarray(val_true)
    best: tuple[float, float, int] | None = None
    grid = weight_grid(len(val_probs))
    for w_i, w in enumerate(grid):
        fused = np.einsum("r,rnc->nc", w, stack)  # (N, C)
        ua = balanced_accuracy_score(y, names[fused.argmax(1)])
        nll = log_loss(y, fused / fused.sum(1, keepdims=True), labels=labels)
        key = (-ua, nll, w_i)
        if best is None or key < best:
            best = key
    assert best is not None
    members = [float(balanced_accuracy_score(y, names[p.argmax(1)])) for p in val_probs]
    return grid[best[2]], -best[0], members


def fuse_runs(runs: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Fuse finished runs on the same fold plan into the run folder ``out``; return its summary."""
    runs = [Path(r) for r in runs]
    out = Path(out)
    if len(runs) < 2:
        raise EmofuseError("fuse needs at least two run folders")
    seen: dict[Path, Path] = {}
    for r in runs:
        if r.resolve() in seen:
            raise EmofuseError(
                f"{r} is given twice (also as {seen[r.resolve()]}); fuse different runs"
            )
        seen[r.resolve()] = r
    trained = {}  # run -> whether train made it (it keeps checkpoints), not a fusion
    for r in runs:  # a member whose settings are damaged is named before anything is read
        if (unfinished := config_missing_error(r)) is not None:  # a killed fuse or train
            raise unfinished
        if (r / "config.json").is_file():
            config = read_run_config(r / "config.json")
            trained[r] = is_trained_run(config)
            if not trained[r]:  # a fused member that report would call stale
                check_members_current(r, config)
    plans = [FoldPlan.load(r / "folds.json") for r in runs]
    for r, p in zip(runs[1:], plans[1:], strict=True):
        # the same folds, utterance for utterance; the seed may differ (a seed ensemble) where
        # the split draws nothing at random (lopo's validation speakers are fixed)
        if why := plans[0].difference(p):
            raise EmofuseError(
                f"{r} and {runs[0]} use different fold plans ({why}); fuse runs trained with the "
                "same --split and --lopo-val on the same corpus (and the same --seed where "
                "validation is drawn at random)"
            )
    folds = finished_folds(runs[0])
    for r in runs[1:]:
        missing = sorted(set(folds) - set(finished_folds(r)))
        if missing:
            raise EmofuseError(
                f"{r} has not finished fold {missing[0]}; finish it with `emofuse train`"
            )
    if not folds:
        raise EmofuseError(f"{runs[0]} has no finished fold; run `emofuse train` first")
    from emofuse.train.checkpoints import check_run_folds

    for r in runs:  # a damaged fold, or one copied in from another run, named as report names it
        check_run_folds(r, folds, trained.get(r, False))
    check_out_path(out)  # a link to nowhere, a parent that is a file, a read-only folder
    check_run_out(out, "emofuse fuse")  # a folder of the user's files is never written into
    with output_lock(out, "fuse"):  # one writer: never into a folder a train or fuse writes
        try:
            return _fuse_into(runs, plans, folds, out)
        except OSError as err:  # a full disk, a file size limit, a read-only folder
            remove_temporaries(out)
            where = f" writing {err.filename}" if err.filename else ""
            raise EmofuseError(
                f"cannot write the fused run {out} ({os_reason(err)}{where}); "
                + write_fix(err, "free disk space or make it writable")
                + ", then rerun the same command (it fuses again)"
            ) from None


def _fuse_into(
    runs: list[Path], plans: list[FoldPlan], folds: list[int], out: Path
) -> dict[str, Any]:
    """The fused run folder's files, written while ``out`` is locked."""
    if out.resolve() in {r.resolve() for r in runs} or (out / "config.json").is_file():
        raise EmofuseError(
            f"--out {out} already holds a run (config.json); fuse writes a new run folder, so "
            "give an empty or new folder"
        )
    check_outside_runs(out, "a folder for the fused run")  # not in a member's fold folder
    from emofuse.cache.store import check_outside_caches

    check_outside_caches(out, "a folder for the fused run")  # never inside a Zarr cache
    # every member's files are read and checked first: a damaged one names itself, and nothing
    # of the fused run is written before all of them are known good
    for r in runs:
        for k in folds:
            read_metrics(fold_dir(r, k) / "metrics.json", k)
    inputs = {
        k: tuple([_aligned(r, plans[0], k, kind) for r in runs] for kind in KINDS) for k in folds
    }
    digests = {absolute(r): member_digest(r, folds) for r in runs}  # what was fused, as it was
    first = read_run_config(runs[0] / "config.json")
    prepare_out(out)
    with atomic_open(out / "folds.json", "wb") as fh:  # whole or not there
        fh.write((runs[0] / "folds.json").read_bytes())
    weights: dict[int, list[float]] = {}
    for k in progress_bar(folds, desc="fuse", leave=False):
        val, test = inputs[k]
        labels = val[0]["labels"]
        if any(p["ids"] != val[0]["ids"] for p in val) or any(
            p["ids"] != test[0]["ids"] for p in test
        ):
            raise EmofuseError(f"fold {k}: the runs predicted different utterances; retrain them")
        if any(v["labels"] != labels for v in val):
            raise EmofuseError(f"runs {', '.join(map(str, runs))} have different class sets")
        w, fused_ua, member_ua = choose_weights([v["probs"] for v in val], val[0]["true"], labels)
        weights[k] = w.tolist()
        d = fold_dir(out, k)
        d.mkdir(exist_ok=True)
        for fname, parts in (("val_predictions.csv", val), ("predictions.csv", test)):
            probs = np.einsum("r,rnc->nc", w, np.stack([p["probs"] for p in parts]))  # (N, C)
            write_predictions(d / fname, k, parts[0]["ids"], parts[0]["true"], probs, labels)
        pred = read_predictions(d / "predictions.csv")
        fold_scores = summarize([(k, pred["true"], pred["predicted"])], labels)
        metrics = read_metrics(fold_dir(runs[0], k) / "metrics.json", k)
        write_json(
            d / "metrics.json",
            {
                "fold": k,
                "test_set": metrics.get("test_set", ""),
                **fold_scores["pooled"],
                "weights": dict(zip(map(str, runs), w.tolist(), strict=True)),
                "val_UA_fused": fused_ua,
                "val_UA_members": dict(zip(map(str, runs), member_ua, strict=True)),
                "confusion": fold_scores["confusion"],
                "sha256": prediction_digests(d),
            },
        )
    speaker_normed = [str(r) for r in runs if is_transductive(r)]
    write_run_config(
        out / "config.json",
        {
            "emofuse_version": __version__,
            "head": "late fusion of " + " + ".join(map(str, runs)),
            "fused_runs": [absolute(r) for r in runs],
            "criterion": "validation UA, ties by validation cross-entropy",
            "grid_steps": GRID_STEPS,
            "weights": {str(k): v for k, v in weights.items()},
            "split": plans[0].split,
            "seed": plans[0].seed,
            "member_seeds": [p.seed for p in plans],
            # each member's fold predictions as fused: a member retrained later is found stale
            "member_digests": digests,
            "cache_fingerprint": first.get("cache_fingerprint"),
            # members that standardised per speaker: the fusion is transductive too
            **({"transductive": speaker_normed} if speaker_normed else {}),
        },
    )
    summary = write_summary(out, plans[0])
    from emofuse.train.report import write_report

    write_report(out)
    return summary


def _aligned(run: Path, plan: FoldPlan, k: int, fname: str) -> dict[str, Any]:
    """A fold's predictions (checked against the plan) sorted by id, so the runs' rows line up
    whatever order they were saved in."""
    p = read_fold_predictions(run, plan, k, fname)
    order = np.argsort(np.asarray(p["ids"]), kind="stable")
    return {
        "ids": [p["ids"][i] for i in order],
        "true": [p["true"][i] for i in order],
        "labels": p["labels"],
        "probs": p["probs"][order],
    }


def member_digest(run: Path, folds: Sequence[int]) -> str | None:
    """sha256 of a member's fold prediction files that a fusion reads (None: one is gone)."""
    h = hashlib.sha256()
    for k in folds:
        for kind in KINDS:
            path = fold_dir(run, k) / kind
            try:
                h.update(f"{k}/{kind}:".encode() + path.read_bytes())
            except OSError:
                return None
    return h.hexdigest()


def check_members_current(run: Path, config: dict[str, Any]) -> None:
    """A fused run ``run`` is reported only while its members still hold what was fused: one line
    when a member was retrained (or its folds deleted) since; older fusions record no digests."""
    digests = config.get("member_digests")
    if not isinstance(digests, dict) or not isinstance(config.get("weights"), dict):
        return
    try:
        folds = sorted(int(k) for k in config["weights"])
    except ValueError:
        return
    members = [str(m) for m in config.get("fused_runs") or []]
    for member, digest in digests.items():
        if Path(member).is_dir() and member_digest(Path(member), folds) != digest:
            raise EmofuseError(
                f"{run} was fused from {member} as it was before {member} was retrained (its "
                f"fold predictions changed); fuse again: `emofuse fuse {' '.join(members)} "
                "--out NEW`"
            )
