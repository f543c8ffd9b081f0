"""Consolidation: every committed part → the final store, in the canonical order.

Written under a temporary name, verified, fsynced, then renamed, so the final store only ever appears
complete; its content (and digest) does not depend on how the work was split into parts, ranks or
resumed runs. A full disk or a read-only folder ends in one line and keeps the parts for a rerun.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from emofuse import faults
from emofuse.cache.backends import backend_of, make_store
from emofuse.cache.layout import StoreLayout, chunk_shape, stored_name, stored_shape
from emofuse.cache.parts import MANIFEST, fsync_path, fsync_tree, part_damage
from emofuse.cache.schema import RAGGED, little_endian, parts_dir, seal
from emofuse.cache.verify import verify_store
from emofuse.errors import EmofuseError, os_reason, write_fix
from emofuse.progress import progress_bar


def consolidate(
    path: str | Path,
    order: list[str] | None = None,
    compression: str | None = None,
    progress: bool = True,
) -> str:
    """Build the final store from all committed parts; returns the verified content digest."""
    path = Path(path)
    kind = backend_of(path)
    folder = parts_dir(path)
    if path.exists():
        raise EmofuseError(f"{path} already exists; remove it or choose another output name")
    if not (folder / MANIFEST).is_file():
        raise EmofuseError(f"{folder}: no parts to consolidate; run the extraction first")
    plan = StoreLayout(folder, order)
    _check_parts(plan)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a consolidation killed midway
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if compression is None:  # its size is known: refuse a store that cannot fit before writing
        _check_room(plan, kind, path, folder)
    try:
        digest = _write_store(plan, kind, path, tmp, compression, progress)
    except EmofuseError:  # a part found damaged during the copy: no half-written store is left
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    except OSError as err:  # disk full, read-only, quota: never leave a half-written store behind
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise EmofuseError(
            f"cannot write {path} ({os_reason(err)}): "
            + write_fix(err, f"free disk space (the store needs up to {_megabytes(plan)} MB)")
            + _rerun(folder)
        ) from err
    os.replace(tmp, path)
    fsync_path(path.parent)
    try:  # only after the complete store is durable under its final name
        faults.reach("consolidate-renamed")  # (an injected OSError here: the removal failing)
        shutil.rmtree(folder)
    except OSError as err:  # the store is whole: a leftover journal is worth a note, no more
        print(
            f"note: {path} is complete, but its parts folder {folder} could not be removed "
            f"({os_reason(err)}); delete it by hand (the next run of extract also tries)",
            file=sys.stderr,
            flush=True,
        )
    return digest


def _check_parts(plan: StoreLayout) -> None:
    """Every part's files against the sizes and CRC-32s recorded at commit, before anything is
    written: the final checksums are computed from the parts, so they would bless a damaged one.
    A part that recorded each utterance's CRC-32s gets its sizes and index checked here and every
    byte checked as it is copied (one read of the parts instead of two)."""
    keys = [
        f"{name}.{aname}"
        for name, spec in plan.specs.items()
        for aname, aspec in spec.arrays.items()
        if not aspec.is_str
    ]
    for part in plan.parts:
        missing = [k for k in keys if not (part.path / f"{k}.npy").is_file()]
        if missing:
            raise EmofuseError(
                f"{part.path / missing[0]}.npy is missing (deleted or lost); delete the folder "
                f"{part.path} (its utterances are extracted again) and rerun"
            )
        # parts that recorded their rows' CRC-32s are checked piece by piece during the copy
        problem = part_damage(
            part.path, part.index, keys, read=not plan.row_crcs_recorded(part, keys)
        )
        if problem is not None:
            raise EmofuseError(
                f"{part.path} is damaged ({problem}); rerun the same `emofuse extract` command: "
                f"it sets the part aside and encodes its {len(part.ids)} utterance(s) again"
            )


def _write_store(
    plan: StoreLayout, kind: str, path: Path, tmp: Path, compression: str | None, progress: bool
) -> str:
    """Write, verify and fsync the consolidated store under its temporary name; its digest."""
    faults.reach("consolidate-open", tmp)
    store = make_store(kind, tmp, "w")
    try:
        return _fill_store(store, plan, path, tmp, compression, progress)
    except BaseException:
        with contextlib.suppress(Exception):
            store.close()
        raise


def _fill_store(
    store, plan: StoreLayout, path: Path, tmp: Path, compression, progress: bool
) -> str:
    folder = parts_dir(path)
    meta = plan.meta(complete=False, compression=compression)
    total = sum(m["nbytes"] for s in meta["streams"].values() for m in s["arrays"].values())
    bar = progress_bar(
        total=total,
        unit="B",
        unit_scale=True,
        desc=f"consolidate {path.name}",
        enabled=progress,
    )
    with ThreadPoolExecutor(1, thread_name_prefix="hash") as hasher:
        for name, spec in plan.specs.items():
            smeta = meta["streams"][name]
            if spec.kind == RAGGED:
                off = plan.offsets[name]
                store.create(
                    stored_name(name, "offsets"),
                    off.shape,
                    "int64",
                    (max(1, min(len(off), 1 << 20)),),
                    compression,
                )
                store.write(stored_name(name, "offsets"), (slice(None),), off)
                smeta["offsets_sha256"] = _sha(off)
            for aname, aspec in spec.arrays.items():
                faults.reach("consolidate-write")
                if aspec.is_str:
                    data, soff, crc = plan.strings(name, aname)
                    for suffix, arr in (("utf8", data), ("offsets", soff)):
                        target = stored_name(name, f"{aname}.{suffix}")
                        store.create(
                            target,
                            arr.shape,
                            arr.dtype.name,
                            (max(1, min(len(arr), 1 << 22)),),
                            compression,
                        )
                        store.write(target, (slice(None),), arr)
                    smeta["arrays"][aname]["nbytes"] = int(data.nbytes)
                    smeta["arrays"][aname]["sha256"] = _sha(
                        little_endian(data).tobytes() + little_endian(soff).tobytes()
                    )
                else:
                    crc, smeta["arrays"][aname]["sha256"] = _copy_array(
                        store, plan, name, aname, compression, bar, hasher
                    )
                store.create(
                    f"checksums/{name}/{aname}", crc.shape, "uint32", _chunks(crc.shape), None
                )
                store.write(f"checksums/{name}/{aname}", (slice(None),) * crc.ndim, crc)
    bar.close()
    plan.release()
    table = np.frombuffer(plan.table_json(), dtype=np.uint8)
    store.create("table", table.shape, "uint8", (max(1, len(table)),), compression)
    store.write("table", (slice(None),), table)
    meta["table"]["sha256"] = _sha(table)
    store.write_meta(seal(meta))
    store.flush()
    faults.reach("consolidate-written")
    # every byte read back against the CRC-32s; the SHA-256s are those of the blocks written
    result = verify_store(store, meta, progress=progress, recorded_sha=True)
    if not result.ok:
        store.close()
        raise EmofuseError(
            f"{tmp}: consolidated store failed verification ({result.problems[0]}); parts kept in {folder}"
        )
    meta["complete"] = True
    meta["digest"] = result.digest  # for `info` and re-runs; verify recomputes it from the data
    store.write_meta(seal(meta))
    store.flush()  # a disk that fills now raises here, not in a destructor (HDF5)
    store.close()
    if tmp.is_dir():
        fsync_tree(tmp)
    else:
        fsync_path(tmp)
    _check_closed(tmp, store.kind, result.digest, path)
    return result.digest


def _check_closed(tmp: Path, kind: str, digest: str, path: Path) -> None:
    """The closed store's metadata read back before it gets its final name: a write that fails
    while HDF5 closes the file (its metadata cache is flushed then) reaches only stderr, and the
    store would otherwise be called complete, and its parts deleted, with damaged headers."""
    try:
        store = make_store(kind, tmp, "r")
        try:
            store.check_metadata()
            meta = store.read_meta() or {}
        finally:
            store.close()
    except (EmofuseError, OSError):
        meta = {}
    if not (meta.get("complete") and meta.get("digest") == digest):
        raise EmofuseError(
            f"cannot write {path}: it reads back damaged after it was closed (a disk that filled "
            "as it was written?); free disk space" + _rerun(parts_dir(path))
        )


def _copy_array(store, plan: StoreLayout, name: str, aname: str, compression, bar, hasher):
    """One numeric array, parts → store in blocks: its per-utterance CRC-32s and SHA-256 (each
    block hashed on ``hasher``'s thread while the next one is gathered and written)."""
    aspec = plan.specs[name].arrays[aname]
    rows, n = plan.rows(name), len(plan.ids)
    target = stored_name(name, aname)
    store.create(
        target, stored_shape(aspec, rows), aspec.dtype, chunk_shape(aspec, rows), compression
    )
    crc = np.zeros((aspec.row_shape[0], n) if aspec.layered else (n,), np.uint32)
    sha = hashlib.sha256()
    hashed = None  # the previous block's hash (hashlib releases the GIL on large buffers)
    for idx, block in plan.blocks(name, aname, crc):
        if hashed is not None:
            hashed.result()
        hashed = hasher.submit(sha.update, little_endian(block))
        store.write(target, idx, block)
        bar.update(block.nbytes)
    if hashed is not None:
        hashed.result()
    return crc, sha.hexdigest()


def _nbytes(plan: StoreLayout) -> int:
    meta = plan.meta(complete=False, compression=None)
    return sum(m["nbytes"] for st in meta["streams"].values() for m in st["arrays"].values())


def _megabytes(plan: StoreLayout) -> str:
    """The room the store needs, as the check before writing states it (one figure everywhere)."""
    return f"{room_needed(plan) / 1e6:.1f}"


def _rerun(folder: Path) -> str:
    """How every refused consolidation goes on: the journal stays, the same command redoes it."""
    return f" and rerun the same command: the parts in {folder} are kept and are consolidated again"


def room_needed(plan: StoreLayout) -> int:
    """Bytes the uncompressed store takes at most: its arrays, and headroom for the headers,
    checksums, offsets and the table (about 1 KB an utterance)."""
    return int(_nbytes(plan) * 1.02) + (256 << 10) + 1024 * len(plan.ids)


def _check_room(plan: StoreLayout, kind: str, path: Path, folder: Path) -> None:
    """One line before anything is written when the store cannot fit: the disk's free space, and
    for HDF5 (one file) the process's file-size limit (`ulimit -f`). HDF5 running out of room
    midway fails inside its C library (tracebacks from h5py's deallocators, then a crash)."""
    need = room_needed(plan)
    keep = _rerun(folder)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise EmofuseError(
            f"cannot write {path}: its file system has {free / 1e6:.1f} MB free and the store "
            f"needs up to {_megabytes(plan)} MB; free disk space" + keep
        )
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if kind == "hdf5" and limit != resource.RLIM_INFINITY and limit < need:
        raise EmofuseError(
            f"cannot write {path}: this shell's `ulimit -f` limits one file to {limit / 1e6:.1f} "
            f"MB and the store needs up to {_megabytes(plan)} MB; raise the limit (`ulimit -f unlimited`)"
            + keep
        )


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(max(1, int(s)) for s in shape)


def _sha(data: bytes | np.ndarray) -> str:
    raw = little_endian(data).tobytes() if isinstance(data, np.ndarray) else data
    return hashlib.sha256(raw).hexdigest()
