"""Tiny, randomly initialised models of the real encoder classes, saved like real checkpoints.

No model hub is reachable where emofuse is tested, so tests and ``emofuse demo`` build these once into
a folder and load them through the very same code paths as real models (``from_pretrained``,
SpeechBrain ``from_hparams``). They keep each family's real architecture (conv front end with the
real kernels and strides, so 50 frames/s; group- or layer-norm; positional conv; Whisper's mel front
end) but are 32 wide and 2 layers deep, so they run in milliseconds on a CPU. Everything is
deterministic from ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    Data2VecAudioConfig,
    Data2VecAudioModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

from emofuse.encoders.common import quiet_hf

TINY_VERSION = 2  # bump when the builders change, so stale folders are rebuilt

TINY_SPEECH_FAMILIES = (
    "wav2vec2-group",  # wav2vec2-base style: group-norm conv front end, trained without attention masks
    "wav2vec2-layer",  # wav2vec2-large-lv60 style: layer-norm conv front end, stable layer norm
    "hubert",  # hubert-large-ll60k style (the TDFNet default): layer norm, stable layer norm
    "wavlm",  # wavlm-base-plus style: group norm, gated relative position bias
    "data2vec-audio",  # layer norm front end, 5-layer positional conv stack
    "whisper",  # Whisper encoder: 80-bin log-mel, 2 convs, sinusoid-shaped learned positions
)

_SSL_COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(64,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    num_conv_pos_embedding_groups=4,
    vocab_size=32,
)

# Enough words for a readable synthetic corpus, plus letters and word pieces so that ANY lower-case
# English text tokenises without [UNK].
_WORDS = """
the a an and or but not no yes i you he she it we they me him her us them my your his its our their
is am are was were be been being have has had do does did will would can could should may might must
this that these those here there what when where why how who which all some any each every one two
three four five ten hundred first last next very really so too just only also even still again
now then today tomorrow yesterday always never sometimes about after before with without from into
onto over under up down out off in on at by for of to as if than because while until
go going gone went come came get got make made take took give gave know knew think thought say said
tell told see saw look feel felt want need like love hate hope wish try leave stay call work play
happy sad angry neutral excited calm afraid scared surprised disgusted frustrated tired bored
glad upset fine great good bad terrible wonderful awful nice okay well sorry please thanks thank
oh ah uh um hmm wow hey hello goodbye bye yeah yep nope right wrong true false sure maybe
time day night week year home house car job money friend family mother father brother sister
man woman people thing things way life world place room door phone name letter word words
""".split()


@dataclass
class TinyModels:
    """Where the tiny models live: pass these paths to the ``load_*`` functions."""

    speech: dict[str, Path] = field(default_factory=dict)
    text: Path | None = None
    speaker: Path | None = None


def _ssl_model(family: str):
    if family == "wav2vec2-group":
        config = Wav2Vec2Config(
            **_SSL_COMMON, feat_extract_norm="group", do_stable_layer_norm=False
        )
        return Wav2Vec2Model(config)
    if family == "wav2vec2-layer":
        config = Wav2Vec2Config(
            **_SSL_COMMON, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True
        )
        return Wav2Vec2Model(config)
    if family == "hubert":
        config = HubertConfig(
            **_SSL_COMMON, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True
        )
        return HubertModel(config)
    if family == "wavlm":
        config = WavLMConfig(
            **_SSL_COMMON, feat_extract_norm="group", do_stable_layer_norm=False, num_buckets=32
        )
        return WavLMModel(config)
    if family == "data2vec-audio":
        common = {k: v for k, v in _SSL_COMMON.items() if k != "num_conv_pos_embedding_groups"}
        config = Data2VecAudioConfig(
            **common, num_conv_pos_embedding_groups=4, conv_pos_kernel_size=19
        )
        return Data2VecAudioModel(config)
    raise ValueError(f"unknown tiny speech family {family!r}")


def build_speech(folder: Path, family: str, seed: int = 0) -> Path:
    """One tiny speech model + its feature extractor, saved with save_pretrained."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family == "whisper":
        config = WhisperConfig(
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_layers=1,
            decoder_attention_heads=2,
            decoder_ffn_dim=64,
            vocab_size=8,
            num_mel_bins=80,
            max_source_positions=1500,  # the real 30 s window, so windowing is exercised for real
            max_target_positions=8,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=1,
            begin_suppress_tokens=None,
            suppress_tokens=None,
        )
        WhisperModel(config).save_pretrained(folder)
        WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
        return folder
    model = _ssl_model(family)
    model.save_pretrained(folder)
    # group-norm checkpoints ship without attention masks (the padding problem emofuse works around)
    group = getattr(model.config, "feat_extract_norm", "layer") == "group"
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16_000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=not group,
    ).save_pretrained(folder)
    return folder


