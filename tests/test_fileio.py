"""Atomic writes: a failed write leaves no temporary file and is an OSError naming the file."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from emofuse.fileio import atomic_open


def test_a_full_disk_under_torch_save_is_an_oserror_naming_the_file(tmp_path: Path) -> None:
    """Round-7 audit: a real ENOSPC inside torch.save came out of torch as `RuntimeError:
    [enforce fail at inline_container.cc] unexpected pos …` (the OSError only chained to it), so
    train printed a traceback and left checkpoint.pt.tmp. The temporary file here is a link to
    /dev/full: every write meets a real ENOSPC."""
    target = tmp_path / "checkpoint.pt"
    (tmp_path / "checkpoint.pt.tmp").symlink_to("/dev/full")
    with pytest.raises(OSError) as err:
        with atomic_open(target, "wb") as fh:
            torch.save({"w": torch.zeros(100_000)}, fh)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    assert not (tmp_path / "checkpoint.pt.tmp").exists() and not target.exists()


def test_an_error_of_the_writer_itself_is_not_disguised(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not a write error"):
        with atomic_open(tmp_path / "x.bin", "wb"):
            raise RuntimeError("not a write error")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_that_is_out_of_inodes_says_so(tmp_path, monkeypatch):
    """Round-11 row 110: with 20 MB free but no inodes left (a Zarr store is many files) the line
    said only "free disk space (the store needs about 1 MB)"."""
    import errno
    import os
    from types import SimpleNamespace

    from emofuse.errors import write_fix

    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.zarr" / "c" / "0"))
    assert write_fix(err, "free disk space") == "free disk space"  # a disk with inodes to spare
    few = SimpleNamespace(f_files=4096, f_favail=7)
    monkeypatch.setattr(os, "statvfs", lambda path: few)
    assert write_fix(err, "free disk space") == (
        "free disk space — its file system has room for only 7 more files (`df -i`; a Zarr store "
        "is many files), so free some files there or write to another file system"
    )


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ValueError])
def test_a_write_stopped_midway_leaves_no_temporary_and_the_old_file(tmp_path: Path, stop) -> None:
    """`report` stopped by SIGTERM (a KeyboardInterrupt here) while saving a plot left a 0-byte
    confusion.png.tmp beside the old one (round-14 train side row 51)."""
    path = tmp_path / "confusion.png"
    path.write_bytes(b"old")
    with pytest.raises(stop), atomic_open(path, "wb") as fh:
        fh.write(b"half")
        raise stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png"]
    assert path.read_bytes() == b"old"
