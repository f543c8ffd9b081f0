"""The ``emofuse`` command: a thin click layer over the library.

Each area owns one module here (corpus, cache, extract, train, heads, predict, demo) that defines
its click commands and calls library functions; this file only assembles them and turns
``EmofuseError`` into a one-line message with exit status 2.
"""

from __future__ import annotations

import sys

import click

from emofuse import __version__
from emofuse.errors import EmofuseError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):  # noqa: D401 - click API
        try:
            return super().invoke(ctx)
        except EmofuseError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="emofuse")
def cli() -> None:
    """emofuse: multimodal speech emotion recognition (extract once, train heads in minutes)."""


def _register() -> None:
    from emofuse.cli import cache, corpus, demo, extract, heads, predict, train

    for module in (corpus, cache, extract, train, heads, predict, demo):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="emofuse")
