"""Folds trained side by side in worker processes on a CPU (``emofuse train --jobs``).

A fold's result depends on (seed, fold) alone (emofuse.train.loop), so where it trains changes
nothing but the wall time. The small heads are made of many small matrix products (64-wide
layers, GRU steps): one thread keeps a core busy with them, a second thread in the same process
adds little, so on a CPU two folds at once on two cores take 0.84x the wall time of one fold at a
time with two threads (TDFNet small, RAVDESS; bench/RESULTS.md).

Workers are spawned, not forked: a forked child of a process whose OpenMP pool has run can hang
in its first parallel region. Each worker opens the cache and loads the streams once (an HDF5
cache is memory-mapped, so the pages are shared), trains the folds it is handed, and dies with
its parent (``PR_SET_PDEATHSIG``), so a killed ``emofuse train`` leaves no worker writing into a
run folder that a rerun has taken over. The pool itself is emofuse.train.workers (pipes, no
semaphores; Ctrl-C reaches the parent only).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import torch

from emofuse import faults
from emofuse.errors import EmofuseError
from emofuse.progress import progress_bar
from emofuse.train.workers import WorkerDied, run_in_workers

# below this many utterances a fold trains in seconds and starting a worker (importing torch,
# loading the cache: a few seconds) is not worth it
MIN_ROWS = 400
MEMORY_SHARE = 0.5  # of the memory available now, what the workers' copies may take


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask: a container's or taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def choose_jobs(
    requested: int | None,
    n_folds: int,
    n_rows: int,
    device: torch.device,
    world: int = 1,
    resident_bytes: int = 0,
) -> int:
    """How many folds train at once: ``requested`` (capped by the folds to train), or automatic:
    one per core on a CPU when there are two or more folds of at least ``MIN_ROWS`` utterances,
    as many as the memory allows; 1 on a GPU and under torchrun (one process per rank already)."""
    if n_folds <= 1:
        return 1
    if requested is not None:
        if requested > 1 and (device.type != "cpu" or world > 1):
            raise EmofuseError(
                f"--jobs {requested}: parallel folds run on a CPU in one process; on a GPU or "
                "under torchrun use --jobs 1 (torchrun's ranks already share the folds)"
            )
        return max(1, min(requested, n_folds))
    if device.type != "cpu" or world > 1 or n_rows < MIN_ROWS:
        return 1
    jobs = min(cpu_cores(), n_folds)
    avail = available_memory()
    if avail is not None and resident_bytes > 0:
        jobs = min(jobs, max(1, int(avail * MEMORY_SHARE // resident_bytes)))
    return max(1, jobs)


def _setup_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_tasks(
    init: Callable[[Any], None],
    init_arg: Any,
    task: Callable[[int], Any],
    items: list[int],
    jobs: int,
    progress: bool = True,
    desc: str = "tasks",
    explain_death: Callable[[], None] | None = None,
) -> None:
    """``task(item)`` for every item in ``jobs`` spawned workers, each set up once by
    ``init(init_arg)`` (module-level functions: they are pickled by name). The first error of a
    task or of ``init`` is raised here once the workers have stopped; the rest are not started.
    ``explain_death``: called when a worker died without answering, to raise a line that names
    the cause where the caller can tell it (else: "died (out of memory?)")."""
    faults.reach("workers-start")
    threads = max(1, torch.get_num_threads() // jobs)
    bar = progress_bar(total=len(items), desc=f"{desc} ({jobs} at once)", enabled=progress)
    try:
        run_in_workers(
            jobs, functools.partial(_setup_worker, threads), init, init_arg, task, items,
            on_done=lambda item, result: (bar.update(1), faults.reach("fold-reported")),
        )  # fmt: skip
    except WorkerDied as died:
        if explain_death is not None:  # raises its own line where it knows why (cache changed)
            explain_death()
        raise EmofuseError(
            f"the worker process training fold {died.item} {died.how}; rerun the same command "
            "(with --jobs 1 if memory ran out): the finished folds are kept"
        ) from None
    finally:
        bar.close()
