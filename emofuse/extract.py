"""The extraction pipeline: utterances → frozen encoders → one feature cache.

Extraction is hours of GPU time on a real corpus, so the pipeline keeps the model busy and is safe to
kill at any moment:

* audio is decoded and resampled in a thread pool, batches ahead of the model;
* utterances are grouped into length-bucketed batches under a padded-seconds budget;
* one writer thread stores finished utterances through a bounded queue, overlapping with compute;
* the batch plan is made once over the whole corpus, before sharding and before resume: every
  utterance is always encoded in the same batch, so a resumed or ``torchrun``-sharded run stores
  exactly what an uninterrupted single-process run stores (padding never changes which numbers
  come out of a batched kernel).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from emofuse import __version__, faults
from emofuse.audio import SAMPLE_RATE, AudioProblem, audio_sha1, duration_of, load_audio
from emofuse.corpus import Utterance
from emofuse.encoders._common import plan_batches as bucket
from emofuse.errors import EmofuseError
from emofuse.locks import output_lock
from emofuse.progress import progress_bar
from emofuse.segments import pool_utterances, tier_to_spans

DEFAULT_SPEECH = "facebook/hubert-large-ll60k"
DEFAULT_TEXT = "bert-base-uncased"
DEFAULT_SPEAKER = "speechbrain/spkrec-ecapa-voxceleb"
GRANULARITIES = ("frame", "phone", "syllable", "word")
SEGMENT_TIERS = ("phone", "syllable", "word")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
FP16_MAX = 65504.0


@dataclass
class ExtractConfig:
    """Everything that decides what goes into the cache (and how fast it gets there)."""

    out: Path
    speech_model: str | None = DEFAULT_SPEECH  # hub id or folder; None = no speech streams
    text_model: str | None = DEFAULT_TEXT
    speaker_model: str | None = DEFAULT_SPEAKER
    layers: str = "all"  # speech layers stored frame by frame: all | last | 0,6,12
    text_layers: str = "all"
    granularity: tuple[str, ...] = GRANULARITIES
    keep_fillers: bool = False
    text_norm: str = "default"  # the reader's normalisation mode (recorded in the fingerprint)
    fbank: bool = False
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16
    batch_seconds: float = 120.0  # padded audio seconds per speech-model batch
    flush_seconds: float = 10.0  # commit finished work at least this often (what a kill can lose)
    limit: int | None = None
    strict: bool = False
    decode_workers: int = 4
    # torch intra-op threads for this run (None: torch's current setting, i.e. OMP_NUM_THREADS or
    # one per core). Not load-adaptive on purpose: the thread count moves the last bits of CPU
    # kernels, and a resumed or torchrun-sharded run must store what an uninterrupted one stores.
    threads: int | None = None
    model_dir: Path | None = None  # where SpeechBrain keeps its loaded hparams (savedir)
    progress: bool = True


@dataclass
class ExtractSummary:
    """What one run did; printed by the CLI and returned to library callers."""

    out: Path
    stored: int = 0  # utterances written by this run
    resumed: int = 0  # utterances already in the store when the run started
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"id", "reason"}]
    padded: list[str] = field(default_factory=list)  # too short, padded to the model minimum
    min_samples: int = 0  # that minimum: the longest of every loaded model's shortest input
    truncated: int = 0  # transcripts cut at the text model's maximum length
    unaligned: int = 0  # stored utterances without alignment, those of an earlier (resumed) run too
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    estimate_bytes: int = 0
    digest: str | None = None  # content digest of the finished store (rank 0)
    is_main: bool = True  # rank 0 (prints the summary)


# ---------------------------------------------------------------------------------------------
# planning: layers, batches, shards


def parse_layers(spec: str, num_layers: int, option: str = "--layers") -> list[int]:
    """``all`` | ``last`` | ``0,6,12`` (negative indices count from the end) → absolute indices."""
    spec = spec.strip().lower()
    if spec == "all":
        return list(range(num_layers))
    if spec == "last":
        return [num_layers - 1]
    try:
        picked = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise EmofuseError(f"{option} {spec!r}: use all, last, or indices like 0,6,12") from None
    out = sorted({i % num_layers if -num_layers <= i < 0 else i for i in picked})
    if not out or out[-1] >= num_layers or out[0] < 0:
        raise EmofuseError(
            f"{option} {spec!r}: the model has hidden states 0..{num_layers - 1}; pick from those"
        )
    return out


def plan_batches(durations: Sequence[float], batch_seconds: float) -> list[list[int]]:
    """Length-bucketed batches: similar lengths together, padded seconds ≤ ``batch_seconds``.

    Deterministic in the durations alone (ties broken by corpus position). An utterance longer
    than the budget gets a batch of its own. The encoders' own bucketing, in seconds.
    """
    return bucket(durations, batch_seconds)


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


# ---------------------------------------------------------------------------------------------
# models, device, fingerprint


@dataclass
class Models:
    speech: object | None
    text: object | None
    speaker: object | None
    fbank: object | None


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise EmofuseError("--device cuda: no CUDA device is visible; use --device cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if device != "cpu":
        raise EmofuseError(f"--device {device!r}: choose auto, cpu or cuda")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise EmofuseError(f"--dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_models(cfg: ExtractConfig, device: torch.device, dtype: torch.dtype) -> Models:
    """Load the frozen encoders (each raises EmofuseError naming itself when it cannot load)."""
    # each import only when its model is asked for (start-up time counts on a short corpus)
    speech = text = speaker = fbank = None
    if cfg.speech_model:
        from emofuse.encoders.speech import load_speech_encoder

        speech = load_speech_encoder(
            cfg.speech_model, device=device, dtype=dtype, max_batch_seconds=cfg.batch_seconds
        )
    if cfg.text_model:
        from emofuse.encoders.text import load_text_encoder

        text = load_text_encoder(cfg.text_model, device=device, dtype=dtype)
    if cfg.speaker_model:
        from emofuse.encoders.speaker import load_speaker_encoder

        savedir = cfg.model_dir or Path(cfg.out).parent / ".emofuse-models"
        speaker = load_speaker_encoder(cfg.speaker_model, device=device, savedir=savedir)
    if cfg.fbank:
        from emofuse.encoders.fbank import FbankEncoder

        fbank = FbankEncoder()
    return Models(speech, text, speaker, fbank)


def _model_ref(enc: object | None) -> dict | None:
    if enc is None:
        return None
    return {"id": str(enc.model_id), "revision": str(enc.revision)}


def content_settings(cfg: ExtractConfig, device: torch.device) -> dict:
    """The settings stored with the cache: what shaped its content, nothing about where or how fast.

    Output path, worker counts, progress and the number of ranks are left out, so a resumed or a
    sharded run describes itself exactly as an uninterrupted single-process run does.
    """
    keep = ("speech_model", "text_model", "speaker_model", "layers", "text_layers", "granularity",
            "keep_fillers", "text_norm", "fbank", "dtype", "batch_seconds")  # fmt: skip
    return {**{k: getattr(cfg, k) for k in keep}, "device": device.type}


def build_fingerprint(
    cfg: ExtractConfig,
    models: Models,
    layers: list[int],
    text_layers: list[int],
    dtype: torch.dtype,
) -> dict:
    """What decides the stored numbers; resume only continues a store with the same fingerprint."""
    return {
        "emofuse": __version__,
        "speech_model": _model_ref(models.speech),
        "text_model": _model_ref(models.text),
        "speaker_model": _model_ref(models.speaker),
        "fbank": bool(models.fbank),
        "layers": layers,
        "text_layers": text_layers,
        "dtype": str(dtype).removeprefix("torch."),
        "sample_rate": SAMPLE_RATE,
        "text_norm": cfg.text_norm,
        "granularity": list(cfg.granularity),
        "keep_fillers": cfg.keep_fillers,
    }


# ---------------------------------------------------------------------------------------------
# per-batch work


@dataclass
class _Decoded:
    utt: Utterance
    wav: np.ndarray | None = None  # 16 kHz mono float32 (padded to the model minimum if short)
    duration: float = 0.0  # seconds of real audio
    sha1: str = ""  # of the audio file's bytes
    flags: list[str] = field(default_factory=list)
    problem: str | None = None


def _decode(utt: Utterance, min_samples: int) -> _Decoded:
    try:
        dec = load_audio(utt.audio)
    except AudioProblem as err:
        return _Decoded(utt, problem=str(err))
    out = _Decoded(utt, dec.wav, len(dec.wav) / SAMPLE_RATE, dec.sha1)
    if dec.source_rate != SAMPLE_RATE:
        out.flags.append(f"resampled:{dec.source_rate}")
    if dec.channels > 1:
        out.flags.append(f"downmixed:{dec.channels}")
    if len(dec.wav) < min_samples:
        out.wav = np.pad(dec.wav, (0, min_samples - len(dec.wav)))
        out.flags.append("padded")
    return out


def _half(x: torch.Tensor) -> torch.Tensor:
    """fp16 for storage; clamped so a rare large activation is stored as ±max, not inf.

    One conversion pass; the clamp (an extra full-size fp32 pass) only runs when a value overflowed.
    """
    if x.dtype == torch.float16:
        return x
    if x.numel():
        low, high = torch.aminmax(x)
        if low < -FP16_MAX or high > FP16_MAX:
            return x.clamp(-FP16_MAX, FP16_MAX).to(torch.float16)
    return x.to(torch.float16)


def _pick(x: torch.Tensor, index: list[int], every: int, dim: int) -> torch.Tensor:
    """``x`` restricted to ``index`` along ``dim``; no copy when every position is kept."""
    if list(index) == list(range(every)):
        return x
    return x.index_select(dim, torch.as_tensor(index, device=x.device))


def _to_numpy(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Copy a batch's fp16 tensors to host memory: one pinned, non-blocking copy on CUDA."""
    if not tensors:
        return []
    if tensors[0].device.type != "cuda":
        return [t.numpy() for t in tensors]
    flat = torch.cat([t.reshape(-1) for t in tensors])
    host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
    host.copy_(flat, non_blocking=True)
    torch.cuda.current_stream().synchronize()
    parts = torch.split(host, [t.numel() for t in tensors])
    return [p.view(t.shape).numpy() for p, t in zip(parts, tensors, strict=True)]


