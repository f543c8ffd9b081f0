"""Read a cache: the same API over HDF5, Zarr and (allow_incomplete) the parts of an unfinished one.

Training loads what a head needs once, in the main process: ``load`` returns contiguous numpy
arrays built from a few large block reads (one layer at a time, ~64 MiB per read), never one read
per utterance, and only the requested layers are touched (layer-major storage). With
``mmap=True`` an uncompressed HDF5 array is not read at all but mapped (a strided zero-copy view).
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.cache.backends import ArrayStore, backend_of, damaged_cache_error
from emofuse.cache.layout import (
    StoreLayout,
    little_endian,
    read_block_rows,
    stored_arrays,
    stored_name,
    stored_shape,
)
from emofuse.cache.parts import MANIFEST, part_damage
from emofuse.cache.schema import (
    FIXED,
    RAGGED,
    TABLE_COLUMNS,
    TYPED_COLUMNS,
    ArrayInfo,
    ArraySpec,
    StreamInfo,
    parts_dir,
)
from emofuse.cache.store import incomplete_message, missing_cache_error, open_store
from emofuse.cache.verify import UNVERIFIABLE, checksum_arrays
from emofuse.errors import EmofuseError
from emofuse.locks import live_holder

MAX_RUNS = 64  # more separate row ranges than this: read the covering span in blocks instead


class PartsStore(ArrayStore):
    """Read-only store view over the committed parts of an unfinished cache (commit order)."""

    kind = "parts"

    def __init__(self, folder: Path) -> None:
        self.path = folder
        self.plan = StoreLayout(folder, None, sort_ids=False)
        self._meta = self.plan.meta(complete=False, compression=None)
        self._arrays: dict[str, np.ndarray] = {}

    def read_meta(self) -> dict:
        return self._meta

    def missing_chunks(self) -> list[str]:
        """Parts whose files no longer have the size recorded at commit (truncated): what a
        resume sets aside and encodes again. Sizes only; the CRC-32s are read by the resume."""
        keys = [
            f"{name}.{aname}"
            for name, spec in self.plan.specs.items()
            for aname, aspec in spec.arrays.items()
            if not aspec.is_str
        ]
        found = []
        for part in self.plan.parts:
            if problem := part_damage(part.path, part.index, keys, read=False):
                found.append(f"part {part.path.name} damaged ({problem})")
        return found

    def _materialise(self, name: str) -> np.ndarray:
        if name in self._arrays:
            return self._arrays[name]
        if name == "table":
            arr = np.frombuffer(self.plan.table_json(), dtype=np.uint8)
        else:
            _, stream, aname = name.split("/")
            if aname == "offsets":
                arr = self.plan.offsets[stream]
            elif aname.endswith((".utf8", ".offsets")):
                base, suffix = aname.rsplit(".", 1)
                data, offsets, _crc = self.plan.strings(stream, base)
                arr = data if suffix == "utf8" else offsets
            else:
                spec = self.plan.specs[stream].arrays[aname]
                arr = np.empty(stored_shape(spec, self.plan.rows(stream)), dtype=spec.dtype)
                for idx, block in self.plan.blocks(stream, aname):
                    arr[idx] = block
        self._arrays[name] = arr
        return arr

    def read(self, name: str, index: Any = ()) -> np.ndarray:
        return np.asarray(self._materialise(name)[index])

    def read_into(self, name: str, index: tuple, out: np.ndarray) -> None:
        out[...] = self._materialise(name)[index]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._materialise(name).shape

    def has(self, name: str) -> bool:
        return True

    def close(self) -> None:
        self._arrays.clear()
        self.plan.release()


def _typed_table(raw: dict[str, list]) -> dict[str, np.ndarray]:
    columns = [c for c in TABLE_COLUMNS if c in raw] + sorted(set(raw) - set(TABLE_COLUMNS))
    table: dict[str, np.ndarray] = {}
    for col in columns:
        values = raw[col]
        if col in TYPED_COLUMNS:
            dtype, fill = TYPED_COLUMNS[col]
            table[col] = np.array([fill if v is None else v for v in values], dtype=dtype)
            continue
        if col == "extra":  # the contract: extra manifest columns as a JSON string per row
            values = [
                v if isinstance(v, str) or v is None else json.dumps(v, sort_keys=True)
                for v in values
            ]
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        table[col] = arr
    return table


class Cache:
    """An open cache. ``ids``, ``table``, ``fingerprint``, ``settings``, ``streams``, ``load``."""

    def __init__(self, path: Path, store: Any, meta: dict) -> None:
        self.path = path
        self._store = store
        self.meta = meta
        self.complete: bool = bool(meta["complete"])
        self.fingerprint: str = meta["fingerprint"]
        self.settings: dict = meta["settings"]
        self.skipped: list[dict] = meta["skipped"]
        self.format_version: int = meta["format_version"]
        self.emofuse_version: str = meta["emofuse_version"]
        self.compression: str | None = meta.get("compression")
        table_bytes = little_endian(store.read("table", (slice(None),))).tobytes()
        # checked by check_loaded (training): a damaged table would mislabel utterances silently
        self._table_sha = hashlib.sha256(table_bytes).hexdigest()
        try:
            raw = json.loads(table_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):  # bytes flipped inside the utterance table
            raise damaged_cache_error(self.path, "its utterance table is damaged") from None
        self.table = _typed_table(raw)
        self.ids: list[str] = list(raw["id"])
        self._pos = {uid: i for i, uid in enumerate(self.ids)}
        n = len(self.ids)
        if self.complete and n != meta.get("n_utterances"):  # the metadata was edited or torn
            raise damaged_cache_error(
                self.path,
                f"its metadata counts {meta.get('n_utterances')} utterances, its table holds {n}",
            )
        self.streams: dict[str, StreamInfo] = {}
        for name, s in meta["streams"].items():
            # a ragged stream's offsets: one per utterance and one past the last (a shorter
            # array reads fine until an utterance past its end is asked for)
            header = (
                store.array_header(stored_name(name, "offsets")) if s["kind"] == RAGGED else None
            )
            if header is not None and header[0] != (n + 1,):
                raise damaged_cache_error(
                    self.path,
                    f"the stored array {stored_name(name, 'offsets')} has shape "
                    f"{list(header[0])}, but a store of {n} utterances holds [{n + 1}] offsets",
                )
            arrays = {
                a: ArrayInfo(m["dtype"], tuple(m["row_shape"]), m["rows"], m["nbytes"], m["sha256"])
                for a, m in s["arrays"].items()
            }
            self.streams[name] = StreamInfo(name, s["kind"], s["attrs"], arrays, s["rows"], n)
        self._offsets: dict[str, np.ndarray] = {}

    # --- lookup ---------------------------------------------------------------------------------
    def stream(self, name: str) -> StreamInfo:
        if name not in self.streams:
            raise EmofuseError(
                f"{self.path} has no stream {name!r} (streams: {', '.join(self.streams) or 'none'}); "
                "re-extract with that stream enabled"
            )
        return self.streams[name]

    def require(self, names: set[str] | list[str]) -> None:
        """Raise one clear error if any of the streams a head needs is missing."""
        missing = sorted(set(names) - set(self.streams))
        if missing:
            raise EmofuseError(
                f"{self.path} lacks stream(s) {', '.join(missing)} (has: {', '.join(self.streams)}); "
                "re-extract with them enabled or pick a head that does not need them"
            )

    def check_fingerprint(self, expected: str) -> None:
        if expected != self.fingerprint:
            raise EmofuseError(
                f"{self.path} was extracted with other settings (fingerprint {self.fingerprint[:12]}… "
                f"!= {expected[:12]}…); use the matching cache or re-extract"
            )

    def offsets(self, stream: str) -> np.ndarray:
        """(N + 1,) int64 row offsets (fixed streams: 0..N)."""
        info = self.stream(stream)
        if stream not in self._offsets:
            if info.kind == FIXED:
                self._offsets[stream] = np.arange(len(self.ids) + 1, dtype=np.int64)
            else:
                off = self._store.read(stored_name(stream, "offsets"), (slice(None),))
                self._offsets[stream] = off.astype(np.int64)
        return self._offsets[stream]

    def layer_positions(self, stream: str, layers: list[int] | None) -> list[int]:
        """Map absolute layer indices (the stream's ``layers`` attr) to stored positions."""
        info = self.stream(stream)
        data = info.arrays.get("data")
        count = data.row_shape[0] if data is not None and data.layered else 1
        stored = info.layers if info.layers is not None else list(range(count))
        if layers is None:
            return list(range(len(stored)))
        where = {layer: i for i, layer in enumerate(stored)}
        missing = [layer for layer in layers if layer not in where]
        if missing:
            raise EmofuseError(
                f"{self.path} stream {stream!r} stores layers {stored}; layer(s) {missing} "
                "were not extracted (pick stored layers or re-extract)"
            )
        return [where[layer] for layer in layers]

    # --- bulk loading ---------------------------------------------------------------------------
    def load(
        self,
        stream: str,
        array: str = "data",
        layers: list[int] | None = None,
        ids: list[str] | None = None,
        mmap: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (values, offsets): values (rows, L_sel, D) for layered arrays, (rows, ...) otherwise.

        ``layers`` are absolute layer indices as in ``streams[stream].layers`` (None = all stored);
        ``ids`` selects utterances in the given order (None = all, corpus order). ``offsets`` is
        (len(ids) + 1,) int64 into ``values``.

        ``mmap=True`` returns a zero-copy, copy-on-write memory map instead of reading, where the
        store allows one: an uncompressed HDF5 cache, all utterances, and layers forming a strided
        slice (one layer, a range, every other one...); the view is then strided, not
        C-contiguous. Anything else falls back to the bulk read.
        """
        info = self.stream(stream)
        if array not in info.arrays:
            raise EmofuseError(
                f"{self.path} stream {stream!r} has no array {array!r} (arrays: {', '.join(info.arrays)})"
            )
        ainfo = info.arrays[array]
        spec = ArraySpec(ainfo.dtype, ainfo.row_shape)
        offsets = self.offsets(stream)
        if ids is None:
            starts, counts = offsets[:-1], np.diff(offsets)
            runs = [(0, int(offsets[-1]))]
            global_rows = None  # identity: rows in stored order
        else:
            unknown = [uid for uid in ids if uid not in self._pos]
            if unknown:
                raise EmofuseError(
                    f"{self.path} has no utterance {unknown[0]!r} ({len(unknown)} unknown ids)"
                )
            idx = np.fromiter((self._pos[uid] for uid in ids), dtype=np.int64, count=len(ids))
            starts, counts = offsets[idx], offsets[idx + 1] - offsets[idx]
            runs = _runs(np.unique(idx), offsets)
        out_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(out_offsets[-1])
        if ids is not None:  # stored row of every output row
            global_rows = np.repeat(starts - out_offsets[:-1], counts) + np.arange(total)
        if spec.is_str:
            return self._load_strings(stream, array, global_rows, total), out_offsets
        name = stored_name(stream, array)
        if spec.layered:
            positions = self.layer_positions(stream, layers) if array == "data" else None
            if positions is None:
                positions = list(range(spec.row_shape[0])) if layers is None else list(layers)
        else:
            if layers is not None and array == "data":
                raise EmofuseError(f"{self.path} stream {stream!r} has no layer axis; drop layers=")
            positions = [None]
        if mmap and ids is None:
            view = self._mapped(name, positions)
            if view is not None:
                return view, out_offsets
        if spec.layered:
            out = np.empty((total, len(positions), *spec.row_shape[1:]), dtype=spec.dtype)
        else:
            out = np.empty((total, *spec.row_shape), dtype=spec.dtype)
        step = read_block_rows(spec, info.rows)
        for j, layer in enumerate(positions):
            # (rows, *rest) destination of this layer: contiguous when one layer is loaded
            dest = out[:, j] if spec.layered else out
            if spec.layered and len(positions) == 1:
                dest = out.reshape(total, *spec.row_shape[1:])
            for ra, rb in runs:
                for a in range(ra, rb, step):
                    b = min(rb, a + step)
                    index = (layer, slice(a, b)) if spec.layered else (slice(a, b),)
                    if global_rows is None and dest.flags.c_contiguous:
                        self._store.read_into(name, index, dest[a:b])
                    elif global_rows is None:
                        dest[a:b] = self._store.read(name, index)
                    else:
                        block = self._store.read(name, index)  # (b - a, *rest)
                        hit = (global_rows >= a) & (global_rows < b)
                        dest[hit] = block[global_rows[hit] - a]
        return out, out_offsets

    def check_loaded(
        self, stream: str, array: str, values: np.ndarray, layers: list[int] | None = None
    ) -> None:
        """Check what ``load(stream, array, layers)`` returned for every utterance against the
        checksums stored at consolidation (the per-(layer, utterance) CRC-32 that ``verify``
        recomputes), plus the table and the stream's offsets; a mismatch is one line naming the
        cache, stream and first damaged utterance.

        Only the loaded bytes are checked, where training has them in memory (or mapped) anyway:
        CRC-32 runs at GB/s, cheaper than the finite check that follows, so a damaged cache is
        refused without a second read of the file. Stores without checksums (an unfinished
        cache's parts) are not checked.
        """
        if not self.complete or not self._store.has(f"checksums/{stream}/{array}"):
            return
        fix = f"run `emofuse verify {self.path}` to list the damage, then extract the cache again"
        table_sha = self.meta.get("table", {}).get("sha256")
        if table_sha is not None and table_sha != self._table_sha:
            raise EmofuseError(
                f"cache {self.path}: the utterance table does not match its stored checksum "
                f"(the file was changed or damaged after extraction); {fix}"
            )
        smeta = self.meta["streams"][stream]
        offsets = self.offsets(stream)
        stored_off = smeta.get("offsets_sha256")
        if stored_off is not None and (
            hashlib.sha256(little_endian(offsets)).hexdigest() != stored_off
        ):
            raise EmofuseError(
                f"cache {self.path}: the offsets of stream '{stream}' do not match their stored "
                f"checksum (the file was changed or damaged after extraction); {fix}"
            )
        info = self.stream(stream).arrays[array]
        spec = ArraySpec(info.dtype, info.row_shape)
        if spec.is_str:
            return
        stored = np.atleast_2d(self._store.read(f"checksums/{stream}/{array}", (slice(None),)))
        if spec.layered:  # (loaded column, stored layer position)
            positions = self.layer_positions(stream, layers) if array == "data" else None
            columns = list(enumerate(positions or range(spec.row_shape[0])))
        else:
            columns = [(None, 0)]
        starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
        for j, position in columns:
            want = stored[position]
            for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
                rows = values[a:b] if j is None else values[a:b, j]
                if zlib.crc32(little_endian(rows)) != int(want[i]):
                    raise EmofuseError(
                        f"cache {self.path}: stream '{stream}' of utterance {self.ids[i]} does not "
                        f"match its stored checksum (the file was changed or damaged after "
                        f"extraction); {fix}"
                    )

    def _mapped(self, name: str, positions: list) -> np.ndarray | None:
        """Zero-copy view (rows, L_sel, ...) or (rows, ...) of a stored array; None = must read."""
        whole = self._store.mapped(name)
        if whole is None or positions == [None]:
            return whole
        first, last = positions[0], positions[-1]
        step = positions[1] - first if len(positions) > 1 else 1
        if step <= 0 or positions != list(range(first, last + 1, step)):
            return None  # not a strided slice: a view of it would need a copy
        # stored layer-major (L, rows, ...) → (rows, L_sel, ...), a strided view
        return np.swapaxes(whole[first : last + 1 : step], 0, 1)

    def _load_strings(
        self, stream: str, array: str, rows: np.ndarray | None, total: int
    ) -> np.ndarray:
        data = self._store.read(stored_name(stream, f"{array}.utf8"), (slice(None),)).tobytes()
        soff = self._store.read(stored_name(stream, f"{array}.offsets"), (slice(None),))
        rows = np.arange(total) if rows is None else rows
        out = np.empty(total, dtype=object)
        out[:] = [data[soff[r] : soff[r + 1]].decode("utf-8") for r in rows.tolist()]
        return out

    def damage(self) -> list[str]:
        """Structural damage found without reading the data: arrays the metadata lists that the
        store lacks (a stream group deleted), and (Zarr) missing chunk files; one line each."""
        lacking = [
            f"array {name} is missing (deleted or lost)"
            for name in stored_arrays(self.meta)
            if not self._store.has(name)
        ]
        sums = checksum_arrays(self.meta)
        if self.complete and sums and not any(self._store.has(a) for a in sums):
            lacking.append(UNVERIFIABLE)
        return lacking + self._store.missing_chunks()

    # --- sizes ----------------------------------------------------------------------------------
    def raw_bytes(self) -> int:
        return sum(s.nbytes for s in self.streams.values())

    def disk_bytes(self) -> int:
        if self.path.is_file():
            return self.path.stat().st_size
        root = self.path if self.path.is_dir() else parts_dir(self.path)
        return sum(
            os.path.getsize(os.path.join(folder, f))
            for folder, _d, files in os.walk(root)
            for f in files
        )

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def _runs(sorted_idx: np.ndarray, offsets: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges covering consecutive selected utterances; one covering span if too many."""
    if len(sorted_idx) == 0:
        return []
    breaks = np.nonzero(np.diff(sorted_idx) != 1)[0]
    firsts = np.concatenate([[sorted_idx[0]], sorted_idx[breaks + 1]])
    lasts = np.concatenate([sorted_idx[breaks], [sorted_idx[-1]]])
    if len(firsts) > MAX_RUNS:
        firsts, lasts = firsts[:1], lasts[-1:]
    return [
        (int(offsets[f]), int(offsets[la + 1]))
        for f, la in zip(firsts, lasts, strict=True)
        if offsets[la + 1] > offsets[f]
    ]


def open_cache(path: str | Path, allow_incomplete: bool = False) -> Cache:
    """Open a cache for reading. EmofuseError: not a cache / newer format / incomplete."""
    path = Path(path)
    backend_of(path)
    folder = parts_dir(path)
    if path.exists():
        store, meta = open_store(path)  # one marked incomplete is damage (cache/metacheck.py)
        return Cache(path, store, meta)
    if (folder / MANIFEST).is_file():
        store = PartsStore(folder)
        if not allow_incomplete:
            done = len(store.plan.ids)
            store.close()
            raise EmofuseError(incomplete_message(path, done))
        return Cache(path, store, store.read_meta())
    if (folder.is_dir() and any(folder.glob("rank*"))) or live_holder(path) or path.is_symlink():
        raise missing_cache_error(path)  # a journal that lost its manifest, or a live writer
    raise EmofuseError(f"no cache at {path}; run `emofuse extract` first or check the path")
