"""The training loop's settings (no torch import: the CLI reads the choices from here)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from emofuse.errors import EmofuseError

SCHEDULES = ("constant", "cosine", "linear")
SELECTS = ("loss", "ua")


@dataclass
class LoopConfig:
    """The training loop of one fold. The defaults are the papers' protocol (AdamW, lr 1e-4,
    batch 32, at most 20 epochs, early stopping with patience 3 on validation loss); each head's
    presets carry their own recipe (``Head.recipes``, resolved by ``emofuse.train.recipes``)."""

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-4
    patience: int = 3
    seed: int = 0
    class_weights: bool = False  # inverse-frequency weights in the loss (train labels of the fold)
    weight_decay: float = 0.01  # AdamW's default
    # standardise acoustic features per speaker (TrainData.normalize_per_speaker; transductive)
    speaker_norm: bool = False
    # lr schedule over all steps of `epochs` (transformers' get_scheduler), after a linear warm-up
    # of `warmup_epochs`; early stopping never stops before the warm-up has ended
    schedule: str = "constant"
    warmup_epochs: int = 0
    grad_clip: float = 0.0  # max global gradient norm (0 = no clipping)
    select: str = "loss"  # the checkpoint kept: lowest validation loss | highest validation UA
    mixup: float = 0.0  # mixup's Beta(alpha, alpha) over the prepared inputs (0 = off)
    # exponential moving average of the weights (decay per step; 0 = off): validation, selection
    # and predictions use the averaged model, which varies far less from epoch to epoch
    ema: float = 0.0

    def validate(self) -> None:
        for key in ("lr", "weight_decay", "grad_clip", "mixup", "ema"):
            value = getattr(self, key)
            if not math.isfinite(value):  # nan passes every range check below
                raise EmofuseError(f"--{key.replace('_', '-')} {value}: give a finite number")
        if self.schedule not in SCHEDULES:
            raise EmofuseError(f"--schedule {self.schedule}: choose one of {', '.join(SCHEDULES)}")
        if self.select not in SELECTS:
            raise EmofuseError(f"--select {self.select}: choose one of {', '.join(SELECTS)}")
        if self.warmup_epochs >= self.epochs:
            raise EmofuseError(
                f"--warmup-epochs {self.warmup_epochs} must be below --epochs {self.epochs}"
            )
        if self.mixup < 0 or self.grad_clip < 0:
            raise EmofuseError("--mixup and --grad-clip must be >= 0 (0 = off)")
        if not 0.0 <= self.ema < 1.0:
            raise EmofuseError(f"--ema {self.ema}: use a decay in [0, 1) (0 = off)")