class _Encoders:
    """Runs one decoded batch through every model and builds the per-utterance cache rows."""

    def __init__(self, cfg: ExtractConfig, models: Models, layers: list[int], text_layers):
        self.cfg, self.models, self.layers, self.text_layers = cfg, models, layers, text_layers
        self.tiers = [g for g in SEGMENT_TIERS if g in cfg.granularity] if models.speech else []

    def __call__(self, batch: list[_Decoded]) -> list[tuple[dict, dict]]:
        m = self.models
        wavs = [d.wav for d in batch]
        data: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in batch]
        n_frames = [0] * len(batch)
        if m.speech is not None:
            frames = m.speech.encode(wavs)  # per utt (T_i, L_all, D) float32
            n_frames = [f.shape[0] for f in frames]
            self._speech(frames, batch, data)
        if m.text is not None:
            outs = m.text.encode([d.utt.model_text for d in batch])
            every = m.text.num_layers
            states = _to_numpy(
                [_half(_pick(o.states, self.text_layers, every, 1)) for o in outs]
            )  # (N, Lt, Dt)
            for row, o, s in zip(data, outs, states, strict=True):
                row["text"] = {"data": s, "word_ids": np.asarray(o.word_ids, np.int32)}
        if m.speaker is not None:
            vec = _half(m.speaker.encode(wavs).reshape(len(batch), -1))  # (B, 192)
            for row, v in zip(data, _to_numpy(list(vec)), strict=True):
                row["speaker"] = {"data": v}
        if m.fbank is not None:
            for row, fb in zip(
                data, _to_numpy([_half(f) for f in m.fbank.encode(wavs)]), strict=True
            ):
                row["fbank"] = {"data": fb}  # (T, 1, 80)
        truncated = (
            [bool(o.truncated) for o in outs] if m.text is not None else [False] * len(batch)
        )
        return [
            (self._meta(d, n, t), row)
            for d, n, t, row in zip(batch, n_frames, truncated, data, strict=True)
        ]

    def _speech(self, frames: list[torch.Tensor], batch: list[_Decoded], data: list[dict]) -> None:
        every = self.models.speech.num_layers
        sel = [_pick(f, self.layers, every, 1) for f in frames]  # (T_i, L, D)
        stats = [torch.std_mean(f, dim=0, correction=0) for f in frames]  # (L_all, D) each
        host = _to_numpy(
            [_half(s) for s in sel] + [_half(m) for _, m in stats] + [_half(s) for s, _ in stats]
        )
        n = len(batch)
        for i, row in enumerate(data):
            if "frame" in self.cfg.granularity:
                row["speech"] = {"data": host[i]}
            row["speech_mean"] = {"data": host[n + i]}
            row["speech_std"] = {"data": host[2 * n + i]}
        rate = self.models.speech.frame_rate
        for tier in self.tiers:
            spans = []
            for d, f in zip(batch, frames, strict=True):
                segs = (d.utt.tiers or {}).get(tier, [])  # unaligned: no rows, aligned=False
                spans.append(tier_to_spans(segs, rate, f.shape[0], self.cfg.keep_fillers))
            pooled = pool_utterances(sel, [s.spans for s in spans])  # per utt (S_i, L, D)
            for row, s, p in zip(data, spans, _to_numpy([_half(p) for p in pooled]), strict=True):
                row[tier] = {
                    "data": p,
                    "spans": s.spans,
                    "symbols": np.asarray(s.symbols, dtype=object),
                }

    def _meta(self, d: _Decoded, n_frames: int, truncated: bool) -> dict:
        u = d.utt
        flags = list(d.flags) + (["text-truncated"] if truncated else [])
        if not u.aligned:
            flags.append("unaligned")
        return {
            "id": u.id,
            **corpus_fields(u),
            "duration": d.duration,
            "n_frames": n_frames,
            "flags": ",".join(flags),
            "audio_sha1": d.sha1,
        }


