"""`emofuse transcribe` with a tiny random Whisper: fills empty text, keeps gold text, reports WER,
survives SIGKILL without redoing or losing rows, and refuses unloadable models in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from emofuse.asr.transcribe import journal_path
from emofuse.asr.wer import normalise_for_wer, word_error_rate
from emofuse.cli import cli
from tests.helpers import read_csv, write_manifest


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def transcribe_args(manifest, out, model, *extra):
    return ["transcribe", "--corpus", "manifest", "--manifest", manifest, "--out", out,
            "--asr-model", model, "--device", "cpu", "--batch-size", "2", "--beam-size", "1",
            "--threads", "1", "--quiet", *extra]  # fmt: skip


def test_fills_empty_text_keeps_gold_and_reports_wer(tmp_path, tiny_asr, synth_utts):
    utts = synth_utts[:4]
    manifest = write_manifest(tmp_path / "in.csv", utts, lambda u: u.text if u is utts[0] else "")
    out = tmp_path / "sub" / "out.csv"
    result = invoke(*transcribe_args(manifest, out, tiny_asr))
    assert result.exit_code == 0, result.output
    assert "transcribing 3 of 4 rows" in result.output
    rows = read_csv(out)
    assert [r["id"] for r in rows] == [u.id for u in utts]
    assert rows[0]["text"] == utts[0].text and rows[0]["asr_text"] == ""  # gold kept, not redone
    for r in rows[1:]:
        assert r["text"] == r["asr_text"]
        assert r["asr_language"] == "en"
    # audio paths stay usable from the output's folder
    assert all(os.path.isfile(r["audio"]) for r in rows)
    assert "WER: no row has gold text" in result.output
    assert not journal_path(out).exists()

    out_all = tmp_path / "all.csv"
    result = invoke(*transcribe_args(manifest, out_all, tiny_asr, "--all"))
    assert result.exit_code == 0, result.output
    assert "transcribing 4 of 4 rows" in result.output
    rows = read_csv(out_all)
    assert rows[0]["text"] == utts[0].text and rows[0]["asr_language"] == "en"
    assert [r["asr_text"] for r in rows[1:]] == [r["asr_text"] for r in read_csv(out)[1:]]
    wer, words = word_error_rate([utts[0].text], [rows[0]["asr_text"]])
    assert f"WER {100 * wer:.2f} % over 1 rows with gold text ({words} words" in result.output


def test_wer_normalisation():
    assert normalise_for_wer("[LAUGHTER] Kids are   talking, by the DOOR.") == (
        "kids are talking by the door"
    )
    assert normalise_for_wer("'I'll-  go'") == "i'll go"
    wer, n = word_error_rate(["Kids are talking by the door"], ["kids are walking by door."])
    assert n == 6 and wer == pytest.approx(2 / 6)


@pytest.mark.subprocess
def test_resumes_after_sigkill_without_redoing_or_losing_rows(tmp_path, tiny_asr, synth_utts):
    utts = synth_utts[:7]
    manifest = write_manifest(tmp_path / "in.csv", utts, lambda u: "")
    ref = tmp_path / "ref.csv"
    assert invoke(*transcribe_args(manifest, ref, tiny_asr)).exit_code == 0
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "emofuse", *map(str, transcribe_args(manifest, out, tiny_asr))]
    env = {**os.environ, "EMOFUSE_FAULT": "transcribe-batch:2"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert not out.exists()
    lines = journal_path(out).read_text().splitlines()
    assert len(lines) == 1 + 4  # the settings line + two committed batches of 2
    kept = {json.loads(x)["id"]: json.loads(x)["asr_text"] for x in lines[1:]}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "transcribing 3 of 7 rows" in again.stdout
    assert "resuming: 4 already done" in again.stdout
    assert "3 transcribed now, 4 resumed" in again.stdout
    rows = read_csv(out)
    assert [r["id"] for r in rows] == [u.id for u in utts]
    assert all(rows[i]["asr_text"] == kept[rows[i]["id"]] for i in range(4))
    assert rows == read_csv(ref)  # same as an uninterrupted run
    assert not journal_path(out).exists()


def test_journal_from_other_settings_is_refused(tmp_path, tiny_asr, synth_utts):
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2], lambda u: "")
    out = tmp_path / "out.csv"
    journal_path(out).write_text(json.dumps({"asr_model": "other"}) + "\n")
    result = invoke(*transcribe_args(manifest, out, tiny_asr))
    assert result.exit_code == 2
    assert "other settings" in result.output and "delete it" in result.output


def test_bad_audio_row_is_kept_with_its_reason(tmp_path, tiny_asr, synth_utts):
    utts = synth_utts[:2]
    manifest = write_manifest(tmp_path / "in.csv", utts, lambda u: "")
    text = manifest.read_text().replace(str(utts[1].audio), str(tmp_path / "gone.wav"))
    manifest.write_text(text)
    result = invoke(*transcribe_args(manifest, tmp_path / "out.csv", tiny_asr))
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out.csv")
    assert len(rows) == 2 and "missing audio file" in rows[1]["asr_error"]
    assert f"not transcribed: {utts[1].id}: missing audio file" in result.output
    advice = result.output.strip().splitlines()[-1]  # what to do was missing (round-12 row 14)
    assert advice.startswith("to transcribe them: fix their audio (or its path"), advice
    manifest.write_text(text.replace(str(tmp_path / "gone.wav"), str(utts[1].audio)))  # followed
    result = invoke(*transcribe_args(manifest, tmp_path / "out.csv", tiny_asr))
    assert result.exit_code == 0 and "not transcribed" not in result.output, result.output
    rows = read_csv(tmp_path / "out.csv")
    assert not rows[1].get("asr_error") and rows[1]["asr_language"], rows[1]


@pytest.mark.parametrize("model", ["does/not/exist", "no-such-model-name"])
def test_unloadable_model_is_one_line(tmp_path, synth_utts, model):
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:1], lambda u: "")
    result = invoke(*transcribe_args(manifest, tmp_path / "o.csv", model))
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith("error: ") and "\n" not in line
    assert model in line and "--asr-model DIR" in line


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_out_under_a_regular_file_or_on_a_folder_is_one_line(tmp_path, tiny_asr, synth_utts):
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:1], lambda u: "")
    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    (tmp_path / "folder").mkdir()
    for out, expected in ((blocker / "x.csv", f"{blocker} is a regular file"),
                          (tmp_path / "folder", "is a folder")):  # fmt: skip
        line = one_error_line(invoke(*transcribe_args(manifest, out, tiny_asr)))
        assert f"--out {out}" in line and expected in line, line
    assert blocker.read_text() == "keep me" and list((tmp_path / "folder").iterdir()) == []


def test_out_in_a_read_only_folder_is_one_line(tmp_path, tiny_asr, synth_utts, unprivileged):
    base, as_user = unprivileged
    manifest = write_manifest(base / "in.csv", synth_utts[:1], lambda u: "")
    (base / "ro").mkdir()
    (base / "ro").chmod(0o555)
    invoke("transcribe", "--help")  # the command's module is imported as root
    with as_user():
        results = [invoke(*transcribe_args(manifest, out, tiny_asr))
                   for out in (base / "ro" / "x.csv", base / "ro" / "sub" / "x.csv")]  # fmt: skip
    for result in results:
        line = one_error_line(result)
        assert "--out" in line and f"cannot write in {base / 'ro'}" in line, line
    assert list((base / "ro").iterdir()) == []


@pytest.mark.parametrize(
    "option, value", [("--beam-size", "0"), ("--batch-size", "0"), ("--threads", "-1")]
)
def test_a_meaningless_number_is_refused_before_the_model_loads(
    tmp_path, synth_utts, option, value
):
    """--threads -1 was blamed on the model ('cannot be loaded'), --beam-size 0 a ValueError."""
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:1], lambda u: "")
    args = transcribe_args(manifest, tmp_path / "o.csv", "no/such/model")
    args[args.index(option) + 1] = value
    line = one_error_line(invoke(*args))
    assert f"'{option}'" in line and "model" not in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_an_earlier_output_is_replaced_by_a_rerun_and_any_other_file_never(
    tmp_path, tiny_asr, synth_utts
):
    """Another corpus's manifest (its gold text), any CSV or JSONL named as --out was replaced
    without a word; align refused the same (round-10 row 88 of the extract side)."""
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2], lambda u: "")
    out = tmp_path / "out.csv"
    out.write_text("id,audio,text,asr_text\nold,old.wav,,x\n")  # transcribe's earlier output
    result = invoke(*transcribe_args(manifest, out, tiny_asr))
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_csv(out)] == [u.id for u in synth_utts[:2]]
    for name, content in (("other.csv", "id,audio,text\nx,x.wav,gold words\n"),
                          ("ab.csv", "a,b\n"), ("some.jsonl", '{"x": 1}\n')):  # fmt: skip
        other = tmp_path / name
        other.write_text(content)
        line = one_error_line(invoke(*transcribe_args(manifest, other, tiny_asr)))
        assert line == (
            f"error: --out {other} exists and is not an earlier output of emofuse transcribe "
            "(no asr_text column); give a new file name (it is never overwritten)"
        ), line
        assert other.read_text() == content


def test_a_full_disk_under_the_journal_is_one_line_and_the_rerun_finishes(
    tmp_path, tiny_asr, synth_utts
):
    """A real ENOSPC appending to the journal was a traceback, exit 1 (round-10 row 95)."""
    from emofuse.asr.transcribe import journal_path

    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:3], lambda u: "")
    out = tmp_path / "out.csv"
    journal_path(out).symlink_to("/dev/full")
    result = invoke(*transcribe_args(manifest, out, tiny_asr))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(lines) == 2 and lines[0].startswith("transcribing 3 of 3 rows"), lines
    line = lines[1]
    assert line.startswith(f"error: cannot write {journal_path(out)} (No space left on device)")
    assert "rerun the same command: the batches in" in line and not out.exists()
    journal_path(out).unlink()  # room again
    result = invoke(*transcribe_args(manifest, out, tiny_asr))
    assert result.exit_code == 0 and "3 rows, 3 transcribed now" in result.output, result.output


@pytest.mark.subprocess
def test_counts_are_right_on_a_resume_with_rows_whose_audio_failed(tmp_path, tiny_asr, synth_utts):
    """The final line counted a row whose audio could not be read as "transcribed now" (and, on a
    resume, as "resumed"); it is counted as not transcribed, and the counts add up to the rows."""
    utts = synth_utts[:7]
    manifest = write_manifest(tmp_path / "in.csv", utts, lambda u: "")
    text = manifest.read_text()
    for k in (1, 5):  # one in the batches done before the kill, one in those done after
        text = text.replace(str(utts[k].audio), str(tmp_path / f"gone{k}.wav"))
    manifest.write_text(text)
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "emofuse", *map(str, transcribe_args(manifest, out, tiny_asr))]
    env = {**os.environ, "EMOFUSE_FAULT": "transcribe-batch:2"}  # killed after 2 batches of 2
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "transcribing 3 of 7 rows" in again.stdout and "resuming: 4 already done" in again.stdout
    assert "7 rows, 2 transcribed now, 3 resumed, 2 not transcribed (listed below)" in again.stdout
    assert "6 transcribed now" not in again.stdout and "4 resumed" not in again.stdout
    rows = {r["id"]: r for r in read_csv(out)}
    failed = {i for i, r in rows.items() if r["asr_error"]}
    assert failed == {utts[1].id, utts[5].id}
    assert all(r["asr_language"] == "en" for i, r in rows.items() if i not in failed)


def test_wer_leaves_out_rows_whose_audio_failed(tmp_path, tiny_asr, synth_utts):
    utts = synth_utts[:3]
    manifest = write_manifest(tmp_path / "in.csv", utts)  # gold text everywhere
    manifest.write_text(manifest.read_text().replace(str(utts[2].audio), str(tmp_path / "g.wav")))
    result = invoke(*transcribe_args(manifest, tmp_path / "out.csv", tiny_asr, "--all"))
    assert result.exit_code == 0, result.output
    rows = read_csv(tmp_path / "out.csv")
    wer, words = word_error_rate([u.text for u in utts[:2]], [r["asr_text"] for r in rows[:2]])
    assert f"WER {100 * wer:.2f} % over 2 rows with gold text ({words} words" in result.output
    assert "2 transcribed now, 1 not transcribed" in result.output


def test_quiet_silences_the_bar_on_a_terminal_too(tmp_path, tiny_asr, synth_utts, monkeypatch):
    import emofuse.progress

    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2], lambda u: "")

    def args(name):  # a new --out each time (a rerun into the same one reuses its transcripts)
        return transcribe_args(manifest, tmp_path / name, tiny_asr)

    piped = invoke(*[a for a in args("o1.csv") if a != "--quiet"])  # stderr not a terminal: no bar
    assert piped.exit_code == 0 and "transcribe:" not in piped.output, piped.output
    monkeypatch.setattr(emofuse.progress, "stderr_is_terminal", lambda: True)
    shown = invoke(*[a for a in args("o2.csv") if a != "--quiet"])
    assert shown.exit_code == 0 and "transcribe: 100%" in shown.output, shown.output
    quiet = invoke(*args("o3.csv"))
    assert quiet.exit_code == 0 and "transcribe:" not in quiet.output, quiet.output


@pytest.mark.parametrize("name", ["out.txt", "out"])
def test_an_out_name_that_is_not_a_manifest_is_refused_before_any_work(
    tmp_path, tiny_asr, synth_utts, name
):
    """`--out x.txt` (or /dev/full) was refused only after every row was transcribed."""
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2], lambda u: "")
    out = tmp_path / name
    line = one_error_line(invoke(*transcribe_args(manifest, out, tiny_asr)))
    assert line == f"error: --out {out}: use a .csv or .jsonl file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no journal, no lock


def test_a_second_transcribe_into_the_same_out_is_refused_while_the_first_holds_it(
    tmp_path, tiny_asr, synth_utts
):
    """Two processes on one --out appended to one journal and replaced each other's output; the
    second now meets the first's OUT.lock (held here, by this live process) and stops in one line,
    touching neither the output nor the journal."""
    from emofuse.locks import lock_path, output_lock

    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2], lambda u: "")
    out = tmp_path / "out.csv"
    out.write_text("id,audio,asr_text\nold,old.wav,x\n")  # an earlier transcribe's output
    with output_lock(out, "transcribe"):
        line = one_error_line(invoke(*transcribe_args(manifest, out, tiny_asr)))
        assert f"{out} is being written by another emofuse transcribe (pid {os.getpid()}" in line
        assert lock_path(out).exists()
    assert out.read_text() == "id,audio,asr_text\nold,old.wav,x\n"
    assert not journal_path(out).exists()
    result = invoke(*transcribe_args(manifest, out, tiny_asr))  # released: the run goes ahead
    assert result.exit_code == 0, result.output
    assert not lock_path(out).exists()


def _own_copies(tmp_path, utts) -> list:
    """The utterances with their audio copied into tmp_path (the session corpus stays untouched)."""
    import dataclasses
    import shutil

    (tmp_path / "wav").mkdir()
    copies = []
    for u in utts:
        shutil.copyfile(u.audio, tmp_path / "wav" / f"{u.id}.wav")
        copies.append(dataclasses.replace(u, audio=tmp_path / "wav" / f"{u.id}.wav"))
    return copies


def _killed_after_one_batch(cmd) -> None:
    env = {**os.environ, "EMOFUSE_FAULT": "transcribe-batch:1"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr


@pytest.mark.subprocess
def test_a_resume_redoes_the_rows_whose_audio_changed_since(tmp_path, tiny_asr, synth_utts):
    """The journal was keyed by id only: a file replaced under the same name after the kill kept
    the old file's transcript (silently wrong). Rows carry their audio's SHA-1; a changed one is
    redone, and the result is what an uninterrupted run over the audio as it is now gives. (The
    tiny model's transcripts are all empty, so the replacement is a damaged file: its row must now
    say why it has no transcript.)"""
    utts = _own_copies(tmp_path, synth_utts[:4])
    manifest = write_manifest(tmp_path / "in.csv", utts, lambda u: "")
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "emofuse", *map(str, transcribe_args(manifest, out, tiny_asr))]
    _killed_after_one_batch(cmd)  # rows 0 and 1 are in the journal
    first = [json.loads(x) for x in journal_path(out).read_text().splitlines()[1:]]
    assert [(r["id"], r["asr_error"]) for r in first] == [(utts[0].id, ""), (utts[1].id, "")]
    utts[0].audio.write_bytes(b"RIFF, but not audio")  # other content under the same name
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = read_csv(out)
    assert rows[0].get("asr_error", "").startswith(f"unreadable audio {utts[0].audio.name}"), rows
    ref = tmp_path / "ref.csv"  # uninterrupted, over the audio as it is now
    assert invoke(*transcribe_args(manifest, ref, tiny_asr)).exit_code == 0
    assert rows == read_csv(ref)
    assert "transcribing 3 of 4 rows" in again.stdout and "resuming: 1 already done" in again.stdout
    assert f"redoing 1 whose audio changed since ({utts[0].id})" in again.stdout
    assert "4 rows, 2 transcribed now, 1 resumed, 1 not transcribed" in again.stdout


@pytest.mark.subprocess
def test_a_journal_without_audio_hashes_is_redone(tmp_path, tiny_asr, synth_utts):
    """A journal of an older emofuse has no hash to check its rows by: they are redone, not trusted."""
    utts = _own_copies(tmp_path, synth_utts[:3])
    manifest = write_manifest(tmp_path / "in.csv", utts, lambda u: "")
    out = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "emofuse", *map(str, transcribe_args(manifest, out, tiny_asr))]
    _killed_after_one_batch(cmd)
    head, *records = journal_path(out).read_text().splitlines()
    old = [{k: v for k, v in json.loads(x).items() if k != "audio_sha1"} for x in records]
    journal_path(out).write_text("".join(x + "\n" for x in [head, *map(json.dumps, old)]))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "transcribing 3 of 3 rows" in again.stdout and "resuming" not in again.stdout
    assert "redoing 2 from a journal of an older emofuse" in again.stdout
    assert "3 transcribed now" in again.stdout


def test_a_rerun_of_a_finished_transcription_reuses_it(tmp_path, tiny_asr, synth_utts):
    """A finished run removed its journal, so the same command again transcribed every row anew
    (hours on a real corpus). The journal stays as the finished run's record: a rerun reuses every
    row whose audio is unchanged, redoes a changed one, and other settings transcribe anew."""
    utts = _own_copies(tmp_path, synth_utts[:4])
    manifest = write_manifest(tmp_path / "in.csv", utts, lambda u: "")
    out = tmp_path / "out.csv"
    record = tmp_path / "out.csv.transcribe.jsonl"
    args = transcribe_args(manifest, out, tiny_asr)
    first = invoke(*args)
    assert first.exit_code == 0 and "transcribing 4 of 4 rows" in first.output, first.output
    rows = read_csv(out)
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "transcribing 0 of 4 rows" in again.output, again.output
    assert not journal_path(out).exists() and record.is_file()
    assert f"reusing 4 done by an earlier run (recorded in {record.name}" in again.output
    assert "4 rows, 0 transcribed now, 4 resumed" in again.output
    assert read_csv(out) == rows
    utts[2].audio.write_bytes(b"not audio any more")  # only this row is redone
    changed = invoke(*args)
    assert changed.exit_code == 0, changed.output
    assert "transcribing 1 of 4 rows" in changed.output and "reusing 3 done" in changed.output
    assert f"redoing 1 whose audio changed since ({utts[2].id})" in changed.output
    now = read_csv(out)
    assert now[2]["asr_error"].startswith("unreadable audio")
    kept = ("id", "text", "asr_text", "asr_language")
    assert [[r[k] for k in kept] for r in now[:2]] == [[r[k] for k in kept] for r in rows[:2]]
    other = invoke(*transcribe_args(manifest, out, tiny_asr, "--language", "de"))
    assert other.exit_code == 0, other.output
    assert "transcribing 4 of 4 rows" in other.output and "not reused" in other.output
    assert json.loads(record.read_text().splitlines()[0])["language"] == "de"


def test_a_row_whose_header_claims_an_absurd_sample_rate_is_not_transcribed(
    tmp_path, tiny_asr, synth_utts
):
    """A WAV whose header says 2 GHz was decoded as a few milliseconds and transcribed; it is a
    row that cannot be read, kept with the reason naming the file (emofuse.audio's rate check)."""
    (u,) = _own_copies(tmp_path, synth_utts[:1])
    raw = bytearray(u.audio.read_bytes())
    raw[24:28] = (2_000_000_000).to_bytes(4, "little")  # the fmt chunk's sample rate
    u.audio.write_bytes(bytes(raw))
    manifest = write_manifest(tmp_path / "in.csv", [u], lambda u: "")
    result = invoke(*transcribe_args(manifest, tmp_path / "out.csv", tiny_asr))
    assert result.exit_code == 0, result.output
    assert (
        f"not transcribed: {u.id}: sample rate 2000000000 Hz of {u.audio.name} is above 384000 Hz"
        in result.output
    ), result.output
    assert "0 transcribed now, 1 not transcribed" in result.output


def test_a_garbage_model_bin_is_called_not_a_ctranslate2_model(tmp_path, tiny_asr):
    """CTranslate2 read 'junk' as binary version v1802401130, cut off mid-word."""
    import shutil

    from emofuse.asr.whisper import load_asr_model
    from emofuse.errors import EmofuseError

    folder = tmp_path / "junk"
    shutil.copytree(tiny_asr, folder)
    (folder / "model.bin").write_bytes(b"junk")
    with pytest.raises(EmofuseError) as err:
        load_asr_model(str(folder), device="cpu")
    message = str(err.value)
    assert f"{folder / 'model.bin'} is not a CTranslate2 model file" in message
    assert "\n" not in message and "v1802401130" not in message
