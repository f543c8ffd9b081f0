"""Integrity check and content digest of a finished store.

``verify`` re-reads every array in large blocks, recomputes the whole-array SHA-256 and the
per-(layer, utterance) CRC-32 stored at consolidation, and names the damaged stream and utterances.
In the same pass it computes the content digest: SHA-256 over the metadata that defines the content
(fingerprint, settings, stream specs, skipped), then, in sorted stream/array order, each array's
name, dtype, shape and the SHA-256 of its values as little-endian bytes in stored order (a hash of
hashes: every byte is read and hashed once) — independent of backend, chunking and compression, so
the same content in HDF5 and Zarr gives the same digest.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emofuse.cache.backends import ArrayStore, DamagedCacheError, damaged_cache_error
from emofuse.cache.layout import read_block_rows, stored_arrays, stored_name
from emofuse.cache.schema import RAGGED, ArraySpec, StreamSpec, canonical_json, little_endian
from emofuse.cache.store import open_store
from emofuse.errors import EmofuseError
from emofuse.progress import progress_bar

DIGEST_MAGIC = b"emofuse-cache-digest-v1\n"
MAX_NAMED = 10  # utterances named per damaged array


@dataclass
class VerifyResult:
    digest: str
    problems: list[str] = field(default_factory=list)
    checked_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def content_header(meta: dict) -> bytes:
    """The metadata that is content (not format/version/compression/chunking)."""
    streams = {
        name: StreamSpec.from_json(name, s).to_json() for name, s in sorted(meta["streams"].items())
    }
    return canonical_json(
        {
            "fingerprint": meta["fingerprint"],
            "settings": meta["settings"],
            "skipped": meta["skipped"],
            "streams": streams,
            "n_utterances": meta["n_utterances"],
        }
    )


def _crc_scan(blocks, offsets: np.ndarray, crc: np.ndarray) -> None:
    """Incremental CRC-32 of each utterance's rows over consecutive (start_row, block) pieces."""
    n = len(offsets) - 1
    i = 0
    for a, blk in blocks:
        b = a + len(blk)
        while i < n:
            s, e = int(offsets[i]), int(offsets[i + 1])
            lo, hi = max(s, a), min(e, b)
            if hi > lo:
                crc[i] = zlib.crc32(blk[lo - a : hi - a], int(crc[i]))
            if e <= b:
                i += 1
            else:
                break


UNVERIFIABLE = "its checksums are missing, deleted after extraction, so it cannot be verified"


def _reason(err: Exception) -> str:
    """A reading error's text without its advice to run verify (verify is what is running); a
    damaged store's: its reason alone (verify adds what to do)."""
    if isinstance(err, DamagedCacheError) and hasattr(err, "reason"):
        return err.reason
    return str(err).split("; run `emofuse verify")[0]


def checksum_arrays(meta: dict) -> list[str]:
    """Every stored checksum array's name, asked for one by one: a backend need not know groups
    (HDF5 and Zarr have them, a folder of files may not)."""
    return [f"checksums/{n}/{a}" for n, s in meta["streams"].items() for a in s["arrays"]]


