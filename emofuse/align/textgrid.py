"""Praat TextGrids ↔ alignment tiers (read and written with praatio).

emofuse writes one TextGrid per utterance with interval tiers `words`, `syllables`, `phones`;
silence is left blank, as Praat and the Montreal Forced Aligner do. Reading accepts ours and MFA's
(tiers `words` / `phones`, or `SPEAKER - words` / `SPEAKER - phones` from multi-speaker runs;
ARPAbet with stress digits or IPA phones). A missing syllable tier is made from the phones, word by
word (emofuse.align.syllables). Silences (`""`, `sil`, `sp`, `<eps>`, `<sil>`, `SIL`) are not
segments; MFA's spoken-noise `spn` (a word the aligner could not segment) becomes `+SPN+`, a filler
that segment pooling drops unless `--keep-fillers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from emofuse.align.syllables import syllabify, syllable_name
from emofuse.corpus.utterance import Segment
from emofuse.errors import MAKE_READABLE, EmofuseError, readable_file

TIER_NAMES = {"word": "words", "syllable": "syllables", "phone": "phones"}
SILENCE = frozenset({"", "sil", "sp", "<eps>", "<sil>", "<s>", "</s>"})
SPOKEN_NOISE = "+SPN+"
_NOISE = frozenset({"spn", "+spn+", "<unk>", "[speech]"})


def write_textgrid(
    path: str | Path, tiers: Mapping[str, Sequence[Segment]], duration: float
) -> None:
    """One TextGrid with tiers words, syllables, phones (those present), blanks between segments."""
    from praatio import textgrid

    end = max([duration] + [s[1] for segs in tiers.values() for s in segs])
    tg = textgrid.Textgrid(minTimestamp=0.0, maxTimestamp=end)
    for tier, name in TIER_NAMES.items():
        if tier in tiers:
            entries = [(float(s), float(e), sym) for s, e, sym in tiers[tier]]
            tg.addTier(textgrid.IntervalTier(name, entries, 0.0, end))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tg.save(str(tmp), format="long_textgrid", includeBlankSpaces=True, reportingMode="silence")
    except OSError as err:  # a write's error names no file: name the TextGrid (not align's CSV)
        err.filename = err.filename or str(path)
        raise
    tmp.replace(path)


def _find_tier(names: list[str], tier: str) -> str | None:
    wanted = {TIER_NAMES[tier], tier}
    for n in names:
        low = n.strip().lower()
        if low in wanted or low.rsplit(" - ", 1)[-1] in wanted:
            return n
    return None


def _segments(tg, name: str | None, noise_symbol: str | None) -> list[Segment] | None:
    if name is None:
        return None
    out: list[Segment] = []
    for entry in tg.getTier(name).entries:
        label = entry.label.strip()
        if label.lower() in SILENCE or label == "SIL":
            continue
        if label.lower() in _NOISE and noise_symbol is not None:
            label = noise_symbol
        out.append((round(float(entry.start), 6), round(float(entry.end), 6), label))
    return out


def syllables_from_phones(
    phones: Sequence[Segment], words: Sequence[Segment] | None
) -> list[Segment]:
    """A syllable tier from a phone tier: phones grouped by the word they fall in, then syllabified.

    Without a word tier, each run of phones between silences is treated as one word.
    """
    groups: list[list[Segment]] = []
    if words:
        bounds = [(s, e) for s, e, _ in words]
        k, current = 0, None
        for ph in phones:
            mid = (ph[0] + ph[1]) / 2
            while k < len(bounds) and bounds[k][1] <= mid:
                k += 1
            inside = k < len(bounds) and bounds[k][0] <= mid
            key = k if inside else None
            if key is None or key != current or not groups:
                groups.append([])
            current = key
            groups[-1].append(ph)
    else:
        for ph in phones:
            if not groups or groups[-1][-1][1] < ph[0] - 1e-6:
                groups.append([])
            groups[-1].append(ph)
    out: list[Segment] = []
    for g in groups:
        for idx in syllabify([sym for _, _, sym in g]):
            out.append((g[idx[0]][0], g[idx[-1]][1], syllable_name([g[i][2] for i in idx])))
    return out


def read_textgrid(path: str | Path) -> dict[str, list[Segment]]:
    """Tiers `word`, `phone`, `syllable` (whichever the file has or can be made) in seconds."""
    from praatio import textgrid

    path = Path(path)
    if not path.is_file():
        raise EmofuseError(f"alignment {path} does not exist")
    if not readable_file(path):  # an intact file, perhaps: never "rewrite it"
        raise EmofuseError(f"alignment {path} cannot be read (Permission denied); {MAKE_READABLE}")
    if path.stat().st_size == 0:
        raise EmofuseError(
            f"alignment {path} is empty (0 bytes) — rewrite it with `emofuse align` or empty the "
            "manifest's alignment cell to keep the utterance unaligned"
        )
    try:
        tg = textgrid.openTextgrid(str(path), includeEmptyIntervals=False, reportingMode="silence")
    except Exception as err:  # noqa: BLE001 - praatio raises several types for a bad file
        reason = " ".join(str(err).split()) or type(err).__name__  # praatio's detail lines too
        raise EmofuseError(
            f"alignment {path} is not a readable Praat TextGrid ({reason[:200]}) — "
            "rewrite it with `emofuse align` or fix the file"
        ) from None
    names = list(tg.tierNames)
    words = _segments(tg, _find_tier(names, "word"), None)
    phones = _segments(tg, _find_tier(names, "phone"), SPOKEN_NOISE)
    syllables = _segments(tg, _find_tier(names, "syllable"), SPOKEN_NOISE)
    if words is None and phones is None:
        raise EmofuseError(
            f"alignment {path} has no words or phones tier (tiers: {', '.join(names) or 'none'})"
            " — name them words / phones (as emofuse and the Montreal Forced Aligner do)"
        )
    tiers: dict[str, list[Segment]] = {}
    if words is not None:
        tiers["word"] = words
    if phones is not None:
        tiers["phone"] = phones
        tiers["syllable"] = (
            syllables if syllables is not None else syllables_from_phones(phones, words)
        )
    elif syllables is not None:
        tiers["syllable"] = syllables
    return tiers
