"""verify: damage is found and named; the digest ignores backend, chunking and compression."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from emofuse.cache import layout, open_cache, verify_cache
from emofuse.cli import cli
from emofuse.errors import EmofuseError
from tests.cache.cache_synth import write_cache


def flip_byte_in_speech(path, layer: int, row: int) -> None:
    """Flip one byte of speech/data (layer, row) in the raw file: the store is uncompressed."""
    with open_cache(path) as c:
        rows = c.streams["speech"].rows
        d = c.streams["speech"].arrays["data"].row_shape[1]
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            file, offset = (
                path,
                f["streams/speech/data"].id.get_offset() + ((layer * rows + row) * d) * 2,
            )
    else:
        file, offset = path / "streams/speech/data/c" / str(layer) / "0" / "0", row * d * 2
    with open(file, "r+b") as fh:
        fh.seek(offset + 1)
        byte = fh.read(1)
        fh.seek(offset + 1)
        fh.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_byte_fails_verify_and_names_stream_and_utterance(reference):
    path, digest = reference
    with open_cache(path) as c:
        _, offsets = c.load("speech")
        k = int(np.nonzero(np.diff(offsets) >= 3)[0][2])  # some utterance with frames
        victim, row = c.ids[k], int(offsets[k]) + 1
    ok = CliRunner().invoke(cli, ["verify", str(path)])
    assert ok.exit_code == 0 and f"digest: {digest}" in ok.output
    flip_byte_in_speech(path, layer=1, row=row)
    bad = CliRunner().invoke(cli, ["verify", str(path)])
    assert bad.exit_code == 1
    damaged = [line for line in bad.output.splitlines() if line.startswith("damaged:")]
    assert len(damaged) == 1 and "'speech'" in damaged[0] and "1 utterance(s)" in damaged[0]
    assert victim in damaged[0]
    # no digest line for a damaged store: a script taking `digest:` would record damaged bytes'
    # digest as the content's (round-15 extract side row 35)
    assert "digest:" not in bad.output and bad.output.splitlines()[-1].startswith("verify: FAILED")


def test_every_flipped_superblock_byte_is_a_verdict_not_a_traceback(tmp_path):
    """Round-17 extract side row 22: one flipped byte of the HDF5 superblock (its end-of-file
    address) made `verify` and `info` a KeyError traceback from h5py; every byte of it now gives
    verify's FAILED or a one-line error."""
    path = tmp_path / "a.h5"
    write_cache(path)
    data = path.read_bytes()
    for i in range(128):
        flipped = bytearray(data)
        flipped[i] ^= 0xFF
        path.write_bytes(flipped)
        for command in ("verify", "info"):
            result = CliRunner().invoke(cli, [command, str(path)])
            assert result.exception is None or isinstance(result.exception, SystemExit), (
                i,
                command,
                repr(result.exception),
            )
            assert result.exit_code in (0, 1, 2) and "Traceback" not in result.output, (
                i,
                result.output,
            )


def test_a_name_that_reads_as_a_datatype_is_a_damaged_cache(tmp_path):
    """A damaged object header (round-17 extract side, found by flipping every byte of a store)
    made h5py return a named Datatype for an array: `verify` was an AttributeError traceback."""
    from emofuse.cache.hdf5 import HDF5Store

    path = tmp_path / "a.h5"
    write_cache(path)
    with h5py.File(path, "r+") as f:
        del f["streams/speech/offsets"]
        f["streams/speech/offsets"] = np.dtype("int64")  # a committed datatype in its place
    store = HDF5Store(path, "r")
    try:
        with pytest.raises(
            EmofuseError, match="streams/speech/offsets is a Datatype, not an array"
        ):
            store.read("streams/speech/offsets")
    finally:
        store.close()
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert (
        "offsets unreadable (streams/speech/offsets is a Datatype, not an array)" in result.output
    )


