"""`emofuse info` / `emofuse verify` and every bad input: one clear line, non-zero, no write."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from emofuse.cache import CacheWriter, open_cache
from emofuse.cli import cli
from emofuse.errors import EmofuseError
from tests.cache.cache_synth import N_UTTS, SETTINGS, feed, specs, write_cache


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (or root itself) -> sha256: proves nothing was written."""
    files = [root] if root.is_file() else [Path(d) / f for d, _, fs in os.walk(root) for f in fs]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def one_error_line(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_info_text_and_json(reference):
    path, digest = reference
    text = invoke("info", str(path))
    assert text.exit_code == 0 and "complete" in text.output and "INCOMPLETE" not in text.output
    assert "speech" in text.output and "tiny-hubert" in text.output
    js = invoke("info", str(path), "--json")
    assert js.exit_code == 0
    info = json.loads(js.output)
    assert info["complete"] and info["digest"] == digest
    assert info["utterances"] == N_UTTS - 2 and info["skipped"] == 2
    assert sum(info["labels"].values()) == N_UTTS - 2 and info["speakers"] == 3
    speech = info["streams"]["speech"]
    with open_cache(path) as c:
        rows = int(c.load("speech")[1][-1])
    assert speech["arrays"]["data"]["shape"] == [rows, 2, 6]
    assert speech["arrays"]["data"]["bytes"] == rows * 2 * 6 * 2 and speech["layers"] == [1, 3]
    assert info["models"] == ["tiny-bert", "tiny-ecapa", "tiny-hubert"]
    assert info["disk_bytes"] > 0 and info["raw_bytes"] > 0


def test_incomplete_store_is_refused_but_described(tmp_path, suffix):
    path = tmp_path / f"part{suffix}"
    w = CacheWriter(path, settings=SETTINGS, streams=specs(), flush_mb=0)
    feed(w, 5)
    w.flush()  # a crash here: parts only
    one_error_line(invoke("verify", str(path)), str(path), "incomplete")
    with pytest.raises(EmofuseError, match="incomplete"):
        open_cache(path)
    info = invoke("info", str(path), "--json")
    assert info.exit_code == 0 and json.loads(info.output)["complete"] is False
    assert json.loads(info.output)["utterances"] == 5
    assert "INCOMPLETE" in invoke("info", str(path)).output


def test_not_a_cache(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    one_error_line(invoke("info", str(junk)), str(junk), "not an emofuse cache")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = [1, 2, 3]
    one_error_line(invoke("verify", str(plain)), "not an emofuse cache")
    folder = tmp_path / "empty.zarr"  # "check the path" said nothing to do (round-13 row 32)
    folder.mkdir()
    one_error_line(invoke("info", str(folder)), f"{folder} is an empty folder, not a cache: "
                   "remove it (`emofuse extract` makes the store there)")  # fmt: skip
    (folder / "notes.txt").write_text("mine")
    one_error_line(invoke("info", str(folder)), "not an emofuse cache")
    one_error_line(invoke("info", str(tmp_path / "missing.zarr")), "no cache at")
    one_error_line(invoke("info", str(tmp_path / "cache.txt")), "must end in .h5")
    one_error_line(  # round-7 row 38: it said the name must end in .h5
        invoke("info", str(tmp_path / ".h5")),
        f"needs a name before its suffix, e.g. {tmp_path / 'NAME.h5'}",
    )
    lost = tmp_path / "lost.h5.parts" / "rank000-000000"  # a journal whose manifest.json is gone
    lost.mkdir(parents=True)
    one_error_line(invoke("info", str(tmp_path / "lost.h5")), "has lost its manifest.json")
    zero = tmp_path / "zero.h5"  # a copy that failed: empty, not "not an emofuse cache"
    (tmp_path / "renamed.zarr").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # round 8
    one_error_line(invoke("info", str(tmp_path / "renamed.zarr")),
                   "is a HDF5 store but named .zarr: rename it renamed.h5")  # fmt: skip
    zero.write_bytes(b"")
    one_error_line(invoke("verify", str(zero)), f"{zero} is empty (0 bytes")
    parts = tmp_path / "half.h5.parts"  # an unfinished run's folder given instead of its name
    parts.mkdir()
    (parts / "manifest.json").write_text("{}")
    one_error_line(
        invoke("info", str(parts)), f"{parts} is the unfinished work of {tmp_path / 'half.h5'}"
    )
    before = snapshot(plain)  # a writer refuses to touch it
    with pytest.raises(EmofuseError, match="not an emofuse cache"):
        CacheWriter(plain, settings=SETTINGS, streams=specs())
    assert snapshot(plain) == before


@pytest.mark.parametrize("name", ["gone.h5", "gone.zarr"])
def test_verify_of_a_path_that_does_not_exist_says_so(tmp_path, name):
    """It used to say "not an emofuse cache": nothing is there at all."""
    path = tmp_path / name
    one_error_line(invoke("verify", str(path)), f"error: {path} does not exist; check the path")
    assert "not an emofuse cache" not in invoke("verify", str(path)).output
    assert not path.exists()


def _set_meta(path, **fields) -> None:
    """Rewrite the metadata document with ``fields`` (sealed again when ``reseal`` is given)."""
    from emofuse.cache.schema import seal

    reseal = fields.pop("reseal", False)
    if path.suffix == ".h5":
        with h5py.File(path, "r+") as f:
            meta = {**json.loads(f["meta"][()].tobytes()), **fields}
            del f["meta"]
            f["meta"] = np.frombuffer(
                json.dumps(seal(meta) if reseal else meta).encode(), dtype=np.uint8
            )
    else:
        g = zarr.open_group(str(path), mode="r+")
        meta = {**g.attrs["emofuse"], **fields}
        g.attrs["emofuse"] = seal(meta) if reseal else meta


def test_a_format_version_edited_in_a_store_of_this_emofuse_is_damage(reference):
    """Row 11 of the sixth audit: an edited format version said "upgrade emofuse", which cannot
    help a store this very emofuse wrote (its seal is broken)."""
    path, _ = reference
    _set_meta(path, format_version=99)
    result = invoke("info", str(path))
    one_error_line(result, "is damaged", "changed after extraction")
    assert "upgrade" not in result.output


def test_newer_format_version(reference):
    """A store a newer emofuse wrote (its own version, its seal intact): upgrade."""
    path, _ = reference
    _set_meta(path, format_version=99, emofuse_version="99.0", reseal=True)
    one_error_line(invoke("info", str(path)), "format version 99", "upgrade emofuse")
    one_error_line(invoke("verify", str(path)), "newer")
    before = snapshot(path)
    with pytest.raises(EmofuseError, match="newer"):
        CacheWriter(path, settings=SETTINGS, streams=specs())
    assert snapshot(path) == before


def test_missing_stream(reference):
    path, _ = reference
    with open_cache(path) as c:
        with pytest.raises(EmofuseError, match="lacks stream.*phone"):
            c.require({"speech", "phone"})
        with pytest.raises(EmofuseError, match="no stream 'fbank'"):
            c.load("fbank")


@pytest.mark.parametrize("state", ["complete", "parts"])
def test_fingerprint_mismatch_on_resume_writes_nothing(tmp_path, suffix, state):
    path = tmp_path / f"fp{suffix}"
    w = CacheWriter(path, settings=SETTINGS, streams=specs(), flush_mb=0)
    feed(w, 4)
    if state == "complete":
        w.close()
        watched = path
    else:
        w.flush()
        watched = Path(str(path) + ".parts")
    before = snapshot(watched)
    with pytest.raises(
        EmofuseError, match="extracted with --dtype 'float16', this run has --dtype 'float32'"
    ) as err:  # the option that differs, by name
        CacheWriter(path, settings={**SETTINGS, "dtype": "float32"}, streams=specs())
    assert "\n" not in str(err.value) and str(watched) in str(err.value)
    assert snapshot(watched) == before
    # same fingerprint, other streams: refused too
    with pytest.raises(EmofuseError, match="stream specs"):
        CacheWriter(path, settings=SETTINGS, streams=specs()[:2])
    assert snapshot(watched) == before


@pytest.mark.subprocess
def test_a_store_another_program_holds_open_for_writing_says_so(tmp_path):
    """HDF5's file lock: a store held open with 'r+' by another program was "cannot read it as
    an HDF5 cache (Resource temporarily unavailable)", naming no cause (round-13 extract side
    row 61). The holder reports when it holds the file, and holds it until told to stop."""
    import subprocess
    import sys

    path = tmp_path / "held.h5"  # HDF5 only: a Zarr store has no file lock
    write_cache(path)
    code = "import sys, h5py\nf = h5py.File(sys.argv[1], 'r+')\nprint('held', flush=True)\nsys.stdin.read()\n"
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        one_error_line(
            invoke("info", str(path)),
            f"{path}: another program has it open for writing (HDF5's file lock",
            "close that program, or to read it meanwhile set HDF5_USE_FILE_LOCKING=FALSE",
        )
    finally:
        holder.communicate("")
    assert holder.returncode == 0
