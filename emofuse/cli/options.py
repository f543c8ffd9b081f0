"""Option types shared by several commands (one definition, so their limits cannot drift apart)."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import click

from emofuse.errors import LOOPS

# numpy's SeedSequence and torch take larger seeds, but scikit-learn and numpy's legacy seeding
# stop at 2**32 - 1; a negative seed is refused by numpy (a ValueError traceback before this)
SEED = click.IntRange(min=0, max=2**32 - 1)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf``: Python's float() accepts them,
    nan passes every range comparison, and either one reached a traceback (an int() of the value)
    or was written into config.json. Refused as a usage error naming the option."""

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = FiniteFloatRange()  # any finite float (e.g. a pair of --duration bounds)


class OutPath(click.Path):
    """``click.Path`` for an ``--out`` that refuses an empty value: ``--out "$RUN"`` with ``RUN``
    unset gave ``Path("")``, i.e. the current folder, and the command wrote its files there."""

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if isinstance(value, str) and not value.strip():
            self.fail(
                f"{value!r} is empty (an unset shell variable?); give the folder or file to "
                f"write, e.g. --out {_example(ctx)}",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


class InPath(click.Path):
    """``click.Path`` for a file or folder that is read, refusing an empty value: ``"$RUN"`` with
    ``RUN`` unset gave ``Path("")``, and the command reported the current folder ``.``, which the
    user never named."""

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if isinstance(value, str) and not value.strip():
            self.fail(f"{value!r} is empty (an unset shell variable?); give a path", param, ctx)
        if isinstance(value, str) and _loops(value):  # else "does not exist" / "not a run folder"
            self.fail(f"{value} {LOOPS}", param, ctx)
        return super().convert(value, param, ctx)


def _loops(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as err:
        return err.errno == errno.ELOOP
    return False


IN = InPath(path_type=Path)  # a path a command reads
IN_STR = InPath(path_type=str)


class NonEmpty(click.ParamType):
    """A name (``--head``) that refuses an empty value, as the paths do."""

    name = "text"

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201 - click's signature
        if isinstance(value, str) and not value.strip():
            self.fail(f"{value!r} is empty (an unset shell variable?); give a value", param, ctx)
        return value


NON_EMPTY = NonEmpty()


# an example --out per command (the cache of extract is a file name with its suffix)
OUT_EXAMPLES = {"extract": "cache/mine.h5", "transcribe": "mine.csv", "align": "mine.csv",
                "folds": "plan.json", "synth": "corpus/mine", "compare": "compare/mine"}  # fmt: skip


def _example(ctx: click.Context | None) -> str:
    return OUT_EXAMPLES.get(getattr(getattr(ctx, "command", None), "name", ""), "runs/mine")


OUT = OutPath(path_type=Path)  # every command's --out


def note(text: str) -> None:
    """An informational line on stderr; a stderr that cannot take it (a full log disk, a closed
    pipe) costs the note only, never the run (it was an uncaught OSError, exit 1)."""
    import contextlib

    with contextlib.suppress(OSError, ValueError):
        click.echo(text, err=True)
