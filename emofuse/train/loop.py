"""One fold's training: AdamW, early stopping on validation loss, best checkpoint, predictions.

Model selection only ever sees the validation set (protocols.md: peers that pick checkpoints on the
test fold report inflated numbers). Everything random in a fold — initialisation, dropout, batch
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
from tqdm import tqdm

from emofuse.train.data import TrainData, upload
from emofuse.train.folds import Fold, fold_seed
from emofuse.train.metrics import scores


@dataclass
class LoopConfig:
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-4
    patience: int = 3
    seed: int = 0
    class_weights: bool = False  # inverse-frequency weights in the loss (train labels of the fold)
    weight_decay: float = 0.01  # AdamW's default
    # standardise acoustic features per speaker (TrainData.normalize_per_speaker; transductive)
    speaker_norm: bool = False


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
        batch = data.batch(b)
        with autocast(data.device):
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


def train_fold(
    build_model: Callable[[], nn.Module],
    data: TrainData,
    fold: Fold,
    cfg: LoopConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> FoldOutput:
    """Train one fold and return the best-validation-loss model's val/test probabilities."""
    seed = fold_seed(cfg.seed, fold.fold)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = data.device
    tr, va, te = (data.indices(ids) for ids in (fold.train, fold.val, fold.test))
    n_classes = len(data.label_names)
    model = build_model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = class_weight_tensor(data.labels[tr.to(data.labels.device)], n_classes)
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if cfg.class_weights else None)
    val_loss_fn = nn.CrossEntropyLoss(weight=weight if cfg.class_weights else None)  # on CPU

    names = np.asarray(data.label_names)
    val_true = data.labels[va.to(data.labels.device)].cpu()  # (N_val,)
    best_loss, best_epoch, best_state, stale = float("inf"), 0, None, 0
    curves: list[dict[str, Any]] = []
    bar = tqdm(
        range(1, cfg.epochs + 1), desc=f"fold {fold.fold}", disable=not progress, leave=False
    )
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        total, seen = torch.zeros((), device=device), 0  # summed on the device: no sync per step
        for b in data.train_batches(tr, cfg.batch_size, gen):
            batch = data.batch(b)
            with autocast(device):
                logits = model(batch)  # (B, C)
            loss = loss_fn(logits.float(), upload(data.targets(b), device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(b)
            seen += len(b)
        val_logits = forward_all(model, data, va, cfg.batch_size)  # (N_val, C)
        val_loss = float(val_loss_fn(val_logits, val_true))
        val_scores = scores(names[val_true.numpy()], names[val_logits.argmax(1).numpy()])
        row = {
            "fold": fold.fold,
            "epoch": epoch,
            "train_loss": float(total) / max(seen, 1),
            "val_loss": val_loss,
            "val_UA": val_scores["UA"],
            "val_WA": val_scores["WA"],
            "seconds": time.perf_counter() - t0,
        }
        curves.append(row)
        if on_epoch:
            on_epoch(row)
        bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{val_loss:.3f}")
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    assert best_state is not None
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
