"""Turn committed parts into a store layout: canonical order, offsets and block-wise gathering.

Used twice: ``consolidate`` streams every array from the parts into the final .h5/.zarr, and a
reader opened with ``allow_incomplete=True`` reads the parts through the same plan (lazily, one
array at a time) so "what is done" looks exactly like a finished store.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emofuse import __version__
from emofuse.cache.parts import MANIFEST, Part, list_parts, read_journal_json
from emofuse.cache.schema import (
    FIXED,
    FORMAT,
    FORMAT_VERSION,
    TABLE_COLUMNS,
    ArraySpec,
    StreamSpec,
    canonical_json,
    little_endian,
    normalise_specs,
)
from emofuse.errors import EmofuseError

BLOCK_BYTES = 64 << 20  # one gather/read/verify step: large reads, bounded memory
CHUNK_BYTES = 8 << 20  # target chunk size (one layer x rows) for chunked/compressed arrays


def stored_name(stream: str, array: str) -> str:
    return f"streams/{stream}/{array}"


def stored_arrays(meta: dict) -> list[str]:
    """Every array a finished store of ``meta`` holds under ``streams/`` (a ragged stream's
    offsets, each array; a string array as its ``.utf8`` and ``.offsets`` pair): what a stream
    group deleted from the file (h5py, a removed Zarr folder) leaves missing."""
    names = []
    for stream, smeta in sorted(meta["streams"].items()):
        if smeta["kind"] != FIXED:
            names.append(stored_name(stream, "offsets"))
        for array, ameta in sorted(smeta["arrays"].items()):
            if ArraySpec.from_json(ameta).is_str:
                names += [
                    stored_name(stream, f"{array}.utf8"),
                    stored_name(stream, f"{array}.offsets"),
                ]
            else:
                names.append(stored_name(stream, array))
    return names


def stored_shape(spec: ArraySpec, rows: int) -> tuple[int, ...]:
    """Layer-major (L, rows, *rest) for layered arrays, (rows, *row_shape) otherwise."""
    if spec.layered:
        return (spec.row_shape[0], rows, *spec.row_shape[1:])
    return (rows, *spec.row_shape)


def row_bytes(spec: ArraySpec) -> int:
    """Bytes of one row within one layer (the unit the block sizes are computed in)."""
    rest = spec.row_shape[1:] if spec.layered else spec.row_shape
    return max(1, int(np.prod(rest, dtype=np.int64)) * np.dtype(spec.dtype).itemsize)


def chunk_shape(spec: ArraySpec, rows: int) -> tuple[int, ...]:
    n = int(min(max(1, CHUNK_BYTES // row_bytes(spec)), max(rows, 1)))
    if spec.layered:
        return (1, n, *spec.row_shape[1:])
    return (n, *spec.row_shape)


def read_block_rows(spec: ArraySpec, rows: int) -> int:
    """Rows per read/write step: a whole number of chunks, about BLOCK_BYTES."""
    return chunk_shape(spec, rows)[1 if spec.layered else 0] * (BLOCK_BYTES // CHUNK_BYTES)


def read_parts_manifest(folder: Path) -> dict:
    """The journal's manifest.json (the settings every part was extracted with)."""
    manifest = read_journal_json(
        folder / MANIFEST, f"delete {folder} and rerun to extract from scratch"
    )
    if not isinstance(manifest.get("streams"), dict):
        raise EmofuseError(
            f"{folder / MANIFEST} is damaged (fields missing); delete {folder} and rerun to "
            "extract from scratch"
        )
    return manifest


