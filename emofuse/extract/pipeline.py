"""The extraction run: lock, models, plan, then decode ahead → encode → store, and consolidate.

Decoding runs in a thread pool batches ahead of the model, one writer thread stores finished rows
through a bounded queue (overlapping with compute), and the store is safe to kill at any moment:
rerunning the same command resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from emofuse import faults
from emofuse.corpus import Utterance
from emofuse.device import resolve_device
from emofuse.errors import (
    RERUN,
    EmofuseError,
    cannot_write,
    closed_folder,
    make_enterable,
    os_reason,
)
from emofuse.extract.batching import (
    durations_of,
    estimate_bytes,
    human_bytes,
    length_batches,
    shard_batches,
)
from emofuse.extract.config import (
    ExtractConfig,
    ExtractSummary,
    Models,
    build_fingerprint,
    content_settings,
    load_models,
    parse_layers,
    resolve_dtype,
    stream_specs,
)
from emofuse.extract.resume import check_resumed, check_skipped_again
from emofuse.extract.rows import RowBuilder
from emofuse.extract.runtime import Dist, WriterThread, decoded_batches
from emofuse.locks import output_lock
from emofuse.progress import progress_bar
from emofuse.streams import GRANULARITIES


def _check_segments_cover(utts: Sequence[Utterance], granularity: Sequence[str]) -> None:
    """Without ``frame``, an utterance with no alignment at the asked tiers gets no speech rows:
    refused in one line (it was stored with empty segment streams, and the summary said frames)."""
    uncovered = [u for u in utts if not any((u.tiers or {}).get(t) for t in granularity)]
    if uncovered:
        tiers = ",".join(granularity)
        raise EmofuseError(
            f"--granularity {tiers}: {len(uncovered)} of {len(utts)} utterances (e.g. "
            f"{uncovered[0].id}) have no {tiers} alignment, so they would get no speech features; "
            f"add frame (--granularity frame,{tiers}) or align them first (emofuse align)"
        )


def _note_missing_tiers(
    utts: Sequence[Utterance], granularity: Sequence[str], echo: Callable[[str], None]
) -> None:
    """Aligned utterances whose TextGrid lacks a tier asked for (a words-only grid has no phones):
    they get no rows there, and the heads read their frames instead; said once per tier."""
    for tier in (t for t in granularity if t != "frame"):
        lacking = [u.id for u in utts if u.tiers and not u.tiers.get(tier)]
        if lacking:
            echo(
                f"note: {len(lacking)} aligned utterance(s) have no {tier} segments (e.g. "
                f"{lacking[0]}: its TextGrid lacks the tier or it is empty); the heads read their "
                f"frames in the {tier} branch"
            )


def run_extract(
    utterances: Sequence[Utterance],
    cfg: ExtractConfig,
    echo: Callable[[str], None] = print,
    skipped: Mapping[str, Sequence[str]] | None = None,
) -> ExtractSummary:
    """Extract every utterance into ``cfg.out`` (resuming a matching incomplete store).

    ``skipped``: reason -> ids of corpus rows the reader dropped for bad audio (``--skip-missing``);
    the cache lists them with the utterances extraction itself skips: a dropped row leaves a trace."""
    from emofuse.cache import CacheWriter
    from emofuse.cache.backends import backend_for
    from emofuse.cache.store import check_outside_caches

    start = time.perf_counter()
    if not (cfg.speech_model or cfg.text_model or cfg.speaker_model or cfg.fbank):
        raise EmofuseError(
            "nothing to extract: --speech-model, --text-model and --speaker-model are all none (and "
            "no --fbank); give at least one model (or --fbank) so the cache holds features"
        )
    cfg = _follow_out_link(cfg)
    backend_for(Path(cfg.out))  # its name before anything, the lock beside it included
    # before the lock: even <out>.lock would be a stray file in another cache
    check_outside_caches(cfg.out, "a cache path")
    utts = list(utterances[: cfg.limit] if cfg.limit else utterances)
    _check_ids(utts)
    bad = sorted(set(cfg.granularity) - set(GRANULARITIES))
    if bad:
        raise EmofuseError(f"--granularity {','.join(bad)}: choose from {','.join(GRANULARITIES)}")
    if cfg.speech_model and "frame" not in cfg.granularity:
        _check_segments_cover(utts, cfg.granularity)
    ddp = Dist.from_env()
    device = resolve_device(cfg.device, ddp.local_rank)
    dtype = resolve_dtype(cfg.dtype, device)
    ddp.init(device)
    threads_before = torch.get_num_threads()
    threads = cfg.threads if device.type == "cpu" else None
    if threads:
        torch.set_num_threads(threads)
    held = contextlib.ExitStack()
    try:
        if ddp.rank == 0:  # one writer per output (torchrun's other ranks write their own parts)
            held.enter_context(output_lock(Path(cfg.out), "extract"))
            faults.reach("lock-taken")
        models = load_models(cfg, device, dtype)
        layers = parse_layers(cfg.layers, models.speech.num_layers) if models.speech else []
        text_layers = (
            parse_layers(cfg.text_layers, models.text.num_layers, "--text-layers")
            if models.text
            else []
        )
        specs = stream_specs(cfg, models, layers, text_layers)
        fingerprint = build_fingerprint(cfg, models, layers, text_layers, dtype, specs)
        settings = {**content_settings(cfg, device), "fingerprint": fingerprint}
        durations = durations_of(utts, cfg.decode_workers)
        batches = shard_batches(
            length_batches(durations, cfg.batch_seconds), durations, ddp.rank, ddp.world_size
        )
        writer = CacheWriter(
            cfg.out,
            settings=settings,
            streams=specs,
            rank=ddp.rank,
            world_size=ddp.world_size,
            flush_s=cfg.flush_seconds,
            progress=cfg.progress and ddp.rank == 0,
        )
        done = set(writer.done_ids())
        if ddp.rank == 0:
            for reason, ids in (skipped or {}).items():
                for utt_id in ids:
                    if utt_id not in done:
                        writer.skip(utt_id, reason)
            for part, problem, count in writer.dropped:  # checked before anything is encoded
                print(
                    f"warning: {part} is damaged ({problem}); set aside, its {count} "
                    "utterance(s) are encoded again",
                    file=sys.stderr,
                    flush=True,
                )
        if done:
            check_resumed(
                Path(cfg.out), writer.stored_rows(), utts, writer.complete, cfg.decode_workers
            )
            check_skipped_again(
                Path(cfg.out), writer.skipped_records(), utts, writer.complete, cfg.decode_workers
            )
        corpus_ids = {u.id for u in utts}
        if writer.complete and done and utts and not done & corpus_ids:
            raise EmofuseError(
                f"{cfg.out} is a finished store of another corpus: none of its {len(done)} "
                f"utterances is in this one (its first {sorted(done)[0]!r}, this corpus's first "
                f"{utts[0].id!r}); choose another --out"
            )
        if writer.complete and (more := [u.id for u in utts if u.id not in done]):
            raise EmofuseError(
                f"{cfg.out} is a finished store of {len(done)} utterances (an earlier run's corpus, "
                f"e.g. a smaller --limit); this corpus has {len(more)} more (first {more[0]!r}) and "
                f"a finished store cannot grow: choose another --out, or delete {cfg.out} and "
                "rerun to extract them all"
            )
        resumed = len(set(writer.stored_rows()) & corpus_ids)  # stored, not skipped
        beyond = sorted(set(writer.stored_rows()) - corpus_ids) if writer.complete else []
        if beyond and ddp.rank == 0:  # its digest and contents are of more than was asked
            print(
                f"note: {cfg.out} holds {len(beyond)} utterances beyond this corpus (first "
                f"{beyond[0]!r}: extracted from a larger one, e.g. a bigger --limit); it is left "
                "as it is and its digest is of all it holds: choose another --out for a store "
                "of this corpus alone",
                file=sys.stderr,
                flush=True,
            )
        summary = ExtractSummary(Path(cfg.out), resumed=resumed, is_main=ddp.rank == 0)
        if done and ddp.rank == 0:  # the cache's count, not this run's (every rank sees all parts)
            stored = writer.stored_rows()
            summary.unaligned = sum(
                not bool(stored[i].get("aligned", True)) for i in done & corpus_ids if i in stored
            )
        summary.estimate_bytes = estimate_bytes(durations, models, layers, cfg)
        if ddp.rank == 0:
            echo(
                f"extracting {len(utts)} utterances ({sum(durations) / 3600:.2f} h) into {cfg.out};"
                f" estimated size {human_bytes(summary.estimate_bytes)} (twice that on disk at "
                "the end, when the store is built beside its parts)"
                + (f"; resuming: {resumed} already stored" if resumed else "")
                + (f"; {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
            )
            _note_missing_tiers(utts, cfg.granularity, echo)
        todo = [b for b in batches if any(utts[i].id not in done for i in b)]
        job = ExtractJob(cfg, models, layers, text_layers, utts, durations, writer, summary, done)
        run_batches(job, todo, show=cfg.progress and ddp.rank == 0)
        _finish(writer, ddp, [u.id for u in utts], summary)
    except OSError as err:  # the writer's are its own lines: one between the lock and it
        # stdout's own failure is re-raised for the CLI's line; the folder named is the one that
        # refused (the parts folder, perhaps)
        raise cannot_write(err, cfg.out, RERUN) from None
    finally:
        held.close()
        ddp.shutdown()
        if threads:
            torch.set_num_threads(threads_before)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _follow_out_link(cfg: ExtractConfig) -> ExtractConfig:
    """An --out that is a symbolic link names the store at its target: the final rename would
    otherwise replace the link with a file beside it (and the target's disk never get it)."""
    link = Path(cfg.out)
    try:
        if not link.is_symlink():
            return cfg
    except PermissionError as err:  # a folder above it this process may not enter
        closed = closed_folder(link) or link.parent
        raise EmofuseError(
            f"--out {link}: the folder {closed} cannot be entered ({os_reason(err)}); "
            f"{make_enterable(closed)}, or choose another --out"
        ) from None
    try:
        target = link.resolve()
    except (RuntimeError, OSError):  # Python 3.11: RuntimeError("Symlink loop from …")
        raise EmofuseError(
            f"--out {link} is a symbolic link that loops back on itself; fix or remove the "
            "link, or give another --out"
        ) from None
    if not target.parent.is_dir():
        raise EmofuseError(
            f"--out {link} is a symbolic link to {target}, whose folder {target.parent} does not "
            "exist; create it (or fix the link), or give another --out"
        )
    if target.exists() and not (target.is_file() or target.is_dir()):
        raise EmofuseError(
            f"--out {link} is a symbolic link to {target}, which is a device or a pipe, not a "
            "file a cache can be written to; give another --out"
        )
    if _backend_suffixes(target) != _backend_suffixes(link):  # the store takes the target's name
        raise EmofuseError(
            f"--out {link} is a symbolic link to {target}, and the cache is written at the "
            f"link's target, whose name must end in {link.suffix} as the link's does; link to "
            "such a name, or give another --out"
        )
    return dataclasses.replace(cfg, out=type(cfg.out)(target))


def _backend_suffixes(path: Path) -> tuple[str, ...] | None:
    from emofuse.cache.backends import BACKENDS

    suffix = path.suffix.lower()
    return next((b.suffixes for b in BACKENDS.values() if suffix in b.suffixes), None)


def _check_ids(utts: Sequence[Utterance]) -> None:
    seen: set[str] = set()
    for u in utts:
        if u.id in seen:
            raise EmofuseError(
                f"utterance id {u.id!r} appears twice in the corpus: ids must be unique"
            )
        seen.add(u.id)


@dataclass
class ExtractJob:
    """What every batch of one run shares: settings, models, the corpus and where rows go."""

    cfg: ExtractConfig
    models: Models
    layers: list[int]  # speech layers stored (absolute indices)
    text_layers: list[int]
    utts: list[Utterance]
    durations: list[float]  # seconds per utterance (batch planning, progress)
    writer: Any  # emofuse.cache.CacheWriter
    summary: ExtractSummary
    done: set[str]  # ids already stored (a resume)


def run_batches(job: ExtractJob, batches: list[list[int]], show: bool) -> None:
    """Decode ahead (thread pool) → encode (this thread) → store (writer thread)."""
    cfg, models, utts, done, summary = job.cfg, job.models, job.utts, job.done, job.summary
    durations = job.durations
    encode = RowBuilder(cfg, models, job.layers, job.text_layers)
    # pad short audio to what every model present accepts (speech conv stack, Fbank window ...)
    min_samples = max(
        [
            int(getattr(m, "min_samples", 0) or 0)
            for m in (models.speech, models.speaker, models.fbank)
        ]
    )
    summary.min_samples = min_samples
    total = sum(durations[i] for b in batches for i in b)
    bar = progress_bar(
        total=total,
        unit="audio-s",
        enabled=show,
        dynamic_ncols=True,
        desc="extract",
        smoothing=0.1,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio-s [{elapsed}<{remaining}, {rate_fmt}]",
    )
    wt = WriterThread(job.writer)
    try:
        with ThreadPoolExecutor(max(1, cfg.decode_workers), thread_name_prefix="decode") as pool:
            ahead = decoded_batches(pool, [[utts[i] for i in b] for b in batches], min_samples)
            for batch_ids, batch in zip(batches, ahead, strict=True):
                good = []
                for d in batch:
                    if d.problem is None:
                        good.append(d)
                        continue
                    if cfg.strict:
                        raise EmofuseError(
                            f"utterance {d.utt.id}: {d.problem} (--strict; drop --strict to skip"
                            " bad audio and list it in the summary)"
                        )
                    if d.utt.id not in done:
                        summary.skipped.append({"id": d.utt.id, "reason": d.problem})
                        wt.put("skip", (d.utt.id, d.problem))
                if good:
                    with torch.inference_mode():
                        rows = encode(good)
                    new = [(meta, data) for meta, data in rows if meta["id"] not in done]
                    wt.put("add", new)
                    summary.stored += len(new)
                    summary.audio_seconds += sum(meta["duration"] for meta, _ in new)
                    summary.padded += [m["id"] for m, _ in new if "padded" in m["flags"]]
                    summary.truncated += sum("text-truncated" in m["flags"] for m, _ in new)
                    summary.unaligned += sum(not m["aligned"] for m, _ in new)
                bar.update(sum(durations[i] for i in batch_ids))
    finally:
        bar.close()
        wt.finish()


def _finish(writer: Any, ddp: Dist, order: list[str], summary: ExtractSummary) -> None:
    """Every rank commits its parts; after a barrier rank 0 consolidates them into one store."""
    writer.flush()
    ddp.barrier()
    if ddp.rank == 0:
        summary.digest = writer.close(order=order)
    ddp.barrier()  # no rank reports success before the store is complete
    if ddp.world_size > 1:
        parts = ddp.gather(
            (summary.stored, summary.skipped, summary.padded, summary.truncated, summary.unaligned,
             summary.audio_seconds)
        )  # fmt: skip
        summary.stored = sum(p[0] for p in parts)
        summary.skipped = [s for p in parts for s in p[1]]
        summary.padded = [s for p in parts for s in p[2]]
        summary.truncated = sum(p[3] for p in parts)
        summary.unaligned = sum(p[4] for p in parts)
        summary.audio_seconds = sum(p[5] for p in parts)