def corpus_fields(u: Utterance) -> dict:
    """The table fields that come from the corpus reader (not from decoding or the models)."""
    return {
        "speaker": u.speaker,
        "session": u.session or "",
        "gender": u.gender or "",
        "label": u.label,
        "text": u.text,
        "text_norm": u.model_text,
        "aligned": u.aligned,
        "split": u.split or "",
        "extra": dict(u.extra),
    }


def check_resumed(
    out: Path,
    stored: dict[str, dict],
    utts: Sequence[Utterance],
    complete: bool,
    workers: int = 4,
):
    """Refuse a resume whose stored rows disagree with this corpus (changed manifest, other corpus,
    changed audio).

    Every stored utterance must be in the corpus (unless the store is complete), carry the same
    corpus fields (label, speaker, text ...) and its audio file the same bytes (the SHA-1 stored at
    extraction): otherwise one store would mix two corpora, or keep the features of a recording
    that was replaced under the same name. Hashing re-reads the stored utterances' audio once per
    resume (in ``workers`` threads; audio is small next to the hours of encoding it saves).
    """
    from emofuse.cache.schema import canonical_json, parts_dir

    where = out if complete else parts_dir(out)
    restart = f"delete {where} (or choose another --out) to extract from scratch"
    by_id = {u.id: u for u in utts}
    extra = sorted(uid for uid in stored if uid not in by_id)
    if extra and not complete:
        raise EmofuseError(
            f"{where} holds {len(extra)} stored utterances that are not in this corpus (first: "
            f"{extra[0]!r}): the interrupted run read more; rerun with its corpus options "
            f"(--manifest/--root, --classes, --limit ...) to resume, or {restart}"
        )
    for u in utts:
        row = stored.get(u.id)
        if row is None:
            continue
        for key, value in corpus_fields(u).items():
            if key in row and canonical_json(row[key]) != canonical_json(value):
                raise EmofuseError(
                    f"utterance {u.id}: {key} {row[key]!r} in {where} but {value!r} in this "
                    f"corpus (the manifest changed since it was extracted); rerun with the original "
                    f"corpus, or {restart}"
                )
    hashed = [u for u in utts if (stored.get(u.id) or {}).get("audio_sha1")]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        now = list(pool.map(lambda u: audio_sha1(u.audio), hashed))
    for u, sha in zip(hashed, now, strict=True):
        # unreadable now (None): its features were made when it was readable, and stand
        if sha is not None and sha != stored[u.id]["audio_sha1"]:
            raise EmofuseError(
                f"utterance {u.id}: its audio file {u.audio} changed since it was extracted into "
                f"{where} (same name, other content); restore the original file to resume, or "
                f"{restart}"
            )


