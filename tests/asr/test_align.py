"""`emofuse align` with the real PocketSphinx: TextGrids and an `alignment` column; audio that cannot
be aligned is reported with its reason and stays in the corpus, unaligned and flagged."""

from __future__ import annotations

import shutil

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from emofuse.align.pocketsphinx import PocketSphinxAligner, transcript_words
from emofuse.align.syllables import is_vowel
from emofuse.align.textgrid import read_textgrid
from emofuse.audio import load_audio
from emofuse.cli import cli
from emofuse.corpus import read_corpus
from emofuse.corpus.stats import corpus_stats
from tests.helpers import read_csv, write_manifest

LONG = "this sentence has far too many words to fit into a third of a second of audio at all"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_aligned_tiers_are_well_formed(synth_utts):
    aligner = PocketSphinxAligner()
    aligned = 0
    for u in synth_utts[:12]:
        wav = load_audio(u.audio).wav
        out = aligner.align(wav, u.text)
        if out.tiers is None:
            assert out.problem
            continue
        aligned += 1
        words = out.tiers["word"]
        assert [w for *_, w in words] == transcript_words(u.text)
        assert all(0 <= s < e <= len(wav) / 16000 + 0.01 for s, e, _ in words)
        assert all(a[1] <= b[0] for a, b in zip(words, words[1:], strict=False))
        assert all(e - s >= 0.01 for s, e, _ in out.tiers["phone"])
        for s, e, _ in words:  # syllables per word = vowels of its aligned pronunciation
            phones = [p for p in out.tiers["phone"] if s <= p[0] < e]
            sylls = [y for y in out.tiers["syllable"] if s <= y[0] < e]
            assert len(sylls) == max(1, sum(is_vowel(p[2]) for p in phones))
    assert aligned >= 4


def test_word_missing_from_cmudict_is_one_spoken_noise_span(synth_utts):
    aligner = PocketSphinxAligner()
    u = next(u for u in synth_utts if u.text == "About number.")
    out = aligner.align(load_audio(u.audio).wav, "about zzqxv number")
    assert out.oov == ["zzqxv"]
    assert out.tiers is not None, out.problem
    span = next((s, e) for s, e, w in out.tiers["word"] if w == "zzqxv")
    inside = [p for p in out.tiers["phone"] if span[0] <= p[0] < span[1]]
    assert [p[2] for p in inside] == ["+SPN+"]


def test_unalignable_audio_is_reported_not_dropped(tmp_path, synth_utts):
    good = synth_utts[:4]
    short = tmp_path / "short.wav"
    sf.write(short, 0.1 * np.sin(np.arange(4800) / 5.0), 16000)
    manifest = write_manifest(tmp_path / "in.csv", good)
    notext = tmp_path / "notext.wav"  # a recording of its own (two rows on one file are refused)
    shutil.copy(good[0].audio, notext)
    with manifest.open("a") as f:
        f.write(f"short,{short},{LONG},neu,spkX\n")
        f.write(f"notext,{notext},,neu,spkX\n")
        f.write(f"gone,{tmp_path / 'gone.wav'},hello there,neu,spkX\n")
    out = tmp_path / "aligned" / "out.csv"
    result = invoke("align", "--corpus", "manifest", "--manifest", manifest, "--out", out,
                    "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in read_csv(out)}
    assert len(rows) == 7
    assert "does not fit the audio" in rows["short"]["alignment_error"]
    assert "no transcript" in rows["notext"]["alignment_error"]
    assert "missing audio file" in rows["gone"]["alignment_error"]
    for bad in ("short", "notext", "gone"):
        assert rows[bad]["alignment"] == ""
        assert f"unaligned: {bad}: " in result.output
    aligned = [r for r in rows.values() if r["alignment"]]
    assert f"{len(aligned)} of 7 rows aligned" in result.output
    for r in aligned:
        path = out.parent / r["alignment"]
        assert path.parent == out.parent / "out_textgrids"
        assert set(read_textgrid(path)) == {"word", "syllable", "phone"}
    # the corpus keeps every row with audio; the unaligned ones are flagged by `aligned`
    utts = read_corpus("manifest", manifest=out, skip_missing=True, progress=False).utterances
    by_id = {u.id: u for u in utts}
    assert set(by_id) == set(rows) - {"gone"}  # "gone" has no audio: skipped with --skip-missing
    assert not by_id["short"].aligned and not by_id["notext"].aligned
    assert by_id["short"].extra["alignment_error"].startswith("no alignment path")
    stats = corpus_stats(read_corpus("manifest", manifest=out, skip_missing=True, progress=False))
    assert stats["with_alignment"] == len(aligned)


def test_align_needs_a_text_column(tmp_path, synth_utts):
    manifest = tmp_path / "in.csv"
    manifest.write_text(f"id,audio,label,speaker\nu1,{synth_utts[0].audio},neu,s1\n")
    result = invoke("align", "--manifest", manifest, "--out", tmp_path / "o.csv")
    assert result.exit_code == 2
    assert "no text column: run `emofuse transcribe` first" in result.output


def test_out_or_align_dir_under_a_regular_file_is_one_line(tmp_path, synth_utts):
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:1])
    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    for extra, option in (
        (["--out", blocker / "x.csv"], "--out"),
        (["--out", tmp_path / "a.csv", "--align-dir", blocker / "tg"], "--align-dir"),
        (["--out", tmp_path / "a.csv", "--align-dir", blocker], "--align-dir"),
    ):
        result = invoke("align", "--manifest", manifest, "--quiet", *extra)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert "Traceback" not in result.output and f"error: {option} {extra[-1]}" in lines[0]
        assert "regular file" in lines[0], lines[0]
    assert blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "in.csv"]


