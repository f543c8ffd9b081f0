"""``emofuse extract``: read a corpus, run the frozen encoders once, write the feature cache."""

from __future__ import annotations

import os
from pathlib import Path

import click

from emofuse.cli.corpus import corpus_options
from emofuse.cli.options import OUT, FiniteFloatRange, note
from emofuse.errors import EmofuseError
from emofuse.extract import (
    DEFAULT_SPEAKER,
    DEFAULT_SPEECH,
    DEFAULT_TEXT,
    DTYPES,
    ExtractConfig,
    ExtractSummary,
    run_extract,
)
from emofuse.streams import GRANULARITIES


def _model(value: str) -> str | None:
    return None if value.strip().lower() == "none" else value


def _granularity(ctx, param, value: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    bad = [p for p in parts if p not in GRANULARITIES]
    if bad or not parts:
        raise click.BadParameter(f"{value!r}: a comma list from {','.join(GRANULARITIES)}")
    return parts


@click.command("extract")
@corpus_options
@click.option(
    "--out",
    required=True,
    type=OUT,
    help="cache/NAME.h5 (HDF5) or cache/NAME.zarr (Zarr v3)",
)
@click.option(
    "--speech-model", default=DEFAULT_SPEECH, show_default=True, help="hub id, folder, or none"
)
@click.option(
    "--text-model", default=DEFAULT_TEXT, show_default=True, help="hub id, folder, or none"
)
@click.option(
    "--speaker-model", default=DEFAULT_SPEAKER, show_default=True, help="hub id, folder, or none"
)
@click.option(
    "--layers", default="all", show_default=True, help="speech layers stored: all|last|0,6,12"
)
@click.option("--text-layers", default="all", show_default=True, help="text layers stored")
@click.option(
    "--granularity",
    default=",".join(GRANULARITIES),
    show_default=True,
    callback=_granularity,
    help="speech streams: frame and/or segment tiers",
)
@click.option("--keep-fillers", is_flag=True, help="pool silences and fillers as segments too")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--dtype",
    type=click.Choice(["auto", *DTYPES]),
    default="auto",
    show_default=True,
    help="compute dtype (auto: float16 on CUDA; bfloat16 on a CPU with AMX or AVX-512 BF16, "
    "float32 on other CPUs); the cache stores float16",
)
@click.option("--batch-seconds", type=FiniteFloatRange(min=1.0), default=120.0, show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="first N rows of the corpus only (rows --skip-missing drops count)",
)
@click.option("--strict", is_flag=True, help="bad audio is fatal instead of skipped")
@click.option("--fbank", is_flag=True, help="also store 80-bin log-mel frames")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="audio decoding threads",
)
@click.option(
    "--flush-seconds",
    type=FiniteFloatRange(min=0.0),
    default=10.0,
    show_default=True,
    help="commit finished utterances to disk at least this often (a kill loses at most this much)",
)
@click.option("--quiet", is_flag=True, help="no progress bar")
def extract_cmd(**opts) -> None:
    """Run frozen speech/text/speaker encoders once over a corpus into a feature cache.

    Resumes an interrupted run into the same --out when the settings match.
    """
    read = opts.pop("corpus")
    for reason, items in read.skipped.items():
        note(f"corpus: skipped {len(items)} ({reason}), e.g. {', '.join(items[:3])}")
    # the reader's normalisation mode belongs in the fingerprint (corpus_options consumed it)
    text_norm = click.get_current_context().params.get("text_norm", "default")
    cfg = ExtractConfig(
        out=opts["out"],
        speech_model=_model(opts["speech_model"]),
        text_model=_model(opts["text_model"]),
        speaker_model=_model(opts["speaker_model"]),
        layers=opts["layers"],
        text_layers=opts["text_layers"],
        granularity=opts["granularity"],
        keep_fillers=opts["keep_fillers"],
        text_norm=text_norm,
        fbank=opts["fbank"],
        device=opts["device"],
        dtype=opts["dtype"],
        batch_seconds=opts["batch_seconds"],
        limit=opts["limit"],
        strict=opts["strict"],
        decode_workers=opts["workers"],
        flush_seconds=opts["flush_seconds"],
        progress=not opts["quiet"],
    )
    try:
        from emofuse.corpus.iemocap import SKIP_BAD_WAV
        from emofuse.corpus.manifest import AUDIO_SKIPS

        # rows lost to bad audio are listed in the cache (a repaired file is named on a rerun)
        lost = {r: ids for r, ids in read.skipped.items() if r in (*AUDIO_SKIPS, SKIP_BAD_WAV)}
        if cfg.strict and lost:  # the reader's skips too: --strict makes bad audio fatal
            reason, ids = next(iter(lost.items()))
            raise EmofuseError(
                f"utterance {ids[0]}: {reason} (--strict; drop --strict to skip bad audio and "
                "list it in the summary)"
            )
        summary = run_extract(read.utterances, cfg, echo=click.echo, skipped=lost)
    except KeyboardInterrupt:  # the group prints "interrupted: <this>"
        from emofuse.cache.parts import list_parts
        from emofuse.cache.schema import parts_dir

        parts = parts_dir(Path(os.path.realpath(cfg.out)))  # an --out link names its target
        if not (parts.is_dir() and list_parts(parts)):
            raise KeyboardInterrupt(
                "before any utterance was committed: rerun the same command to start again"
            ) from None
        raise KeyboardInterrupt(
            f"rerun the same command to resume (the utterances already committed to {parts} "
            "are kept and not extracted again)"
        ) from None
    if summary.is_main:
        _print_summary(summary)


def _print_summary(s: ExtractSummary) -> None:
    rate = s.audio_seconds / s.wall_seconds if s.wall_seconds else 0.0
    click.echo(
        f"stored {s.stored} utterances ({s.audio_seconds / 3600:.2f} h of audio,"
        f" {rate:.1f} audio-s/s) in {s.out}"
        + (f"; {s.resumed} were already there" if s.resumed else "")
    )
    if s.digest:
        click.echo(f"digest: {s.digest}")
    if s.padded:
        click.echo(f"padded to the model minimum: {len(s.padded)} ({', '.join(s.padded[:5])})")
    if s.truncated:
        click.echo(f"transcripts truncated at the text model's maximum: {s.truncated}")
    if s.unaligned:
        click.echo(f"unaligned (frame-level features only): {s.unaligned}")
    if s.skipped:
        click.echo(f"skipped {len(s.skipped)} utterances for bad audio:")
        for item in s.skipped:
            click.echo(f"  {item['id']}: {item['reason']}")


COMMANDS: list = [extract_cmd]
