"""``emofuse predict``: a trained run on new recordings (thin: the work is in emofuse.predict)."""

from __future__ import annotations

import json

import click

from emofuse.cli.options import IN, IN_STR, note


@click.command("predict")
@click.option("--run", "run", required=True, type=IN, help="run folder")
@click.argument("audio", nargs=-1, required=True, type=IN_STR)
@click.option("--text", default=None, help="transcript used for every AUDIO file")
@click.option(
    "--transcripts",
    default=None,
    type=IN,
    help="CSV with columns audio,text (one row per AUDIO file)",
)
@click.option(
    "--asr-model",
    default=None,
    help="faster-whisper model (folder or name): transcribes files without --text/--transcripts",
)
@click.option(
    "--speech-model", default=None, help="the speech model's folder, if it moved since training"
)
@click.option("--text-model", default=None, help="the text model's folder, if it moved")
@click.option("--speaker-model", default=None, help="the speaker model's folder, if it moved")
@click.option(
    "--fold",
    default=None,
    type=click.IntRange(min=1),
    help="use fold k's model only (default: average)",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda …")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def predict_cmd(
    run,
    audio,
    text,
    transcripts,
    asr_model,
    speech_model,
    text_model,
    speaker_model,
    fold,
    device,
    as_json,
) -> None:
    """Label and class probabilities for new AUDIO files (any rate, channels, soundfile format)."""
    from emofuse.predict import predict

    result = predict(
        run,
        audio,
        text=text,
        transcripts=transcripts,
        fold=fold,
        device=device,
        asr_model=asr_model,
        models={
            "speech_model": speech_model,
            "text_model": text_model,
            "speaker_model": speaker_model,
        },
    )
    ignored = [n for n in result.notes if result.text_ignored and " is ignored: head " in n]
    for line in ignored:  # about the command line, not the predictions: stderr, even with --json
        note(f"note: {line}")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for line in result.notes:  # stderr: stdout holds the data lines only (`| cut -f2`)
        if line not in ignored:
            note(f"note: {line}")
    folds = ",".join(map(str, result.folds))
    click.echo(f"(fold {folds})" if len(result.folds) == 1 else f"(mean of folds {folds})")
    for p in result.predictions:
        probs = "  ".join(f"{c} {x:.3f}" for c, x in p.probabilities.items())
        click.echo(f"{p.audio}\t{p.label}\t{probs}")


COMMANDS = [predict_cmd]
