"""A small pool of spawned worker processes, each talking to its parent over its own pipe.

Not ``concurrent.futures.ProcessPoolExecutor``, for three failures it had in ``emofuse train --jobs``:

- its queues are made of named semaphores that the parent registers with multiprocessing's
  resource tracker: a parent killed by SIGTERM or SIGKILL never unregisters them, and the tracker
  printed "There appear to be 6 leaked semaphore objects" on the user's terminal. Pipes
  (``multiprocessing.Pipe``) are plain file descriptors: nothing is registered, nothing leaks;
- a worker whose initializer raised printed the traceback and broke the pool, which the parent
  could only report as a dead worker ("out of memory?"). Here the error travels to the parent
  and is raised there (an ``EmofuseError`` is then the usual one line);
- Ctrl-C (SIGINT, sent by the terminal to every process of the group) shortly after the workers
  started raised ``InvalidStateError`` in the executor's management thread (a cancelled future
  marked failed, CPython 3.11) and KeyboardInterrupt tracebacks in the workers. Here the workers
  start with SIGINT blocked (the signal mask survives the spawn's exec, as CPython's own resource
  tracker does it), so only the parent sees Ctrl-C; it stops the workers and re-raises.

A worker dies with its parent (``PR_SET_PDEATHSIG``), and is stopped by SIGTERM's default action
(immediately: a fold cut short restarts from scratch on the next run). Nothing a worker makes is
registered with the resource tracker either (see ``_worker_main``), so stopping it leaks nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any

from emofuse import faults
from emofuse.errors import EmofuseError

STOP_WAIT_S = 30  # a stopped worker that has not exited by then is killed


class RemoteTraceback(Exception):
    """The worker's traceback, attached as the ``__cause__`` of an unexpected error it raised."""

    def __str__(self) -> str:
        return str(self.args[0])


class WorkerDied(Exception):
    """A worker process ended without answering (killed: out of memory, a signal).

    ``item``: the task it held; ``how``: what ended it, in words ("was ended by SIGTERM (sent
    from outside?)", "was killed (SIGKILL: out of memory, …)", "exited with status 3")."""

    def __init__(self, w: _Worker) -> None:
        w.process.join(STOP_WAIT_S)  # its exit status tells a signal from a crash
        code = w.process.exitcode
        if code is None:
            how = "stopped answering"
        elif code == -signal.SIGKILL:
            how = "was killed (SIGKILL: out of memory, or killed from outside?)"
        elif code < 0:
            how = f"was ended by {signal.Signals(-code).name} (sent from outside?)"
        else:
            how = f"exited with status {code}"
        super().__init__(f"worker pid {w.process.pid} {how}")
        self.item, self.how = w.item, how


def _die_with_parent() -> None:
    try:  # Linux: SIGKILL this worker when the process that started it dies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _send_error(conn: Connection, err: BaseException) -> None:
    tb = "".join(traceback.format_exception(err))
    try:
        conn.send(("error", err, tb))
    except Exception:  # noqa: BLE001 - an exception that does not pickle
        conn.send(("error", RuntimeError(f"{type(err).__name__}: {err}"), tb))


def _worker_main(
    conn: Connection,
    parent: int,
    setup: Callable[[], None],
    init: Callable[[Any], None],
    init_arg: Any,
    task: Callable[[Any], Any],
) -> None:
    """A worker: ``setup()``, ``init(init_arg)`` once, then ``task(item)`` for every item the
    parent sends until it sends None; an error is sent back, never printed here."""
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above: nobody to work for
        os._exit(1)
    # a spawned child's default start method is spawn, under which every multiprocessing lock a
    # library makes here (tqdm makes one for its bars) is a named semaphore registered with the
    # parent's resource tracker: a worker stopped or killed never unregisters it, and the tracker
    # warns of "leaked semaphore objects". Under fork a lock's name is unlinked as it is made.
    # (No worker starts processes of its own, so nothing is forked because of this.)
    multiprocessing.set_start_method("fork", force=True)
    setup()
    failed: BaseException | None = None
    try:
        init(init_arg)
    except Exception as err:  # noqa: BLE001 - the parent raises it with the first task
        failed = err
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if item is None:
            return
        if failed is not None:
            _send_error(conn, failed)
            continue
        try:
            result = task(item)
        except Exception as err:  # noqa: BLE001 - raised in the parent
            _send_error(conn, err)
        else:
            conn.send(("done", result))


@dataclass
class _Worker:
    process: Any
    conn: Connection
    item: Any = None  # the item it works on


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread for the block: a process spawned inside inherits the mask
    (it never sees the terminal's Ctrl-C); on leaving, a Ctrl-C that came meanwhile is raised."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _start(n: int, setup: Callable[[], None], init, init_arg, task, workers: list) -> None:
    ctx = multiprocessing.get_context("spawn")
    # the tracker is started by the first spawn, and unblocks SIGINT after starting itself:
    # start it first, so that every worker below is spawned with SIGINT blocked
    resource_tracker.ensure_running()
    with _sigint_blocked():
        for _ in range(n):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(
                target=_worker_main,
                args=(theirs, os.getpid(), setup, init, init_arg, task),
                daemon=True,
            )
            workers.append(_Worker(process, ours))
            process.start()
            theirs.close()  # the worker's end: its death is then EOF on ours


def _stop(workers: list[_Worker]) -> None:
    """Stop every worker now (SIGTERM, SIGKILL for one still there after STOP_WAIT_S)."""
    for w in workers:
        if w.process.pid is not None and w.process.exitcode is None:
            w.process.terminate()
    for w in workers:
        if w.process.pid is not None:
            w.process.join(STOP_WAIT_S)
            if w.process.exitcode is None:
                w.process.kill()
                w.process.join()
        w.conn.close()


def _hand(w: _Worker, item: Any) -> None:
    w.item = item
    try:
        w.conn.send(item)
    except OSError:  # BrokenPipeError: the worker is gone
        raise WorkerDied(w) from None


def run_in_workers(
    n: int,
    setup: Callable[[], None],
    init: Callable[[Any], None],
    init_arg: Any,
    task: Callable[[Any], Any],
    items: list[Any],
    on_done: Callable[[Any, Any], None] = lambda item, result: None,
) -> None:
    """``task(item)`` for every item in ``n`` spawned workers (module-level functions: they are
    pickled by name); ``on_done(item, result)`` in this process as each finishes. The first error
    of a task (or of ``init``) is raised here once every worker has been stopped, and a worker
    that dies is ``WorkerDied``; Ctrl-C (KeyboardInterrupt) stops the workers and re-raises."""
    todo = list(items)
    workers: list[_Worker] = []
    try:
        _start(n, setup, init, init_arg, task, workers)
        faults.reach("workers-started")
        busy: dict[Connection, _Worker] = {}
        for w in workers:
            if todo:
                _hand(w, todo.pop(0))
                busy[w.conn] = w
        while busy:
            for conn in wait(list(busy)):
                w = busy.pop(conn)
                try:
                    kind, *payload = conn.recv()
                except (EOFError, OSError):
                    raise WorkerDied(w) from None
                if kind == "error":
                    err, tb = payload
                    if isinstance(err, EmofuseError):
                        raise err from None
                    raise err from RemoteTraceback(tb)
                on_done(w.item, payload[0])
                if todo:
                    _hand(w, todo.pop(0))
                    busy[conn] = w
        for w in workers:
            with contextlib.suppress(OSError):  # every task is done: one that is gone is fine
                w.conn.send(None)
        for w in workers:
            w.process.join()
            w.conn.close()
    except BaseException:
        _stop(workers)
        raise
