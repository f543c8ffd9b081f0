"""`emofuse heads`: every head and preset listed with parameter counts for the given widths."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from emofuse.cli.heads import heads_command
from emofuse.errors import EmofuseError
from emofuse.heads.base import InputDims, count_parameters
from emofuse.heads.registry import get_head, list_heads

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_head.py"


def test_json_lists_every_head_and_preset_with_counts() -> None:
    args = ["--json", "--speech-dim", "48", "--text-dim", "40", "--speaker-dim", "8"]
    result = CliRunner().invoke(heads_command, args + ["--speech-layers", "3"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    pairs = {(r["head"], r["preset"]) for r in rows}
    no_preset = {n for n in list_heads() if None in get_head(n).recipes}  # a recipe of their own
    assert no_preset >= {"audio", "concat", "pooled"}
    assert pairs == {(n, p) for n in list_heads() for p in ("small", "paper")} | {
        (n, None) for n in no_preset
    }
    for r in rows:  # every row shows the loop it trains with
        assert r["loop"]["lr"] > 0 and (r["preset"] != "paper" or r["loop_from_recipe"] == [])
    dims = InputDims(speech=(3, 48), text=(1, 40), speaker=8)
    cls = get_head("audio")
    with torch.device("meta"):
        expected = count_parameters(cls(cls.make_config("paper"), dims, 4))
    row = next(r for r in rows if r["head"] == "audio" and r["preset"] == "paper")
    assert row["parameters"] == expected == 3 + 48 * 256 + 256 + 256 * 4 + 4
    assert row["streams"] == ["speech"]


def test_table_includes_a_user_head_and_paper_tdfnet() -> None:
    spec = f"{EXAMPLE}:GatedMeanHead"
    result = CliRunner().invoke(heads_command, ["--head", spec])
    assert result.exit_code == 0, result.output
    cls = get_head("tdfnet")
    with torch.device("meta"):  # the defaults are the paper's widths: 1024 / 768 / 192, 4 classes
        head = cls(
            cls.make_config("paper"), InputDims(speech=(1, 1024), text=(1, 768), speaker=192), 4
        )
    paper_line = next(line for line in result.output.splitlines() if line.startswith("tdfnet  "))
    assert f"{count_parameters(head):,}" in paper_line and "paper" in paper_line
    user = [line for line in result.output.splitlines() if line.startswith(spec)]
    assert len(user) == 2  # its two presets


def test_bad_user_head_is_a_one_line_error() -> None:
    result = CliRunner().invoke(heads_command, ["--head", "nowhere.py:X"])
    assert result.exit_code != 0
    assert isinstance(result.exception, EmofuseError)  # the CLI group prints it as one line
    assert "no such file" in str(result.exception) and "\n" not in str(result.exception)