class StoreLayout:
    """Where every utterance's rows come from (part, position) and where they go (offsets)."""

    def __init__(self, folder: Path, order: list[str] | None = None, sort_ids: bool = True) -> None:
        self.folder = folder
        self.manifest = read_parts_manifest(folder)
        self.specs: dict[str, StreamSpec] = normalise_specs(self.manifest["streams"])
        self.parts = [Part(p) for p in list_parts(folder)]
        self.loc: dict[str, tuple[int, int]] = {}
        skipped: dict[str, str] = {}
        for pi, part in enumerate(self.parts):
            for pos, uid in enumerate(part.ids):
                self.loc.setdefault(uid, (pi, pos))  # first commit wins (re-adds are identical)
            for item in part.index["skipped"]:
                skipped.setdefault(item["id"], item["reason"])
        written = list(self.loc)  # commit order: (rank, seq, position)
        if order is None:
            order = sorted(written) if sort_ids else written
        else:
            order = [uid for uid in order if uid in self.loc or uid not in skipped]
            self._check_order(order)
        self.ids: list[str] = list(order)
        rank_of = {uid: i for i, uid in enumerate(order)}
        self.skipped = [
            {"id": uid, "reason": reason}
            for uid, reason in sorted(
                skipped.items(), key=lambda kv: (rank_of.get(kv[0], -1), kv[0])
            )
            if uid not in self.loc
        ]
        # per part: row counts and start rows of each utterance, per stream
        self._starts: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, np.ndarray] = {}
        self.offsets: dict[str, np.ndarray] = {}
        locs = [self.loc[uid] for uid in self.ids]
        for name in self.specs:
            per_part = [np.asarray(p.index["rows"][name], dtype=np.int64) for p in self.parts]
            self._starts[name] = [np.concatenate([[0], np.cumsum(c)]) for c in per_part]
            counts = np.array([per_part[pi][pos] for pi, pos in locs], dtype=np.int64)
            self.counts[name] = counts
            self.offsets[name] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._locs = locs

    def _check_order(self, order: list[str]) -> None:
        if len(set(order)) != len(order):
            dup = next(u for i, u in enumerate(order) if u in order[:i])
            raise EmofuseError(f"close(order=...): utterance {dup!r} appears twice in the order")
        missing = [uid for uid in order if uid not in self.loc]
        if missing:
            raise EmofuseError(
                f"{self.folder}: {len(missing)} utterances of the order were never written "
                f"(first: {missing[0]!r}); resume the extraction before closing"
            )
        extra = set(self.loc) - set(order)
        if extra:
            raise EmofuseError(
                f"{self.folder}: {len(extra)} stored utterances are not in the order "
                f"(first: {sorted(extra)[0]!r}); pass the full corpus order to close()"
            )

    # --- the table ----------------------------------------------------------------------------
    def table_json(self) -> bytes:
        rows = [self.parts[pi].index["meta"][pos] for pi, pos in self._locs]
        columns = list(TABLE_COLUMNS) + sorted({k for r in rows for k in r} - set(TABLE_COLUMNS))
        return canonical_json({c: [r.get(c) for r in rows] for c in columns})

    # --- numeric arrays -------------------------------------------------------------------------
    def rows(self, stream: str) -> int:
        return int(self.offsets[stream][-1])

    def blocks(
        self, stream: str, array: str, crc: np.ndarray | None = None
    ) -> Iterator[tuple[tuple, np.ndarray]]:
        """Yield (index into the stored array, block) in stored order, ~BLOCK_BYTES each.

        Fills ``crc`` ((L, N) or (N,)) with the CRC-32 of each utterance's rows per layer.
        """
        spec = self.specs[stream].arrays[array]
        key = f"{stream}.{array}"
        shape = stored_shape(spec, self.rows(stream))
        rest = shape[2:] if spec.layered else shape[1:]
        block_rows = read_block_rows(spec, self.rows(stream))
        starts = self._starts[stream]
        counts = self.counts[stream]
        recorded = [p.index.get("row_crc32", {}).get(key) for p in self.parts]
        for layer in range(shape[0] if spec.layered else 1):
            buf = np.empty((block_rows, *rest), dtype=spec.dtype)
            fill, dest = 0, 0
            for i, (pi, pos) in enumerate(self._locs):
                n = int(counts[i])
                src = self.parts[pi].array(key)
                s = int(starts[pi][pos])
                piece = src[layer, s : s + n] if spec.layered else src[s : s + n]  # (n, *rest)
                if crc is not None:
                    value = zlib.crc32(little_endian(piece))
                    if spec.layered:
                        crc[layer, i] = value
                    else:
                        crc[i] = value
                    want = recorded[pi]
                    if want is not None and value != (
                        want[layer][pos] if spec.layered else want[pos]
                    ):
                        raise self._damaged(pi, key, pos)
                done = 0
                while done < n:  # split across blocks so every write covers whole chunks
                    take = min(n - done, block_rows - fill)
                    buf[fill : fill + take] = piece[done : done + take]
                    fill, done = fill + take, done + take
                    if fill == block_rows:
                        yield self._index(spec, layer, dest, dest + fill), buf
                        buf = np.empty_like(buf)
                        dest, fill = dest + fill, 0
            if fill:
                yield self._index(spec, layer, dest, dest + fill), buf[:fill]

    def _damaged(self, pi: int, key: str, pos: int) -> EmofuseError:
        part = self.parts[pi]
        return EmofuseError(
            f"{part.path} is damaged ({key}.npy: the rows of {part.ids[pos]} changed since they "
            f"were written, CRC-32 mismatch); rerun the same `emofuse extract` command: it sets "
            f"the part aside and encodes its {len(part.ids)} utterance(s) again"
        )

    def row_crcs_recorded(self, part: Part, keys: list[str]) -> bool:
        """Whether ``part`` recorded every array's per-utterance CRC-32s at commit (then
        ``blocks`` checks each piece as it reads it; older parts are re-read first)."""
        recorded = part.index.get("row_crc32")
        return isinstance(recorded, dict) and all(k in recorded for k in keys)

    @staticmethod
    def _index(spec: ArraySpec, layer: int, a: int, b: int) -> tuple:
        return (layer, slice(a, b)) if spec.layered else (slice(a, b),)

    def strings(self, stream: str, array: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """UTF-8 bytes (uint8), byte offsets (rows + 1), CRC-32 per utterance of its bytes."""
        key = f"{stream}.{array}"
        counts = self.counts[stream]
        starts = self._starts[stream]
        encoded: list[bytes] = []
        for i, (pi, pos) in enumerate(self._locs):
            s = int(starts[pi][pos])
            encoded += [
                t.encode("utf-8")
                for t in self.parts[pi].index["strings"][key][s : s + int(counts[i])]
            ]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        row_off = self.offsets[stream]
        crc = np.array(
            [
                zlib.crc32(data[offsets[row_off[i]] : offsets[row_off[i + 1]]])
                for i in range(len(counts))
            ],
            dtype=np.uint32,
        )
        return data, offsets, crc

    def release(self) -> None:
        for part in self.parts:
            part.release()

    # --- metadata -----------------------------------------------------------------------------
    def meta(self, complete: bool, compression: str | None) -> dict:
        """The store metadata (checksums are filled in by whoever writes the arrays)."""
        streams = {}
        n = len(self.ids)
        for name, spec in self.specs.items():
            rows = self.rows(name)
            arrays = {}
            for aname, aspec in spec.arrays.items():
                itemsize = 1 if aspec.is_str else np.dtype(aspec.dtype).itemsize
                size = rows * int(np.prod(aspec.row_shape, dtype=np.int64)) * itemsize
                arrays[aname] = {
                    **aspec.to_json(),
                    "rows": rows,
                    "nbytes": int(size),
                    "sha256": None,
                }
            streams[name] = {
                **spec.to_json(),
                "arrays": arrays,
                "rows": rows,
                "offsets_sha256": None,
            }
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "emofuse_version": __version__,
            "complete": complete,
            "fingerprint": self.manifest["fingerprint"],
            "settings": self.manifest["settings"],
            "compression": compression,
            "n_utterances": n,
            "skipped": self.skipped,
            "streams": streams,
            "table": {"sha256": None},
        }