# ---------------------------------------------------------------------------------------------
# the writer thread


class _WriterThread:
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


# ---------------------------------------------------------------------------------------------
# distributed


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False

    @classmethod
    def from_env(cls) -> _Dist:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def init(self, device: torch.device) -> None:
        if self.world_size > 1 and not dist.is_initialized():
            # extraction ranks finish at different times: the final barrier must wait long
            dist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo",
                timeout=datetime.timedelta(hours=48),
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


# ---------------------------------------------------------------------------------------------
# the pipeline


def _durations(utts: Sequence[Utterance], workers: int) -> list[float]:
    """Seconds per utterance for batch planning: the reader's value, else the audio header."""
    missing = [i for i, u in enumerate(utts) if not u.duration]
    out = [float(u.duration or 0.0) for u in utts]
    with ThreadPoolExecutor(workers) as pool:
        for i, d in zip(
            missing, pool.map(lambda i: duration_of(utts[i].audio), missing), strict=True
        ):
            out[i] = d
    return out


def estimate_bytes(
    durations: Sequence[float], models: Models, layers: list[int], cfg: ExtractConfig
) -> int:
    """Rough store size: speech frames × stored layers × dim × 2 bytes, plus pooled and segment rows."""
    if models.speech is None:
        return 0
    enc = models.speech
    frames = sum(enc.n_frames(int(d * SAMPLE_RATE)) for d in durations)
    per_row = len(layers) * enc.dim * 2
    total = len(durations) * 2 * enc.num_layers * enc.dim * 2  # speech_mean + speech_std
    if "frame" in cfg.granularity:
        total += frames * per_row
    if models.fbank is not None:
        total += frames * 2 * 80 * 2  # 100 Hz log-mel
    return int(total)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _batches_of_decoded(
    pool: ThreadPoolExecutor,
    batches: list[list[Utterance]],
    min_samples: int,
    prefetch: int = 2,
) -> Iterator[list[_Decoded]]:
    """Yield decoded batches in order while the next ``prefetch`` batches decode in the pool."""
    pending: list[list[Future]] = []
    it = iter(batches)
    for _ in range(prefetch + 1):
        if (b := next(it, None)) is not None:
            pending.append([pool.submit(_decode, u, min_samples) for u in b])
    while pending:
        futures = pending.pop(0)
        if (b := next(it, None)) is not None:
            pending.append([pool.submit(_decode, u, min_samples) for u in b])
        yield [f.result() for f in futures]


