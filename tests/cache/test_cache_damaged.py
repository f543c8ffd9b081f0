"""Damaged stores (headers, metadata, chunk files, checksums): one line everywhere, never "complete",
and `emofuse verify` reports them as damage (exit 1)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from emofuse.cli import cli
from tests.cache.cache_synth import write_cache

TINY_HEAD = str(Path(__file__).parents[1] / "train" / "tiny_head.py") + ":TinyHead"
FIX = "re-extract it (delete it and rerun the same emofuse extract)"


def write_doc(path: Path, meta: dict) -> None:
    """Replace the metadata document itself (HDF5 ``/meta``, Zarr root ``attributes.emofuse``),
    as the audit's ed.py did: nothing else of the store changes."""
    if path.suffix == ".h5":
        with h5py.File(path, "a") as f:
            del f["meta"]
            f.create_dataset("meta", data=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    else:
        doc = json.loads((path / "zarr.json").read_text())
        doc["attributes"]["emofuse"] = meta
        (path / "zarr.json").write_text(json.dumps(doc))


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def _train(cache: Path, out: Path):
    return _cli(
        "train", "--cache", str(cache), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--folds", "1", "--quiet", "--out", str(out),
    )  # fmt: skip


def _one_line(result, code: int) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == code and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def _xor(path: Path, at: int, count: int = 64) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(at, min(at + count, len(raw))):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def _delete(path: Path, name: str) -> None:
    """Delete group or array ``name`` from a store as a user would: h5py for HDF5, rm for Zarr."""
    if path.suffix == ".h5":
        with h5py.File(path, "r+") as f:
            del f[name]
    else:
        shutil.rmtree(path / name)


def assert_damaged_everywhere(path: Path, tmp_path: Path, reason: str) -> None:
    """info and train: exit 2, one `error:` line; verify: exit 1, one `verify: FAILED` line."""
    for command in ("info", "verify"):
        line = _one_line(_cli(command, str(path)), 1 if command == "verify" else 2)
        start = "verify: FAILED, " if command == "verify" else "error: "
        assert line.startswith(f"{start}{path} is damaged ("), line
        assert re.search(reason, line) and line.endswith(FIX), line
    line = _one_line(_train(path, tmp_path / "run"), 2)
    assert line.startswith(f"error: {path} is damaged (") and line.endswith(FIX), line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "signature, reason",
    [(b"HEAP", "bad local heap signature"), (b"SNOD", "bad symbol table node signature")],
)
def test_damaged_hdf5_metadata_is_one_line_and_verify_fails(tmp_path, signature, reason):
    """64 bytes flipped in the root group's local heap or symbol table node: h5py raised
    RuntimeError ("Unable to synchronously check link existence") out of info, verify, train."""
    path = tmp_path / "ref.h5"
    write_cache(path)
    _xor(path, path.read_bytes().index(signature))
    assert_damaged_everywhere(path, tmp_path, reason)


@pytest.mark.parametrize("signature", [b"HEAP", b"SNOD", b"TREE"])
def test_damaged_hdf5_group_deep_inside_is_found_at_open(tmp_path, signature):
    """A damaged heap, symbol table or B-tree of the last group written (a checksums group that
    info and train never touch): info said complete and train ran; the headers of every group
    and array are now checked at open."""
    path = tmp_path / "ref.h5"
    write_cache(path)
    _xor(path, path.read_bytes().rindex(signature))
    assert_damaged_everywhere(path, tmp_path, "(bad|wrong) .*signature")


TRUNCATED = '{"zarr_format": 3, "node_type": "array", "shape": [\n'


@pytest.mark.parametrize(
    "document, text",
    [
        ("streams/speech/data/zarr.json", TRUNCATED),
        ("streams/speech/data/zarr.json", '{"zarr_format": 3, "node_type": "array"}'),
        ("streams/speech/zarr.json", "{"),
        ("table/zarr.json", ""),
        ("zarr.json", '{"zarr_format": 3, "node_type": "gr'),
    ],
)
def test_damaged_zarr_metadata_is_one_line_naming_the_file(tmp_path, document, text):
    """A truncated or overwritten zarr.json raised json.decoder.JSONDecodeError (or zarr's own
    errors) out of info, verify and train; now one line naming the broken metadata file."""
    path = tmp_path / "ref.zarr"
    write_cache(path)
    (path / document).write_text(text)
    name = re.escape(f"ref.zarr/{document}")
    assert_damaged_everywhere(path, tmp_path, name)