def test_an_out_name_that_is_not_a_manifest_is_refused_before_aligning(tmp_path, synth_utts):
    """`--out /dev/full` aligned every row, created /dev/full_textgrids, then refused the name."""
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2])
    for out in (tmp_path / "al.txt", tmp_path / "al"):
        result = invoke("align", "--manifest", manifest, "--out", out, "--quiet")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0] == f"error: --out {out}: use a .csv or .jsonl file name"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no al_textgrids folder


def test_an_existing_manifest_that_is_not_an_align_output_is_never_overwritten(
    tmp_path, synth_utts
):
    """Round-9 audit: `--out` naming another corpus's manifest replaced it without a word."""
    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2])
    other = tmp_path / "other.csv"
    other.write_text("id,audio\nx,x.wav\n")
    result = invoke("align", "--manifest", manifest, "--out", other, "--quiet")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and lines == [
        f"error: --out {other} exists and is not an earlier output of emofuse align (no "
        "alignment column); give a new file name (it is never overwritten)"
    ], result.output
    assert other.read_text() == "id,audio\nx,x.wav\n"


def test_a_second_align_into_the_same_out_is_refused_while_the_first_holds_it(tmp_path, synth_utts):
    """align took no lock: two processes wrote one manifest and one TextGrid folder at once."""
    import os

    from emofuse.locks import lock_path, output_lock

    manifest = write_manifest(tmp_path / "in.csv", synth_utts[:2])
    out = tmp_path / "al.csv"
    with output_lock(out, "align"):
        result = invoke("align", "--manifest", manifest, "--out", out, "--quiet")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert f"{out} is being written by another emofuse align (pid {os.getpid()}" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no TextGrids, no output
    result = invoke("align", "--manifest", manifest, "--out", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert out.exists() and not lock_path(out).exists()


def test_accented_letters_are_transliterated_not_dropped():
    """`café` was aligned as the word `caf` (the é dropped), `naïve` as `na` + `ve`."""
    text = "Café naïve STRAẞE 日本 façade, don’t [LAUGHTER] ﬁne"
    assert transcript_words(text) == [
        "cafe", "naive", "strasse", "日本", "facade", "don't", "fine",
    ]  # fmt: skip
    assert transcript_words("Kids are talking by the door.") == [
        "kids", "are", "talking", "by", "the", "door",
    ]  # fmt: skip


def test_accented_words_align_and_a_word_with_no_ascii_form_is_reported(tmp_path, synth_utts):
    u = next(u for u in synth_utts if u.text == "About number.")
    out = PocketSphinxAligner().align(load_audio(u.audio).wav, "Abóut númber.")
    assert out.tiers is not None and out.oov == [], (out.problem, out.oov)
    assert [w for *_, w in out.tiers["word"]] == ["about", "number"]
    manifest = write_manifest(tmp_path / "in.csv", [u], lambda u: "about 日本 number")
    result = invoke("align", "--manifest", manifest, "--out", tmp_path / "al.csv", "--quiet")
    assert result.exit_code == 0, result.output
    assert "1 words not in CMUdict aligned as unsegmented spans: 日本 (1)" in result.output
    (row,) = read_csv(tmp_path / "al.csv")
    assert row["alignment_oov"] == "日本" and row["alignment"], row
    words = read_textgrid(tmp_path / row["alignment"])["word"]
    assert [w for *_, w in words] == ["about", "日本", "number"]


def test_ids_that_map_to_one_textgrid_name_are_named_with_their_rows(tmp_path, synth_utts):
    """'ü0' and 'ä0' both become _0.TextGrid: the message named neither id nor row."""
    a, b = synth_utts[:2]
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,audio,text,label,speaker\nü0,{a.audio},hi,neu,s1\n"
                        f"ä0,{b.audio},hi,sad,s2\n", encoding="utf-8")  # fmt: skip
    result = invoke("align", "--corpus", "manifest", "--manifest", manifest, "--out",
                    tmp_path / "out.csv", "--quiet")  # fmt: skip
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "ids 'ü0' (row 1) and 'ä0' (row 2) map to the same TextGrid name" in lines[0]
    assert str(manifest) in lines[0]


