"""A tiny randomly initialised Whisper as a faster-whisper (CTranslate2) folder, for tests and demos.

The real classes and the real conversion run: a `WhisperForConditionalGeneration` with a tiny config
and a byte-level tokenizer carrying Whisper's special tokens is saved with `save_pretrained`, then
converted with CTranslate2's `TransformersConverter`, so `load_asr_model(folder)` takes the same path
as for a real model. Its transcripts are random text.
"""

from __future__ import annotations

import json
from pathlib import Path

# Whisper's special tokens in its own order; ids follow the 256 byte-level tokens
SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
N_TIMESTAMPS = 40


def _tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    fast.save_pretrained(folder)
    return fast


def build_tiny_asr(folder: str | Path, seed: int = 0) -> Path:
    """Write `folder/hf` (transformers) and `folder/ct2` (faster-whisper); returns the ct2 folder."""
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = Path(folder)
    hf, ct2 = folder / "hf", folder / "ct2"
    if (ct2 / "model.bin").is_file():
        return ct2
    hf.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(hf)
    n_text = len(tokenizer)  # 256 bytes + the special tokens
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=n_text + N_TIMESTAMPS,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=448,  # faster-whisper decodes up to 448 tokens
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[ids["<|endoftext|>"]],
    )
    model = WhisperForConditionalGeneration(config)
    gen = model.generation_config
    gen.lang_to_id = {"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]}
    gen.suppress_tokens, gen.begin_suppress_tokens = [], [ids["<|endoftext|>"]]
    gen.max_length = 448
    model.save_pretrained(hf)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(hf)
    TransformersConverter(
        str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]
    ).convert(str(ct2), force=True)
    meta = json.loads((ct2 / "config.json").read_text())
    meta["emofuse_tiny"] = True
    (ct2 / "config.json").write_text(json.dumps(meta, indent=1))
    return ct2
