"""The metadata's structure is checked at open, sealed or not (fourth audit round, rows 17-23):
with the seal key removed (as in a cache written before the seal existed) an edited layer list,
row count, skipped list, utterance count or deleted stream entry was trusted (verify ok, a false
shape or a traceback in info and train). Every store now has its types, its stated shapes against
the real arrays, and its stream groups against the store checked, reading headers only."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import pytest

from emofuse.cache import open_cache
from emofuse.cache.backends import DamagedCacheError
from emofuse.cache.schema import META_SEAL
from emofuse.cache.store import open_store
from tests.cache.cache_synth import write_cache
from tests.cache.test_cache_damaged import FIX, _cli, _one_line, _train, write_doc

SUFFIXES = pytest.mark.parametrize("suffix", [".h5", ".zarr"], ids=["hdf5", "zarr"])


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """One finished 8-utterance cache per backend, copied by every test (never edited)."""
    folder = tmp_path_factory.mktemp("bases")
    made = {}
    for suffix in (".h5", ".zarr"):
        made[suffix] = folder / f"base{suffix}"
        write_cache(made[suffix], n=8)
    return made


def read_doc(path: Path) -> dict:
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return json.loads(f["meta"][()].tobytes().decode("utf-8"))
    return json.loads((path / "zarr.json").read_text())["attributes"]["emofuse"]


def ed(src: Path, dst: Path, code: str) -> Path:
    """The audit's ``ed.py SRC DST CODE``: copy, run CODE on the metadata dict ``m``, write back."""
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    m = read_doc(dst)
    exec(code, {}, {"m": m})
    write_doc(dst, m)
    return dst


UNSEAL = f"m.pop({META_SEAL!r}); "


def assert_refused(path: Path, tmp_path: Path, reason: str) -> None:
    """verify: exit 1, `verify: FAILED, PATH is damaged (REASON); re-extract it ...`; info and
    train: exit 2, the same line after `error: `; never a traceback, train writes nothing."""
    text = f"{path} is damaged ({reason}); {FIX}"
    assert _one_line(_cli("verify", str(path)), 1) == f"verify: FAILED, {text}"
    assert _one_line(_cli("info", str(path)), 2) == f"error: {text}"
    assert _one_line(_cli("info", "--json", str(path)), 2) == f"error: {text}"
    assert _one_line(_train(path, tmp_path / "run"), 2) == f"error: {text}"
    assert not (tmp_path / "run").exists()


@SUFFIXES
def test_an_unsealed_genuine_cache_still_opens_and_verifies(tmp_path, bases, suffix):
    """Row 16: an older cache (no seal) whose metadata is intact is accepted, as before."""
    path = ed(bases[suffix], tmp_path / f"u_none{suffix}", f"m.pop({META_SEAL!r})")
    verify = _cli("verify", str(path))
    assert verify.exit_code == 0 and "\nverify: ok, " in verify.output, verify.output
    info = _cli("info", str(path))
    assert info.exit_code == 0 and "complete)" in info.output, info.output
    # "complete" is of what info reads: it says the data were not checked (round-10 borderline)
    assert "checked:     structure and metadata only; `emofuse verify` reads every" in info.output
    as_json = json.loads(_cli("info", "--json", str(path)).output)  # round-12 row 36: scripts too
    assert as_json["checked"].startswith("structure and metadata only (the digest is the recorded")


@SUFFIXES
def test_unsealed_layers_edited_into_a_string_is_named(tmp_path, bases, suffix):
    """Rows 17 and 23: verify said ok, info and train died in int(',') (ValueError traceback)."""
    path = ed(
        bases[suffix], tmp_path / f"u_lay{suffix}",
        UNSEAL + "m['streams']['speech']['attrs']['layers'] = '0,1,2'",
    )  # fmt: skip
    assert_refused(
        path, tmp_path,
        "metadata field streams.speech.attrs.layers is a str, expected a list of ints",
    )  # fmt: skip


@SUFFIXES
def test_unsealed_row_count_is_checked_against_the_stored_array(tmp_path, bases, suffix):
    """Row 18: rows 970 -> 960 in the metadata: verify ok, info printed the false shape."""
    rows = read_doc(bases[suffix])["streams"]["speech"]["arrays"]["data"]["rows"]
    path = ed(
        bases[suffix], tmp_path / f"u_rows{suffix}",
        UNSEAL + f"m['streams']['speech']['arrays']['data']['rows'] = {rows - 10}",
    )  # fmt: skip
    assert_refused(
        path, tmp_path,
        f"metadata field streams.speech.arrays.data.rows is {rows - 10}, but the stored array "
        f"streams/speech/data holds {rows} rows",
    )  # fmt: skip


