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


HEAD_FILE = '''
from dataclasses import dataclass

import torch
from torch import nn

from emofuse.heads.base import Head, HeadConfig


@dataclass
class Cfg(HeadConfig):
    hidden: int = 8


class Base(Head):
    Config = Cfg
    presets = {"small": {"hidden": 4}}

    @classmethod
    def required_streams(cls, cfg):
        return {"speech"}

    def __init__(self, cfg, dims, n_classes):
        super().__init__(cfg, dims, n_classes)
        self.classifier = nn.Linear(dims.speech[1], n_classes)


class Boom(Base):
    """Its constructor fails."""

    def __init__(self, cfg, dims, n_classes):
        super().__init__(cfg, dims, n_classes)
        raise RuntimeError("the layer sizes do not fit")


class BadPreset(Base):
    """A preset sets a field its config does not have."""

    presets = {"small": {"hiddne": 4}}


class Misspelt(Base):
    """Reads a stream no cache has."""

    @classmethod
    def required_streams(cls, cfg):
        return {"speach"}


class NoDoc(Base):
    pass


class ReadsAValue(Base):
    """Its constructor reads a tensor's value (impossible on the meta device)."""

    def __init__(self, cfg, dims, n_classes):
        super().__init__(cfg, dims, n_classes)
        self.extra = nn.Linear(int(torch.ones(1).sum().item()) * 3, 2)
'''


def _user_heads(tmp_path) -> Path:
    path = tmp_path / "my_heads.py"
    path.write_text(HEAD_FILE)
    return path


def test_a_user_head_that_cannot_be_built_is_one_line_naming_it(tmp_path) -> None:
    """`emofuse heads --head FILE:CLASS` built the head without catching what a user's head raises:
    a failing constructor or preset was a traceback, an unknown stream listed as fine."""
    from emofuse.cli import cli

    path = _user_heads(tmp_path)
    for cls, step, why in (
        ("Boom", "building it with preset 'small'", "RuntimeError: the layer sizes do not fit"),
        ("BadPreset", "making its config with preset 'small'", "TypeError: "),
        ("Misspelt", "required_streams with preset 'small'", "no cache stream speach"),
    ):
        result = CliRunner().invoke(cli, ["heads", "--head", f"{path}:{cls}"])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert "Traceback" not in result.output
        assert lines[0].startswith(f"error: --head {path}:{cls}: {step} failed ({why}"), lines[0]


def test_a_user_head_without_a_docstring_or_that_needs_real_tensors_is_listed(tmp_path) -> None:
    path = _user_heads(tmp_path)
    args = [
        "--json",
        "--speech-dim",
        "16",
        "--head",
        f"{path}:NoDoc",
        "--head",
        f"{path}:ReadsAValue",
    ]
    result = CliRunner().invoke(heads_command, args)
    assert result.exit_code == 0, result.output
    rows = {r["head"]: r for r in json.loads(result.output) if r["head"].startswith(str(path))}
    assert rows[f"{path}:NoDoc"]["description"] == ""
    assert rows[f"{path}:NoDoc"]["parameters"] == 16 * 4 + 4
    assert rows[f"{path}:ReadsAValue"]["parameters"] == 16 * 4 + 4 + 3 * 2 + 2


def test_heads_lists_every_config_field_as_set_reads_it_back() -> None:
    """README: "Any config field: --set key=value; `emofuse heads` lists them" — it listed none."""
    import dataclasses

    rows = json.loads(CliRunner().invoke(heads_command, ["--json"]).output)
    table = CliRunner().invoke(heads_command, []).output
    blocks = table.split("config: ")[1:]  # one per row, in the same order as the JSON
    assert len(blocks) == len(rows)
    for row, block in zip(rows, blocks, strict=True):
        cls = get_head(row["head"])
        expected = cls.make_config(row["preset"])
        assert set(row["config"]) == {f.name for f in dataclasses.fields(cls.Config)}
        pairs = []
        for line in block.splitlines():  # its first line, then the indented continuation lines
            if pairs and not line.startswith(" "):
                break
            pairs += line.split()
        sets = dict(p.split("=", 1) for p in pairs)
        assert list(sets) == list(row["config"]), row["head"]
        assert cls.make_config(row["preset"], sets) == expected, (row["head"], row["preset"])


def test_a_built_in_head_named_with_head_is_listed_once() -> None:
    """`heads --head pooled` listed pooled twice (fifth audit, train side, row 30)."""
    plain = json.loads(CliRunner().invoke(heads_command, ["--json"]).output)
    again = CliRunner().invoke(heads_command, ["--head", "pooled", "--json"])
    assert again.exit_code == 0, again.output
    rows = json.loads(again.output)
    assert [(r["head"], r["preset"]) for r in rows] == [(r["head"], r["preset"]) for r in plain]
