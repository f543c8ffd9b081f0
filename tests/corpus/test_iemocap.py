"""The IEMOCAP reader on handwritten fixtures holding the verbatim lines of iemocap.md."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.corpus import read_corpus
from emofuse.corpus.iemocap import (
    SKIP_BAD_SUMMARY,
    SKIP_BAD_WAV,
    SKIP_NO_WAV,
    SKIP_NOT_IMPRO,
    SKIP_ODD_LINE,
    SKIP_TWIN,
    parse_alignment,
    parse_annotations,
    skip_label_reason,
    speaker_of,
)
from emofuse.corpus.text import normalize_text
from emofuse.errors import EmofuseError


def _read(root, **kw):
    return read_corpus("iemocap", root=root, progress=False, **kw)


def test_four_class_set_merges_exc_and_reports_every_skip(mini_iemocap):
    res = _read(mini_iemocap)
    got = {u.id: u.label for u in res.utterances}
    assert got == {
        "Ses01F_impro01_F000": "neu",
        "Ses01F_impro01_M001": "hap",  # exc merged into hap
        "Ses01F_impro03_M007": "hap",
        "Ses03M_impro05a_F000": "ang",  # irregular dialog name
        "Ses05M_script01_1b_F002": "neu",  # irregular dialog name
    }
    assert res.skipped[skip_label_reason("fru", "4")] == ["Ses01F_impro01_M000"]
    assert res.skipped[skip_label_reason("xxx", "4")] == ["Ses03M_impro05a_M000"]
    assert res.skipped[SKIP_NO_WAV] == ["Ses01F_impro03_F013"]
    # 5 untimed lines in Ses01F_impro01 + the XX line in session 3, by file:line
    odd = res.skipped[SKIP_ODD_LINE]
    assert len(odd) == 6
    assert "Ses03M_impro05a.txt:2" in odd and "Ses01F_impro01.txt:8" in odd
    assert sorted(res.skipped[SKIP_TWIN]) == sorted(
        [
            "Session1/sentences/wav/Ses01F_impro01/._Ses01F_impro01_F000.wav",
            "Session1/dialog/EmoEvaluation/._Ses01F_impro01.txt",
            "Session1/dialog/transcriptions/._Ses01F_impro01.txt",
            "Session1/sentences/ForcedAlignment/Ses01F_impro01/._Ses01F_impro01_F000.wdseg",
        ]
    )
    assert not any("XX" in u.id or u.id.startswith("._") for u in res.utterances)


@pytest.mark.parametrize(
    ("classes", "labels"),
    [
        ("5", {"neu": 2, "exc": 1, "hap": 1, "ang": 1}),
        ("6", {"neu": 2, "exc": 1, "hap": 1, "ang": 1, "fru": 1}),
        ("all", {"neu": 2, "exc": 1, "hap": 1, "ang": 1, "fru": 1, "xxx": 1}),
    ],
)
def test_label_sets(mini_iemocap, classes, labels):
    res = _read(mini_iemocap, classes=classes)
    counts: dict[str, int] = {}
    for u in res.utterances:
        counts[u.label] = counts.get(u.label, 0) + 1
    assert counts == labels
    assert res.utterances[0].extra["code"] in {"neu", "exc", "hap", "ang", "fru", "xxx"}


def test_speaker_is_the_last_field_not_the_letter_after_the_session(mini_iemocap):
    by_id = {u.id: u for u in _read(mini_iemocap).utterances}
    m = by_id["Ses01F_impro01_M001"]
    assert (m.session, m.speaker, m.gender) == ("Ses01", "Ses01_M", "M")
    f = by_id["Ses05M_script01_1b_F002"]
    assert (f.session, f.speaker, f.gender) == ("Ses05", "Ses05_F", "F")
    assert speaker_of("Ses03M_impro05a_F000") == ("Ses03", "Ses03_F", "F")
    assert f.extra["dialog"] == "Ses05M_script01_1b" and not f.extra["improvised"]


def test_alignment_seconds_use_the_two_frame_delay_and_inclusive_end(mini_iemocap):
    u = {u.id: u for u in _read(mini_iemocap).utterances}["Ses01F_impro01_F000"]
    assert u.aligned
    assert u.tiers["word"] == [
        (0.02, 0.43, "<s>"),
        (0.43, 0.75, "WHAT(2)"),
        (0.75, 1.35, "++LAUGHTER++"),
        (1.35, 1.49, "WELL"),
        (1.49, 1.72, "<sil>"),
        (1.72, 2.02, "</s>"),
    ]
    # the phone symbol with its context and position letter stays one symbol
    assert [s for _, _, s in u.tiers["phone"]] == ["SIL", "W(SIL,AH) b", "AH(HH,L) e", "+LAUGHTER+"]
    assert u.tiers["syllable"][1] == (0.43, 2.02, "w_ah")
    assert u.duration == pytest.approx(2.02)
    assert u.extra["start"] == 6.2901 and u.extra["vad"] == [2.5, 2.5, 2.5]


def test_unaligned_utterance_is_kept_and_flagged(mini_iemocap):
    u = {u.id: u for u in _read(mini_iemocap).utterances}["Ses01F_impro01_M001"]
    assert u.tiers is None and not u.aligned


def test_raw_text_is_kept_and_normalised_text_drops_tags(mini_iemocap):
    by_id = {u.id: u for u in _read(mini_iemocap, classes="all").utterances}
    m7 = by_id["Ses01F_impro03_M007"]
    assert m7.text == "[LAUGHTER] That's really romantic."
    assert m7.text_norm == "That's really romantic."
    assert by_id["Ses01F_impro01_M001"].text == "Oh  [LAUGHTER] great!"
    assert by_id["Ses01F_impro01_M001"].model_text == "Oh great!"
    assert by_id["Ses03M_impro05a_M000"].text_norm == "Fine."
    raw = by_id["Ses03M_impro05a_M000"]
    assert raw.text == "[BREATHING] [garbage] Fine."
    assert (
        normalize_text("I guess I'll-  I guess I'll have an internet husband.[LAUGHTER]")
        == "I guess I'll- I guess I'll have an internet husband."
    )
    assert normalize_text("Oh  [LAUGHTER] great!", "tags") == "Oh [LAUGHTER] great!"
    kept = _read(mini_iemocap, text_norm="raw").utterances[0]
    assert kept.text_norm is None and kept.model_text == kept.text


def test_messy_annotator_lines(mini_iemocap):
    by_id = {u.id: u for u in _read(mini_iemocap, classes="6").utterances}
    ann = by_id["Ses01F_impro01_M000"].extra["annotations"]
    assert ann["categorical"] == {
        "C-M5": [],
        "C-E1": ["Other"],
        "C-E3": ["Frustration", "Disgust"],
    }
    assert ann["dimensional"] == {"A-E1": {"val": 2.0, "act": 3.0, "dom": None}}
    f0 = by_id["Ses01F_impro01_F000"].extra["annotations"]
    assert f0["dimensional"]["A-E3"] == {"val": 3.0, "act": 2.0, "dom": 2.0}
    assert f0["categorical"]["C-F1"] == ["Neutral"]
    assert parse_annotations(["C-E9:\t\t(no tab choice)", "A-E9:\tval ; act 4;\t()"]) == {
        "categorical": {"C-E9": []},
        "dimensional": {"A-E9": {"val": None, "act": 4.0, "dom": None}},
    }


def test_improvised_only(mini_iemocap):
    res = _read(mini_iemocap, improvised_only=True)
    assert all(u.extra["improvised"] for u in res.utterances)
    assert res.skipped[SKIP_NOT_IMPRO] == ["Ses05M_script01_1b_F002"]
    assert len(res.utterances) == 4


def test_malformed_summary_line_is_reported(mini_iemocap):
    path = mini_iemocap / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    path.write_text(path.read_text() + "[1.0 - 2.0] Ses01F_impro01_F009 neu [2.5, 2.5, 2.5]\n\n")
    res = _read(mini_iemocap)
    assert res.skipped[SKIP_BAD_SUMMARY] == ["Ses01F_impro01.txt:18"]


@pytest.mark.parametrize("content", [b"", b"not audio at all"])
def test_unreadable_wav_is_skipped_and_reported(mini_iemocap, content):
    wav = mini_iemocap / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    wav.write_bytes(content)
    res = _read(mini_iemocap)
    assert res.skipped[SKIP_BAD_WAV] == ["Ses01F_impro01_F000"]
    assert "Ses01F_impro01_F000" not in {u.id for u in res.utterances}
    assert len(res.utterances) == 4  # the other four are kept


def test_parent_folder_is_accepted(mini_iemocap):
    assert len(_read(mini_iemocap.parent).utterances) == 5


@pytest.mark.parametrize(
    "remove", ["Session1", "Session3/dialog/transcriptions", "Session5/sentences/wav"]
)
def test_not_iemocap_names_the_missing_folder(mini_iemocap, remove):
    """A whole session missing: the root is not IEMOCAP's; a folder missing inside a session
    that is there: the session is incomplete (round 15 row 49 advised another --root)."""
    import re
    import shutil

    shutil.rmtree(mini_iemocap / remove)
    session, _, sub = remove.partition("/")
    says = (
        f"{mini_iemocap / session} is incomplete: its folder {sub} is missing (an interrupted "
        "unpack or copy?); restore it from the IEMOCAP release"
        if sub
        else f"expected folder {remove} is missing"
    )
    with pytest.raises(EmofuseError, match=re.escape(says)):
        _read(mini_iemocap)
    result = CliRunner().invoke(cli, ["corpus", "stats", "--root", str(mini_iemocap)])
    assert result.exit_code == 2
    assert says in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_bad_alignment_row_names_file_and_line(tmp_path):
    path = tmp_path / "x.wdseg"
    path.write_text("\t SFrm  EFrm    SegAScr Word\n\t    0   oops     -1 <s>\n Total score: -1\n")
    with pytest.raises(EmofuseError, match=r"x\.wdseg:2"):
        parse_alignment(path)


def test_bad_options(mini_iemocap):
    with pytest.raises(EmofuseError, match="--classes 7"):
        _read(mini_iemocap, classes="7")
    with pytest.raises(EmofuseError, match="text normalisation"):
        _read(mini_iemocap, text_norm="shout")


def test_stats_json_through_the_cli(mini_iemocap):
    out = CliRunner().invoke(cli, ["corpus", "stats", "--root", str(mini_iemocap), "--json"])
    assert out.exit_code == 0, out.output
    stats = json.loads(out.stdout)
    assert set(stats) >= {
        "utterances",
        "labels",
        "sessions",
        "speakers",
        "genders",
        "with_alignment",
        "skipped",
    }
    assert stats["utterances"] == 5 and stats["with_alignment"] == 1
    assert stats["labels"] == {"ang": 1, "hap": 2, "neu": 2}
    assert stats["sessions"] == {"Ses01": 3, "Ses03": 1, "Ses05": 1}
    assert stats["speakers"] == {"Ses01_F": 1, "Ses01_M": 2, "Ses03_F": 1, "Ses05_F": 1}
    assert stats["genders"] == {"F": 3, "M": 2}
    assert stats["skipped"][SKIP_ODD_LINE]["count"] == 6
    assert len(stats["skipped"][SKIP_ODD_LINE]["examples"]) == 3


def test_utterance_without_an_emoevaluation_block_is_listed_in_skipped(mini_iemocap):
    """Wav and transcript present, label block gone (one block, or the dialog's whole file)."""
    from emofuse.corpus.iemocap import SKIP_NO_LABEL

    summary = mini_iemocap / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    text = summary.read_text()
    summary.write_text(text[: text.index("[11.0000 - 12.5000]")])  # M001's block cut off
    (mini_iemocap / "Session1/dialog/EmoEvaluation/Ses01F_impro03.txt").unlink()
    res = _read(mini_iemocap)
    assert res.skipped[SKIP_NO_LABEL] == [
        "Ses01F_impro01_M001", "Ses01F_impro03_F013", "Ses01F_impro03_M007"
    ]  # fmt: skip
    assert {u.id for u in res.utterances} == {
        "Ses01F_impro01_F000", "Ses03M_impro05a_F000", "Ses05M_script01_1b_F002"
    }  # fmt: skip


def test_an_alignment_far_past_its_audio_is_dropped_and_listed(mini_iemocap):
    """An alignment ending well past its wav (another recording's) had every span clamped onto
    the last frame and stored without a flag (round-14 extract side row 73); the manifest
    reader refuses such a TextGrid. The utterance is kept unaligned, and listed."""
    import numpy as np
    import soundfile as sf

    from emofuse.corpus.iemocap import SKIP_ALIGN_PAST

    assert {u.id: u for u in _read(mini_iemocap).utterances}["Ses01F_impro01_F000"].aligned
    wav = mini_iemocap / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    sf.write(wav, np.full(8000, 0.1, dtype=np.float32), 16000)  # 0.5 s; its words reach 2.02 s
    res = _read(mini_iemocap)
    u = {u.id: u for u in res.utterances}["Ses01F_impro01_F000"]
    assert u.tiers is None and not u.aligned
    assert res.skipped[SKIP_ALIGN_PAST] == ["Ses01F_impro01_F000"]


def test_a_byte_order_mark_in_the_text_files_is_not_part_of_the_first_line(mini_iemocap):
    """A BOM prepended to a transcription file (Notepad) made its first line an "odd line" and
    dropped that utterance as "no transcript" (round-15 extract side row 52); also in the
    EmoEvaluation and ForcedAlignment files."""
    before = _read(mini_iemocap)
    session = mini_iemocap / "Session1"
    files = [
        session / "dialog" / "transcriptions" / "Ses01F_impro01.txt",
        session / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt",
        *sorted((session / "sentences" / "ForcedAlignment").rglob("Ses01F_impro01_*.wdseg")),
    ]
    for path in files:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    after = _read(mini_iemocap)
    assert [(u.id, u.label, u.text, u.tiers) for u in after.utterances] == [
        (u.id, u.label, u.text, u.tiers) for u in before.utterances
    ]
    assert after.skipped == before.skipped


@pytest.mark.parametrize(
    "victim",
    [
        "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt",
        "Session1/dialog/transcriptions/Ses01F_impro01.txt",
        "Session1/sentences/ForcedAlignment/Ses01F_impro01/Ses01F_impro01_F000.wdseg",
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav",
    ],
    ids=["summary", "transcript", "alignment", "wav"],
)
def test_a_corpus_file_the_user_may_not_read_is_named_with_chmod_advice(
    mini_iemocap, unprivileged, victim
):
    """Round-17 extract side rows 43, 44: an unreadable EmoEvaluation file was a PermissionError
    traceback, and an unreadable (intact) wav was dropped as "not audio, empty or damaged"."""
    import shutil

    from tests.users import give_to_user

    base, as_user = unprivileged
    whole = len(_read(mini_iemocap).utterances)
    root = base / "IEMOCAP_full_release"
    shutil.copytree(mini_iemocap, root)
    give_to_user(root)
    (root / victim).chmod(0)
    with as_user(), pytest.raises(EmofuseError) as err:
        _read(root)
    assert str(err.value) == (
        f"{root / victim} cannot be read (Permission denied); make it readable (`chmod u+r` it, "
        "or ask its owner), then rerun the same command"
    )
    (root / victim).chmod(0o644)  # the advice followed
    with as_user():
        assert len(_read(root).utterances) == whole


def test_a_transcript_that_is_not_utf8_is_named_not_silently_altered(mini_iemocap):
    """Round-17 extract side row 62: a Latin-1 `café` in a transcript became `caf\ufffd`, which the
    text model embedded, with no word anywhere and the store called complete."""
    path = mini_iemocap / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].rstrip(b"\r") + " café".encode("latin-1") + b"\r"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(EmofuseError) as err:
        _read(mini_iemocap)
    assert str(err.value) == (
        f"{path}: line 2 is not UTF-8 text (byte 0xE9); save the file as UTF-8 (e.g. `iconv -f "
        "latin1 -t utf-8`), then rerun the same command"
    )


