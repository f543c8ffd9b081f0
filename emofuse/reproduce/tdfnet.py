"""TDFNet's tables (Zhao et al., TASLP 2023) as rows of runs: Table I (splits), Table V (ablations).

Each row (``plan.Row``) is the run folder's name, the fold split and the head's ``--set``
overrides on top of the preset. Table V's ablations are ``TDFNet.variants`` entries, so
the head and this table cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from emofuse.errors import EmofuseError
from emofuse.reproduce import plan
from emofuse.reproduce.plan import Row

HEAD = "tdfnet"
FULL = "full"  # Table V's reference row: every other row is compared with it


def _sets(variant: str) -> dict[str, str]:
    from emofuse.heads.tdfnet import TDFNet

    def text(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    return {k: text(v) for k, v in TDFNet.variants[variant].items()}


def rows(table: int) -> list[Row]:
    """The rows of Table ``table`` (1 or 5), in the paper's order (Table V: the full model first)."""
    if table == 1:
        return [Row("loso", "loso", HEAD), Row("lopo", "lopo", HEAD), Row("ra", "ra", HEAD)]
    if table == 5:
        return [
            Row(FULL, "loso", HEAD),
            Row("audio-path", "loso", HEAD, _sets("audio path")),
            Row("text-path", "loso", HEAD, _sets("text path")),
            Row("no-dst", "loso", HEAD, _sets("w/o DST")),
            Row("no-mt", "loso", HEAD, _sets("w/o MT")),
            Row("no-me", "loso", HEAD, _sets("w/o ME")),
        ]
    raise EmofuseError(f"--table {table}: TDFNet's reproducible tables are 1 and 5")


TABLES = (1, 5)


def paper_figures() -> dict[str, Any]:
    """paper_figures.json's TDFNet part: per table its name and per row (slug) WA/UA (%)."""
    return plan.paper_figures("tdfnet")


def fold_key(split: str, test_name: str, fold: int) -> str:
    """The paper's name for a fold (Table I's columns) from what the fold tests."""
    if split == "loso":
        digits = "".join(c for c in test_name if c.isdigit())
        return f"Session{int(digits)}" if digits else test_name
    if split == "lopo":
        return test_name.replace("_", "")
    return f"Fold{fold}"
