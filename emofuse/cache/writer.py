"""The crash-safe, resumable cache writer.

Extraction is hours of GPU time, so the writer never holds the only copy of finished work for long:
``add()`` buffers utterances and commits them as an atomic *part* (see parts.py) every ``flush_mb``
MiB or ``flush_s`` seconds (``flush_mb=0``: every add). A SIGKILL or power loss loses at most the
uncommitted buffer. Reopening with the same fingerprint resumes: ``done_ids()`` lists what is stored
(or skipped) by every rank. ``close(order)`` consolidates all parts into ``NAME.h5``/``NAME.zarr``
(consolidate.py).

Sharded extraction (torchrun): every rank opens ``CacheWriter(..., rank=r, world_size=w)`` and
writes its own parts; each rank calls ``flush()`` (or ``close()``, which on rank != 0 only
flushes); after a barrier rank 0 calls ``close(order=ids)`` and consolidates every rank's parts.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from emofuse import __version__
from emofuse.cache.backends import backend_of
from emofuse.cache.consolidate import consolidate
from emofuse.cache.parts import (
    MANIFEST,
    check_journal_place,
    commit_part,
    is_journal,
    list_parts,
    part_damage,
    part_name,
    read_journal_json,
    remove_stale_temps,
    row_crcs,
    set_aside,
    to_numpy,
    write_json_atomically,
)
from emofuse.cache.resumed import OptionsDiffer, options_differ
from emofuse.cache.schema import (
    FORMAT_VERSION,
    RAGGED,
    StreamSpec,
    canonical_json,
    first_difference,
    jsonable,
    little_endian,
    normalise_specs,
    parts_dir,
    settings_fingerprint,
    without_configs,
)
from emofuse.cache.store import open_store
from emofuse.cache.verify import verify_store
from emofuse.errors import RERUN, EmofuseError, cannot_write


class CacheWriter:
    """Write utterances into a cache; see the module docstring for the crash/resume contract."""

    def __init__(
        self,
        path: str | Path,
        settings: dict[str, Any] | None = None,
        streams: Any = None,
        rank: int = 0,
        world_size: int = 1,
        compression: str | None = None,
        flush_mb: float = 64.0,
        flush_s: float = 10.0,
        progress: bool = True,
    ) -> None:
        self.path = Path(path)
        self.progress = progress  # bars for the consolidation and its verification
        self.kind = backend_of(self.path)
        self.settings = jsonable(settings or {})
        self.fingerprint = settings_fingerprint(self.settings)
        self.specs = normalise_specs(streams)
        if not 0 <= rank < world_size:
            raise EmofuseError(f"CacheWriter: rank {rank} is outside world_size {world_size}")
        if compression not in (None, "gzip", "zstd"):
            raise EmofuseError(f"unknown compression {compression!r}: use none, gzip or zstd")
        self.rank, self.world_size, self.compression = rank, world_size, compression
        self.flush_bytes, self.flush_s = int(flush_mb * (1 << 20)), flush_s
        self.folder = parts_dir(self.path)
        self._buffer: list[tuple[dict, dict[str, dict[str, np.ndarray]]]] = []
        self._skips: list[dict] = []
        self._buffered_bytes = 0
        self._last_flush = time.monotonic()
        self._ids: set[str] = set()
        self._rows: dict[str, dict[str, Any]] = {}
        self._indexes: dict[str, dict] = {}  # committed parts already checked
        self._skipped: dict[str, tuple[str, Path]] = {}  # id -> (reason, where it is recorded)
        # parts found damaged on opening (size or CRC-32 against what was recorded at commit) and
        # set aside: their utterances are no longer done, so they are encoded again. One
        # (part, problem, utterances) each, for the caller to report.
        self.dropped: list[tuple[Path, str, int]] = []
        self._complete = False
        self._closed = False
        if self.path.exists():
            self._open_complete()
        else:
            self._open_parts()

    # --- opening: every check happens before anything is written -----------------------------
    def _open_complete(self) -> None:
        store, meta = open_store(self.path)  # EmofuseError: not a cache / newer format
        try:
            try:
                self._check_fingerprint(meta, str(self.path))
            except OptionsDiffer:  # the user's options, or its recorded settings edited?
                self._check_intact(store, meta)
                raise
            # a finished store is only "already there" if it still is: every checksum re-read
            # (deleted datasets, flipped bytes, lost Zarr chunks), as `emofuse verify` does
            result = self._check_intact(store, meta)
            table = json.loads(little_endian(store.read("table", (slice(None),))).tobytes())
        finally:
            store.close()
        self._ids = set(table["id"]) | {s["id"] for s in meta["skipped"]}
        self._skipped = {s["id"]: (str(s.get("reason", "")), self.path) for s in meta["skipped"]}
        columns = list(table)
        self._rows = {uid: {c: table[c][i] for c in columns} for i, uid in enumerate(table["id"])}
        self._digest = result.digest
        self._complete = True
        if self.rank == 0 and is_journal(self.folder):  # killed between the rename and cleanup
            shutil.rmtree(self.folder, ignore_errors=True)  # consolidate noted it if it could not

    def _check_intact(self, store, meta: dict):
        """Every checksum and the content digest (which covers the recorded settings) re-read;
        damage is one line telling to re-extract."""
        result = verify_store(store, meta, progress=self.progress)
        if not result.ok:
            more = len(result.problems) - 1
            raise EmofuseError(
                f"{self.path} is damaged ({result.problems[0]}"
                + (f"; and {more} more problem(s)" if more else "")
                + "): delete it and rerun to re-extract"
            )
        return result

    def _open_parts(self) -> None:
        manifest_file = self.folder / MANIFEST
        restart = f"delete {self.folder} and rerun to extract from scratch"
        check_journal_place(self.folder, self.path)
        if manifest_file.is_file():
            manifest = read_journal_json(manifest_file, restart)
            self._check_fingerprint(manifest, str(self.folder))
        elif committed := list_parts(self.folder):
            raise EmofuseError(
                f"{self.folder} holds {len(committed)} committed part(s) but no {MANIFEST} (lost or "
                f"deleted), so the settings they were extracted with are unknown; {restart}"
            )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            manifest = {
                "format_version": FORMAT_VERSION,
                "emofuse_version": __version__,
                "fingerprint": self.fingerprint,
                "settings": self.settings,
                "streams": {n: s.to_json() for n, s in self.specs.items()},
                "compression": self.compression,
            }
            write_json_atomically(manifest_file, manifest, f"rank{self.rank}-{os.getpid()}")
        remove_stale_temps(self.folder, self.rank)
        own = [p for p in list_parts(self.folder) if p.name.startswith(part_name(self.rank, 0)[:7])]
        self._seq = int(own[-1].name.split("-")[1]) + 1 if own else 0
        self._ids = self._scan_done()

    def _check_fingerprint(self, meta: dict, where: str) -> None:
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise EmofuseError(
                f"{where} was written by a newer emofuse (format {meta['format_version']}); "
                "upgrade emofuse or choose another output name"
            )
        stored_settings = meta.get("settings")
        if stored_settings is not None and without_configs(self.settings) == canonical_json(
            stored_settings
        ):  # an older store records no model config digests: it goes on as it was written
            self.settings = stored_settings
            self.fingerprint = settings_fingerprint(self.settings)
        if stored_settings is not None and canonical_json(stored_settings) != canonical_json(
            self.settings
        ):  # name the option (e.g. --layers, --batch-seconds: the batch plan decides numbers too)
            raise options_differ(stored_settings, self.settings, where)
        # the same settings give the same fingerprint and the same streams (the settings hold the
        # model ids and revisions, emofuse's version and the layers): a difference past this
        # point is metadata edited after it was written, not another run's choice
        damaged = (
            f"delete {where} and rerun to extract from scratch"
            if where == str(self.folder)
            else "delete it and rerun to re-extract"
        )
        if meta.get("fingerprint") != self.fingerprint:
            if stored_settings is None:  # a parts manifest of an older emofuse: no settings
                raise EmofuseError(
                    f"{where} was extracted with different settings or model files (fingerprint "
                    f"{str(meta.get('fingerprint'))[:12]}… != {self.fingerprint[:12]}…); "
                    "use the same options and models to resume, or choose another output name"
                )
            raise EmofuseError(
                f"{where} is damaged (its recorded fingerprint {str(meta.get('fingerprint'))[:12]}… "
                f"is not that of its own settings, {self.fingerprint[:12]}…: its metadata was "
                f"edited): {damaged}"
            )
        stored = {n: s.to_json() for n, s in normalise_specs(meta["streams"]).items()}
        ours = {n: s.to_json() for n, s in self.specs.items()}
        if canonical_json(stored) != canonical_json(ours):
            if not isinstance((stored_settings or {}).get("fingerprint"), dict):
                # a store written through the API: its settings need not describe its streams
                raise EmofuseError(
                    f"{where} has different stream specs ({', '.join(stored)}) for the same "
                    "fingerprint; use the same streams to resume, or choose another output name"
                )
            key, was, now = first_difference(stored, ours)
            raise EmofuseError(
                f"{where} is damaged (its streams.{key} is {was!r}, but its settings give "
                f"{now!r}: its metadata was edited): {damaged}"
            )

    def _array_keys(self) -> list[str]:
        return [
            f"{name}.{aname}"
            for name, spec in self.specs.items()
            for aname, aspec in spec.arrays.items()
            if not aspec.is_str
        ]

    def _scan_done(self) -> set[str]:
        """Ids of every committed part; each part is checked whole (index readable, of this
        fingerprint, every array file there, every file's size and CRC-32 as recorded at commit)
        before anything new is encoded. A part whose files are damaged is set aside (see
        ``dropped``): its utterances are not done and are encoded again."""
        done: set[str] = set()
        for path in list_parts(self.folder):
            redo = f"delete the folder {path} (its utterances are extracted again) and rerun"
            index = self._indexes.get(path.name)
            if index is None:
                index = read_journal_json(path / "index.json", redo)
                if index.get("fingerprint", self.fingerprint) != self.fingerprint:
                    raise EmofuseError(
                        f"{path} was extracted with other settings than {self.folder}/{MANIFEST} "
                        f"says; {redo}"
                    )
                try:
                    rows = {m["id"]: m for m in index["meta"]}
                    skipped = {s["id"]: str(s.get("reason", "")) for s in index["skipped"]}
                except (KeyError, TypeError, AttributeError):
                    raise EmofuseError(
                        f"{path / 'index.json'} is damaged (fields missing); {redo}"
                    ) from None
                for name, spec in self.specs.items():
                    for aname, aspec in spec.arrays.items():
                        file = path / f"{name}.{aname}.npy"
                        if not aspec.is_str and not file.is_file():
                            raise EmofuseError(f"{file} is missing (deleted or lost); {redo}")
                problem = part_damage(path, index, self._array_keys())
                if problem is not None:
                    set_aside(path)
                    self.dropped.append((path, problem, len(rows) + len(skipped)))
                    continue
                index = {"rows": rows, "skipped": skipped}
                self._indexes[path.name] = index
            done.update(index["rows"])
            done.update(index["skipped"])
            self._rows.update(index["rows"])
            self._skipped.update({k: (r, path) for k, r in index["skipped"].items()})
        return done

    def skipped_records(self) -> dict[str, tuple[str, Path]]:
        """Every utterance recorded as skipped (bad audio ...): id -> (reason, the store or the
        committed part that records it)."""
        if not self._complete:
            self._scan_done()
        return dict(self._skipped)

    def stored_rows(self) -> dict[str, dict[str, Any]]:
        """The table row of every utterance already stored (not skipped), by id."""
        if not self._complete:
            self._scan_done()
        return dict(self._rows)

    @property
    def complete(self) -> bool:
        """True when the path held a finished store (nothing more can be added)."""
        return self._complete

    # --- writing ---------------------------------------------------------------------------------
    def done_ids(self) -> set[str]:
        """Ids already stored or skipped, by any rank (committed parts and this writer's buffer)."""
        if not self._complete:
            self._ids |= self._scan_done()
        return set(self._ids)

    def add(self, meta_row: dict[str, Any], data: dict[str, dict[str, Any]]) -> None:
        """Buffer one utterance: its table row and, per stream, its arrays (numpy or torch)."""
        uid = meta_row.get("id")
        if not isinstance(uid, str) or not uid:
            raise EmofuseError(
                f"CacheWriter.add: meta row needs a non-empty string 'id' (got {uid!r})"
            )
        if self._complete:
            raise EmofuseError(
                f"{self.path} is already complete; choose another output name to add {uid!r}"
            )
        if uid in self._ids:
            raise EmofuseError(
                f"{self.path}: utterance {uid!r} is already stored (skip done_ids())"
            )
        unknown = set(data) - set(self.specs)
        if unknown:
            raise EmofuseError(
                f"utterance {uid!r}: stream(s) {sorted(unknown)} not declared in the writer's "
                f"streams ({', '.join(self.specs)})"
            )
        arrays = {name: self._check(uid, spec, data.get(name)) for name, spec in self.specs.items()}
        self._buffer.append((jsonable(meta_row), arrays))
        self._ids.add(uid)
        self._buffered_bytes += sum(
            a.nbytes for s in arrays.values() for a in s.values() if isinstance(a, np.ndarray)
        )
        self._maybe_flush()

    def _check(self, uid: str, spec: StreamSpec, given: dict | None) -> dict[str, Any]:
        """Validate shapes against the spec and cast to the stored dtype (fp16 by default)."""
        if not given:
            if spec.kind != RAGGED:
                raise EmofuseError(f"utterance {uid!r}: fixed stream {spec.name!r} is missing")
            given = {}  # a ragged stream left out = 0 rows (e.g. no segments when unaligned)
        missing = set(spec.arrays) - set(given) if given else set()
        extra = set(given) - set(spec.arrays)
        if missing or extra:
            raise EmofuseError(
                f"utterance {uid!r} stream {spec.name!r}: arrays {sorted(given)} do not match "
                f"the spec {sorted(spec.arrays)}"
            )
        out: dict[str, Any] = {}
        rows = set()
        for aname, aspec in spec.arrays.items():
            value = given.get(aname)
            if aspec.is_str:
                value = [] if value is None else [str(v) for v in value]
                n = len(value)
                if spec.kind != RAGGED:
                    raise EmofuseError(f"stream {spec.name!r}: string arrays need a ragged stream")
            else:
                if value is None:
                    value = np.zeros((0, *aspec.row_shape), aspec.dtype)
                value = to_numpy(value)
                got = tuple(value.shape[1:] if spec.kind == RAGGED else value.shape)
                if got != aspec.row_shape:
                    want = ("(rows, " if spec.kind == RAGGED else "(") + ", ".join(
                        map(str, aspec.row_shape)
                    )
                    raise EmofuseError(
                        f"utterance {uid!r} stream {spec.name!r} array {aname!r}: shape "
                        f"{tuple(value.shape)} does not match the spec {want})"
                    )
                if spec.kind != RAGGED:
                    value = value[None]  # (1, *row_shape): one row
                value = value.astype(aspec.dtype, copy=False)
                n = len(value)
            rows.add(n)
            out[aname] = value
        if len(rows) > 1:
            raise EmofuseError(
                f"utterance {uid!r} stream {spec.name!r}: arrays have different row counts {sorted(rows)}"
            )
        return out

    def skip(self, utt_id: str, reason: str) -> None:
        """Record an utterance that cannot be stored (bad audio ...): listed in ``skipped``."""
        if utt_id in self._ids:
            raise EmofuseError(f"{self.path}: utterance {utt_id!r} is already stored or skipped")
        self._skips.append({"id": utt_id, "reason": str(reason)})
        self._ids.add(utt_id)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if (
            self._buffered_bytes >= self.flush_bytes
            or time.monotonic() - self._last_flush >= self.flush_s
        ):
            self.flush()

    def flush(self) -> None:
        """Commit the buffer as one atomic part (durable once this returns)."""
        self._last_flush = time.monotonic()
        if self._complete or (not self._buffer and not self._skips):
            return
        index: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "ids": [m["id"] for m, _ in self._buffer],
            "meta": [m for m, _ in self._buffer],
            "skipped": self._skips,
            "rows": {},
            "row_crc32": {},  # per (layer,) utterance: what consolidation checks its copy against
            "strings": {},
        }
        arrays: dict[str, np.ndarray] = {}
        for name, spec in self.specs.items():
            per_utt = [a[name] for _, a in self._buffer]
            counts = [len(next(iter(u.values()))) for u in per_utt]
            index["rows"][name] = counts
            for aname, aspec in spec.arrays.items():
                key = f"{name}.{aname}"
                if aspec.is_str:
                    index["strings"][key] = [s for u in per_utt for s in u[aname]]
                    continue
                rows = np.concatenate(
                    [u[aname] for u in per_utt] or [np.zeros((0, *aspec.row_shape), aspec.dtype)]
                )  # (rows, *row_shape)
                rows = np.ascontiguousarray(np.moveaxis(rows, 1, 0) if aspec.layered else rows)
                arrays[key] = rows  # (L, rows, D) or (rows, *row_shape)
                index["row_crc32"][key] = row_crcs(rows, counts, aspec.layered)
        try:
            final = commit_part(self.folder, self.rank, self._seq, index, arrays)
        except OSError as err:
            if not self.folder.exists() and self._seq > 0:  # it had parts: someone removed them
                raise EmofuseError(
                    f"{self.folder}, the journal of {self.path}, vanished while this extract wrote "
                    "it (another extract finished or removed this store?); check "
                    f"{self.path} with `emofuse verify`, or rerun the same command to extract "
                    "what it lacks"
                ) from err
            kept = len(list_parts(self.folder))  # every rank's, the one just committed too
            goes_on = (
                f"it resumes from the {kept} part(s) already committed"
                if kept
                else "nothing was committed yet, it starts again"
            )  # the file and folder named are the ones that refused (the parts folder, perhaps)
            raise cannot_write(err, self.path, f"{RERUN}: {goes_on}") from err
        self._indexes[final.name] = {
            "rows": {m["id"]: m for m in index["meta"]},
            "skipped": {s["id"]: str(s.get("reason", "")) for s in index["skipped"]},
        }
        self._seq += 1
        self._buffer, self._skips, self._buffered_bytes = [], [], 0

    def close(self, order: list[str] | None = None) -> str | None:
        """Flush; on rank 0 consolidate every rank's parts in ``order``. Returns the digest.

        ``order`` is the canonical utterance order (corpus order); ids that were skipped are allowed
        in it. ``None`` sorts ids. On rank != 0 this only flushes (rank 0 consolidates after a barrier).
        """
        if self._closed:
            return None
        self.flush()
        if self.rank != 0:
            self._closed = True
            return None
        if self._complete:
            self._closed = True
            missing = [uid for uid in order or [] if uid not in self._ids]
            if missing:
                raise EmofuseError(
                    f"{self.path} is complete but lacks {len(missing)} utterances of the order "
                    f"(first: {missing[0]!r}); extract into a new output name"
                )
            return self._digest
        digest = consolidate(
            self.path, order=order, compression=self.compression, progress=self.progress
        )
        self._complete = self._closed = True
        return digest

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.close()
        else:  # keep what was done for the resume; never consolidate a failed run
            self.flush()
