"""``--device`` for every command: one resolution, one set of messages."""

from __future__ import annotations

import torch

from emofuse.errors import EmofuseError


def resolve_device(device: str | torch.device, local_rank: int | None = None) -> torch.device:
    """``auto`` → CUDA when a GPU is visible, else CPU; ``cpu``; ``cuda``; ``cuda:N``.

    ``local_rank`` (a torchrun process): a bare ``cuda`` (or ``auto`` on a GPU box) is that rank's GPU.
    """
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise EmofuseError(f"--device {device!r} is not a device; use auto, cpu or cuda") from err
    if dev.type not in ("cpu", "cuda"):
        raise EmofuseError(f"--device {device!r}: choose auto, cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EmofuseError(f"--device {device}: no CUDA device is visible; use --device cpu")
        if dev.index is None and local_rank is not None:
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return dev
