"""The threads and processes around the encoders: decode-ahead, the writer thread, torchrun ranks."""

from __future__ import annotations

import datetime
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.distributed as dist

from emofuse.corpus import Utterance
from emofuse.distenv import DistEnv, dist_env, join_group
from emofuse.extract.rows import Decoded, decode


def decoded_batches(
    pool: ThreadPoolExecutor,
    batches: list[list[Utterance]],
    min_samples: int,
    prefetch: int = 2,
) -> Iterator[list[Decoded]]:
    """Yield decoded batches in order while the next ``prefetch`` batches decode in the pool."""
    pending: list[list[Future]] = []
    it = iter(batches)
    for _ in range(prefetch + 1):
        if (b := next(it, None)) is not None:
            pending.append([pool.submit(decode, u, min_samples) for u in b])
    while pending:
        futures = pending.pop(0)
        if (b := next(it, None)) is not None:
            pending.append([pool.submit(decode, u, min_samples) for u in b])
        yield [f.result() for f in futures]


class WriterThread:
    """One thread owns the cache writer; compute hands it finished batches through a bounded queue.

    The bound (a few batches) keeps memory flat when the disk is slower than the model. A failure in
    the writer is re-raised in the main thread at the next hand-over.
    """

    def __init__(self, writer, depth: int = 4):
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="emofuse-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is not None:
                continue  # drain so the producer never blocks on a dead writer
            try:
                kind, payload = item
                if kind == "add":
                    for meta, data in payload:
                        self.writer.add(meta, data)
                else:
                    self.writer.skip(*payload)
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self.error = err

    def put(self, kind: str, payload) -> None:
        self.check()
        self.q.put((kind, payload))

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        self.q.put(None)
        self.thread.join()
        self.check()


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False

    @classmethod
    def from_env(cls) -> Dist:
        env = dist_env()
        return cls(env.rank, env.world_size, env.local_rank)

    def init(self, device: torch.device) -> None:
        if self.world_size > 1 and not dist.is_initialized():
            # extraction ranks finish at different times: the final barrier must wait long
            join_group(
                "nccl" if device.type == "cuda" else "gloo",
                datetime.timedelta(hours=48),
                DistEnv(self.rank, self.world_size, self.local_rank),
            )
            self.started_here = True

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def gather(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def shutdown(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()
