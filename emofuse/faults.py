"""Fault injection at named points, so crash tests stop a process where it says, not after a sleep.

``EMOFUSE_FAULT="STAGE:N[:ACTION]"`` (several separated by ``,``): the N-th time this process reaches
``STAGE`` it performs ACTION — ``kill`` (default: SIGKILL itself, as a power loss or OOM kill would),
``enospc`` (raise ``OSError(ENOSPC)``, as a full disk would), ``efbig`` (``OSError(EFBIG)``, a per-file size limit), ``emfile`` (``OSError(EMFILE)``, the
open-files limit), ``erofs`` (raise ``OSError(EROFS)``, as
a read-only file system would), ``stop`` (SIGSTOP itself: alive but frozen at that point, e.g.
holding a lock, until the test kills it) or ``devfull`` (at a stage that passes the ``path`` it is
about to create: make it a symlink to /dev/full, so the library writing it meets a real ENOSPC and
reports it in its own words, as HDF5's multi-line error text). Unset, ``reach()`` is one dict lookup. The stages, in the
order a run reaches them:

- ``lock-taken``: ``emofuse extract`` or ``train`` holds the output's lock, nothing else is done yet;
- ``part-write``: before a part's files are written (``enospc`` here = disk full while writing);
- ``part-unrenamed``: a part's files are written and fsynced under their temporary name;
- ``part-committed``: after a part of the cache journal is durably renamed into place;
- ``consolidate-written``: the temporary consolidated store is written, not yet verified;
- ``consolidate-renamed``: the store has its final name, the parts folder is not yet removed;
- ``consolidate-open``: before the temporary consolidated store is created (``path``: its name);
- ``consolidate-write``: before each array of the consolidated store is written (the temporary
  store exists: ``enospc`` here = disk full during consolidation);
- ``workers-start``: ``emofuse train --jobs`` has loaded the cache and is about to start its fold
  worker processes (each reopens the cache by its path);
- ``workers-started``: its fold workers are spawned (still starting: importing, loading the
  cache), no fold has been handed out yet;
- ``fold-write``: before a finished training fold's files are written;
- ``fold-reported``: with ``--jobs``, the parent has been told a worker finished a fold (the
  other workers are training theirs);
- ``fold-written``: after a training fold's files are written;
- ``transcribe-batch``: after a batch of ASR transcripts is durably appended to the journal.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "EMOFUSE_FAULT"
_reached: Counter[str] = Counter()


STAGES = (
    "lock-taken", "part-write", "part-unrenamed", "part-committed", "consolidate-written",
    "consolidate-renamed", "consolidate-open", "consolidate-write", "workers-start",
    "workers-started", "fold-write", "fold-reported", "fold-written", "transcribe-batch",
)  # fmt: skip
ERRNOS = {
    "enospc": errno.ENOSPC,
    "erofs": errno.EROFS,
    "efbig": errno.EFBIG,
    "emfile": errno.EMFILE,
}
ACTIONS = ("kill", "stop", "enospc", "efbig", "erofs", "emfile", "devfull")


def _plan() -> dict[str, tuple[int, str]]:
    """The planned faults; a malformed spec is one line (a test knob, but never a traceback,
    and never a misspelt stage silently ignored, so that a crash test "passes")."""
    spec = os.environ.get(ENV, "")
    plan = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        stage, _, rest = item.partition(":")
        count, _, action = rest.partition(":")
        action = action or "kill"
        if stage not in STAGES or not count.isdigit() or int(count) < 1 or action not in ACTIONS:
            from emofuse.errors import EmofuseError

            raise EmofuseError(
                f"{ENV}={spec!r}: give STAGE:N[:ACTION] with N >= 1, STAGE one of "
                f"{', '.join(STAGES)} and ACTION one of {', '.join(ACTIONS)}"
            )
        plan[stage] = (int(count), action)
    return plan


def validate() -> None:
    """Check the spec when a command starts, not when a stage is first reached mid-run."""
    if ENV in os.environ:
        _plan()


def reach(stage: str, path: str | os.PathLike | None = None) -> None:
    """Mark that this process reached ``stage``; fire the fault planned for this visit, if any.

    ``path``: the file this stage is about to create (for ``devfull``)."""
    if ENV not in os.environ:
        return
    planned = _plan().get(stage)
    if planned is None:
        return
    _reached[stage] += 1
    count, action = planned
    if _reached[stage] != count:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    elif action == "devfull":
        if path is None:  # a test knob, but still one line, never a traceback
            from emofuse.errors import EmofuseError

            raise EmofuseError(
                f"{ENV}: stage {stage!r} names no file, so it cannot lead to /dev/full (devfull "
                "applies to consolidate-open)"
            )
        os.symlink("/dev/full", path)
    elif action in ERRNOS:
        code = ERRNOS[action]
        raise OSError(code, os.strerror(code) + f" (injected at {stage})")
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} for stage {stage!r}")


def reset() -> None:
    """Forget the visits counted so far (tests that inject faults in-process call this)."""
    _reached.clear()
