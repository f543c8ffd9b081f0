"""Issue 13, extract side: every user-caused failure is one `error:` line (exit 2), never a traceback,
never a store reported complete when it is not, never silent data loss."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from emofuse import faults
from emofuse.cache import open_cache
from emofuse.cli import cli
from emofuse.errors import EmofuseError
from tests.helpers import PYTHON
from tests.users import NOBODY

ROOT = Path(__file__).resolve().parents[2]


def error_line(output: str) -> str:
    """The one `error:` line of a failed command (and nothing that looks like a traceback)."""
    assert "Traceback" not in output and "Usage:" not in output, output
    lines = [x for x in output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    env.pop(faults.ENV, None)
    env["OMP_NUM_THREADS"] = "1"
    return {**env, **extra}


def write_manifest(folder: Path, clips: dict[str, tuple[np.ndarray, int]], **cols) -> Path:
    """A manifest over `clips` (name -> (samples, rate)), one utterance per clip."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (wav, rate) in clips.items():
        sf.write(folder / name, wav, rate, subtype="PCM_16")
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "audio", "text", "label", "speaker"])
        for name in clips:
            w.writerow([Path(name).stem, name, "hello there", cols.get("label", "neu"), "spk1"])
    return path


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def invoke_with_fault(fault: str, args: list[str]):
    """The CLI run in-process with ``EMOFUSE_FAULT=fault`` (restored afterwards)."""
    os.environ[faults.ENV] = fault
    faults.reset()
    try:
        return CliRunner().invoke(cli, args)
    finally:
        del os.environ[faults.ENV]
        faults.reset()


def manifest_args(manifest: Path, tiny, out: Path, *extra: str) -> list[str]:
    return [
        "extract", "--corpus", "manifest", "--manifest", str(manifest), "--out", str(out),
        "--speech-model", str(tiny.speech["wav2vec2-group"]) if tiny else "none",
        "--text-model", "none",
        "--speaker-model", "none", "--quiet", *extra,
    ]  # fmt: skip


# --- case 14: click's usage errors are one line ------------------------------------------------


def test_bad_granularity_is_one_error_line(tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["extract", "--root", str(tmp_path), "--out", str(tmp_path / "x.h5"),
              "--granularity", "foo"]
    )  # fmt: skip
    assert result.exit_code == 2
    line = error_line(result.output)
    assert "--granularity" in line and "frame" in line
    assert len([x for x in result.output.splitlines() if x.strip()]) == 1


# --- cases 5 and 16: truncated WAV, absurd sample rate ------------------------------------------


def test_truncated_wav_is_skipped_and_reported(tmp_path, tiny) -> None:
    manifest = write_manifest(tmp_path / "c", {"good.wav": (tone(1.0), 16000),
                                               "cut.wav": (tone(1.0), 16000)})  # fmt: skip
    cut = tmp_path / "c" / "cut.wav"
    cut.write_bytes(cut.read_bytes()[: 44 + 16000])  # the header still claims 32000 bytes
    out = tmp_path / "trunc.h5"
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 0, result.output
    assert "skipped 1 utterances for bad audio" in result.output
    assert "  cut: truncated audio cut.wav" in result.output
    c = open_cache(out)
    assert c.ids == ["good"]
    assert [s["id"] for s in c.skipped] == ["cut"] and "truncated" in c.skipped[0]["reason"]


def test_sample_rate_below_the_floor_is_refused_naming_the_file(tmp_path, tiny) -> None:
    manifest = write_manifest(
        tmp_path / "c",
        {
            "good.wav": (tone(1.0), 16000),
            "slow.wav": (0.1 * np.random.default_rng(0).random(100), 1),
        },
    )  # 100 samples at 1 Hz: a "100 s" utterance
    out = tmp_path / "slow.h5"
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert "slow.wav" in line and "1 Hz" in line and "4000" in line
    assert not out.exists() and not Path(str(out) + ".parts").exists()


# --- resume: the interrupted run's parts must match this run in every respect --------------------

N_CLIPS = 6


@pytest.fixture
def clips(tmp_path) -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(1)
    return {
        f"u{i}.wav": ((0.1 * rng.standard_normal(int(16000 * (0.4 + 0.1 * i)))), 16000)
        for i in range(N_CLIPS)
    }


def interrupted(tmp_path, tiny, manifest: Path, out: Path, parts: int, *extra: str) -> None:
    """An extract stopped after `parts` committed parts (one utterance each): the disk fills up
    on the next part, as a kill at that point would leave it."""
    os.environ[faults.ENV] = f"part-write:{parts + 1}:enospc"
    faults.reset()
    try:
        result = CliRunner().invoke(
            cli, manifest_args(manifest, tiny, out, "--flush-seconds", "0", *extra)
        )
    finally:
        del os.environ[faults.ENV]
        faults.reset()
    assert result.exit_code == 2, result.output
    assert "No space left on device" in error_line(result.output)
    committed = [p for p in Path(str(out) + ".parts").iterdir() if p.name.startswith("rank")]
    assert len(committed) == parts


def test_disk_full_while_writing_parts_is_one_line_and_the_rerun_resumes(tmp_path, tiny, clips):
    """Case 7 (parts): ENOSPC at the 3rd part → one line, no temp part left; the rerun resumes."""
    manifest = write_manifest(tmp_path / "c", clips)
    ref = tmp_path / "ref.h5"
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, ref)).exit_code == 0
    out = tmp_path / "full.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    parts = Path(str(out) + ".parts")
    assert not [p for p in parts.iterdir() if p.name.startswith(".tmp")]
    assert not out.exists() and not Path(str(out) + ".lock").exists()
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0, again.output
    assert (
        f"stored {N_CLIPS - 2} utterances" in again.output
        and "2 were already there" in again.output
    )
    assert open_cache(out).meta["digest"] == open_cache(ref).meta["digest"]
    # the same command on the finished store: nothing to do; a changed label is refused there too
    same = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert same.exit_code == 0 and f"{N_CLIPS} were already there" in same.output, same.output
    write_manifest(tmp_path / "c", clips, label="sad")
    changed = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert changed.exit_code == 2 and "label 'neu'" in error_line(changed.output)


def test_disk_full_during_the_final_hdf5_write_is_one_line_and_the_rerun_finishes(
    tmp_path, tiny, clips
):
    """A real ENOSPC inside HDF5 (the temporary store's name leads to /dev/full): HDF5's error
    text has a ctime() stamp ending in a newline, and quoting it made the error two lines. It is
    one line naming the store, saying to free space and rerun; the parts are kept, the rerun
    consolidates them to the reference digest."""
    manifest = write_manifest(tmp_path / "c", clips)
    ref = tmp_path / "ref.h5"
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, ref)).exit_code == 0
    out = tmp_path / "full.h5"
    result = invoke_with_fault("consolidate-open:1:devfull", manifest_args(manifest, tiny, out))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    lines = result.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("extracting ") and lines[1] == line, lines
    assert line.startswith(f"error: cannot write {out} (No space left on device): free disk space")
    assert "rerun the same command" in line and f"{out}.parts are kept" in line
    assert not os.path.lexists(out) and not list(tmp_path.glob(".full.h5.tmp-*"))
    assert (Path(f"{out}.parts") / "manifest.json").is_file()
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0 and f"{N_CLIPS} were already there" in again.output, again.output
    assert open_cache(out).meta["digest"] == open_cache(ref).meta["digest"]


