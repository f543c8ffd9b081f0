"""An extracted store whose metadata was edited to wrong values of the right type (fifth audit,
extract side, rows 13-17): with the seal removed, a stream's dim, frame rate or layer count, the
fingerprint, a setting or the recorded digest could be changed and `verify` still said ok, while a
rerun of the same extract refused the store with advice that did not fit ("different stream specs",
"different settings"). The extraction now records its stream specs in its settings and the
fingerprint is that of the settings, so the check at open names the edited field; `verify` compares
the digest it computes with the recorded one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from emofuse.cache.schema import META_SEAL
from emofuse.cli import cli
from tests.cache.test_cache_damaged import FIX, _one_line
from tests.cache.test_cache_meta_structure import ed, read_doc
from tests.extract.test_faults_extract import error_line, manifest_args, write_manifest

UNSEAL = f"m.pop({META_SEAL!r}); "
SUFFIXES = pytest.mark.parametrize("suffix", [".h5", ".zarr"], ids=["hdf5", "zarr"])


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny) -> dict:
    """A manifest of four clips and one finished store of it per backend (never edited)."""
    folder = tmp_path_factory.mktemp("edited")
    rng = np.random.default_rng(3)
    clips = {f"u{i}.wav": (0.1 * rng.standard_normal(8000 + 1600 * i), 16000) for i in range(4)}
    manifest = write_manifest(folder / "corpus", clips)
    stores = {}
    for suffix in (".h5", ".zarr"):
        stores[suffix] = folder / f"base{suffix}"
        result = _cli(*manifest_args(manifest, tiny, stores[suffix]))
        assert result.exit_code == 0, result.output
    return {"manifest": manifest, "stores": stores}


def _rerun(made: dict, tiny, path: Path):
    return _cli(*manifest_args(made["manifest"], tiny, path))


def _refused_everywhere(made, tiny, path: Path, reason: str) -> None:
    """verify exit 1, info and the same extract rerun exit 2: one line naming the edited field."""
    text = f"{path} is damaged ({reason}); {FIX}"
    assert _one_line(_cli("verify", str(path)), 1) == f"verify: FAILED, {text}"
    assert _one_line(_cli("info", str(path)), 2) == f"error: {text}"
    rerun = _rerun(made, tiny, path)
    assert rerun.exit_code == 2 and error_line(rerun.output) == f"error: {text}", rerun.output


def test_the_settings_record_the_stream_specs_and_give_the_fingerprint(made) -> None:
    meta = read_doc(made["stores"][".h5"])
    resolved = meta["settings"]["fingerprint"]
    assert len(resolved["streams"]) == 64  # the sha256 of the specs
    from emofuse.cache.schema import fingerprint_of, specs_digest

    assert resolved["streams"] == specs_digest(meta["streams"])
    assert meta["fingerprint"] == fingerprint_of(resolved)


@SUFFIXES
@pytest.mark.parametrize(
    "code, reason",
    [
        (  # row 13: dim
            "m['streams']['speech']['attrs']['dim'] = 64",
            "metadata field streams.speech.attrs.dim is 64, but streams.speech.arrays.data has "
            "rows of {dim} values",
        ),
        (  # row 13: num_layers
            "m['streams']['speech']['attrs']['num_layers'] = 10",
            "metadata field streams.speech.attrs.num_layers is 10, but its per-layer statistics "
            "hold {num_layers} layers",
        ),
        (  # row 13: frame_rate (well formed, only the recorded specs disagree)
            "m['streams']['speech']['attrs']['frame_rate'] = 100.0",
            "metadata field streams does not hold the stream specs its settings recorded",
        ),
        (
            "m['streams']['speech']['attrs']['frame_rate'] = 0",
            "metadata field streams.speech.attrs.frame_rate is 0, expected a positive number",
        ),
        (  # a layer list of the right length and valid layers, not those extracted
            "a = m['streams']['speech']['attrs']; a['layers'] = a['layers'][::-1]",
            "metadata field streams.speech.attrs.layers is {reversed}, but its settings resolved "
            "the layers to {layers}",
        ),
        (  # row 15
            "m['fingerprint'] = '0' * 64",
            "metadata field fingerprint is 000000000000…, but its settings give {fp12}… (the "
            "fingerprint or a setting was edited)",
        ),
        (  # row 16
            "m['settings']['fingerprint']['speech_model']['id'] = 'facebook/hubert-large-ll60k'",
            "metadata field fingerprint is {fp12}…, but its settings give ",
        ),
    ],
    ids=["dim", "num-layers", "frame-rate", "frame-rate-zero", "layers", "fingerprint", "model"],
)
def test_an_unsealed_edit_of_a_derived_value_is_named_at_open(
    tmp_path, made, tiny, suffix, code, reason
) -> None:
    base = made["stores"][suffix]
    meta = read_doc(base)
    speech = meta["streams"]["speech"]["attrs"]
    reason = reason.format(
        dim=speech["dim"],
        num_layers=speech["num_layers"],
        fp12=meta["fingerprint"][:12],
        layers=speech["layers"],
        reversed=speech["layers"][::-1],
    )
    assert len(speech["layers"]) > 1
    path = ed(base, tmp_path / f"x{suffix}", UNSEAL + code)
    verify = _one_line(_cli("verify", str(path)), 1)
    assert verify.startswith(f"verify: FAILED, {path} is damaged ({reason}"), verify
    assert verify.endswith(f"; {FIX}"), verify
    info = _one_line(_cli("info", str(path)), 2)
    assert info == "error: " + verify.removeprefix("verify: FAILED, "), info
    rerun = _rerun(made, tiny, path)  # the same extract: not "different settings/stream specs"
    assert rerun.exit_code == 2 and error_line(rerun.output) == info, rerun.output


def test_a_frame_rate_edit_names_the_recorded_specs(tmp_path, made, tiny) -> None:
    """The whole line for the edit only the recorded specs find (row 13's frame rate)."""
    base = made["stores"][".h5"]
    from emofuse.cache.schema import specs_digest

    path = ed(
        base, tmp_path / "fr.h5", UNSEAL + "m['streams']['speech']['attrs']['frame_rate'] = 7.5"
    )
    meta = read_doc(path)
    now, was = specs_digest(meta["streams"]), meta["settings"]["fingerprint"]["streams"]
    _refused_everywhere(
        made, tiny, path,
        "metadata field streams does not hold the stream specs its settings recorded (sha256 "
        f"{now[:12]}… vs {was[:12]}…): a stream's attrs or array specs were edited",
    )  # fmt: skip


@SUFFIXES
def test_an_edited_recorded_digest_fails_verify_and_the_rerun_names_it(
    tmp_path, made, tiny, suffix
) -> None:
    """Row 14: verify said ok while a rerun of the extract called the store damaged."""
    base = made["stores"][suffix]
    real = read_doc(base)["digest"]
    path = ed(base, tmp_path / f"dig{suffix}", UNSEAL + "m['digest'] = '0' * 64")
    verify = _cli("verify", str(path))
    problem = (
        f"metadata: its recorded content digest 000000000000… is not the one its contents give, "
        f"{real[:12]}… (its metadata was edited after extraction)"
    )
    assert verify.exit_code == 1, verify.output
    assert verify.output.splitlines() == [
        f"damaged: {problem}",
        f"verify: FAILED, 1 problem(s) in {path}",  # no digest line for a FAILED store
    ]
    rerun = _rerun(made, tiny, path)
    assert rerun.exit_code == 2, rerun.output
    assert error_line(rerun.output) == (
        f"error: {path} is damaged ({problem}): delete it and rerun to re-extract"
    )


@SUFFIXES
@pytest.mark.parametrize(
    "edit, option", [("m['settings']['text_norm'] = 'raw'", "--text-norm"),
                     ("m['settings']['batch_seconds'] = 7.0", "--batch-seconds")],
)  # fmt: skip
def test_an_edited_recorded_option_is_named_as_damage_not_blamed_on_the_rerun(
    tmp_path, made, tiny, suffix, edit, option
) -> None:
    """Round-6 row 35: a store whose recorded --text-norm was edited (unsealed) made the same
    extract rerun say "was extracted with --text-norm 'raw', this run has 'default'; rerun with the
    same options", and that rerun then failed on an internal field. The options the user gives are
    the original ones: the store is damaged, and the line says to re-extract it."""
    base = made["stores"][suffix]
    path = ed(base, tmp_path / f"opt{suffix}", UNSEAL + edit)
    rerun = _rerun(made, tiny, path)
    assert rerun.exit_code == 2, rerun.output
    line = error_line(rerun.output)
    assert line.startswith(f"error: {path} is damaged (metadata: its recorded content digest")
    assert line.endswith("delete it and rerun to re-extract") and option not in line
    # an intact store extracted with other options still names the option
    other = _cli(*manifest_args(made["manifest"], tiny, base, "--batch-seconds", "7"))
    assert other.exit_code == 2 and "was extracted with --batch-seconds" in error_line(other.output)


def test_an_edited_parts_manifest_is_named_as_edited_not_as_other_settings(
    tmp_path, made, tiny
) -> None:
    """A killed extract's parts manifest whose stream specs were edited: the resume with the same
    options said "different stream specs"; it now says the manifest was edited."""
    from tests.extract.test_resume_integrity import killed_after_two_parts

    out = tmp_path / "k.h5"
    parts = killed_after_two_parts(tiny, made["manifest"], out)
    dim = read_doc(made["stores"][".h5"])["streams"]["speech"]["attrs"]["dim"]
    doc = json.loads((parts / "manifest.json").read_text())
    doc["streams"]["speech"]["attrs"]["dim"] = 64
    (parts / "manifest.json").write_text(json.dumps(doc))
    rerun = _rerun(made, tiny, out)
    assert rerun.exit_code == 2, rerun.output
    assert error_line(rerun.output) == (
        f"error: {parts} is damaged (its streams.speech.attrs.dim is 64, but its settings give "
        f"{dim}: its metadata was edited): delete {parts} and rerun to extract from scratch"
    )
    assert sorted(p.name for p in parts.glob("rank*")) == ["rank000-000000", "rank000-000001"]
