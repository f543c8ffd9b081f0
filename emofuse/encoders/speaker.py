"""Frozen SpeechBrain speaker encoder (ECAPA-TDNN, 192-d) through ``EncoderClassifier.from_hparams``.

A local folder in SpeechBrain's layout (hyperparams.yaml with a ``pretrained_path`` key and a
Pretrainer, plus the ``*.ckpt`` state dicts) loads fully offline with ``overrides={"pretrained_path":
folder}`` so the Pretrainer reads the weights from the folder instead of the hub.

Padding-consistent batching: SpeechBrain's ECAPA is not padding invariant even with relative lengths
(its dilated Res2Net convolutions reflect-pad at the sequence edge and reach ~65 frames back, so a
shorter utterance's last ~0.65 s sees the padding's silence features). Measured on the tiny ECAPA: batching lengths 10 % apart moved vectors by 0.7 (max abs,
norm ~1). So by default only utterances of identical length share a forward pass (``max_length_ratio
= 1.0``), which makes batched output equal one-at-a-time output; a ratio > 1 trades exactness for speed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from emofuse.encoders.common import (
    SAMPLE_RATE,
    as_device,
    check_folder,
    is_local,
    load_error,
    model_revision,
    to_device,
)
from emofuse.errors import EmofuseError

OPTION = "--speaker-model"
DEFAULT_SPEAKER_MODEL = "speechbrain/spkrec-ecapa-voxceleb"


class SpeakerEncoder:
    """One vector per utterance from a SpeechBrain EncoderClassifier (see architecture.md §4)."""

    def __init__(
        self,
        classifier,
        model_id: str,
        revision: str,
        device: torch.device,
        max_batch_seconds: float = 120.0,
        max_length_ratio: float = 1.0,
    ):
        self.classifier = classifier
        self.model_id = model_id
        self.revision = revision
        self.device = device
        self.max_batch_samples = int(max_batch_seconds * SAMPLE_RATE)
        self.max_length_ratio = max_length_ratio
        self.min_samples = 400  # one 25 ms Fbank window; raised by _shortest() below
        self.min_samples = self._shortest()
        self.dim = int(self.encode([np.zeros(SAMPLE_RATE // 2, np.float32)]).shape[1])

    def _shortest(self) -> int:
        """Fewest samples the model accepts: its reflect-padded convolutions need more frames
        than their padding (ECAPA's dilation-4 kernel-3 layers: 5 frames = 640 samples at a 10 ms
        hop), or SpeechBrain fails inside F.pad. Estimated from the layers, then confirmed by a
        forward pass (stepping up one hop while it fails), so the pipeline pads short clips to
        a length that works."""
        mods = getattr(self.classifier, "mods", None)
        features = (
            mods["compute_features"] if mods is not None and "compute_features" in mods else None
        )
        hop = int(getattr(getattr(features, "compute_STFT", None), "hop_length", 160) or 160)
        frames = 1
        for m in (mods if mods is not None else self.classifier).modules():
            if (
                getattr(m, "padding_mode", None) == "reflect"
                and getattr(m, "padding", "") == "same"
            ):
                k, d = int(getattr(m, "kernel_size", 1)), int(getattr(m, "dilation", 1))
                frames = max(frames, d * (k - 1) // 2 + 1)  # pad per side < frames
        need = max(self.min_samples, (frames - 1) * hop)  # center=True STFT: n // hop + 1 frames
        for n in range(need, SAMPLE_RATE + 1, hop):
            try:
                self._forward([np.zeros(n, np.float32)])
                return n
            except RuntimeError:
                continue
        return need  # nothing short works: encode() reports what it gets

    def _forward(self, arrays: list[np.ndarray]) -> torch.Tensor:
        lengths = [len(a) for a in arrays]
        rows: list[torch.Tensor | None] = [None] * len(arrays)
        with torch.inference_mode():
            for group in self._groups(lengths):
                longest = lengths[group[0]]
                padded = torch.zeros(len(group), longest)  # (B, N)
                for row, idx in enumerate(group):
                    padded[row, : lengths[idx]] = torch.from_numpy(arrays[idx])
                rel_lens = torch.tensor([lengths[idx] / longest for idx in group])  # (B,)
                emb = self.classifier.encode_batch(
                    to_device(padded, self.device), to_device(rel_lens, self.device)
                )  # (B, 1, F)
                emb = emb.reshape(len(group), -1).to("cpu", torch.float32)  # (B, F)
                for row, idx in enumerate(group):
                    rows[idx] = emb[row]
        return torch.stack(rows)  # type: ignore[arg-type]

    def _groups(self, lengths: list[int]) -> list[list[int]]:
        """Length-sorted groups whose lengths differ by at most max_length_ratio, within budget."""
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        groups: list[list[int]] = []
        for idx in order:
            if groups:
                head = lengths[groups[-1][0]]
                fits = (len(groups[-1]) + 1) * head <= self.max_batch_samples
                if fits and head <= lengths[idx] * self.max_length_ratio:
                    groups[-1].append(idx)
                    continue
            groups.append([idx])
        return groups

    def encode(self, wavs: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, dim) float32 on CPU, in the order given."""
        arrays = []
        for i, wav in enumerate(wavs):
            arr = np.asarray(wav, dtype=np.float32)
            if arr.ndim != 1 or arr.shape[0] < self.min_samples:
                raise EmofuseError(
                    f"speaker model {self.model_id}: waveform {i} has shape {arr.shape}; pass 16 kHz "
                    f"mono 1-D arrays of at least {self.min_samples} samples"
                )
            arrays.append(arr)
        if not arrays:
            return torch.zeros(0, getattr(self, "dim", 0))
        return self._forward(arrays)