def run_extract(
    utterances: Sequence[Utterance],
    cfg: ExtractConfig,
    echo: Callable[[str], None] = print,
) -> ExtractSummary:
    """Extract every utterance into ``cfg.out`` (resuming a matching incomplete store)."""
    from emofuse.cache import CacheWriter, fingerprint_of
    from emofuse.cache.store import check_outside_caches

    start = time.perf_counter()
    if not (cfg.speech_model or cfg.text_model or cfg.speaker_model or cfg.fbank):
        raise EmofuseError(
            "nothing to extract: --speech-model, --text-model and --speaker-model are all none (and "
            "no --fbank); give at least one model (or --fbank) so the cache holds features"
        )
    # before the lock: even <out>.lock would be a stray file in another cache
    check_outside_caches(cfg.out, "a cache path")
    utts = list(utterances[: cfg.limit] if cfg.limit else utterances)
    _check_ids(utts)
    bad = sorted(set(cfg.granularity) - set(GRANULARITIES))
    if bad:
        raise EmofuseError(f"--granularity {','.join(bad)}: choose from {','.join(GRANULARITIES)}")
    ddp = _Dist.from_env()
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
        fingerprint = build_fingerprint(cfg, models, layers, text_layers, dtype)
        settings = {**content_settings(cfg, device), "fingerprint": fingerprint}
        durations = _durations(utts, cfg.decode_workers)
        batches = shard_batches(
            plan_batches(durations, cfg.batch_seconds), durations, ddp.rank, ddp.world_size
        )
        writer = CacheWriter(
            cfg.out,
            fingerprint=fingerprint_of(fingerprint),
            settings=settings,
            streams=stream_specs(cfg, models, layers, text_layers),
            rank=ddp.rank,
            world_size=ddp.world_size,
            flush_s=cfg.flush_seconds,
            progress=cfg.progress and ddp.rank == 0,
        )
        done = set(writer.done_ids())
        if done:
            check_resumed(
                Path(cfg.out), writer.stored_rows(), utts, writer.complete, cfg.decode_workers
            )
        corpus_ids = {u.id for u in utts}
        resumed = len(done & corpus_ids)
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
                f" estimated size {_human(summary.estimate_bytes)}"
                + (f"; resuming: {resumed} already stored" if resumed else "")
                + (f"; {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
            )
        todo = [b for b in batches if any(utts[i].id not in done for i in b)]
        _run_batches(
            cfg,
            models,
            layers,
            text_layers,
            utts,
            todo,
            done,
            durations,
            writer,
            summary,
            show=cfg.progress and ddp.rank == 0,
        )
        _finish(writer, ddp, [u.id for u in utts], summary)
    finally:
        held.close()
        ddp.shutdown()
        if threads:
            torch.set_num_threads(threads_before)
    summary.wall_seconds = time.perf_counter() - start
    return summary


