"""TDFNet (transformer-based deep-scale fusion network, TASLP 2023, section III, eqs. 1-11).

Four modules (paper Fig. 1):
- ME: cached encoder states. A = speech frames (HuBERT), T = text tokens (BERT), S = speaker vector
  (ECAPA). Each cached stream is first reduced over its loaded layers by ``LayerMix``.
- DST (Fig. 2, eqs. 1-5): per modality ``global_layers`` transformer layers -> A', T'; then N blocks,
  each a stride-2 Conv1d (halves length and width), a two-layer GRU whose weights are ONE module called
  by both the speech and the text path (eqs. 1-2), and a post-norm GELU transformer layer (eq. 5) ->
  D_i (speech), H_i (text). Every level i = 1..N goes to MFC.
- MT (Fig. 4, eqs. 6-9): C_AT = cross-attention layer, queries A, keys/values T; C_TA the reverse
  (eqs. 6-7); C = ``mt_layers`` transformer layers over the time concatenation [A; T] (eq. 8);
  U = [S, Pool(C), Pool(C_AT), Pool(C_TA)] with AVG-MAX Pool, so U has 6d + f values (eq. 9).
- MFC (eqs. 10-11): O = [Pool(A), Pool(T), Pool(A'), Pool(T'), U, Pool(D_i), Pool(H_i)];
  alpha = sigmoid(W_alpha O); P = GELU(W (alpha * O) + b); logits = classifier(P). ``embed`` = P.

Open choices the paper leaves, settled here:
1. Common width: A (1024-d) and T (768-d) must meet in the shared GRU and in cross-attention, so each
   modality gets its own Linear to ``d_model`` (768 in ``paper``, the BERT width the paper's 384 = d/2
   implies) followed by dropout. A and T in eqs. 6-10 are these projected sequences.
2. Lengths: the paper truncates/pads to n = 512 frames / 128 tokens; ``max_speech_len`` /
   ``max_text_len`` keep the first rows (None = keep all). Padding is masked, never computed on, so
   padding up to n is unnecessary. The paper's n = 64 after the first downscale does not follow from
   n = 512; here every block halves the length exactly: ceil(n / 2) per block (512 -> 256 -> 128).
3. Downscale conv: kernel ``conv_kernel`` (3), stride 2, padding kernel // 2, no activation (the GRU
   follows); padded rows are zeroed before it so a real output row sees the same zeros a lone
   utterance is padded with; the mask is downsampled to the first ceil(len / 2) rows. Separate convs
   per modality (only the GRU is said to share weights).
4. Shared GRU (eqs. 1-2): in the block of output width w, GRU_1 has hidden 2w and GRU_2 hidden w
   (paper block 1: 768 then 384). Run on the padded batch: the GRUs are unidirectional and masks
   are prefixes, so a real row never sees padding (packing gives the same real rows and was 1.5x
   slower on CPU); padded outputs are zeroed. The speech and text sequences go through it in one
   call (stacked along the batch: same weights, half the sequential steps). Dropout between GRU_1
   and GRU_2. The GRUs run in fp32 under bf16 autocast (one cuDNN call instead of a per-step
   loop on torch builds whose cuDNN lacks bf16 RNNs). The block transformer layers (eq. 5) are
   per modality.
5. Eq. 5 writes the feed-forward as one W; the implementation details give every transformer layer
   12 heads and a 4096 feed-forward, so eq. 5 is read as the standard post-norm layer
   LN(x + FFN(LN(x + Attn(x)))) with FFN = Linear(d, 4096) -> GELU -> Linear(4096, d). The same layer
   serves eq. 7 with keys/values from the other modality. No positional encoding (the pretrained
   states carry position; [A; T] in eq. 8 is a set of attended rows).
6. Pooling: "AvgPool" in eq. 9 is the AVG-MAX pooling of Fig. 1 (the only reading that gives
   U in R^(6d+f)). U is a vector and enters O as is. Eq. 10 then gives 14d + f + sum_i d/2^(i-2)
   values; the paper's count (12d + f + ...) leaves out two of the 2d-pools of A, T, A', T'; we keep
   all of eq. 10's terms.
7. Eq. 11: ``gate`` = full (default): W_alpha is a full (|O| x |O|) matrix without bias (as
   written; 175.5 M of ``paper``'s parameters, and it shrinks with every ablation); group: one score
   per pooled feature group (A, T, A', T', S, C, C_AT, C_TA, each D_i, H_i), alpha_g =
   sigmoid(W_alpha O)_g with W_alpha (|O| x G), the group's score shared by its features; diag:
   alpha = sigmoid(w * O), one weight per feature. ``classifier`` = mlp (default): W maps to
   ``fusion_dim`` (768 in ``paper``) and a linear classifier over the classes follows; literal:
   P = GELU(W (alpha * O) + b) with P in R^C taken as the logits (GELU is unbounded above). Dropout (``dropout``, 0.1; the paper gives none) after each projection, inside
   every attention/FFN, between the GRUs and on P.
8. Ablations (Table V), as config switches: ``paths`` = audio | text keeps one modality (its DST
   path; MT needs both modalities so it goes; the speaker vector belongs to the audio path);
   ``use_dst`` = false drops DST (A', T', D_i, H_i); ``use_mt`` = false drops MT's learned layers
   (C, C_AT, C_TA: U is then S alone); ``speech_stream`` = fbank is "without ME" (log-mel frames from
   the cache in place of the pretrained speech encoder). ``use_speaker`` = false drops S ("w/o MT"
   keeps S unless it is also set: the paper credits MT with the speaker information).
9. ``dst_layers``: transformer layers per DST block (1; "the transformer encoders in the DST module
   contain two transformer layers" may mean 2 per block). ``max_fbank_len`` (1024 log-mel frames
   at 100 per second = 10.24 s, the seconds ``max_speech_len`` = 512 HuBERT frames at 50 per second
   keep) cuts the "w/o ME" input. ``paper`` reads the encoders' output embeddings: the last cached
   layer (``layer_mix=single``); ``--set layer_mix=weighted`` mixes every cached layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emofuse.errors import EmofuseError
from emofuse.heads.base import (
    AttentionLayer,
    Encoder,
    Head,
    HeadConfig,
    InputDims,
    LayerMix,
    avg_max_pool,
    pick,
    truncate,
    zero_padding,
)
from emofuse.heads.recipes import SMALL_RECIPE, SMALL_REGULARISATION

PATHS = ("both", "audio", "text")
GATES = ("full", "group", "diag")
CLASSIFIERS = ("mlp", "literal")


@dataclass
class TDFNetConfig(HeadConfig):
    d_model: int = 768  # common width after the ME projections
    heads: int = 12
    ffn: int = 4096
    global_layers: int = 2  # DST transformer layers giving A', T'
    n_blocks: int = 2  # N DST blocks
    conv_kernel: int = 3
    mt_layers: int = 2  # transformer layers over [A; T] (eq. 8)
    fusion_dim: int = 768  # width of P (eq. 11)
    max_speech_len: int | None = 512
    max_text_len: int | None = 128
    max_fbank_len: int | None = 1024  # the seconds of max_speech_len: 512 / 50 = 1024 / 100
    gate: str = "full"  # full | group | diag (eq. 11's W_alpha)
    classifier: str = "mlp"  # mlp | literal (P = GELU(W (alpha * O) + b) are the logits)
    dst_layers: int = 1  # transformer layers per DST block (eq. 5)
    speech_stream: str = "speech"  # speech | fbank (= "without ME")
    paths: str = "both"  # both | audio | text
    use_dst: bool = True
    use_mt: bool = True
    use_speaker: bool = True

    def validate(self) -> None:
        super().validate()
        if self.paths not in PATHS:
            raise EmofuseError(f"--set paths={self.paths}: choose one of {', '.join(PATHS)}")
        if self.speech_stream not in ("speech", "fbank"):
            raise EmofuseError(f"--set speech_stream={self.speech_stream}: choose speech or fbank")
        for key, choices in (("gate", GATES), ("classifier", CLASSIFIERS)):
            if getattr(self, key) not in choices:
                raise EmofuseError(
                    f"--set {key}={getattr(self, key)}: choose one of {', '.join(choices)}"
                )
        if self.dst_layers < 1:
            raise EmofuseError(f"--set dst_layers={self.dst_layers}: use 1 or more")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise EmofuseError(f"--set conv_kernel={self.conv_kernel}: use an odd kernel size")
        if self.n_blocks < 0 or self.global_layers < 0 or self.mt_layers < 0:
            raise EmofuseError("--set n_blocks/global_layers/mt_layers: counts must be >= 0")
        for i in range(self.n_blocks + 1):
            width = self.d_model // 2**i
            if self.d_model % 2**i or width % self.heads:
                raise EmofuseError(
                    f"--set d_model={self.d_model}: with n_blocks={self.n_blocks} and "
                    f"heads={self.heads}, d_model / 2^i must stay divisible by heads"
                )
        for key in ("max_speech_len", "max_text_len", "max_fbank_len"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise EmofuseError(f"--set {key}={value}: use a positive length or none")

    @property
    def speech_on(self) -> bool:
        return self.paths in ("both", "audio")

    @property
    def text_on(self) -> bool:
        return self.paths in ("both", "text")

    @property
    def speech_len(self) -> int | None:
        """Rows kept of the speech stream: ``max_fbank_len`` for log-mel frames ("w/o ME")."""
        return self.max_fbank_len if self.speech_stream == "fbank" else self.max_speech_len

    @property
    def mt_on(self) -> bool:
        return self.use_mt and self.paths == "both"

    @property
    def speaker_on(self) -> bool:
        return self.use_speaker and self.speech_on


class SharedGRU(nn.Module):
    """GRU_1 (hidden 2w) -> GRU_2 (hidden w), eqs. 1-2: one module, called by both paths."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.gru1 = nn.GRU(width, 2 * width, batch_first=True)
        self.gru2 = nn.GRU(2 * width, width, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        # Masks are prefixes (real rows first) and the GRUs run forward in time, so a real row only
        # ever sees real rows before it: running on the padded batch gives the real rows exactly
        # what packing would (to float rounding), 1.5x faster on CPU. Padded rows are zeroed.
        # fp32 even under autocast: cuDNN takes bf16 RNN input only when torch was built against
        # cuDNN >= 9.13 (pytorch PR #164411, not in the pinned 2.9.1); otherwise a bf16 GRU falls
        # back to one fused-cell kernel per time step and its autograd graph (T nodes per GRU).
        with torch.autocast(x.device.type, enabled=False):
            hidden, _ = self.gru1(x.float())  # G_h (B, T, 2w)
            out, _ = self.gru2(self.drop(hidden))  # G_A / G_T (B, T, w)
        return out * mask[..., None]  # (B, T, w)


def halve_mask(mask: Tensor) -> Tensor:
    """(B, T) prefix mask -> (B, ceil(T/2)): the rows a stride-2 'same' conv computes from real input."""
    lengths = (mask.sum(1) + 1) // 2  # (B,)
    steps = torch.arange((mask.shape[1] + 1) // 2, device=mask.device)
    return steps[None, :] < lengths[:, None]  # (B, ceil(T/2))


class DeepScale(nn.Module):
    """DST (Fig. 2): global layers -> A'; N x (conv down, shared GRU, transformer layer) -> D_i."""

    def __init__(self, cfg: TDFNetConfig, modalities: tuple[str, ...]) -> None:
        super().__init__()
        d, k = cfg.d_model, cfg.conv_kernel
        self.globals = nn.ModuleDict(
            {m: Encoder(cfg.global_layers, d, cfg.heads, cfg.ffn, cfg.dropout) for m in modalities}
        )
        self.convs, self.grus, self.layers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(cfg.n_blocks):
            w_in, w = d // 2**i, d // 2 ** (i + 1)
            self.convs.append(
                nn.ModuleDict(
                    {m: nn.Conv1d(w_in, w, k, stride=2, padding=k // 2) for m in modalities}
                )
            )
            self.grus.append(SharedGRU(w, cfg.dropout))
            self.layers.append(
                nn.ModuleDict(
                    {
                        m: AttentionLayer(w, cfg.heads, cfg.ffn, cfg.dropout)
                        if cfg.dst_layers == 1  # one layer keeps the state-dict keys of old runs
                        else Encoder(cfg.dst_layers, w, cfg.heads, cfg.ffn, cfg.dropout)
                        for m in modalities
                    }
                )
            )

    def forward(self, seqs: dict[str, tuple[Tensor, Tensor]]) -> dict[str, tuple[Tensor, list]]:
        """{modality: (x (B, T, d), mask)} -> {modality: (A' (B, T, d), [(D_i, mask_i), ...])}.

        The shared GRU sees both modalities in ONE call (stacked along the batch): the same
        weights either way, half the sequential GRU steps of running the paths one after the other.
        """
        h = {m: (self.globals[m](x, mask), mask) for m, (x, mask) in seqs.items()}  # A', T'
        out = {m: (h[m][0], []) for m in seqs}
        for conv, gru, layer in zip(self.convs, self.grus, self.layers, strict=True):
            down = {}
            for m, (x, mask) in h.items():
                x = conv[m](zero_padding(x, mask).transpose(1, 2)).transpose(1, 2)
                down[m] = (x, halve_mask(mask))  # (B, ceil(T/2), w)
            grouped = joint_gru(gru, down)  # G_A, G_T
            for m, (_, mask) in down.items():
                h[m] = (layer[m](grouped[m], mask), mask)  # D_i / H_i (B, T_i, w), eq. 5
                out[m][1].append(h[m])
        return out

    def path(self, modality: str, x: Tensor, mask: Tensor) -> tuple[Tensor, list[tuple]]:
        """One modality alone: A' (B, T, d) and [(D_i (B, T/2^i, d/2^i), mask_i)] for i = 1..N."""
        return self({modality: (x, mask)})[modality]


def joint_gru(gru: SharedGRU, parts: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Run one GRU over several masked sequences at once: stack along batch, split back."""
    length = max(x.shape[1] for x, _ in parts.values())
    xs = torch.cat([F.pad(x, (0, 0, 0, length - x.shape[1])) for x, _ in parts.values()])
    masks = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in parts.values()])
    ys = gru(xs, masks)  # (ΣB, T_max, w)
    out, row = {}, 0
    for m, (x, _) in parts.items():
        out[m] = ys[row : row + x.shape[0], : x.shape[1]]  # (B, T_m, w)
        row += x.shape[0]
    return out


class Mutual(nn.Module):
    """MT (Fig. 4, eqs. 6-9 without S): [Pool(C), Pool(C_AT), Pool(C_TA)] -> (B, 6d)."""

    def __init__(self, cfg: TDFNetConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.c_at = AttentionLayer(d, cfg.heads, cfg.ffn, cfg.dropout)
        self.c_ta = AttentionLayer(d, cfg.heads, cfg.ffn, cfg.dropout)
        self.concat = Encoder(cfg.mt_layers, d, cfg.heads, cfg.ffn, cfg.dropout)

    def forward(self, a: Tensor, a_mask: Tensor, t: Tensor, t_mask: Tensor) -> Tensor:
        c_at = self.c_at(a, a_mask, t, t_mask)  # (B, T_a, d), eqs. 6-7
        c_ta = self.c_ta(t, t_mask, a, a_mask)  # (B, T_t, d)
        both_mask = torch.cat([a_mask, t_mask], dim=1)  # (B, T_a + T_t)
        c = self.concat(torch.cat([a, t], dim=1), both_mask)  # (B, T_a + T_t, d), eq. 8
        return torch.cat(
            [avg_max_pool(c, both_mask), avg_max_pool(c_at, a_mask), avg_max_pool(c_ta, t_mask)],
            dim=-1,
        )  # (B, 6d)


class FusionGate(nn.Module):
    """MFC eq. 11: alpha = sigmoid(W_alpha O); P = GELU(W (alpha * O) + b).

    ``gate``: full W_alpha (|O| x |O|), group (|O| x G: one score per feature group, ``groups`` =
    their widths in O's order) or diag (one weight per feature). ``dropout`` 0 when P are logits."""

    def __init__(
        self, in_dim: int, out_dim: int, dropout: float, gate: str = "full", groups=()
    ) -> None:
        super().__init__()
        self.kind = gate
        if gate == "diag":
            self.weight = nn.Parameter(torch.ones(in_dim))
        else:
            self.gate = nn.Linear(in_dim, in_dim if gate == "full" else len(groups), bias=False)
        if gate == "group":  # feature j of O belongs to group group_of[j] (not a parameter)
            group_of = torch.tensor([g for g, n in enumerate(groups) for _ in range(n)])
            self.register_buffer("group_of", group_of, persistent=False)
        self.proj = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, o: Tensor) -> Tensor:
        if self.kind == "diag":
            alpha = torch.sigmoid(self.weight * o)  # (B, |O|)
        elif self.kind == "group":
            alpha = torch.sigmoid(self.gate(o))[:, self.group_of]  # (B, G) -> (B, |O|)
        else:
            alpha = torch.sigmoid(self.gate(o))  # (B, |O|)
        return self.drop(self.act(self.proj(alpha * o)))  # P (B, fusion_dim or C)


class TDFNet(Head):
    """TDFNet: deep-scale (DST) + mutual (MT) transformers fused by a gated classifier (MFC)."""

    name = "tdfnet"
    Config = TDFNetConfig
    presets = {
        # the defaults are the paper's sizes; the encoders' output embeddings (last cached layer)
        "paper": {"layer_mix": "single"},
        # layer_mix=concat: the input Linear reads every layer (validation UA 0.770 vs 0.742 with
        # the weighted mix, RAVDESS lopo); frames averaged 8 by 8 and at most 20 epochs: 0.772,
        # in 12.7 fold-minutes instead of ~35 (bench/RESULTS.md)
        "small": {
            "d_model": 64,
            "heads": 4,
            "ffn": 128,
            "fusion_dim": 64,
            "layer_mix": "concat",
            **SMALL_REGULARISATION,
            "frame_pool": 8,
        },
    }

    recipes = {"small": {**SMALL_RECIPE, "epochs": 20}}  # `paper`, no preset: the papers' loop
    # readings of eq. 11 and the Table V rows: `emofuse heads --json` counts each on every preset
    variants = {
        "gate=group": {"gate": "group"},
        "gate=diag": {"gate": "diag"},
        "classifier=literal": {"classifier": "literal"},
        "gate=group,classifier=literal": {"gate": "group", "classifier": "literal"},
        "dst_layers=2": {"dst_layers": 2},
        "audio path": {"paths": "audio"},
        "text path": {"paths": "text"},
        "w/o DST": {"use_dst": False},
        "w/o MT": {"use_mt": False},
        "w/o MT, w/o S": {"use_mt": False, "use_speaker": False},
        "w/o ME": {"speech_stream": "fbank"},
    }

    @classmethod
    def required_streams(cls, cfg: TDFNetConfig) -> set[str]:
        streams = set()
        if cfg.speech_on:
            streams.add(cfg.speech_stream)
        if cfg.text_on:
            streams.add("text")
        if cfg.speaker_on:
            streams.add("speaker")
        return streams

    def __init__(self, cfg: TDFNetConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        d = cfg.d_model
        modalities = tuple(m for m, on in (("speech", cfg.speech_on), ("text", cfg.text_on)) if on)
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.speech_on:
            layers, width = dims.get(cfg.speech_stream)
            self.speech_mix = LayerMix.from_config(layers, cfg)
            self.speech_proj = nn.Linear(self.speech_mix.out_dim(width), d)  # ME
        if cfg.text_on:
            layers, width = dims.get("text")
            self.text_mix = LayerMix.from_config(layers, cfg)
            self.text_proj = nn.Linear(self.text_mix.out_dim(width), d)  # ME
        # the widths of O's feature groups in eq. 10's order (as embed concatenates them)
        groups = [2 * d] * len(modalities)  # Pool(A), Pool(T)
        if cfg.use_dst:
            self.dst = DeepScale(cfg, modalities)
            groups += [2 * d] * len(modalities)  # Pool(A'), Pool(T')
        if cfg.speaker_on:
            groups.append(dims.get("speaker")[1])  # S in U
        if cfg.mt_on:
            self.mt = Mutual(cfg)
            groups += [2 * d] * 3  # Pool(C), Pool(C_AT), Pool(C_TA): U without S
        if cfg.use_dst:
            levels = [2 * (d // 2**i) for i in range(1, cfg.n_blocks + 1)]
            groups += levels * len(modalities)  # Pool(D_i), then Pool(H_i)
        self.groups, self.o_dim = groups, sum(groups)
        literal = cfg.classifier == "literal"  # P = GELU(W (alpha * O) + b) are the logits
        self.mfc = FusionGate(
            self.o_dim, n_classes if literal else cfg.fusion_dim, 0.0 if literal else cfg.dropout,
            cfg.gate, groups,
        )  # fmt: skip
        self.classifier = nn.Identity() if literal else nn.Linear(cfg.fusion_dim, n_classes)

    @classmethod
    def config_from_saved(cls, saved: dict[str, Any]) -> TDFNetConfig:
        """Runs saved before ``max_fbank_len`` cut log-mel frames at ``max_speech_len``."""
        if "max_fbank_len" not in saved:
            saved = {**saved, "max_fbank_len": saved.get("max_speech_len", 512)}
        return super().config_from_saved(saved)

    @classmethod
    def max_lengths(cls, cfg: TDFNetConfig) -> dict[str, int]:
        limits = {}
        if cfg.speech_on and cfg.speech_len is not None:
            limits[cfg.speech_stream] = cfg.speech_len
        if cfg.text_on and cfg.max_text_len is not None:
            limits["text"] = cfg.max_text_len
        return limits

    def inputs(self, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """ME: {modality: (projected sequence (B, T, d), mask (B, T))} after truncation."""
        out = {}
        if self.cfg.speech_on:
            x, mask = pick(batch, self.cfg.speech_stream)  # (B, T, L, D)
            x, mask = truncate(x, mask, self.cfg.speech_len)
            out["speech"] = (self.drop(self.speech_proj(self.speech_mix(x))), mask)  # A (B, T, d)
        if self.cfg.text_on:
            x, mask = pick(batch, "text")  # (B, N, L_t, D_t)
            x, mask = truncate(x, mask, self.cfg.max_text_len)
            out["text"] = (self.drop(self.text_proj(self.text_mix(x))), mask)  # T (B, N, d)
        return out

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        seqs = self.inputs(batch)
        pooled = [avg_max_pool(x, m) for x, m in seqs.values()]  # Pool(A), Pool(T): (B, 2d) each
        levels: list[Tensor] = []
        if self.cfg.use_dst:
            for modality, (x_global, deep) in self.dst(seqs).items():
                mask = seqs[modality][1]
                pooled.append(avg_max_pool(x_global, mask))  # Pool(A') (B, 2d)
                levels += [avg_max_pool(h, h_mask) for h, h_mask in deep]  # (B, 2d/2^i)
        u: list[Tensor] = []
        if self.cfg.speaker_on:
            if "speaker" not in batch:
                raise EmofuseError("the batch has no 'speaker' stream: load it from the cache")
            u.append(batch["speaker"].float())  # S (B, f)
        if self.cfg.mt_on:
            u.append(self.mt(*seqs["speech"], *seqs["text"]))  # (B, 6d)
        o = torch.cat(pooled + u + levels, dim=-1)  # O (B, |O|), eq. 10
        return self.mfc(o)  # P (B, fusion_dim), eq. 11