@pytest.mark.parametrize(
    "victim",
    [
        "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav",
        "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt",
        "Session1/dialog/transcriptions/Ses01F_impro01.txt",
        "Session1/sentences/ForcedAlignment/Ses01F_impro01/Ses01F_impro01_F000.wdseg",
    ],
    ids=["wav", "summary", "transcript", "alignment"],
)
def test_a_corpus_file_that_is_a_looping_link_is_named(mini_iemocap, victim):
    """Round-17 extract side row 90: a wav (or summary, transcript, alignment) replaced by a link
    to itself was an ELOOP traceback from the folder scan."""
    path = mini_iemocap / victim
    path.unlink()
    path.symlink_to(path.name)
    with pytest.raises(EmofuseError) as err:
        _read(mini_iemocap)
    assert str(err.value) == (
        f"{path} is a symbolic link that loops back on itself (directly or through another "
        "link); fix or remove the link, then rerun"
    )


@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_a_session_folder_that_is_a_broken_link_is_named(mini_iemocap, link):
    """Round-17 extract side row 91: Session5 -> Session5 was "expected folder Session5 is
    missing"."""
    import shutil

    session = mini_iemocap / "Session5"
    shutil.rmtree(session)
    session.symlink_to("Session5" if link == "loop" else "/nonexistent/Session5")
    with pytest.raises(EmofuseError) as err:
        _read(mini_iemocap)
    says = (
        "is a symbolic link that loops back on itself"
        if link == "loop"
        else "is a symbolic link to '/nonexistent/Session5', which does not exist; fix or remove it"
    )
    assert str(err.value).startswith(f"{session} {says}"), str(err.value)


