"""In-memory training data: the streams a head needs, loaded once, batched by index.

Why not a DataLoader: the cached arrays of a whole corpus fit in (GPU) memory, so reading them once
and slicing batches with tensor ops is an order of magnitude faster than per-item reads, and it
avoids the problems worker processes bring (an HDF5 or Zarr handle shared across a fork).

A ragged stream is kept as its concatenated rows ``values`` (R, L, D) plus ``offsets`` (N + 1,);
a batch gathers rows with one ``index_select`` over a (B, T) row-index matrix built from the
offsets and zeroes the padding positions, so there is no per-sample Python loop in the step. Rows
past a head's max length are truncated (the first ``max_len`` rows are kept).

The arrays of an uncompressed HDF5 cache are not copied at all: ``values`` is a copy-on-write
memory map of the file (``Cache.load(mmap=True)``), so loading takes milliseconds, the OS page
cache holds the bytes once for every process of a ``torchrun`` job, and on a CPU a corpus larger
than RAM still trains (the kernel pages it). ``--speaker-norm`` rewrites the acoustic streams, so
it gives each process its own copy of them in memory (copy-on-write; the file never changes).
Other stores are read into memory with a few large reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from emofuse.device import resolve_device
from emofuse.errors import EmofuseError
from emofuse.streams import (
    ACOUSTIC_STREAMS,
    FRAME_STREAMS,
    RAGGED_STREAMS,
    SEGMENT_TIERS,
    SPEECH_LAYER_STREAMS,
    STREAMS,
    advice,
)

# a stream no extractor makes: extracting again cannot help, the head's required_streams must change
UNKNOWN_STREAM = (
    f"no emofuse extractor makes a stream of that name (streams: {', '.join(STREAMS)}); fix the "
    "head's required_streams"
)

# per-speaker normalisation standardises the ACOUSTIC_STREAMS: not text, and not the speaker
# vector, which is nearly constant within a speaker by design


class CacheSource(Protocol):
    """What the data layer reads: ``emofuse.cache.Cache`` (tests use an in-memory double)."""

    path: Path | str | None  # None: nothing on disk (worker processes cannot reopen it)
    ids: list[str]
    table: dict[str, np.ndarray]
    streams: dict[str, Any]  # name -> StreamInfo (kind, attrs)
    fingerprint: str
    settings: dict[str, Any]

    def load(
        self,
        stream: str,
        array: str = "data",
        layers: list[int] | None = None,
        ids=None,
        mmap=False,
    ) -> tuple[np.ndarray, np.ndarray | None]: ...

    def check_loaded(
        self, stream: str, array: str, values: np.ndarray, layers: list[int] | None
    ) -> None: ...


@dataclass
class StreamData:
    """One stream in memory: ragged (``offsets`` set) or fixed (one row per utterance)."""

    values: Tensor  # ragged: (R, L, D) concatenated rows; fixed: (N, ...); may be a strided mmap
    offsets: Tensor | None  # (N + 1,) int64, ragged only
    max_len: int | None = None  # truncation for ragged streams (None = keep every row)

    @property
    def ragged(self) -> bool:
        return self.offsets is not None

    def lengths(self) -> Tensor:
        """Rows per utterance after truncation, (N,) int64."""
        assert self.offsets is not None
        lens = self.offsets[1:] - self.offsets[:-1]
        return lens.clamp(max=self.max_len) if self.max_len else lens

    def dims(self) -> tuple[int, ...]:
        """Per-row shape: (L, D) for layered streams, (F,) for a speaker vector."""
        return tuple(self.values.shape[1:])


def layers_for(stream: str, cfg: Any) -> list[int] | None:
    """Which cached layers a head config asks for in ``stream`` (None = all)."""
    if stream == "text":
        return getattr(cfg, "text_layers", None)
    if stream in SPEECH_LAYER_STREAMS:
        return getattr(cfg, "speech_layers", None)
    return None


def pool_frames(
    values: Tensor, offsets: Tensor, k: int, chunk_rows: int = 1 << 14
) -> tuple[Tensor, Tensor]:
    """Average every utterance's rows over windows of ``k`` (the last window may be shorter).

    (R, L, D) + (N + 1,) -> (R', L, D) + (N + 1,), R' = sum of ceil(len / k): done once when the
    data are loaded, so every batch, the standardisation and the head see 1/k of the frames (and
    the statistics are those of the frames the head sees). Windows start at each utterance's first
    frame, so an utterance pools the same alone or in a corpus. float32 sums, stored dtype kept.
    """
    off = offsets.numpy()
    lens = np.diff(off)
    n_win = -(-lens // k)  # (N,)
    new_off = np.concatenate([[0], np.cumsum(n_win)]).astype(np.int64)
    # start row of every window, and its length
    win_utt = np.repeat(np.arange(len(lens)), n_win)
    win_pos = np.arange(new_off[-1]) - np.repeat(new_off[:-1], n_win)
    starts = off[:-1][win_utt] + win_pos * k
    sizes = np.minimum(k, off[1:][win_utt] - starts)
    window_of_row = torch.from_numpy(np.repeat(np.arange(len(starts)), sizes))  # (R,)
    out = torch.empty((len(starts), *values.shape[1:]), dtype=values.dtype)
    for a in range(0, len(starts), chunk_rows):  # bounded float32 working memory
        b = min(a + chunk_rows, len(starts))
        lo, hi = int(starts[a]), int(starts[b - 1] + sizes[b - 1])
        sums = torch.zeros((b - a, *values.shape[1:]))
        sums.index_add_(0, window_of_row[lo:hi] - a, values[lo:hi].float())  # rows in order
        size = torch.from_numpy(sizes[a:b]).float().view(-1, *[1] * (values.ndim - 1))
        out[a:b] = (sums / size).to(values.dtype)
    return out, torch.from_numpy(new_off)


class NonFiniteError(EmofuseError):
    """A loaded stream holds NaN or inf: ``stream`` and ``utterance`` (its id) say where."""

    def __init__(self, message: str, stream: str, utterance: str) -> None:
        super().__init__(message)
        self.stream = stream
        self.utterance = utterance


def check_finite(values: np.ndarray, offsets: np.ndarray | None, name: str, cache: Any) -> None:
    """A NaN or inf in a loaded stream is a one-line error naming the first utterance with one
    (a damaged cache would otherwise surface as a non-finite loss, blamed on the learning rate)."""
    rows = len(values)
    step = max(1, (1 << 24) // max(1, int(np.prod(values.shape[1:]))))  # ~16 M values per check
    for start in range(0, rows, step):
        chunk = np.asarray(values[start : start + step])
        finite = np.isfinite(chunk).reshape(len(chunk), -1).all(1)
        if finite.all():
            continue
        row = start + int(np.argmin(finite))
        utt = row if offsets is None else int(np.searchsorted(offsets, row, side="right")) - 1
        ids = list(cache.ids)
        raise NonFiniteError(
            f"cache {cache.path}: stream '{name}' of utterance {ids[utt]} holds "
            "NaN or inf values; run `emofuse verify` on the cache and extract it again (a damaged "
            "file or a diverged encoder)",
            name,
            str(ids[utt]),
        )


class TrainData:
    """Every stream a head needs for every cached utterance, in memory, with vectorised batching."""

    def __init__(
        self,
        streams: dict[str, StreamData],
        labels: Tensor,
        label_names: list[str],
        ids: Sequence[str],
        aligned: Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.streams = streams
        self.labels = labels  # (N,) int64 index into label_names
        self.label_names = label_names
        self.ids = list(ids)
        self.index = {u: i for i, u in enumerate(self.ids)}
        self.aligned = aligned if aligned is not None else torch.ones(len(self.ids), dtype=bool)
        self.device = torch.device(device)
        # rows per utterance of each ragged stream, kept on the host: a batch's padded length is
        # read here, never from offsets on the GPU (that would stall the host once per batch)
        self.host_lengths = {n: s.lengths().cpu() for n, s in streams.items() if s.ragged}
        lens = list(self.host_lengths.values())
        # padding cost proxy for bucketing: total rows over the ragged streams
        self.cost = (
            torch.stack(lens).sum(0) if lens else torch.zeros(len(self.ids), dtype=torch.long)
        )

    @classmethod
    def from_cache(
        cls,
        cache: CacheSource,
        streams: set[str],
        cfg: Any,
        device: torch.device | str = "cpu",
        mmap: bool = True,
        checksums: bool = True,
        max_lengths: Mapping[str, int] | None = None,
    ) -> TrainData:
        """Load ``streams`` from an open cache (``emofuse.cache.open_cache``) once.

        ``mmap``: map an uncompressed HDF5 cache instead of reading it (zero copy; other stores are
        read either way). Arrays go to ``device`` when it is a GPU with room for them (with
        headroom for the model), otherwise they stay in host memory and each batch is moved.
        ``checksums``: compare what is loaded with the cache's stored checksums (``Cache.check_loaded``).
        ``max_lengths``: rows kept per utterance of a ragged stream (the head's ``max_lengths``).
        """
        max_lengths = max_lengths or {}
        missing = sorted(set(streams) - set(cache.streams))
        if missing:
            s = missing[0]
            raise EmofuseError(
                f"the head needs stream '{s}' but cache {cache.path} has only "
                f"{', '.join(sorted(cache.streams))}; {advice(s) if s in STREAMS else UNKNOWN_STREAM}"
            )
        loaded: dict[str, StreamData] = {}
        for name in sorted(streams):
            layers = layers_for(name, cfg)
            values, offsets = cache.load(name, "data", layers=layers, mmap=mmap)
            if checksums:
                cache.check_loaded(name, "data", values, layers)  # against the stored checksums
            check_finite(values, offsets, name, cache)
            v = torch.from_numpy(values)  # a strided view of a memory map is fine for index_select
            fixed = getattr(cache.streams[name], "kind", None) == "fixed"
            o = (
                None
                if offsets is None or fixed
                else torch.from_numpy(np.asarray(offsets, np.int64))
            )
            if name in RAGGED_STREAMS and o is None:
                raise EmofuseError(f"cache stream '{name}' should be ragged but has no offsets")
            if o is not None and v.ndim == 2:  # (R, D) → (R, 1, D): one "layer"
                v = v[:, None, :]
            max_len = max_lengths.get(name) if o is not None else None
            k = int(getattr(cfg, "frame_pool", 1) or 1)
            if k > 1 and name in FRAME_STREAMS:
                v, o = pool_frames(v, o, k)
                max_len = None if max_len is None else -(-max_len // k)  # whole windows
            loaded[name] = StreamData(v, o, max_len)
        table = cache.table
        label_names = sorted({str(x) for x in table["label"]})
        lookup = {name: i for i, name in enumerate(label_names)}
        labels = torch.tensor([lookup[str(x)] for x in table["label"]], dtype=torch.long)
        aligned = torch.as_tensor(
            np.asarray(table.get("aligned", np.ones(len(labels))), dtype=bool)
        )
        data = cls(loaded, labels, label_names, [str(i) for i in cache.ids], aligned, "cpu")
        return data.to(resolve_device(device))

    def normalize_per_speaker(self, speakers: Sequence[str]) -> None:
        """Standardise every acoustic stream per speaker, in place: z-score each (layer, dim) with
        the mean and std over that speaker's rows (frames of ragged streams, utterances of fixed).

        Speaker normalisation is the classic speaker-independent SER step (Busso et al. 2011). It
        uses no labels, but it does use the unlabelled audio of every speaker, the test speaker of
        a fold included (transductive): a run made with it says so in config.json and report.md.
        """
        spk = np.asarray([str(s) for s in speakers])
        if len(spk) != len(self.ids):
            raise EmofuseError(f"{len(spk)} speakers for {len(self.ids)} utterances")
        for name in ACOUSTIC_STREAMS:
            s = self.streams.get(name)
            if s is None:
                continue
            if s.ragged:  # speaker of every stored row
                per_row = np.repeat(spk, np.diff(s.offsets.cpu().numpy()))
            else:
                per_row = spk
            values = s.values
            for who in np.unique(spk):
                rows = torch.from_numpy(np.flatnonzero(per_row == who)).to(values.device)
                if len(rows) == 0:
                    continue
                x = values.index_select(0, rows).float()  # (R_s, …)
                mean = x.mean(0)
                std = x.std(0, correction=0) if len(rows) > 1 else torch.ones_like(mean)
                values.index_copy_(0, rows, ((x - mean) / (std + 1e-5)).to(values.dtype))

    def stream_stats(
        self, idx: Tensor, max_rows: int = 1 << 15, chunk: int = 4096
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Per stream, the (mean, std) over its rows of utterances ``idx`` only, each (L, D) or (F,).

        Ragged streams count the rows a head sees (frames within the truncation; segments of
        aligned utterances); fixed streams one row per utterance. At most ``max_rows`` rows are
        read, evenly spaced over the selected ones (a corpus of a million frames needs no more for
        a mean and std). Sums are float64; a dimension with no spread gets std 1.
        """
        out: dict[str, tuple[Tensor, Tensor]] = {}
        idx = idx.cpu()
        for name, s in self.streams.items():
            if s.ragged:
                offsets = s.offsets.cpu()
                lens = self.host_lengths[name][idx]
                if name in SEGMENT_TIERS:
                    lens = lens * self.aligned.cpu()[idx]
                starts = offsets[idx]
                within = torch.arange(int(lens.sum())) - torch.repeat_interleave(
                    torch.cumsum(lens, 0) - lens, lens
                )
                rows = torch.repeat_interleave(starts, lens) + within  # (R_sel,)
            else:
                rows = idx
            if len(rows) > max_rows:
                rows = rows[torch.linspace(0, len(rows) - 1, max_rows).long()]
            total = torch.zeros(s.values.shape[1:], dtype=torch.float64)
            total_sq = torch.zeros_like(total)
            for a in range(0, len(rows), chunk):
                x = s.values.index_select(0, rows[a : a + chunk].to(s.values.device)).float()
                total += x.sum(0).double().cpu()
                total_sq += (x * x).sum(0).double().cpu()
            n = max(len(rows), 1)
            mean = total / n
            std = (total_sq / n - mean * mean).clamp(min=0).sqrt()
            std = torch.where(std > 1e-6, std, torch.ones_like(std))
            out[name] = (mean.float(), std.float())
        return out

    def to(self, device: torch.device) -> TrainData:
        """Move the arrays to ``device`` if they fit (GPU); batches follow ``self.device``."""
        self.device = torch.device(device)
        if self.device.type == "cuda":
            need = sum(s.values.nbytes for s in self.streams.values())
            free, _ = torch.cuda.mem_get_info(self.device)
            if need < 0.6 * free:
                for s in self.streams.values():
                    s.values = s.values.to(self.device)
                    s.offsets = None if s.offsets is None else s.offsets.to(self.device)
                self.labels = self.labels.to(self.device)
                self.aligned = self.aligned.to(self.device)
            else:  # keep on host; pinned memory makes the per-batch copy asynchronous
                for s in self.streams.values():  # dense: pinning a strided map keeps its strides
                    dense = torch.empty(s.values.shape, dtype=s.values.dtype, pin_memory=True)
                    s.values = dense.copy_(s.values)
        return self

    def dims(self) -> dict[str, tuple[int, ...]]:
        """Per-stream row shape the head will see ((L, D) or (F,))."""
        return {name: s.dims() for name, s in self.streams.items()}

    def indices(self, ids: Sequence[str]) -> Tensor:
        """Positions of ``ids`` in the data; unknown ids are a user error (plan vs cache)."""
        try:
            return torch.tensor([self.index[u] for u in ids], dtype=torch.long)
        except KeyError as err:
            raise EmofuseError(
                f"utterance {err.args[0]!r} of the fold plan is not in the cache; "
                "rebuild the plan from this cache"
            ) from None

    def targets(self, idx: Tensor) -> Tensor:
        """Label indices of rows ``idx`` (B,), on the device the labels live on."""
        return self.labels[upload(idx, self.labels.device)]

    def nbytes(self) -> int:
        """Bytes of every loaded stream (a memory-mapped one counted too: an upper bound of what
        another process loading the same streams adds)."""
        return sum(s.values.numel() * s.values.element_size() for s in self.streams.values())

    def batch(self, idx: Tensor, dtype: torch.dtype | None = torch.float32) -> dict[str, Tensor]:
        """Padded batch for rows ``idx`` (B,): stream tensors, ``<stream>_mask``, ``aligned``.

        ``dtype`` None keeps the stored dtype (fp16 rows stay fp16): the training loop lets the
        head's input pipeline convert while it standardises, one pass fewer over the batch.

        Nothing here waits for the GPU: padded lengths come from the host copy of the lengths,
        and whatever goes from host to GPU (``idx``; the gathered rows and masks when the arrays
        stay on the host) goes through pinned memory without blocking.
        """
        out: dict[str, Tensor] = {}
        idx_host = idx.cpu()
        placed: dict[torch.device, Tensor] = {}
        for name, s in self.streams.items():
            dev = s.values.device
            if dev not in placed:
                placed[dev] = upload(idx_host, dev)
            i = placed[dev]
            if not s.ragged:
                out[name] = _as(upload(s.values[i], self.device), dtype)  # (B, F)
                continue
            starts = s.offsets[i]  # (B,)
            lens = s.offsets[i + 1] - starts
            if s.max_len:
                lens = lens.clamp(max=s.max_len)
            t = max(int(self.host_lengths[name][idx_host].max()), 1)  # host: no GPU sync
            pos = torch.arange(t, device=starts.device)  # (T,)
            mask = pos[None, :] < lens[:, None]  # (B, T)
            if s.values.shape[0] == 0:  # a stream with no rows at all: the batch is all padding
                x = s.values.new_zeros((len(i), t, *s.values.shape[1:]))
            else:
                rows = torch.where(mask, starts[:, None] + pos[None, :], 0)  # (B, T); pad → row 0
                x = s.values.index_select(0, rows.reshape(-1))  # (B*T, L, D), a fresh tensor
                x = x.view(len(i), t, *s.values.shape[1:])  # (B, T, L, D)
                x.masked_fill_(~mask.view(len(i), t, *[1] * (x.ndim - 2)), 0)  # padding exactly 0
            out[name] = _as(upload(x, self.device), dtype)  # dtype converted on the device
            out[f"{name}_mask"] = upload(mask, self.device)
        if any(g in self.streams for g in SEGMENT_TIERS):
            aligned = self.aligned[upload(idx_host, self.aligned.device)]  # (B,)
            out["aligned"] = upload(aligned, self.device)
            for g in SEGMENT_TIERS:  # unaligned rows: all-False segment mask (contract §3)
                if g in out:
                    out[f"{g}_mask"] = out[f"{g}_mask"] & out["aligned"][:, None]
        return out

    def train_batches(
        self, ids_idx: Tensor, batch_size: int, generator: torch.Generator
    ) -> list[Tensor]:
        """Length-bucketed, shuffled batches for one epoch (seeded through ``generator``).

        Shuffle, sort by length inside windows of 50 batches, cut, shuffle the batch order: batches
        hold similar lengths (little padding) yet differ every epoch.
        """
        perm = ids_idx[torch.randperm(len(ids_idx), generator=generator)]
        window = batch_size * 50
        batches: list[Tensor] = []
        for w in range(0, len(perm), window):
            chunk = perm[w : w + window]
            chunk = chunk[torch.argsort(self.cost[chunk], stable=True)]
            batches += list(torch.split(chunk, batch_size))
        order = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in order]

    def eval_batches(self, ids_idx: Tensor, batch_size: int) -> Iterator[Tensor]:
        """Length-sorted batches (deterministic); callers scatter results back by index."""
        ordered = ids_idx[torch.argsort(self.cost[ids_idx], stable=True)]
        yield from torch.split(ordered, batch_size)


def _as(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    return t if dtype is None else t.to(dtype)


def upload(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``; host to GPU through pinned memory, so the host does not wait.

    (A copy from pageable memory makes the host wait for the GPU; the caching host allocator
    keeps the pinned block until its copy is done.)
    """
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
