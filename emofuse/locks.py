"""One writer per output: a lock file beside the output, holding the writer's pid and host.

``with output_lock(out, "extract"):`` creates ``<out>.lock`` atomically (``O_CREAT | O_EXCL``) with
``{"pid", "host", "command", "started"}``. A second process that finds the lock held by a live process
is refused in one line naming the holder; a lock whose holder is gone (same host, pid not running)
is stale and is taken over. A lock from another host is never judged stale (its pid means nothing
here): the message says how to remove it by hand. The lock is removed on exit, also on an error.
The lock sits beside the output's resolved path (symlinks and ``..`` followed): every spelling of
one output takes one lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from emofuse.errors import NAME_TOO_LONG, EmofuseError, os_reason


def lock_path(out: str | os.PathLike) -> Path:
    """``<out>.lock`` beside the output's real path: a symlink to it, ``a/../out`` or a trailing
    ``/`` name the same lock as ``out`` itself, so no spelling of a path lets two writers in."""
    real = Path(os.path.realpath(out))
    if not real.name:  # the root: no folder holds it, so no lock can sit beside it
        raise EmofuseError(f"{out} is the file-system root: give a name inside a folder instead")
    return real.with_name(real.name + ".lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


UNREADABLE = {"unreadable": True}  # the holder of a lock this process may not read


def _holder(path: Path) -> dict | None:
    """The lock's contents, or None when it is torn (a writer killed mid-write). One this
    process may not read is held (``UNREADABLE``): another user's live writer, perhaps."""
    try:
        return json.loads(path.read_text())
    except PermissionError:
        return dict(UNREADABLE)
    except (OSError, ValueError):
        return None


def _started_after(pid: int, started: str) -> bool:
    """Did process ``pid`` start after the lock's ``started`` time (its pid reused by another
    program since, e.g. after a reboot)? False where that cannot be told (not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )  # fmt: skip
        began = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
        locked = time.mktime(time.strptime(started, "%Y-%m-%dT%H:%M:%S"))
    except (OSError, ValueError, IndexError, StopIteration, TypeError):
        return False
    return began > locked + 2  # the lock's time has a second's resolution


def _stale(holder: dict | None) -> bool:
    if holder is None:
        return True
    if holder == UNREADABLE:  # never removed unread: its writer may be alive
        return False
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return True
    return _started_after(pid, str(holder.get("started", "")))


def _try_create(path: Path, record: dict) -> bool:
    """Take the lock: the record is written whole under a temporary name, then hard-linked to
    the lock's name (atomic, and refused when it exists), so no process ever sees a lock file
    without its holder in it (an empty one read as stale let a second writer take a live lock).
    Where the file system has no hard links, an exclusive create and write instead."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # a full disk: no empty temporary left behind
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network and FUSE file systems)
        return _create_exclusive(path, record)
    finally:
        tmp.unlink(missing_ok=True)


def _create_exclusive(path: Path, record: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    return True


def busy(holder: dict, another: str = "") -> str:
    """``being written by [another ]emofuse COMMAND (pid …); wait for it to finish``."""
    if holder == UNREADABLE:
        return (
            "locked by a lock file this process may not read (another user's emofuse writing "
            "it?); wait for it to finish"
        )
    return (
        f"being written by {another}emofuse {holder.get('command', '?')} (pid {holder.get('pid')} "
        f"on {holder.get('host')}, since {holder.get('started', '?')}); wait for it to finish"
    )


def live_holder(out: str | os.PathLike) -> dict | None:
    """The lock record of a process alive now that holds ``out``'s lock, or None."""
    path = lock_path(out)
    if not path.exists():
        return None
    holder = _holder(path)
    return None if _stale(holder) else holder


@contextlib.contextmanager
def output_lock(out: Path, command: str, fix: str = "choose a writable --out") -> Iterator[Path]:
    """Hold ``<out>.lock`` for the duration of the block (see the module docstring); ``fix``:
    what to do where the lock cannot be written (a command that writes in place has no --out)."""
    path = lock_path(out)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if path.is_dir() or (path.exists() and not path.is_file() and not path.is_symlink()):
        raise EmofuseError(
            f"{path} is in the way of the lock file emofuse keeps beside {out} (it is a folder "
            "or a special file); move it away and rerun"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is removed and the create retried
            if _try_create(path, record):
                break
            holder = _holder(path)
            if holder == UNREADABLE:
                raise EmofuseError(
                    f"{out} is locked by {path}, which this process may not read (Permission "
                    "denied): another user's emofuse may be writing it; ask them, or if no emofuse "
                    f"is running on it, delete {path}"
                )
            if not _stale(holder):
                raise EmofuseError(f"{out} is {busy(holder, 'another ')}, or if that process is "
                                   f"gone, delete {path}")  # fmt: skip
            print(f"note: removing stale lock {path} (its process is gone)", file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            raise EmofuseError(f"could not take the lock {path}; delete it and rerun")
    except (FileExistsError, NotADirectoryError) as err:
        raise EmofuseError(
            f"cannot create {path}: a parent of {out} is a regular file; choose another --out"
        ) from err
    except PermissionError as err:
        raise EmofuseError(f"cannot write in {path.parent} (permission denied); {fix}") from err
    except OSError as err:  # a read-only file system, a full disk ...
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # writable, but full: say so first
            fix = f"free disk space there and rerun the same command (or {fix})"
        elif err.errno == errno.ENAMETOOLONG:  # NAME.lock's name: the folder is fine
            fix = NAME_TOO_LONG
        raise EmofuseError(f"cannot write in {path.parent} ({os_reason(err)}); {fix}") from err
    try:
        yield path
    finally:
        if _holder(path) == record:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
