"""Whisper ASR through faster-whisper (CTranslate2), batched over utterances.

faster-whisper's own `transcribe` works on one recording at a time (its batched pipeline batches the
VAD chunks of ONE long file). A corpus is thousands of short clips, so clips up to Whisper's 30 s
window are batched here directly on the CTranslate2 model: log-mel features padded to the window,
one `encode`, one language detection (multilingual models, when no language is given) and one
beam-search `generate` per batch, prompted exactly as faster-whisper prompts a window without
timestamps. Longer clips go through faster-whisper's sequential long-form `transcribe`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emofuse.audio import SAMPLE_RATE
from emofuse.errors import EmofuseError

WINDOW_S = 30.0
HOW_TO = (
    "give a local faster-whisper folder with --asr-model DIR (CTranslate2 files model.bin, config.json,"
    " tokenizer.json; e.g. made with `ct2-transformers-converter --model openai/whisper-base"
    " --output_dir DIR --copy_files tokenizer.json preprocessor_config.json`)"
)


@dataclass
class AsrOutput:
    text: str
    language: str


def _file_hash(path: Path, limit: int = 1 << 26) -> str:
    """sha256 of the first 64 MiB and the size: identifies weights without reading GBs."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(limit))
    return f"{h.hexdigest()[:16]}-{path.stat().st_size}"


class AsrModel:
    """A loaded faster-whisper model; `transcribe(wavs)` returns one AsrOutput per waveform."""

    def __init__(self, model, name: str, revision: str, device: str, compute_type: str):
        self.fw = model
        self.model_id = name
        self.revision = revision
        self.device = device
        self.compute_type = compute_type

    @property
    def multilingual(self) -> bool:
        return bool(self.fw.model.is_multilingual)

    def transcribe(
        self,
        wavs: Sequence[np.ndarray],
        language: str | None = None,
        beam_size: int = 5,
    ) -> list[AsrOutput]:
        """Transcripts of 16 kHz mono float32 waveforms (one batch for all clips ≤ 30 s)."""
        out: list[AsrOutput | None] = [None] * len(wavs)
        short = [i for i, w in enumerate(wavs) if len(w) <= WINDOW_S * SAMPLE_RATE]
        if short:
            for i, o in zip(
                short, self._batch([wavs[i] for i in short], language, beam_size), strict=True
            ):
                out[i] = o
        for i in (i for i in range(len(wavs)) if out[i] is None):
            segments, info = self.fw.transcribe(
                wavs[i], language=language, beam_size=beam_size, vad_filter=False
            )
            text = " ".join(s.text.strip() for s in segments).strip()
            out[i] = AsrOutput(text, info.language)
        return out  # type: ignore[return-value]

    def _batch(
        self, wavs: list[np.ndarray], language: str | None, beam_size: int
    ) -> list[AsrOutput]:
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        fe = self.fw.feature_extractor
        window = fe.nb_max_frames  # 3000 frames of 10 ms
        feats = []
        for w in wavs:
            f = fe(np.asarray(w, np.float32))  # (n_mels, T)
            f = f[:, :window]
            feats.append(np.pad(f, ((0, 0), (0, window - f.shape[1]))))
        batch = np.ascontiguousarray(np.stack(feats), dtype=np.float32)  # (B, n_mels, 3000)
        encoded = self.fw.model.encode(ctranslate2.StorageView.from_array(batch))
        if not self.multilingual:
            langs = ["en"] * len(wavs)
        elif language is not None:
            langs = [language] * len(wavs)
        else:
            detected = self.fw.model.detect_language(encoded)  # per clip [(token, prob), …]
            langs = [d[0][0][2:-2] for d in detected]
        prompts, tokenizers = [], []
        for lang in langs:
            tok = Tokenizer(
                self.fw.hf_tokenizer, self.multilingual, task="transcribe", language=lang
            )
            tokenizers.append(tok)
            prompts.append([*tok.sot_sequence, tok.no_timestamps])
        results = self.fw.model.generate(
            encoded,
            prompts,
            beam_size=beam_size,
            max_length=self.fw.max_length,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        return [
            AsrOutput(tok.decode([t for t in r.sequences_ids[0] if t < tok.eot]).strip(), lang)
            for tok, r, lang in zip(tokenizers, results, langs, strict=True)
        ]


def _short(message: str, limit: int = 160) -> str:
    """A library's message cut to ``limit`` characters at a word boundary (marked with …)."""
    message = " ".join(message.split())
    if len(message) <= limit:
        return message
    return message[:limit].rsplit(" ", 1)[0] + " …"


def load_asr_model(
    name_or_path: str,
    device: str = "auto",
    compute_type: str = "default",
    cpu_threads: int = 0,
) -> AsrModel:
    """A faster-whisper model by name (downloaded once by faster-whisper) or a local folder."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise EmofuseError(
            "ASR needs faster-whisper: pip install faster-whisper (or reinstall emofuse)"
        ) from None
    path = Path(name_or_path).expanduser()
    local = path.is_dir()
    if not local and (path.suffix or "/" in name_or_path or name_or_path.startswith(".")):
        raise EmofuseError(f"ASR model folder {path} does not exist: {HOW_TO}")
    if local and not (path / "model.bin").is_file():
        raise EmofuseError(
            f"ASR model folder {path} has no model.bin (not a CTranslate2 model): {HOW_TO}"
        )
    try:
        model = WhisperModel(
            str(path) if local else name_or_path,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
        )
    except ValueError as err:
        msg = str(err).splitlines()[0] if str(err) else "ValueError"
        if "compute type" in msg.lower() or "device" in msg.lower():  # CTranslate2's own checks
            raise EmofuseError(
                f"ASR model {name_or_path}: {msg} — check --device/--compute-type"
            ) from None
        raise EmofuseError(
            f"ASR model {name_or_path!r} cannot be loaded ({_short(msg)}); {HOW_TO}"
        ) from None
    except Exception as err:  # noqa: BLE001 - hub, network, file format: all the same to a user
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if local and "binary version" in reason:  # CTranslate2 reads a garbage header so
            raise EmofuseError(
                f"ASR model {name_or_path!r}: {path / 'model.bin'} is not a CTranslate2 model file "
                f"(damaged, or another format); copy it again — {HOW_TO}"
            ) from None
        what = "cannot be loaded" if local else "is not a local folder and could not be downloaded"
        raise EmofuseError(
            f"ASR model {name_or_path!r} {what} ({_short(reason)}); {HOW_TO}"
        ) from None
    revision = _file_hash(path / "model.bin") if local else "hub"
    return AsrModel(model, str(path) if local else name_or_path, revision, device, compute_type)
