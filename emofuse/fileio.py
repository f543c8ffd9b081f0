"""Atomic, durable file writes: the one way emofuse replaces a file (run folders, cache journals).

A file is written under a temporary name beside it, flushed and fsynced, renamed over the final
name, and the folder is fsynced: a kill, a power loss or a full disk never leaves a half-written
file under the final name, and a file that is there stays there.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so a rename inside it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", tmp_tag: str = "", **kw: Any) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file renamed into place when the block ends.

    ``tmp_tag`` makes the temporary name unique where several processes may write the same file.
    A failed write removes the temporary file and raises an OSError that names ``path`` (a write
    error on an open file carries no file name of its own)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{tmp_tag}.tmp" if tmp_tag else path.name + ".tmp")
    try:
        with tmp.open(mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err
    except RuntimeError as err:  # torch.save wraps a failed write (a full disk) in its own error
        cause = err.__cause__ or err.__context__
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(cause, OSError):
            raise OSError(cause.errno, cause.strerror or str(cause), str(path)) from err
        raise
    except BaseException:  # Ctrl-C or SIGTERM mid-write, a plot that failed: no temporary stays
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_json(path: Path, obj: Any, tmp_tag: str = "") -> None:
    """``obj`` as indented JSON, atomically and durably."""
    with atomic_open(path, tmp_tag=tmp_tag) as fh:
        fh.write(json.dumps(obj, indent=1) + "\n")


def write_text(path: Path, text: str) -> None:
    """``text`` written atomically and durably: a full disk or a kill never leaves it torn."""
    with atomic_open(path) as fh:
        fh.write(text)


def save_figure(fig: Any, path: Path) -> None:
    """A matplotlib figure as PNG, atomically (never a torn image beside the old report); closed."""
    import matplotlib.pyplot as plt

    try:
        with atomic_open(Path(path), "wb") as fh:
            fig.savefig(fh, dpi=100, format="png")
    finally:
        plt.close(fig)


def remove_temporaries(folder: Path, pattern: str = "**/*.tmp") -> None:
    """Delete what a failed write left under ``folder`` (``pattern``: its temporaries), so a
    half-written file never stays behind; one that cannot be deleted now is left (the write's
    own error is what the user is told)."""
    for tmp in Path(folder).glob(pattern):
        with contextlib.suppress(OSError):
            tmp.unlink()
