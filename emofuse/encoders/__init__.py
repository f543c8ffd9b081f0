"""Frozen encoders used by extract and predict (contract: docs/architecture.md section 4).

All take 16 kHz mono float32 numpy waveforms / raw strings and run under ``torch.inference_mode()``;
batched output equals one-at-a-time output. ``build_tiny_models`` makes tiny random models of the real
classes for tests and the demo (no model hub is needed).
"""

from emofuse.encoders.fbank import FbankEncoder
from emofuse.encoders.speaker import DEFAULT_SPEAKER_MODEL, SpeakerEncoder, load_speaker_encoder
from emofuse.encoders.speech import SpeechEncoder, SSLSpeechEncoder, load_speech_encoder
from emofuse.encoders.text import TextEncoder, TextOut, load_text_encoder
from emofuse.encoders.tiny import SPEECH_FAMILIES, TinyModels, build_tiny_models
from emofuse.encoders.whisper import WhisperSpeechEncoder

DEFAULT_SPEECH_MODEL = "facebook/hubert-large-ll60k"
DEFAULT_TEXT_MODEL = "bert-base-uncased"

__all__ = [
    "DEFAULT_SPEAKER_MODEL",
    "DEFAULT_SPEECH_MODEL",
    "DEFAULT_TEXT_MODEL",
    "SPEECH_FAMILIES",
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
]
