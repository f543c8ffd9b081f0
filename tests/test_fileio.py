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
