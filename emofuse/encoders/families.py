"""The speech encoder families: a registry from a checkpoint's ``model_type`` to its loader.

Adding a family is one module (a ``SpeechEncoder`` subclass and a loader with the signature of
``SpeechLoader``) plus one line in ``SPEECH_FAMILIES``; code outside the package (a plugin, a test)
calls ``register_speech_family`` instead. ``load_speech_encoder`` reads the model type from the
checkpoint's config.json (a local folder) or transformers' AutoConfig (a hub id), so a family need
not be one transformers knows.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from emofuse.encoders.common import as_device, as_dtype, check_folder, load_error
from emofuse.encoders.speech import OPTION, SpeechEncoder
from emofuse.errors import EmofuseError

# (name or path, device, dtype, padded seconds per forward pass) -> encoder; raises EmofuseError
SpeechLoader = Callable[[str, torch.device, torch.dtype, float], SpeechEncoder]

_WAV2VEC2 = "emofuse.encoders.wav2vec2:load_wav2vec2_family"
# model_type -> loader, or "module:function" imported on first use (each family's transformers
# model classes take seconds to import on a busy machine: only the family asked for pays)
SPEECH_FAMILIES: dict[str, str | SpeechLoader] = {
    "wav2vec2": _WAV2VEC2,
    "hubert": _WAV2VEC2,
    "wavlm": _WAV2VEC2,
    "data2vec-audio": _WAV2VEC2,
    "whisper": "emofuse.encoders.whisper:load_whisper_encoder",
}


def register_speech_family(model_type: str, loader: str | SpeechLoader) -> None:
    """Make ``load_speech_encoder`` load checkpoints whose config says ``model_type`` with ``loader``."""
    SPEECH_FAMILIES[model_type] = loader


def _loader(entry: str | SpeechLoader) -> SpeechLoader:
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        return getattr(importlib.import_module(module), name)
    return entry


def default_batch_seconds(device: torch.device) -> float:
    return 300.0 if device.type == "cuda" else 60.0


def model_type_of(name: str) -> str | None:
    """The ``model_type`` a checkpoint's config declares; EmofuseError when there is no config."""
    config = Path(name) / "config.json"
    try:
        if config.is_file():
            return json.loads(config.read_text(encoding="utf-8")).get("model_type")
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(name), "model_type", None)
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot load this model"
        raise load_error("speech", name, OPTION, exc) from exc


def load_speech_encoder(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    max_batch_seconds: float | None = None,
) -> SpeechEncoder:
    """Load a speech encoder of any registered family from a hub id or a local folder.

    Raises EmofuseError (one line, naming the model and how to provide it locally) when it cannot load.
    """
    name = str(name_or_path)
    check_folder(name, OPTION)
    device, dtype = as_device(device), as_dtype(dtype)
    batch_seconds = max_batch_seconds or default_batch_seconds(device)
    model_type = model_type_of(name)
    entry = SPEECH_FAMILIES.get(model_type or "")
    if entry is None:
        raise EmofuseError(
            f"{OPTION} {name}: model type '{model_type}' is not a supported speech encoder "
            f"({', '.join(SPEECH_FAMILIES)})"
        )
    return _loader(entry)(name, device, dtype, batch_seconds)