def test_digest_same_across_backends_chunking_and_compression(tmp_path, monkeypatch):
    digests = {
        "h5": write_cache(tmp_path / "a.h5"),
        "zarr": write_cache(tmp_path / "a.zarr"),
        "h5-gzip": write_cache(tmp_path / "b.h5", compression="gzip"),
        "zarr-zstd": write_cache(tmp_path / "b.zarr", compression="zstd"),
    }
    monkeypatch.setattr(layout, "CHUNK_BYTES", 64)  # many tiny chunks and read blocks
    monkeypatch.setattr(layout, "BLOCK_BYTES", 128)
    digests["zarr-tiny-chunks"] = write_cache(tmp_path / "c.zarr", compression="gzip")
    digests["h5-tiny-chunks"] = write_cache(tmp_path / "c.h5", compression="gzip")
    assert len(set(digests.values())) == 1, digests
    assert verify_cache(tmp_path / "c.zarr").digest == digests["h5"]
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["streams/speech/data"].chunks[1] < f["streams/speech/data"].shape[1]
    # and it is about content: other data gives another digest
    assert write_cache(tmp_path / "other.h5", seed=1) != digests["h5"]


def test_damaged_zarr_arrays_are_one_line_errors(tmp_path):
    path = tmp_path / "ref.zarr"
    write_cache(path)
    chunk = path / "streams/speech/data/c/0/0/0"
    chunk.write_bytes(b"junk")  # a garbage chunk file (uncompressed: wrong size)
    with (
        open_cache(path) as c,
        pytest.raises(
            EmofuseError, match=r"is damaged \(array .* chunk file\(s\) of the wrong size"
        ),
    ):
        c.load("speech", "data")
    shutil.rmtree(path / "streams/speech/data")  # the whole array gone
    with open_cache(path) as c, pytest.raises(EmofuseError, match="lacks array streams/speech"):
        c.load("speech", "data")


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize(
    "chunk", ["streams/speech/offsets/c/0", "streams/speech/data/c/1/0/0", "table/c/0"]
)
def test_deleted_zarr_chunk_is_found_by_reading_info_and_verify(tmp_path, chunk):
    """Zarr reads a missing chunk file as zeros without a word: reading, info and verify must
    find it (offsets → every utterance 0 frames; data → zeros; table → a JSON error)."""
    path = tmp_path / "ref.zarr"
    write_cache(path)
    (path / chunk).unlink()
    if chunk.startswith("table"):
        with pytest.raises(EmofuseError, match="lacks 1 of its 1 chunk file"):
            open_cache(path)
    else:
        with open_cache(path) as c, pytest.raises(EmofuseError, match=r"lacks 1 of its \d chunk"):
            c.load("speech", "data")
    info = _cli("info", str(path))
    assert "Traceback" not in info.output and "complete)" not in info.output, info.output
    if info.exit_code == 0:
        assert "DAMAGED" in info.output and chunk.split("/c/")[0] in info.output
    else:
        assert info.exit_code == 2 and info.output.startswith("error: ")
        assert len(info.output.strip().splitlines()) == 1
    verify = _cli("verify", str(path))
    assert verify.exit_code == 1 and "Traceback" not in verify.output, verify.output
    assert "verify: FAILED" in verify.output and "verify: ok" not in verify.output
    # the problem in the backend's words, once: no Python class name, no nested advice
    assert "Error:" not in verify.output and "re-extract it" not in verify.output, verify.output


def test_all_zero_zarr_chunks_are_written_so_only_damage_is_missing(tmp_path):
    """write_empty_chunks: a cache whose word stream is empty (no aligned utterance) still has
    every chunk file, so it is not mistaken for a damaged one."""
    import zarr

    from emofuse.cache import CacheWriter
    from tests.cache.cache_synth import SETTINGS, specs, utterance

    path = tmp_path / "unaligned.zarr"
    w = CacheWriter(path, settings=SETTINGS, streams=specs(), progress=False)
    picked = [utterance(i) for i in (1, 5, 9)]  # no word segments: word offsets all 0
    for meta, data in picked:
        w.add(meta, data)
    w.close(order=[meta["id"] for meta, _ in picked])
    group = zarr.open_group(str(path), mode="r")
    assert not group["streams/word/offsets"][:].any()
    for name, obj in group.members(max_depth=None):
        if isinstance(obj, zarr.Array):
            assert obj.nchunks_initialized == obj.nchunks, name
    with open_cache(path) as c:
        assert c.damage() == []