def verify_store(
    store: ArrayStore, meta: dict, progress: bool = False, recorded_sha: bool = False
) -> VerifyResult:
    """DamagedCacheError (one line) when the store holds none of its checksum arrays.

    ``recorded_sha``: the numeric arrays' SHA-256 are taken from ``meta`` instead of recomputed
    (consolidation hashed the very blocks it wrote); every byte is still read back and checked
    against the per-utterance CRC-32s, and the digest is the same formula."""
    sums = checksum_arrays(meta)
    if sums and not any(store.has(a) for a in sums):
        raise damaged_cache_error(store.path, UNVERIFIABLE)
    digest = hashlib.sha256(DIGEST_MAGIC)
    digest.update(content_header(meta))
    problems: list[str] = []
    checked = 0

    def feed(label: str, arr: np.ndarray, sha: str | None = None) -> None:
        digest.update(f"{label}:{arr.dtype.str}:{list(arr.shape)}\n".encode())
        digest.update((sha or hashlib.sha256(arr).hexdigest()).encode() + b"\n")

    ids: list[str] = []
    try:
        table_raw = little_endian(store.read("table", (slice(None),)))
    except EmofuseError as err:  # a missing chunk file, an undecodable one
        problems.append(f"table: unreadable ({_reason(err)})")
        table_raw = np.zeros(0, np.uint8)
    checked += table_raw.nbytes
    table_sha = hashlib.sha256(table_raw).hexdigest()
    feed("table", table_raw, table_sha)
    if table_sha != meta["table"]["sha256"]:
        problems.append(  # the bytes or the recorded checksum: which of the two, nothing can tell
            "table: checksum mismatch (the utterance table's bytes do not match the sha256 its "
            "metadata records: one of the two was changed)"
        )
    else:
        ids = json.loads(table_raw.tobytes().decode("utf-8"))["id"]
    n = meta["n_utterances"]
    if ids and len(ids) != n:  # the metadata was edited: every stream's row count is suspect
        raise damaged_cache_error(
            store.path, f"its metadata counts {n} utterances, its table holds {len(ids)}"
        )

    bar = progress_bar(
        total=sum(a["nbytes"] for s in meta["streams"].values() for a in s["arrays"].values()),
        unit="B",
        unit_scale=True,
        desc="verify",
        enabled=progress,
    )
    for name, smeta in sorted(meta["streams"].items()):
        lacking = [a for a in stored_arrays({"streams": {name: smeta}}) if not store.has(a)]
        if lacking:  # a stream group deleted from the store
            problems.append(
                f"stream {name!r}: {', '.join(lacking)} missing from the store (deleted or lost)"
            )
            continue
        if smeta["kind"] == RAGGED:
            try:
                offsets = store.read(stored_name(name, "offsets"), (slice(None),))
            except EmofuseError as err:
                problems.append(f"stream {name!r}: offsets unreadable ({_reason(err)})")
                continue
            offsets = offsets.astype(np.int64)
            offsets_sha = hashlib.sha256(little_endian(offsets)).hexdigest()
            feed(f"{name}/offsets", little_endian(offsets), offsets_sha)
            ok_offsets = (
                offsets_sha == smeta["offsets_sha256"]
                and len(offsets) == n + 1
                and offsets[0] == 0
                and bool(np.all(np.diff(offsets) >= 0))
                and offsets[-1] == smeta["rows"]
            )
            if not ok_offsets:
                problems.append(f"stream {name!r}: offsets damaged (checksum or shape mismatch)")
                continue
        else:
            offsets = np.arange(n + 1, dtype=np.int64)
        for aname, ameta in sorted(smeta["arrays"].items()):
            spec = ArraySpec.from_json(ameta)
            label = f"stream {name!r} array {aname!r}"
            try:
                known = ameta["sha256"] if recorded_sha and not spec.is_str else None
                sha, crc = _scan_array(
                    store, name, aname, spec, smeta["rows"], offsets, feed, known
                )
            except DamagedCacheError as err:  # the backend says what happened (a chunk lost)
                problems.append(f"{label}: {getattr(err, 'reason', err)}")
                continue
            except EmofuseError as err:  # a file it may not read: the line names it and the fix
                problems.append(f"{label}: unreadable ({_reason(err)})")
                continue
            except Exception as err:  # a damaged chunk can fail to decode in either backend
                problems.append(f"{label}: unreadable ({type(err).__name__}: {err})")
                continue
            checked += ameta["nbytes"]
            bar.update(ameta["nbytes"])
            if not store.has(f"checksums/{name}/{aname}"):
                problems.append(f"{label}: stored checksums missing (deleted), so not verifiable")
                continue
            try:
                stored_crc = store.read(f"checksums/{name}/{aname}", (slice(None),))
            except EmofuseError as err:
                problems.append(f"{label}: stored checksums unreadable ({_reason(err)})")
                continue
            bad = sorted(set(np.nonzero(np.atleast_2d(stored_crc != crc))[1].tolist()))
            if sha != ameta["sha256"] or bad:
                named = ", ".join(ids[i] if i < len(ids) else f"#{i}" for i in bad[:MAX_NAMED])
                more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
                where = f" in {len(bad)} utterance(s): {named}{more}" if bad else ""
                problems.append(f"{label}: checksum mismatch{where}")
    bar.close()
    value, recorded = digest.hexdigest(), meta.get("digest")
    if recorded is not None and recorded != value and not problems:  # data intact, metadata not
        problems.append(
            f"metadata: its recorded content digest {recorded[:12]}… is not the one its contents "
            f"give, {value[:12]}… (its metadata was edited after extraction)"
        )
    return VerifyResult(value, problems, checked)


def _scan_array(
    store, name, aname, spec, rows, offsets, feed, known_sha: str | None = None
) -> tuple[str, np.ndarray]:
    """Read one array in blocks: its SHA-256 (``known_sha`` if given: not recomputed) and
    per-utterance CRCs; feed the digest."""
    n = len(offsets) - 1
    sha = hashlib.sha256()
    if spec.is_str:
        data = little_endian(store.read(stored_name(name, f"{aname}.utf8"), (slice(None),)))
        soff = little_endian(store.read(stored_name(name, f"{aname}.offsets"), (slice(None),)))
        for label, arr in ((f"{name}/{aname}.utf8", data), (f"{name}/{aname}.offsets", soff)):
            feed(label, arr)
            sha.update(arr.tobytes())
        crc = np.array(
            [zlib.crc32(data[soff[offsets[i]] : soff[offsets[i + 1]]]) for i in range(n)],
            dtype=np.uint32,
        )
        return sha.hexdigest(), crc
    target = stored_name(name, aname)
    shape = store.shape(target)
    layers = shape[0] if spec.layered else 1
    crc = np.zeros((layers, n) if spec.layered else (n,), dtype=np.uint32)
    step = read_block_rows(spec, rows)

    for layer in range(layers):

        def blocks(layer=layer):
            for a in range(0, rows, step):
                idx = (layer, slice(a, a + step)) if spec.layered else (slice(a, a + step),)
                blk = little_endian(store.read(target, idx))
                if known_sha is None:
                    sha.update(blk)
                yield a, blk

        _crc_scan(blocks(), offsets, crc[layer] if spec.layered else crc)
    value = known_sha or sha.hexdigest()
    feed(f"{name}/{aname}", np.zeros((0,), dtype=spec.dtype), value)
    feed(f"{name}/{aname}.shape", np.asarray(shape, dtype=np.int64))
    return value, crc


def verify_cache(path: Path, progress: bool = False) -> VerifyResult:
    """Verify a finished store by path (EmofuseError if it is not a cache)."""
    store, meta = open_store(Path(path))
    try:
        return verify_store(store, meta, progress=progress)
    finally:
        store.close()