def _check_ids(utts: Sequence[Utterance]) -> None:
    seen: set[str] = set()
    for u in utts:
        if u.id in seen:
            raise EmofuseError(
                f"utterance id {u.id!r} appears twice in the corpus: ids must be unique"
            )
        seen.add(u.id)


def stream_specs(cfg: ExtractConfig, models: Models, layers: list[int], text_layers: list[int]):
    """The cache streams this configuration writes (docs/architecture.md, section 2)."""
    from emofuse.cache import fixed, ragged

    specs = []
    if (sp := models.speech) is not None:
        model = str(sp.model_id)
        every = list(range(sp.num_layers))
        rows = ("float16", (len(layers), sp.dim))
        if "frame" in cfg.granularity:
            specs.append(
                ragged(
                    "speech",
                    {"data": rows},
                    model=model,
                    layers=layers,
                    num_layers=sp.num_layers,
                    dim=sp.dim,
                    frame_rate=sp.frame_rate,
                )
            )
        for name in ("speech_mean", "speech_std"):
            specs.append(
                fixed(
                    name, {"data": ("float16", (sp.num_layers, sp.dim))}, model=model, layers=every
                )
            )
        for tier in SEGMENT_TIERS:
            if tier in cfg.granularity:
                arrays = {"data": rows, "spans": ("int32", (2,)), "symbols": ("str", ())}
                specs.append(
                    ragged(
                        tier,
                        arrays,
                        model=model,
                        layers=layers,
                        keep_fillers=cfg.keep_fillers,
                        frame_rate=sp.frame_rate,
                    )
                )
    if (tx := models.text) is not None:
        specs.append(
            ragged(
                "text",
                {"data": ("float16", (len(text_layers), tx.dim)), "word_ids": ("int32", ())},
                model=str(tx.model_id),
                layers=text_layers,
                num_layers=tx.num_layers,
                max_tokens=getattr(tx, "max_tokens", None),
                text_norm=cfg.text_norm,
            )
        )
    if (sk := models.speaker) is not None:
        specs.append(
            fixed(
                "speaker", {"data": ("float16", (getattr(sk, "dim", 192),))}, model=str(sk.model_id)
            )
        )
    if models.fbank is not None:
        specs.append(
            ragged(
                "fbank",
                {"data": ("float16", (1, models.fbank.dim))},
                frame_rate=getattr(models.fbank, "frame_rate", 100.0),
            )
        )
    return specs


def _run_batches(
    cfg: ExtractConfig,
    models: Models,
    layers: list[int],
    text_layers: list[int],
    utts: list[Utterance],
    batches: list[list[int]],
    done: set[str],
    durations: list[float],
    writer,
    summary: ExtractSummary,
    show: bool,
) -> None:
    """Decode ahead (thread pool) → encode (this thread) → store (writer thread)."""
    encode = _Encoders(cfg, models, layers, text_layers)
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
    wt = _WriterThread(writer)
    try:
        with ThreadPoolExecutor(max(1, cfg.decode_workers), thread_name_prefix="decode") as pool:
            decoded_batches = _batches_of_decoded(
                pool, [[utts[i] for i in b] for b in batches], min_samples
            )
            for batch_ids, batch in zip(batches, decoded_batches, strict=True):
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


def _finish(writer, ddp: _Dist, order: list[str], summary: ExtractSummary) -> None:
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
