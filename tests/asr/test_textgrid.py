"""TextGrids: ours round-trip to the same tiers; an MFA-style file (words / phones, stress digits,
blank silences, spn) reads to the same tiers with a syllable tier made from the phones."""

from __future__ import annotations

import pytest

from emofuse.align.textgrid import read_textgrid, syllables_from_phones, write_textgrid
from emofuse.errors import EmofuseError

TIERS = {
    "word": [(0.2, 0.52, "kids"), (0.52, 0.6, "are"), (0.71, 1.12, "talking")],
    "syllable": [(0.2, 0.52, "k_ih_d_z"), (0.52, 0.6, "er"), (0.71, 0.92, "t_ao"),
                 (0.92, 1.12, "k_ih_ng")],
    "phone": [(0.2, 0.28, "K"), (0.28, 0.37, "IH"), (0.37, 0.44, "D"), (0.44, 0.52, "Z"),
              (0.52, 0.6, "ER"), (0.71, 0.81, "T"), (0.81, 0.92, "AO"), (0.92, 1.0, "K"),
              (1.0, 1.05, "IH"), (1.05, 1.12, "NG")],
}  # fmt: skip


def test_ours_round_trip(tmp_path):
    path = tmp_path / "u1.TextGrid"
    write_textgrid(path, TIERS, duration=1.5)
    text = path.read_text()
    assert 'name = "words"' in text and 'name = "syllables"' in text and 'name = "phones"' in text
    assert read_textgrid(path) == TIERS


def _interval_tier(name: str, intervals, xmax: float) -> str:
    rows = [
        f"            intervals [{i}]:\n            xmin = {s}\n            xmax = {e}\n"
        f'            text = "{t}"\n'
        for i, (s, e, t) in enumerate(intervals, 1)
    ]
    return (
        f'        class = "IntervalTier"\n        name = "{name}"\n        xmin = 0\n'
        f"        xmax = {xmax}\n        intervals: size = {len(intervals)}\n" + "".join(rows)
    )


def _mfa_file(path, words_name="words", phones_name="phones"):
    """A TextGrid laid out as the Montreal Forced Aligner writes one (long format, blanks, spn)."""
    words = [(0, 0.2, ""), (0.2, 0.52, "kids"), (0.52, 0.6, "are"), (0.6, 0.71, ""),
             (0.71, 1.12, "talking"), (1.12, 1.3, "<unk>"), (1.3, 1.5, "")]  # fmt: skip
    phones = [(0, 0.2, "sil"), (0.2, 0.28, "K"), (0.28, 0.37, "IH1"), (0.37, 0.44, "D"),
              (0.44, 0.52, "Z"), (0.52, 0.6, "ER0"), (0.6, 0.71, "sp"), (0.71, 0.81, "T"),
              (0.81, 0.92, "AO1"), (0.92, 1.0, "K"), (1.0, 1.05, "IH0"), (1.05, 1.12, "NG"),
              (1.12, 1.3, "spn"), (1.3, 1.5, "")]  # fmt: skip
    head = (
        'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1.5\n'
        "tiers? <exists>\nsize = 2\nitem []:\n"
    )
    body = "    item [1]:\n" + _interval_tier(words_name, words, 1.5)
    body += "    item [2]:\n" + _interval_tier(phones_name, phones, 1.5)
    path.write_text(head + body)
    return path


@pytest.mark.parametrize("prefix", ["", "speaker1 - "])
def test_mfa_style_textgrid(tmp_path, prefix):
    path = _mfa_file(tmp_path / "mfa.TextGrid", f"{prefix}words", f"{prefix}phones")
    tiers = read_textgrid(path)
    assert tiers["word"] == TIERS["word"] + [(1.12, 1.3, "<unk>")]
    stress = {"IH": "IH1", "ER": "ER0", "AO": "AO1"}
    expected_phones = [(s, e, p) for s, e, p in TIERS["phone"]]
    expected_phones[1] = (0.28, 0.37, stress["IH"])
    expected_phones[4] = (0.52, 0.6, stress["ER"])
    expected_phones[6] = (0.81, 0.92, stress["AO"])
    expected_phones[8] = (1.0, 1.05, "IH0")
    assert tiers["phone"] == expected_phones + [(1.12, 1.3, "+SPN+")]
    # the syllable tier is made from the phones, word by word: same spans as ours
    spans = [(s, e) for s, e, _ in tiers["syllable"]]
    assert spans == [(s, e) for s, e, _ in TIERS["syllable"]] + [(1.12, 1.3)]
    assert [sym for *_, sym in tiers["syllable"]][:2] == ["k_ih1_d_z", "er0"]
    # and written back by us, it reads to the same tiers
    write_textgrid(tmp_path / "again.TextGrid", tiers, 1.5)
    assert read_textgrid(tmp_path / "again.TextGrid") == tiers


def test_syllables_without_words_split_at_pauses():
    phones = [(0.0, 0.1, "K"), (0.1, 0.2, "IH"), (0.2, 0.3, "D"), (0.5, 0.6, "AH"), (0.6, 0.7, "T")]
    assert syllables_from_phones(phones, None) == [(0.0, 0.3, "k_ih_d"), (0.5, 0.7, "ah_t")]


def test_bad_textgrids_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.TextGrid"
    bad.write_text("not a textgrid\n")
    with pytest.raises(EmofuseError, match="not a readable Praat TextGrid"):
        read_textgrid(bad)
    other = tmp_path / "other.TextGrid"
    _mfa_file(other, "tokens", "segments")
    with pytest.raises(EmofuseError, match="no words or phones tier"):
        read_textgrid(other)
    with pytest.raises(EmofuseError, match="does not exist"):
        read_textgrid(tmp_path / "nope.TextGrid")
