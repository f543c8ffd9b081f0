"""Helpers the test areas share (fixtures stay in each area's conftest.py): generated head batches,
an in-memory cache with the reader API, manifest files, the shared extract arguments."""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from emofuse.heads.base import InputDims

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]  # the repository (children get it on PYTHONPATH)

# --------------------------------------------------------------------------------- heads: batches
RAGGED = ("speech", "text", "phone", "syllable", "word", "fbank")

DIMS = InputDims(
    speech=(3, 32),
    text=(2, 24),
    speaker=16,
    phone=(3, 32),
    syllable=(3, 32),
    word=(3, 32),
    fbank=(1, 20),
    speech_mean=(3, 32),
    speech_std=(3, 32),
)


def make_batch(
    dims: InputDims,
    speech_lens: list[int],
    text_lens: list[int],
    seg_lens: list[int] | None = None,
    aligned: list[bool] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A padded batch whose padding is loud noise, so any leak of padding shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    b = len(speech_lens)
    seg_lens = seg_lens if seg_lens is not None else [max(1, n // 3) for n in speech_lens]
    aligned = aligned if aligned is not None else [True] * b
    lengths = {"speech": speech_lens, "fbank": speech_lens, "text": text_lens}
    for gran in ("phone", "syllable", "word"):
        lengths[gran] = seg_lens
    batch: dict[str, torch.Tensor] = {}
    for stream, lens in lengths.items():
        if getattr(dims, stream) is None:
            continue
        layers, width = dims.get(stream)
        t = max(max(lens), 1)
        mask = torch.arange(t)[None, :] < torch.tensor(lens)[:, None]  # (B, T)
        real = torch.randn(b, t, layers, width, generator=g)
        noise = 50.0 * torch.randn(b, t, layers, width, generator=g)
        batch[stream] = torch.where(mask[:, :, None, None], real, noise)
        batch[f"{stream}_mask"] = mask
    if dims.speaker is not None:
        batch["speaker"] = torch.randn(b, dims.speaker[1], generator=g)
    for stat in ("speech_mean", "speech_std"):  # fixed (B, L, D): no mask
        if getattr(dims, stat) is not None:
            batch[stat] = torch.randn(b, *dims.get(stat), generator=g).abs_()
    batch["aligned"] = torch.tensor(aligned)
    return batch


def single(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """Utterance i alone, cut to its real rows (what it looks like batched with nothing longer)."""
    out = {}
    for key, value in batch.items():
        if key in RAGGED:
            n = int(batch[f"{key}_mask"][i].sum())
            out[key] = value[i : i + 1, :n]
            out[f"{key}_mask"] = batch[f"{key}_mask"][i : i + 1, :n]
        elif not key.endswith("_mask"):
            out[key] = value[i : i + 1]
    return out


def max_padding_diff(head: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Largest |logit difference| between each utterance batched and alone (eval mode)."""
    head.eval()
    with torch.no_grad():
        together = head(batch)  # (B, C)
        b = together.shape[0]
        alone = torch.cat([head(single(batch, i)) for i in range(b)])  # (B, C)
    return float((together - alone).abs().max())


def overfit(
    head: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
    steps: int = 300,
    lr: float = 1e-3,
    target: float = 0.05,
) -> tuple[float, int]:
    """Train on one batch until the loss falls below ``target``; (last loss, steps used)."""
    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    loss = torch.tensor(float("inf"))
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss = F.cross_entropy(head(batch), labels)
        loss.backward()
        opt.step()
        if loss.item() < target:
            return loss.item(), step
    return loss.item(), steps


def params_without_grad(head: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[str]:
    """Names of trainable parameters that one backward pass leaves without a non-zero gradient."""
    head.train()
    head.zero_grad()
    logits = head(batch)
    F.cross_entropy(logits, torch.arange(logits.shape[0]) % logits.shape[1]).backward()
    return [
        name
        for name, p in head.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]


# ------------------------------------------------------------------------ train: an in-memory cache
TINY_HEAD = str(ROOT / "tests" / "train" / "tiny_head.py") + ":TinyHead"
LABELS = ("ang", "hap", "neu", "sad")


@dataclass
class FakeStream:
    kind: str
    attrs: dict = field(default_factory=dict)


class FakeCache:
    """The reader API of docs/architecture.md §2 over numpy arrays (no file).

    Each label shifts the speech/text means in its own direction, so a working loop learns it and
    a broken one (labels shuffled against features) does not.
    """

    def __init__(
        self, n_per_speaker: int = 12, seed: int = 0, streams=("speech", "text", "speaker")
    ):
        rng = np.random.default_rng(seed)
        rows = []
        for s in range(1, 6):
            for letter in "FM":
                for i in range(n_per_speaker):
                    rows.append((f"Ses0{s}_{letter}_{i:03d}", f"Ses0{s}_{letter}", f"Ses0{s}"))
        n = len(rows)
        labels = np.array([LABELS[i % 4] for i in rng.permutation(n)], dtype=object)
        self.ids = [r[0] for r in rows]
        self.table = {
            "id": np.array(self.ids, dtype=object),
            "speaker": np.array([r[1] for r in rows], dtype=object),
            "session": np.array([r[2] for r in rows], dtype=object),
            "label": labels,
            "split": np.array(["train"] * n, dtype=object),
            "aligned": np.ones(n, dtype=bool),
        }
        self.fingerprint = f"fake-{seed}-{n_per_speaker}"
        self.path = "fake.h5"
        self.settings: dict = {}
        y = np.array([LABELS.index(x) for x in labels])
        direction = rng.normal(size=(4, 8)).astype(np.float32)
        self.arrays: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.streams: dict[str, FakeStream] = {}
        lens = rng.integers(3, 20, size=n)
        if "speech" in streams:
            offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
            data = rng.normal(size=(offsets[-1], 3, 8)).astype(np.float32)
            data += np.repeat(direction[y], lens, axis=0)[:, None, :]
            self.arrays["speech"] = (data.astype(np.float16), offsets)
            self.streams["speech"] = FakeStream("ragged", {"layers": [0, 1, 2]})
        if "text" in streams:
            tl = rng.integers(2, 9, size=n)
            offsets = np.concatenate([[0], np.cumsum(tl)]).astype(np.int64)
            data = rng.normal(size=(offsets[-1], 2, 6)).astype(np.float32)
            data += 0.5 * np.repeat(direction[y][:, :6], tl, axis=0)[:, None, :]
            self.arrays["text"] = (data.astype(np.float16), offsets)
            self.streams["text"] = FakeStream("ragged", {"layers": [0, 1]})
        if "speech_mean" in streams:  # what extract writes: per-layer mean over the frames
            values, offsets = self.arrays["speech"]
            means = np.stack(
                [
                    values[a:b].astype(np.float32).mean(0)
                    for a, b in zip(offsets[:-1], offsets[1:], strict=True)
                ]
            )
            self.arrays["speech_mean"] = (means.astype(np.float16), None)
            self.streams["speech_mean"] = FakeStream("fixed", {"layers": [0, 1, 2]})
        if "speaker" in streams:
            self.arrays["speaker"] = (rng.normal(size=(n, 4)).astype(np.float16), None)
            self.streams["speaker"] = FakeStream("fixed")
        self.loads: list[tuple[str, list[int] | None]] = []

    def check_loaded(self, stream, array, values, layers) -> None:
        pass  # no stored checksums in memory

    def load(self, stream, array="data", layers=None, ids=None, mmap=False):
        self.loads.append((stream, layers))
        values, offsets = self.arrays[stream]
        if layers is not None:
            pos = [self.streams[stream].attrs["layers"].index(x) for x in layers]
            values = values[:, pos]
        return values, offsets


def write_five_session_cache(path: Path, seed: int = 0, n: int = 40, fbank: bool = False) -> None:
    """tests/cache/cache_synth's utterances spread over 5 sessions, one speaker each (loso: 5 folds,
    more than `--jobs 2` hands out at once). ``fbank``: with a log-mel stream (two 5-mel frames per
    speech frame), as `extract --fbank` writes it (TDFNet's "w/o ME" reads it)."""
    from emofuse.cache import CacheWriter, ragged
    from tests.cache.cache_synth import SETTINGS, specs, utterance

    streams = specs() + ([ragged("fbank", {"data": ("float16", (1, 5))}, frame_rate=100.0)]
                         if fbank else [])  # fmt: skip
    writer = CacheWriter(path, settings=SETTINGS, streams=streams, progress=False)
    ids = []
    for i in range(n):
        meta, data = utterance(i, seed)
        session = f"Ses0{i % 5 + 1}"
        meta = {**meta, "id": f"{session}_utt{i:03d}", "session": session, "speaker": f"spk{i % 5}"}
        if fbank:
            frames = 2 * len(data["speech"]["data"])
            data["fbank"] = {
                "data": np.random.default_rng([seed, i, 1]).normal(size=(frames, 1, 5))
            }
        writer.add(meta, data)
        ids.append(meta["id"])
    writer.close(order=ids)


# -------------------------------------------------------------------------------- asr: manifests
def write_manifest(path: Path, utts, text=lambda u: u.text) -> Path:
    """A manifest of `utts` (absolute audio paths) with text chosen by `text`."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "audio", "text", "label", "speaker"])
        for u in utts:
            w.writerow([u.id, str(u.audio), text(u), u.label, u.speaker])
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- extract: arguments
LIMIT = 16  # utterances extracted by the shared-settings runs (keeps the subprocess tests short)


def extract_args(corpus_root: Path, tiny, out: Path, *extra: str) -> list[str]:
    """The `emofuse extract` arguments every stream test shares (so their digests compare)."""
    return [
        "extract",
        "--corpus", "iemocap",
        "--root", str(corpus_root),
        "--out", str(out),
        "--speech-model", str(tiny.speech["hubert"]),
        "--text-model", str(tiny.text),
        "--speaker-model", str(tiny.speaker),
        "--fbank",
        "--batch-seconds", "4",
        "--limit", str(LIMIT),
        "--quiet",
        *extra,
    ]  # fmt: skip
