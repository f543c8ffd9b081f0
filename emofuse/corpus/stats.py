"""Corpus statistics: what a reader kept (by label, session, speaker, gender) and what it skipped."""

from __future__ import annotations

from collections import Counter
from typing import Any

from emofuse.audio import truncation_problem
from emofuse.corpus.utterance import CorpusReadResult


def _counts(values) -> dict[str, int]:
    return dict(sorted(Counter(v for v in values if v is not None).items()))


def corpus_stats(result: CorpusReadResult, examples: int = 3) -> dict[str, Any]:
    """One JSON-able object: utterances, labels, sessions, speakers, genders, with_alignment, skipped
    (plus session_labels, the session × label table, and hours of audio).

    `skipped` maps each reason to {"count": n, "examples": first `examples` ids}. `bad_audio` lists
    the kept utterances whose audio `extract` will skip as it reads them ([{"id", "reason"}] with
    extract's reason): WAVs cut short, which the readers cannot see from the header's duration.
    """
    utts = result.utterances
    bad = [{"id": u.id, "reason": why} for u in utts if (why := truncation_problem(u.audio))]
    durations = [u.duration for u in utts if u.duration is not None]
    return {
        "utterances": len(utts),
        "labels": _counts(u.label for u in utts),
        "sessions": _counts(u.session for u in utts),
        "speakers": _counts(u.speaker for u in utts),
        "genders": _counts(u.gender for u in utts),
        "session_labels": {
            ses: _counts(u.label for u in utts if u.session == ses)
            for ses in sorted({u.session for u in utts if u.session is not None})
        },
        "with_alignment": sum(u.aligned for u in utts),
        "hours": round(sum(durations) / 3600, 4),
        "skipped": {
            reason: {"count": len(ids), "examples": ids[:examples]}
            for reason, ids in sorted(result.skipped.items())
        },
        "bad_audio": bad,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A short human-readable rendering of `corpus_stats`."""
    lines = [
        f"utterances: {stats['utterances']}  (aligned: {stats['with_alignment']}, "
        f"{stats['hours']:.2f} h of audio)"
    ]
    for key in ("labels", "sessions", "speakers", "genders"):
        items = "  ".join(f"{k} {v}" for k, v in stats[key].items()) or "-"
        lines.append(f"{key}: {items}")
    if stats["skipped"]:
        lines.append("skipped:")
        for reason, info in stats["skipped"].items():
            lines.append(f"  {info['count']:>6}  {reason}  (e.g. {', '.join(info['examples'])})")
    else:
        lines.append("skipped: nothing")
    bad = stats.get("bad_audio") or []
    if bad:
        lines.append(f"bad audio (kept here, skipped by extract): {len(bad)}")
        lines += [f"  {item['id']}: {item['reason']}" for item in bad[:10]]
        if len(bad) > 10:
            lines.append(f"  ... and {len(bad) - 10} more (--json lists every one)")
    return "\n".join(lines)