def test_an_alignment_file_cut_short_is_refused_not_taken_as_whole(mini_iemocap):
    """Round-18 extract side row 78: a .wdseg cut after its third line (no `</s>` row, no
    Total score trailer) was stored as the utterance's whole word tier (1 span of 6)."""
    folder = mini_iemocap / "Session1" / "sentences" / "ForcedAlignment" / "Ses01F_impro01"
    path = folder / "Ses01F_impro01_F000.wdseg"
    path.write_text("\n".join(path.read_text().splitlines()[:3]) + "\n")
    with pytest.raises(EmofuseError) as err:
        _read(mini_iemocap)
    assert str(err.value) == (
        f"{path} is cut short (no 'Total score' line ends it, as Sphinx writes every alignment "
        "file); copy it again from the IEMOCAP release, or remove it to keep the utterance "
        "unaligned"
    )
    path.unlink()  # the advice followed: the utterance is kept, without that tier
    assert _read(mini_iemocap).utterances


def test_an_utterance_listed_twice_in_its_summary_names_both_lines(mini_iemocap):
    """Round-18 extract side rows 82, 83: a duplicated EmoEvaluation block was counted twice by
    `corpus stats` (exit 0), and extract named neither the file nor the lines."""
    path = mini_iemocap / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    lines = path.read_text().splitlines()
    first = next(i for i, x in enumerate(lines) if "\tSes01F_impro01_F000\t" in x)
    path.write_text("\n".join([*lines, lines[first]]) + "\n")
    with pytest.raises(EmofuseError) as err:
        _read(mini_iemocap)
    assert str(err.value) == (
        f"{path}:{len(lines) + 1}: utterance Ses01F_impro01_F000 is listed a second time (first "
        f"at line {first + 1}); remove one of the two blocks, then rerun the same command"
    )


def test_a_wav_that_is_a_dangling_link_is_named_not_skipped_as_missing(mini_iemocap):
    """Round-19 row 57: a wav replaced by a link to a deleted file was skipped as "no sentence
    wav", even with --strict, and the cache counted 0 skipped."""
    wav = (
        mini_iemocap
        / "Session1"
        / "sentences"
        / "wav"
        / "Ses01F_impro01"
        / "Ses01F_impro01_F000.wav"
    )
    wav.unlink()
    wav.symlink_to("/nonexistent/x.wav")
    with pytest.raises(EmofuseError) as err:
        _read(mini_iemocap)
    assert str(err.value) == (
        f"{wav} is a symbolic link to '/nonexistent/x.wav', which does not exist; fix or remove "
        "it, then rerun"
    )
