"""CLI commands for the heads area (thin: parse options, call the library, print)."""

from __future__ import annotations

import dataclasses
import json
import textwrap

import click
import torch

from emofuse.errors import EmofuseError
from emofuse.heads.base import STREAMS, InputDims, count_parameters
from emofuse.heads.registry import get_head, head_streams, list_heads
from emofuse.train.config import LoopConfig
from emofuse.train.recipes import describe_loop, resolve_loop

FBANK_DIM = 80


def head_table(
    speech_dim: int,
    text_dim: int,
    speaker_dim: int,
    speech_layers: int,
    text_layers: int,
    n_classes: int,
    extra: tuple[str, ...] = (),
) -> list[dict]:
    """One row per (head, preset): parameter count for these input widths, streams it reads."""
    dims = InputDims(
        speech=(speech_layers, speech_dim),
        text=(text_layers, text_dim),
        speaker=speaker_dim,
        phone=(speech_layers, speech_dim),
        syllable=(speech_layers, speech_dim),
        word=(speech_layers, speech_dim),
        fbank=(1, FBANK_DIM),
        speech_mean=(speech_layers, speech_dim),
        speech_std=(speech_layers, speech_dim),
    )
    rows = []
    for name in dict.fromkeys(list_heads() + list(extra)):  # a built-in named again: once
        cls = get_head(name)
        try:
            rows += _head_rows(name, cls, dims, n_classes)
        except _Broken as err:  # a user's head above all: named in one line, not a traceback
            why = err.__cause__
            reason = str(why) if isinstance(why, EmofuseError) else f"{type(why).__name__}: {why}"
            what = f"--head {name}" if name in extra else f"head {name}"
            raise EmofuseError(
                f"{what}: {err} failed ({' '.join(reason.split())}); fix the head so that it "
                "builds (see examples/custom_head.py)"
            ) from why
    return rows


class _Broken(Exception):
    """Which step of building a head failed (``__cause__``: how)."""


def _head_rows(name: str, cls: type, dims: InputDims, n_classes: int) -> list[dict]:
    """The table rows of one head class: one per preset (and no preset where it has a recipe)."""
    rows = []
    try:
        presets = [None, *cls.presets] if cls.recipes.get(None) else list(cls.presets) or [None]
    except Exception as err:
        raise _Broken("reading its presets and recipes") from err
    for preset in presets:
        where = f"preset {preset!r}" if preset else "its defaults"
        try:
            cfg = cls.make_config(preset)
        except Exception as err:
            raise _Broken(f"making its config with {where}") from err
        try:
            streams = head_streams(cls, cfg, name)
        except Exception as err:
            raise _Broken(f"required_streams with {where}") from err
        if unknown := sorted(map(str, streams - set(STREAMS))):
            known = ", ".join(STREAMS)
            raise _Broken(f"required_streams with {where}") from EmofuseError(
                f"no cache stream {', '.join(unknown)} (streams: {known})"
            )
        try:
            # The meta device allocates nothing: counting the paper preset costs no memory.
            with torch.device("meta"):
                head = cls(cfg, dims, n_classes)
        except EmofuseError as err:  # the head refuses these inputs (on any device)
            raise _Broken(f"building it with {where}") from err
        except Exception:
            try:  # a constructor that reads a tensor's value cannot run on meta: build it for real
                head = cls(cfg, dims, n_classes)
            except Exception as err:
                raise _Broken(f"building it with {where}") from err
        variants = {}  # a head's named config variants (TDFNet: gates, ablation rows)
        for label, overrides in getattr(cls, "variants", {}).items():
            try:
                with torch.device("meta"):
                    variant = cls(cls.make_config(preset, overrides), dims, n_classes)
            except Exception as err:
                raise _Broken(f"building its variant {label!r} with {where}") from err
            variants[label] = count_parameters(variant)
        try:
            loop, sources = resolve_loop(cls, preset)
        except Exception as err:
            raise _Broken(f"the training loop of {where}") from err
        rows.append(
            {
                "head": name,
                "preset": preset,
                "parameters": count_parameters(head),
                **({"variants": variants} if variants else {}),
                "loop": dataclasses.asdict(loop),
                "loop_from_recipe": sorted(k for k, v in sources.items() if v == "recipe"),
                "config": _jsonable(dataclasses.asdict(cfg)),
                "streams": sorted(streams),
                "description": next(iter((cls.__doc__ or "").strip().splitlines()), ""),
            }
        )
    return rows


def _jsonable(config: dict) -> dict:
    """A config's fields as JSON values (tuples as lists; anything else exotic as its repr)."""
    return json.loads(json.dumps(config, default=repr))


def _config_line(config: dict) -> str:
    """``key=value`` for every config field, written as ``--set`` reads them back."""
    return " ".join(f"{k}={_set_value(v)}" for k, v in config.items())


def _set_value(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "''"
    return str(value).lower() if isinstance(value, bool) or value is None else str(value)


def _positive(name: str, default: int, help: str, least: int = 1, dest: str | None = None):
    """An integer option that refuses 0 and negatives (a width of 0 or -5 builds no head)."""
    decls = (name, dest) if dest else (name,)
    return click.option(
        *decls, type=click.IntRange(min=least), default=default, show_default=True, help=help
    )


@click.command("heads")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_positive("--speech-dim", 1024, "Speech feature width D.")
@_positive("--text-dim", 768, "Text token width D_t.")
@_positive("--speaker-dim", 192, "Speaker vector width F.")
@_positive("--speech-layers", 1, "Cached speech layers loaded.")
@_positive("--text-layers", 1, "Cached text layers loaded.")
@_positive("--classes", 4, "Number of classes.", least=2, dest="n_classes")
@click.option(
    "--head", "extra", multiple=True, help="Also list a user head (path/to/file.py:ClassName)."
)
def heads_command(
    as_json: bool,
    speech_dim: int,
    text_dim: int,
    speaker_dim: int,
    speech_layers: int,
    text_layers: int,
    n_classes: int,
    extra: tuple[str, ...],
) -> None:
    """List the heads and their presets with parameter counts for the given input widths."""
    rows = head_table(
        speech_dim, text_dim, speaker_dim, speech_layers, text_layers, n_classes, extra
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'head':<14}{'preset':<8}{'parameters':>14}  streams / training loop")
    for row in rows:
        streams = ",".join(row["streams"])
        click.echo(f"{row['head']:<14}{row['preset'] or '-':<8}{row['parameters']:>14,}  {streams}")
        click.echo(f"{'':<36}  loop: {describe_loop(LoopConfig(**row['loop']))}")
        indent = " " * 38
        click.echo(
            textwrap.fill(
                f"config: {_config_line(row['config'])}", 110, initial_indent=indent,
                subsequent_indent=indent + "  ", break_on_hyphens=False,
            )
        )  # fmt: skip
    click.echo(
        f"(inputs: speech {speech_layers}x{speech_dim}, text {text_layers}x{text_dim}, "
        f"speaker {speaker_dim}, {n_classes} classes; --set key=value changes any config field listed; "
        "a train flag such as --lr overrides that field of the preset's loop)"
    )


COMMANDS: list = [heads_command]
