"""The ``emofuse`` command: a thin click layer over the library.

Each area owns one module here (corpus, cache, extract, train, heads, predict, demo) that defines
its click commands and calls library functions; this file only assembles them and turns
``EmofuseError`` into a one-line message with exit status 2. A command's module (and with it torch,
transformers, scikit-learn …) is imported only when that command runs or help lists it, so
``emofuse demo`` does not pay for the imports of ``emofuse extract``.
"""

from __future__ import annotations

import importlib
import sys

import click

from emofuse import __version__
from emofuse.errors import EmofuseError

# command name -> the emofuse.cli module whose COMMANDS defines it, in the order help lists them
COMMAND_MODULES: dict[str, str] = {
    "corpus": "corpus",
    "transcribe": "asr",
    "align": "asr",
    "info": "cache",
    "verify": "cache",
    "extract": "extract",
    "train": "train",
    "fuse": "train",
    "report": "train",
    "compare": "compare",
    "heads": "heads",
    "predict": "predict",
    "demo": "demo",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        area = COMMAND_MODULES.get(cmd_name)
        if area is None:
            return None
        module = importlib.import_module(f"emofuse.cli.{area}")
        return {command.name: command for command in module.COMMANDS}[cmd_name]

    def invoke(self, ctx: click.Context):  # noqa: D401 - click API
        try:
            return super().invoke(ctx)
        except EmofuseError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except click.UsageError as err:  # a bad option or value: one line, not click's three
            where = err.ctx.command_path if err.ctx is not None else "emofuse"
            message = " ".join(err.format_message().split())
            click.echo(f"error: {message} (see `{where} --help`)", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="emofuse")
def cli() -> None:
    """emofuse: multimodal speech emotion recognition (extract once, train heads in minutes)."""


def main() -> None:
    cli(prog_name="emofuse")
