"""CLI group ``emofuse reproduce`` (thin: parse options, call emofuse.reproduce, print)."""

from __future__ import annotations

from pathlib import Path

import click

from emofuse.cli.options import IN, OUT
from emofuse.errors import EmofuseError
from emofuse.train.folds import SPLITS

PRESETS = ("paper", "small")


def check_cache(path: Path) -> None:
    if not path.exists():
        from emofuse.cache.store import missing_cache_error

        raise missing_cache_error(path, "--cache")


def parse_table(value: str) -> int:
    from emofuse.reproduce.tdfnet import TABLES

    try:
        table = int(value)
    except ValueError:
        table = None
    if table not in TABLES:
        raise EmofuseError(
            f"--table {value!r}: TDFNet's reproducible tables are {', '.join(map(str, TABLES))}"
        )
    return table


def parse_seeds(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 or s > 2**32 - 1 for s in seeds) or len(set(seeds)) != len(seeds):
        raise EmofuseError(
            f"--seeds {value!r}: give distinct seeds from 0 to {2**32 - 1} like 0,1,2"
        )
    return seeds


@click.group("reproduce")
def reproduce_group() -> None:
    """Reproduce a paper's table: one run folder per row and seed, then table.md/table.png."""


def run_options(command):
    """The options every reproduce command shares: preset, seeds, device, jobs, the loop."""
    for option in reversed([
        click.option("--preset", type=click.Choice(PRESETS), default="small", show_default=True),
        click.option("--seeds", default="0", show_default=True, help="comma-separated, e.g. 0,1,2"),
        click.option("--device", default="auto", show_default=True),
        click.option("--jobs", type=click.IntRange(min=1), default=None, help="folds at once (CPU)"),
        click.option("--epochs", type=click.IntRange(min=1), default=None, hidden=True),
        click.option("--quiet", is_flag=True, help="no progress bars"),
    ]):  # fmt: skip
        command = option(command)
    return command


@reproduce_group.command("tdfnet")
@click.option("--table", "table", required=True, help="1 (LOSO/LOPO/RA) or 5 (ablations)")
@click.option("--cache", "cache_path", required=True, type=IN)
@click.option("--out", required=True, type=OUT, help="folder of the runs")
@run_options
def tdfnet_command(table, cache_path, out, preset, seeds, device, jobs, epochs, quiet) -> None:
    """TDFNet (Zhao et al. 2023) Table I or Table V on a cache; finished runs are reused."""
    from emofuse.reproduce.runner import reproduce

    table = parse_table(table)
    seed_list = parse_seeds(seeds)
    check_cache(cache_path)
    result = reproduce(
        cache_path, table, out, preset=preset, seeds=seed_list,
        loop_flags={"epochs": epochs} if epochs else None, device=device, progress=not quiet,
        jobs=jobs, echo=click.echo,
    )  # fmt: skip
    click.echo(f"table: {result['table']}")


@reproduce_group.command("multilevel")
@click.option("--cache", "cache_path", required=True, type=IN)
@click.option("--out", required=True, type=OUT, help="folder of the runs")
@click.option("--split", type=click.Choice(SPLITS), default="loso", show_default=True)
@run_options
def multilevel_command(cache_path, out, split, preset, seeds, device, jobs, epochs, quiet) -> None:
    """Multi-level fusion (Zhao, Wang & Wang 2022): frame / segment / text models, co-attention,
    late and early + late fusion, each against frame-only with a CI; finished runs are reused."""
    from emofuse.reproduce.runner import reproduce_multilevel

    seed_list = parse_seeds(seeds)
    check_cache(cache_path)
    result = reproduce_multilevel(
        cache_path, out, split=split, preset=preset, seeds=seed_list,
        loop_flags={"epochs": epochs} if epochs else None, device=device, progress=not quiet,
        jobs=jobs, echo=click.echo,
    )  # fmt: skip
    click.echo(f"table: {result['table']}")


COMMANDS: list = [reproduce_group]
