"""Shared fixtures for the extraction tests: tiny real-class models and a small synthetic corpus.

Built once per session (a few seconds) and reused by every test in tests/extract/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emofuse.corpus import read_corpus, write_synthetic_corpus
from emofuse.encoders.tiny import build_tiny_models
from tests.helpers import LIMIT


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "IEMOCAP_full_release"
    # 10 speakers x 4 utterances of 0.5-1.5 s; aligned like IEMOCAP (exact tiers)
    write_synthetic_corpus(
        root, utterances_per_speaker=4, others_per_speaker=0, duration=(0.5, 1.5), progress=False
    )
    return root


@pytest.fixture(scope="session")
def utterances(corpus_root):
    return read_corpus("iemocap", root=corpus_root, progress=False).utterances[:LIMIT]
