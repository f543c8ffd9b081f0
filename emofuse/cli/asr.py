"""`emofuse transcribe` and `emofuse align`: transcripts and forced alignments for own corpora.

Thin: options are parsed here, the work is in emofuse.asr.transcribe and emofuse.align.run.
"""

from __future__ import annotations

import click

from emofuse.cli.options import IN, OUT

_corpus = click.option(
    "--corpus",
    type=click.Choice(["manifest"]),
    default="manifest",
    show_default=True,
    help="Only manifests are rewritten (IEMOCAP ships transcripts and alignments).",
)
_manifest = click.option(
    "--manifest",
    required=True,
    type=IN,
    help="Input CSV/JSONL manifest (id,audio[,text,…]).",
)
_out = click.option("--out", required=True, type=OUT, help="Output manifest (.csv/.jsonl).")


@click.command("transcribe")
@_corpus
@_manifest
@_out
@click.option(
    "--asr-model",
    required=True,
    help="faster-whisper model: a local CTranslate2 folder, or a name (tiny, base, …; downloaded).",
)
@click.option("--all", "all_rows", is_flag=True, help="Re-transcribe rows that have text too.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option(
    "--compute-type",
    default="default",
    show_default=True,
    help="CTranslate2 compute type: default, int8, int8_float16, float16, float32 …",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Clips per model call.",
)
@click.option(
    "--beam-size", type=click.IntRange(min=1), default=5, show_default=True, help="Beam width."
)
@click.option("--language", default=None, help="e.g. en (default: detected per clip).")
@click.option(
    "--threads", type=click.IntRange(min=0), default=0, help="CPU threads (0: one per core)."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def transcribe_cmd(corpus, manifest, out, asr_model, all_rows, device, compute_type, batch_size,
                   beam_size, language, threads, quiet) -> None:  # fmt: skip
    """Whisper transcripts: fill empty `text`, keep gold text, write `asr_text`; WER vs gold."""
    from emofuse.asr.transcribe import TranscribeConfig, run_transcribe
    from emofuse.asr.wer import NORMALISATION

    cfg = TranscribeConfig(
        manifest=manifest,
        out=out,
        asr_model=asr_model,
        all_rows=all_rows,
        device=device,
        compute_type=compute_type,
        batch_size=batch_size,
        beam_size=beam_size,
        language=language,
        threads=threads,
        progress=not quiet,
    )
    s = run_transcribe(cfg, echo=click.echo)
    rate = s.audio_seconds / s.asr_seconds if s.asr_seconds > 0 else 0.0
    click.echo(
        f"wrote {s.out}: {s.rows} rows, {s.transcribed} transcribed now"
        + (f", {s.resumed} resumed" if s.resumed else "")
        + (f", {len(s.failed)} not transcribed (listed below)" if s.failed else "")
        + f", {s.filled} empty texts filled; {s.audio_seconds:.1f} audio-s in "
        f"{s.asr_seconds:.1f} s ({rate:.2f} audio-s/s)"
    )
    if s.wer is not None:
        click.echo(
            f"WER {100 * s.wer:.2f} % over {s.gold} rows with gold text ({s.wer_words} words; "
            f"jiwer; normalisation: {NORMALISATION})"
        )
    else:
        click.echo("WER: no row has gold text")
    for f in s.failed:
        click.echo(f"not transcribed: {f['id']}: {f['reason']} (kept, reason in asr_error)")
    if s.failed:
        click.echo(
            "to transcribe them: fix their audio (or its path in the manifest) and rerun the same "
            "command: rows whose audio changed are redone, the others are kept"
        )


@click.command("align")
@_corpus
@_manifest
@_out
@click.option(
    "--align-dir",
    type=IN,
    default=None,
    help="Where the TextGrids go (default: beside OUT, in OUT-stem_textgrids/).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def align_cmd(corpus, manifest, out, align_dir, quiet) -> None:
    """Forced alignment (PocketSphinx): TextGrids with words/syllables/phones + `alignment` column."""
    from emofuse.align.run import AlignConfig, run_align

    s = run_align(AlignConfig(manifest, out, align_dir, progress=not quiet), echo=click.echo)
    share = s.aligned / s.rows if s.rows else 0.0
    click.echo(
        f"wrote {s.out}: {s.aligned} of {s.rows} rows aligned ({100 * share:.1f} %), "
        f"{len(s.failed)} not; {s.audio_seconds:.1f} audio-s in {s.wall_seconds:.1f} s"
    )
    if s.oov:
        words = ", ".join(f"{w} ({n})" for w, n in s.oov.most_common(10))
        click.echo(
            f"{sum(s.oov.values())} words not in CMUdict aligned as unsegmented spans: {words}"
        )
    for f in s.failed:
        click.echo(
            f"unaligned: {f['id']}: {f['reason']} (kept, flagged; reason in alignment_error)"
        )


COMMANDS = [transcribe_cmd, align_cmd]
