"""The torchrun environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
read once for extract and train, checked: a stale or partial setting (a Slurm job's variables
left in a shell) is one line, never a ``KeyError`` or a rendezvous that waits 48 hours."""

from __future__ import annotations

import os
from dataclasses import dataclass

from emofuse.errors import EmofuseError

TORCHRUN = "to run in one process, or start emofuse with torchrun (which sets them all)"


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
    return DistEnv(rank, world, local)
