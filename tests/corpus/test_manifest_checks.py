"""What the manifest reader refuses in one line, found by a CLI audit: wrong kinds of paths,
empty audio, labels that differ only in case, one recording under two ids, a TextGrid from
another recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.corpus.manifest import SKIP_UNREADABLE

HEADER = "id,audio,text,label,speaker"


@pytest.fixture
def root(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", rng.standard_normal(16000) * 0.1, 16000)
    return tmp_path


def stats(manifest: Path, *extra: str):
    args = ["corpus", "stats", "--corpus", "manifest", "--manifest", str(manifest), *extra]
    return CliRunner().invoke(cli, args)


def one_line_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def manifest(root: Path, *rows: str, header: str = HEADER) -> Path:
    path = root / "m.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_an_audio_path_that_is_a_folder_says_so_and_skip_missing_lists_it(root):
    (root / "d.wav").mkdir()
    path = manifest(root, "u1,a.wav,x,neu,s1", "u2,d.wav,x,hap,s2")
    line = one_line_error(stats(path))
    assert "row 2" in line and "d.wav for u2 is a folder, not an audio file" in line
    result = stats(path, "--skip-missing", "--json")
    assert result.exit_code == 0 and SKIP_UNREADABLE in result.output and '"u2"' in result.output


def test_an_empty_audio_file_says_it_is_empty(root):
    (root / "e.wav").write_bytes(b"")
    line = one_line_error(stats(manifest(root, "u1,a.wav,x,neu,s1", "u2,e.wav,x,hap,s2")))
    assert "e.wav for u2 is empty (0 bytes)" in line and "convert it" not in line


def test_labels_that_differ_only_in_case_are_refused(root):
    line = one_line_error(stats(manifest(root, "u1,a.wav,x,hap,s1", "u2,b.wav,x,Hap,s2")))
    assert "labels 'hap' (u1) and 'Hap' (u2) differ only in case" in line


@pytest.mark.parametrize("label, says", [("sad", "different labels ('neu', 'sad')"), ("neu", "")])
def test_two_rows_on_one_recording_are_refused_naming_both(root, label, says):
    path = manifest(root, "u1,a.wav,x,neu,s1", f"u2,{root / 'a.wav'},x,{label},s2")
    line = one_line_error(stats(path))
    assert "u1 and u2 point at the same audio file" in line and says in line


def test_a_textgrid_much_longer_than_its_audio_is_refused(root):
    from emofuse.align.textgrid import write_textgrid

    words = [(0.1, 0.5, "hello"), (0.6, 0.9, "world")]
    write_textgrid(root / "ok.TextGrid", {"word": words}, 1.0)
    write_textgrid(
        root / "x10.TextGrid", {"word": [(10 * s, 10 * e, w) for s, e, w in words]}, 10.0
    )  # fmt: skip  (the same words on a 10x time scale)
    header = f"{HEADER},alignment"
    good = manifest(root, "u1,a.wav,x,neu,s1,ok.TextGrid", header=header)
    assert stats(good).exit_code == 0
    bad = manifest(root, "u1,a.wav,x,neu,s1,x10.TextGrid", header=header)
    line = one_line_error(stats(bad))
    assert "x10.TextGrid for u1 ends at 9.00 s but its audio lasts 1.00 s" in line


def test_a_file_given_as_the_iemocap_root_says_it_is_a_file(root):
    line = one_line_error(CliRunner().invoke(cli, ["corpus", "stats", "--corpus", "iemocap",
                                                   "--root", str(root / "a.wav")]))  # fmt: skip
    assert "is a file, not a folder" in line and "--corpus manifest" in line


def test_an_empty_textgrid_says_it_is_empty(root):
    (root / "e.TextGrid").write_bytes(b"")
    path = manifest(root, "u1,a.wav,x,neu,s1,e.TextGrid", header=f"{HEADER},alignment")
    line = one_line_error(stats(path))
    assert "e.TextGrid is empty (0 bytes)" in line and "list index" not in line


def test_a_jsonl_manifest_with_a_byte_order_mark_is_read(root):
    path = root / "m.jsonl"
    row = '{"id": "u1", "audio": "a.wav", "text": "x", "label": "neu", "speaker": "s1"}'
    path.write_bytes(b"\xef\xbb\xbf" + row.encode() + b"\n")
    result = stats(path)
    assert result.exit_code == 0 and "BOM" not in result.output, result.output


def test_an_audio_path_that_is_a_pipe_or_a_device_is_not_called_missing(root):
    """A FIFO and /dev/zero exist: 'is missing — fix the path' was wrong (fourth audit, row 65)."""
    import os

    os.mkfifo(root / "p.wav")
    for target in ("p.wav", "/dev/zero"):
        line = one_line_error(stats(manifest(root, "u1,a.wav,x,neu,s1", f"u2,{target},x,hap,s2")))
        assert "for u2 is not a regular file (a pipe or a device)" in line, line
        assert "missing" not in line.split(" or pass")[0]


def test_a_pipe_skipped_under_skip_missing_is_not_filed_as_missing(root):
    """With --skip-missing a FIFO was counted under "audio file missing" (fifth audit, row 10)."""
    import json
    import os

    from emofuse.corpus.manifest import SKIP_MISSING, SKIP_UNREADABLE

    os.mkfifo(root / "p.wav")
    path = manifest(root, "u1,a.wav,x,neu,s1", "u2,p.wav,x,hap,s2", "u3,gone.wav,x,sad,s3")
    result = stats(path, "--skip-missing", "--json")
    assert result.exit_code == 0, result.output
    skipped = json.loads(result.stdout)["skipped"]
    assert skipped[SKIP_UNREADABLE]["examples"] == ["u2"], skipped
    assert skipped[SKIP_MISSING]["examples"] == ["u3"], skipped


def test_an_audio_path_that_is_a_symlink_loop_says_so(root):
    """A symlink loop (or a link to a deleted file) was called "missing" (fifth audit, row 24)."""
    (root / "loopB.wav").symlink_to("loopA.wav")
    (root / "loopA.wav").symlink_to("loopB.wav")
    (root / "dangling.wav").symlink_to("deleted.wav")
    for name in ("loopA.wav", "dangling.wav"):
        line = one_line_error(stats(manifest(root, "u1,a.wav,x,neu,s1", f"u2,{name},x,hap,s2")))
        assert line == (
            f"error: manifest {root / 'm.csv'} row 2: audio file {root / name} for u2 is a "
            "symbolic link whose target is missing or loops back — fix the link or the path or "
            "pass --skip-missing"
        ), line


def test_float_samples_far_outside_full_scale_are_bad_audio(root):
    """A float WAV whose every 100th sample is 3e38 (finite): the models' normalisation
    overflowed and the cache stored NaN features, verify ok (fourth audit, rows 30 and 66).
    Now it is bad audio like NaN samples: one line under --strict, skipped and listed otherwise."""
    from emofuse.audio import AudioProblem, load_audio

    wav = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    wav[::100] = 3e38
    sf.write(root / "huge.wav", wav, 16000, subtype="FLOAT")
    with pytest.raises(AudioProblem, match=r"corrupt audio huge.wav \(samples reach 3e\+38, far"):
        load_audio(root / "huge.wav")
    sf.write(root / "loud.wav", np.clip(wav, -4, 4), 16000, subtype="FLOAT")  # hot, not broken
    assert np.abs(load_audio(root / "loud.wav").wav).max() == pytest.approx(4.0)


@pytest.mark.parametrize(
    "rows, lines",
    [
        (
            ['a,a.wav,"hi there,neu,s1', "b,b.wav,fine,hap,s1", 'c,c.wav,bye" she said,sad,s1'],
            "2-4",
        ),
        (['a,a.wav,"unterminated,neu,s1'], None),
    ],
    ids=["closed-later", "last-row"],
)
def test_an_unclosed_quote_is_named_not_rows_merged(root, rows, lines):
    """Round-11 rows 75-76: a stray quote in a text (a spreadsheet-export slip) made the reader
    take the following lines into that value: rows vanished without a word and the first took a
    later row's label, or the label was called empty though it was there."""
    line = one_line_error(stats(manifest(root, *rows)))
    runs = f"over lines {lines}" if lines else "past its line"
    assert line.startswith(
        f"error: manifest {root / 'm.csv'} line 2: its text value runs {runs}"
    ), line
    assert 'a value must be on one line, so put it on one, or close the quote " opened' in line


