"""The manifest reader: CSV/JSONL, relative audio, extra columns, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.corpus import read_corpus
from emofuse.corpus.manifest import SKIP_MISSING
from emofuse.errors import EmofuseError

HEADER = "id,audio,text,label,speaker,session,gender,split,room"


@pytest.fixture
def audio_dir(tmp_path) -> Path:
    """Clips in several formats and rates: soundfile reads them all."""
    d = tmp_path / "clips"
    d.mkdir()
    rng = np.random.default_rng(0)
    sf.write(d / "a.wav", rng.standard_normal(8000) * 0.1, 16000, subtype="PCM_16")
    sf.write(d / "b.flac", rng.standard_normal(22050) * 0.1, 44100)
    sf.write(d / "c.ogg", rng.standard_normal(12000) * 0.1, 8000)
    return tmp_path


def _csv(root: Path, rows: list[str], header: str = HEADER, name: str = "m.csv") -> Path:
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


ROWS = [
    "u1,clips/a.wav,Hello there.,neu,spk1,s1,F,train,kitchen",
    'u2,clips/b.flac,"Well, no [LAUGHTER]!",hap,spk2,s1,male,val,hall',
    "u3,clips/c.ogg,,sad,spk1,s2,,test,",
]


def _read(path, **kw):
    return read_corpus("manifest", manifest=path, progress=False, **kw)


def test_csv_fields_durations_and_extra_columns(audio_dir):
    res = _read(_csv(audio_dir, ROWS))
    u1, u2, u3 = res.utterances
    assert u1.audio == audio_dir / "clips" / "a.wav"
    assert (u1.label, u1.speaker, u1.session, u1.gender, u1.split) == (
        "neu",
        "spk1",
        "s1",
        "F",
        "train",
    )
    assert u1.duration == pytest.approx(0.5)
    assert u2.duration == pytest.approx(0.5) and u3.duration == pytest.approx(1.5)
    assert u2.gender == "M" and u3.gender is None
    assert u2.text == "Well, no [LAUGHTER]!" and u2.text_norm == "Well, no !"
    assert u1.extra == {"room": "kitchen"} and u3.extra == {"room": ""}
    assert res.skipped == {}


def test_jsonl_and_label_filter(audio_dir):
    path = audio_dir / "m.jsonl"
    rows = [
        {
            "id": "x1",
            "audio": "clips/a.wav",
            "text": "hi",
            "label": "ang",
            "speaker": "p",
            "age": 31,
        },
        {
            "id": "x2",
            "audio": str(audio_dir / "clips" / "b.flac"),
            "text": "yo",
            "label": "neu",
            "speaker": "q",
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = _read(path)
    assert [u.id for u in res.utterances] == ["x1", "x2"]
    assert res.utterances[0].extra["age"] == "31" and res.utterances[1].session is None
    only = _read(path, classes="neu")
    assert [u.id for u in only.utterances] == ["x2"]
    assert only.skipped["label not in --classes"] == ["x1"]


def test_missing_audio_fails_naming_it_or_is_skipped(audio_dir):
    rows = [*ROWS, "u4,clips/gone.wav,x,neu,spk3,s2,F,train,"]
    path = _csv(audio_dir, rows)
    with pytest.raises(EmofuseError, match=r"gone\.wav.*--skip-missing"):
        _read(path)
    res = _read(path, skip_missing=True)
    assert len(res.utterances) == 3 and res.skipped[SKIP_MISSING] == ["u4"]
    out = CliRunner().invoke(
        cli,
        [
            "corpus",
            "stats",
            "--corpus",
            "manifest",
            "--manifest",
            str(path),
            "--skip-missing",
            "--json",
        ],
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["skipped"][SKIP_MISSING] == {"count": 1, "examples": ["u4"]}
    bad = CliRunner().invoke(
        cli, ["corpus", "stats", "--corpus", "manifest", "--manifest", str(path)]
    )
    assert bad.exit_code == 2 and "gone.wav" in bad.output and "Traceback" not in bad.output


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        ("id,audio,text,speaker", ["u1,clips/a.wav,x,s"], "missing column.*label"),
        (
            "id,audio,text,Label,speaker",
            ["u1,clips/a.wav,x,neu,s"],
            "unknown column 'Label'.*'label'",
        ),
        (
            "id,audio,text,label,speakr",
            ["u1,clips/a.wav,x,neu,s"],
            "unknown column 'speakr'.*'speaker'",
        ),
        (HEADER, [ROWS[0], ROWS[0]], "duplicate id 'u1'.*row 1"),
        (HEADER, [ROWS[0].replace("train", "dev")], "bad split 'dev'"),
        (HEADER, [ROWS[0].replace(",F,", ",X,")], "bad gender 'X'"),
        (HEADER, [ROWS[0].replace(",neu,", ",,")], "empty 'label'"),
        (HEADER, [], "no rows: empty label set"),
        ("id,audio,text,label,label", ["u1,a,x,y,z"], "empty or repeated column"),
    ],
)
def test_bad_manifests(audio_dir, header, rows, message):
    path = _csv(audio_dir, rows, header)
    with pytest.raises(EmofuseError, match=message) as err:
        _read(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_blank_lines_hold_no_row_and_an_error_names_the_file_line(audio_dir):
    """A line of spaces between rows was read as a row with an empty id, reported as "row 4" of a
    file whose culprit was line 6 (round-12 extract side row 27): blank lines hold no row, and a
    row after them is named with its file line too."""
    rows = [ROWS[0], "", "   ", ",,,,,,,,", ROWS[1], ROWS[2]]
    res = _read(_csv(audio_dir, rows))
    assert [u.id for u in res.utterances] == ["u1", "u2", "u3"]
    rows[-1] = ROWS[2].replace(",sad,", ",,")
    path = _csv(audio_dir, rows)
    with pytest.raises(EmofuseError) as err:
        _read(path)
    assert str(err.value) == (
        f"manifest {path} row 3 (line 7 of the file): empty 'label' — fill it in or remove the row"
    )
    path = _csv(audio_dir, [ROWS[0], ROWS[2].replace(",sad,", ",,")])  # no blank line: as before
    with pytest.raises(EmofuseError, match=r"row 2: empty 'label'"):
        _read(path)
    jsonl = audio_dir / "m.jsonl"
    good = {"id": "u1", "audio": "clips/a.wav", "text": "", "label": "neu", "speaker": "s"}
    jsonl.write_text("\n".join([json.dumps(good), "", json.dumps({**good, "id": ""})]) + "\n")
    with pytest.raises(EmofuseError, match=r"row 2 \(line 3 of the file\): empty 'id'"):
        _read(jsonl)


def test_manifest_that_is_not_utf8_names_the_fix(audio_dir):
    path = _csv(audio_dir, [ROWS[0].replace("Hello there.", "Café olé")])
    path.write_bytes(path.read_text().encode("latin-1"))
    with pytest.raises(EmofuseError, match="is not UTF-8 text: save it as UTF-8") as err:
        _read(path)
    assert str(path) in str(err.value)


def test_a_class_no_row_has_is_refused_naming_it_and_the_manifests_labels(audio_dir):
    """--classes ang,xyz kept the ang rows and dropped xyz without a word (a typo of a class)."""
    path = _csv(audio_dir, ROWS)
    for classes, unknown in (("fear,joy", "fear"), ("neu,sda", "sda")):
        with pytest.raises(EmofuseError) as err:
            _read(path, classes=classes)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(
            f"--classes {classes}: {unknown!r} is not a label"
        )
        assert f"manifest {path}" in msg and "(its labels: hap, neu, sad)" in msg
    result = CliRunner().invoke(cli, ["corpus", "stats", "--corpus", "manifest", "--manifest",
                                      str(path), "--classes", "neu,sda"])  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --classes neu,sda: 'sda' is not a label"), lines[0]


def test_unreadable_audio_and_unknown_format(audio_dir):
    (audio_dir / "clips" / "junk.wav").write_bytes(b"not audio at all")
    path = _csv(audio_dir, [*ROWS, "u9,clips/junk.wav,x,neu,s,,,,"])
    with pytest.raises(EmofuseError, match="soundfile cannot read"):
        _read(path)
    assert len(_read(path, skip_missing=True).utterances) == 3
    other = audio_dir / "m.tsv"
    other.write_text("id\n")
    with pytest.raises(EmofuseError, match="unknown format"):
        _read(other)
    with pytest.raises(EmofuseError, match="does not exist"):
        _read(audio_dir / "nope.csv")


def test_jsonl_text_null_names_the_line(audio_dir):
    """Case 15: `"text": null` was read as "" without a word."""
    path = audio_dir / "m.jsonl"
    rows = [
        {"id": "x1", "audio": "clips/a.wav", "text": "hi", "label": "ang", "speaker": "p"},
        {"id": "x2", "audio": "clips/b.flac", "text": None, "label": "neu", "speaker": "q"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(EmofuseError, match=r"line 2.*'text' is null") as err:
        _read(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_duplicate_rows_in_a_transcripts_file_name_the_audio_and_line(tmp_path):
    """Case 15: `emofuse predict --transcripts`: a second row for the same audio was last-wins."""
    from emofuse.transcripts import read_transcripts

    path = tmp_path / "t.csv"
    path.write_text("audio,text\na.wav,hello\nb.wav,there\na.wav,other words\n")
    with pytest.raises(EmofuseError, match=r"line 4.*'a\.wav'.*line 2") as err:
        read_transcripts(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    ok = tmp_path / "ok.csv"
    ok.write_text("audio,text\na.wav,hello\nb.wav,\n")
    assert read_transcripts(ok) == {"a.wav": "hello", "b.wav": ""}
    bom = tmp_path / "bom.csv"  # round 8: Excel's "CSV UTF-8" starts with a BOM
    bom.write_bytes(b"\xef\xbb\xbfaudio,text\na.wav,hello\n")
    assert read_transcripts(bom) == {"a.wav": "hello"}


def test_a_folder_given_as_manifest_says_it_is_a_folder(audio_dir):
    """--manifest DIR used to say "does not exist"; it names the CSV the folder holds."""
    _csv(audio_dir, ROWS)
    result = CliRunner().invoke(
        cli, ["corpus", "stats", "--corpus", "manifest", "--manifest", str(audio_dir)]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: manifest {audio_dir} is a folder")
    assert "not a CSV or JSONL file" in lines[0] and str(audio_dir / "m.csv") in lines[0]
    assert "does not exist" not in lines[0]
    with pytest.raises(EmofuseError, match="is a folder, not a CSV") as err:
        _read(audio_dir / "clips")  # no manifest inside: no hint
    assert "it holds" not in str(err.value)


def test_corpus_stats_flags_a_truncated_wav_as_extract_does(audio_dir):
    """A WAV whose header claims more data than the file holds: extract skips it with a reason;
    corpus stats used to show it as a normal utterance. It lists it with the same reason."""
    from emofuse.audio import AudioProblem, load_audio

    wav = audio_dir / "clips" / "a.wav"
    wav.write_bytes(wav.read_bytes()[: 44 + 4000])  # the header still claims 16000 data bytes
    path = _csv(audio_dir, ROWS)
    with pytest.raises(AudioProblem) as skipped_by_extract:
        load_audio(wav)
    reason = str(skipped_by_extract.value)
    assert reason.startswith("truncated audio a.wav")
    args = ["corpus", "stats", "--corpus", "manifest", "--manifest", str(path)]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert "bad audio (kept here, skipped by extract): 1" in text.output
    assert f"  u1: {reason}" in text.output
    js = CliRunner().invoke(cli, [*args, "--json"])
    assert json.loads(js.stdout)["bad_audio"] == [{"id": "u1", "reason": reason}]
