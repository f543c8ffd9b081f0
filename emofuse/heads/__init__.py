"""Fusion heads: padded, masked batches of cached features -> class logits (and embeddings)."""

from emofuse.heads.base import Head, HeadConfig, InputDims, LayerMix, count_parameters
from emofuse.heads.registry import build_head, get_head, list_heads

__all__ = [
    "Head",
    "HeadConfig",
    "InputDims",
    "LayerMix",
    "build_head",
    "count_parameters",
    "get_head",
    "list_heads",
]
