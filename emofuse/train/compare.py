"""``emofuse compare``: runs on the same folds side by side, and whether a gain is more than noise.

Fold noise is large next to the gains papers report (RAVDESS per-fold UA std 0.12 against 1-2 point
gains), so every run after the first is compared with the first in two ways:

- **pooled UA difference with a 95 % bootstrap CI**: ``scipy.stats.bootstrap`` with one sample per
  fold (the positions of that fold's test utterances) and ``paired=False``, so each fold's
  utterances are resampled with replacement within that fold, the same draw for both runs (the
  statistic indexes both runs' predictions with it): the pooled UA of run B minus that of run A on
  the resampled test set. Percentile interval (BCa's jackknife is undefined when the runs agree on
  every utterance: a run against itself gives the interval [0, 0]).
- **paired test over folds**: ``scipy.stats.wilcoxon`` (signed-rank, exact distribution) of the
  per-fold UA differences; every difference zero gives p = 1.

Runs are comparable when their plans test the same utterances in the same folds (same split and
test sets); their validation draws may differ (a run's seed draws LOSO/RA validation sets).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from emofuse.errors import EmofuseError, os_reason, write_fix
from emofuse.fileio import atomic_open, save_figure
from emofuse.train.folds import FoldPlan
from emofuse.train.metrics import scores
from emofuse.train.outdir import finish_advice, is_fused_folder, not_a_run
from emofuse.train.rundir import (
    check_recorded_scores,
    finished_folds,
    is_trained_run,
    is_transductive,
    read_fold_predictions,
    read_run_config,
)

RESAMPLES = 2000
CONFIDENCE = 0.95


def load_run(run: str | Path) -> dict[str, Any]:
    """A finished run's test predictions per fold: ``{"run", "plan", "labels", "folds": {k: part}}``."""
    from emofuse.train.outdir import config_missing_error

    run = Path(run)
    if not (run / "folds.json").is_file():
        raise not_a_run(run, "compare")
    fused = is_fused_folder(run)
    trained = False
    if (run / "config.json").is_file():  # a damaged or stale run is never compared as current
        from emofuse.train.fuse import check_members_current

        config = read_run_config(run / "config.json")
        trained = is_trained_run(config)
        if not trained:
            check_members_current(run, config)
    plan = FoldPlan.load(run / "folds.json")
    done = set(finished_folds(run))
    from emofuse.train.checkpoints import check_run_folds

    # as report and fuse: a damaged fold, or one copied in from another run, is never compared
    check_run_folds(run, sorted(done), trained)
    missing = [f.fold for f in plan.folds if f.fold not in done]
    if missing and (refusal := config_missing_error(run)):  # an interrupted fuse, not members
        raise refusal
    if missing:
        raise EmofuseError(
            f"{run} has {len(plan.folds) - len(missing)} of {len(plan.folds)} folds finished "
            f"(missing: {','.join(map(str, missing))}); {finish_advice(fused)}, before comparing"
        )
    parts = {
        f.fold: read_fold_predictions(run, plan, f.fold, "predictions.csv") for f in plan.folds
    }
    check_recorded_scores(run, {k: scores(p["true"], p["predicted"]) for k, p in parts.items()})
    labels = next(iter(parts.values()))["labels"]
    return {
        "run": run, "plan": plan, "labels": labels, "folds": parts,
        "transductive": is_transductive(run),
    }  # fmt: skip


def check_same_plan(first: dict[str, Any], other: dict[str, Any], tests: bool = True) -> None:
    """One line when ``other`` does not test the same utterances in the same folds as ``first``
    (``tests`` False: the split and the fold numbers only, before the folds are read)."""
    a, b = first["plan"], other["plan"]
    why = None
    if a.split != b.split:
        why = f"split {b.split} vs {a.split}"
    elif [f.fold for f in a.folds] != [f.fold for f in b.folds]:
        why = f"{len(b.folds)} folds vs {len(a.folds)}"
    elif tests or a.seed != b.seed:  # a plan drawn with another seed: told before any advice
        # (--lopo-val changes validation only, never the test sets)
        seeds = f" (--seed {b.seed} vs {a.seed})" if a.seed != b.seed else ""
        for fa, fb in zip(a.folds, b.folds, strict=True):
            if sorted(fa.test) != sorted(fb.test):
                why = f"fold {fa.fold} tests other utterances{seeds}"
                break
    if (
        why is None
        and None not in (first["labels"], other["labels"])
        and first["labels"] != other["labels"]
    ):
        why = f"classes {','.join(other['labels'])} vs {','.join(first['labels'])}"
    if why:
        raise EmofuseError(
            f"{other['run']} and {first['run']} have different fold plans ({why}); compare runs "
            "trained on the same cache with the same --split (and the same --seed where it draws "
            "the folds)"
        )