@pytest.mark.parametrize("quoted", [True, False], ids=["unclosed-quote", "huge-field"])
def test_a_value_past_the_csv_field_limit_is_one_line(root, quoted):
    """Round-12 rows 22-23: an unclosed quote swallowing more than 128 KiB (or one huge value)
    was a `_csv.Error: field larger than field limit` traceback."""
    rows = ["a,a.wav,ok,neu,s1"] + [f"r{i},b.wav,text {i},hap,s1" for i in range(10000)]
    rows[1] = 'r0,b.wav,"she said hi,hap,s1' if quoted else f"r0,b.wav,{'word ' * 40000},hap,s1"
    line = one_line_error(stats(manifest(root, *rows)))
    # the row's own line (header 1, a 2, r0 3): it said line 2 (round-13 extract side rows 2-3)
    assert line.startswith(f"error: manifest {root / 'm.csv'} line 3: "), line
    assert "field larger than field limit (131072); no transcript is that long" in line, line


def test_a_manifest_given_without_corpus_manifest_is_read_not_ignored(root):
    """`--manifest m.csv` without `--corpus manifest` was ignored: the default IEMOCAP reader ran
    instead, and an IEMOCAP cache came out (round-13 extract side row 121)."""
    path = manifest(root, "a,a.wav,hi,neu,s1", "b,b.wav,yo,hap,s2")
    result = CliRunner().invoke(cli, ["corpus", "stats", "--manifest", str(path), "--json"])
    assert result.exit_code == 0, result.output
    stats_json = json.loads(result.output)
    assert stats_json["utterances"] == 2 and stats_json["speakers"] == {"s1": 1, "s2": 1}
    line = one_line_error(
        CliRunner().invoke(cli, ["corpus", "stats", "--corpus", "iemocap", "--manifest", str(path)])
    )
    assert line == (
        f"error: --manifest {path} is read with --corpus manifest, not --corpus iemocap; drop "
        "--corpus (or give --corpus manifest)"
    )


