"""Frozen encoders used by extract and predict (contract: docs/architecture.md section 4).

All take 16 kHz mono float32 numpy waveforms / raw strings and run under ``torch.inference_mode()``;
batched output equals one-at-a-time output. ``build_tiny_models`` makes tiny random models of the real
classes for tests and the demo (no model hub is needed).

The names below are imported on first use (PEP 562): importing one submodule (extract needs
speech + text) does not pay for the others — ``tiny`` alone pulls in five model families of
transformers, seconds of start-up on a busy 2-core machine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

DEFAULT_SPEECH_MODEL = "facebook/hubert-large-ll60k"
DEFAULT_TEXT_MODEL = "bert-base-uncased"

_LAZY = {
    "FbankEncoder": "fbank",
    "DEFAULT_SPEAKER_MODEL": "speaker",
    "SpeakerEncoder": "speaker",
    "load_speaker_encoder": "speaker",
    "SpeechEncoder": "speech",
    "SSLSpeechEncoder": "wav2vec2",
    "SPEECH_FAMILIES": "families",
    "load_speech_encoder": "families",
    "register_speech_family": "families",
    "TextEncoder": "text",
    "TextOut": "text",
    "load_text_encoder": "text",
    "TINY_SPEECH_FAMILIES": "tiny",
    "TinyModels": "tiny",
    "build_tiny_models": "tiny",
    "WhisperSpeechEncoder": "whisper",
}

if TYPE_CHECKING:  # static tools see the eager imports
    from emofuse.encoders.families import (
        SPEECH_FAMILIES,
        load_speech_encoder,
        register_speech_family,
    )
    from emofuse.encoders.fbank import FbankEncoder
    from emofuse.encoders.speaker import (
        DEFAULT_SPEAKER_MODEL,
        SpeakerEncoder,
        load_speaker_encoder,
    )
    from emofuse.encoders.speech import SpeechEncoder
    from emofuse.encoders.text import TextEncoder, TextOut, load_text_encoder
    from emofuse.encoders.tiny import TINY_SPEECH_FAMILIES, TinyModels, build_tiny_models
    from emofuse.encoders.wav2vec2 import SSLSpeechEncoder
    from emofuse.encoders.whisper import WhisperSpeechEncoder


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "DEFAULT_SPEAKER_MODEL",
    "DEFAULT_SPEECH_MODEL",
    "DEFAULT_TEXT_MODEL",
    "SPEECH_FAMILIES",
    "TINY_SPEECH_FAMILIES",
    "FbankEncoder",
    "SSLSpeechEncoder",
    "SpeakerEncoder",
    "SpeechEncoder",
    "TextEncoder",
    "TextOut",
    "TinyModels",
    "WhisperSpeechEncoder",
    "build_tiny_models",
    "load_speaker_encoder",
    "load_speech_encoder",
    "load_text_encoder",
    "register_speech_family",
]
