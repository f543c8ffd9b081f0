"""What ``emofuse info`` shows: a plain dict (printed as text or JSON) describing a cache."""

from __future__ import annotations

from collections import Counter
from typing import Any

from emofuse.cache.backends import BACKENDS
from emofuse.cache.reader import Cache
from emofuse.locks import busy, live_holder


def backend_label(kind: str) -> str:
    return "parts (unfinished)" if kind == "parts" else BACKENDS[kind].label


def summarize(cache: Cache) -> dict[str, Any]:
    """Utterances, labels, speakers, streams (shape, dtype, bytes, model, layers), sizes."""
    streams = {}
    for name, info in cache.streams.items():
        streams[name] = {
            "kind": info.kind,
            "rows": info.rows,
            "bytes": info.nbytes,
            "model": info.attrs.get("model"),
            "layers": info.layers,
            "attrs": info.attrs,
            "arrays": {
                a: {"shape": list(ai.shape), "dtype": ai.dtype, "bytes": ai.nbytes}
                for a, ai in info.arrays.items()
            },
        }
    raw, disk = cache.raw_bytes(), cache.disk_bytes()
    damaged = cache.damage()
    writer = live_holder(cache.path) if not cache.complete else None
    return {
        "path": str(cache.path),
        "backend": backend_label(cache._store.kind),
        "complete": cache.complete and not damaged,
        "damaged": damaged,
        "format_version": cache.format_version,
        "emofuse_version": cache.emofuse_version,
        "fingerprint": cache.fingerprint,
        "digest": cache.meta.get("digest"),  # as recorded at consolidation, not recomputed
        # what info read: headers and metadata; `emofuse verify` recomputes the digest from data
        "checked": "structure and metadata only (the digest is the recorded one; emofuse verify "
        "reads every byte and recomputes it)",
        "compression": cache.compression,
        "utterances": len(cache.ids),
        "skipped": len(cache.skipped),
        "labels": dict(sorted(Counter(str(x) for x in cache.table.get("label", [])).items())),
        "speakers": len({str(x) for x in cache.table.get("speaker", [])}),
        "models": sorted({str(s["model"]) for s in streams.values() if s["model"]}),
        "streams": streams,
        "raw_bytes": raw,
        "disk_bytes": disk,
        "disk_over_raw": round(disk / raw, 4) if raw else None,
        "being_written_by": writer,  # the lock record of a live extract, or None
    }


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def format_summary(s: dict[str, Any]) -> str:
    state = "complete" if s["complete"] else "INCOMPLETE"
    if s.get("being_written_by"):  # not interrupted: a live extract is at work
        state += f", {busy(s['being_written_by'])}"
    if s.get("damaged"):
        fix = (
            "rerun the same `emofuse extract`: it sets damaged parts aside and encodes their "
            "utterances again"
            if s["backend"] == backend_label("parts")
            else "run `emofuse verify` and extract again"
        )
        state = f"DAMAGED: {s['damaged'][0]}; {fix}"
    lines = [
        f"cache:       {s['path']} ({s['backend']}, {state})",
        f"format:      v{s['format_version']}, written by emofuse {s['emofuse_version']}, "
        f"compression {s['compression'] or 'none'}",
        f"fingerprint: {s['fingerprint']}",
        f"utterances:  {s['utterances']} ({s['skipped']} skipped), {s['speakers']} speakers",
        "labels:      " + ", ".join(f"{k} {v}" for k, v in s["labels"].items()),
        "models:      " + (", ".join(s["models"]) or "-"),
        "streams:",
    ]
    for name, st in s["streams"].items():
        layers = f" layers={st['layers']}" if st["layers"] is not None else ""
        lines.append(f"  {name:<12} {st['kind']:<6} {human(st['bytes']):>10}{layers}")
        for a, ai in st["arrays"].items():
            shape = "x".join(str(d) for d in ai["shape"])
            lines.append(f"    {a:<10} {shape:<22} {ai['dtype']:<8} {human(ai['bytes']):>10}")
    ratio = f" ({s['disk_over_raw']:.3f}x raw)" if s["disk_over_raw"] else ""
    lines.append(
        f"size:        {human(s['disk_bytes'])} on disk, {human(s['raw_bytes'])} raw{ratio}"
    )
    if s["complete"] and not s.get("damaged"):  # info reads headers, not the data
        lines.append(
            "checked:     structure and metadata only; `emofuse verify` reads every byte against "
            "its checksums"
        )
    return "\n".join(lines)
