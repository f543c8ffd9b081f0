"""``emofuse demo`` (what ``make demo`` runs): the whole pipeline on the synthetic demo corpus."""

from __future__ import annotations

import click

from emofuse.cli.options import OUT, SEED


@click.command("demo")
@click.option("--out", default="demo", show_default=True, type=OUT)
@click.option("--speech-model", default=None, help="hub id or folder (default: a tiny local one)")
@click.option("--text-model", default=None, help="hub id or folder (default: a tiny local one)")
@click.option("--speaker-model", default=None, help="hub id or folder (default: a tiny local one)")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="no progress bars")
def demo_cmd(out, speech_model, text_model, speaker_model, seed, device, quiet) -> None:
    """Synthetic corpus → tiny encoders → cache → co-attention + small TDFNet with LOSO."""
    from emofuse.demo import format_table, run_demo
    from emofuse.errors import check_out_path

    check_out_path(out)

    result = run_demo(
        out,
        speech_model=speech_model,
        text_model=text_model,
        speaker_model=speaker_model,
        seed=seed,
        device=device,
        echo=click.echo,
        progress=not quiet,
    )
    click.echo("")
    for head, summary in result.summaries.items():
        click.echo(format_table(f"{head} — leave-one-session-out (fractions)", summary))
        click.echo(f"report: {result.runs[head] / 'report.md'}\n")
    click.echo(f"demo finished in {result.seconds / 60:.1f} min; everything is in {result.out}/")


COMMANDS = [demo_cmd]
