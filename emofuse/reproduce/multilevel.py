"""The multi-level fusion system (Zhao, Wang & Wang, Interspeech 2022) as rows of runs.

The abstract's system, built up one step per row: speech-only probes on the frames and on each
segment granularity, all granularities together, text only, co-attention early fusion (every
granularity), late fusion of the speech and text models ("late fusion with the models trained on
both embeddings") and early + late fusion combined — the abstract's final system. Every row is an
ordinary run folder; the late-fusion rows are ``emofuse fuse`` of earlier rows (weights chosen per
fold on validation). ``table.md`` gives each row's WA/UA and its pooled-UA difference to the
frame-only row with a 95 % bootstrap CI and the Wilcoxon p over folds (``emofuse compare``); the
abstract publishes one figure, the final system's gain over the best baseline (+1.3 UA on
IEMOCAP), which the table sets beside ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emofuse.reproduce.plan import Row
from emofuse.streams import GRANULARITIES, SEGMENT_TIERS

FRAME = "frame"  # the reference row: every other row is compared with it
BASELINES = (FRAME, *SEGMENT_TIERS, "text")  # single-model rows, without fusion
ALL_SPEECH = "+".join(["speech", *SEGMENT_TIERS])  # the audio head's multi-granularity input


def rows(split: str = "loso") -> list[Row]:
    """The rows in build-up order; late-fusion rows come after the rows they fuse."""
    speech = [Row(FRAME, split, "audio", {"speech_stream": "speech"}, name="speech, frames")]
    speech += [
        Row(t, split, "audio", {"speech_stream": t}, name=f"speech, {t} segments")
        for t in SEGMENT_TIERS
    ]
    return [
        *speech,
        Row("granularities", split, "audio", {"speech_stream": ALL_SPEECH},
            name="speech, all granularities"),
        Row("text", split, "text", name="text only"),
        Row("coattention", split, "coattention", {"granularities": ",".join(GRANULARITIES)},
            name="co-attention early fusion (all granularities)"),
        Row("late", split, "fuse", members=("granularities", "text"),
            name="late fusion: speech (all granularities) + text"),
        Row("early-late", split, "fuse", members=("coattention", "granularities", "text"),
            name="early + late fusion (the abstract's system)"),
    ]  # fmt: skip


def _cells(comparisons: list[dict[str, Any]]) -> tuple[str, str]:
    diff = "; ".join(
        f"{100 * c['pooled_UA_diff']:+.2f} [{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}]"
        for c in comparisons
    )
    return diff, "; ".join(f"{c['p']:.3g}" for c in comparisons)


def write_table(table_rows: list[Row], runs: dict[str, dict[int, Path]], out: Path) -> Path:
    """DIR/table.md (every row against frame-only, the final system against the best baseline) and
    DIR/table.png."""
    from emofuse.reproduce.plan import paper_figures
    from emofuse.reproduce.table import finish_table, pm, row_scores
    from emofuse.train.compare import compare_runs

    paper = paper_figures("multilevel")
    seeds = sorted({s for r in runs.values() for s in r})
    scores = {row.slug: row_scores(runs[row.slug]) for row in table_rows}
    per_seed = {s: compare_runs([runs[row.slug][s] for row in table_rows]) for s in seeds}
    pooled = {
        row.slug: [per_seed[s]["runs"][i]["pooled"]["UA"] for s in seeds]
        for i, row in enumerate(table_rows)
    }
    lines = [
        "# Multi-level fusion of speech SSL and BERT reproduced",
        "",
        f"Paper: {paper['source']}. Ours: mean over folds, then mean ± std over seeds "
        f"{','.join(map(str, seeds))} (%); split {per_seed[seeds[0]]['split']}, "
        f"{per_seed[seeds[0]]['n_folds']} folds. Δ: pooled UA − the frame-only row's, with its "
        "95 % bootstrap CI (test utterances resampled within folds) and the Wilcoxon signed-rank "
        "p over folds, per seed.",
        "",
        "| row | model | our WA | our UA | pooled UA | Δ pooled UA vs frame [95 % CI] | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(table_rows):
        s = scores[row.slug]
        if row.slug == FRAME:
            diff, p = "reference", "-"
        else:
            diff, p = _cells([per_seed[k]["comparisons"][i - 1] for k in seeds])
        lines.append(
            f"| {row.slug} | {row.name} | {pm(s['WA'])} | {pm(s['UA'])} | "
            f"{pm(pooled[row.slug])} | {diff} | {p} |"
        )
    best = max(BASELINES, key=lambda slug: np.mean(pooled[slug]))
    final = table_rows[-1].slug
    gain = [
        compare_runs([runs[best][k], runs[final][k]])["comparisons"][0] for k in seeds
    ]  # the best baseline by test UA: a conservative reference for the final system
    diff, p = _cells(gain)
    lines += [
        "",
        f"The abstract: {paper['claim']}: +{paper['UA_gain']:.1f} UA (IEMOCAP). Ours: {final} "
        f"vs the best baseline row ({best}, the highest pooled UA of "
        f"{', '.join(BASELINES)}): {diff} (p {p}).",
    ]
    return finish_table(lines, table_rows, scores, None, Path(out))
