"""What one utterance says and how long each piece lasts: the sentence plan.

A sentence draws words from an emotion-leaning list with some probability (a cue a random-weight
text model can pick up: word identity), else from a neutral one, until its target length is
spent, with an occasional transcript tag. The plan lays every phone, silence and filler out in
whole 10 ms units before any sample exists, so the word, syllable and phone tiers written from it
are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from emofuse.corpus.synthetic.pronounce import STOPS, TAGS, VOWELS, pronounce, syllabify
from emofuse.corpus.synthetic.stats import DELAY

WORDS = {
    "neu": (
        "the a we you it is was to and of that this there they have just so well okay what time "
        "some day going think know said table paper street window number morning later maybe "
        "right now here then about car office meeting letter"
    ).split(),
    "hap": (
        "great love wonderful amazing happy fun yeah excited awesome perfect beautiful lucky "
        "congratulations laugh fantastic party"
    ).split(),
    "sad": (
        "sorry miss lost alone cry tired hurt sad died gone empty lonely goodbye funeral tears "
        "nobody"
    ).split(),
    "ang": (
        "hate stupid damn never shut enough ridiculous sick furious liar idiot stop fault angry "
        "unfair get"
    ).split(),
}


@dataclass(frozen=True)
class SpeechStyle:
    """How every sentence of one corpus is built; set once from its duration range (clips of at
    most 0.3 s get short words, short segments, no tags and no pauses)."""

    lexical_p: float  # chance that a word comes from the emotion-leaning list
    max_word_len: int  # longest word (letters) a sentence may use
    unit_scale: float  # factor on every segment's length
    min_units: int  # shortest segment (10 ms units)
    p_tag: float  # chance of a transcript tag per sentence (×3 for hap and exc)
    edge_units: tuple[int, int]  # base length of the opening and closing silences
    units_range: tuple[int, int]  # the utterance's length in units, the 2-frame delay excluded
    p_pause: float  # chance of a <sil> between two words

    @classmethod
    def for_durations(cls, lo: float, hi: float, lexical_p: float) -> SpeechStyle:
        short = hi <= 0.3
        return cls(
            lexical_p=lexical_p,
            max_word_len=4 if short else 99,
            unit_scale=0.35 if short else 1.0,
            min_units=2 if short else 3,
            p_tag=0.0 if short else 0.05,
            edge_units=(3, 2) if short else (25, 20),
            units_range=(round(lo * 100) - DELAY, round(hi * 100) - DELAY),
            p_pause=0.0 if short else 0.15,
        )


@dataclass
class Plan:
    """One utterance laid out in 10 ms units: its transcript text, phones and tier rows."""

    text: str
    # flat phones: (phone symbol for the tier, base phone, units, kind) ; kind: word|sil|filler
    phones: list[tuple[str, str, int, str]]
    words: list[tuple[str, int, int]]  # (symbol, first phone, last phone)
    sylls: list[tuple[str, int, int]]
    accents: list[tuple[int, int, float]]  # (first phone, last phone, height 0..1) per real word

    @property
    def phone_rows(self) -> list[tuple[str, int, int]]:
        """The phone tier's rows: (symbol, phone, same phone)."""
        return [(p[0], k, k) for k, p in enumerate(self.phones)]


def _sentence(
    rng, code: str, words_from: str, style: SpeechStyle, tempo: float, target_units: int
) -> tuple[list[str], list[str | None]]:
    """Words of one sentence and the tag (or None) that precedes each slot (len = words + 1)."""
    lean = style.lexical_p
    words: list[str] = []
    budget = target_units
    used = DELAY + 6
    vocab_neu = [w for w in WORDS["neu"] if len(w) <= style.max_word_len]
    vocab_emo = [w for w in WORDS[words_from] if len(w) <= style.max_word_len]
    while True:
        pool = vocab_emo if (words_from != "neu" and rng.random() < lean) else vocab_neu
        word = str(pool[rng.integers(len(pool))])
        cost = int(len(pronounce(word)) * 7 * style.unit_scale / tempo) + 1
        if words and used + cost > budget:
            break
        words.append(word)
        used += cost
    tags: list[str | None] = [None] * (len(words) + 1)
    p_tag = style.p_tag * (3.0 if code in ("hap", "exc") else 1.0)
    if rng.random() < p_tag:
        tag = "[LAUGHTER]" if code in ("hap", "exc") else str(rng.choice(list(TAGS)))
        tags[int(rng.integers(len(tags)))] = tag
    return words, tags


