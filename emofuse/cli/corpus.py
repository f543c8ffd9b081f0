"""CLI commands for the corpus area (thin: parse options, call the library, print).

`emofuse corpus stats | synth | folds`. The corpus options are declared once (`corpus_options`)
and shared by every command that reads a corpus, so they cannot drift apart.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import click

from emofuse.cli.options import FINITE, IN, OUT, SEED
from emofuse.corpus import CORPORA, CorpusReadResult, read_corpus
from emofuse.corpus.text import TEXT_NORMS
from emofuse.errors import EmofuseError


def corpus_options(func: Callable) -> Callable:
    """Add the options that select and read a corpus; the command gets `corpus: CorpusReadResult`."""

    @click.option(
        "--corpus",
        "kind",
        type=click.Choice(CORPORA),
        default=None,
        help="Corpus reader [default: manifest with --manifest, else iemocap] (the synthetic "
        "corpus is read with iemocap).",
    )
    @click.option(
        "--root",
        type=IN,
        help="IEMOCAP_full_release folder (or a synthetic corpus from `emofuse corpus synth`).",
    )
    @click.option(
        "--manifest",
        type=IN,
        help="CSV/JSONL with id,audio,text,label,speaker [,session,gender,split].",
    )
    @click.option(
        "--classes",
        default=None,
        help="IEMOCAP label set 4 (default), 5, 6 or all; manifest: all (default) or a,b,c.",
    )
    @click.option("--improvised-only", is_flag=True, help="IEMOCAP: improvised dialogs only.")
    @click.option(
        "--skip-missing",
        is_flag=True,
        help="Manifest: skip rows whose audio is missing or unreadable (counted in skipped).",
    )
    @click.option(
        "--text-norm",
        type=click.Choice(TEXT_NORMS),
        default="default",
        show_default=True,
        help="What the text model sees: default = tags removed, spaces collapsed.",
    )
    @functools.wraps(func)
    def wrapper(kind, root, manifest, classes, improvised_only, skip_missing, text_norm, **kw):
        if kind is None:  # --manifest alone means the manifest (it was ignored for IEMOCAP)
            kind = "manifest" if manifest is not None else "iemocap"
        elif kind != "manifest" and manifest is not None:
            raise EmofuseError(
                f"--manifest {manifest} is read with --corpus manifest, not --corpus {kind}; "
                "drop --corpus (or give --corpus manifest)"
            )
        if kind == "manifest" and root is not None:  # one of the two is a slip: say which is read
            raise EmofuseError(
                f"--root {root} is the IEMOCAP folder, but the manifest {manifest} is what "
                "--corpus manifest reads (its audio paths are relative to it); drop --root, or "
                "drop --manifest to read the IEMOCAP folder"
            )
        corpus = read_corpus(
            kind,
            root=root,
            manifest=manifest,
            classes=classes,
            improvised_only=improvised_only,
            skip_missing=skip_missing,
            text_norm=text_norm,
            progress=not kw.get("quiet", False),  # --quiet silences the reader's bar too
        )
        return func(corpus=corpus, **kw)

    return wrapper


@click.group("corpus")
def corpus() -> None:
    """Read corpora (IEMOCAP, a manifest), write the synthetic one, print stats and fold plans."""


@corpus.command("stats")
@corpus_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(corpus: CorpusReadResult, as_json: bool) -> None:
    """Utterances by label, session, speaker and gender; alignments; what was skipped and why."""
    from emofuse.corpus.stats import corpus_stats, format_stats

    result = corpus_stats(corpus)
    click.echo(json.dumps(result, indent=1) if as_json else format_stats(result))


def _duration(ctx: click.Context, param: click.Parameter, value):
    """--duration MIN MAX: refused as a usage error naming the option (the library's own check)."""
    from emofuse.corpus.synthetic import duration_problem

    if value is not None and (problem := duration_problem(*value)):
        raise click.BadParameter(problem)
    return value


@corpus.command("synth")
@click.option("--out", required=True, type=OUT, help="Output folder.")
@click.option(
    "--profile",
    type=click.Choice(["demo", "counts"]),
    default="demo",
    show_default=True,
    help="demo: small 1–3 s corpus; counts: the real 4-class counts with very short audio.",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--utterances-per-speaker", type=int, default=None, help="demo: 4-class utterances (40)."
)
@click.option(
    "--others-per-speaker",
    type=click.IntRange(min=0),
    default=None,
    help="demo: xxx/fru/sur/… utterances (8).",
)
@click.option(
    "--duration",
    type=(FINITE, FINITE),
    default=None,
    callback=_duration,
    help="MIN MAX seconds (demo 1 3, counts 0.05 0.2).",
)
def synth(out, profile, seed, utterances_per_speaker, others_per_speaker, duration) -> None:
    """Write the synthetic corpus in the IEMOCAP_full_release layout."""
    from emofuse.corpus.synthetic import write_synthetic_corpus
    from emofuse.errors import check_out_path

    check_out_path(out)
    result = write_synthetic_corpus(
        out,
        profile=profile,
        seed=seed,
        utterances_per_speaker=utterances_per_speaker,
        others_per_speaker=others_per_speaker,
        duration=duration,
    )
    click.echo(
        f"wrote {len(result.utterances)} utterances ({profile}, seed {seed}) to {result.root}"
    )


@corpus.command("folds")
@corpus_options
@click.option(
    "--split",
    type=click.Choice(["loso", "lopo", "ra", "predefined"]),
    required=True,
    help="Fold protocol (docs/architecture.md §6).",
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option(
    "--lopo-val",
    type=click.Choice(["partner", "train"]),
    default="partner",
    show_default=True,
    help="lopo validation: the session partner, or a stratified 10 % of the training speakers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--out", type=OUT, default=None, help="Also save the plan here.")
def folds(
    corpus: CorpusReadResult, split: str, seed: int, lopo_val: str, as_json: bool, out
) -> None:
    """Print the fold plan (train / val / test ids per fold) for a corpus."""
    from emofuse.errors import EmofuseError
    from emofuse.train.folds import build_folds

    if out is not None:
        _check_plan_out(Path(out))
    plan = build_folds(corpus.utterances, split, seed, lopo_val)
    data = plan.to_dict()
    if out is not None:
        from emofuse.fileio import atomic_open

        try:
            with atomic_open(Path(out)) as fh:
                fh.write(json.dumps(data, indent=1) + "\n")
        except OSError as err:
            raise EmofuseError(f"--out {out}: cannot write the plan ({err.strerror})") from None
    if as_json:
        click.echo(json.dumps(data))
        return
    click.echo(f"{split} (seed {seed}): {len(data['folds'])} folds")
    for f in data["folds"]:
        click.echo(
            f"  fold {f['fold']:>2}: train {len(f['train']):>5}  val {len(f['val']):>5}  "
            f"test {len(f['test']):>5}"
        )


def _check_plan_out(out: Path) -> None:
    """The plan's --out is a .json file that is new or an earlier plan: never a cache, a
    manifest or an audio file replaced by it, nor a file put inside a cache."""
    from emofuse.cache.store import check_outside_caches
    from emofuse.errors import EmofuseError, check_out_file

    check_out_file(out)
    check_outside_caches(out, "a file for the plan")
    if out.suffix.lower() != ".json":
        raise EmofuseError(f"--out {out}: the plan is JSON; give a file name ending in .json")
    if out.exists():
        try:
            earlier = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            earlier = None
        if not (isinstance(earlier, dict) and "folds" in earlier and "split" in earlier):
            raise EmofuseError(
                f"--out {out} exists and is not a fold plan; give a new file name (it is never "
                "overwritten)"
            )


COMMANDS: list = [corpus]
