"""One decoded batch through every model → the cache rows of its utterances (meta + stream arrays)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from emofuse.audio import SAMPLE_RATE, AudioProblem, load_audio
from emofuse.corpus import Utterance
from emofuse.encoders.common import half
from emofuse.extract.config import ExtractConfig, Models
from emofuse.extract.values import check_values
from emofuse.segments import pool_utterances, tier_to_spans
from emofuse.streams import SEGMENT_TIERS


@dataclass
class Decoded:
    utt: Utterance
    wav: np.ndarray | None = None  # 16 kHz mono float32 (padded to the model minimum if short)
    duration: float = 0.0  # seconds of real audio
    sha1: str = ""  # of the audio file's bytes
    flags: list[str] = field(default_factory=list)
    problem: str | None = None


def decode(utt: Utterance, min_samples: int) -> Decoded:
    try:
        dec = load_audio(utt.audio)
    except AudioProblem as err:
        return Decoded(utt, problem=str(err))
    out = Decoded(utt, dec.wav, len(dec.wav) / SAMPLE_RATE, dec.sha1)
    if dec.source_rate != SAMPLE_RATE:
        out.flags.append(f"resampled:{dec.source_rate}")
    if dec.channels > 1:
        out.flags.append(f"downmixed:{dec.channels}")
    if len(dec.wav) < min_samples:
        out.wav = np.pad(dec.wav, (0, min_samples - len(dec.wav)))
        out.flags.append("padded")
    return out


def pick_layers(x: torch.Tensor, index: list[int], every: int, dim: int) -> torch.Tensor:
    """``x`` restricted to ``index`` along ``dim``; no copy when every position is kept."""
    if list(index) == list(range(every)):
        return x
    return x.index_select(dim, torch.as_tensor(index, device=x.device))


def to_host(tensors: list[torch.Tensor]) -> list[np.ndarray]:
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


class RowBuilder:
    """Runs one decoded batch through every model and builds the per-utterance cache rows."""

    def __init__(self, cfg: ExtractConfig, models: Models, layers: list[int], text_layers):
        self.cfg, self.models, self.layers, self.text_layers = cfg, models, layers, text_layers
        self.tiers = [g for g in SEGMENT_TIERS if g in cfg.granularity] if models.speech else []

    def __call__(self, batch: list[Decoded]) -> list[tuple[dict, dict]]:
        m = self.models
        wavs = [d.wav for d in batch]
        data: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in batch]
        n_frames = [0] * len(batch)
        if m.speech is not None:
            # per utt (T_i, L_all, D) float16, as stored: each state goes into the host tensor in
            # the storage dtype (no float32 copy of every layer, no second conversion pass)
            frames = m.speech.encode(wavs, out_dtype=torch.float16)
            n_frames = [f.shape[0] for f in frames]
            self._speech(frames, batch, data)
        if m.text is not None:
            outs = m.text.encode([d.utt.model_text for d in batch])
            every = m.text.num_layers
            states = to_host(
                [half(pick_layers(o.states, self.text_layers, every, 1)) for o in outs]
            )  # (N, Lt, Dt)
            for row, o, s in zip(data, outs, states, strict=True):
                row["text"] = {"data": s, "word_ids": np.asarray(o.word_ids, np.int32)}
        if m.speaker is not None:
            vec = half(m.speaker.encode(wavs).reshape(len(batch), -1))  # (B, 192)
            for row, v in zip(data, to_host(list(vec)), strict=True):
                row["speaker"] = {"data": v}
        if m.fbank is not None:
            for row, fb in zip(data, to_host([half(f) for f in m.fbank.encode(wavs)]), strict=True):
                row["fbank"] = {"data": fb}  # (T, 1, 80)
        truncated = (
            [bool(o.truncated) for o in outs] if m.text is not None else [False] * len(batch)
        )
        for d, row in zip(batch, data, strict=True):  # NaN or a wrong scale: never stored
            check_values(d.utt.id, row, self.cfg.dtype)
        return [
            (self._meta(d, n, t), row)
            for d, n, t, row in zip(batch, n_frames, truncated, data, strict=True)
        ]

    def _speech(self, frames: list[torch.Tensor], batch: list[Decoded], data: list[dict]) -> None:
        every = self.models.speech.num_layers
        sel = [pick_layers(f, self.layers, every, 1) for f in frames]  # (T_i, L, D)
        # (L_all, D) each, over the stored float16 values (the reduction accumulates in float32)
        stats = [torch.std_mean(f, dim=0, correction=0) for f in frames]
        host = to_host(
            [half(s) for s in sel] + [half(m) for _, m in stats] + [half(s) for s, _ in stats]
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
            for row, s, p in zip(data, spans, to_host([half(p) for p in pooled]), strict=True):
                row[tier] = {
                    "data": p,
                    "spans": s.spans,
                    "symbols": np.asarray(s.symbols, dtype=object),
                }

    def _meta(self, d: Decoded, n_frames: int, truncated: bool) -> dict:
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
    """The table fields that come from the corpus reader (not from decoding or the models); an
    aligned utterance's ``extra`` holds the SHA-1 of its tiers, so a resume after its alignment
    changed is refused like one after its text changed (its word spans were kept stale)."""
    extra = dict(u.extra)
    if u.tiers:
        import hashlib

        from emofuse.cache.schema import canonical_json

        extra["alignment_sha1"] = hashlib.sha1(canonical_json(u.tiers)).hexdigest()
    return {
        "speaker": u.speaker,
        "session": u.session or "",
        "gender": u.gender or "",
        "label": u.label,
        "text": u.text,
        "text_norm": u.model_text,
        "aligned": u.aligned,
        "split": u.split or "",
        "extra": extra,
    }
