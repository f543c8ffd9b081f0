"""CLI commands for the train area (thin: parse options, call the library, print)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import click

from emofuse.cli.options import IN, NON_EMPTY, OUT, SEED, FiniteFloatRange
from emofuse.errors import IN_THE_WAY, MAKE_READABLE, RERUN, EmofuseError, os_reason, write_fix
from emofuse.train.config import SCHEDULES, SELECTS
from emofuse.train.folds import LOPO_VALS, SPLITS


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    sets = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise EmofuseError(f"--set {item!r}: write it as key=value (e.g. --set dropout=0.2)")
        key, value = key.strip(), value.strip()
        if key in sets:  # the last would win silently
            raise EmofuseError(
                f"--set {key} is given twice ({sets[key]}, then {value}): give each key once"
            )
        sets[key] = value
    return sets


def _parse_folds(value: str | None) -> list[int] | None:
    """None (every fold) only when --folds is not given: an empty value (an unset ``$F``), an
    empty item ("1,,2") or a range is refused rather than read as something else."""
    if value is None:
        return None
    try:
        folds = sorted({int(v) for v in value.split(",")})
    except ValueError:
        folds = []
    if not folds:  # "," would otherwise mean every fold
        raise EmofuseError(
            f"--folds {value!r}: give fold numbers like 1,3 (leave --folds out for every fold)"
        )
    return folds


def _print_summary(summary: dict, out: Path, advice: str) -> None:
    """The run's scores, with the `note: k of n folds finished` line when folds are missing
    (``advice`` says how to finish them): a partial result never reads as a whole one."""
    from emofuse.train.folds import FoldPlan
    from emofuse.train.rundir import missing_folds_note

    m, s, p = summary["mean"], summary["std"], summary["pooled"]
    for f in summary["folds"]:
        click.echo(f"fold {f['fold']}: UA {f['UA']:.4f}  WA {f['WA']:.4f}  F1 {f['F1']:.4f}")
    click.echo(
        "mean ± std over folds: "
        + "  ".join(f"{k} {m[k]:.4f} ± {s[k]:.4f}" for k in ("UA", "WA", "F1"))
    )
    click.echo("pooled: " + "  ".join(f"{k} {p[k]:.4f}" for k in ("UA", "WA", "F1")))
    note = missing_folds_note(out, FoldPlan.load(out / "folds.json"), advice)
    if note:
        click.echo(f"note: {note}")
    click.echo(f"report: {out / 'report.md'}")


LOOP_HELP = "default: the head's recipe for the preset (`emofuse heads` lists them)"


@click.command("train")
@click.option("--cache", "cache_path", required=True, type=IN)
@click.option("--split", required=True, type=click.Choice(SPLITS))
@click.option(
    "--lopo-val",
    type=click.Choice(LOPO_VALS),
    default="partner",
    show_default=True,
    help="lopo validation: the test speaker's session partner, or a stratified 10 % of the "
    "training speakers' utterances (train: TDFNet's setting, every other speaker trains)",
)
@click.option(
    "--head", required=True, type=NON_EMPTY, help="registry name, or path/to/file.py:Class"
)
@click.option("--preset", default=None, help="a preset of the head (e.g. small, paper)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="head config override")
@click.option("--out", required=True, type=OUT, help="run folder")
@click.option("--epochs", type=click.IntRange(min=1), help=f"most epochs per fold; {LOOP_HELP}")
@click.option("--batch-size", type=click.IntRange(min=1), help=LOOP_HELP)
@click.option("--lr", type=FiniteFloatRange(min=0, min_open=True), help=f"peak lr; {LOOP_HELP}")
@click.option("--patience", type=click.IntRange(min=1), help=f"early stopping; {LOOP_HELP}")
@click.option("--weight-decay", type=FiniteFloatRange(min=0), help=f"AdamW; {LOOP_HELP}")
@click.option("--schedule", type=click.Choice(SCHEDULES), help=f"after the warm-up; {LOOP_HELP}")
@click.option("--warmup-epochs", type=click.IntRange(min=0), help=LOOP_HELP)
@click.option(
    "--grad-clip", type=FiniteFloatRange(min=0), help=f"max grad norm, 0 = off; {LOOP_HELP}"
)
@click.option(
    "--select", type=click.Choice(SELECTS), help=f"checkpoint by validation loss or UA; {LOOP_HELP}"
)
@click.option("--mixup", type=FiniteFloatRange(min=0), help=f"Beta alpha, 0 = off; {LOOP_HELP}")
@click.option(
    "--ema",
    type=FiniteFloatRange(0, 1, max_open=True),
    help=f"weight EMA decay, 0 = off; {LOOP_HELP}",
)
@click.option("--seed", type=SEED, help="default 0")
@click.option("--class-weights/--no-class-weights", default=None, help=LOOP_HELP)
@click.option(
    "--speaker-norm/--no-speaker-norm",
    default=None,
    help="standardise acoustic features per speaker (uses every speaker's unlabelled audio, "
    "the test speaker's too: transductive, reported as such); default off",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 …")
@click.option("--folds", "folds", default=None, help="only these folds, e.g. 1,3")
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="folds trained at once in worker processes (CPU); default: one per core for corpora "
    "of 400+ utterances, 1 on a GPU. Results are the same either way",
)
@click.option("--quiet", is_flag=True, help="no progress bars")
def train_command(
    cache_path, split, lopo_val, head, preset, sets, out, epochs, batch_size, lr, patience, weight_decay,
    schedule, warmup_epochs, grad_clip, select, mixup, ema, seed, class_weights, speaker_norm, device,
    folds, jobs, quiet,
) -> None:  # fmt: skip
    """Train a head on every fold of a split from a feature cache (resumes finished folds).

    Defaults: every head reads its inputs z-scored with the fold's training statistics
    (--set input_norm=none to turn it off), and trains with its preset's recipe — the loop that
    reached the best validation UA on real speech (RAVDESS, Whisper-base) for that head; the
    `paper` presets keep the papers' loop (AdamW, lr 1e-4, batch 32, at most 20 epochs,
    patience 3). A flag given here overrides that one field; config.json records each field's
    source. `emofuse heads` shows every preset's loop.
    """
    from emofuse.train.run import train_run

    if lopo_val != "partner" and split != "lopo":
        raise EmofuseError(f"--lopo-val {lopo_val} applies to --split lopo only; drop it")
    if not cache_path.exists():
        from emofuse.cache.store import missing_cache_error

        raise missing_cache_error(cache_path, "--cache")
    flags = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
        weight_decay=weight_decay, class_weights=class_weights, speaker_norm=speaker_norm,
        schedule=schedule, warmup_epochs=warmup_epochs, grad_clip=grad_clip, select=select,
        mixup=mixup, ema=ema,
    )  # fmt: skip
    try:
        summary = train_run(
            cache_path, head, out, split, preset=preset, sets=_parse_sets(sets), loop_flags=flags,
            folds=_parse_folds(folds), device=device, progress=not quiet, jobs=jobs,
            lopo_val=lopo_val,
        )  # fmt: skip
    except KeyboardInterrupt:  # the group prints "interrupted: <this>"
        from emofuse.train.rundir import finished_folds

        kept = len(finished_folds(out))
        raise KeyboardInterrupt(
            f"rerun the same command to resume (the {kept} finished fold(s) in {out} are kept)"
            if kept
            else "no fold had finished: rerun the same command to start again"
        ) from None
    if summary is not None:
        from emofuse.train.outdir import finish_advice

        _print_summary(summary, out, finish_advice(fused=False))


@click.command("fuse")
@click.argument("runs", nargs=-1, required=True, type=IN)
@click.option("--out", required=True, type=OUT, help="fused run folder")
def fuse_command(runs, out) -> None:
    """Late fusion of runs on the same fold plan; weights chosen per fold on validation."""
    from emofuse.train.fuse import fuse_runs
    from emofuse.train.outdir import finish_advice, not_a_run

    for run in runs:
        if not (run / "folds.json").is_file():
            raise not_a_run(run, "fuse")
    try:
        summary = fuse_runs(runs, out)
    except KeyboardInterrupt:  # the group prints "interrupted: <this>"
        raise KeyboardInterrupt(
            f"rerun the same command to fuse again into {out} (an unfinished fuse is redone)"
        ) from None
    cfg = json.loads((out / "config.json").read_text())
    for k, w in cfg["weights"].items():
        click.echo(f"fold {k} weights: " + ", ".join(f"{x:.1f}" for x in w))
    _print_summary(summary, out, finish_advice(fused=True))


@click.command("report")
@click.argument("run", type=IN)
@click.option("--tsne", is_flag=True, help="also draw t-SNE of pooled test embeddings")
def report_command(run, tsne) -> None:
    """Regenerate report.md and plots of a run folder."""
    from emofuse.locks import output_lock
    from emofuse.train.folds import FoldPlan
    from emofuse.train.outdir import finish_advice, not_a_run
    from emofuse.train.report import wall_note, write_report
    from emofuse.train.rundir import (
        finished_folds,
        is_trained_run,
        missing_folds_note,
        read_run_config,
        write_summary,
    )

    if not run.exists():
        raise EmofuseError(f"{run} does not exist: give the run folder that train or fuse wrote")
    if not run.is_dir():
        raise EmofuseError(f"{run} is a file, not a run folder: give the folder --out named")
    from emofuse.train.outdir import config_missing_error

    if refusal := config_missing_error(run):
        raise refusal
    if not (run / "folds.json").is_file() or not (run / "config.json").is_file():
        raise not_a_run(run, "report")
    in_place = (
        f"report rewrites summary.json, report.md and the plots inside {run}: copy the run folder "
        "somewhere writable and report the copy"
    )
    with output_lock(run, "report", in_place):  # it rewrites summary.json: never under a train
        plan = FoldPlan.load(run / "folds.json")
        config = read_run_config(run / "config.json")
        trained = is_trained_run(config)
        if not trained:
            from emofuse.train.fuse import check_members_current

            check_members_current(run, config)
        from emofuse.train.checkpoints import check_run_folds

        # metrics, curves; each checkpoint whole and its fold's own, as predict will check
        check_run_folds(run, finished_folds(run), trained)
        from emofuse.train.configseal import check_config_seal

        check_config_seal(run / "config.json", config)  # an edit not named by the checks above
        try:
            write_summary(run, plan)  # from the folds on disk now, never a stale summary
            note = missing_folds_note(run, plan, finish_advice(fused=not trained))
            report = write_report(run, tsne=tsne)
        except OSError as err:  # a full disk, a folder where report.md goes, no permission
            outside = err.filename and not Path(err.filename).resolve().is_relative_to(
                run.resolve()
            )
            if outside and err.errno in (errno.EACCES, errno.EPERM):  # read: the cache for t-SNE
                raise EmofuseError(
                    f"cannot read {err.filename} ({os_reason(err)}), which report --tsne reads: "
                    f"{MAKE_READABLE}, {RERUN}"
                ) from None
            if err.errno in (errno.EACCES, errno.EPERM):
                usual = f"make {run} writable, or {in_place.split(': ', 1)[1]}"
            elif err.errno in IN_THE_WAY:  # a folder where the file goes: no disk space to free
                usual = f"move away what is in the way in {run}"
            else:
                usual = f"free disk space, or move away what is in the way in {run}"
            raise EmofuseError(
                f"cannot write {err.filename or run} ({os_reason(err)}): "
                + write_fix(err, usual)
                + ", then rerun the same command"
            ) from None
    for line in (note, wall_note(run)):
        if line:
            click.echo(f"note: {line}")
    click.echo(f"report: {report}")


COMMANDS: list = [train_command, fuse_command, report_command]
