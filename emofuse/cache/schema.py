"""The cache schema: stream specs, the utterance table, canonical JSON and the fingerprint.

One schema serves both backends (HDF5 and Zarr v3). What lives where inside a store:

- ``streams/<stream>/offsets``  (N + 1,) int64 — ragged streams only: utterance i owns rows
  ``offsets[i]:offsets[i+1]``.
- ``streams/<stream>/<array>``  the concatenated rows. An array whose per-row shape has two or more
  axes (``data`` (L, D) of speech, segments, text, fbank, pooled mean/std) is stored **layer-major**
  as (L, rows, D), so that loading 1 of 25 layers reads one contiguous 1/25 of the bytes. Other
  arrays (spans (2,), word_ids (), speaker (F,)) are stored row-major (rows, ...).
- ``streams/<stream>/<array>.utf8`` + ``<array>.offsets`` — string arrays (segment symbols): UTF-8
  bytes + (rows + 1) byte offsets, the same ragged trick, identical in both backends.
- ``checksums/<stream>/<array>`` uint32 CRC-32 per (layer, utterance) or per utterance: lets
  ``verify`` name the damaged utterances; whole-array SHA-256s live in the metadata.
- ``table`` uint8: canonical JSON of the utterance table (columnar).
- metadata (format, versions, fingerprint, settings, stream specs, skipped, checksums) — Zarr root
  attributes / an HDF5 ``meta`` uint8 JSON dataset (HDF5 attributes are limited to 64 KiB).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.errors import EmofuseError

FORMAT = "emofuse-cache"
FORMAT_VERSION = 1
RAGGED, FIXED = "ragged", "fixed"
STR = "str"  # logical dtype of string arrays (stored as UTF-8 bytes + offsets)

# Utterance-table columns in their documented order; extra keys of a meta row follow, sorted.
TABLE_COLUMNS = (
    "id",
    "speaker",
    "session",
    "gender",
    "label",
    "duration",
    "text",
    "text_norm",
    "aligned",
    "n_frames",
    "flags",
    "split",
    "extra",
    "audio_sha1",
)
# Typed columns: the reader returns these as numeric numpy arrays (None -> the fill value).
TYPED_COLUMNS = {
    "duration": (np.float64, math.nan),
    "n_frames": (np.int64, -1),
    "aligned": (bool, False),
}


@dataclass(frozen=True)
class ArraySpec:
    """One named array of a stream: its dtype and the shape of ONE row (e.g. (L, D) for speech)."""

    dtype: str
    row_shape: tuple[int, ...] = ()

    @property
    def layered(self) -> bool:
        """Arrays with >= 2 per-row axes store their first axis (layers) outermost."""
        return len(self.row_shape) >= 2

    @property
    def is_str(self) -> bool:
        return self.dtype == STR

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "row_shape": list(self.row_shape)}

    @classmethod
    def from_json(cls, obj: Any) -> ArraySpec:
        if isinstance(obj, ArraySpec):
            return obj
        if isinstance(obj, (tuple, list)):  # ("float16", (L, D)) shorthand
            dtype, shape = obj
            return cls(_dtype_name(dtype), tuple(int(s) for s in shape))
        shape = obj.get("row_shape", obj.get("shape", ()))
        return cls(_dtype_name(obj["dtype"]), tuple(int(s) for s in shape))


@dataclass(frozen=True)
class StreamSpec:
    """A stream: ragged (any number of rows per utterance) or fixed (one row per utterance).

    ``attrs`` carries what a reader needs to interpret it (model, layers, dim, frame_rate ...).
    """

    name: str
    kind: str
    arrays: dict[str, ArraySpec]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in (RAGGED, FIXED):
            raise EmofuseError(
                f"stream {self.name!r}: kind must be 'ragged' or 'fixed', not {self.kind!r}"
            )
        if not self.arrays:
            raise EmofuseError(f"stream {self.name!r} declares no arrays")
        for name in self.arrays:
            if not name or "/" in name or "." in name or name == "offsets":
                raise EmofuseError(
                    f"stream {self.name!r}: array name {name!r} is reserved or invalid"
                )

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "arrays": {k: v.to_json() for k, v in sorted(self.arrays.items())},
            "attrs": jsonable(self.attrs),
        }

    @classmethod
    def from_json(cls, name: str, obj: Any) -> StreamSpec:
        if isinstance(obj, StreamSpec):
            return obj if obj.name == name else StreamSpec(name, obj.kind, obj.arrays, obj.attrs)
        arrays = {k: ArraySpec.from_json(v) for k, v in obj["arrays"].items()}
        return cls(name, obj["kind"], arrays, dict(obj.get("attrs", {})))


def ragged(name: str, arrays: dict[str, Any], **attrs: Any) -> StreamSpec:
    """Shorthand: ``ragged("speech", {"data": ("float16", (L, D))}, model=..., layers=[...])``."""
    return StreamSpec(name, RAGGED, {k: ArraySpec.from_json(v) for k, v in arrays.items()}, attrs)


def fixed(name: str, arrays: dict[str, Any], **attrs: Any) -> StreamSpec:
    """Shorthand: ``fixed("speaker", {"data": ("float16", (192,))}, model=...)``."""
    return StreamSpec(name, FIXED, {k: ArraySpec.from_json(v) for k, v in arrays.items()}, attrs)


def normalise_specs(streams: Any) -> dict[str, StreamSpec]:
    """Accept a list of StreamSpec, a dict name -> StreamSpec, or plain JSON dicts."""
    if streams is None:
        raise EmofuseError("CacheWriter needs streams=... (the stream specs of the extraction)")
    if isinstance(streams, dict):
        specs = {name: StreamSpec.from_json(name, s) for name, s in streams.items()}
    else:
        specs = {s.name: s for s in streams}
    for name in specs:
        if not name or "/" in name or "." in name:
            raise EmofuseError(f"stream name {name!r} is invalid (no '/' or '.', not empty)")
    return dict(sorted(specs.items()))


@dataclass
class ArrayInfo:
    """What a reader knows about one stored array: logical shape is rows-first (R, *row_shape)."""

    dtype: str
    row_shape: tuple[int, ...]
    rows: int
    nbytes: int  # raw (uncompressed) bytes
    sha256: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.row_shape)

    @property
    def layered(self) -> bool:
        return len(self.row_shape) >= 2


@dataclass
class StreamInfo:
    """A stored stream: kind, attrs (model, layers, dim, frame_rate ...), arrays and total rows."""

    name: str
    kind: str
    attrs: dict[str, Any]
    arrays: dict[str, ArrayInfo]
    rows: int
    n_utterances: int

    @property
    def layers(self) -> list[int] | None:
        layers = self.attrs.get("layers")
        return None if layers is None else [int(x) for x in layers]

    @property
    def nbytes(self) -> int:
        """Raw bytes of the arrays plus the offsets of a ragged stream."""
        offsets = 8 * (self.n_utterances + 1) if self.kind == RAGGED else 0
        return sum(a.nbytes for a in self.arrays.values()) + offsets


# --- canonical JSON and fingerprint ---------------------------------------------------------


def jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, tuples, Paths and sets to plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(jsonable(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same value always gives the same bytes."""
    return json.dumps(
        jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def fingerprint_of(settings: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the extraction settings (what makes two caches comparable)."""
    return hashlib.sha256(canonical_json(settings)).hexdigest()


def specs_digest(streams: Any) -> str:
    """sha256 of the stream specs (kind, array dtypes and row shapes, attrs such as the model, its
    layers, dim and frame rate) in canonical form: the extraction records it in its settings, so
    the metadata check finds an edited spec at open."""
    specs = {n: s.to_json() for n, s in normalise_specs(streams).items()}
    return hashlib.sha256(canonical_json(specs)).hexdigest()


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """The fingerprint a store written with ``settings`` records: that of the resolved values under
    ``settings["fingerprint"]`` where the extraction stored them (model ids and revisions, layer
    indices), else of the settings themselves. The metadata check recomputes it at open, so an
    edited fingerprint or an edited setting is found as damage, sealed or not."""
    resolved = settings.get("fingerprint")
    return fingerprint_of(resolved if isinstance(resolved, dict) else settings)


def _dtype_name(dtype: Any) -> str:
    if dtype in (str, STR, "U", "O", object):
        return STR
    return np.dtype(dtype).name


def parts_dir(path: Path) -> Path:
    """Where an unfinished store keeps its committed parts."""
    return path.with_name(path.name + ".parts")


META_SEAL = "meta_sha256"  # the metadata document's own checksum (cache/consolidate.py writes it)


def _unsealed(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k != META_SEAL}


def seal(meta: dict) -> dict:
    """``meta`` with the sha256 of its canonical JSON: an edit that keeps it valid JSON (a row
    count, a layer list, a deleted stream entry) is then found at open, like flipped data."""
    body = _unsealed(meta)
    return {**body, META_SEAL: hashlib.sha256(canonical_json(body)).hexdigest()}


def seal_broken(meta: dict) -> bool:
    """Whether a sealed metadata document no longer matches its seal (unsealed: an older cache)."""
    recorded = meta.get(META_SEAL)
    if recorded is None:
        return False
    return recorded != hashlib.sha256(canonical_json(_unsealed(meta))).hexdigest()


def little_endian(block: np.ndarray) -> np.ndarray:
    """Canonical byte form for checksums/digests: C-contiguous, little-endian."""
    block = np.ascontiguousarray(block)
    if block.dtype.byteorder == ">":
        block = block.astype(block.dtype.newbyteorder("<"))
    return block


def first_difference(a: Any, b: Any, key: str = "") -> tuple[str, Any, Any]:
    """The first (dotted key, value in a, value in b) where two settings dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if canonical_json(a.get(k)) != canonical_json(b.get(k)):
                return first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
    return key, a, b


def without_configs(settings: dict) -> bytes:
    """``settings`` as an emofuse before model config digests wrote them (canonical JSON)."""
    fp = settings.get("fingerprint")
    if isinstance(fp, dict):
        fp = {k: {n: v for n, v in r.items() if n != "config"} if isinstance(r, dict) else r
              for k, r in fp.items()}  # fmt: skip
    return canonical_json({**settings, "fingerprint": fp} if fp is not None else settings)