def test_a_very_long_id_gets_a_short_unique_textgrid_name() -> None:
    """Round-8 audit: a 300-character id made align fail with `OSError: File name too long`."""
    from emofuse.align.run import textgrid_name

    a, b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(textgrid_name(a).encode()) <= 255 and textgrid_name(a) != textgrid_name(b)
    assert textgrid_name("Ses01F_impro01_F000") == "Ses01F_impro01_F000.TextGrid"


def test_a_full_disk_under_a_textgrid_is_one_line_and_leaves_no_temporary(tmp_path, synth_utts):
    """A real ENOSPC writing a TextGrid was a traceback, exit 1, and left a 0-byte
    `.u1.TextGrid.tmp` (round-10 row 97 of the extract side)."""
    from emofuse.align.run import textgrid_name

    utts = synth_utts[:2]
    manifest = write_manifest(tmp_path / "in.csv", utts)
    out = tmp_path / "al.csv"
    grids = tmp_path / "al_textgrids"
    grids.mkdir()
    (grids / f".{textgrid_name(utts[0].id)}.tmp").symlink_to("/dev/full")
    result = invoke("align", "--manifest", manifest, "--out", out, "--quiet")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 2 and "Traceback" not in result.output, lines
    assert lines[0].startswith("aligning 2 rows")
    grid = grids / textgrid_name(
        utts[0].id
    )  # the file that failed, not align's CSV (round-12 row 19)
    assert lines[1].startswith(f"error: cannot write {grid} (No space left on device)"), lines[1]
    assert lines[1].endswith("then rerun the same command") and not out.exists()
    assert not list(grids.glob(".*.tmp"))
    result = invoke("align", "--manifest", manifest, "--out", out, "--quiet")
    assert result.exit_code == 0 and "2 of 2 rows aligned" in result.output, result.output


def test_a_textgrid_align_did_not_write_is_never_overwritten(tmp_path, synth_utts):
    """Round-10 row 99: a hand-corrected TextGrid in --align-dir was replaced without a word.
    align records what it writes; its own are rewritten by a rerun, any other file is refused."""
    from emofuse.align.run import textgrid_name

    utts = synth_utts[:2]
    manifest = write_manifest(tmp_path / "in.csv", utts)
    grids = tmp_path / "grids"
    grids.mkdir()
    mine = grids / textgrid_name(utts[0].id)
    mine.write_text("MY OWN HAND-CORRECTED TEXTGRID")
    args = ["align", "--manifest", manifest, "--out", tmp_path / "al.csv", "--align-dir", grids,
            "--quiet"]  # fmt: skip
    result = invoke(*args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and lines == [
        f"error: --align-dir {grids} holds {mine.name}, which emofuse align did not write (or it "
        "was edited since): move it away or give another --align-dir (a TextGrid align did not "
        "write is never overwritten)"
    ], result.output
    assert mine.read_text() == "MY OWN HAND-CORRECTED TEXTGRID"
    mine.unlink()
    assert invoke(*args).exit_code == 0 and mine.read_text().startswith('File type = "ooTextFile"')
    again = invoke(*args)  # its own TextGrids: a rerun rewrites them
    assert again.exit_code == 0 and "2 of 2 rows aligned" in again.output, again.output
    mine.write_text(mine.read_text().replace('"', "'", 1))  # the user corrects one by hand
    assert invoke(*args).exit_code == 2 and "'" in mine.read_text()[:20]
