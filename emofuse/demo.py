"""``emofuse demo``: the whole pipeline on the synthetic demo corpus, offline, in a few minutes.

corpus (synthetic, IEMOCAP layout) → tiny local encoders (random weights, real architectures,
unless models are given) → ``emofuse extract`` → ``emofuse train --split loso`` for the
co-attention head and the ``small`` TDFNet → per-fold tables and report paths.

Every step is the library call the corresponding CLI command makes, so the demo exercises the real
code paths; it is deterministic for a given seed and thread count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emofuse.corpus.synthetic.layout import MARKER
from emofuse.errors import EmofuseError

# (head, preset, --set overrides, loop): sized so both fit the demo's 5-minute budget on 2 CPU cores.
# The demo corpus is small (400 utterances), so it takes a higher learning rate and smaller batches
# than the paper's protocol (lr 1e-4, batch 32) to converge in a few epochs. TDFNet keeps batch 32
# (its sequential GRU steps cost the same per batch on CPU: 147 s vs 191 s at batch 16, pooled UA
# 0.680 vs 0.670 in one measurement on an idle 2-core machine).
DEMO_HEADS: tuple[tuple[str, str, dict[str, str], dict[str, Any]], ...] = (
    ("coattention", "small", {}, {"lr": 1e-3, "batch_size": 16, "epochs": 6}),
    ("tdfnet", "small", {}, {"lr": 6e-4, "batch_size": 32, "epochs": 6}),
)


@dataclass
class DemoResult:
    out: Path
    cache: Path
    runs: dict[str, Path] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


def run_demo(
    out: str | Path = "demo",
    speech_model: str | None = None,
    text_model: str | None = None,
    speaker_model: str | None = None,
    seed: int = 0,
    device: str = "auto",
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> DemoResult:
    """Write the corpus, extract a cache, train both heads with LOSO; return where it all went."""
    start = time.perf_counter()  # before the heavy imports, so the reported time includes them
    import torch

    from emofuse.corpus import read_corpus, write_synthetic_corpus
    from emofuse.encoders.tiny import build_tiny_models
    from emofuse.extract import ExtractConfig, run_extract
    from emofuse.train.loop import LoopConfig
    from emofuse.train.run import train_run

    torch.manual_seed(seed)
    out = Path(out)
    from emofuse.cache.store import enclosing_cache

    cache = enclosing_cache(out / "corpus")  # before anything is written: the corpus goes first
    if cache is not None:
        where = "is" if cache.resolve() == out.resolve() else "is inside"
        raise EmofuseError(
            f"--out {out} {where} the cache {cache}; give the demo a folder of its own "
            "(e.g. --out demo)"
        )
    from emofuse.train.outdir import check_outside_runs, is_run_folder

    if is_run_folder(out):  # before anything is written: 80 MB went into a finished run before
        raise EmofuseError(
            f"--out {out} is a run folder (train or fuse wrote it); give the demo a folder of its "
            "own (e.g. --out demo)"
        )
    check_outside_runs(out, "the demo a folder of its own")
    _check_demo_folder(out)
    corpus_dir = out / "corpus"
    if not _corpus_complete(corpus_dir):  # an interrupted demo's half corpus is written again
        echo(f"[1/4] writing the synthetic demo corpus to {corpus_dir}")
        write_synthetic_corpus(corpus_dir, profile="demo", seed=seed, progress=progress)
    else:
        echo(f"[1/4] reusing the demo corpus in {corpus_dir}")
    read = read_corpus("iemocap", root=corpus_dir, classes="4", progress=False)

    if not (speech_model and text_model and speaker_model):
        echo(f"[2/4] building tiny local encoders (random weights) in {out / 'models'}")
        tiny = build_tiny_models(out / "models", seed=seed)
        speech_model = speech_model or str(tiny.speech["hubert"])
        text_model = text_model or str(tiny.text)
        speaker_model = speaker_model or str(tiny.speaker)
    else:
        echo("[2/4] using the given encoders")

    cache = out / "cache" / "demo.h5"
    _check_cache_models(out, cache, speech_model, text_model, speaker_model)
    echo(f"[3/4] extracting {len(read.utterances)} utterances into {cache}")
    run_extract(
        read.utterances,
        ExtractConfig(
            out=cache,
            speech_model=speech_model,
            text_model=text_model,
            speaker_model=speaker_model,
            fbank=True,  # log-mel frames: TDFNet's "w/o ME" row (Table V) reads them
            device=device,
            model_dir=out / "models" / "speechbrain",
            progress=progress,
        ),
        echo=echo,
    )

    result = DemoResult(out=out, cache=cache)
    for head, preset, sets, loop in DEMO_HEADS:
        run = out / "runs" / f"{head}-loso"
        echo(f"[4/4] training {head} ({preset}) with leave-one-session-out → {run}")
        summary = train_run(
            cache,
            head,
            run,
            "loso",
            preset=preset,
            sets=sets,
            loop=LoopConfig(seed=seed, **loop),
            device=device,
            progress=progress,
        )
        result.runs[head] = run
        result.summaries[head] = summary or {}
    result.seconds = time.perf_counter() - start
    return result


DEMO_ENTRIES = ("corpus", "models", "cache", "runs")  # all the demo writes in its --out


def _check_demo_folder(out: Path) -> None:
    """``out`` is new, empty, or an earlier demo's (only the demo's folders, its corpus marked
    synthetic): the demo never spreads its folders among a user's (``--out /`` or ``--out ~``)."""
    try:
        names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    except OSError:
        return  # an unreadable folder: the first write names it
    foreign = [n for n in names if n not in DEMO_ENTRIES]
    corpus = out / "corpus"
    if corpus.is_dir() and any(corpus.iterdir()) and not (corpus / MARKER).is_file():
        foreign.insert(0, "corpus (not the demo's synthetic corpus)")
    if foreign:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise EmofuseError(
            f"--out {out} is not empty and not a demo folder (it holds {shown}); give the demo a "
            "new or empty folder of its own (e.g. --out demo)"
        )


