"""report.md and PNG plots of a run folder, regenerated from its files alone.

The report states which numbers are mean ± std over folds (the papers' convention, e.g. TDFNet
Table I) and which are pooled over the concatenated test predictions, because the two differ and
peers' tables rarely say which they give.
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from emofuse.errors import MAKE_READABLE, EmofuseError, os_reason  # noqa: E402
from emofuse.fileio import save_figure, write_text  # noqa: E402

METRICS = ("UA", "WA", "F1")


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise EmofuseError(f"{path} is missing; is {path.parent} a finished `emofuse train` run?")
    from emofuse.train.rundir import read_json

    return read_json(path)


def write_report(run: str | Path, tsne: bool = False) -> Path:
    """Write report.md, confusion.png, curves.png (and tsne.png) into the run folder."""
    run = Path(run)
    summary = load_json(run / "summary.json")
    from emofuse.train.rundir import read_metrics, read_run_config

    load_json(run / "config.json")  # missing: one line
    config = read_run_config(run / "config.json")
    fold_metrics = {}
    for f in summary["folds"]:
        path = run / f"fold_{f['fold']:02d}" / "metrics.json"
        fold_metrics[f["fold"]] = read_metrics(path, f["fold"]) if path.is_file() else {}
    labels = summary["labels"]
    plot_confusion(summary["confusion"], labels, run / "confusion.png")
    has_curves = plot_curves(run, run / "curves.png")
    lines = [
        f"# Run report: {run.name}",
        "",
        f"- head: `{config.get('head')}`"
        + (f" (preset `{config['preset']}`)" if config.get("preset") else ""),
        f"- split: `{summary.get('split', config.get('split'))}`, seed {config.get('seed')}, "
        f"{len(summary['folds'])} of {summary.get('folds_planned', len(summary['folds']))} folds finished",
        f"- cache fingerprint: `{config.get('cache_fingerprint')}`",
        "- model selection: best validation "
        + ("UA" if config.get("loop", {}).get("select") == "ua" else "loss")
        + " (the test set never selects a checkpoint)",
        *[f"- fitted to the cache: `{k}` = {why}" for k, why in config.get("adapted", {}).items()],
        *(
            [
                "- **speaker normalisation** (`--speaker-norm`): acoustic features were standardised "
                "per speaker with statistics of all that speaker's utterances, the test speaker's "
                "unlabelled audio included (transductive; no labels used). Compare it only with "
                "runs that do the same."
            ]
            if config.get("loop", {}).get("speaker_norm")
            else []
        ),
        *(
            [
                "- **speaker normalisation** in member run(s) "
                + ", ".join(f"`{r}`" for r in config["transductive"])
                + " (`--speaker-norm`: features standardised per speaker, the test speaker's "
                "unlabelled audio included; transductive), so this fusion is transductive too. "
                "Compare it only with runs that do the same."
            ]
            if isinstance(config.get("transductive"), list)
            else []
        ),
        "",
        "## Per fold (test set of each fold, %)",
        "",
        "| fold | test set | UA | WA | F1 | best epoch | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in summary["folds"]:
        m = fold_metrics.get(f["fold"], {})
        minutes = f"{m['minutes']:.2f}" if "minutes" in m else ""
        lines.append(
            f"| {f['fold']} | {m.get('test_set', '')} | {_pct(f['UA'])} | {_pct(f['WA'])} | "
            f"{_pct(f['F1'])} | {m.get('best_epoch', '')} | {minutes} |"
        )
    mean, std, pooled = summary["mean"], summary["std"], summary["pooled"]
    fold_minutes = [m["minutes"] for m in fold_metrics.values() if "minutes" in m]
    total = f"{sum(fold_minutes):.2f} (sum of {len(fold_minutes)} folds)" if fold_minutes else ""
    lines.append(
        "| **mean ± std over folds** | | "
        + " | ".join(f"{_pct(mean[k])} ± {_pct(std[k])}" for k in METRICS)
        + f" | | {total} |"
    )
    lines.append(
        "| **pooled** (all test predictions as one set) | | "
        + " | ".join(_pct(pooled[k]) for k in METRICS)
        + " | | |"
    )
    wall = _wall_line(run)
    lines += [
        *(["", wall] if wall else []),
        "",
        "UA = unweighted accuracy (mean per-class recall, `balanced_accuracy_score`); WA = weighted "
        'accuracy (overall accuracy, `accuracy_score`); F1 = macro F1. "mean ± std" averages the '
        'per-fold values (population std); "pooled" scores the concatenated test predictions of all '
        "folds.",
        "",
        "## Pooled confusion matrix (rows = true, columns = predicted; counts, row %)",
        "",
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    counts, norm = summary["confusion"]["counts"], summary["confusion"]["normalized"]
    for lab, row_c, row_n in zip(labels, counts, norm, strict=True):
        cells = [f"{c} ({100 * n:.1f})" for c, n in zip(row_c, row_n, strict=True)]
        lines.append(f"| **{lab}** | " + " | ".join(cells) + " |")
    lines += ["", "![confusion](confusion.png)"]
    if has_curves:
        lines += ["", "![training curves](curves.png)"]
    if tsne:
        plot_tsne(run, run / "tsne.png")
    if (run / "tsne.png").is_file():
        lines += ["", "![t-SNE of pooled test embeddings](tsne.png)"]
    write_text(run / "report.md", "\n".join(lines) + "\n")
    return run / "report.md"


def plot_confusion(confusion: dict[str, Any], labels: list[str], path: Path) -> None:
    """Row-normalised pooled confusion matrix, each cell annotated with % and count."""
    norm = np.asarray(confusion["normalized"], dtype=float)  # (C, C)
    counts = np.asarray(confusion["counts"])
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 1.2 * len(labels) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j, i, f"{100 * norm[i, j]:.1f}%\n({counts[i, j]})", ha="center", va="center",
                color="white" if norm[i, j] > 0.5 else "black", fontsize=8,
            )  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("pooled test confusion (row %)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_curves(run: Path, path: Path) -> bool:
    """Training/validation loss and validation UA per epoch, one line per fold (False: no curves)."""
    from emofuse.train.curves import read_curves
    from emofuse.train.rundir import finished_folds, fold_dir

    # finished folds only: a fold being trained (or killed mid-epoch) is not reported
    files = [fold_dir(run, k) / "curves.jsonl" for k in finished_folds(run)]
    files = [f for f in files if f.is_file()]
    if not files:  # e.g. a late-fusion run: nothing was trained
        return False
    fig, (ax_loss, ax_ua) = plt.subplots(1, 2, figsize=(10, 4))
    for curves in files:
        rows = read_curves(curves)
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        (line,) = ax_loss.plot(epochs, [r["val_loss"] for r in rows], label=curves.parent.name)
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], "--", color=line.get_color())
        ax_ua.plot(epochs, [r["val_UA"] for r in rows], color=line.get_color())
    ax_loss.set_title("loss (solid = validation, dashed = train)")
    ax_loss.set_xlabel("epoch")
    ax_ua.set_title("validation UA")
    ax_ua.set_xlabel("epoch")
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def plot_tsne(run: Path, path: Path, seed: int = 0) -> None:
    """t-SNE of the pooled test-utterance embeddings (each fold's own model), coloured by label."""
    from sklearn.manifold import TSNE

    from emofuse.train.checkpoints import fold_embeddings

    emb, labels = fold_embeddings(run)  # (N, E), (N,)
    perplexity = float(min(30, max(2, (len(emb) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(
        emb
    )
    fig, ax = plt.subplots(figsize=(6, 5))
    for lab in sorted(set(labels)):
        sel = np.asarray(labels) == lab
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, label=lab)
    ax.legend(markerscale=3)
    ax.set_title("t-SNE of test-utterance embeddings (pooled over folds)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)


NO_LINE = "report.md has no wall-clock line (the folds and their own minutes are unaffected)"


def _read_wall(run: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The calls ``wall.json`` records, and why it cannot be read with what to do (None when it is
    whole or absent: a run trained before it was written has none)."""
    path = run / "wall.json"
    if not path.exists():
        return [], None
    if not path.is_file():
        return [], f"is not a regular file, so {NO_LINE}; move it away"
    try:
        calls = json.loads(path.read_text())["calls"]
        for c in calls:  # a negative or non-finite duration is an edit, not a wall time
            if not (0 <= float(c["minutes"]) < math.inf and int(c["jobs"]) >= 1):
                raise ValueError
    except OSError as err:
        why = f"cannot be read ({os_reason(err)})"
        if err.errno in (errno.EACCES, errno.EPERM):  # not damaged: its record is worth keeping
            return [], f"{why}, so {NO_LINE}; {MAKE_READABLE} to get the line back, or move it away"
        return [], f"{why}, so {NO_LINE}; move it away"
    except (ValueError, KeyError, TypeError):
        return [], f"is damaged (not the JSON train writes), so {NO_LINE}; move it away"
    return calls, None


def wall_note(run: Path) -> str | None:
    """A note when ``wall.json`` is there but unreadable: the report leaves its line out, and says so."""
    _, problem = _read_wall(run)
    return f"{run / 'wall.json'} {problem} to silence this note" if problem else None


def _wall_line(run: Path) -> str:
    """The plan's wall-clock minutes from ``wall.json`` (every call that trained folds), or ''."""
    calls, _ = _read_wall(run)
    if not calls:
        return ""  # the minutes are a courtesy: a damaged wall.json never stops a report
    minutes = sum(float(c["minutes"]) for c in calls)
    jobs = max(int(c["jobs"]) for c in calls)
    at_once = f", up to {jobs} folds at once" if jobs > 1 else ""
    from emofuse.train.rundir import finished_folds

    covered = {k for c in calls if isinstance(c.get("folds"), list) for k in c["folds"]}
    unrecorded = sorted(set(finished_folds(run)) - covered)  # wall.json deleted, say, and re-made
    lost = (
        f" Folds {', '.join(map(str, unrecorded))} were trained by calls wall.json does not "
        "record (it was deleted or replaced since), so their time is not in this figure."
        if unrecorded and covered
        else ""
    )
    return (
        f"Wall clock: {minutes:.2f} min for the folds trained ({len(calls)} call(s) of "
        f"`emofuse train`{at_once}); the minutes column is each fold's own wall time.{lost}"
    )