def test_other_separators_non_string_json_values_and_urls_are_named(root):
    """Round-13 extract side rows 51, 64, 105: a ';' or tab-separated file was "missing
    column(s) id,audio,…" though every column was there; JSON lists, objects and booleans were
    stored as Python text (`{'t': 1}`); a URL was glued onto the manifest's folder and called
    missing."""
    semi = manifest(root, "a;a.wav;hi;neu;s1", header="id;audio;text;label;speaker")
    assert one_line_error(stats(semi)) == (
        f"error: manifest {semi}: its header is one column 'id;audio;text;label;speaker': values "
        "are separated by ';', not commas; save it as CSV with commas (or as .jsonl)"
    )
    tab = manifest(root, "a\ta.wav\thi\tneu\ts1", header="id\taudio\ttext\tlabel\tspeaker")
    assert "values are separated by a tab, not commas" in one_line_error(stats(tab))
    jsonl = root / "m.jsonl"
    row = {"id": 7, "audio": "a.wav", "text": {"t": 1}, "label": "neu", "speaker": "s1"}
    jsonl.write_text(json.dumps(row) + "\n")
    assert one_line_error(stats(jsonl)) == (
        f"error: manifest {jsonl} line 1: 'text' is {{\"t\": 1}}, not a string or a number; write "
        "it as a string"
    )
    jsonl.write_text(json.dumps({**row, "text": "hi"}) + "\n")  # a number id is fine
    assert stats(jsonl).exit_code == 0
    url = manifest(root, "a,http://example.com/a.wav,hi,neu,s1")
    assert one_line_error(stats(url)) == (
        f"error: manifest {url} row 1: audio 'http://example.com/a.wav' for a is a URL; emofuse "
        "reads local files only: download the audio and give its path"
    )
    win = manifest(root, "a,C:\\data\\a.wav,hi,neu,s1")  # round-13 extract side row 126
    assert "is a Windows path; give the file's path on this machine" in one_line_error(stats(win))


