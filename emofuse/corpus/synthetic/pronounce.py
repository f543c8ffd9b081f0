"""The toy pronouncer: the phone inventory, letter-to-phone rules, syllables and phone classes.

Every word gets its own stable phone string (`pronounce`), split into onset + vowel syllables
(`syllabify`); transcript tags map to the filler words and phones Sphinx writes for them. The
phone classes and formant targets tell the synthesiser how each phone sounds.
"""

from __future__ import annotations

PHONES = (
    "AA AE AH AO AW AX AXR AY B CH D DD DX DH EH ER EY F G HH IH IX IY JH K KD L M N NG OW OY "
    "P R S SH T TD TH TS UH UW V W Y Z ZH"
).split()
TAGS = {  # transcript tag -> alignment filler (word tier) and phone symbol
    "[LAUGHTER]": ("++LAUGHTER++", "+LAUGHTER+"),
    "[BREATHING]": ("++BREATHING++", "+BREATHING+"),
    "[GARBAGE]": ("++GARBAGE++", "+GARBAGE+"),
    "[garbage]": ("++GARBAGE++", "+GARBAGE+"),
    "[LIPSMACK]": ("++LIPSMACK++", "+LIPSMACK+"),
}

# ----------------------------------------------------------------------------- pronunciations
_DIGRAPHS = {"sh": "SH", "ch": "CH", "th": "TH", "ng": "NG", "ee": "IY", "oo": "UW", "ou": "AW",
             "ai": "EY", "ay": "EY", "oa": "OW", "ea": "IY", "ck": "K"}  # fmt: skip
_LETTERS = dict(zip("abcdefghijklmnopqrstuvwxyz", (
    "AE B K D EH F G HH IH JH K L M N AO P K R S T AH V W K IY Z").split(), strict=True))  # fmt: skip
VOWELS = {"AA", "AE", "AH", "AO", "AW", "AX", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "UW"}
STOPS = {"B", "D", "G", "P", "T", "K"}
VOICED_NOISE = {"Z", "ZH", "JH", "V", "DH"}
FORMANTS = {  # vowel / sonorant -> (F1, F2) in Hz
    "IY": (270, 2290), "IH": (390, 1990), "EH": (530, 1840), "AE": (660, 1720),
    "AH": (520, 1190), "AA": (730, 1090), "AO": (570, 840), "UW": (300, 870),
    "ER": (490, 1350), "AW": (700, 1100), "EY": (450, 2000), "OW": (500, 900),
    "M": (250, 1000), "N": (250, 1400), "NG": (250, 1200), "L": (360, 1300),
    "R": (420, 1300), "W": (300, 700), "Y": (280, 2200),
}  # fmt: skip


def pronounce(word: str) -> list[str]:
    """A toy letter-to-phone rule: enough to give every word its own stable phone string."""
    w = "".join(c for c in word.lower() if c.isalpha())
    if len(w) > 3 and w.endswith("e") and w[-2] not in "aeiou":
        w = w[:-1]  # silent final e
    phones: list[str] = []
    i = 0
    while i < len(w):
        if w[i : i + 2] in _DIGRAPHS:
            ph, i = _DIGRAPHS[w[i : i + 2]], i + 2
        else:
            ph, i = _LETTERS[w[i]], i + 1
        if not phones or phones[-1] != ph:
            phones.append(ph)
    return phones


def syllabify(phones: list[str]) -> list[list[str]]:
    """Onset consonants + vowel per syllable; trailing consonants join the last syllable."""
    sylls: list[list[str]] = [[]]
    for ph in phones:
        sylls[-1].append(ph)
        if ph in VOWELS:
            sylls.append([])
    if not sylls[-1]:
        sylls.pop()
    elif len(sylls) > 1 and not any(p in VOWELS for p in sylls[-1]):
        sylls[-2].extend(sylls.pop())
    return sylls