def _parts_before_consolidation(tmp_path, tiny, manifest: Path, out: Path) -> None:
    """Every utterance committed to parts; the run stopped where consolidation opens the store."""
    result = invoke_with_fault("consolidate-open:1:enospc", manifest_args(manifest, tiny, out))
    assert result.exit_code == 2 and (Path(f"{out}.parts") / "manifest.json").is_file()


@pytest.mark.subprocess
def test_a_file_size_limit_below_the_hdf5_store_is_one_line_before_writing(tmp_path, tiny, clips):
    """A real `ulimit -f` smaller than the store: HDF5 ran out of room inside its C library
    (sixty h5py deallocator tracebacks, then a segmentation fault, round-10 row 47). The limit
    is checked before the store is opened; the parts are kept and the rerun finishes."""
    import resource

    manifest = write_manifest(tmp_path / "c", clips)
    ref = tmp_path / "ref.h5"
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, ref)).exit_code == 0
    out = tmp_path / "limited.h5"
    _parts_before_consolidation(tmp_path, tiny, manifest, out)
    limit = ref.stat().st_size // 2  # above every part file, below the store
    child = subprocess.run(
        [sys.executable, "-m", "emofuse", *manifest_args(manifest, tiny, out)],
        env=child_env(), capture_output=True, text=True, timeout=600,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )  # fmt: skip
    assert child.returncode == 2, child.stdout + child.stderr
    line = error_line(child.stdout + child.stderr)
    assert line.startswith(f"error: cannot write {out}: this shell's `ulimit -f` limits one file")
    assert f"{out}.parts are kept" in line and "rerun the same command" in line
    assert not os.path.lexists(out) and not list(tmp_path.glob(".limited.h5.tmp-*"))
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0 and f"{N_CLIPS} were already there" in again.output, again.output
    assert open_cache(out).meta["digest"] == open_cache(ref).meta["digest"]


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_too_little_free_disk_for_the_store_is_one_line_before_writing(
    tmp_path, tiny, clips, monkeypatch, suffix
):
    """A disk with less room than the store is refused before anything is written, naming
    the free and the needed space (a disk filling midway is the injected-ENOSPC case)."""
    import importlib
    import shutil as sh

    consolidate = importlib.import_module("emofuse.cache.consolidate")
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / f"small{suffix}"
    _parts_before_consolidation(tmp_path, tiny, manifest, out)
    usage = sh.disk_usage(tmp_path)
    monkeypatch.setattr(consolidate.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert line.startswith(f"error: cannot write {out}: its file system has 0.0 MB free and")
    assert "free disk space and rerun the same command" in line and f"{out}.parts are kept" in line
    assert not os.path.lexists(out) and not list(tmp_path.glob(f".small{suffix}.tmp-*"))
    monkeypatch.undo()
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0 and f"{N_CLIPS} were already there" in again.output, again.output


def test_resume_after_the_labels_changed_is_refused_naming_the_utterance(tmp_path, tiny, clips):
    """Case 1: two utterances stored with label hap, then the manifest says HAPPY."""
    manifest = write_manifest(tmp_path / "c", clips, label="hap")
    out = tmp_path / "relabel.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    write_manifest(tmp_path / "c", clips, label="HAPPY")
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert re.search(r"utterance u\d: label 'hap' in .*relabel\.h5\.parts but 'HAPPY'", line), line
    assert not out.exists()


def test_resume_with_its_parts_manifest_gone_is_refused(tmp_path, tiny, clips):
    """Case 2: manifest.json lost, resumed with other --layers: never layer 0 stored as layer 1."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "nomanifest.h5"
    interrupted(tmp_path, tiny, manifest, out, 2, "--layers", "0")
    (Path(str(out) + ".parts") / "manifest.json").unlink()
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out, "--layers", "1"))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert "manifest.json" in line and "delete" in line and str(out) + ".parts" in line
    assert not out.exists()


def test_resume_with_other_batch_seconds_is_refused(tmp_path, tiny, clips):
    """Case 13: the batch plan decides the stored numbers; another --batch-seconds is refused."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "batch.h5"
    interrupted(tmp_path, tiny, manifest, out, 2, "--batch-seconds", "4")
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out, "--batch-seconds", "2"))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert (
        "--batch-seconds 4.0, this run has --batch-seconds 2.0" in line
        and "4.0" in line
        and "2.0" in line
    )
    assert not out.exists()


def _stored_ids(out: Path) -> list[str]:
    return sorted(
        uid
        for part in Path(str(out) + ".parts").glob("rank*")
        for uid in json.loads((part / "index.json").read_text())["ids"]
    )


def test_resume_after_a_stored_wav_changed_is_refused_naming_the_file(tmp_path, tiny, clips):
    """A WAV rewritten with other samples of the same length under the same name, between the
    kill and the resume: the resume used to keep its old features silently. The SHA-1 of every
    audio file's bytes is stored with its row; a mismatch is one line naming utterance and file."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "changed.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    victim = _stored_ids(out)[0]
    wav = tmp_path / "c" / f"{victim}.wav"
    samples, rate = clips[wav.name]
    size = wav.stat().st_size
    sf.write(wav, samples[::-1].copy(), rate, subtype="PCM_16")  # same length, other content
    assert wav.stat().st_size == size
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert f"utterance {victim}: its audio file {wav} is not the audio extracted" in line
    assert "(other content: the file changed" in line
    assert "restore the original file or path" in line and f"delete {out}.parts" in line
    assert not out.exists() and len(_stored_ids(out)) == 2  # the parts are kept
    # the original bytes back: the resume goes on, and a touched (same bytes) file is fine too
    sf.write(wav, samples, rate, subtype="PCM_16")
    os.utime(wav, ns=(1, 1))
    resumed = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert resumed.exit_code == 0 and "2 were already there" in resumed.output, resumed.output
    with open_cache(out) as c:
        sha = dict(zip(c.ids, c.table["audio_sha1"], strict=True))
    assert sha[victim] == hashlib.sha1(wav.read_bytes()).hexdigest()
    # a finished store is checked the same way when the command is run again
    sf.write(wav, samples[::-1].copy(), rate, subtype="PCM_16")
    done = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert done.exit_code == 2 and f"its audio file {wav} is not" in error_line(done.output)


def test_resume_with_a_row_pointing_at_another_stored_wav_names_both(tmp_path, tiny, clips):
    """A manifest row whose audio path now names another utterance's (unchanged) file: the line
    said "same name, other content" and "restore the original file", though no file changed
    (round-10 row 13 of the extract side)."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "moved.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    victim, other = _stored_ids(out)[:2]
    wrong = tmp_path / "elsewhere" / "take2.wav"  # a copy of the other utterance's recording
    wrong.parent.mkdir()
    shutil.copy(tmp_path / "c" / f"{other}.wav", wrong)
    text = manifest.read_text()
    manifest.write_text(text.replace(f"{victim}.wav", str(wrong), 1))
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert f"utterance {victim}: its audio file {wrong} is not the audio extracted" in line
    assert f"it holds utterance {other}'s audio" in line and "or the corpus now names" in line
    manifest.write_text(text)  # the path back, as the line says: the resume goes on
    resumed = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert resumed.exit_code == 0 and "2 were already there" in resumed.output, resumed.output


