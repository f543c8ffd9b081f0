"""Batches and shards: planned once over the whole corpus, from durations alone.

Every utterance is always encoded in the same batch, whatever was resumed or however the corpus is
sharded over ``torchrun`` ranks, so each run stores exactly what an uninterrupted one stores (padding
never changes which numbers come out of a batched kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from emofuse.audio import SAMPLE_RATE, duration_of
from emofuse.corpus import Utterance
from emofuse.encoders.common import pack_batches

if TYPE_CHECKING:
    from emofuse.extract.config import ExtractConfig, Models


def length_batches(durations: Sequence[float], batch_seconds: float) -> list[list[int]]:
    """Length-bucketed batches: similar lengths together, padded seconds ≤ ``batch_seconds``.

    Deterministic in the durations alone (ties broken by corpus position). An utterance longer
    than the budget gets a batch of its own. The encoders' own bucketing, in seconds.
    """
    return pack_batches(durations, batch_seconds)


def shard_batches(
    batches: list[list[int]], durations: Sequence[float], rank: int, world_size: int
) -> list[list[int]]:
    """This rank's batches: longest-first onto the least-loaded rank (balanced by audio seconds)."""
    if world_size == 1:
        return batches
    load = [0.0] * world_size
    mine: list[list[int]] = []
    weight = [sum(durations[i] for i in b) for b in batches]
    for b in sorted(range(len(batches)), key=lambda k: (-weight[k], k)):
        target = min(range(world_size), key=lambda r: (load[r], r))
        load[target] += weight[b]
        if target == rank:
            mine.append(batches[b])
    return mine


def durations_of(utts: Sequence[Utterance], workers: int) -> list[float]:
    """Seconds per utterance for batch planning: the reader's value, else the audio header."""
    missing = [i for i, u in enumerate(utts) if not u.duration]
    out = [float(u.duration or 0.0) for u in utts]
    with ThreadPoolExecutor(workers) as pool:
        for i, d in zip(
            missing, pool.map(lambda i: duration_of(utts[i].audio), missing), strict=True
        ):
            out[i] = d
    return out


TOKENS_PER_SECOND = 4.0  # rough rate of subword tokens in a transcript of speech


def estimate_bytes(
    durations: Sequence[float], models: Models, layers: list[int], cfg: ExtractConfig
) -> int:
    """Rough store size (float16): speech frames x stored layers x dim, its pooled mean and std,
    100 Hz log-mel, text tokens (about ``TOKENS_PER_SECOND``) x layers x dim and a speaker
    vector per utterance; segment rows are not counted."""
    seconds = float(sum(durations))
    total = 0.0
    if models.speech is not None:
        enc = models.speech
        frames = sum(enc.n_frames(int(d * SAMPLE_RATE)) for d in durations)
        total += len(durations) * 2 * enc.num_layers * enc.dim * 2  # speech_mean + speech_std
        if "frame" in cfg.granularity:
            total += frames * len(layers) * enc.dim * 2
    if models.fbank is not None:
        total += seconds * 100 * models.fbank.dim * 2  # 100 Hz log-mel
    if models.text is not None:
        total += seconds * TOKENS_PER_SECOND * models.text.num_layers * models.text.dim * 2
    if models.speaker is not None:
        total += len(durations) * models.speaker.dim * 2
    return int(total)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
