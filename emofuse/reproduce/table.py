"""DIR/table.md and DIR/table.png: our WA/UA per row (mean ± std over seeds) next to the paper's.

Our figure per run is the mean over its folds (the paper's "mean" rows); a row's figure is the mean
± std of that over seeds (std 0 with one seed). Table V rows also get the pooled-UA difference to
the full model with its 95 % bootstrap CI (``emofuse.train.compare``), per seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emofuse.fileio import save_figure, write_text
from emofuse.reproduce import tdfnet
from emofuse.train.folds import FoldPlan
from emofuse.train.rundir import read_json


def pm(values: list[float]) -> str:
    return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


def _diff(values: list[float], paper: float | None) -> str:
    return "-" if paper is None else f"{100 * np.mean(values) - paper:+.2f}"


def _fig(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def row_scores(runs: dict[int, Path]) -> dict[str, Any]:
    """Per seed: mean-over-folds WA/UA and per-fold WA/UA keyed by fold number."""
    out: dict[str, Any] = {"WA": [], "UA": [], "folds": {}}
    for path in runs.values():
        summary = read_json(path / "summary.json")
        out["WA"].append(summary["mean"]["WA"])
        out["UA"].append(summary["mean"]["UA"])
        for f in summary["folds"]:
            out["folds"].setdefault(f["fold"], {"WA": [], "UA": []})
            out["folds"][f["fold"]]["WA"].append(f["WA"])
            out["folds"][f["fold"]]["UA"].append(f["UA"])
    return out


def fold_names(run: Path, table: dict[str, Any]) -> dict[int, str]:
    """The paper's name for each fold of ``run`` (Session1, Ses01M, Fold1 ...)."""
    from emofuse.train.run import test_set_name

    plan = FoldPlan.load(run / "folds.json")
    return {
        f.fold: tdfnet.fold_key(plan.split, test_set_name(plan.split, f, table), f.fold)
        for f in plan.folds
    }


def against_full(rows, runs) -> dict[str, list[str]]:
    """Table V: per row, per seed, the pooled-UA difference to the full model with its CI."""
    from emofuse.train.compare import compare_runs

    cells: dict[str, list[str]] = {}
    for row in rows:
        if row.slug == tdfnet.FULL:
            continue
        for seed, path in runs[row.slug].items():
            full = runs[tdfnet.FULL].get(seed)
            if full is None:
                continue
            c = compare_runs([full, path])["comparisons"][0]
            cells.setdefault(row.slug, []).append(
                f"{100 * c['pooled_UA_diff']:+.2f} [{100 * c['ci'][0]:+.2f}, "
                f"{100 * c['ci'][1]:+.2f}]" + (f" (seed {seed})" if len(runs[row.slug]) > 1 else "")
            )
    return cells


def write_table(
    table: int, rows: list, runs: dict[str, dict[int, Path]], out: Path, cache_table: dict
) -> Path:
    figures = tdfnet.paper_figures()["tables"][str(table)]
    seeds = sorted({s for r in runs.values() for s in r})
    scores = {row.slug: row_scores(runs[row.slug]) for row in rows}
    lines = [
        f"# TDFNet {figures['name'].split(':')[0]} reproduced",
        "",
        f"Paper: {figures['name']}. Ours: mean over folds, then mean ± std over seeds "
        f"{','.join(map(str, seeds))} (%). Difference: ours − paper (points).",
        "",
    ]
    compare = table == 5
    cells = against_full(rows, runs) if compare else {}
    head = "| row | split | our WA | our UA | paper WA | paper UA | WA diff | UA diff |"
    sep = "|---|---|---|---|---|---|---|---|"
    if compare:
        head += " pooled UA diff vs full [95 % CI] |"
        sep += "---|"
    lines += [head, sep]
    for row in rows:
        s, paper = scores[row.slug], figures["rows"][row.slug]
        line = (
            f"| {paper['name']} ({row.slug}) | {row.split} | {pm(s['WA'])} | {pm(s['UA'])} | "
            f"{_fig(paper['WA'])} | {_fig(paper['UA'])} | {_diff(s['WA'], paper['WA'])} | "
            f"{_diff(s['UA'], paper['UA'])} |"
        )
        if compare:
            line += " " + ("reference" if row.slug == tdfnet.FULL else "; ".join(
                cells.get(row.slug, ["-"]))) + " |"  # fmt: skip
        lines.append(line)
    if table == 1:
        for row in rows:
            s, paper = scores[row.slug], figures["rows"][row.slug]
            names = fold_names(next(iter(runs[row.slug].values())), cache_table)
            lines += [
                "",
                f"## {paper['name']} per fold",
                "",
                "| fold | tests | our WA | our UA | paper WA | paper UA | WA diff | UA diff |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for k, f in sorted(s["folds"].items()):
                name = names.get(k, str(k))
                p = paper.get("folds", {}).get(name, {})
                lines.append(
                    f"| {k} | {name} | {pm(f['WA'])} | {pm(f['UA'])} | {_fig(p.get('WA'))} | "
                    f"{_fig(p.get('UA'))} | {_diff(f['WA'], p.get('WA'))} | "
                    f"{_diff(f['UA'], p.get('UA'))} |"
                )
    return finish_table(lines, rows, scores, figures, Path(out))


def finish_table(lines: list[str], rows, scores, figures: dict | None, out: Path) -> Path:
    """The runs line and the plot under a table's lines; writes DIR/table.md and DIR/table.png."""
    lines = [
        *lines,
        "",
        "Runs: " + ", ".join(f"`{r.slug}/seed<k>`" for r in rows) + " (ordinary run folders: "
        "`emofuse report`/`compare` read them).",
        "",
        "![table](table.png)",
        "",
    ]
    path = out / "table.md"
    write_text(path, "\n".join(lines))
    plot_rows(rows, scores, figures, out / "table.png")
    return path


def plot_rows(rows, scores, figures: dict | None, path: Path) -> None:
    """WA and UA per row (mean over seeds, std as the error bar), beside the paper's if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    width = 0.4 if figures else 0.7
    fig, axes = plt.subplots(1, 2, figsize=(3 + 1.3 * len(rows), 4), sharey=True)
    for ax, metric in zip(axes, ("WA", "UA"), strict=True):
        ours = [100 * np.mean(scores[r.slug][metric]) for r in rows]
        err = [100 * np.std(scores[r.slug][metric]) for r in rows]
        shift = -0.2 if figures else 0.0
        ax.bar(x + shift, ours, width, yerr=err, capsize=3, label="ours", color="tab:blue")
        if figures:
            paper = [figures["rows"][r.slug][metric] or np.nan for r in rows]
            ax.bar(x + 0.2, paper, width, label="paper", color="tab:gray")
        ax.set_xticks(x, [r.slug for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric} (%)")
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path)