@pytest.mark.parametrize("damage", ["manifest.json", "index.json"])
def test_corrupt_parts_journal_on_resume_is_one_line(tmp_path, tiny, clips, damage):
    """Case 9: a torn manifest.json or index.json names the file and what to delete."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "torn.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    parts = Path(str(out) + ".parts")
    target = parts / damage if damage == "manifest.json" else parts / "rank000-000001" / damage
    target.write_text('{"fingerprint": "abc", "str')
    checks = [["info", str(out)], ["info", "--json", str(out)]]
    if damage == "manifest.json":  # verify said "rerun to resume", which then refused
        checks.append(["verify", str(out)])
    for args in checks:
        seen = CliRunner().invoke(cli, args)  # info crashed on a torn index (round-7 row 31)
        assert seen.exit_code == 2 and str(target) in error_line(seen.output), seen.output
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert str(target) in line and "delete" in line
    assert "is damaged (not valid JSON: " in line and "Error" not in line  # not a class name


def test_deleted_part_file_is_found_before_encoding_the_rest(tmp_path, tiny, clips):
    """Case 9: a part's .npy gone: refused at open, before any new part is written."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "holed.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    parts = Path(str(out) + ".parts")
    (parts / "rank000-000000" / "speech.data.npy").unlink()
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert "rank000-000000" in line and "speech.data.npy" in line
    assert sorted(p.name for p in parts.iterdir() if p.name.startswith("rank")) == [
        "rank000-000000",
        "rank000-000001",
    ]  # fmt: skip  (nothing encoded before the check)


def test_resume_with_a_smaller_corpus_counts_right_and_gives_cli_advice(tmp_path, tiny, clips):
    """Case 11: 4 stored, then resumed with --limit 2: refused before encoding, with a CLI step."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "smaller.h5"
    interrupted(tmp_path, tiny, manifest, out, 4)
    stored = {
        uid
        for part in Path(str(out) + ".parts").glob("rank*")
        for uid in json.loads((part / "index.json").read_text())["ids"]
    }
    extra = sorted(stored - {"u0", "u1"})  # the parts hold what the length-bucketed plan did first
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out, "--limit", "2"))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert f"holds {len(extra)} stored utterances that are not in this corpus" in line
    assert f"(first: {extra[0]!r})" in line and "close(" not in line
    assert "--limit" in line and "delete" in line
    assert sorted(p.name for p in Path(str(out) + ".parts").glob("rank*")) == [
        f"rank000-{k:06d}" for k in range(4)
    ]  # refused before encoding anything


def test_killed_cache_is_called_incomplete_by_train_and_verify(tmp_path, tiny, clips):
    """Case 10: not "does not exist" / "not an emofuse cache": incomplete, rerun extract."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "killed.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    for args in (
        ["verify", str(out)],
        ["train", "--cache", str(out), "--split", "loso", "--head", "pooled",
         "--out", str(tmp_path / "run")],
    ):  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        line = error_line(result.output)
        assert "incomplete" in line and "rerun" in line and "emofuse extract" in line, line
        assert "does not exist" not in line and "not an emofuse cache" not in line


def test_out_under_a_regular_file_is_one_line(tmp_path, tiny, clips):
    """Case 8: --out FILE/x for extract and demo."""
    manifest = write_manifest(tmp_path / "c", clips)
    (tmp_path / "file").write_text("mine")
    for args in (
        manifest_args(manifest, tiny, tmp_path / "file" / "x.h5"),
        ["demo", "--out", str(tmp_path / "file" / "x"), "--quiet"],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        line = error_line(result.output)
        assert str(tmp_path / "file") in line and "regular file" in line
    assert (tmp_path / "file").read_text() == "mine"


def test_out_inside_another_cache_is_one_line_and_writes_nothing(tmp_path, tiny, clips):
    """`--out c1.zarr/inner.h5` used to write a second cache (and its lock and parts) inside the
    first; the same for an interrupted extraction's .parts folder. train's --out check is the
    same helper (emofuse.cache.store.check_outside_caches)."""
    manifest = write_manifest(tmp_path / "c", clips)
    zarr_cache = tmp_path / "c1.zarr"
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, zarr_cache)).exit_code == 0
    interrupted(tmp_path, tiny, manifest, tmp_path / "c2.h5", 1)
    parts = tmp_path / "c2.h5.parts"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    journal = "{0}, the extraction journal of the cache {1}"
    for out, where in (
        (zarr_cache / "inner.h5", f"the cache {zarr_cache}"),
        (zarr_cache / "streams" / "deeper.zarr", f"the cache {zarr_cache}"),
        (parts / "inner.h5", journal.format(parts, tmp_path / "c2.h5")),
        # round-7 row 70: the journal folder of a finished cache (not there now) is its too: the
        # cache's next run removes a leftover journal, and a store in it with it
        (zarr_cache.with_name("c1.zarr.parts") / "mine.h5",
         journal.format(zarr_cache.with_name("c1.zarr.parts"), zarr_cache)),
    ):  # fmt: skip
        result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
        assert result.exit_code == 2, result.output
        line = error_line(result.output)
        assert line == f"error: --out {out} is inside {where}; give a cache path outside it"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    # beside the caches is fine, and so is resuming into the interrupted one itself
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, tmp_path / "c3.h5")).exit_code == 0
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, tmp_path / "c2.h5")).exit_code == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(tmp_path, tiny, clips):
    manifest = write_manifest(tmp_path / "c", clips)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        result = CliRunner().invoke(cli, manifest_args(manifest, tiny, ro / "x.h5"))
    finally:
        ro.chmod(0o755)
    assert result.exit_code == 2
    assert str(ro) in error_line(result.output)


