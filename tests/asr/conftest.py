"""Fixtures of the ASR and alignment tests: a tiny random Whisper converted to CTranslate2 (once per
session) and a small manifest of synthetic-corpus wavs."""

from __future__ import annotations

from pathlib import Path

import pytest

from emofuse.asr.tiny import build_tiny_asr
from emofuse.corpus import read_corpus, write_synthetic_corpus


@pytest.fixture(scope="session")
def tiny_asr(tmp_path_factory) -> Path:
    return build_tiny_asr(tmp_path_factory.mktemp("tiny-asr"))


@pytest.fixture(scope="session")
def synth_utts(tmp_path_factory):
    root = tmp_path_factory.mktemp("asr-synth") / "IEMOCAP_full_release"
    write_synthetic_corpus(
        root, utterances_per_speaker=4, others_per_speaker=0, duration=(0.5, 1.2), progress=False
    )
    return read_corpus("iemocap", root=root, progress=False).utterances
