"""Syllables from phones: maximal-onset syllabification over ARPAbet (IPA phones mapped to it).

Every vowel is the nucleus of one syllable, so a word has as many syllables as its pronunciation has
vowels (CMUdict's count). The consonants between two nuclei go to the second syllable's onset as far
as they form a legal English onset ("maximal onset"), the rest close the first syllable:
`EH K S T R AH` -> `eh_k` + `s_t_r_ah` ("extra"). Syllables never cross a word boundary. A syllable
is named by its phones, lowercased and joined with `_` (IEMOCAP .syseg writes `w_ah`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

VOWELS = frozenset(
    "AA AE AH AO AW AX AXR AY EH ER EY IH IX IY OW OY UH UW UX".split()
)  # fmt: skip
_ONSETS_2 = (
    "P R, P L, P Y, B R, B L, B Y, T R, T W, T Y, D R, D W, D Y, K R, K L, K W, K Y, G R, G L, G W, "
    "G Y, F R, F L, F Y, V Y, TH R, TH W, TH Y, SH R, S P, S T, S K, S M, S N, S L, S W, S F, HH Y, "
    "M Y, N Y, L Y, P W, SH W, V W, Z W"
)
_ONSETS_3 = "S P R, S P L, S P Y, S T R, S T Y, S K R, S K L, S K W, S K Y"
NO_ONSET = frozenset({"NG"})  # never begins an English syllable
ONSETS = frozenset(
    tuple(o.split()) for o in (_ONSETS_2 + ", " + _ONSETS_3).split(", ")
)  # fmt: skip

# IPA phones (Montreal Forced Aligner's english_mfa model) -> ARPAbet, for vowel and onset tests only
IPA = {
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "ɡ": "G", "f": "F", "v": "V",
    "θ": "TH", "ð": "DH", "s": "S", "z": "Z", "ʃ": "SH", "ʒ": "ZH", "h": "HH", "m": "M", "n": "N",
    "ŋ": "NG", "l": "L", "ɫ": "L", "ɹ": "R", "r": "R", "w": "W", "j": "Y", "tʃ": "CH", "ʧ": "CH",
    "dʒ": "JH", "ʤ": "JH", "ɾ": "DX", "ʔ": "Q", "c": "K", "ɟ": "G", "ʎ": "L", "ɲ": "N",
}  # fmt: skip
_IPA_VOWEL = set("aeiouæɑɒɔəɛɜɪʊʌɐɚɝøœɯɤɵɘɨʉyɞ")
_STRESS = re.compile(r"[012]$")


def base_phone(phone: str) -> str:
    """ARPAbet symbol of a phone label: stress digit dropped (`AH0` -> `AH`), IPA mapped."""
    p = phone.strip()
    if p and p[0] in _IPA_VOWEL:
        return "AH"  # every IPA vowel is some vowel: the nucleus test is all that matters
    bare = p.rstrip("ːˑʰʷʲ̩̃")  # length, aspiration, labialisation, syllabic, nasal marks
    if bare in IPA:
        return IPA[bare]
    return _STRESS.sub("", p.upper())


def is_vowel(phone: str) -> bool:
    p = phone.strip()
    # a syllabic consonant (IPA n̩, l̩) is a nucleus too
    return base_phone(p) in VOWELS or "\u0329" in p


def _legal_onset(cluster: Sequence[str]) -> bool:
    if not cluster:
        return True
    if len(cluster) == 1:
        return cluster[0] not in NO_ONSET
    return tuple(cluster) in ONSETS


def syllabify(phones: Sequence[str]) -> list[list[int]]:
    """Group one word's phones into syllables; returns the phone indices of each syllable.

    A word without a vowel (`hmm` as M, a spoken-noise span) is one syllable.
    """
    if not phones:
        return []
    arpa = [base_phone(p) for p in phones]
    nuclei = [i for i, p in enumerate(phones) if is_vowel(p)]
    if not nuclei:
        return [list(range(len(phones)))]
    starts = [0]
    for prev, nxt in zip(nuclei, nuclei[1:], strict=False):
        cluster = list(range(prev + 1, nxt))  # consonants between the two nuclei
        split = next(
            k for k in range(len(cluster) + 1) if _legal_onset([arpa[i] for i in cluster[k:]])
        )
        starts.append(prev + 1 + split)
    bounds = starts + [len(phones)]
    return [list(range(a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]


def syllable_name(phones: Sequence[str]) -> str:
    if len(phones) == 1 and phones[0].startswith("+"):
        return phones[0]  # a filler (+SPN+ spoken noise) keeps its name: pooling drops it
    return "_".join(p.strip().lower() for p in phones)
