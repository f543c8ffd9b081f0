"""verify: damage is found and named; the digest ignores backend, chunking and compression."""

from __future__ import annotations

import re
import shutil

import h5py
import numpy as np
import pytest
from cache_synth import write_cache
from click.testing import CliRunner

from emofuse.cache import open_cache, plan, verify_cache
from emofuse.cli import cli
from emofuse.errors import EmofuseError


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
    new_digest = re.search(r"digest: ([0-9a-f]{64})", bad.output).group(1)
    assert new_digest != digest


def test_digest_same_across_backends_chunking_and_compression(tmp_path, monkeypatch):
    digests = {
        "h5": write_cache(tmp_path / "a.h5"),
        "zarr": write_cache(tmp_path / "a.zarr"),
        "h5-gzip": write_cache(tmp_path / "b.h5", compression="gzip"),
        "zarr-zstd": write_cache(tmp_path / "b.zarr", compression="zstd"),
    }
    monkeypatch.setattr(plan, "CHUNK_BYTES", 64)  # many tiny chunks and read blocks
    monkeypatch.setattr(plan, "BLOCK_BYTES", 128)
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
    with open_cache(path) as c, pytest.raises(EmofuseError, match="cannot be decoded.*damaged"):
        c.load("speech", "data")
    shutil.rmtree(path / "streams/speech/data")  # the whole array gone
    with open_cache(path) as c, pytest.raises(EmofuseError, match="lacks array streams/speech"):
        c.load("speech", "data")
