"""CLI commands for the cache area (thin: parse options, call the library, print)."""

from __future__ import annotations

import json
import sys

import click

from emofuse.cache import open_cache, verify_cache
from emofuse.cache.backends import DamagedCacheError
from emofuse.cache.summary import format_summary, summarize
from emofuse.cli.options import IN_STR


@click.command("info")
@click.argument("cache", type=IN_STR)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(cache: str, as_json: bool) -> None:
    """Describe CACHE: utterances, labels, speakers, streams, models, layers, size on disk.

    An unfinished cache (extraction interrupted) is described too, marked INCOMPLETE.
    """
    with open_cache(cache, allow_incomplete=True) as c:
        summary = summarize(c)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))


@click.command("verify")
@click.argument("cache", type=IN_STR)
@click.option(
    "--progress/--no-progress", default=True, help="Progress bar (drawn on a terminal only)."
)
def verify(cache: str, progress: bool) -> None:
    """Recompute CACHE's stored checksums; exit 1 naming damaged streams and utterances.

    Prints `digest: <sha256>`, a content digest equal for the same content in HDF5 and Zarr
    (for an intact store only).
    """
    try:
        result = verify_cache(cache, progress=progress)  # emofuse.progress: bars on a terminal only
    except DamagedCacheError as err:  # found damage too: the store cannot even be read
        click.echo(f"verify: FAILED, {err}")
        sys.exit(1)
    for problem in result.problems:
        click.echo(f"damaged: {problem}")
    if not result.ok:  # no digest line: a digest of damaged bytes is no store's content digest
        click.echo(f"verify: FAILED, {len(result.problems)} problem(s) in {cache}")
        sys.exit(1)
    click.echo(f"digest: {result.digest}")
    click.echo(f"verify: ok, {result.checked_bytes} bytes checked")


COMMANDS: list = [info, verify]
