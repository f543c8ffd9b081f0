"""Open a store by name (its suffix picks the backend, backends.py) and tell a cache from anything else."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from emofuse import __version__
from emofuse.cache.backends import BACKENDS, ArrayStore, backend_for, damaged_cache_error
from emofuse.cache.metacheck import check_structure
from emofuse.cache.schema import FORMAT, FORMAT_VERSION, parts_dir, seal_broken
from emofuse.errors import EmofuseError
from emofuse.locks import busy, live_holder


def incomplete_message(path: Path, done: int | None = None) -> str:
    """What to say about a cache whose extraction was interrupted (only its parts exist)."""
    count = f"{done} utterances done, " if done is not None else ""
    holder = live_holder(path)
    if holder is not None:  # not interrupted: a rerun would only meet the lock
        return f"{path} is incomplete ({count}{busy(holder)})"
    if damage := _damaged_part(path):  # "rerun to resume" would only meet it: say it first
        return (
            f"{path} is incomplete (extraction interrupted) and its journal has a damaged part: "
            f"{damage} the same `emofuse extract` command to resume it"
        )
    return (
        f"{path} is incomplete ({count}extraction interrupted; the finished work is in "
        f"{parts_dir(path)}); rerun the same `emofuse extract` command to resume it"
    )


def _damaged_part(path: Path) -> str | None:
    """The one line a resume would stop at for a committed part whose index.json is lost, torn
    or lacks its fields, or that lost an array file its index records (cheap: no array is
    read), or None."""
    from emofuse.cache.parts import Part, list_parts

    for part in list_parts(parts_dir(path)):
        try:
            index = Part(part).index  # reads and checks it
        except EmofuseError as err:
            return str(err)  # ends "... and rerun"
        files = index.get("files")
        lost = (
            sorted(n for n in files if not (part / n).is_file()) if isinstance(files, dict) else []
        )
        if lost:  # what the resume stops at (a cut or changed file it sets aside by itself)
            return (f"{part / lost[0]} is missing (deleted or lost); delete the folder {part} "
                    "(its utterances are extracted again) and rerun")  # fmt: skip
    return None


def missing_cache_error(path: Path, option: str | None = "--cache") -> EmofuseError:
    """The one-line error for a cache path that is not there: interrupted, or never extracted."""
    path = Path(path)
    if (parts_dir(path) / "manifest.json").is_file():
        from emofuse.cache.layout import read_parts_manifest

        try:  # a torn manifest: resuming cannot work, so "rerun to resume" would mislead
            read_parts_manifest(parts_dir(path))
        except EmofuseError as err:
            return err
        return EmofuseError(incomplete_message(path))
    if parts_dir(path).is_dir() and any(parts_dir(path).glob("rank*")):  # its manifest lost
        return EmofuseError(
            f"{path} is incomplete and its journal {parts_dir(path)} has lost its manifest.json, "
            "so the settings of its parts are unknown; delete that folder and rerun the "
            "`emofuse extract` to extract from scratch"
        )
    if path.is_symlink():  # the link is there, what it names is not
        return EmofuseError(
            f"{path} is a symbolic link whose target is missing or loops back on itself; fix "
            "the link, or check the path"
        )
    holder = live_holder(path)
    if holder is not None:  # a live extract that has not committed a part yet
        return EmofuseError(f"{path} does not exist yet: it is {busy(holder)}")
    given = f"{option} {path}" if option else str(path)
    return EmofuseError(f"{given} does not exist; check the path, or run `emofuse extract` first")


def enclosing_cache(
    path: str | os.PathLike, caches: Iterable[str | os.PathLike] = ()
) -> Path | None:
    """The cache that ``path`` would be written inside, or None.

    ``caches``: caches the command reads (``path`` must not be one of them, their ``.parts`` or
    anything in either). Beyond those, any folder above ``path`` that is a cache stored as a
    folder (e.g. a ``.zarr`` folder with ``zarr.json``) or an interrupted extraction's parts (a
    ``.parts`` folder with ``manifest.json``): writing there would add files to another cache.
    """
    try:
        target = Path(path).resolve()
    except RuntimeError:  # a symlink loop (Python 3.11): it lies in no cache, writing it fails
        return None
    for cache in caches:
        cache = Path(cache)
        for inside in (cache.resolve(), parts_dir(cache).resolve()):
            if target == inside or target.is_relative_to(inside):
                return cache
    folders = [b for b in BACKENDS.values() if b.folder]
    for folder in target.parents:
        suffix = folder.suffix.lower()
        if any(suffix in b.suffixes and b.is_store(folder) for b in folders):
            return folder
        if folder.name.endswith(".parts") and (
            (folder / "manifest.json").is_file() or _names_a_cache(folder.name[: -len(".parts")])
        ):  # a cache's journal, even one not made yet: the cache's next run owns the folder
            return folder
    return None


def _names_a_cache(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return any(suffix in b.suffixes for b in BACKENDS.values())


def check_outside_caches(
    out: str | os.PathLike,
    instead: str,
    caches: Iterable[str | os.PathLike] = (),
    option: str = "--out",
) -> None:
    """One line when ``out`` lies inside a cache (see ``enclosing_cache``); ``instead`` says what
    to give (e.g. "a run folder")."""
    cache = enclosing_cache(out, caches)
    if cache is not None:
        where = (
            f"{cache}, the extraction journal of the cache {str(cache)[: -len('.parts')]}"
            if cache.name.endswith(".parts")
            else f"the cache {cache}"
        )
        raise EmofuseError(f"{option} {out} is inside {where}; give {instead} outside it")


LAYOUT = ("table", "streams", "checksums")  # what every finished cache holds at its root
# what every command reads from a cache's metadata (cache/writer.py writes them all)
META_KEYS = ("format_version", "complete", "fingerprint", "settings", "skipped", "streams",
             "table", "n_utterances", "emofuse_version")  # fmt: skip
HEAD, TAIL = 1 << 20, 4 << 20  # where an HDF5 cache keeps its metadata: headers, then the end


def _holds_cache_layout(path: Path) -> bool:
    """Does a path that fails its backend's check still look like an emofuse cache (then it is a
    damaged one, not something else)? A folder: a Zarr group of the cache's layout. A file: the
    cache format's name in the headers at its start or the metadata written at its end."""
    if path.is_dir():
        return any((path / name / "zarr.json").is_file() for name in LAYOUT)
    if not path.is_file():
        return False
    mark = FORMAT.encode()
    with open(path, "rb") as fh:
        if mark in fh.read(HEAD):
            return True
        fh.seek(max(0, path.stat().st_size - TAIL))
        return mark in fh.read(TAIL)


