"""Frozen BERT-family text encoders: token states for every layer, and token → word ids.

Words are the transcript's whitespace-separated words (``text.split()``), handed to the fast tokenizer
pre-split, so ``word_ids[k] == j`` means token k belongs to the j-th word of the text: the same words a
word-level alignment tier has (punctuation attached to a word stays with it). Special tokens get -1.
BERT's absolute positions and attention masks make padded batches equal one-at-a-time encoding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from emofuse.encoders.common import (
    as_device,
    as_dtype,
    check_folder,
    from_pretrained,
    hold_frozen,
    load_error,
    model_revision,
    pack_batches,
    resolved_dir,
    to_device,
)
from emofuse.errors import EmofuseError

OPTION = "--text-model"


@dataclass
class TextOut:
    states: torch.Tensor  # (N, num_layers, D) float32: embedding output + each layer, per token
    word_ids: np.ndarray  # (N,) int32: index into text.split(), -1 for special tokens
    truncated: bool  # the text had more tokens than max_tokens; the tail was dropped


class TextEncoder:
    """Token states of a BERT-family model (see docs/architecture.md section 4)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        model_id: str,
        revision: str,
        device: torch.device,
        dtype: torch.dtype,
        max_tokens: int | None = None,
        max_batch_tokens: int = 16_384,
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        hold_frozen(self, model_id, revision, device, dtype)
        config = model.config
        self.num_layers = config.num_hidden_layers + 1
        self.dim = config.hidden_size
        limit = min(
            getattr(config, "max_position_embeddings", 512) or 512,
            tokenizer.model_max_length if tokenizer.model_max_length < 1e6 else 512,
        )
        self.max_tokens = min(max_tokens or limit, limit)
        self.max_batch_tokens = max_batch_tokens
        self.n_truncated = 0  # texts truncated so far (reported by extract)

    def tokenize(self, texts: Sequence[str]):
        """Fast-tokenizer encodings of the pre-split words, truncated to max_tokens."""
        words = [str(t).split() for t in texts]
        return self.tokenizer(
            words,
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_tokens,
            return_attention_mask=False,
            return_token_type_ids=False,
        )

    def encode(self, texts: Sequence[str]) -> list[TextOut]:
        if not texts:
            return []
        enc = self.tokenize(texts)
        ids = enc["input_ids"]
        word_ids = [
            np.array([-1 if w is None else w for w in enc.word_ids(i)], dtype=np.int32)
            for i in range(len(ids))
        ]
        # the fast tokenizer keeps what truncation cut off as "overflowing" encodings
        truncated = [bool(e.overflowing) for e in enc.encodings]
        self.n_truncated += sum(truncated)
        results: list[TextOut | None] = [None] * len(ids)
        with torch.inference_mode():
            for batch in pack_batches([len(x) for x in ids], self.max_batch_tokens):
                states = self._forward([ids[i] for i in batch])
                for i, s in zip(batch, states, strict=True):
                    results[i] = TextOut(s, word_ids[i], truncated[i])
        return results  # type: ignore[return-value]

    def _forward(self, ids: list[list[int]]) -> list[torch.Tensor]:
        lengths = [len(x) for x in ids]
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = torch.full((len(ids), max(lengths)), pad_id, dtype=torch.long)  # (B, N)
        mask = torch.zeros_like(input_ids)  # (B, N)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        out = self.model(
            input_ids=to_device(input_ids, self.device),
            attention_mask=to_device(mask, self.device),
            output_hidden_states=True,
        )
        states = torch.stack(out.hidden_states, dim=2).to("cpu", torch.float32)  # (B, N, L, D)
        return [states[i, :n].clone() for i, n in enumerate(lengths)]


def _refuse_speech_model(name: str) -> None:
    """A speech encoder's folder given as the text model: it has no tokenizer, and transformers
    fails inside with an internal TypeError; say what the folder is instead."""
    from emofuse.encoders.families import SPEECH_FAMILIES

    try:
        kind = json.loads((Path(name) / "config.json").read_text(encoding="utf-8")).get(
            "model_type"
        )
    except (OSError, ValueError, AttributeError):
        return  # a hub id, or no readable config: the loader says what is wrong
    if kind in SPEECH_FAMILIES:
        raise EmofuseError(
            f"{OPTION} {name} is a speech model (model type {kind!r}), not a text model: give it as "
            f"--speech-model, and a BERT-family model folder (with its tokenizer) as {OPTION}"
        )


def load_text_encoder(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    max_tokens: int | None = None,
) -> TextEncoder:
    """Load a BERT-family model + its fast tokenizer from a hub id or local folder."""
    name = str(name_or_path)
    check_folder(name, OPTION)
    _refuse_speech_model(name)
    device, dtype = as_device(device), as_dtype(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = from_pretrained(AutoModel, name, device, dtype).to(device)
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot load this model"
        raise load_error("text", name, OPTION, exc) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise EmofuseError(
            f"{OPTION} {name}: its tokenizer has no fast (Rust) version, which word ids need; "
            "add a tokenizer.json (save_pretrained of the fast tokenizer) to the folder"
        )
    vocab = getattr(model.config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:  # ids past the embedding table
        raise EmofuseError(
            f"{OPTION} {name}: its tokenizer knows {len(tokenizer)} tokens but the model's "
            f"embedding table has {vocab}, so a token past it cannot be embedded (the tokenizer "
            "of another model?); give the tokenizer files the model was saved with"
        )
    if isinstance(vocab, int) and len(tokenizer) < vocab / 2:  # its vocabulary files are lost
        raise EmofuseError(
            f"{OPTION} {name}: its tokenizer knows {len(tokenizer)} tokens but the model has a "
            f"vocabulary of {vocab}, so most words would be [UNK] (tokenizer.json or vocab.txt "
            "missing?); copy the tokenizer's files into the folder (save_pretrained of the "
            "tokenizer writes them)"
        )
    revision = model_revision(name, resolved_dir(name))
    return TextEncoder(model, tokenizer, name, revision, device, dtype, max_tokens)