@pytest.mark.parametrize(
    "chunk, keep",
    [
        ("streams/speech/data/c/0/0/0", 0.5),  # the audit's `truncate -s 31040` of 62080
        ("streams/speech/data/c/1/0/0", 0.0),  # an empty file
        ("streams/speech/offsets/c/0", 0.75),
        ("table/c/0", 0.5),
    ],
)
def test_truncated_uncompressed_zarr_chunk_is_damage(tmp_path, chunk, keep):
    """A truncated uncompressed chunk file: info said complete (a deleted one was already
    DAMAGED); its size must be what the chunk holds."""
    path = tmp_path / "ref.zarr"
    write_cache(path)
    file = path / chunk
    file.write_bytes(file.read_bytes()[: int(file.stat().st_size * keep)])
    array = chunk.split("/c/")[0]
    info = _cli("info", str(path))
    assert "Traceback" not in info.output and "complete)" not in info.output, info.output
    if info.exit_code == 0:
        assert f"DAMAGED: array {array} has 1 chunk file(s) of the wrong size" in info.output
    else:  # the table is read at open
        line = _one_line(info, 2)
        assert f"{array} has 1 chunk file(s) of the wrong size" in line, line
    line = _one_line(_train(path, tmp_path / "run"), 2)
    assert f"array {array} has 1 chunk file(s) of the wrong size" in line, line
    assert f"({file}: " in line and "re-extract it" in line, line  # its whole path (round 15)
    verify = _cli("verify", str(path))
    assert verify.exit_code == 1 and "verify: FAILED" in verify.output, verify.output
    assert "wrong size" in verify.output and "Traceback" not in verify.output