def _damage_at_root(path: Path, folder: bool) -> EmofuseError:
    what = "its root zarr.json is missing or damaged" if folder else "its HDF5 signature is damaged"
    return damaged_cache_error(path, what)


def open_store(path: Path) -> tuple[ArrayStore, dict]:
    """Open an existing store read-only and return it with its metadata.

    Raises EmofuseError for anything that is not an emofuse cache or is newer than this code.
    """
    path = Path(path)
    backend = backend_for(path)
    if not path.exists():  # interrupted, or never there: not "not an emofuse cache"
        raise missing_cache_error(path, None)
    not_cache = f"{path} is not an emofuse cache (no emofuse metadata); check the path"
    if path.is_dir() and not any(path.iterdir()):  # made by hand before extracting
        raise EmofuseError(
            f"{path} is an empty folder, not a cache: remove it (`emofuse extract` makes the "
            "store there), or check the path"
        )
    if path.is_file() and path.stat().st_size == 0:  # a failed copy or write
        raise EmofuseError(f"{path} is empty (0 bytes: a copy or write that failed?); check the "
                           "path, or delete it and rerun `emofuse extract`")  # fmt: skip
    if not backend.is_store(path):
        other = next((b for b in BACKENDS.values() if b is not backend and b.is_store(path)), None)
        if other is not None:  # renamed to the other backend's suffix
            raise EmofuseError(
                f"{path} is a {other.label} store but named {path.suffix}: rename it "
                f"{path.with_suffix(other.suffixes[0]).name} (the suffix picks the backend)"
            )
        if _holds_cache_layout(path):  # a damaged cache, not something else
            raise _damage_at_root(path, path.is_dir())
        raise EmofuseError(not_cache)
    store = backend.open(path, "r")
    try:
        meta = store.read_meta()  # DamagedCacheError: headers or metadata unreadable
    except EmofuseError:
        store.close()
        raise
    if not meta or meta.get("format") != FORMAT:
        try:
            layout = any(store.has(name) for name in LAYOUT)
        finally:
            store.close()
        if layout:  # the arrays are there, the document that describes them is not
            raise damaged_cache_error(path, "its emofuse metadata is missing")
        raise EmofuseError(not_cache)
    lacking = [k for k in META_KEYS if k not in meta]
    if lacking:  # valid JSON, edited or torn: every command would fail on a missing key
        store.close()
        raise damaged_cache_error(path, f"its emofuse metadata lacks {lacking[0]!r}")
    version = meta["format_version"]  # not an int: check_structure names that below
    # written by this very emofuse yet of a newer format, and its seal broken: an edit, which
    # upgrading cannot mend (the seal check below names it)
    edited = seal_broken(meta) and meta.get("emofuse_version") == __version__
    if isinstance(version, int) and version > FORMAT_VERSION and not edited:
        store.close()
        raise EmofuseError(
            f"{path} has cache format version {meta['format_version']}, newer than this emofuse "
            f"reads ({FORMAT_VERSION}); upgrade emofuse (pip install -U emofuse)"
        )
    if seal_broken(meta):
        store.close()
        raise damaged_cache_error(
            path, "its metadata was changed after extraction (it no longer matches its checksum)"
        )
    try:
        store.check_metadata()  # DamagedCacheError: a damaged header or metadata document
        # sealed or not (an older cache): the fields' types, the stated shapes against the
        # arrays' headers, the stored streams against the metadata (no data is read)
        check_structure(store, meta)
    except EmofuseError:
        store.close()
        raise
    return store, meta
