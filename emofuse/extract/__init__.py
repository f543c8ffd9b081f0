"""The extraction pipeline: utterances → frozen encoders → one feature cache.

Extraction is hours of GPU time on a real corpus, so the pipeline keeps the model busy and is safe to
kill at any moment. One job per module:

- ``config``: settings (``ExtractConfig``), models, device and dtype, the fingerprint, stream specs;
- ``batching``: length-bucketed batches and torchrun shards, planned once from durations alone;
- ``rows``: decoding one utterance, and one batch through every model into cache rows;
- ``resume``: what a resumed run must agree with;
- ``runtime``: decode-ahead pool, the writer thread, torchrun ranks;
- ``pipeline``: ``run_extract``, the orchestration.
"""

from emofuse.extract.batching import length_batches, shard_batches
from emofuse.extract.config import (
    DEFAULT_SPEAKER,
    DEFAULT_SPEECH,
    DEFAULT_TEXT,
    DTYPES,
    ExtractConfig,
    ExtractSummary,
    parse_layers,
)
from emofuse.extract.pipeline import run_extract

__all__ = [
    "DEFAULT_SPEAKER",
    "DEFAULT_SPEECH",
    "DEFAULT_TEXT",
    "DTYPES",
    "ExtractConfig",
    "ExtractSummary",
    "length_batches",
    "parse_layers",
    "run_extract",
    "shard_batches",
]
