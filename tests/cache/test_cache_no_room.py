"""A disk that fills while the consolidated HDF5 store is written (fifth audit round, rows 51-52).

HDF5 reports a failed write from its C library as ``RuntimeError`` ("file write failed … errno =
28"), and one that fails while the file is closed (its metadata cache is flushed then) only on
stderr: the store was renamed into place, called complete with its digest, and its parts deleted,
though its headers were damaged. Both are one line now, and the parts are kept for the rerun.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import h5py
import pytest

from emofuse.cache import CacheWriter, open_cache
from emofuse.cache.hdf5 import HDF5Store
from emofuse.errors import EmofuseError
from tests.cache.cache_synth import N_UTTS, SETTINGS, feed, order, specs

consolidate = importlib.import_module("emofuse.cache.consolidate")


def _parts(path: Path) -> None:
    """Every utterance committed to parts, nothing consolidated."""
    writer = CacheWriter(path, settings=SETTINGS, streams=specs(), flush_mb=0)
    feed(writer, N_UTTS)
    writer.flush()


def _close(path: Path) -> str:
    return CacheWriter(path, settings=SETTINGS, streams=specs()).close(order=order(N_UTTS))


def _refused(path: Path, match: str) -> None:
    with pytest.raises(EmofuseError, match=match) as err:
        _close(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"cannot write {path}"), message
    assert f"the parts in {path}.parts are kept" in message
    assert not path.exists() and not list(path.parent.glob(f".{path.name}.tmp-*"))
    assert (Path(f"{path}.parts") / "manifest.json").is_file()


def _reference_and_parts(tmp_path: Path, name: str) -> tuple[Path, str]:
    """The reference digest of a whole close, and a store ``name`` of the same parts unclosed."""
    ref = tmp_path / "ref.h5"
    _parts(ref)
    path = tmp_path / name
    _parts(path)
    return path, _close(ref)


def test_an_hdf5_write_error_at_flush_is_a_full_disk_line(tmp_path, monkeypatch):
    path, ref_digest = _reference_and_parts(tmp_path, "full.h5")

    def full(self):
        raise RuntimeError(
            "Unable to synchronously flush file (file write failed: time = Fri Dec  4 21:47:15 "
            "2026\n, filename = 'x', file descriptor = 3, errno = 28, error message = 'No space "
            "left on device', buf = 0x1, total write size = 4050)"
        )

    monkeypatch.setattr(h5py.File, "flush", full)
    _refused(path, r"\(No space left on device\): free disk space")
    monkeypatch.undo()
    assert _close(path) == ref_digest


def test_a_store_damaged_as_it_is_closed_never_gets_its_name(tmp_path, monkeypatch):
    path, ref_digest = _reference_and_parts(tmp_path, "lost.h5")
    real_close = HDF5Store.close

    def lossy_close(self):  # what a close whose metadata flush hit a full disk leaves
        real_close(self)
        if self.path.name.startswith(".lost.h5.tmp-"):
            with open(self.path, "r+b") as fh:
                fh.write(bytes(4096))

    monkeypatch.setattr(HDF5Store, "close", lossy_close)
    _refused(path, "reads back damaged after it was closed")
    monkeypatch.undo()
    assert _close(path) == ref_digest
    assert open_cache(path).meta["digest"] == ref_digest


def test_the_space_a_store_needs_covers_what_it_takes(tmp_path, suffix):
    """The room checked before writing is an upper bound of the store's real size (else the
    check would let a disk fill midway), and not a wild one (else a disk with room is refused)."""
    from emofuse.cache.layout import StoreLayout

    path = tmp_path / f"sized{suffix}"
    _parts(path)
    plan = StoreLayout(Path(f"{path}.parts"), order(N_UTTS))
    need = consolidate.room_needed(plan)
    _close(path)
    size = (
        path.stat().st_size
        if path.is_file()
        else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    )
    assert size <= need <= size + (2 << 20), (size, need)
