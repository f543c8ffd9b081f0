"""What a resumed extraction must agree with: the rows it already stored."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from emofuse.audio import AudioProblem, audio_sha1, load_audio
from emofuse.corpus import Utterance
from emofuse.errors import EmofuseError
from emofuse.extract.rows import corpus_fields


def check_resumed(
    out: Path,
    stored: dict[str, dict],
    utts: Sequence[Utterance],
    complete: bool,
    workers: int = 4,
):
    """Refuse a resume whose stored rows disagree with this corpus (changed manifest, other corpus,
    changed audio).

    Every stored utterance must be in the corpus (unless the store is complete), carry the same
    corpus fields (label, speaker, text ...) and its audio file the same bytes (the SHA-1 stored at
    extraction): otherwise one store would mix two corpora, or keep the features of a recording
    that was replaced under the same name. Hashing re-reads the stored utterances' audio once per
    resume (in ``workers`` threads; audio is small next to the hours of encoding it saves).
    """
    from emofuse.cache.schema import canonical_json, parts_dir

    where = out if complete else parts_dir(out)
    restart = f"delete {where} (or choose another --out) to extract from scratch"
    by_id = {u.id: u for u in utts}
    extra = sorted(uid for uid in stored if uid not in by_id)
    if extra and not complete:
        raise EmofuseError(
            f"{where} holds {len(extra)} stored utterances that are not in this corpus (first: "
            f"{extra[0]!r}): the interrupted run read more; rerun with its corpus options "
            f"(--manifest/--root, --classes, --limit ...) to resume, or {restart}"
        )
    for u in utts:
        row = stored.get(u.id)
        if row is None:
            continue
        for key, value in corpus_fields(u).items():
            if key == "extra" and "alignment_sha1" not in (row.get(key) or {}):  # an older store
                value = {k: v for k, v in value.items() if k != "alignment_sha1"}
            if key in row and canonical_json(row[key]) != canonical_json(value):
                raise EmofuseError(
                    f"utterance {u.id}: {_first_difference(key, row[key], value, where)} (the "
                    "corpus, its manifest or --classes changed since it was extracted); rerun "
                    f"with the original corpus and options (--classes …), or {restart}"
                )
    hashed = [u for u in utts if (stored.get(u.id) or {}).get("audio_sha1")]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        now = list(pool.map(lambda u: audio_sha1(u.audio), hashed))
    owner = {row["audio_sha1"]: uid for uid, row in stored.items() if row.get("audio_sha1")}
    for u, sha in zip(hashed, now, strict=True):
        # unreadable now (None): its features were made when it was readable, and stand
        if sha is not None and sha != stored[u.id]["audio_sha1"]:
            # only the bytes' digest is stored, not the path: either may be what changed
            what = (
                f"it holds utterance {owner[sha]}'s audio"
                if owner.get(sha, u.id) != u.id
                else "other content"
            )
            raise EmofuseError(
                f"utterance {u.id}: its audio file {u.audio} is not the audio extracted into "
                f"{where} ({what}: the file changed, or the corpus now names another file); "
                f"restore the original file or path to resume, or {restart}"
            )


def check_skipped_again(
    out: Path,
    skipped: dict[str, tuple[str, Path]],
    utts: Sequence[Utterance],
    complete: bool,
    workers: int = 4,
) -> None:
    """Refuse a resume that would keep an utterance skipped whose audio reads now.

    A bad file the user fixed as the skip reason advised (copied again, converted) used to stay
    skipped on every rerun while the run reported it "already stored". Only the skipped
    utterances of this corpus are decoded again (a handful next to the corpus)."""

    def reads_now(u: Utterance) -> bool:
        try:
            load_audio(u.audio)
        except AudioProblem:
            return False
        return True

    again = [u for u in utts if u.id in skipped]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        readable = list(pool.map(reads_now, again))
    fixed = [u for u, ok in zip(again, readable, strict=True) if ok]
    if not fixed:
        return
    reason, where = skipped[fixed[0].id]
    more = f" (and {len(fixed) - 1} more)" if len(fixed) > 1 else ""
    if complete:
        redo = f"delete {out} (or choose another --out) and rerun to extract it"
    else:
        redo = f"delete the folder {where} (its utterances are extracted again) and rerun"
    raise EmofuseError(
        f"utterance {fixed[0].id}{more} was skipped in {where} ({reason.rstrip('.')}) but its "
        f"audio {fixed[0].audio} reads now; {redo}"
    )


def _first_difference(key: str, was: Any, now: Any, where: Path) -> str:
    """What differs between a stored corpus field and this corpus's, in words: the first key of a
    dict field that differs (not two whole dicts of annotations), the alignment by name."""
    from emofuse.cache.schema import canonical_json

    if isinstance(was, dict) and isinstance(now, dict):
        for sub in sorted(set(was) | set(now)):
            a, b = was.get(sub), now.get(sub)
            if canonical_json(a) == canonical_json(b):
                continue
            if sub == "alignment_sha1":
                return (
                    f"its alignment (the word/syllable/phone segments of its TextGrid or "
                    f".wdseg/.syseg/.phseg files) is not the one extracted into {where}"
                )
            return f"{key} field {sub!r} is {_short(a)} in {where} but {_short(b)} in this corpus"
    return f"{key} {_short(was)} in {where} but {_short(now)} in this corpus"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
