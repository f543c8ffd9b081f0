"""Maximal-onset syllabification over ARPAbet, checked on CMUdict pronunciations (PocketSphinx's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emofuse.align.syllables import ONSETS, is_vowel, syllabify, syllable_name

# word -> syllables (dictionary counts; every CMUdict pronunciation of these has this many vowels)
KNOWN = {
    "kids": 1, "door": 1, "strengths": 1, "the": 1, "talking": 2, "sitting": 2, "hello": 2,
    "table": 2, "extra": 2, "beautiful": 3, "emotion": 3, "idea": 3, "banana": 3,
    "recognition": 4, "television": 4, "university": 5, "extraordinary": 6,
    "responsibility": 6, "internationalization": 8,
}  # fmt: skip


@pytest.fixture(scope="module")
def cmudict() -> dict[str, list[str]]:
    from pocketsphinx import get_model_path

    out: dict[str, list[str]] = {}
    path = Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    for line in path.read_text(encoding="utf-8").splitlines():
        word, *phones = line.split()
        if "(" not in word:
            out[word] = phones
    return out


@pytest.mark.parametrize("word", sorted(KNOWN))
def test_known_counts(cmudict, word):
    phones = cmudict[word]
    groups = syllabify(phones)
    assert len(groups) == KNOWN[word]
    assert [i for g in groups for i in g] == list(range(len(phones)))  # a partition, in order


@pytest.mark.parametrize(
    ("phones", "expected"),
    [
        ("EH K S T R AH", ["eh_k", "s_t_r_ah"]),  # S T R is a legal onset: maximal
        ("T AO K IH NG", ["t_ao", "k_ih_ng"]),
        ("AH0 B AW1 T", ["ah0", "b_aw1_t"]),  # stress digits (MFA) are fine
        ("S IH NG ER", ["s_ih_ng", "er"]),  # NG never starts a syllable
        ("HH AH Z B AH N D", ["hh_ah_z", "b_ah_n_d"]),  # Z B is no onset
        ("M", ["m"]),  # no vowel: one syllable
        ("æ k t ɹ ə s", ["æ_k", "t_ɹ_ə_s"]),  # IPA phones (MFA english_mfa)
    ],
)
def test_maximal_onset(phones, expected):
    ph = phones.split()
    assert [syllable_name([ph[i] for i in g]) for g in syllabify(ph)] == expected


def test_every_cmudict_word_has_one_vowel_per_syllable(cmudict):
    for word, phones in list(cmudict.items())[::20]:  # ~6,700 words
        groups = syllabify(phones)
        vowels = sum(is_vowel(p) for p in phones)
        assert len(groups) == max(vowels, 1), word
        for g in groups[1:]:
            onset = []
            for i in g:
                if is_vowel(phones[i]):
                    break
                onset.append(phones[i])
            assert len(onset) <= 1 or tuple(onset) in ONSETS, (word, onset)
