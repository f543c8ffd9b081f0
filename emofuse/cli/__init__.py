"""The ``emofuse`` command: a thin click layer over the library.

Each area owns one module here (corpus, cache, extract, train, heads, predict, demo) that defines
its click commands and calls library functions; this file only assembles them and turns
``EmofuseError`` into a one-line message with exit status 2. Standard output that cannot be written
is handled here too, for every command: a closed pipe (``emofuse heads | head -0``) ends the command
quietly with status 141 (128 + SIGPIPE, what a shell reports for a Unix tool ended by the closed
pipe); a full disk or another write error (``> /dev/full``) is one ``error:`` line, status 2. A command's module (and with it torch,
transformers, scikit-learn …) is imported only when that command runs or help lists it, so
``emofuse demo`` does not pay for the imports of ``emofuse extract``.

SIGTERM (``kill PID``, ``timeout``, a batch scheduler's cancel) and SIGHUP (the terminal closed)
end a command the way Ctrl-C does: the same cleanup (locks released, committed work kept) and the
same ``interrupted: …`` line naming how to resume, with exit status 128 + the signal's number. A
second such signal during that cleanup ends the process at once (the signal's default action).
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import signal
import sys
from typing import Any

import click
import click.utils

from emofuse import __version__, faults
from emofuse.errors import (
    LOOPS,
    NAME_TOO_LONG,
    RERUN,
    EmofuseError,
    closed_folder,
    from_stdout,
    make_enterable,
    os_reason,
)

EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE
# click >= 8.2 raises it for a group given no subcommand (8.1 prints the help itself)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())

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
    "reproduce": "reproduce",
    "heads": "heads",
    "predict": "predict",
    "demo": "demo",
}


def _stdout_failed(err: OSError) -> None:
    """Exit as the module docstring says when ``err`` came from writing stdout; else return."""
    if not from_stdout(err):
        return
    try:  # what is still buffered for stdout goes nowhere, so the interpreter's last flush at exit
        # cannot fail again ("Exception ignored ... BrokenPipeError")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
    if err.errno == errno.EPIPE:
        sys.exit(EXIT_BROKEN_PIPE)  # the reader is gone: nothing to say, as Unix tools do
    click.echo(
        f"error: cannot write the command's output to standard output ({os_reason(err)}); free "
        "disk space or redirect the output elsewhere, then rerun",
        err=True,
    )
    sys.exit(2)


def _os_failed(err: OSError) -> None:
    """Exit with one line for an OSError no command turned into its own: stdout that failed
    (:func:`_stdout_failed`), a path a user gave that is too long, or a path this process may not
    access (the outermost folder it may not enter named); else return."""
    _stdout_failed(err)
    if err.errno == errno.ENAMETOOLONG:
        click.echo(f"error: {err.filename or 'a path'}: {NAME_TOO_LONG}", err=True)
        sys.exit(2)
    if err.errno in (errno.EACCES, errno.EPERM) and err.filename:  # a path no check foresaw
        closed = closed_folder(err.filename)
        reason = os_reason(err)
        why = (
            f"the folder {closed} cannot be entered ({reason}); {make_enterable(closed)}"
            if closed is not None
            else f"it cannot be accessed ({reason}); make it (or its folder) accessible (`chmod "
            "u+rw`, or ask its owner)"
        )
        click.echo(f"error: {err.filename}: {why}, {RERUN}", err=True)
        sys.exit(2)


_STOP_SIGNALS = ("SIGTERM", "SIGHUP")
_received: list[int] = []  # the stop signal that ended this command, if any


def _stop_by_signal(signum: int, _frame: Any) -> None:
    """A stop signal becomes a KeyboardInterrupt in the main thread (what Ctrl-C raises)."""
    _received.append(signum)
    for name in _STOP_SIGNALS:  # a second one during the cleanup is not caught
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    raise KeyboardInterrupt


def _catch_stop_signals() -> None:
    for name in _STOP_SIGNALS:
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is signal.SIG_DFL:
            signal.signal(number, _stop_by_signal)


def _interrupted(err: KeyboardInterrupt) -> None:
    by = f" by {signal.Signals(_received[0]).name}" if _received else ""
    click.echo(f"interrupted{by}" + (f": {err}" if str(err) else ""), err=True)
    sys.exit(128 + _received[0] if _received else 130)


class _Group(click.Group):
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:  # --help and --version print while the arguments are parsed
            return super().make_context(*args, **kwargs)
        except OSError as err:
            _os_failed(err)
            raise

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
            faults.validate()  # EMOFUSE_FAULT (tests): a malformed spec is one line, up front
            return super().invoke(ctx)
        except EmofuseError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except _NO_ARGS_IS_HELP:
            raise  # a group without its subcommand (`emofuse corpus`): click shows the group's help
        except click.UsageError as err:  # a bad option or value: one line, not click's three
            where = err.ctx.command_path if err.ctx is not None else "emofuse"
            message = " ".join(err.format_message().split())
            click.echo(f"error: {message} (see `{where} --help`)", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt as err:  # a command may say what to do next (extract: resume)
            _interrupted(err)
        except RuntimeError as err:  # Python 3.11's Path.resolve() on a looping link
            if not str(err).startswith("Symlink loop from "):
                raise
            looped = str(err).removeprefix("Symlink loop from ").strip("'\"")
            click.echo(f"error: {looped} {LOOPS}", err=True)
            sys.exit(2)
        except (ImportError, MemoryError) as err:  # torch's libraries under `ulimit -v`, say
            click.echo(f"error: {_import_or_memory(err)}", err=True)
            sys.exit(2)
        except OSError as err:
            _os_failed(err)
            raise


def _import_or_memory(err: BaseException) -> str:
    """One line for a library that failed to load, or memory that ran out, outside the places
    that name their own file: what failed, and what to do."""
    from emofuse.errors import MEMORY_ADVICE, out_of_memory  # torch-free: torch may be what failed

    reason = " ".join(str(err).split())[:160] or type(err).__name__
    if out_of_memory(err):
        return f"{MEMORY_ADVICE} ({reason})"
    return (
        f"a library emofuse needs cannot be imported ({reason}); reinstall the environment "
        "(`make install` in a fresh clone, or `pip install -e .` in this one)"
    )


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="emofuse")
def cli() -> None:
    """emofuse: multimodal speech emotion recognition (extract once, train heads in minutes)."""


def main() -> None:
    if sys.stdout is None:  # started with standard output closed (`>&-`): results would vanish
        if sys.stderr is not None:
            sys.stderr.write(
                "error: standard output is closed (`>&-`), where emofuse prints its results "
                "and progress: send it to a file (`> out.txt`) or to /dev/null, then rerun\n"
            )
        sys.exit(2)
    # matplotlib falls back to a temporary cache folder where its own is not writable (a
    # read-only HOME) and says so in two lines around a one-line CLI's output; the figure is
    # written all the same
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    _catch_stop_signals()
    cli(prog_name="emofuse")
