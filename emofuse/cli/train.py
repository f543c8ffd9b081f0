"""CLI commands for the train area (thin: parse options, call the library, print)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from emofuse.errors import EmofuseError
from emofuse.train.folds import SPLITS


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    sets = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EmofuseError(f"--set {item!r}: write it as key=value (e.g. --set dropout=0.2)")
        sets[key.strip()] = value.strip()
    return sets


def _parse_folds(value: str | None) -> list[int] | None:
    if not value:
        return None
    try:
        folds = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        folds = []
    if not folds:  # "," would otherwise mean every fold
        raise EmofuseError(f"--folds {value!r}: give fold numbers like 1,3")
    return folds


def _print_summary(summary: dict, out: Path) -> None:
    m, s, p = summary["mean"], summary["std"], summary["pooled"]
    for f in summary["folds"]:
        click.echo(f"fold {f['fold']}: UA {f['UA']:.4f}  WA {f['WA']:.4f}  F1 {f['F1']:.4f}")
    click.echo(
        "mean ± std over folds: "
        + "  ".join(f"{k} {m[k]:.4f} ± {s[k]:.4f}" for k in ("UA", "WA", "F1"))
    )
    click.echo("pooled: " + "  ".join(f"{k} {p[k]:.4f}" for k in ("UA", "WA", "F1")))
    click.echo(f"report: {out / 'report.md'}")


@click.command("train")
@click.option("--cache", "cache_path", required=True, type=click.Path(path_type=Path))
@click.option("--split", required=True, type=click.Choice(SPLITS))
@click.option("--head", required=True, help="registry name, or path/to/file.py:Class")
@click.option("--preset", default=None, help="a preset of the head (e.g. small, paper)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="head config override")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="run folder")
@click.option("--epochs", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=1e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--patience", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--weight-decay",
    default=0.01,
    show_default=True,
    type=click.FloatRange(min=0),
    help="AdamW weight decay",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--class-weights/--no-class-weights", default=False, show_default=True)
@click.option(
    "--speaker-norm/--no-speaker-norm",
    default=False,
    show_default=True,
    help="standardise acoustic features per speaker (uses every speaker's unlabelled audio, "
    "the test speaker's too: transductive, reported as such)",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@click.option("--folds", "folds", default=None, help="only these folds, e.g. 1,3")
@click.option("--quiet", is_flag=True, help="no progress bars")
def train_command(
    cache_path, split, head, preset, sets, out, epochs, batch_size, lr, patience, weight_decay,
    seed, class_weights, speaker_norm, device, folds, quiet,
) -> None:  # fmt: skip
    """Train a head on every fold of a split from a feature cache (resumes finished folds)."""
    from emofuse.train.loop import LoopConfig
    from emofuse.train.run import train_run

    if not cache_path.exists():
        raise EmofuseError(f"--cache {cache_path} does not exist; run `emofuse extract` first")
    loop = LoopConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
        weight_decay=weight_decay, class_weights=class_weights, speaker_norm=speaker_norm,
    )  # fmt: skip
    summary = train_run(
        cache_path, head, out, split, preset=preset, sets=_parse_sets(sets), loop=loop,
        folds=_parse_folds(folds), device=device, progress=not quiet,
    )  # fmt: skip
    if summary is not None:
        _print_summary(summary, out)


@click.command("fuse")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="fused run folder")
def fuse_command(runs, out) -> None:
    """Late fusion of runs on the same fold plan; weights chosen per fold on validation."""
    from emofuse.train.fuse import fuse_runs

    for run in runs:
        if not (run / "folds.json").is_file():
            raise EmofuseError(f"{run} is not a run folder (no folds.json); train it first")
    summary = fuse_runs(runs, out)
    cfg = json.loads((out / "config.json").read_text())
    for k, w in cfg["weights"].items():
        click.echo(f"fold {k} weights: " + ", ".join(f"{x:.1f}" for x in w))
    _print_summary(summary, out)


@click.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--tsne", is_flag=True, help="also draw t-SNE of pooled test embeddings")
def report_command(run, tsne) -> None:
    """Regenerate report.md and plots of a run folder."""
    from emofuse.train.report import write_report

    if not (run / "summary.json").is_file():
        raise EmofuseError(f"{run} has no summary.json; is it a finished `emofuse train` run?")
    click.echo(f"report: {write_report(run, tsne=tsne)}")


COMMANDS: list = [train_command, fuse_command, report_command]
