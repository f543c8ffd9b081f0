"""Transcripts and alignments for new recordings (used by `emofuse predict --asr-model`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from emofuse.audio import AudioProblem, load_audio
from emofuse.corpus.utterance import Segment


def transcribe_files(paths: Sequence[Path], asr_model: str, device: str = "auto") -> list[str]:
    """One ASR transcript per file (Whisper via faster-whisper; raises EmofuseError if unloadable)."""
    from emofuse.asr.whisper import load_asr_model

    model = load_asr_model(asr_model, device=device if device in ("cpu", "cuda") else "auto")
    wavs = []
    for p in paths:
        try:
            wavs.append(load_audio(p).wav)
        except AudioProblem as err:
            from emofuse.errors import EmofuseError

            raise EmofuseError(f"{p}: {err}") from None
    return [o.text for o in model.transcribe(wavs)]


def align_files(
    paths: Sequence[Path], texts: Sequence[str | None]
) -> tuple[list[dict[str, list[Segment]] | None], dict[int, str]]:
    """Tiers per file (None where it could not be aligned) and the reason per unaligned file."""
    from emofuse.align.pocketsphinx import PocketSphinxAligner

    aligner = PocketSphinxAligner()
    tiers: list[dict[str, list[Segment]] | None] = []
    problems: dict[int, str] = {}
    for i, (path, text) in enumerate(zip(paths, texts, strict=True)):
        if not text or not text.strip():
            tiers.append(None)
            problems[i] = "no transcript"
            continue
        try:
            out = aligner.align(load_audio(path).wav, text)
        except AudioProblem as err:
            out = None
            problems[i] = str(err)
        tiers.append(out.tiers if out is not None else None)
        if out is not None and out.tiers is None:
            problems[i] = out.problem or "not aligned"
    return tiers, problems
