"""A user head's own code that raises is one line naming the head, the fold and what emofuse was
doing (training, predicting, embedding for a t-SNE), with the file and line where it raised, not a
traceback from inside emofuse. Built-in heads are emofuse's code: their errors are left as they are.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

from emofuse.errors import EmofuseError
from emofuse.train.paths import head_file


def reason(err: BaseException, head_spec: str) -> str:
    """``Type: first line of the message[, at file.py line N]`` (the user file's last frame)."""
    text = (str(err).strip().splitlines() or [""])[0][:160]
    where = ""
    file = head_file(head_spec)  # a user's file.py:Class head: its last frame in that file
    if file is not None:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.endswith(file)]
        if frames:
            where = f", at {file} line {frames[-1].lineno}"
    return f"{type(err).__name__}" + (f": {text}" if text else "") + where


def head_failed(
    head_spec: str,
    fold: int,
    err: BaseException,
    doing: str = "training",
    then: str = "rerun the same command (finished folds are kept)",
) -> EmofuseError:
    """A user head that raised (or called sys.exit) while emofuse was ``doing`` fold ``fold``."""
    return EmofuseError(
        f"head {head_spec} failed while {doing} fold {fold} ({reason(err, head_spec)}); fix "
        f"the head, then {then}"
    )


@contextlib.contextmanager
def user_head_code(head_spec: str, fold: int, doing: str, then: str) -> Iterator[None]:
    """Calls into a head's forward/embed: a user head's exception becomes ``head_failed``."""
    try:
        yield
    except EmofuseError:
        raise
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a user head may raise anything
        if head_file(head_spec) is None:
            raise
        raise head_failed(head_spec, fold, err, doing, then) from None