def tiny_vocab() -> list[str]:
    """Special tokens, characters, ##pieces and common words: every lower-case text tokenises."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = specials + chars + pieces
    seen = set(vocab)
    for word in _WORDS:
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    return vocab


def build_text(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT with a vocab written here (vocab.txt + the fast tokenizer's files)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    return folder


# SpeechBrain's layout for speechbrain/spkrec-ecapa-voxceleb, with tiny channels. `pretrained_path`
# is overridden at load time with the folder itself (see speaker.py).
_ECAPA_YAML = """\
# Tiny random ECAPA-TDNN in the layout of speechbrain/spkrec-ecapa-voxceleb (built by emofuse).
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
sample_rate: 16000
n_mels: 80

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 16
    se_channels: 16
    lin_neurons: 192

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
"""


def build_speaker(folder: Path, seed: int = 0) -> Path:
    """A tiny ECAPA-TDNN: hyperparams.yaml + torch.save'd state dict, as SpeechBrain expects."""
    from hyperpyyaml import load_hyperpyyaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(_ECAPA_YAML)
    torch.manual_seed(seed)
    # build from the very yaml we ship, so the saved weights fit the architecture it declares
    hparams = load_hyperpyyaml(_ECAPA_YAML, overrides={"pretrained_path": str(folder)})
    torch.save(hparams["embedding_model"].state_dict(), folder / "embedding_model.ckpt")
    return folder


def build_tiny_models(folder: str | Path, seed: int = 0) -> TinyModels:
    """Build (or reuse, if already complete for this seed) every tiny model under ``folder``."""
    folder = Path(folder)
    models = TinyModels(
        speech={family: folder / "speech" / family for family in TINY_SPEECH_FAMILIES},
        text=folder / "text" / "bert",
        speaker=folder / "speaker" / "ecapa",
    )
    marker = folder / "tiny-models.json"
    stamp = {"version": TINY_VERSION, "seed": seed}
    try:
        built = json.loads(marker.read_text()) if marker.is_file() else None
    except (OSError, ValueError):
        built = None  # a damaged marker: built again
    if isinstance(built, dict) and {k: built.get(k) for k in stamp} == stamp:
        if built.get("files") == _file_digests(folder, models):
            return models
        print(  # a file of theirs damaged or deleted since: they are the demo's, made again
            f"note: the tiny models in {folder} changed since they were built (a file damaged or "
            "deleted); building them again",
            file=sys.stderr,
            flush=True,
        )
    with quiet_hf():
        for family, path in models.speech.items():
            build_speech(path, family, seed)
        build_text(models.text, seed)
    build_speaker(models.speaker, seed)
    stamp["files"] = _file_digests(folder, models)
    marker.write_text(json.dumps(stamp))  # last: a half-built folder is never reused
    return models


def _file_digests(folder: Path, models: TinyModels) -> dict[str, str]:
    """SHA-256 of every file of the tiny models (a few MB in all), by path under ``folder`` (not
    what extract adds beside them, e.g. SpeechBrain's links)."""
    roots = [*models.speech.values(), models.text, models.speaker]
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }
