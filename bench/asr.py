"""Checks for the own-corpus chain (issue 14) on a real corpus: ASR WER, alignment, segment streams.

    python bench/asr.py strip-text --manifest M.csv --out NOTEXT.csv   # copy without the text column
    python bench/asr.py wer --gold M.csv --asr ASR.csv                 # asr_text vs the gold text
    python bench/asr.py check-align --manifest ALIGNED.csv             # the alignment criteria
    python bench/asr.py segments --cache C.h5                          # non-empty segment streams

`check-align` checks every aligned clip: its words are the words of its transcript, in order, inside
the clip and non-overlapping; every phone is >= 10 ms; every word has as many syllables as CMUdict
gives for the pronunciation PocketSphinx aligned (and, separately, for the word's first entry).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def strip_text(manifest: Path, out: Path) -> None:
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    cols = [c for c in rows[0] if c != "text"]
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            audio = Path(r["audio"])
            r["audio"] = str(audio if audio.is_absolute() else (manifest.parent / audio).resolve())
            w.writerow(r)
    print(f"{out}: {len(rows)} rows, columns {','.join(cols)} (no text)")


def wer(gold: Path, asr: Path) -> None:
    from emofuse.asr.wer import NORMALISATION, word_error_rate

    with gold.open(newline="") as f:
        ref = {r["id"]: r["text"] for r in csv.DictReader(f)}
    with asr.open(newline="") as f:
        hyp = {r["id"]: r["asr_text"] for r in csv.DictReader(f)}
    ids = [i for i in ref if i in hyp]
    value, words = word_error_rate([ref[i] for i in ids], [hyp[i] for i in ids])
    exact = sum(
        " ".join(ref[i].lower().split()) == " ".join(hyp[i].lower().rstrip(".").split())
        for i in ids
    )
    print(f"WER {100 * value:.2f} % over {len(ids)} clips ({words} reference words); "
          f"{exact} clips exactly right; normalisation: {NORMALISATION}")  # fmt: skip


def _cmudict() -> dict[str, list[list[str]]]:
    from pocketsphinx import get_model_path

    out: dict[str, list[list[str]]] = {}
    path = Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    for line in path.read_text(encoding="utf-8").splitlines():
        word, *phones = line.split()
        out.setdefault(word.split("(")[0], []).append(phones)
    return out


def check_align(manifest: Path) -> None:
    import soundfile as sf

    from emofuse.align.pocketsphinx import transcript_words
    from emofuse.align.syllables import is_vowel
    from emofuse.align.textgrid import read_textgrid

    cmu = _cmudict()
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    aligned = [r for r in rows if r["alignment"]]
    bad: dict[str, list[str]] = {k: [] for k in ("words", "inside", "overlap", "phone10ms",
                                                 "syll_variant", "syll_first")}  # fmt: skip
    shortest = 1.0
    for r in aligned:
        tiers = read_textgrid(manifest.parent / r["alignment"])
        dur = sf.info(str(manifest.parent / r["audio"])).duration
        words = tiers["word"]
        if [w for *_, w in words] != transcript_words(r["text"]):
            bad["words"].append(r["id"])
        if not all(0 <= s < e <= dur + 1e-6 for s, e, _ in words):
            bad["inside"].append(r["id"])
        if not all(a[1] <= b[0] + 1e-9 for a, b in zip(words, words[1:], strict=False)):
            bad["overlap"].append(r["id"])
        lengths = [e - s for s, e, _ in tiers["phone"]]
        shortest = min([shortest, *lengths])
        if min(lengths) < 0.01 - 1e-9:
            bad["phone10ms"].append(r["id"])
        for s, e, w in words:
            phones = [p[2] for p in tiers["phone"] if s <= p[0] < e]
            n_syll = sum(1 for y in tiers["syllable"] if s <= y[0] < e)
            variants = cmu.get(w, [])
            used = [v for v in variants if v == phones]
            if not used or n_syll != sum(is_vowel(p) for p in used[0]):
                bad["syll_variant"].append(f"{r['id']}:{w}")
            if not variants or n_syll != sum(is_vowel(p) for p in variants[0]):
                bad["syll_first"].append(f"{r['id']}:{w}")
    n_words = [len(read_textgrid(manifest.parent / r["alignment"])["word"]) for r in aligned[:50]]
    print(f"aligned {len(aligned)} of {len(rows)} clips = {100 * len(aligned) / len(rows):.2f} %")
    print(
        f"words per aligned clip (first 50): {sorted(set(n_words))}; shortest phone {shortest * 1000:.0f} ms"
    )
    for k, v in bad.items():
        print(f"  {k}: {len(v)} failing" + (f" (e.g. {', '.join(v[:4])})" if v else ""))
    for r in rows:
        if not r["alignment"]:
            print(f"  unaligned {r['id']}: {r['alignment_error']}")


def segments(cache: Path) -> None:
    from emofuse.cache import open_cache

    with open_cache(cache) as c:
        n = len(c.ids)
        line = [f"{n} utterances; aligned {int(np.sum(c.table['aligned']))}"]
        both = np.ones(n, bool)
        for stream in ("phone", "syllable", "word"):
            counts = np.diff(c.offsets(stream))
            both &= counts > 0
            line.append(f"{stream}: non-empty {int((counts > 0).sum())} "
                        f"({100 * (counts > 0).mean():.2f} %), {int(counts.sum())} segments")  # fmt: skip
        line.append(f"all three non-empty {int(both.sum())} ({100 * both.mean():.2f} %)")
        print("; ".join(line))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("strip-text")
    s.add_argument("--manifest", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("wer")
    s.add_argument("--gold", type=Path, required=True)
    s.add_argument("--asr", type=Path, required=True)
    s = sub.add_parser("check-align")
    s.add_argument("--manifest", type=Path, required=True)
    s = sub.add_parser("segments")
    s.add_argument("--cache", type=Path, required=True)
    a = p.parse_args()
    if a.cmd == "strip-text":
        strip_text(a.manifest, a.out)
    elif a.cmd == "wer":
        wer(a.gold, a.asr)
    elif a.cmd == "check-align":
        check_align(a.manifest)
    else:
        segments(a.cache)


if __name__ == "__main__":
    main()