@pytest.mark.parametrize("cut", [1, 3000])
def test_truncated_hdf5_cache_is_one_line_everywhere(tmp_path, cut):
    """The HDF5 analogue: a cut-short file (an interrupted copy) fails to open, in one line;
    for verify that is damage (exit 1), not a wrong command (it said exit 2 "cannot open")."""
    path = tmp_path / "ref.h5"
    write_cache(path)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-cut])
    reason = f"the file is truncated: {size - cut} bytes of the {size} it was written with"
    with pytest.raises(EmofuseError, match=re.escape(f"is damaged ({reason})")):
        open_cache(path)
    for command, code, start in (("info", 2, "error: "), ("verify", 1, "verify: FAILED, ")):
        result = _cli(command, str(path))
        lines = result.output.strip().splitlines()
        assert result.exit_code == code and len(lines) == 1, result.output
        assert lines[0].startswith(f"{start}{path} is damaged ({reason});"), lines[0]
        assert "complete" not in lines[0] and "re-extract it" in lines[0]


TINY_HEAD = str(Path(__file__).parents[1] / "train" / "tiny_head.py") + ":TinyHead"


def _train(cache: Path, out: Path):
    return _cli(
        "train", "--cache", str(cache), "--split", "loso", "--head", TINY_HEAD,
        "--epochs", "1", "--folds", "1", "--quiet", "--out", str(out),
    )  # fmt: skip


def test_train_refuses_a_cache_whose_data_no_longer_match_its_checksums(tmp_path, reference):
    """A flipped byte that `verify` reports used to train silently (rc 0): the arrays training
    loads are checked against the stored per-utterance CRC-32s as they are loaded (no second
    read of the file), and a mismatch is one line naming the cache, stream and utterance."""
    path, _ = reference
    assert _train(path, tmp_path / "ok").exit_code == 0  # the intact cache trains
    with open_cache(path) as c:
        _, offsets = c.load("speech")
        k = int(np.nonzero(np.diff(offsets) >= 3)[0][1])
        victim, row = c.ids[k], int(offsets[k]) + 2
    flip_byte_in_speech(path, layer=1, row=row)
    result = _train(path, tmp_path / "bad")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert f"cache {path}: stream 'speech' of utterance {victim}" in lines[0]
    assert f"emofuse verify {path}" in lines[0] and "extract the cache again" in lines[0]
    assert not (tmp_path / "bad").exists()  # refused before the run folder is made
    # only what is loaded is checked: the damaged stored layer 1 is absolute layer 3
    with open_cache(path) as c:
        intact, _ = c.load("speech", layers=[1], mmap=True)
        c.check_loaded("speech", "data", intact, [1])
        damaged, _ = c.load("speech", layers=[3])
        with pytest.raises(EmofuseError, match=f"utterance {victim} does not match"):
            c.check_loaded("speech", "data", damaged, [3])


def test_train_refuses_a_cache_whose_utterance_table_was_changed(tmp_path, reference):
    """The table carries the labels: one changed byte would relabel an utterance silently."""
    path, _ = reference
    file = path if path.suffix == ".h5" else path / "table" / "c" / "0"
    raw = file.read_bytes()
    at = raw.index(b'"label"')
    at = raw.index(b'"ang"', at)
    file.write_bytes(raw[:at] + b'"anh"' + raw[at + 5 :])  # still valid JSON, another label
    assert _cli("verify", str(path)).exit_code == 1
    result = _train(path, tmp_path / "run")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.startswith(f"error: cache {path}: the utterance table does not match")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("stream", ["speech", "text"])
def test_a_deleted_stream_group_is_damage_in_info_and_one_line_in_train(
    tmp_path, reference, stream
):
    """A stream group deleted from the store (h5py `del f["streams/speech"]`, a removed Zarr
    folder): info said complete and train died with h5py's KeyError traceback."""
    path, _ = reference
    if path.suffix == ".h5":
        with h5py.File(path, "r+") as f:
            del f[f"streams/{stream}"]
    else:
        shutil.rmtree(path / "streams" / stream)
    info = _cli("info", str(path))
    assert info.exit_code == 0 and "Traceback" not in info.output, info.output
    assert "complete)" not in info.output and "DAMAGED" in info.output, info.output
    assert f"streams/{stream}/" in info.output
    summary = __import__("json").loads(_cli("info", str(path), "--json").output)
    assert summary["complete"] is False and summary["damaged"]
    result = _train(path, tmp_path / "run")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: cache {path} lacks array streams/{stream}/"), lines[0]
    assert f"emofuse verify {path}" in lines[0] and "extract the cache again" in lines[0]
    assert not (tmp_path / "run").exists()
    verify = _cli("verify", str(path))
    assert verify.exit_code == 1 and f"stream '{stream}'" in verify.output, verify.output
    assert "Traceback" not in verify.output and "run `emofuse verify" not in verify.output
