"""A reproduced table's rows: what each trains (head, split, overrides) or fuses, and where.

A row is either a training row (``head`` with ``--set`` overrides on top of the preset, on
``split``) or a late-fusion row (``members``: the slugs of earlier rows whose runs it fuses with
``emofuse fuse``). Each row and seed is an ordinary run folder ``DIR/<slug>/seed<k>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    slug: str  # run folder name under DIR (and the row's key in paper_figures.json)
    split: str
    head: str = "tdfnet"
    overrides: dict[str, str] = field(default_factory=dict)  # --set key=value strings
    members: tuple[str, ...] = ()  # a late-fusion row: the rows it fuses (trained before it)
    name: str = ""  # what the table calls it

    @property
    def fused(self) -> bool:
        return bool(self.members)


def run_dir(out: Path, slug: str, seed: int) -> Path:
    return Path(out) / slug / f"seed{seed}"


def paper_figures(paper: str) -> dict[str, Any]:
    """The published figures of ``paper`` (tdfnet, multilevel) from paper_figures.json, the one
    data file that holds them, each with the table or statement it comes from."""
    text = resources.files("emofuse.reproduce").joinpath("paper_figures.json").read_text()
    return json.loads(text)[paper]