def test_an_audio_file_without_read_permission_says_so(root, monkeypatch):
    """A good WAV under `chmod 000` was "soundfile cannot read … convert it to wav/flac"
    (round-14 extract side row 74). (Root reads everything: the refusal is injected.)"""
    import os

    import soundfile

    wav = root / "a.wav"
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, m, **kw: False if Path(p) == wav else real(p, m, **kw)
    )

    def refused(path, *a, **kw):
        if Path(path) == wav:
            raise RuntimeError("Error opening: Permission denied")
        return real_info(path, *a, **kw)

    real_info = soundfile.info
    monkeypatch.setattr(soundfile, "info", refused)
    line = one_line_error(stats(manifest(root, "a,a.wav,hi,neu,s1")))
    assert line == (
        f"error: manifest {root / 'm.csv'} row 1: audio file {wav} for a cannot be read "
        "(Permission denied): make it readable (`chmod u+r` it, or ask its owner)"
    ), line
    # --skip-missing promises "missing or unreadable": the row is skipped and listed, saying why
    # (round-17 extract side row 41: it stopped there too)
    result = stats(manifest(root, "a,a.wav,hi,neu,s1", "b,b.wav,ho,sad,s1"), "--skip-missing")
    assert result.exit_code == 0, result.output
    assert "audio file this user may not read (--skip-missing; `chmod u+r` keeps it)" in (
        result.output
    ), result.output


def test_a_column_named_like_a_field_emofuse_computes_is_refused(root):
    """A user column `alignment_sha1` was silently replaced in the stored row by the digest
    extract computes under that name (round-15 extract side row 31)."""
    path = manifest(root, "u1,a.wav,x,neu,s1,same", header=HEADER + ",alignment_sha1")
    line = one_line_error(stats(path))
    assert line == (
        f"error: manifest {path}: column 'alignment_sha1' is a name emofuse uses for its own "
        "record (the SHA-1 of the utterance's alignment, checked on resume), so its values would "
        "be replaced; rename the column"
    ), line
    renamed = manifest(root, "u1,a.wav,x,neu,s1,same", header=HEADER + ",my_sha1")
    assert stats(renamed).exit_code == 0


def test_a_manifest_and_an_iemocap_root_together_are_refused(root):
    """`extract --manifest m.csv --root demo/corpus` read the manifest and ignored --root
    without a word (round-15 extract side row 72)."""
    path = manifest(root, "u1,a.wav,x,neu,s1")
    line = one_line_error(stats(path, "--root", str(root)))
    assert line == (
        f"error: --root {root} is the IEMOCAP folder, but the manifest {path} is what --corpus "
        "manifest reads (its audio paths are relative to it); drop --root, or drop --manifest "
        "to read the IEMOCAP folder"
    ), line


def test_a_key_given_twice_in_a_jsonl_object_is_refused(root):
    """`{"id":"u0","id":"u9",…}` stored id u9 without a word (round-15 extract side row 59)."""
    path = root / "m.jsonl"
    path.write_text(
        '{"id":"u0","id":"u9","audio":"a.wav","text":"x","label":"neu","speaker":"s"}\n'
    )
    line = one_line_error(stats(path))
    assert line == f"error: manifest {path} line 1: key 'id' is given twice in one object; keep one"


@pytest.mark.parametrize("kind", ["folder", "loop", "unreadable"])
def test_an_alignment_path_that_is_no_textgrid_file_says_what_it_is(root, kind, monkeypatch):
    """Round-17 extract side row 92: a folder or a looping link given as the alignment was
    "missing", and an unreadable TextGrid was told to be rewritten with `emofuse align`."""
    import emofuse.align.textgrid as tg
    from emofuse.align.textgrid import write_textgrid

    grid = root / "g.TextGrid"
    if kind == "folder":
        grid.mkdir()
        says = f"alignment {grid} for u1 is a folder, not a TextGrid file — fix the path"
    elif kind == "loop":
        grid.symlink_to(grid.name)
        says = f"alignment {grid} for u1 is a symbolic link whose target is missing or loops back"
    else:
        write_textgrid(grid, {"word": [(0.1, 0.5, "hello")]}, 1.0)
        monkeypatch.setattr(tg, "readable_file", lambda p: Path(p) != grid)  # root reads all
        says = (
            f"alignment {grid} cannot be read (Permission denied); make it readable (`chmod u+r` "
            "it, or ask its owner)"
        )
    line = one_line_error(
        stats(manifest(root, "u1,a.wav,x,neu,s1,g.TextGrid", header=f"{HEADER},alignment"))
    )
    assert says in line and "emofuse align" not in line, line
