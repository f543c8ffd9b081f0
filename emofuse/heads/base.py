"""The Head interface and the blocks every head shares.

A head turns one padded batch of cached features into class logits. It never sees raw audio, so the
same head trains from any cache and predicts from any recording that went through the same encoders.

Writing your own head (see ``examples/custom_head.py`` for a complete one)::

    @dataclass
    class MyConfig(HeadConfig):          # inherits speech_layers, text_layers, layer_mix, mix_index, dropout
        hidden: int = 128

    class MyHead(Head):
        name = "my-head"
        Config = MyConfig                 # fields settable with `--set key=value`
        presets = {"small": {"hidden": 64}, "paper": {"hidden": 256}}

        @classmethod
        def required_streams(cls, cfg) -> set[str]:      # subset of speech,text,speaker,phone,...
            return {"speech", "text"}

        def __init__(self, cfg, dims: InputDims, n_classes: int):
            super().__init__(cfg, dims, n_classes)
            ...                                          # build layers from dims.speech = (L, D) etc.
            self.classifier = nn.Linear(cfg.hidden, n_classes)

        def embed(self, batch) -> Tensor:                # (B, E) pre-classifier utterance embedding
            ...

    # forward(batch) defaults to self.classifier(self.embed(batch)) -> (B, C) logits

and train it with ``emofuse train --head path/to/file.py:MyHead``.

Batch keys (padded, masks True = real row): ``speech`` (B, T, L, D) + ``speech_mask`` (B, T);
``text`` (B, N, L_t, D_t) + ``text_mask`` (B, N); ``speaker`` (B, F); ``speech_mean`` and
``speech_std`` (B, L, D) (per-layer statistics of the speech frames, no mask); per segment granularity g:
``g`` (B, S, L, D) + ``g_mask`` (B, S) + ``aligned`` (B,); ``fbank`` (B, T, 1, 80) + ``fbank_mask``.

Rules a head must keep (the tests check them for the built-in heads):
- padding invariance: an utterance's output may not depend on what it is batched with, so every
  reduction over time is masked and padded rows never reach a real row;
- the embedding comes from ``embed`` so t-SNE plots and predictions use the same code path.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.errors import EmofuseError
from emofuse.heads.inputs import InputPipeline
from emofuse.streams import NAMES as STREAMS

LAYER_MIXES = ("weighted", "mean", "single", "concat")
INPUT_NORMS = ("standard", "none")
# what a run saved before these fields existed did: raw inputs, no pooling, no masking
BASE_SAVED_DEFAULTS = {
    "input_norm": "none", "frame_pool": 1, "time_mask": 0.0, "feature_mask": 0.0,
    "modality_dropout": 0.0,
}  # fmt: skip


@dataclass(frozen=True)
class InputDims:
    """Per-stream (L, D) that the data layer loaded: L cached layers of width D (speaker: (1, F))."""

    speech: tuple[int, int] | None = None
    text: tuple[int, int] | None = None
    speaker: tuple[int, int] | None = None
    phone: tuple[int, int] | None = None
    syllable: tuple[int, int] | None = None
    word: tuple[int, int] | None = None
    fbank: tuple[int, int] | None = None
    speech_mean: tuple[int, int] | None = None  # per-layer mean / std of the speech frames
    speech_std: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        # A fixed stream such as the speaker vector may be given as its width alone.
        for name in STREAMS:
            value = getattr(self, name)
            if isinstance(value, int):
                object.__setattr__(self, name, (1, value))
            elif value is not None and len(value) == 1:  # a per-row shape (F,)
                object.__setattr__(self, name, (1, int(value[0])))
            elif value is not None:
                object.__setattr__(self, name, (int(value[0]), int(value[1])))

    def get(self, stream: str) -> tuple[int, int]:
        """(L, D) of ``stream``; a head that needs a stream the data layer did not load fails here."""
        value = getattr(self, stream, None)
        if value is None:
            raise EmofuseError(
                f"this head needs the '{stream}' stream but it was not loaded: extract it into the "
                "cache or choose a head that does not use it"
            )
        return value

    def as_dict(self) -> dict[str, list[int]]:
        return {k: list(v) for k in STREAMS if (v := getattr(self, k)) is not None}


@dataclass
class HeadConfig:
    """Fields every head has. Subclass it (with defaults on every field) for a head's own options."""

    speech_layers: list[int] | None = None  # cached speech layers to load (None = all cached)
    text_layers: list[int] | None = None  # cached text layers to load (None = all cached)
    layer_mix: str = "weighted"  # weighted (SUPERB softmax sum) | mean | single
    mix_index: int = -1  # with layer_mix=single: which of the loaded layers (-1 = last)
    dropout: float = 0.1
    # LayerNorm (no affine) on every loaded layer of every row before the mix (s3prl's
    # Featurizer normalize): puts layers of very different scale (Whisper's deeper layers) on one
    # footing, so the mix weights compare layers, not magnitudes
    layer_norm: bool = False
    # what Head.prepare does to the inputs (emofuse/heads/inputs.py): z-score every stream with the
    # fold's training statistics (standard | none) and in training mask up to time_mask of the
    # frames and feature_mask of the dimensions (SpecAugment-style); frame_pool k: the data layer
    # averages the frame streams (speech, fbank) over windows of k frames when it loads them
    input_norm: str = "standard"
    frame_pool: int = 1
    time_mask: float = 0.0
    feature_mask: float = 0.0
    modality_dropout: float = 0.0  # training: drop a whole modality of an utterance (p/2 each)

    def validate(self) -> None:
        """Raise EmofuseError on a value no head can use (called by make_config and Head)."""
        if self.input_norm not in INPUT_NORMS:
            raise EmofuseError(
                f"--set input_norm={self.input_norm}: choose one of {', '.join(INPUT_NORMS)}"
            )
        if self.frame_pool < 1:
            raise EmofuseError(f"--set frame_pool={self.frame_pool}: use 1 (no pooling) or more")
        for key in ("time_mask", "feature_mask", "modality_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise EmofuseError(f"--set {key}={getattr(self, key)}: use a fraction in [0, 1)")
        if self.layer_mix not in LAYER_MIXES:
            raise EmofuseError(
                f"--set layer_mix={self.layer_mix}: choose one of {', '.join(LAYER_MIXES)}"
            )
        if self.mix_index != -1 and self.layer_mix != "single":  # it would be ignored
            raise EmofuseError(
                f"--set mix_index={self.mix_index} picks a layer for layer_mix=single only (this "
                f"config mixes them: {self.layer_mix}); add --set layer_mix=single, or drop it"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise EmofuseError(f"--set dropout={self.dropout}: dropout must be in [0, 1)")
        for key in SIZE_FIELDS:  # widths and head counts of any head that has them
            value = getattr(self, key, None)
            if isinstance(value, int) and value < 1:
                raise EmofuseError(f"--set {key}={value}: must be a positive integer")


# layer widths and counts that must be >= 1 wherever a head config has them
SIZE_FIELDS = ("d_model", "heads", "ffn", "fusion_dim")  # (pooled: hidden=0 is the probe)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Turn a `--set key=value` string (or a JSON value from a saved run) into the field's type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("none", "null", "")
        ):
            if type(None) in args:
                return None
        first = next(a for a in args if a is not type(None))
        return _coerce(key, value, first)
    bad = EmofuseError(f"--set {key}={value!r}: expected {getattr(tp, '__name__', tp)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            items = [p.strip().strip("'\"") for p in value.strip().strip("[]()").split(",")]
            items = [p for p in items if p]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise bad
        out = [_coerce(key, v, args[0]) for v in items]
        return out if origin is list else tuple(out)
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise bad
    if tp in (int, float):
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value) if tp is float else int(str(value).strip())
        except ValueError:
            raise bad from None
        if not math.isfinite(number):  # float() takes nan and inf; nan passes every range check
            raise EmofuseError(f"--set {key}={value!r}: give a finite number")
        return number
    if tp is str:
        return str(value)
    return value


class Head(nn.Module):
    """Base class of every head; see the module docstring for the interface a head implements."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[HeadConfig]] = HeadConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # the training loop per preset (None = no --preset): LoopConfig fields over the papers'
    # protocol; emofuse.train.recipes resolves them, flags override them
    recipes: ClassVar[dict[str | None, dict[str, Any]]] = {}
    # config values to assume where a saved run predates the field (a field added later whose
    # default differs from what runs made before it did); see config_from_saved
    saved_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: HeadConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__()
        cfg.validate()
        if n_classes < 2:
            raise EmofuseError(f"head {self.name}: need at least 2 classes, got {n_classes}")
        self.cfg, self.dims, self.n_classes = cfg, dims, n_classes
        self.input_pipeline = InputPipeline(dims, cfg)

    def prepare(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch as the head's layers see it: standardised with the training statistics, frames
        pooled, and (training mode only) masked. Callers run ``model(model.prepare(batch))``."""
        return self.input_pipeline(batch)

    @classmethod
    def fit_to_cache(
        cls, cfg: HeadConfig, table: dict[str, Any], given: set[str]
    ) -> dict[str, str]:
        """Change ``cfg`` in place where a default setting makes no sense for this cache (its
        utterance ``table``); ``given`` = the options the user set, which are never changed.
        Returns {option: why} for config.json and the report; the default changes nothing."""
        return {}

    @classmethod
    def required_streams(cls, cfg: HeadConfig) -> set[str]:
        """Cache streams this head reads; the data layer loads exactly these."""
        raise NotImplementedError

    @classmethod
    def make_config(
        cls, preset: str | None = None, overrides: dict[str, Any] | None = None
    ) -> HeadConfig:
        """Config from the class defaults, then a preset, then `--set` overrides (strings parsed)."""
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                known = ", ".join(cls.presets) or "none"
                raise EmofuseError(f"head {cls.name}: unknown preset '{preset}' (known: {known})")
            values.update(cls.presets[preset])
        hints = typing.get_type_hints(cls.Config)
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        for key, value in (overrides or {}).items():
            if key not in fields:
                raise EmofuseError(
                    f"--set {key}: head {cls.name} has no such option (options: "
                    f"{', '.join(sorted(fields))})"
                )
            values[key] = _coerce(key, value, hints[key])
        cfg = cls.Config(**values)
        cfg.validate()
        return cfg

    @classmethod
    def config_from_saved(cls, saved: dict[str, Any]) -> HeadConfig:
        """The config of a saved run (config.json / checkpoint), fields it predates filled in."""
        return cls.make_config(None, {**BASE_SAVED_DEFAULTS, **cls.saved_defaults, **saved})

    @classmethod
    def max_lengths(cls, cfg: HeadConfig) -> dict[str, int]:
        """Rows kept per utterance of each truncated stream (the first ones): the data layer cuts
        them when it loads (so batches, standardisation and the head see the same rows), and
        callers report how many utterances get cut (the paper's 512 frames drop the end of 6.2 %
        of IEMOCAP's 4-class set)."""
        return {}

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, E) utterance embedding just before the classifier (used for t-SNE)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.classifier(self.embed(batch))  # (B, C)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class LayerMix(nn.Module):
    """(…, L, D) -> (…, D): one layer, the mean, or the SUPERB weighted sum of the cached layers;
    or (``concat``) -> (…, L*D): every layer side by side, so the Linear a head puts after the mix is
    a projection of all layers (one weight per layer and dimension instead of one scalar per layer).
    ``out_dim(D)`` is the width a head sizes that Linear with.

    The weighted sum is a softmax over one learnable scalar per layer, initialised equal, so training
    starts from the mean and moves towards the layers that help. With ``normalize`` every layer of
    every row is first layer-normalised over D (no affine; per row, so padding invariance holds):
    raw hidden states differ in scale across layers by up to ~4x RMS in Whisper-base, with a few
    outlier dimensions in the deeper layers, so an unnormalised sum is dominated by the largest
    layers whatever the weights say.
    """

    def __init__(
        self, n_layers: int, mode: str = "weighted", index: int = -1, normalize: bool = False
    ) -> None:
        super().__init__()
        if mode not in LAYER_MIXES:
            raise EmofuseError(f"--set layer_mix={mode}: choose one of {', '.join(LAYER_MIXES)}")
        if mode == "single" and not -n_layers <= index < n_layers:
            raise EmofuseError(
                f"--set mix_index={index}: only {n_layers} layers were loaded "
                "(pick a loaded layer or change speech_layers/text_layers)"
            )
        # With one loaded layer every mode is that layer; a weight there could never learn.
        if n_layers == 1:
            mode, index = "single", 0
        self.mode, self.index, self.n_layers = mode, index, n_layers
        self.normalize = normalize
        if mode == "weighted":
            self.weights = nn.Parameter(torch.zeros(n_layers))

    @classmethod
    def from_config(cls, n_layers: int, cfg: HeadConfig) -> LayerMix:
        """The mix a head's config asks for (``layer_mix``, ``mix_index``, ``layer_norm``)."""
        return cls(n_layers, cfg.layer_mix, cfg.mix_index, cfg.layer_norm)

    def out_dim(self, width: int) -> int:
        """The width of the mix's output for layers of ``width``."""
        return width * self.n_layers if self.mode == "concat" else width

    def forward(self, x: Tensor) -> Tensor:
        if self.normalize:
            if self.mode == "single":  # normalise only the layer that is used
                x = x.narrow(-2, self.index % self.n_layers, 1)  # (…, 1, D); no index tensor
            x = F.layer_norm(x, (x.shape[-1],))  # (…, L, D), each layer of each row on its own
            if self.mode == "single":
                return x[..., 0, :]
        if self.mode == "single":
            return x[..., self.index, :]  # (…, D)
        if self.mode == "mean":
            return x.mean(dim=-2)  # (…, D)
        if self.mode == "concat":
            return x.flatten(-2)  # (…, L*D)
        w = torch.softmax(self.weights, dim=0)  # (L,)
        return torch.einsum("...ld,l->...d", x, w)  # (…, D)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D) mean over real rows (0 for an utterance with none)."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D) max over real rows (0 for an utterance with none)."""
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))  # (B, T, D)
    out = filled.max(dim=1).values  # (B, D)
    return torch.where(mask.any(1, keepdim=True), out, torch.zeros_like(out))


