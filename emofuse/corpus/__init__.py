"""Corpus readers: IEMOCAP, a user's manifest (CSV/JSONL), and the synthetic demo/test corpus.

`read_corpus` is the one entry point the CLI and the pipeline use; the synthetic corpus is written
in the IEMOCAP layout (`write_synthetic_corpus`) and read back with the IEMOCAP reader.
"""

from __future__ import annotations

from pathlib import Path

from emofuse.corpus.utterance import TIERS, CorpusReadResult, Segment, Utterance
from emofuse.errors import EmofuseError

CORPORA = ("iemocap", "manifest")


def read_corpus(
    corpus: str,
    *,
    root: str | Path | None = None,
    manifest: str | Path | None = None,
    classes: str | None = None,
    improvised_only: bool = False,
    skip_missing: bool = False,
    text_norm: str = "default",
    progress: bool = True,
) -> CorpusReadResult:
    """Read a corpus into Utterance records plus what was skipped and why.

    corpus="iemocap": `root` is IEMOCAP_full_release (or the synthetic corpus); `classes` is
    "4" (default), "5", "6" or "all". corpus="manifest": `manifest` is a .csv/.jsonl file;
    `classes` is "all" (default) or a comma-separated list of labels to keep.
    """
    if corpus == "iemocap":
        from emofuse.corpus.iemocap import read_iemocap

        if root is None:
            raise EmofuseError(
                "--corpus iemocap needs --root PATH (the IEMOCAP_full_release folder)"
            )
        # skip_missing is moot here: IEMOCAP utterances without a wav are always skipped and reported
        return read_iemocap(
            root,
            classes=classes or "4",
            improvised_only=improvised_only,
            text_norm=text_norm,
            progress=progress,
        )
    if corpus == "manifest":
        from emofuse.corpus.manifest import read_manifest

        if manifest is None:
            raise EmofuseError("--corpus manifest needs --manifest FILE (.csv or .jsonl)")
        if improvised_only:
            raise EmofuseError("--improvised-only applies to --corpus iemocap only")
        labels = None
        if classes and classes != "all":
            labels = [c.strip() for c in classes.split(",") if c.strip()]
            if not labels:
                raise EmofuseError(f"--classes {classes!r} names no label: give a,b,c or all")
        return read_manifest(
            manifest,
            skip_missing=skip_missing,
            labels=labels,
            text_norm=text_norm,
            progress=progress,
        )
    raise EmofuseError(f"unknown corpus {corpus!r}: choose one of {', '.join(CORPORA)}")


def __getattr__(name: str):
    # the generator pulls in numpy signal code: import it only when asked for
    if name == "write_synthetic_corpus":
        from emofuse.corpus.synthetic import write_synthetic_corpus

        return write_synthetic_corpus
    raise AttributeError(name)


__all__ = [
    "CORPORA",
    "TIERS",
    "CorpusReadResult",
    "Segment",
    "Utterance",
    "read_corpus",
    "write_synthetic_corpus",
]
