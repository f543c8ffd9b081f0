"""``pooled``: the statistics-pooling probe over the cached per-layer mean and std of the speech frames.

This is the peer-style linear probe (mean + std pooling, standardised features, a linear classifier)
as a head of this toolkit, with the two choices the peers make by hand done by training instead:

- Input: ``speech_mean`` and ``speech_std`` (L, D) each, written by ``emofuse extract`` (the mean and
  std of every cached speech layer over the utterance's real frames). Concatenated to (L, 2D).
- Standardisation: every (layer, dim) feature is z-scored with the mean and std of the training
  rows (``Standardize``: running sums over the rows seen in training mode, so after the first epoch
  it is the training set's statistics; frozen in eval mode and saved with the checkpoint). The
  peers' ``StandardScaler``; without it a few outlier dimensions of deep Whisper/HuBERT layers
  dominate every dot product.
- Layers: instead of picking one layer on the test set (the README reference does), either
  ``combine=ensemble`` (default): one linear classifier per layer, their class probabilities
  averaged (a layer ensemble, trained jointly: the loss is the cross-entropy of the averaged
  probabilities); or ``combine=mix``: a softmax layer mix (SUPERB) over the standardised layers
  learns which layers help and one classifier reads the mix. Layers carry different evidence
  (Pasad et al. 2021 on the layer-wise content of SSL models), and the ensemble uses all of it
  without choosing. On RAVDESS lopo it scores above every single layer's probe and above the mix
  (bench/RESULTS.md).
- Classifier: ``hidden`` = 0 is linear (the probe); > 0 (with ``combine=mix``) puts one ReLU layer
  of that width first.
  Weight decay (AdamW) plays the part of the probe's L2 penalty.

It never sees a frame, so an epoch over IEMOCAP takes well under a second on a CPU: the fast,
strong baseline every fusion head should be compared with. Its recipe (``POOLED_RECIPE``, used
without flags) trains with a larger step and more epochs than the papers' loop: lr 1e-3 after a
3-epoch warm-up with cosine decay, up to 60 epochs, patience 8, mixup 0.2 (with lr 1e-4 and 20
epochs every fold is still improving at epoch 20 and the RAVDESS lopo UA is 0.689).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from emofuse.errors import EmofuseError
from emofuse.heads.base import Head, HeadConfig, InputDims, LayerMix


@dataclass
class PooledConfig(HeadConfig):
    hidden: int = 0  # 0 = linear (the probe); > 0 = one ReLU layer first (with combine=mix)
    stats: str = "meanstd"  # meanstd | mean: which cached pooled statistics to use
    combine: str = "ensemble"  # ensemble: a linear probe per layer | mix: layer mix, one classifier

    def validate(self) -> None:
        # options of the mix that the ensemble has no use for (before the base checks, which
        # would name a lesser cause: mix_index without layer_mix=single)
        if self.combine == "ensemble":
            defaults = {f.name: f.default for f in fields(self)}
            for key in ("hidden", "layer_mix", "mix_index", "layer_norm"):
                value = getattr(self, key)
                if value != defaults[key]:
                    raise EmofuseError(
                        f"--set {key}={value} needs --set combine=mix (the default ensemble is a "
                        "linear probe per layer)"
                    )
        super().validate()
        if self.hidden < 0:
            raise EmofuseError(f"--set hidden={self.hidden}: use 0 (linear) or a positive width")
        if self.stats not in ("meanstd", "mean"):
            raise EmofuseError(f"--set stats={self.stats}: choose meanstd or mean")
        if self.combine not in ("mix", "ensemble"):
            raise EmofuseError(f"--set combine={self.combine}: choose mix or ensemble")


class Standardize(nn.Module):
    """z-score every feature with statistics of the rows seen in training mode (a StandardScaler).

    Training mode adds the batch to running float64 sums and normalises with the statistics so far;
    eval mode uses them frozen. The statistics are buffers, so checkpoints carry them.
    """

    def __init__(self, shape: tuple[int, ...], eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(shape, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:  # (B, *shape) -> (B, *shape)
        if self.training:
            with torch.no_grad():
                x64 = x.detach().double()
                self.count += x.shape[0]
                self.total += x64.sum(0)
                self.total_sq += (x64 * x64).sum(0)
        if self.count == 0:  # never trained: leave the features as they are
            return x
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp(min=0.0)
        return (x - mean.to(x.dtype)) / (var.sqrt() + self.eps).to(x.dtype)


POOLED_RECIPE = {"lr": 1e-3, "epochs": 60, "patience": 8, "schedule": "cosine", "warmup_epochs": 3,
                 "mixup": 0.2}  # fmt: skip


class PooledProbe(Head):
    """(B, L, D) mean [+ (B, L, D) std] -> standardise -> layer mix -> [Linear + ReLU] -> classes,
    or (``combine=ensemble``) -> standardise -> a Linear per layer -> mean of their probabilities."""

    name = "pooled"
    Config = PooledConfig
    presets = {"small": {"hidden": 0}, "paper": {"hidden": 0}}  # one size: the linear probe
    # a larger step and more epochs than the papers' loop (at lr 1e-4 every fold still improves at
    # epoch 20: RAVDESS lopo UA 0.689), cosine decay and mixup: validation UA 0.767 vs 0.754 for the
    # constant lr 1e-3 and 0.755 with feature masks instead of mixup (bench/RESULTS.md)
    recipes = {None: POOLED_RECIPE, "small": POOLED_RECIPE}
    saved_defaults = {"combine": "mix"}  # runs saved before `combine` existed used the mix

    @classmethod
    def required_streams(cls, cfg: PooledConfig) -> set[str]:
        return {"speech_mean", "speech_std"} if cfg.stats == "meanstd" else {"speech_mean"}

    def __init__(self, cfg: PooledConfig, dims: InputDims, n_classes: int) -> None:
        super().__init__(cfg, dims, n_classes)
        layers, width = dims.get("speech_mean")
        if cfg.stats == "meanstd" and dims.get("speech_std") != (layers, width):
            raise EmofuseError(
                f"speech_mean {layers}x{width} and speech_std {dims.get('speech_std')} differ: "
                "the cache is inconsistent (re-extract it)"
            )
        feat = width * (2 if cfg.stats == "meanstd" else 1)
        self.norm = Standardize((layers, feat))
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.combine == "ensemble":  # per layer l: logits_l = z_l W_l + b_l, nn.Linear's init
            bound = 1.0 / math.sqrt(feat)
            self.member_weight = nn.Parameter(torch.empty(layers, feat, n_classes))  # (L, F, C)
            self.member_bias = nn.Parameter(torch.empty(layers, n_classes))  # (L, C)
            nn.init.uniform_(self.member_weight, -bound, bound)
            nn.init.uniform_(self.member_bias, -bound, bound)
            return
        self.mix = LayerMix.from_config(layers, cfg)
        mixed = self.mix.out_dim(feat)
        if cfg.hidden:
            self.body: nn.Module = nn.Sequential(
                nn.Linear(mixed, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)
            )
            out = cfg.hidden
        else:
            self.body = nn.Identity()
            out = mixed
        self.classifier = nn.Linear(out, n_classes)

    def _standardised(self, batch: dict[str, Tensor]) -> Tensor:
        if "speech_mean" not in batch:
            raise EmofuseError("the batch has no 'speech_mean' stream: load it from the cache")
        x = batch["speech_mean"]  # (B, L, D)
        if self.cfg.stats == "meanstd":
            x = torch.cat([x, batch["speech_std"]], dim=-1)  # (B, L, 2D)
        return self.norm(x)  # (B, L, F)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        z = self._standardised(batch)  # (B, L, F)
        if self.cfg.combine == "ensemble":
            return z.flatten(1)  # (B, L*F): what the members read
        return self.body(self.drop(self.mix(z)))  # (B, E): mixed over layers first

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        if self.cfg.combine == "mix":
            return super().forward(batch)  # (B, C)
        z = self.drop(self._standardised(batch))  # (B, L, F)
        logits = torch.einsum("blf,lfc->blc", z, self.member_weight) + self.member_bias  # (B, L, C)
        # log of the members' mean probability, (B, C): its softmax is that mean, and the loop's
        # cross-entropy on it is the ensemble's own likelihood
        return torch.logsumexp(logits.log_softmax(-1), dim=1) - math.log(logits.shape[1])