def avg_max_pool(x: Tensor, mask: Tensor) -> Tensor:
    """AVG-MAX statistics pooling: (B, T, D) -> (B, 2D) = [masked mean, masked max]."""
    return torch.cat([masked_mean(x, mask), masked_max(x, mask)], dim=-1)


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """Set padded rows to 0, so a convolution sees the same zeros a lone utterance is padded with."""
    return x * mask.unsqueeze(-1).to(x.dtype)


class AttentionLayer(nn.Module):
    """Post-norm transformer layer with GELU feed-forward; self- or cross-attention.

    x = LN(x + Attn(x, ctx)); x = LN(x + FFN(x))  — TDFNet eq. 5 (self) and eq. 7 (cross), and the
    co-attention blocks. Keys are masked (padding never reaches a real row); padded query rows are
    computed but meaningless, and callers mask them out. No positional encoding is added: the inputs
    are hidden states of pretrained encoders that already carry position. Dropout acts on the
    attention output and the FFN, not on the (T x S) attention weights: that keeps the fused
    attention kernels usable in training (materialising and masking T x S weights for 512 frames was
    ~60 % of a CPU training step).
    """

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise EmofuseError(f"width {dim} is not divisible by {heads} attention heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim)
        )
        self.drop = nn.Dropout(dropout)

    def attend(self, x: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        b, t, d = x.shape
        h = self.heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)  # (B, H, T, d/H)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        # k, v: (B, H, S, d/H). An utterance with no real context row would give NaN: let it
        # attend to its (zero) padding instead; such rows are masked out downstream anyway.
        keys = ctx_mask | ~ctx_mask.any(1, keepdim=True)  # (B, S)
        attn = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=keys[:, None, None, :],  # (B, 1, 1, S)
        )  # (B, H, T, d/H)
        return self.out(attn.transpose(1, 2).reshape(b, t, d))  # (B, T, D)

    def forward(
        self, x: Tensor, mask: Tensor, ctx: Tensor | None = None, ctx_mask: Tensor | None = None
    ) -> Tensor:
        if ctx is None:
            ctx, ctx_mask = x, mask
        x = self.norm1(x + self.drop(self.attend(x, ctx, ctx_mask)))  # (B, T, D)
        return self.norm2(x + self.drop(self.ffn(x)))  # (B, T, D)


class Encoder(nn.Module):
    """A stack of self-attention layers over one masked sequence."""

    def __init__(self, n_layers: int, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [AttentionLayer(dim, heads, ffn, dropout) for _ in range(n_layers)]
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)  # (B, T, D)
        return x


def pick(batch: dict[str, Tensor], stream: str) -> tuple[Tensor, Tensor]:
    """(values, mask) of a ragged stream, with a message naming the missing key."""
    if stream not in batch or f"{stream}_mask" not in batch:
        raise EmofuseError(
            f"the batch has no '{stream}' stream: load it from the cache (the head's "
            "required_streams says which streams it reads)"
        )
    return batch[stream], batch[f"{stream}_mask"].bool()


def truncate(x: Tensor, mask: Tensor, max_len: int | None) -> tuple[Tensor, Tensor]:
    """Keep the first ``max_len`` rows (the paper's fixed input lengths); None keeps all."""
    if max_len is None or x.shape[1] <= max_len:
        return x, mask
    return x[:, :max_len], mask[:, :max_len]