@SUFFIXES
def test_unsealed_skipped_edited_into_a_string_is_named(tmp_path, bases, suffix):
    """Row 19: info counted the 2 characters of 'u9' as 2 skipped utterances."""
    path = ed(bases[suffix], tmp_path / f"u_sk{suffix}", UNSEAL + "m['skipped'] = 'u9'")
    assert_refused(
        path, tmp_path,
        "metadata field skipped is a str, expected a list of {id, reason} objects",
    )  # fmt: skip


@SUFFIXES
def test_unsealed_utterance_count_edited_into_a_string_is_named(tmp_path, bases, suffix):
    """Row 20: "its metadata counts 8 utterances, its table holds 8" named no difference."""
    path = ed(bases[suffix], tmp_path / f"u_nu{suffix}", UNSEAL + "m['n_utterances'] = '8'")
    assert_refused(path, tmp_path, "metadata field n_utterances is a str, expected an int")


@SUFFIXES
def test_unsealed_deleted_stream_entry_with_its_arrays_still_stored(tmp_path, bases, suffix):
    """Row 21: verify checked 24 KB instead of 211 KB and said ok; info said complete."""
    path = ed(bases[suffix], tmp_path / f"u_nows{suffix}", UNSEAL + "del m['streams']['speech']")
    assert_refused(
        path, tmp_path,
        "metadata field streams has no entry for the stored stream 'speech' "
        "(the store holds streams/speech/data)",
    )  # fmt: skip


@SUFFIXES
@pytest.mark.parametrize(
    "code, reason",
    [
        (
            "m['skipped'] = [{'id': 'u9'}]",
            "metadata field skipped[0].reason is missing",
        ),
        (
            "m['skipped'] = ['u9']",
            "metadata field skipped[0] is a str, expected an {{id, reason}} object",
        ),
        (
            "m['streams']['speech']['attrs']['layers'] = [1, '3']",
            "metadata field streams.speech.attrs.layers[1] is a str, expected an int",
        ),
        (
            "m['streams']['speech']['attrs']['layers'] = [1, 2, 3]",
            "metadata field streams.speech.attrs.layers lists 3 layers, but the stored array "
            "streams/speech/data holds 2",
        ),
        (
            "m['streams']['speech']['arrays']['data']['row_shape'] = [2, 7]",
            "metadata field streams.speech.arrays.data.row_shape is [2, 7], but the stored array "
            "streams/speech/data has rows of shape [2, 6]",
        ),
        (
            "m['streams']['speech']['arrays']['data']['dtype'] = 'float32'",
            "metadata field streams.speech.arrays.data.dtype is 'float32', but the stored array "
            "streams/speech/data holds float16",
        ),
        (
            "m['streams']['speech']['arrays']['data']['dtype'] = 'flaot16'",
            "metadata field streams.speech.arrays.data.dtype is 'flaot16', not a data type",
        ),
        (
            "m['streams']['speech']['arrays']['data']['nbytes'] += 2",
            "metadata field streams.speech.arrays.data.nbytes is {nbytes2}, expected {nbytes} "
            "(rows x row shape x item size)",
        ),
        (
            "m['streams']['speech']['rows'] -= 1",
            "metadata field streams.speech.rows is {rows1}, but streams.speech.arrays.data.rows "
            "is {rows}",
        ),
        (
            "m['streams']['speech']['kind'] = 'fixed'",
            "metadata field streams.speech.kind is 'fixed', but the store holds the offsets of a "
            "ragged stream (streams/speech/offsets)",
        ),
        (
            "m['streams']['speech']['kind'] = 'frames'",
            "metadata field streams.speech.kind is 'frames', expected 'ragged' or 'fixed'",
        ),
        (
            "del m['streams']['word']['arrays']['spans']",
            "metadata field streams.word.arrays has no entry for the stored array "
            "streams/word/spans",
        ),
        ("m['complete'] = 'yes'", "metadata field complete is a str, expected a bool"),
        ("m['settings'] = []", "metadata field settings is a list, expected a dict"),
        ("m['table'] = 'x'", "metadata field table is a str, expected a dict"),
        ("m['streams']['speech'] = 7", "metadata field streams.speech is an int, expected a dict"),
        ("m['n_utterances'] = -1", "metadata field n_utterances is -1, expected 0 or more"),
        ("m['n_utterances'] = 8.0", "metadata field n_utterances is a float, expected an int"),
        ("m['format_version'] = 'one'", "metadata field format_version is a str, expected an int"),
        ("m['fingerprint'] = None", "metadata field fingerprint is None, expected a str"),
    ],
    ids=[
        "skip-no-reason", "skip-str-item", "layer-str", "layer-count", "row-shape", "dtype",
        "dtype-unknown", "nbytes", "stream-rows", "kind-fixed", "kind-other", "array-entry",
        "complete", "settings", "table", "stream", "n-negative", "n-float", "version",
        "fingerprint",
    ],
)  # fmt: skip
def test_unsealed_metadata_of_the_wrong_structure_is_one_line(
    tmp_path, bases, suffix, code, reason
):
    """Each field's type, each stated shape against the stored array, each stored array against
    the metadata: one line naming the field and what is wrong (verify, info), no traceback."""
    speech = read_doc(bases[suffix])["streams"]["speech"]
    rows, nbytes = speech["rows"], speech["arrays"]["data"]["nbytes"]
    reason = reason.format(rows=rows, rows1=rows - 1, nbytes=nbytes, nbytes2=nbytes + 2)
    path = ed(bases[suffix], tmp_path / f"u{suffix}", UNSEAL + code)
    text = f"{path} is damaged ({reason}); {FIX}"
    assert _one_line(_cli("verify", str(path)), 1) == f"verify: FAILED, {text}"
    assert _one_line(_cli("info", str(path)), 2) == f"error: {text}"