def _codes(run: dict[str, Any], order: dict[int, list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(true, predicted) class codes over every fold's test ids in ``order`` (concatenated)."""
    index = {lab: i for i, lab in enumerate(run["labels"])}
    true, pred = [], []
    for k, ids in order.items():
        part = run["folds"][k]
        row = {i: n for n, i in enumerate(part["ids"])}
        true += [index[part["true"][row[i]]] for i in ids]
        pred += [index[part["predicted"][row[i]]] for i in ids]
    return np.asarray(true), np.asarray(pred)


def pooled_ua(true: np.ndarray, correct: np.ndarray, n_classes: int) -> np.ndarray:
    """Balanced accuracy over the last axis (mean recall of the classes present), vectorised:
    ``true`` (..., N) class codes, ``correct`` (..., N) bool -> (...)."""
    recalls = []
    for c in range(n_classes):
        is_c = true == c  # (..., N)
        n_c = is_c.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(n_c > 0, (is_c & correct).sum(-1) / n_c, np.nan))
    return np.nanmean(np.stack(recalls), axis=0)  # (...)


def ua_difference_ci(
    true: np.ndarray,
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    fold_sizes: Sequence[int],
    n_classes: int,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % percentile bootstrap CI of pooled UA(b) - UA(a), utterances resampled within folds.

    ``true``/``correct_*`` (N,) over the folds' test utterances concatenated in fold order;
    ``fold_sizes`` the folds' lengths. ``correct_a`` all False and ``correct_b`` a run's hits give
    that run's own pooled UA interval."""
    if np.array_equal(correct_a, correct_b):
        return 0.0, 0.0  # every resample differs by exactly 0
    bounds = np.cumsum([0, *fold_sizes])
    samples = [np.arange(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    if min(fold_sizes) < 2:
        raise EmofuseError("compare: a fold tests fewer than 2 utterances; nothing to resample")

    def statistic(*idx: np.ndarray, axis: int = -1) -> np.ndarray:
        pos = np.concatenate(idx, axis=-1).astype(np.int64)  # (batch, N) resampled positions
        y = true[pos]
        return pooled_ua(y, correct_b[pos], n_classes) - pooled_ua(y, correct_a[pos], n_classes)

    res = stats.bootstrap(
        samples, statistic, n_resamples=resamples, paired=False, vectorized=True,
        method="percentile", confidence_level=CONFIDENCE, rng=np.random.default_rng(seed),
        batch=200,
    )  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def fold_test(ua_a: Sequence[float], ua_b: Sequence[float]) -> tuple[float, float]:
    """Wilcoxon signed-rank (exact) over the per-fold UA differences -> (statistic, p)."""
    diff = np.asarray(ua_b) - np.asarray(ua_a)
    if not np.any(diff):
        return 0.0, 1.0  # identical per-fold scores: no evidence of any difference
    res = stats.wilcoxon(ua_b, ua_a, method="exact")
    return float(res.statistic), float(res.pvalue)


def _run_row(run: dict[str, Any], order: dict[int, list[str]], seed: int, resamples: int) -> dict:
    per_fold = []
    for k in order:
        part = run["folds"][k]
        per_fold.append({"fold": k, **scores(part["true"], part["predicted"])})
    true, pred = _codes(run, order)
    labels = run["labels"]
    pooled = scores([labels[i] for i in true], [labels[i] for i in pred])
    correct = true == pred
    low, high = ua_difference_ci(
        true, np.zeros_like(correct), correct, [len(v) for v in order.values()], len(labels),
        resamples, seed,
    )  # fmt: skip
    table = {m: [f[m] for f in per_fold] for m in ("UA", "WA", "F1")}
    return {
        "run": str(run["run"]),
        "folds": per_fold,
        "mean": {m: float(np.mean(v)) for m, v in table.items()},
        "std": {m: float(np.std(v)) for m, v in table.items()},
        "pooled": pooled,
        "pooled_UA_ci": [low, high],
        "transductive": run["transductive"],  # --speaker-norm (itself or a fused member)
    }


def compare_runs(
    runs: Sequence[str | Path], resamples: int = RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """Every run's per-fold, mean ± std and pooled scores; each later run against the first."""
    if not runs:
        raise EmofuseError("compare needs at least one run folder")
    seen: dict[Path, str | Path] = {}
    for r in runs:  # a run against itself is a typo, never a comparison (diff 0, p 1)
        if Path(r).resolve() in seen:
            raise EmofuseError(
                f"{r} is given twice (also as {seen[Path(r).resolve()]}); compare different runs"
            )
        seen[Path(r).resolve()] = r
    # the plans' shapes first: runs that can never be compared are told so before any advice to
    # finish one of them (which would end at this refusal); their test sets once the folds are
    # read (an edited folds.json is named there)
    plans = [
        {"run": Path(r), "plan": FoldPlan.load(Path(r) / "folds.json"), "labels": None}
        for r in runs
        if (Path(r) / "folds.json").is_file()
    ]
    if len(plans) == len(runs):
        for other in plans[1:]:
            check_same_plan(plans[0], other, tests=False)
    loaded = [load_run(r) for r in runs]
    for other in loaded[1:]:
        check_same_plan(loaded[0], other)
    first = loaded[0]
    order = {f.fold: sorted(f.test) for f in first["plan"].folds}
    sizes = [len(v) for v in order.values()]
    rows = [_run_row(r, order, seed, resamples) for r in loaded]
    true, pred_a = _codes(first, order)
    comparisons = []
    for run, row in zip(loaded[1:], rows[1:], strict=True):
        _, pred_b = _codes(run, order)
        low, high = ua_difference_ci(
            true, pred_a == true, pred_b == true, sizes, len(first["labels"]), resamples, seed
        )
        ua_a = [f["UA"] for f in rows[0]["folds"]]
        ua_b = [f["UA"] for f in row["folds"]]
        statistic, p = fold_test(ua_a, ua_b)
        comparisons.append(
            {
                "run": row["run"],
                "against": rows[0]["run"],
                "pooled_UA_diff": row["pooled"]["UA"] - rows[0]["pooled"]["UA"],
                "ci": [low, high],
                "mean_fold_UA_diff": float(np.mean(np.subtract(ua_b, ua_a))),
                "wilcoxon_statistic": statistic,
                "p": p,
                "n_folds": len(ua_a),
            }
        )
    return {
        "split": first["plan"].split,
        "n_folds": len(order),
        "n_utterances": int(sum(sizes)),
        "labels": first["labels"],
        "confidence": CONFIDENCE,
        "resamples": resamples,
        "bootstrap": "percentile; test utterances resampled with replacement within each fold",
        "fold_test": "Wilcoxon signed-rank on per-fold UA, exact",
        "runs": rows,
        "comparisons": comparisons,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def format_compare(result: dict[str, Any]) -> str:
    """The comparison as markdown (per-fold UA/WA, mean ± std, pooled; differences with CI, p)."""
    rows, names = result["runs"], [r["run"] for r in result["runs"]]
    lines = [
        f"split {result['split']}, {result['n_folds']} folds, {result['n_utterances']} test "
        "utterances (%)",
        "",
        "| fold | " + " | ".join(f"{n} UA / WA" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, f in enumerate(rows[0]["folds"]):
        cells = [f"{_pct(r['folds'][i]['UA'])} / {_pct(r['folds'][i]['WA'])}" for r in rows]
        lines.append(f"| {f['fold']} | " + " | ".join(cells) + " |")
    lines.append(
        "| mean ± std | "
        + " | ".join(
            f"{_pct(r['mean']['UA'])} ± {_pct(r['std']['UA'])} / "
            f"{_pct(r['mean']['WA'])} ± {_pct(r['std']['WA'])}"
            for r in rows
        )
        + " |"
    )
    lines.append(
        "| pooled | "
        + " | ".join(f"{_pct(r['pooled']['UA'])} / {_pct(r['pooled']['WA'])}" for r in rows)
        + " |"
    )
    if result["comparisons"]:
        lines += [
            "",
            f"| run | against | pooled UA diff | {int(100 * result['confidence'])} % CI | "
            "Wilcoxon p (folds) |",
            "|---|---|---|---|---|",
        ]
        for c in result["comparisons"]:
            lines.append(
                f"| {c['run']} | {c['against']} | {100 * c['pooled_UA_diff']:+.2f} | "
                f"[{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}] | {c['p']:.3g} |"
            )
        lines += [  # how the table's CIs and p-values were made (a single run has none)
            "",
            f"CI: {result['bootstrap']} ({result['resamples']} resamples); p: {result['fold_test']}.",
        ]
    normed = [r["run"] for r in rows if r.get("transductive")]
    if normed and len(normed) < len(rows):  # a mix: the difference is partly the protocol's
        lines += [
            "",
            f"note: {', '.join(normed)} standardised features per speaker (--speaker-norm, the "
            "test speakers' unlabelled audio included: transductive) and the other runs did not, "
            "so their differences are not a like-for-like comparison",
        ]
    return "\n".join(lines)


def plot_compare(result: dict[str, Any], path: Path) -> None:
    """Pooled UA per run with its bootstrap CI; each run's difference from the first with its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["runs"]
    names = [Path(r["run"]).name or r["run"] for r in rows]
    fig, (ax_ua, ax_diff) = plt.subplots(1, 2, figsize=(4 + 1.2 * len(rows), 4))
    ua = np.array([r["pooled"]["UA"] for r in rows])
    ci = np.array([r["pooled_UA_ci"] for r in rows])
    x = np.arange(len(rows))
    ax_ua.bar(x, 100 * ua, yerr=100 * np.abs(ci.T - ua), capsize=4, color="tab:blue")
    ax_ua.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    ax_ua.set_title("pooled UA (%) with 95 % CI")
    comps = result["comparisons"]
    if comps:
        d = np.array([c["pooled_UA_diff"] for c in comps])
        dci = np.array([c["ci"] for c in comps])
        xd = np.arange(len(comps))
        ax_diff.bar(xd, 100 * d, yerr=100 * np.abs(dci.T - d), capsize=4, color="tab:orange")
        ax_diff.axhline(0, color="black", lw=0.8)
        ax_diff.set_xticks(xd, names[1:], rotation=30, ha="right", fontsize=8)
    ax_diff.set_title(f"UA difference vs {names[0]} (points)")
    fig.tight_layout()
    save_figure(fig, path)


def write_compare(result: dict[str, Any], out: str | Path) -> Path:
    """compare.json, compare.md and compare.png in the folder ``out``."""
    from emofuse.errors import check_out_path

    out = Path(out)
    check_out_path(out)
    from emofuse.cache.store import check_outside_caches

    check_outside_caches(out, "the comparison's folder")  # not among a Zarr cache's arrays
    if mine := _not_ours(out):  # a user's compare.md is never written over
        raise EmofuseError(
            f"--out {out} holds {mine}, which emofuse compare did not write; give another --out "
            "(an earlier comparison's files are replaced, nothing else)"
        )
    try:  # each file whole or not there: a full disk never leaves one that looks like a result
        out.mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "compare.json") as fh:
            fh.write(json.dumps(result, indent=1) + "\n")
        with atomic_open(out / "compare.md") as fh:
            fh.write(
                "# Run comparison\n\n" + format_compare(result) + "\n\n![comparison](compare.png)\n"
            )
        plot_compare(result, out / "compare.png")
    except OSError as err:
        raise EmofuseError(
            f"cannot write {err.filename or out} ({os_reason(err)}): "
            + write_fix(err, f"free disk space or make {out} writable")
            + ", then rerun the same command"
        ) from None
    return out / "compare.md"


def _not_ours(out: Path) -> str | None:
    """The first of compare's file names in ``out`` that holds something else (None: none)."""
    md, js = out / "compare.md", out / "compare.json"
    try:
        if md.exists() and not md.read_text(errors="replace").startswith("# Run comparison"):
            return md.name
        if js.exists() and "fold_test" not in (json.loads(js.read_text()) or {}):
            return js.name
    except (OSError, ValueError, TypeError, AttributeError):
        return js.name
    png = out / "compare.png"
    if png.exists() and not md.exists():  # a plot with no comparison beside it: not ours
        return png.name
    return None
