"""The structure of a store's metadata document, checked when the store is opened.

The seal (``meta_sha256``) finds an edited document, but a store without one (written before the
seal existed, or with it removed) was trusted as it stood: a layer list turned into a string, a
row count, a skipped list or a deleted stream entry reached every command (a false shape in
``info``, a traceback in ``train``, ``verify`` ok). ``check_structure`` runs on every store, sealed
or not, and reads headers only (no array data):

- every field the writer writes has its type (``layout.StoreLayout.meta`` is what it writes; the
  stream attrs are those of ``extract.config.stream_specs``), every id and name its form;
- every stored array's shape and dtype (read from its header) are those the metadata states;
- what the metadata states twice agrees: the fingerprint is that of the settings (so an edited
  fingerprint or setting is found), each stream's ``dim``, ``num_layers`` and layer list are those
  of its arrays and of the settings, a frame rate is a positive number;
- every array stored under ``streams/`` is described by the metadata. An array the metadata lists
  but the store lacks is left to ``verify`` and ``info``, which report it as damage by name.

A fault is one ``DamagedCacheError`` naming the store, the field and what is wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emofuse.cache.backends import ArrayStore, damaged_cache_error
from emofuse.cache.layout import stored_arrays, stored_name, stored_shape
from emofuse.cache.schema import (
    FIXED,
    RAGGED,
    STR,
    ArraySpec,
    settings_fingerprint,
    specs_digest,
)

SKIPPED = "{id, reason}"  # what the skipped list holds, as the messages call it


class _Fault(Exception):
    """What is wrong with one field (the text inside the damaged-cache line)."""


def check_structure(store: ArrayStore, meta: dict) -> None:
    """DamagedCacheError (one line) when ``meta`` is not the document a finished store holds or
    disagrees with the arrays of ``store``; reads no array data."""
    try:
        _check_types(meta)
        _check_described(store, meta)
        for name, smeta in sorted(meta["streams"].items()):
            _check_stream_shapes(store, name, smeta)
            _check_stream_sums(name, smeta)
        _check_derived(meta)  # after the shapes: a row shape edited is named against the array
    except _Fault as fault:
        raise damaged_cache_error(store.path, str(fault)) from None


# --- types ----------------------------------------------------------------------------------


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _what(value: Any) -> str:
    if value is None:
        return "None"
    names = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}
    return _a(names.get(type(value), type(value).__name__))


def _wrong(field: str, value: Any, expected: str) -> _Fault:
    return _Fault(f"metadata field {field} is {_what(value)}, expected {expected}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: Any, field: str) -> int:
    """An int of 0 or more (a row count, a byte count, a layer index)."""
    if not _is_int(value):
        raise _wrong(field, value, "an int")
    if value < 0:
        raise _Fault(f"metadata field {field} is {value}, expected 0 or more")
    return value


def _ints(value: Any, field: str) -> list[int]:
    if not isinstance(value, list):
        raise _wrong(field, value, "a list of ints")
    return [_count(v, f"{field}[{i}]") for i, v in enumerate(value)]


def _text(value: Any, field: str, optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        raise _wrong(field, value, "a str or None" if optional else "a str")


def _dict(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise _wrong(field, value, "a dict")
    return value


def _get(obj: dict, key: str, field: str) -> Any:
    if key not in obj:
        raise _Fault(f"metadata field {field}.{key} is missing")
    return obj[key]


def _check_types(meta: dict) -> None:
    if not _is_int(meta["format_version"]):
        raise _wrong("format_version", meta["format_version"], "an int")
    _text(meta["emofuse_version"], "emofuse_version")
    if not isinstance(meta["complete"], bool):
        raise _wrong("complete", meta["complete"], "a bool")
    _text(meta["fingerprint"], "fingerprint")
    _dict(meta["settings"], "settings")
    _text(meta.get("compression"), "compression", optional=True)
    _text(meta.get("digest"), "digest", optional=True)
    _count(meta["n_utterances"], "n_utterances")
    skipped = meta["skipped"]
    if not isinstance(skipped, list):
        raise _wrong("skipped", skipped, f"a list of {SKIPPED} objects")
    for i, item in enumerate(skipped):
        if not isinstance(item, dict):
            raise _wrong(f"skipped[{i}]", item, f"an {SKIPPED} object")
        for key in ("id", "reason"):
            _text(_get(item, key, f"skipped[{i}]"), f"skipped[{i}].{key}")
    _text(_get(_dict(meta["table"], "table"), "sha256", "table"), "table.sha256", optional=True)
    for name, smeta in _dict(meta["streams"], "streams").items():
        if not name or "/" in name or "." in name:
            raise _Fault(f"metadata field streams names a stream {name!r} (not a valid name)")
        _check_stream_types(name, smeta)


def _check_stream_types(name: str, smeta: Any) -> None:
    field = f"streams.{name}"
    _dict(smeta, field)
    kind = _get(smeta, "kind", field)
    if kind not in (RAGGED, FIXED):
        shown = repr(kind) if isinstance(kind, str) else _what(kind)
        raise _Fault(f"metadata field {field}.kind is {shown}, expected 'ragged' or 'fixed'")
    _count(_get(smeta, "rows", field), f"{field}.rows")
    if kind == RAGGED:
        _text(_get(smeta, "offsets_sha256", field), f"{field}.offsets_sha256", optional=True)
    _check_attrs(_dict(_get(smeta, "attrs", field), f"{field}.attrs"), f"{field}.attrs")
    arrays = _dict(_get(smeta, "arrays", field), f"{field}.arrays")
    if not arrays:
        raise _Fault(f"metadata field {field}.arrays is empty, expected the stream's arrays")
    for aname, ameta in arrays.items():
        if not aname or "/" in aname or "." in aname or aname == "offsets":
            raise _Fault(f"metadata field {field}.arrays names an array {aname!r} (not valid)")
        _check_array_types(ameta, f"{field}.arrays.{aname}")


def _check_array_types(ameta: Any, field: str) -> None:
    _dict(ameta, field)
    dtype = _get(ameta, "dtype", field)
    _text(dtype, f"{field}.dtype")
    if dtype != STR:
        try:
            np.dtype(dtype)
        except (TypeError, ValueError):
            raise _Fault(f"metadata field {field}.dtype is {dtype!r}, not a data type") from None
    _ints(_get(ameta, "row_shape", field), f"{field}.row_shape")
    _count(_get(ameta, "rows", field), f"{field}.rows")
    _count(_get(ameta, "nbytes", field), f"{field}.nbytes")
    _text(_get(ameta, "sha256", field), f"{field}.sha256", optional=True)


def _check_attrs(attrs: dict, field: str) -> None:
    """The attrs the extraction writes and the commands read; others (a custom stream's) are
    free-form."""
    if attrs.get("layers") is not None:
        _ints(attrs["layers"], f"{field}.layers")
    for key in ("num_layers", "dim"):
        if key in attrs:
            _count(attrs[key], f"{field}.{key}")
    for key in ("model", "text_norm"):
        if key in attrs:
            _text(attrs[key], f"{field}.{key}", optional=True)
    if attrs.get("max_tokens") is not None:
        _count(attrs["max_tokens"], f"{field}.max_tokens")
    rate = attrs.get("frame_rate")
    if rate is not None and not (isinstance(rate, (int, float)) and not isinstance(rate, bool)):
        raise _wrong(f"{field}.frame_rate", rate, "a number")
    if "keep_fillers" in attrs and not isinstance(attrs["keep_fillers"], bool):
        raise _wrong(f"{field}.keep_fillers", attrs["keep_fillers"], "a bool")


# --- what the metadata states twice ---------------------------------------------------------


def _short(digest: Any) -> str:
    return f"{str(digest)[:12]}…"


def _check_derived(meta: dict) -> None:
    """Values the metadata derives from others: the fingerprint from the settings, a stream's
    ``dim``/``num_layers``/layers from its arrays and the settings' resolved layer lists."""
    if not meta["complete"]:  # parts are consolidated under a temporary name, renamed when done
        raise _Fault(
            "metadata field complete is false, but a store is only ever put at its own path "
            "complete (the metadata was edited)"
        )
    settings = meta["settings"]
    want = settings_fingerprint(settings)
    if meta["fingerprint"] != want:
        raise _Fault(
            f"metadata field fingerprint is {_short(meta['fingerprint'])}, but its settings give "
            f"{_short(want)} (the fingerprint or a setting was edited)"
        )
    resolved = settings.get("fingerprint")
    resolved = resolved if isinstance(resolved, dict) else {}
    streams = meta["streams"]
    for name, smeta in sorted(streams.items()):
        field, attrs = f"streams.{name}.attrs", smeta["attrs"]
        data = smeta["arrays"].get("data")
        row_shape = data["row_shape"] if data and data["dtype"] != STR else None
        if "dim" in attrs and row_shape and attrs["dim"] != row_shape[-1]:
            raise _Fault(
                f"metadata field {field}.dim is {attrs['dim']}, but streams.{name}.arrays.data "
                f"has rows of {row_shape[-1]} values"
            )
        rate = attrs.get("frame_rate")
        if rate is not None and not (np.isfinite(rate) and rate > 0):
            raise _Fault(f"metadata field {field}.frame_rate is {rate}, expected a positive number")
        every = [streams.get(f"{name}_{s}") for s in ("mean", "std")]  # one row per model layer
        for other in (o for o in every if isinstance(o, dict) and "data" in o["arrays"]):
            held = (other["arrays"]["data"]["row_shape"] or [None])[0]
            if "num_layers" in attrs and held is not None and attrs["num_layers"] != held:
                raise _Fault(
                    f"metadata field {field}.num_layers is {attrs['num_layers']}, but its "
                    f"per-layer statistics hold {held} layers"
                )
        _check_resolved_layers(name, attrs, resolved)
    recorded = resolved.get("streams")  # an extraction's record of its stream specs
    if isinstance(recorded, str) and recorded != specs_digest(streams):  # any other edited spec
        raise _Fault(
            "metadata field streams does not hold the stream specs its settings recorded "
            f"(sha256 {_short(specs_digest(streams))} vs {_short(recorded)}): a stream's attrs "
            "or array specs were edited"
        )


def _check_resolved_layers(name: str, attrs: dict, resolved: dict) -> None:
    """A stream of the speech (text) model stores the layers the settings resolved ``--layers``
    (``--text-layers``) to; its per-layer statistics store every layer."""
    if name.endswith(("_mean", "_std")) or attrs.get("layers") is None:
        return
    for model_key, layers_key in (("speech_model", "layers"), ("text_model", "text_layers")):
        model = resolved.get(model_key)
        if not isinstance(model, dict) or attrs.get("model") != model.get("id"):
            continue
        if layers_key in resolved and attrs["layers"] != resolved[layers_key]:
            raise _Fault(
                f"metadata field streams.{name}.attrs.layers is {attrs['layers']}, but its "
                f"settings resolved the layers to {resolved[layers_key]}"
            )


# --- the metadata against the store ---------------------------------------------------------


def _check_described(store: ArrayStore, meta: dict) -> None:
    """Every array stored under ``streams/`` is one the metadata describes."""
    listed = store.list_arrays("streams")
    if listed is None:  # a backend that cannot list its arrays
        return
    extra = sorted(set(listed) - set(stored_arrays(meta)))
    if not extra:
        return
    first = extra[0]
    parts = first.split("/", 2)
    if len(parts) < 3:  # an array right under streams/, where only stream groups belong
        raise _Fault(f"the store holds {first}, which is no array of a stream")
    _, stream, array = parts
    if stream not in meta["streams"]:
        raise _Fault(
            f"metadata field streams has no entry for the stored stream {stream!r} "
            f"(the store holds {first})"
        )
    smeta = meta["streams"][stream]
    field = f"streams.{stream}"
    if array == "offsets" and smeta["kind"] == FIXED:
        raise _Fault(
            f"metadata field {field}.kind is 'fixed', but the store holds the offsets of a "
            f"ragged stream ({first})"
        )
    base, dot, _ = array.partition(".")
    if base in smeta["arrays"]:
        dtype = smeta["arrays"][base]["dtype"]
        held = "a string array" if dot else "a numeric array"
        raise _Fault(
            f"metadata field {field}.arrays.{base}.dtype is {dtype!r}, but the store holds "
            f"{base} as {held} ({first})"
        )
    raise _Fault(f"metadata field {field}.arrays has no entry for the stored array {first}")


def _shown(shape: tuple[int, ...]) -> str:
    return str(list(shape))


def _check_stream_shapes(store: ArrayStore, name: str, smeta: dict) -> None:
    for aname, ameta in sorted(smeta["arrays"].items()):
        field = f"streams.{name}.arrays.{aname}"
        spec = ArraySpec.from_json(ameta)
        if spec.is_str:
            _check_strings(store, name, aname, ameta, field)
            continue
        target = stored_name(name, aname)
        header = store.array_header(target)
        if header is None:  # missing: verify and info name it as damage
            continue
        shape, dtype = header
        want = stored_shape(spec, ameta["rows"])
        if shape != want:
            axis = 1 if spec.layered else 0
            if len(shape) == len(want) and shape[:axis] + shape[axis + 1 :] == (
                want[:axis] + want[axis + 1 :]
            ):
                raise _Fault(
                    f"metadata field {field}.rows is {ameta['rows']}, but the stored array "
                    f"{target} holds {shape[axis]} rows"
                )
            if len(shape) == len(want):
                rows = shape[:axis] + shape[axis + 1 :]
                raise _Fault(
                    f"metadata field {field}.row_shape is {ameta['row_shape']}, but the stored "
                    f"array {target} has rows of shape {_shown(rows)}"
                )
            raise _Fault(
                f"metadata field {field}.row_shape is {ameta['row_shape']}, but the stored "
                f"array {target} has shape {_shown(shape)}"
            )
        if dtype is not None and dtype != spec.dtype:
            raise _Fault(
                f"metadata field {field}.dtype is {ameta['dtype']!r}, but the stored array "
                f"{target} holds {dtype}"
            )


def _check_strings(store: ArrayStore, name: str, aname: str, ameta: dict, field: str) -> None:
    """A string array: its UTF-8 bytes (``nbytes`` of them) and ``rows + 1`` byte offsets."""
    data = stored_name(name, f"{aname}.utf8")
    header = store.array_header(data)
    if header is not None and header[0] != (ameta["nbytes"],):
        raise _Fault(
            f"metadata field {field}.nbytes is {ameta['nbytes']}, but the stored array {data} "
            f"has shape {_shown(header[0])}"
        )
    offsets = stored_name(name, f"{aname}.offsets")
    header = store.array_header(offsets)
    if header is not None and header[0] != (ameta["rows"] + 1,):
        raise _Fault(
            f"metadata field {field}.rows is {ameta['rows']}, but the stored array {offsets} "
            f"has shape {_shown(header[0])} (one offset per row, plus one)"
        )


def _check_stream_sums(name: str, smeta: dict) -> None:
    """What the metadata states twice agrees with itself: row counts, byte counts, layers."""
    field = f"streams.{name}"
    for aname, ameta in sorted(smeta["arrays"].items()):
        if ameta["rows"] != smeta["rows"]:
            raise _Fault(
                f"metadata field {field}.rows is {smeta['rows']}, but "
                f"{field}.arrays.{aname}.rows is {ameta['rows']}"
            )
        spec = ArraySpec.from_json(ameta)
        if spec.is_str:
            continue
        size = ameta["rows"] * int(np.prod(spec.row_shape, dtype=np.int64))
        size *= np.dtype(spec.dtype).itemsize
        if ameta["nbytes"] != size:
            raise _Fault(
                f"metadata field {field}.arrays.{aname}.nbytes is {ameta['nbytes']}, expected "
                f"{size} (rows x row shape x item size)"
            )
    layers = smeta["attrs"].get("layers")
    data = smeta["arrays"].get("data")
    if layers is None or data is None:
        return
    spec = ArraySpec.from_json(data)
    if spec.layered and len(layers) != spec.row_shape[0]:
        raise _Fault(
            f"metadata field {field}.attrs.layers lists {len(layers)} layers, but the stored "
            f"array {stored_name(name, 'data')} holds {spec.row_shape[0]}"
        )
    total = smeta["attrs"].get("num_layers")
    if total is not None and layers and max(layers) >= total:
        raise _Fault(
            f"metadata field {field}.attrs.layers holds layer {max(layers)}, but "
            f"{field}.attrs.num_layers is {total}"
        )
