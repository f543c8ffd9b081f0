"""Adding a cache backend and a speech encoder family is one module each: here both are defined and
registered from test code alone, and `emofuse extract` → `verify` → `train` run through them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from emofuse.cache.backends import BACKENDS, ArrayStore, Backend, register_backend
from emofuse.cli import cli
from emofuse.corpus import write_synthetic_corpus
from emofuse.encoders import SPEECH_FAMILIES, SpeechEncoder, register_speech_family
from emofuse.encoders.tiny import build_tiny_models


class NpyStore(ArrayStore):
    """A toy backend: a folder of .npy files (one per array) and meta.json."""

    kind = "npy"

    def __init__(self, path: Path, mode: str = "r") -> None:
        self.path = Path(path)
        if mode == "w":
            self.path.mkdir(parents=True)

    def _file(self, name: str) -> Path:
        return self.path / f"{name}.npy"

    def _array(self, name: str) -> np.ndarray:
        return np.load(self._file(name), mmap_mode="r")

    def read_meta(self) -> dict | None:
        meta = self.path / "meta.json"
        return json.loads(meta.read_text()) if meta.is_file() else None

    def write_meta(self, meta: dict) -> None:
        (self.path / "meta.json").write_text(json.dumps(meta))

    def create(self, name, shape, dtype, chunks, compression) -> None:
        self._file(name).parent.mkdir(parents=True, exist_ok=True)
        np.save(self._file(name), np.zeros(shape, dtype))

    def write(self, name: str, index: Any, value: np.ndarray) -> None:
        array = np.load(self._file(name))
        array[index] = value
        np.save(self._file(name), array)

    def read(self, name: str, index: Any = ()) -> np.ndarray:
        return np.array(self._array(name)[index])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._array(name).shape)

    def has(self, name: str) -> bool:
        return self._file(name).is_file()


class EnergySpeech(SpeechEncoder):
    """A toy family: per 20 ms frame, log energies of 8 sub-frames, and their deltas as layer 1."""

    family = "energy-toy"

    def __init__(self, folder: str, device: torch.device, dtype: torch.dtype, seconds: float):
        self.model_id, self.revision = folder, "toy-1"
        self.num_layers, self.dim, self.frame_rate = 2, 8, 50.0
        self.min_samples, self.device, self.dtype = 320, device, dtype
        self.max_batch_samples = int(seconds * 16_000)

    def n_frames(self, n_samples: int) -> int:
        return n_samples // 320

    def _encode_checked(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for wav in arrays:
            frames = wav[: self.n_frames(len(wav)) * 320].reshape(-1, 8, 40)
            energy = torch.from_numpy(np.log(1e-6 + (frames**2).mean(axis=2)))  # (T, 8)
            delta = torch.diff(energy, dim=0, prepend=energy[:1])  # (T, 8)
            out.append(torch.stack([energy, delta], dim=1).to(self._out_dtype))  # (T, 2, 8)
        return out


def invoke(*args) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def registered():
    register_backend(
        Backend(
            "npy", "NumPy folder", (".npyd",), NpyStore, lambda p: (p / "meta.json").is_file(), True
        )
    )
    register_speech_family("energy-toy", EnergySpeech)
    yield
    BACKENDS.pop("npy")
    SPEECH_FAMILIES.pop("energy-toy")


def test_a_backend_and_a_speech_family_from_test_code_run_extract_verify_and_train(
    registered, tmp_path
):
    root = tmp_path / "IEMOCAP_full_release"
    write_synthetic_corpus(
        root, utterances_per_speaker=4, others_per_speaker=0, duration=(0.5, 1.5), progress=False
    )
    toy = tmp_path / "energy-model"
    toy.mkdir()
    (toy / "config.json").write_text(json.dumps({"model_type": "energy-toy"}))
    text = build_tiny_models(tmp_path / "tiny").text
    extract = ["extract", "--corpus", "iemocap", "--root", root, "--speech-model", toy,
               "--text-model", text, "--speaker-model", "none", "--quiet"]  # fmt: skip
    for name in ("cache.npyd", "cache.h5"):
        result = invoke(*extract, "--out", tmp_path / name)
        assert result.exit_code == 0, result.output
    toy_cache = tmp_path / "cache.npyd"
    assert (toy_cache / "streams" / "speech" / "data.npy").is_file()
    assert not (tmp_path / "cache.npyd.parts").exists()

    info = json.loads(invoke("info", toy_cache, "--json").output)
    assert info["backend"] == "NumPy folder" and info["complete"] and info["utterances"] == 40
    assert info["streams"]["speech"]["model"] == str(toy)
    digests = [invoke("verify", tmp_path / n).output.split("digest: ")[1].split()[0]
               for n in ("cache.npyd", "cache.h5")]  # fmt: skip
    assert digests[0] == digests[1]  # the same content, whichever backend holds it

    # a train --out inside the folder cache is refused like one inside a Zarr cache
    inside = invoke("train", "--cache", toy_cache, "--split", "loso", "--head", "pooled",
                    "--out", toy_cache / "run")  # fmt: skip
    assert inside.exit_code == 2 and "inside the cache" in inside.output

    run = tmp_path / "run"
    result = invoke("train", "--cache", toy_cache, "--split", "loso", "--head", "pooled",
                    "--out", run, "--epochs", "2", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    for k in range(1, 6):
        metrics = json.loads((run / f"fold_{k:02d}" / "metrics.json").read_text())
        assert 0.0 <= metrics["UA"] <= 1.0
    assert json.loads((run / "config.json").read_text())["cache_fingerprint"] == info["fingerprint"]