@SUFFIXES
def test_a_sealed_edit_is_still_named_as_an_edit(tmp_path, bases, suffix):
    """The seal is checked first: an edited sealed store keeps its "changed after extraction"."""
    path = ed(
        bases[suffix], tmp_path / f"lay{suffix}", "m['streams']['speech']['attrs']['layers'] = '0'"
    )
    line = _one_line(_cli("info", str(path)), 2)
    assert re.search(r"its metadata was changed after extraction", line), line


@SUFFIXES
def test_opening_checks_the_structure_without_reading_data(tmp_path, bases, suffix, monkeypatch):
    """The check reads headers only: no array is read while a store is opened, and a genuine
    store (sealed or not) opens."""
    from emofuse.cache.hdf5 import HDF5Store
    from emofuse.cache.zarr import ZarrStore

    def refuse(self, name, *args, **kwargs):
        raise AssertionError(f"open_store read {name}")

    for cls in (HDF5Store, ZarrStore):
        monkeypatch.setattr(cls, "read", refuse)
        monkeypatch.setattr(cls, "read_into", refuse)
    unsealed = ed(bases[suffix], tmp_path / f"u{suffix}", f"m.pop({META_SEAL!r})")
    for path in (bases[suffix], unsealed):
        store, meta = open_store(path)
        store.close()
        assert meta["n_utterances"] == 8
    broken = ed(bases[suffix], tmp_path / f"b{suffix}", UNSEAL + "m['skipped'] = 'u9'")
    with pytest.raises(DamagedCacheError, match="metadata field skipped is a str"):
        open_store(broken)


@SUFFIXES
def test_a_genuine_cache_opens_for_reading(tmp_path, bases, suffix):
    """A fresh cache of either backend passes the check and loads (the reader's usual path)."""
    with open_cache(bases[suffix]) as cache:
        values, offsets = cache.load("speech", "data", layers=[3])
        assert values.shape[0] == offsets[-1] == cache.streams["speech"].rows


@SUFFIXES
def test_an_offsets_array_one_short_is_named_at_open(tmp_path, bases, suffix):
    """Round-10 row 110: the speech offsets cut to one per utterance (the last end lost): info
    said "complete", though reading refused the stream; their shape is now checked at open."""
    n = read_doc(bases[suffix])["n_utterances"]
    path = tmp_path / f"short{suffix}"
    if suffix == ".h5":
        shutil.copyfile(bases[suffix], path)
        with h5py.File(path, "r+") as f:
            kept = f["streams/speech/offsets"][:n]
            del f["streams/speech/offsets"]
            f.create_dataset("streams/speech/offsets", data=kept)
    else:
        shutil.copytree(bases[suffix], path)
        doc = path / "streams" / "speech" / "offsets" / "zarr.json"
        meta = json.loads(doc.read_text())
        meta["shape"] = [n]
        doc.write_text(json.dumps(meta))
    text = (
        f"error: {path} is damaged (the stored array streams/speech/offsets has shape [{n}], but "
        f"a store of {n} utterances holds [{n + 1}] offsets); {FIX}"
    )
    assert _one_line(_cli("info", str(path)), 2) == text
    assert _one_line(_train(path, tmp_path / "run"), 2) == text
    assert not (tmp_path / "run").exists()
    verify = _cli("verify", str(path))  # verify had found it: its own lines, exit 1
    assert verify.exit_code == 1 and "offsets damaged" in verify.output, verify.output


@SUFFIXES
def test_an_array_right_under_streams_is_named(tmp_path, bases, suffix):
    """Round-11 rows 129-130: an array added at streams/evil (no stream group) was a ValueError
    traceback in info, verify and extract."""
    import numpy as np
    import zarr

    path = tmp_path / f"evil{suffix}"
    if suffix == ".h5":
        shutil.copyfile(bases[suffix], path)
        with h5py.File(path, "r+") as f:
            f["streams/evil"] = np.zeros(3)
    else:
        shutil.copytree(bases[suffix], path)
        zarr.open_group(str(path), mode="r+")["streams"].create_array(
            "evil", shape=(3,), dtype="f4"
        )
    assert_refused(path, tmp_path, "the store holds streams/evil, which is no array of a stream")