def _invert_signature(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(bytes(b ^ 0xFF for b in raw[:8]) + raw[8:])


def _drop_root_metadata(path: Path) -> None:
    (path / "zarr.json").unlink()


def _truncate_h5(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _drop_emofuse_metadata(path: Path) -> None:
    if path.suffix == ".h5":
        with h5py.File(path, "r+") as f:
            del f["meta"]
    else:
        doc = json.loads((path / "zarr.json").read_text())
        del doc["attributes"]["emofuse"]
        (path / "zarr.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "suffix, damage, reason",
    [
        (".h5", _truncate_h5, "the file is truncated: "),
        (".h5", _invert_signature, "its HDF5 signature is damaged"),
        (".zarr", _drop_root_metadata, "its root zarr.json is missing"),
        (".h5", _drop_emofuse_metadata, "its emofuse metadata is missing"),
        (".zarr", _drop_emofuse_metadata, "its emofuse metadata is missing"),
    ],
)
def test_a_cache_damaged_at_its_root_is_damage_not_another_file(tmp_path, suffix, damage, reason):
    """verify said exit 2 "cannot open as an HDF5 cache" or "is not an emofuse cache (no emofuse
    metadata); check the path" for a cache whose header or root metadata was damaged."""
    path = tmp_path / f"ref{suffix}"
    write_cache(path)
    damage(path)
    assert_damaged_everywhere(path, tmp_path, reason)


def _unrelated_hdf5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)


@pytest.mark.parametrize(
    "name, make",
    [
        ("notes.h5", lambda p: p.write_text("hello\n")),
        ("other.h5", _unrelated_hdf5),
        ("empty.zarr", lambda p: p.mkdir()),
        ("folder.zarr", lambda p: (p.mkdir(), (p / "streams").mkdir())),
    ],
)
def test_something_else_is_still_not_an_emofuse_cache(tmp_path, name, make):
    path = tmp_path / name
    make(path)
    said = (
        f"error: {path} is an empty folder, not a cache: remove it (`emofuse extract` makes the "
        "store there), or check the path"
        if name == "empty.zarr"  # what to do with it (round-13 extract side row 32)
        else f"error: {path} is not an emofuse cache (no emofuse metadata); check the path"
    )
    for command in ("info", "verify"):
        assert _one_line(_cli(command, str(path)), 2) == said


def test_deleted_checksums_are_one_line_in_verify(tmp_path, reference):
    """`del f['checksums']`: verify printed one "damaged:" line per array, each saying to run
    `emofuse verify` to list the damage (circular); now one line: it cannot be verified."""
    path, _ = reference
    _delete(path, "checksums")
    line = _one_line(_cli("verify", str(path)), 1)
    assert line == (
        f"verify: FAILED, {path} is damaged (its checksums are missing, deleted after "
        f"extraction, so it cannot be verified); {FIX}"
    )
    info = _cli("info", str(path))
    assert info.exit_code == 0 and "complete)" not in info.output, info.output
    assert "DAMAGED: its checksums are missing" in info.output.splitlines()[0]


def test_one_deleted_checksum_array_is_not_circular(tmp_path, reference):
    path, _ = reference
    _delete(path, "checksums/speech/data")
    verify = _cli("verify", str(path))
    assert verify.exit_code == 1 and "run `emofuse verify" not in verify.output, verify.output
    assert "damaged: stream 'speech' array 'data': stored checksums missing" in verify.output


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_metadata_counting_other_utterances_than_the_table_is_damage(tmp_path, suffix):
    """An edited n_utterances (valid JSON) was a numpy broadcast traceback in verify, and info
    called the store complete (found by the re-audit)."""
    from emofuse.cache.backends import backend_for

    path = tmp_path / f"c{suffix}"
    write_cache(path, n=8)
    store = backend_for(path).open(path, "a")
    meta = store.read_meta()
    store.write_meta({**meta, "n_utterances": 7})  # the seal still the old one: an edit
    store.close()
    assert_damaged_everywhere(path, tmp_path, r"its metadata was changed after extraction")
    store = backend_for(path).open(path, "a")  # as an older, unsealed cache: still one line
    store.write_meta({k: v for k, v in meta.items() if k != "meta_sha256"} | {"n_utterances": 7})
    store.close()
    assert_damaged_everywhere(
        path, tmp_path, r"its metadata counts 7 utterances, its table holds 8"
    )


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_verify_of_a_deleted_table_does_not_advise_running_verify(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    write_cache(path, n=8)
    _delete(path, "table")
    result = _cli("verify", str(path))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "damaged: table: unreadable" in result.output and "lacks array table" in result.output
    assert "run `emofuse verify" not in result.output, result.output  # it is what is running


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_metadata_without_a_key_every_command_reads_is_damage(tmp_path, suffix):
    """Bytes flipped inside the key 'fingerprint' (still valid JSON) were a KeyError traceback
    in info, verify and train, and 'different settings (fingerprint None …)' in extract."""
    from emofuse.cache.backends import backend_for

    path = tmp_path / f"c{suffix}"
    write_cache(path, n=8)
    store = backend_for(path).open(path, "r")
    meta = store.read_meta()
    store.close()
    meta["fingerprinu"] = meta.pop("fingerprint")
    write_doc(path, meta)  # the metadata document itself, as flipped bytes leave it
    assert_damaged_everywhere(path, tmp_path, r"its emofuse metadata lacks 'fingerprint'")


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
def test_a_damaged_utterance_table_is_one_line_in_info_and_train(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    write_cache(path, n=8)
    from emofuse.cache.backends import backend_for

    store = backend_for(path).open(path, "a")
    raw = store.read("table", (slice(None),)).copy()
    raw[2:6] = np.frombuffer(b"\xff\xfe{]", np.uint8)  # not UTF-8 JSON any more
    store.write("table", slice(None), raw)
    store.close()
    for command in ("info",):
        line = _one_line(_cli(command, str(path)), 2)
        assert "is damaged (its utterance table is damaged)" in line, line
    line = _one_line(_train(path, tmp_path / "run"), 2)
    assert "is damaged (its utterance table is damaged)" in line
    result = _cli("verify", str(path))
    assert result.exit_code == 1 and "table: checksum mismatch" in result.output


def test_zarr_files_zarr_does_not_know_are_neither_warnings_nor_damage(tmp_path):
    path = tmp_path / "c.zarr"
    write_cache(path, n=8)
    (path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    chunks = path / "streams" / "speech" / "data" / "c"
    (chunks / "9").mkdir(exist_ok=True)
    (chunks / "9" / "stray").write_bytes(b"xx")  # outside the chunk grid: not data
    import subprocess
    import sys

    info = subprocess.run([sys.executable, "-m", "emofuse", "info", str(path)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert info.returncode == 0 and "complete" in info.stdout, info.stderr
    assert info.stderr == "", info.stderr  # zarr's two-line ZarrUserWarning per unknown file
    verify = _cli("verify", str(path))
    assert verify.exit_code == 0 and "verify: ok" in verify.output, verify.output


@pytest.mark.parametrize("suffix", [".h5", ".zarr"])
@pytest.mark.parametrize("edit", ["rows", "layers", "skipped", "stream", "complete"])
def test_metadata_edited_into_other_valid_json_is_damage(tmp_path, suffix, edit):
    """A row count, a layer list, the skipped list or a stream entry edited, or 'complete'
    flipped: verify said ok, info showed the edit or a traceback (the third audit round)."""
    from emofuse.cache.backends import backend_for

    path = tmp_path / f"c{suffix}"
    write_cache(path, n=8)
    store = backend_for(path).open(path, "a")
    meta = store.read_meta()
    speech = meta["streams"]["speech"]
    if edit == "rows":
        speech["arrays"]["data"]["rows"] -= 1
    elif edit == "layers":
        speech["attrs"]["layers"] = "1,3"
    elif edit == "skipped":
        meta["skipped"] = "u9"
    elif edit == "stream":
        del meta["streams"]["word"]
    else:
        meta["complete"] = False
    store.write_meta(meta)  # keeps the seal written at extraction
    store.close()
    assert_damaged_everywhere(path, tmp_path, r"its metadata was changed after extraction")


def test_an_unsealed_store_marked_incomplete_says_to_re_extract(tmp_path):
    """An older (unsealed) consolidated store with 'complete' false: train advised 'pass
    allow_incomplete', a Python parameter, and a rerun of extract left it incomplete."""
    from emofuse.cache.backends import backend_for

    path = tmp_path / "c.h5"
    write_cache(path, n=8)
    store = backend_for(path).open(path, "a")
    meta = store.read_meta()
    store.write_meta({k: v for k, v in meta.items() if k != "meta_sha256"} | {"complete": False})
    store.close()
    reason = (
        "metadata field complete is false, but a store is only ever put at its own path "
        "complete (the metadata was edited)"
    )  # verify said ok and a rerun of extract "resumed" it, leaving it incomplete (round 6)
    text = f"{path} is damaged ({reason}); {FIX}"
    assert _one_line(_train(path, tmp_path / "run"), 2) == f"error: {text}"
    assert _one_line(_cli("verify", str(path)), 1) == f"verify: FAILED, {text}"
    assert _one_line(_cli("info", str(path)), 2) == f"error: {text}"


def test_a_zarr_chunk_the_user_may_not_read_is_named_with_its_fix(unprivileged):
    """A chunk at mode 000: verify listed "unreadable (EmofuseError: …: cannot read it as a Zarr
    cache (Permission denied))", naming neither the file nor the fix (round-15 extract row 64)."""
    from tests.users import give_to_user

    base, as_user = unprivileged
    path = base / "perm.zarr"
    write_cache(path)
    chunk = path / "streams" / "speech" / "data" / "c" / "1" / "0" / "0"
    give_to_user(path)
    chunk.chmod(0)
    with as_user():
        verify = _cli("verify", str(path))
    assert verify.exit_code == 1 and "Traceback" not in verify.output, verify.output
    assert "EmofuseError" not in verify.output, verify.output
    assert (
        f"unreadable ({chunk} cannot be read (Permission denied); make it readable (`chmod u+r` "
        "it, or ask its owner), then rerun the same command)"
    ) in verify.output, verify.output


def test_a_zarr_array_folder_the_user_may_not_enter_names_the_folder(unprivileged):
    """Round-17 extract side row 21: an array folder at mode 000 was "…/data/zarr.json cannot be
    read; make it readable (`chmod u+r` it)" — the file is readable, the folder is not."""
    from tests.users import give_to_user

    base, as_user = unprivileged
    path = base / "perm.zarr"
    write_cache(path)
    folder = path / "streams" / "speech" / "data"
    give_to_user(path)
    folder.chmod(0)
    try:
        with as_user():
            info = _cli("info", str(path))
    finally:
        folder.chmod(0o755)
    line = _one_line(info, 2)
    assert line.startswith("error: ") and f"the folder {folder} cannot be entered; make it " in line
    assert line.endswith(
        f"accessible (`chmod u+rwx {folder}`, or ask its owner), then rerun the same command"
    ), line
    assert "chmod u+r`" not in line, line


@pytest.mark.parametrize("node", ["table", "streams/speech/data", "checksums/speech/data"])
def test_a_zarr_metadata_file_the_user_may_not_read_gets_chmod_not_re_extract(unprivileged, node):
    """Round-18 extract side row 50: an array's zarr.json at mode 000 was "damaged … re-extract it
    (delete it …)", where `chmod u+r` alone restores the store."""
    from tests.users import give_to_user

    base, as_user = unprivileged
    path = base / "perm.zarr"
    write_cache(path)
    meta = path / node / "zarr.json"
    give_to_user(path)
    meta.chmod(0)
    with as_user():
        info = _cli("info", str(path))
    line = _one_line(info, 2)
    assert line == (
        f"error: {meta} cannot be read (Permission denied); make it readable (`chmod u+r` it, or "
        "ask its owner), then rerun the same command"
    ), line
    meta.chmod(0o644)
    with as_user():
        assert _cli("verify", str(path)).exit_code == 0