def _corpus_complete(corpus: Path) -> bool:
    """The synthetic corpus there was written to its end (its marker says so)."""
    try:
        return json.loads((corpus / MARKER).read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def _check_cache_models(out: Path, cache: Path, *models: str) -> None:
    """A finished demo cache made with its models at other paths (the demo folder was copied or
    moved: its models are recorded as they were given): one line saying so. The rerun's
    "extracted with --speaker-model …, rerun with the same options" named options the demo
    chooses itself."""
    if not cache.is_file():
        return
    from emofuse.cache import open_cache

    try:
        recorded = open_cache(cache).settings
    except EmofuseError:
        return  # damaged or unfinished: extract names that itself
    keys = ("speech_model", "text_model", "speaker_model")
    moved = [
        (k, recorded.get(k)) for k, m in zip(keys, models, strict=True) if recorded.get(k) != m
    ]
    if moved:
        key, was = moved[0]
        raise EmofuseError(
            f"--out {out} holds a demo cache made with its models at other paths ({key} "
            f"{was!r}: the folder was copied or moved?); delete {cache} to extract it again "
            "here, or give the demo a new --out"
        )


def format_table(name: str, summary: dict[str, Any]) -> str:
    """The per-fold table (like TDFNet's Table I) with mean ± std and pooled rows."""
    lines = [f"{name}", f"{'fold':<16}{'UA':>8}{'WA':>8}{'F1':>8}"]
    for f in summary["folds"]:
        lines.append(
            f"{'Session' + str(f['fold']):<16}{f['UA']:>8.4f}{f['WA']:>8.4f}{f['F1']:>8.4f}"
        )
    m, s, p = summary["mean"], summary["std"], summary["pooled"]
    lines.append(f"{'mean':<16}{m['UA']:>8.4f}{m['WA']:>8.4f}{m['F1']:>8.4f}")
    lines.append(f"{'std':<16}{s['UA']:>8.4f}{s['WA']:>8.4f}{s['F1']:>8.4f}")
    lines.append(f"{'pooled':<16}{p['UA']:>8.4f}{p['WA']:>8.4f}{p['F1']:>8.4f}")
    return "\n".join(lines)
