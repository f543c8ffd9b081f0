"""A head checked once on the loaded data before a run writes anything: it builds with this
config, and its forward on two utterances has the right shape, is finite and has a gradient path
(a user head's mistake is one line naming the head, not a traceback from inside the first fold).
"""

from __future__ import annotations

from typing import Any

import torch

from emofuse.errors import EmofuseError
from emofuse.train.checkpoints import make_dims
from emofuse.train.data import TrainData
from emofuse.train.headerrors import reason as _reason

BYTES_PER_PARAMETER = 16  # float32 weight, its gradient and AdamW's two moments


def _parameters_on_meta(head_cls: type, cfg: Any, dims: Any, n_classes: int) -> int | None:
    """The head's parameter count, built on the meta device (no memory), or None where its
    constructor does something the meta device cannot."""
    try:
        with torch.device("meta"):
            model = head_cls(cfg, dims, n_classes)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - the real build below reports real errors
        return None


def check_buildable(
    head_spec: str, head_cls: type, cfg: Any, dims: Any, n_classes: int, sets: dict[str, str]
) -> None:
    """Build the head once before anything is written: a config value that only its layers
    refuse (a user head without checks of its own), or one that makes the head larger than the
    memory this machine has free (the OOM killer would end the run without a word), is one line,
    and leaves no run folder."""
    from emofuse.train.parallel import available_memory

    given = " ".join(f"--set {k}={v}" for k, v in sets.items()) or "its preset's values"
    count = _parameters_on_meta(head_cls, cfg, dims, n_classes)
    free = available_memory()
    if count is not None and free is not None and count * BYTES_PER_PARAMETER > free:
        need = count * BYTES_PER_PARAMETER / 2**30
        raise EmofuseError(
            f"head {head_spec} would have {count:,} parameters ({need:,.1f} GiB with gradients "
            f"and optimizer state), more than the {free / 2**30:.1f} GiB of memory free; choose "
            f"smaller sizes than {given}"
        )
    try:
        head_cls(cfg, dims, n_classes)
    except EmofuseError:
        raise
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a user head may raise anything
        raise EmofuseError(
            f"head {head_spec} cannot be built with this config ({_reason(err, head_spec)}); "
            f"check {given}"
        ) from None


def check_forward(head_spec: str, head_cls: type, cfg: Any, data: TrainData) -> None:
    """Run the head once on a batch of two utterances before anything is written: a user head
    whose layers do not fit together (``embed``'s width against its classifier), whose output is
    not finite, or whose output has no gradient path to a trainable parameter is one line naming
    the head, not a traceback (or a wrong advice) from inside the first fold."""
    from emofuse.train.loop import autocast

    n_classes = len(data.label_names)
    idx = torch.arange(min(2, len(data.ids)))
    try:
        model = head_cls(cfg, make_dims(data), n_classes).to(data.device).eval()
        with torch.enable_grad(), autocast(data.device):  # with grad: the path training needs
            logits = model(model.prepare(data.batch(idx, dtype=None)))
        shape = tuple(getattr(logits, "shape", ()))
    except EmofuseError:
        raise
    except (Exception, SystemExit) as err:  # noqa: BLE001 - a user head may raise anything
        raise EmofuseError(
            f"head {head_spec}: its forward failed on a batch of {len(idx)} utterances "
            f"({_reason(err, head_spec)}); fix the head's layers (e.g. the width its embed "
            "returns against what its classifier takes)"
        ) from None
    if shape != (len(idx), n_classes):
        raise EmofuseError(
            f"head {head_spec}: its forward returned shape {shape} for a batch of {len(idx)} "
            f"utterances, not (batch, {n_classes} classes); fix the head's classifier"
        )
    check_logits(head_spec, logits, len(idx))


def check_logits(head_spec: str, logits: torch.Tensor, n: int) -> None:
    """The smoke batch's logits are finite and depend on a trainable parameter (else
    ``loss.backward()`` fails in the first fold, or every epoch's loss is NaN)."""
    if not bool(torch.isfinite(logits.detach()).all()):
        raise EmofuseError(
            f"head {head_spec}: its output is not finite (NaN or inf) on a batch of {n} "
            "utterances before any training step, so its forward is broken (not the learning "
            "rate); fix the head's forward"
        )
    if not logits.requires_grad:
        raise EmofuseError(
            f"head {head_spec}: its output does not depend on any trainable parameter (no "
            "gradient reaches its layers, so it cannot be trained); compute forward's logits "
            "from the head's layers, e.g. self.classifier(self.embed(batch))"
        )