def _refuse_transformers_model(name: str) -> None:
    """A transformers folder (speech or text) given as the speaker model: SpeechBrain fails on
    its missing hyperparams.yaml; say what the folder is and where it goes instead."""
    import json

    folder = Path(name).expanduser()
    if not is_local(name) or (folder / "hyperparams.yaml").is_file():
        return
    try:
        kind = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return  # no readable config: the loader says what is wrong
    if not kind:
        return
    from emofuse.encoders.families import SPEECH_FAMILIES

    what, option = (
        ("speech", "--speech-model") if kind in SPEECH_FAMILIES else ("text", "--text-model")
    )
    raise EmofuseError(
        f"{OPTION} {name} is a transformers {what} model (model type {kind!r}), not a SpeechBrain "
        f"speaker model: give it as {option}, and a SpeechBrain folder (hyperparams.yaml, "
        f"embedding_model.ckpt) as {OPTION}"
    )


def load_speaker_encoder(
    name_or_path: str | Path = DEFAULT_SPEAKER_MODEL,
    device: str | torch.device = "cpu",
    savedir: str | Path | None = None,
    max_length_ratio: float = 1.0,
) -> SpeakerEncoder:
    """Load a SpeechBrain EncoderClassifier from a hub id or a local folder in SpeechBrain's layout."""
    name = str(name_or_path)
    check_folder(name, OPTION)
    _refuse_transformers_model(name)
    device = as_device(device)
    local = is_local(name)
    try:
        from speechbrain.inference.classifiers import EncoderClassifier
        from speechbrain.utils.fetching import LocalStrategy

        logging.getLogger("speechbrain").setLevel(logging.WARNING)
        kwargs: dict = {"savedir": str(savedir) if savedir is not None else None}
        if local:
            folder = str(Path(name).expanduser().resolve())
            # weights straight from the folder: no hub, no copies or links in a savedir (a file
            # already there was used in place of the folder's: another model's vectors)
            kwargs["overrides"] = {"pretrained_path": folder}
            kwargs["local_strategy"] = LocalStrategy.NO_LINK
            kwargs["savedir"] = None
            source = folder
        else:
            source = name
        classifier = EncoderClassifier.from_hparams(
            source=source, run_opts={"device": str(device)}, **kwargs
        )
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot load this model"
        raise load_error("speaker", name, OPTION, exc) from exc
    if classifier is None or not hasattr(classifier, "encode_batch"):
        raise EmofuseError(f"{OPTION} {name}: not a SpeechBrain EncoderClassifier folder")
    rate = getattr(getattr(classifier, "hparams", None), "sample_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:  # it would be fed 16 kHz audio as if it were its own rate
        raise EmofuseError(
            f"{OPTION} {name}: its hyperparams.yaml says sample_rate {rate}, but emofuse feeds "
            f"{SAMPLE_RATE} Hz audio (every file is resampled to it): give a "
            f"{SAMPLE_RATE // 1000} kHz speaker model"
        )
    classifier.eval()
    revision = model_revision(name, Path(source) if local else _hub_dir(name))
    return SpeakerEncoder(classifier, name, revision, device, max_length_ratio=max_length_ratio)


def _hub_dir(name: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(name, "hyperparams.yaml")
    except Exception:  # noqa: BLE001 - no cache entry: revision stays unknown
        return None
    return Path(path).parent if isinstance(path, str) else None
