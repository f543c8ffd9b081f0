"""The cache's streams, named once: what each holds, how it is shaped, which extract option makes it.

Extract writes these streams, the data layer loads them, heads ask for them by name
(``Head.required_streams``) and messages name the option that would add a missing one. A new stream is
one entry here plus the code that computes it (extract) and reads it (a head).
"""

from __future__ import annotations

from dataclasses import dataclass

RAGGED, FIXED = "ragged", "fixed"  # rows per utterance / one row per utterance (cache/schema.py)


@dataclass(frozen=True)
class Stream:
    name: str
    kind: str  # RAGGED or FIXED
    made_by: str  # the `emofuse extract` option(s) that produce it
    speech_layers: bool = False  # rows carry the speech encoder's layers (a head's speech_layers)
    frame_rate: bool = False  # rows at the encoder's frame rate (what frame_pool averages)
    segment: bool = False  # pooled over an alignment tier's segments
    acoustic: bool = False  # computed from the audio (per-speaker normalisation applies)


_SPEECH = "a --speech-model"
_POOLED = f"{_SPEECH} (the pooled statistics come with the frames)"
STREAMS: dict[str, Stream] = {  # in the order heads' InputDims and configs list them
    s.name: s
    for s in (
        Stream(
            "speech", RAGGED, f"{_SPEECH} and 'frame' in --granularity", True, True, False, True
        ),
        Stream("text", RAGGED, "a --text-model (not none)"),
        Stream("speaker", FIXED, "a --speaker-model (not none)"),
        *(
            Stream(
                t,
                RAGGED,
                f"'{t}' in --granularity (needs alignments)",
                True,
                segment=True,
                acoustic=True,
            )  # fmt: skip
            for t in ("phone", "syllable", "word")
        ),
        Stream("fbank", RAGGED, "--fbank", frame_rate=True, acoustic=True),
        Stream("speech_mean", FIXED, _POOLED, True, acoustic=True),
        Stream("speech_std", FIXED, _POOLED, True, acoustic=True),
    )
}


def _names(**flags: bool) -> tuple[str, ...]:
    return tuple(n for n, s in STREAMS.items() if all(getattr(s, k) == v for k, v in flags.items()))


NAMES = tuple(STREAMS)
RAGGED_STREAMS = tuple(n for n, s in STREAMS.items() if s.kind == RAGGED)
SEGMENT_TIERS = _names(segment=True)  # ("phone", "syllable", "word"), finest first
GRANULARITIES = ("frame", *SEGMENT_TIERS)  # extract's --granularity: frames and segment tiers
FRAME_STREAMS = _names(frame_rate=True)
SPEECH_LAYER_STREAMS = _names(speech_layers=True)
ACOUSTIC_STREAMS = _names(acoustic=True)


def advice(name: str) -> str:
    """How to get stream ``name`` into a cache."""
    return f"re-extract with {STREAMS[name].made_by}"
