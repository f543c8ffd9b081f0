"""CLI command ``emofuse compare`` (thin: parse options, call emofuse.train.compare, print)."""

from __future__ import annotations

import json

import click

from emofuse.cli.options import IN, OUT
from emofuse.errors import EmofuseError


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=IN)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option(
    "--out",
    type=OUT,
    default=None,
    help="Also write compare.json, compare.md and compare.png (bar chart with CIs) here.",
)
@click.option(
    "--resamples",
    type=click.IntRange(min=100, max=100_000),  # beyond: minutes of silence, no better CI
    default=2000,
    show_default=True,
    help="Bootstrap resamples for the 95 % CIs (100 to 100000; a CI's Monte Carlo error at "
    "2000 is already far below its width).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def compare_command(runs, as_json, out, resamples, seed) -> None:
    """Runs on the same fold plan side by side; each against the first: pooled UA difference with
    a 95 % bootstrap CI (utterances resampled within folds) and a Wilcoxon test over folds."""
    from emofuse.train.compare import compare_runs, format_compare, write_compare

    if out is not None:  # before the work: compare.* never land in (or under) a run folder
        from emofuse.train.outdir import check_outside_runs, is_run_folder

        if is_run_folder(out):
            raise EmofuseError(f"--out {out} is a run folder; give a new folder for the comparison")
        check_outside_runs(out, "a folder for the comparison")
    result = compare_runs(runs, resamples=resamples, seed=seed)
    if out is not None:
        write_compare(result, out)
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(format_compare(result))
        if out is not None:
            click.echo(f"written: {out / 'compare.md'}")


COMMANDS: list = [compare_command]