def test_read_only_file_system_is_one_line_and_keeps_nothing_half_written(tmp_path, tiny, clips):
    """Case 8 as root (mode bits do not stop root): the file system refuses the first part."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "rofs.h5"
    result = invoke_with_fault("part-write:1:erofs", manifest_args(manifest, tiny, out))
    assert result.exit_code == 2
    line = error_line(result.output)
    assert "Read-only file system" in line and str(out) in line
    assert "mounted read-only" in line and "free disk space" not in line
    assert "nothing was committed yet, it starts again" in line  # not "from the 0 part(s)"
    assert not out.exists() and not Path(str(out) + ".lock").exists()


@pytest.mark.subprocess
def test_second_extract_into_the_same_out_is_refused_while_the_first_holds_the_lock(
    tmp_path, tiny, clips
):
    """Case 6: the first extract stops itself right after taking the lock (SIGSTOP: alive)."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "shared.h5"
    first = subprocess.Popen(
        [PYTHON, "-m", "emofuse", *manifest_args(manifest, tiny, out)],
        env=child_env(**{faults.ENV: "lock-taken:1:stop"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _pid, status = os.waitpid(first.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status), status
        for command in ("verify", "info"):  # not "no cache at …; run emofuse extract" (round 8)
            seen = CliRunner().invoke(cli, [command, str(out)])
            assert error_line(seen.output).startswith(
                f"error: {out} does not exist yet: it is being written by emofuse extract (pid "
                f"{first.pid} on "
            ), seen.output
        second = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
        assert second.exit_code == 2, second.output
        line = error_line(second.output)
        assert f"pid {first.pid}" in line and "being written by another emofuse extract" in line
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    # the holder is gone: its lock is stale and the next run takes it over and finishes
    third = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert third.exit_code == 0, third.output
    assert open_cache(out).complete and not Path(str(out) + ".lock").exists()


@pytest.mark.subprocess
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_during_extract_is_the_interrupted_line_and_the_rerun_resumes(
    tmp_path, tiny, clips, sig
):
    """`kill PID`, `timeout`, a scheduler's cancel (SIGTERM) or a closed terminal (SIGHUP) killed
    extract with no line at all (exit 143/129), leaving its lock behind. The child freezes itself
    after its 2nd committed part; the signal is delivered when it is let go (when the main thread
    acts on it is up to the scheduler: the test holds for any moment)."""
    manifest = write_manifest(tmp_path / "c", clips)
    out, ref = tmp_path / "sig.h5", tmp_path / "ref.h5"

    def command(path: Path) -> list[str]:  # every run in a child: one thread, the same sums
        return [
            PYTHON,
            "-m",
            "emofuse",
            *manifest_args(manifest, tiny, path, "--flush-seconds", "0"),
        ]

    child = subprocess.Popen(
        command(out),
        env=child_env(**{faults.ENV: "part-committed:2:stop"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _pid, status = os.waitpid(child.pid, os.WUNTRACED)  # returns once it has stopped
        assert os.WIFSTOPPED(status), status
        # meanwhile verify says it is being written (not "interrupted: rerun to resume")
        busy = CliRunner().invoke(cli, ["verify", str(out)])
        assert busy.exit_code == 2, busy.output
        assert error_line(busy.output).startswith(
            f"error: {out} is incomplete (being written by emofuse extract (pid {child.pid} on "
        ) and busy.output.rstrip().endswith("wait for it to finish)")
        info = CliRunner().invoke(cli, ["info", str(out)])
        assert info.exit_code == 0 and (
            f"INCOMPLETE, being written by emofuse extract (pid {child.pid} on " in info.output
        ), info.output
        os.kill(child.pid, sig)  # pending until the child runs again
        os.kill(child.pid, signal.SIGCONT)
        _out, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    name = signal.Signals(sig).name
    assert child.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1].startswith(f"interrupted by {name}: rerun the same command")
    assert "Traceback" not in err
    assert not Path(f"{out}.lock").exists()  # released, as after Ctrl-C
    # the writer thread froze after its 2nd part; the main thread, which ends the run, may have
    # handed it more batches by then: at least those 2 parts are kept (or the store finished)
    parts = len(list(Path(f"{out}.parts").glob("rank*"))) if not out.exists() else N_CLIPS
    assert parts >= 2
    rerun, whole = (
        subprocess.run(command(path), env=child_env(), capture_output=True, text=True)
        for path in (out, ref)  # the rerun resumes; ref: the same run, never interrupted
    )
    assert rerun.returncode == 0 and whole.returncode == 0, rerun.stderr + whole.stderr
    assert f"resuming: {parts} already stored" in rerun.stdout + rerun.stderr
    digests = [
        next(x for x in CliRunner().invoke(cli, ["verify", str(p)]).output.splitlines()
             if x.startswith("digest: "))
        for p in (out, ref)
    ]  # fmt: skip
    assert digests[0] == digests[1]  # as an uninterrupted run's


@pytest.mark.subprocess
def test_two_part_model_path_that_does_not_exist_fails_fast_in_one_line(tmp_path, clips):
    """Case 12: `nonexist/model` is neither a folder here nor a cached hub model, and the hub is
    unreachable: one line naming both readings, no retries (a child without HF offline mode)."""
    manifest = write_manifest(tmp_path / "c", clips)
    env = child_env(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    env.pop("HF_HUB_OFFLINE")
    env.pop("TRANSFORMERS_OFFLINE")
    args = manifest_args(manifest, None, tmp_path / "x.h5")
    args[args.index("--speech-model") + 1] = "nonexist/model"
    run = subprocess.run(
        [PYTHON, "-m", "emofuse", *args], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 2, run.stdout + run.stderr
    noise = [
        x for x in run.stderr.splitlines() if x.strip() and not x.lstrip().startswith("manifest:")
    ]
    assert len(noise) == 1, run.stderr
    line = error_line(run.stderr)
    assert "nonexist/model" in line and "folder" in line and "hub" in line
    assert "--speech-model" in line


@pytest.mark.parametrize(
    "family, file, key, change, says",
    [
        ("hubert", "config.json", "num_hidden_layers", 2, "its weights lack "),
        ("whisper", "preprocessor_config.json", "sampling_rate", -8000, "its preprocessor_config"),
    ],
    ids=["layers missing", "8 kHz"],
)
def test_a_broken_model_is_one_line_without_transformers_own_warnings(
    tmp_path, tiny, clips, family, file, key, change, says
):
    """A config.json asking for more layers than the weights hold was refused, but only after
    transformers' 27-line LOAD REPORT table on stderr; an 8 kHz Whisper preprocessor after a
    2-line UserWarning about its mel filters (round-15 extract side rows 1 and 4)."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny.speech[family], broken)
    config = json.loads((broken / file).read_text())
    config[key] += change
    (broken / file).write_text(json.dumps(config))
    args = manifest_args(write_manifest(tmp_path / "c", clips), None, tmp_path / "x.h5")
    args[args.index("--speech-model") + 1] = str(broken)
    run = subprocess.run(
        [PYTHON, "-m", "emofuse", *args], env=child_env(), capture_output=True, text=True
    )
    assert run.returncode == 2, run.stderr
    noise = [
        x for x in run.stderr.splitlines() if x.strip() and not x.lstrip().startswith("manifest:")
    ]
    assert noise == [error_line(run.stderr)], run.stderr
    assert noise[0].startswith(f"error: --speech-model {broken}: {says}"), noise
    assert not (tmp_path / "x.h5").exists()


def test_quiet_extract_prints_no_progress_bar(tmp_path, tiny, clips):
    """--quiet silences every bar, the manifest reader's included (stderr is in the output)."""
    manifest = write_manifest(tmp_path / "c", clips)
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, tmp_path / "q.h5"))
    assert result.exit_code == 0, result.output
    assert "manifest:" not in result.output and "it/s" not in result.output, result.output


def test_every_model_none_is_refused_as_nothing_to_extract(tmp_path, clips):
    """--speech-model/--text-model/--speaker-model all none made a cache with no feature stream
    (exit 0), which train then refused with "has only ;". extract refuses it, writing nothing."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "none.h5"
    result = CliRunner().invoke(cli, manifest_args(manifest, None, out))
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [error_line(result.output)]
    line = error_line(result.output)
    assert line.startswith("error: nothing to extract:"), line
    assert all(o in line for o in ("--speech-model", "--text-model", "--speaker-model", "--fbank"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no cache, parts or lock


def test_a_resumed_extract_counts_the_unaligned_utterances_of_the_whole_cache(
    tmp_path, tiny, clips
):
    """The summary said `unaligned (frame-level features only): 4` for a cache of 6 unaligned
    utterances: only those stored by the resuming run were counted."""
    manifest = write_manifest(tmp_path / "c", clips)  # no alignment column: nothing is aligned
    out = tmp_path / "u.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0, again.output
    assert "2 were already there" in again.output
    assert not any(open_cache(out).table["aligned"])
    assert f"unaligned (frame-level features only): {N_CLIPS}\n" in again.output, again.output
    same = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))  # the finished store
    assert f"unaligned (frame-level features only): {N_CLIPS}\n" in same.output, same.output


def test_an_interrupt_before_any_commit_names_no_parts_folder(tmp_path, tiny, clips, monkeypatch):
    """Ctrl-C before the first part was committed named a parts folder that did not exist
    (fifth audit, row 25). The interrupt is raised in-process by the first batch."""
    from emofuse.extract.rows import RowBuilder

    def interrupt(self, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(RowBuilder, "__call__", interrupt)
    out = tmp_path / "i.h5"
    stopped = CliRunner().invoke(
        cli, manifest_args(write_manifest(tmp_path / "c", clips), tiny, out)
    )
    assert stopped.exit_code == 130, stopped.output
    assert stopped.output.strip().splitlines()[-1] == (
        "interrupted: before any utterance was committed: rerun the same command to start again"
    )
    assert not any(Path(f"{out}.parts").glob("rank*")) and not out.exists()


def test_an_interrupted_extract_says_that_rerunning_resumes(tmp_path, tiny, clips, monkeypatch):
    """Ctrl-C printed a bare `interrupted`: nothing said the finished work is kept and that the
    same command resumes. (The interrupt is raised in-process by the 3rd batch: no signal race.)"""
    from emofuse.extract.rows import RowBuilder

    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "i.h5"
    encode = RowBuilder.__call__
    calls = []

    def interrupt_third(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return encode(self, batch)

    monkeypatch.setattr(RowBuilder, "__call__", interrupt_third)
    args = manifest_args(manifest, tiny, out, "--flush-seconds", "0", "--batch-seconds", "1")
    stopped = CliRunner().invoke(cli, args)
    assert stopped.exit_code == 130, stopped.output
    assert stopped.output.strip().splitlines()[-1] == (
        f"interrupted: rerun the same command to resume (the utterances already committed to "
        f"{out}.parts are kept and not extracted again)"
    )
    monkeypatch.setattr(RowBuilder, "__call__", encode)
    again = CliRunner().invoke(cli, args)  # the same command
    assert again.exit_code == 0, again.output
    kept = sum(calls[:2])
    assert f"resuming: {kept} already stored" in again.output and kept >= 2, again.output
    assert open_cache(out).ids == [Path(n).stem for n in clips]


def test_a_parts_folder_that_cannot_be_removed_after_the_final_rename_is_a_note(
    tmp_path, tiny, clips
):
    """Round-7 audit: the journal's removal after the store got its final name was unguarded
    (an immutable file in it: a PermissionError traceback, exit 1, no digest) though the store
    was complete. Now a note; the run succeeds and the next run removes the leftover."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "stuck.h5"
    result = invoke_with_fault("consolidate-renamed:1:erofs", manifest_args(manifest, tiny, out))
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    notes = [x for x in result.output.splitlines() if x.startswith("note: ")]
    assert notes == [
        f"note: {out} is complete, but its parts folder {out}.parts could not be removed "
        "(Read-only file system); delete it by hand (the next run of extract also tries)"
    ], result.output
    assert "digest: " in result.output and open_cache(out).complete
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0 and not Path(f"{out}.parts").exists(), again.output


def test_an_out_that_is_a_symbolic_link_writes_the_store_at_its_target(tmp_path, tiny, clips):
    """Round-7 audit: a link to a not-yet-existing cache on another disk was replaced by a
    regular file beside the link (the target never written); a link into a missing folder had
    that folder created at its target path."""
    manifest = write_manifest(tmp_path / "c", clips)
    (tmp_path / "disk").mkdir()
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "disk" / "real.h5")
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and (tmp_path / "disk" / "real.h5").is_file()
    assert open_cache(link).complete and not Path(f"{link}.lock").exists()
    dangling = tmp_path / "dangling.h5"
    dangling.symlink_to(tmp_path / "nowhere" / "x.h5")
    refused = CliRunner().invoke(cli, manifest_args(manifest, tiny, dangling))
    assert refused.exit_code == 2 and error_line(refused.output) == (
        f"error: --out {dangling} is a symbolic link to {tmp_path / 'nowhere' / 'x.h5'}, whose "
        f"folder {tmp_path / 'nowhere'} does not exist; create it (or fix the link), or give "
        "another --out"
    )
    assert not (tmp_path / "nowhere").exists() and dangling.is_symlink()
    device = tmp_path / "full.h5"  # named the link's target only (round-13 extract side row 33)
    device.symlink_to("/dev/full")
    refused = CliRunner().invoke(cli, manifest_args(manifest, tiny, device))
    assert refused.exit_code == 2 and error_line(refused.output) == (
        f"error: --out {device} is a symbolic link to /dev/full, which is a device or a pipe, "
        "not a file a cache can be written to; give another --out"
    )
    other = tmp_path / "other.h5"
    other.symlink_to(tmp_path / "disk" / "store.zarr")
    refused = CliRunner().invoke(cli, manifest_args(manifest, tiny, other))
    assert refused.exit_code == 2 and error_line(refused.output).startswith(
        f"error: --out {other} is a symbolic link to {tmp_path / 'disk' / 'store.zarr'}, and the "
        "cache is written at the link's target, whose name must end in .h5"
    )
    assert not (tmp_path / "disk" / "store.zarr").exists()


def test_a_rerun_of_a_finished_store_removes_a_leftover_journal_only(tmp_path, tiny, clips):
    """A finished store's rerun removes a journal left by a kill after the final rename, but a
    folder of that name holding anything else (a user's files) is not deleted with it."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "done.h5"
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, out)).exit_code == 0
    leftover = Path(f"{out}.parts")
    (leftover / "rank000-000000").mkdir(parents=True)
    (leftover / "manifest.json").write_text("{}")
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, out)).exit_code == 0
    assert not leftover.exists()
    leftover.mkdir()
    (leftover / "notes.txt").write_text("mine")
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, out)).exit_code == 0
    assert (leftover / "notes.txt").read_text() == "mine"


def test_a_resume_after_the_model_files_changed_names_the_model_folder(tmp_path, tiny, clips):
    """Round-7 audit: weights replaced under the same --speech-model between the kill and the
    rerun gave "was extracted with fingerprint.speech_model.revision …; rerun with the same
    options", which the user had done."""
    import shutil

    manifest = write_manifest(tmp_path / "c", clips)
    model = tmp_path / "model"
    shutil.copytree(tiny.speech["wav2vec2-group"], model)
    args = manifest_args(manifest, tiny, tmp_path / "m.h5", "--flush-seconds", "0")
    args[args.index("--speech-model") + 1] = str(model)
    os.environ[faults.ENV] = "part-write:3:enospc"
    faults.reset()
    try:
        assert CliRunner().invoke(cli, args).exit_code == 2
    finally:
        del os.environ[faults.ENV]
        faults.reset()
    weights = next(p for p in model.iterdir() if p.suffix in (".safetensors", ".bin"))
    raw = bytearray(weights.read_bytes())
    raw[-8:] = bytes(b ^ 0xFF for b in raw[-8:])
    weights.write_bytes(bytes(raw))
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert line.startswith(
        f"error: {tmp_path / 'm.h5.parts'} was extracted with other files of the speech model "
        f"{model} (content sha256:"
    ), line
    assert "its files changed since); restore them to resume, or delete" in line


def test_a_local_speaker_model_is_read_in_place_whatever_lies_beside_out(tmp_path, tiny, clips):
    """Another ECAPA's files left in .emofuse-models beside --out were used in place of the
    --speaker-model folder's (SpeechBrain keeps a file already in its savedir): the cache held
    the other model's vectors under this model's name and fingerprint (round-13 extract side
    row 60); damaged leftovers there were blamed on the intact folder (row 59); a file of that
    name failed inside SpeechBrain (round 7). A local folder is now read in place."""
    from emofuse.encoders.tiny import build_speaker

    manifest = write_manifest(tmp_path / "c", clips)

    def extract(out: Path):
        args = manifest_args(manifest, tiny, out, "--limit", "3")
        args[args.index("--speaker-model") + 1] = str(tiny.speaker)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        return open_cache(out).meta["digest"]

    clean = extract(tmp_path / "clean" / "x.h5")
    stale = tmp_path / "stale" / ".emofuse-models"
    shutil.copytree(build_speaker(tmp_path / "other", seed=1), stale)  # another model's files
    assert extract(tmp_path / "stale" / "x.h5") == clean
    torn = tmp_path / "torn" / ".emofuse-models"
    torn.mkdir(parents=True)
    (torn / "hyperparams.yaml").write_text("garbage: [")
    (torn / "embedding_model.ckpt").write_bytes(b"junk")
    assert extract(tmp_path / "torn" / "x.h5") == clean
    (tmp_path / "file").mkdir()
    (tmp_path / "file" / ".emofuse-models").write_text("hi")
    assert extract(tmp_path / "file" / "x.h5") == clean
    assert (tmp_path / "file" / ".emofuse-models").read_text() == "hi"  # untouched


def test_the_folder_a_hub_speaker_model_is_linked_into_is_checked(tmp_path):
    """For a hub id SpeechBrain links the files into a folder beside --out: a file in its way is
    one line (a hub model cannot be loaded offline here, so the check is called directly)."""
    from emofuse.errors import EmofuseError
    from emofuse.extract.config import _check_savedir

    (tmp_path / ".emofuse-models").write_text("hi")
    with pytest.raises(EmofuseError) as err:
        _check_savedir(tmp_path / ".emofuse-models" / "speechbrain--spkrec-ecapa-voxceleb")
    assert str(err.value).endswith(
        "(where the speaker model's files are linked for SpeechBrain, beside the --out cache) is "
        "a file or lies under one; move it away, or check --out"
    )


@pytest.mark.parametrize("what", ["folder of the user's", "file"])
def test_a_user_folder_or_file_where_the_journal_goes_is_refused_and_kept(
    tmp_path, tiny, clips, what
):
    """Round-7 audit: a user's folder named NAME.h5.parts was adopted as the journal and deleted
    with its files after consolidation; a regular file of that name was a FileExistsError
    traceback."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "fresh.h5"
    taken = Path(f"{out}.parts")
    if what == "file":
        taken.write_text("data")
    else:
        taken.mkdir()
        (taken / "notes.txt").write_text("keep")
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 2, result.output
    where = f"error: {taken} (where extract keeps its journal for {out})"
    assert error_line(result.output) == (
        f"{where} is not a folder; move it away, or choose another --out"
        if what == "file"
        else f"{where} holds files that are not emofuse's (notes.txt); move them out of it (the "
        "journal's parts are kept) and rerun, or choose another --out"
    )
    assert (taken.read_text() if what == "file" else (taken / "notes.txt").read_text()) in (
        "data",
        "keep",
    )
    assert not out.exists()


@pytest.mark.parametrize("mode", [0o000, 0o333])
def test_an_unlistable_journal_is_told_to_be_made_readable_not_called_a_file(unprivileged, mode):
    """Round-17 extract side row 4: an interrupted extract's journal folder made unreadable was
    called "not a folder; move it away" (moving it throws the committed parts away)."""
    from emofuse.cache.parts import check_journal_place

    base, as_user = unprivileged
    journal = base / "j.h5.parts"
    journal.mkdir()
    (journal / "manifest.json").write_text("{}")
    os.chown(journal, NOBODY, NOBODY)
    journal.chmod(mode)
    with as_user(), pytest.raises(EmofuseError) as err:
        check_journal_place(journal, base / "j.h5")
    assert str(err.value) == (
        f"{journal} (where extract keeps its journal for {base / 'j.h5'}) cannot be read "
        f"(Permission denied); make it readable (`chmod u+rwx {journal}`, or ask its owner), "
        "then rerun the same command"
    )
    journal.chmod(0o755)  # the advice followed: a journal again
    with as_user():
        check_journal_place(journal, base / "j.h5")


def test_the_file_system_root_as_out_is_one_line(tmp_path, tiny, clips):
    """Round-17 extract side row 7: `extract --out /` was a ValueError traceback from the lock
    (taken before the cache name was checked)."""
    from emofuse.locks import lock_path

    manifest = write_manifest(tmp_path / "c", clips)
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, Path("/")))
    assert result.exit_code == 2, result.output
    assert error_line(result.output) == (
        "error: /: a cache name must end in .h5/.hdf5 (HDF5) or .zarr (Zarr v3)"
    )
    with pytest.raises(EmofuseError, match="^/ is the file-system root: give a name inside"):
        lock_path("/")  # train, fuse and the other writers take their lock the same way


@pytest.mark.parametrize("link", ["dangling", "loop"])
def test_a_journal_path_that_is_a_broken_link_names_the_link(tmp_path, tiny, clips, link):
    """Round-17 extract side row 12: a dangling or looping symbolic link at NAME.h5.parts was
    "cannot write … (File exists): free disk space or make c writable", which changes nothing."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "x.h5"
    journal = Path(f"{out}.parts")
    if link == "dangling":
        journal.symlink_to("nowhere")
        says = f"is a symbolic link to 'nowhere', which does not exist; remove the link (`rm {journal}`)"
    else:
        journal.symlink_to("other")
        (tmp_path / "other").symlink_to(journal.name)
        says = "is a symbolic link that loops back on itself"
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert line.startswith(f"error: {journal} (where extract keeps its journal for {out}) {says}")
    assert journal.is_symlink() and not out.exists()
    journal.unlink()  # the advice followed
    assert CliRunner().invoke(cli, manifest_args(manifest, tiny, out)).exit_code == 0


def test_an_out_under_a_folder_it_may_not_enter_is_one_line(unprivileged):
    """Round-17 extract side row 77: --out under a folder of mode 000 was a PermissionError
    traceback from the --out symbolic-link check, before the writability check."""
    from emofuse.extract import ExtractConfig
    from emofuse.extract.pipeline import _follow_out_link

    base, as_user = unprivileged
    closed = base / "px"
    (closed / "in").mkdir(parents=True)
    closed.chmod(0)
    out = closed / "in" / "y.h5"
    try:
        with as_user(), pytest.raises(EmofuseError) as err:
            _follow_out_link(ExtractConfig(out=out))
    finally:
        closed.chmod(0o755)
    assert str(err.value) == (
        f"--out {out}: the folder {closed} cannot be entered (Permission denied); make it "
        f"accessible (`chmod u+rwx {closed}`, or ask its owner), or choose another --out"
    )


def test_a_resume_where_dtype_auto_chooses_otherwise_says_how_to_force_it(
    tmp_path, tiny, clips, monkeypatch
):
    """Round-17 extract side row 50: an extract interrupted on a bf16 CPU and resumed on another
    (`--dtype auto` both times) was told to "rerun with the same options", which it had done."""
    from emofuse.cache.resumed import CPU_BF16
    from emofuse.encoders.common import BF16_ENV

    assert CPU_BF16 == BF16_ENV
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "bf.h5"
    monkeypatch.setenv(BF16_ENV, "1")
    interrupted(tmp_path, tiny, manifest, out, 2, "--dtype", "auto")
    monkeypatch.setenv(BF16_ENV, "0")  # another machine: auto picks fp32 there
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out, "--dtype", "auto"))
    assert result.exit_code == 2, result.output
    assert error_line(result.output) == (
        f"error: {out}.parts was extracted in bfloat16 (--dtype auto chose it on that machine), "
        f"and here it would compute in float32; resume with --dtype auto and {BF16_ENV}=1 set "
        "(it forces auto's choice), or choose another output name"
    )
    monkeypatch.setenv(BF16_ENV, "1")  # the advice followed
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out, "--dtype", "auto"))
    assert result.exit_code == 0 and "resuming: 2 already stored" in result.output, result.output


