"""The torchrun environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
read once for extract and train, checked: a stale or partial setting (a Slurm job's variables
left in a shell) is one line, never a ``KeyError`` or a rendezvous that waits 48 hours; joining
the process group says what it waits for when the other ranks are slow to come, and Ctrl-C or
SIGTERM stop it there (Python's handlers never run while torch waits in C++)."""

from __future__ import annotations

import datetime
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass

from emofuse.errors import EmofuseError

TORCHRUN = "to run in one process, or start emofuse with torchrun (which sets them all)"
NOTE_AFTER_S = 20.0  # a rendezvous slower than this is said to be waiting (torchrun's are ~1 s)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def _int(name: str, low: int, high: int | None = None) -> int:
    raw = os.environ[name]
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value >= high):
        limits = f"from {low} to {high - 1}" if high is not None else f"{low} or more"
        raise EmofuseError(
            f"environment variable {name}={raw!r} is not a whole number {limits} (a stale "
            f"torchrun or Slurm setting?); unset {' and '.join(dict.fromkeys(['WORLD_SIZE', name]))} "
            f"{TORCHRUN}"
        )
    return value


def dist_env() -> DistEnv:
    """This process's place in a torchrun job (one process: rank 0 of 1)."""
    if "WORLD_SIZE" not in os.environ:
        return DistEnv()
    world = _int("WORLD_SIZE", 1)
    if world == 1:
        return DistEnv()
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise EmofuseError(
            f"WORLD_SIZE={world} is set but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            f"not (a stale torchrun or Slurm setting?): unset WORLD_SIZE {TORCHRUN}"
        )
    rank = _int("RANK", 0, world)
    local = _int("LOCAL_RANK", 0) if os.environ.get("LOCAL_RANK") else 0
    _int("MASTER_PORT", 1, 65536)
    return DistEnv(rank, world, local)


def join_group(backend: str, timeout: datetime.timedelta, env: DistEnv) -> None:
    """``torch.distributed.init_process_group`` for this torchrun rank: a note once it has waited
    ``NOTE_AFTER_S`` for the others (what for, and how to get out), Ctrl-C and SIGTERM end the
    process while it waits, and a rendezvous that fails is one line."""
    import torch.distributed as dist

    host = os.environ["MASTER_ADDR"]
    where = f"{host}:{os.environ['MASTER_PORT']}"
    try:  # torch retries an unknown host for ever, printing C++ warnings
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise EmofuseError(
            f"environment variable MASTER_ADDR={host!r} names no host this machine can find "
            f"({why}; a stale torchrun or Slurm setting?); fix it, or unset WORLD_SIZE {TORCHRUN}"
        ) from None
    note = threading.Timer(
        NOTE_AFTER_S,
        lambda: print(
            f"note: rank {env.rank} of {env.world_size} (WORLD_SIZE={env.world_size}) is waiting "
            f"for the other {env.world_size - 1} process(es) at {where}; if none is coming (a "
            f"stale torchrun or Slurm setting), press Ctrl-C and unset WORLD_SIZE {TORCHRUN}",
            file=sys.stderr,
            flush=True,
        ),
    )
    note.daemon = True
    handlers = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGTERM)}
    note.start()
    try:
        dist.init_process_group(backend, timeout=timeout)
    except (RuntimeError, ValueError) as err:  # torch's DistStoreError is a RuntimeError
        why = " ".join(str(err).split())[:200]
        raise EmofuseError(
            f"rank {env.rank} of {env.world_size} could not join the other processes at {where} "
            f"({why}); check MASTER_ADDR and MASTER_PORT, or unset WORLD_SIZE {TORCHRUN}"
        ) from None
    finally:
        note.cancel()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