def _fit(phones: list[tuple[str, str, int, str]], style: SpeechStyle) -> None:
    """Hold the utterance inside the duration range: shorten the longest segments (never below
    min_units) or lengthen the closing silence. Works in whole 10 ms units, before any frame
    is computed, so the tiers stay exact."""
    lo, hi = style.units_range
    total = sum(p[2] for p in phones)
    while total > hi:
        k = max(range(len(phones)), key=lambda i: phones[i][2])
        if phones[k][2] <= style.min_units:
            break
        phones[k] = (*phones[k][:2], phones[k][2] - 1, phones[k][3])
        total -= 1
    if total < lo:
        phones[-1] = (*phones[-1][:2], phones[-1][2] + lo - total, phones[-1][3])


def plan_sentence(
    rng, code: str, words_from: str, style: SpeechStyle, tempo: float, target_units: int
) -> Plan:
    """One utterance's sentence, spoken at `tempo`, aiming at `target_units` of 10 ms."""
    words, tags = _sentence(rng, code, words_from, style, tempo, target_units)
    scale = style.unit_scale / tempo

    def units(base: float) -> int:
        return max(style.min_units, int(round(base * scale * rng.uniform(0.8, 1.25))))

    phones: list[tuple[str, str, int, str]] = []
    wrows: list[tuple[str, int, int]] = []
    srows: list[tuple[str, int, int]] = []
    accents: list[tuple[int, int, float]] = []
    text_parts: list[str] = []

    def silence(sym: str, n: int) -> None:
        phones.append(("SIL", "SIL", n, "sil"))
        wrows.append((sym, len(phones) - 1, len(phones) - 1))
        srows.append(("SIL", len(phones) - 1, len(phones) - 1))

    silence("<s>", max(style.min_units, units(style.edge_units[0])))
    for i in range(len(words) + 1):
        tag = tags[i]
        if tag is not None:
            filler, phone = TAGS[tag]
            n = units(30)
            phones.append((phone, phone, n, "filler"))
            wrows.append((filler, len(phones) - 1, len(phones) - 1))
            srows.append((phone, len(phones) - 1, len(phones) - 1))
            text_parts.append(tag)
        if i == len(words):
            break
        word = words[i]
        pron = pronounce(word)
        symbol = word.upper()
        if rng.random() < 0.1 and len(pron) > 1:  # an alternate pronunciation: WORD(2)
            symbol += "(2)"
            pron = pron[:-1] + ["AH"] if pron[-1] in VOWELS else pron + ["AH"]
        first = len(phones)
        for j, ph in enumerate(pron):
            base = 9 if ph in VOWELS else (6 if ph in STOPS else 7)
            n = units(base)
            wpos = (
                "s" if len(pron) == 1 else ("b" if j == 0 else ("e" if j == len(pron) - 1 else "i"))
            )
            phones.append((ph, ph, n, "word:" + wpos))
        a = first
        for syl in syllabify(pron):
            srows.append(("_".join(syl), a, a + len(syl) - 1))
            a += len(syl)
        wrows.append((symbol, first, len(phones) - 1))
        accents.append((first, len(phones) - 1, float(rng.uniform(0.3, 1.0))))
        text_parts.append(word)
        if i < len(words) - 1 and rng.random() < style.p_pause:
            silence("<sil>", units(15))
    silence("</s>", max(style.min_units, units(style.edge_units[1])))
    _fit(phones, style)
    # context-dependent phone symbols as Sphinx writes them: AH(HH,L) b
    named = []
    for k, (ph, base, n, kind) in enumerate(phones):
        if kind.startswith("word:"):
            left = phones[k - 1][1] if phones[k - 1][3].startswith("word") else "SIL"
            right = phones[k + 1][1] if phones[k + 1][3].startswith("word") else "SIL"
            ph = f"{base}({left},{right}) {kind[5:]}"
        named.append((ph, base, n, kind))
    # the transcript: sentence case, end punctuation by emotion, occasional double space
    sentence_words = [p for p in text_parts]
    for k, p in enumerate(sentence_words):
        if not p.startswith("["):
            sentence_words[k] = p.capitalize() if p != "i" else "I"
            break
    end = "!" if code in ("ang", "hap", "exc") and rng.random() < 0.6 else "."
    text = ""
    for k, p in enumerate(sentence_words):
        sep = "" if k == 0 else ("  " if rng.random() < 0.05 else " ")
        if p.startswith("[") and k > 0 and rng.random() < 0.5:
            sep = ""  # "…husband.[LAUGHTER]" style
        text += sep + p
        if k == max(i for i, w in enumerate(sentence_words) if not w.startswith("[")):
            text += end
    return Plan(text=text, phones=named, words=wrows, sylls=srows, accents=accents)