def test_a_stray_file_in_a_journal_is_named_and_moving_it_resumes(tmp_path, tiny, clips):
    """A stray file in a half-written journal was "move it away" — the whole journal with its good
    parts (round-12 extract side row 47): the line names the file, and moving it out resumes."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "j.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    stray = Path(f"{out}.parts") / "stray.txt"
    stray.write_text("junk")
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 2, result.output
    assert "holds files that are not emofuse's (stray.txt); move them out" in error_line(
        result.output
    )
    stray.unlink()  # what the line says
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 0, result.output
    assert (
        f"{len(clips) - 2} utterances" in result.output and "2 were already there" in result.output
    )


@pytest.mark.parametrize("damage", ["deleted", "torn", "array deleted"])
def test_verify_of_a_journal_with_a_lost_part_index_gives_the_advice_that_works(
    tmp_path, tiny, clips, damage
):
    """verify (and train) said "rerun the same extract to resume it" of a journal whose part had
    lost its index.json, and that rerun only stopped at the part (round-12 extract side row 45):
    they name the part to delete first, and following that line finishes the cache."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "j.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    part = sorted(Path(f"{out}.parts").glob("rank*"))[1]
    if damage == "deleted":
        (part / "index.json").unlink()
    elif damage == "torn":
        (part / "index.json").write_text('{"ids": [')
    else:  # round-13 extract side row 34: verify said "rerun to resume", which stopped at it
        array = sorted(part.glob("*.npy"))[0]
        array.unlink()
    for args in (
        ["verify", str(out)],
        [
            "train",
            "--cache",
            str(out),
            "--split",
            "loso",
            "--head",
            "audio",
            "--out",
            str(tmp_path / "r"),
        ],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        line = error_line(result.output)
        assert line.startswith(f"error: {out} is incomplete (extraction interrupted) and its "), (
            line
        )
        if damage == "array deleted":
            assert f": {array} is missing (deleted or lost); delete the folder {part} " in line
        assert line.endswith(
            f"delete the folder {part} (its utterances are extracted again) and rerun the same "
            "`emofuse extract` command to resume it"
        ), line
    shutil.rmtree(part)  # what the line says
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert result.exit_code == 0 and "1 were already there" in result.output, result.output
    result = CliRunner().invoke(cli, ["verify", str(out)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("fault, said", [
    ("lock-taken:1:enospc", "then rerun the same command"),
    ("part-committed:1:enospc", "it resumes from the 1 part(s) already committed"),
])  # fmt: skip
def test_a_write_error_after_the_lock_or_a_commit_is_one_line_that_counts_right(
    tmp_path, tiny, clips, fault, said
):
    """Round-8 audit: ENOSPC right after the lock was taken was a traceback; right after the
    1st part was committed the line said "nothing was committed yet" (the rerun resumed it)."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "w.h5"
    result = invoke_with_fault(fault, manifest_args(manifest, tiny, out, "--flush-seconds", "0"))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert "(No space left on device)" in line and line.endswith(said), line
    assert not Path(f"{out}.lock").exists()
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 0, again.output
    assert ("resuming: 1 already stored" in again.output) == fault.startswith("part-committed")


def test_an_out_that_is_a_symlink_loop_is_one_line_everywhere(tmp_path, tiny, clips):
    """Round-8 audit: `ln -s a.h5 b.h5; ln -s b.h5 a.h5` as --out was a RuntimeError traceback
    in extract, and info/verify called it "no cache at"."""
    manifest = write_manifest(tmp_path / "c", clips)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    a.symlink_to(b)
    b.symlink_to(a)
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, a))
    assert result.exit_code == 2 and error_line(result.output) == (
        f"error: --out {a} is a symbolic link that loops back on itself; fix or remove the link, "
        "or give another --out"
    ), result.output
    for command in ("info", "verify"):  # named a loop as the argument is read (2d31d30)
        seen = CliRunner().invoke(cli, [command, str(a)])
        assert seen.exit_code == 2 and (
            f"{a} is a symbolic link that loops back on itself (directly or through another "
            "link); fix or remove the link"
        ) in error_line(seen.output), seen.output


def test_a_model_that_emits_nan_or_values_of_another_scale_is_named_not_stored(
    tmp_path, tiny, clips
):
    """A speech model with one NaN weight stored a third of its values as NaN, and an ECAPA
    whose outputs were ~1e5 stored every speaker value as ±65504 (float16's clamp), both
    reported as a success that verify passed (round-13 extract side rows 95-96)."""
    import torch
    from safetensors.torch import load_file, save_file

    from emofuse.encoders.tiny import build_speaker

    manifest = write_manifest(tmp_path / "c", clips)
    broken = tmp_path / "nan-model"
    shutil.copytree(tiny.speech["wav2vec2-group"], broken)
    weights = load_file(broken / "model.safetensors")
    name = next(k for k in weights if "k_proj.weight" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    args = manifest_args(manifest, tiny, tmp_path / "nan.h5")
    args[args.index("--speech-model") + 1] = str(broken)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert re.match(r"error: utterance \S+: --speech-model emitted NaN \(\d+ of \d+ values of "
                    r"stream speech, stored layer\(s\) [\d, ]+\); its weights are damaged", line), line  # fmt: skip
    assert not (tmp_path / "nan.h5").exists()
    loud = build_speaker(tmp_path / "loud", seed=0)
    state = torch.load(loud / "embedding_model.ckpt")
    torch.save({k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()},
               loud / "embedding_model.ckpt")  # fmt: skip
    args = manifest_args(manifest, None, tmp_path / "loud.h5")
    args[args.index("--speaker-model") + 1] = str(loud)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert re.match(r"error: utterance \S+: \d+% of stream speaker's values from --speaker-model "
                    r"lie beyond ±65504, float16's range", line), line  # fmt: skip
    assert not (tmp_path / "loud.h5").exists()


def test_a_full_stdout_is_named_as_such_not_as_the_store(tmp_path, tiny, clips):
    """`extract … > /dev/full` said "cannot write OUT (No space left on device): free disk space
    or make its folder writable", of a writable folder with room (round-13 extract side row
    102): the line is about standard output, as every other command's."""
    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "x.h5"
    args = [a for a in manifest_args(manifest, tiny, out) if a != "--quiet"]
    with open("/dev/full", "w") as full:
        run = subprocess.run([PYTHON, "-m", "emofuse", *args], stdout=full, stderr=subprocess.PIPE,
                             text=True, env=child_env(), timeout=600)  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert error_line(run.stderr) == (
        "error: cannot write the command's output to standard output (No space left on device); "
        "free disk space or redirect the output elsewhere, then rerun"
    )


def test_an_out_name_too_long_for_the_file_system_is_one_line(tmp_path, tiny, clips):
    """A 260-byte --out name was an OSError traceback in extract and info; a 250-byte one (whose
    NAME.lock is too long) said "free disk space or make the folder writable" (round-13 extract
    side rows 100-101)."""
    manifest = write_manifest(tmp_path / "c", clips)
    for length in (260, 250):
        out = tmp_path / ("n" * (length - 3) + ".h5")
        result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
        assert result.exit_code == 2, result.output
        line = error_line(result.output)
        assert (
            "(File name too long); a file name there is longer than the file system allows (255 "
            "bytes a name, the side files NAME.lock and NAME.parts included); give a shorter name"
        ) in line or line.endswith(": a file name there is longer than the file system allows "
                                   "(255 bytes a name, the side files NAME.lock and NAME.parts "
                                   "included); give a shorter name"), line  # fmt: skip
        assert "free disk space" not in line and "writable" not in line
    result = CliRunner().invoke(cli, ["info", str(tmp_path / ("n" * 257 + ".h5"))])
    assert result.exit_code == 2 and "longer than the file system allows" in error_line(
        result.output
    )


@pytest.mark.parametrize("file, edit", [
    ("config.json", ("layer_norm_eps", 0.5)),
    ("preprocessor_config.json", ("do_normalize", False)),
])  # fmt: skip
def test_a_resume_after_the_models_config_changed_is_refused(tmp_path, tiny, clips, file, edit):
    """The model's revision covered its weight files only: a resume after an edit of config.json
    (layer_norm_eps) or preprocessor_config.json (do_normalize) mixed utterances of two models,
    and verify passed (round-14 extract side rows 43, 65)."""
    manifest = write_manifest(tmp_path / "c", clips)
    model = tmp_path / "model"
    shutil.copytree(tiny.speech["wav2vec2-group"], model)
    out = tmp_path / "m.h5"

    def args(*more: str) -> list[str]:
        base = manifest_args(manifest, tiny, out, *more)
        base[base.index("--speech-model") + 1] = str(model)
        return base

    os.environ[faults.ENV] = "part-write:3:enospc"
    faults.reset()
    try:
        assert CliRunner().invoke(cli, args("--flush-seconds", "0")).exit_code == 2
    finally:
        del os.environ[faults.ENV]
        faults.reset()
    config = json.loads((model / file).read_text())
    config[edit[0]] = edit[1]
    (model / file).write_text(json.dumps(config))
    again = CliRunner().invoke(cli, args("--flush-seconds", "0"))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert line.startswith(
        f"error: {out}.parts was extracted with other files of the speech model {model} (content "
    ), line


def test_a_full_stderr_costs_the_notes_not_the_run(tmp_path, tiny, clips):
    """`extract … 2>/dev/full` (a cron job whose log disk is full) died with exit 1 and nothing
    stored when its `corpus: skipped …` note could not be written (round-14 extract side row
    60): the notes are lost, the cache is made."""
    manifest = write_manifest(tmp_path / "c", clips)
    with open(manifest, "a") as fh:
        fh.write("gone,gone.wav,hello there,neu,spk1\n")  # skipped: a note on stderr
    out = tmp_path / "x.h5"
    with open("/dev/full", "w") as full:
        run = subprocess.run(
            [PYTHON, "-m", "emofuse", *manifest_args(manifest, tiny, out, "--skip-missing")],
            stdout=subprocess.PIPE, stderr=full, text=True, env=child_env(), timeout=600,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout
    assert open_cache(out).complete and len(open_cache(out).ids) == len(clips)


def test_a_resume_after_the_alignment_changed_is_refused(tmp_path, tiny, clips):
    """The resume compared text, label, speaker and audio but not the alignment: the stored word
    spans stayed those of the old TextGrid, and verify passed (round-14 extract side row 58)."""
    from emofuse.align.textgrid import write_textgrid

    folder = tmp_path / "c"
    manifest = write_manifest(folder, clips)

    def align(split: float) -> None:
        rows = list(csv.DictReader(manifest.open()))
        for row in rows:
            wav, rate = clips[row["audio"]]
            end = len(wav) / rate
            tiers = {"word": [(0.0, split * end, "hello"), (split * end, end, "there")]}
            write_textgrid(folder / f"{row['id']}.TextGrid", tiers, end)
            row["alignment"] = f"{row['id']}.TextGrid"
        with manifest.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    align(0.5)
    out = tmp_path / "al.h5"
    interrupted(tmp_path, tiny, manifest, out, 2)
    align(0.2)  # the same words, other spans
    again = CliRunner().invoke(cli, manifest_args(manifest, tiny, out))
    assert again.exit_code == 2, again.output
    line = error_line(again.output)
    assert re.match(  # in words, not two raw dicts of internal fields (round-15 rows 9, 10)
        r"error: utterance \S+: its alignment \(the word/syllable/phone segments of its TextGrid "
        r"or \.wdseg/\.syseg/\.phseg files\) is not the one extracted into \S+al\.h5\.parts \(",
        line,
    ), line
    assert "changed since it was extracted" in line and not out.exists()
    assert "{" not in line and "alignment_sha1" not in line, line


def test_a_parts_folder_that_refuses_a_write_is_the_folder_named(
    tmp_path, tiny, clips, monkeypatch
):
    """A journal folder left read-only (another user's, a root run's): the line named the cache
    and advised making its parent writable, which changed nothing (round-15 extract side row 56).
    The refusal is what `mkdir` in a mode-555 folder raises (root ignores the mode itself)."""
    import errno

    import emofuse.cache.writer as writer

    manifest = write_manifest(tmp_path / "c", clips)
    out = tmp_path / "ro.h5"
    parts = Path(str(out) + ".parts")

    def refused(folder, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(folder / ".tmp-rank0-0"))

    monkeypatch.setattr(writer, "commit_part", refused)
    result = CliRunner().invoke(cli, manifest_args(manifest, tiny, out, "--flush-seconds", "0"))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert line.startswith(f"error: cannot write {parts / '.tmp-rank0-0'} (Permission denied): "), (
        line
    )
    assert f"make {parts} writable" in line, line
