"""One fold's training: AdamW, a warm-up + decay schedule, early stopping and checkpoint selection
on validation (loss or UA), predictions.

Model selection only ever sees the validation set (docs/architecture.md §6; peers that pick
checkpoints on the test fold report inflated numbers). Everything random in a fold — initialisation, dropout, batch
order — is seeded from ``fold_seed(seed, k)`` alone, so a fold gives the same result whether it
runs in a whole plan, alone, resumed, or on another torchrun rank.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from emofuse.errors import EmofuseError
from emofuse.progress import progress_bar
from emofuse.train.config import LoopConfig
from emofuse.train.data import TrainData, upload
from emofuse.train.folds import Fold, fold_seed
from emofuse.train.metrics import scores


@dataclass
class FoldOutput:
    fold: int
    val_idx: Tensor  # (N_val,)
    val_probs: np.ndarray  # (N_val, C)
    test_idx: Tensor  # (N_test,)
    test_probs: np.ndarray  # (N_test, C)
    best_epoch: int
    state_dict: dict[str, Tensor]
    curves: list[dict[str, Any]] = field(default_factory=list)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaling needed); plain fp32 elsewhere for determinism."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def class_weight_tensor(labels: Tensor, n_classes: int) -> Tensor:
    """Inverse-frequency weights n / (C * count_c), so a balanced set gets all ones."""
    counts = torch.bincount(labels.cpu(), minlength=n_classes).float()  # (C,)
    return labels.numel() / (n_classes * counts.clamp(min=1))


@torch.no_grad()
def forward_all(
    model: nn.Module, data: TrainData, idx: Tensor, batch_size: int, embed: bool = False
) -> Tensor:
    """Logits (or ``head.embed`` vectors) for rows ``idx``, fp32 on the CPU, in the order of ``idx``.

    Batches are length-sorted for speed; results are scattered back by position.
    """
    model.eval()
    pos = torch.empty(len(data.ids), dtype=torch.long)
    pos[idx] = torch.arange(len(idx))
    rows: list[Tensor] = []
    ys: list[Tensor] = []
    for b in data.eval_batches(idx, batch_size):
        batch = data.batch(b, dtype=None)  # stored dtype: prepare converts as it standardises
        with autocast(data.device):
            batch = model.prepare(batch)
            y = model.embed(batch) if embed else model(batch)  # (B, E) | (B, C)
        rows.append(pos[b])
        ys.append(y.float())  # stays on the device: one copy to the host at the end, not B syncs
    ordered = torch.cat(ys).cpu()  # (N, E) | (N, C), in length-sorted order
    out = torch.zeros_like(ordered)
    out[torch.cat(rows)] = ordered  # back to the order of ``idx``
    return out


def predict_probs(model: nn.Module, data: TrainData, idx: Tensor, batch_size: int) -> np.ndarray:
    """Class probabilities (N, C) for rows ``idx``, in the order of ``idx``."""
    return torch.softmax(forward_all(model, data, idx, batch_size), dim=-1).numpy()


def make_scheduler(opt: torch.optim.Optimizer, cfg: LoopConfig, steps_per_epoch: int):
    """Warm-up then ``cfg.schedule`` over every step of ``cfg.epochs`` (transformers' schedules)."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule)
    return get_scheduler(
        name,
        opt,
        num_warmup_steps=cfg.warmup_epochs * steps_per_epoch,
        num_training_steps=cfg.epochs * steps_per_epoch,
    )


def mix_batch(
    batch: dict[str, Tensor], gen: torch.Generator, alpha: float
) -> tuple[dict[str, Tensor], Tensor, float]:
    """Mixup of prepared inputs: x = lam x + (1 - lam) x[perm]; masks are their union."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1.0 - lam)  # the first utterance dominates: its label carries more weight
    n = next(iter(batch.values())).shape[0]
    perm = torch.randperm(n, generator=gen)
    out = {}
    for key, x in batch.items():
        p = perm.to(x.device)
        if x.dtype == torch.bool:
            out[key] = x | x[p]
        elif x.is_floating_point():
            out[key] = lam * x + (1.0 - lam) * x[p]
        else:
            out[key] = x
    return out, perm, lam


SANE_WEIGHT = 1e4  # |weight| below which a loss gone non-finite is the forward's doing
ABSURD_LR = 0.1  # above it no head here trains: advise the recipes' range, not a tenth of it


def _not_finite(
    fold: int, epoch: int, what: str, cfg: LoopConfig, model: nn.Module, head: str = "the head"
) -> EmofuseError:
    """A loss gone non-finite: diverged weights (the lr's doing), or a forward that emits NaN or
    inf from finite, ordinary weights (the head's: a lower lr cannot help). Weights of a trained
    head on z-scored inputs are O(1); below ``SANE_WEIGHT`` they cannot overflow its logits."""
    largest = max(
        (float(p.detach().abs().max()) for p in model.parameters() if p.numel()), default=0.0
    )
    if np.isfinite(largest) and largest < SANE_WEIGHT:
        return EmofuseError(
            f"fold {fold}, epoch {epoch}: the {what} went non-finite (NaN or inf) while every "
            f"weight of {head} is finite and small (largest {largest:.3g}), so its forward "
            "produced it (a lower --lr or --grad-clip cannot help); fix the head's forward"
        )
    if cfg.weight_decay >= 1.0:  # decoupled decay of lr x wd per step: >= 1 flips the weights
        return EmofuseError(
            f"fold {fold}, epoch {epoch}: the {what} went non-finite (NaN or inf) with "
            f"--weight-decay {cfg.weight_decay:g}, which shrinks every weight by lr x "
            f"{cfg.weight_decay:g} per step; use a weight decay below 1 (the recipes use 0.01-0.1)"
        )
    # AdamW's step is about lr per weight whatever the gradient's norm: clipping cannot help
    example = (  # a tenth of an absurd lr diverges again: point at the range that trains
        f"e.g. --lr {cfg.lr / 10:g}"
        if cfg.lr <= ABSURD_LR
        else "the heads train at 1e-4 to 1e-3: leave --lr out for the head's recipe, or e.g. "
        "--lr 0.001"
    )
    return EmofuseError(
        f"fold {fold}, epoch {epoch}: the {what} went non-finite (NaN or inf) with lr {cfg.lr:g}; "
        f"lower --lr ({example}; AdamW moves each weight by about lr a step, so --grad-clip "
        "cannot stop this)"
    )


def _broken_forward(fold: int, head: str) -> EmofuseError:
    """A loss that is not finite before any optimizer step: the head's forward, not the lr."""
    return EmofuseError(
        f"fold {fold}, epoch 1: head {head}'s output is not finite (NaN or inf) on the first "
        "batch, before any training step, so its forward is broken (a lower --lr or --grad-clip "
        "cannot help); fix the head's forward"
    )


def train_fold(
    build_model: Callable[[], nn.Module],
    data: TrainData,
    fold: Fold,
    cfg: LoopConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    head: str = "the head",
) -> FoldOutput:
    """Train one fold; return the selected checkpoint's val/test probabilities (see LoopConfig).

    ``head``: the head's name for messages (a loss that is NaN before any step names it)."""
    cfg.validate()
    seed = fold_seed(cfg.seed, fold.fold)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = data.device
    tr, va, te = (data.indices(ids) for ids in (fold.train, fold.val, fold.test))
    n_classes = len(data.label_names)
    model = build_model().to(device)
    model.input_pipeline.fit(data.stream_stats(tr))  # training rows of this fold only
    # fused: one kernel for every parameter (4x faster steps than the per-tensor loop on a CPU)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
    )
    steps_per_epoch = -(-len(tr) // cfg.batch_size)
    sched = make_scheduler(opt, cfg, steps_per_epoch)
    averaged = (
        AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        if cfg.ema
        else None
    )
    judged = averaged.module if averaged is not None else model  # what validation sees
    weight = class_weight_tensor(data.labels[tr.to(data.labels.device)], n_classes)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if cfg.class_weights else None)
    val_loss_fn = nn.CrossEntropyLoss(weight=weight if cfg.class_weights else None)  # on CPU

    names = np.asarray(data.label_names)
    val_true = data.labels[va.to(data.labels.device)].cpu()  # (N_val,)
    best_key, best_epoch, best_state, stale = None, 0, None, 0
    curves: list[dict[str, Any]] = []
    bar = progress_bar(
        range(1, cfg.epochs + 1), desc=f"fold {fold.fold}", enabled=progress, leave=False
    )
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        total, seen = torch.zeros((), device=device), 0  # summed on the device: no sync per step
        for b in data.train_batches(tr, cfg.batch_size, gen):
            with autocast(device):
                batch = model.prepare(data.batch(b, dtype=None))
                y = upload(data.targets(b), device)
                if cfg.mixup > 0:
                    batch, perm, lam = mix_batch(batch, gen, cfg.mixup)
                    logits = model(batch).float()  # (B, C)
                    loss = lam * loss_fn(logits, y) + (1 - lam) * loss_fn(
                        logits, y[perm.to(device)]
                    )
                else:
                    loss = loss_fn(model(batch).float(), y)  # (B, C) logits
            # on the CPU every step is checked (no sync to save): the weights are then the
            # ones that gave the NaN, so the lr and the head's forward can be told apart
            first = epoch == 1 and seen == 0
            if (first or device.type == "cpu") and not bool(torch.isfinite(loss)):
                if first:  # one sync a fold on a GPU
                    raise _broken_forward(fold.fold, head)
                raise _not_finite(fold.fold, epoch, "training loss", cfg, model, head)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total += loss.detach() * len(b)
            seen += len(b)
        train_loss = float(total) / max(seen, 1)
        if not np.isfinite(train_loss):
            raise _not_finite(fold.fold, epoch, "training loss", cfg, model, head)
        val_logits = forward_all(judged, data, va, cfg.batch_size)  # (N_val, C)
        val_loss = float(val_loss_fn(val_logits, val_true))
        if not np.isfinite(val_loss):
            raise _not_finite(fold.fold, epoch, "validation loss", cfg, judged, head)
        val_scores = scores(names[val_true.numpy()], names[val_logits.argmax(1).numpy()])
        row = {
            "fold": fold.fold,
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_UA": val_scores["UA"],
            "val_WA": val_scores["WA"],
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        curves.append(row)
        if on_epoch:
            on_epoch(row)
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
        # higher is better: UA first (loss breaks ties) or loss alone
        key = (val_scores["UA"], -val_loss) if cfg.select == "ua" else (-val_loss,)
        if best_key is None or key > best_key:
            best_key, best_epoch, stale = key, epoch, 0
            best_state = copy.deepcopy(
                {k: v.detach().cpu() for k, v in judged.state_dict().items()}
            )
        elif epoch > cfg.warmup_epochs:  # patience counts only once the warm-up is over
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return FoldOutput(
        fold=fold.fold,
        val_idx=va,
        val_probs=predict_probs(model, data, va, cfg.batch_size),
        test_idx=te,
        test_probs=predict_probs(model, data, te, cfg.batch_size),
        best_epoch=best_epoch,
        state_dict=best_state,
        curves=curves,
    )
