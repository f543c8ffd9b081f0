"""The cache a run reads, watched for a change in place while the run trains.

``emofuse extract`` replaces a cache by renaming a new file over it, which a running train never
sees (it keeps reading the file it opened). Copying another cache *onto* the path (``cp other.h5
cache.h5``) rewrites the same file under the run instead: its memory-mapped pages change or
vanish. A fold trained from such a mix must never be saved as finished, and a fold worker that
dies of it (SIGBUS on a page the copy cut off) must be named for what happened, not as "out of
memory?". So the run records the file's identity when it opens the cache (device, inode, size,
modification time; for a Zarr folder those of its top-level entries), and compares it before each
fold is saved and whenever a fold worker dies.

Known limit: with ``--jobs 1`` the folds train in this process, so a copy that shrinks an HDF5
cache under a fold still in training ends the process with SIGBUS before any check can run (the
finished folds are kept on disk; the rerun trains the rest). Between folds it is caught.
"""

from __future__ import annotations

import os
from pathlib import Path

from emofuse.errors import EmofuseError

Identity = tuple


def identity(path: str | os.PathLike) -> Identity | None:
    """What changes when the cache at ``path`` is rewritten in place (None: it is gone)."""
    p = Path(path)
    try:
        st = p.stat()
        if not p.is_dir():
            return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        entries = []
        for child in sorted(p.iterdir()):
            cst = child.stat()
            entries.append((child.name, cst.st_ino, cst.st_size, cst.st_mtime_ns))
        return (st.st_dev, st.st_ino, tuple(entries))
    except OSError:
        return None


def check_unchanged(path: str | os.PathLike | None, recorded: Identity | None) -> None:
    """One line when the cache at ``path`` is no longer the file the run opened."""
    if path is None or recorded is None:
        return
    now = identity(path)
    if now == recorded:
        return
    what = "it is gone" if now is None else "its size or modification time is not what it was"
    raise EmofuseError(
        f"cache {path} changed while emofuse train was reading it ({what}: written over in "
        "place?); the finished folds are kept: leave the cache alone while a run reads it, then "
        "rerun the same command (it trains the missing folds; another cache there is refused)"
    )
