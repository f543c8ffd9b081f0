"""Manifest `alignment` column → extract: the cached phone/syllable/word spans are the TextGrid
intervals mapped to model frames, for our TextGrids and MFA-style ones; an empty cell = unaligned."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from emofuse.align.textgrid import read_textgrid, write_textgrid
from emofuse.cache import open_cache
from emofuse.cli import cli
from emofuse.encoders.tiny import build_tiny_models
from emofuse.errors import EmofuseError
from emofuse.segments import clean_symbol, is_filler
from tests.helpers import write_manifest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def _textgrids(folder, utts):
    """One TextGrid per utterance from the synthetic corpus's exact tiers (fillers left blank)."""
    names = []
    for u in utts:
        tiers = {t: [s for s in segs if not is_filler(s[2])] for t, segs in u.tiers.items()}
        write_textgrid(folder / f"{u.id}.TextGrid", tiers, u.duration)
        names.append(f"tg/{u.id}.TextGrid")
    return names


def test_extract_spans_equal_textgrid_intervals(tmp_path, tiny, synth_utts):
    utts = synth_utts[:6]
    (tmp_path / "tg").mkdir()
    names = _textgrids(tmp_path / "tg", utts)
    manifest = write_manifest(tmp_path / "m.csv", utts)
    lines = manifest.read_text().splitlines()
    rows = [lines[0] + ",alignment"] + [
        f"{line},{'' if i == 5 else names[i]}" for i, line in enumerate(lines[1:])
    ]  # the last utterance: empty cell = not aligned
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "c.h5"
    result = CliRunner().invoke(cli, [
        "extract", "--corpus", "manifest", "--manifest", str(manifest), "--out", str(out),
        "--speech-model", str(tiny.speech["hubert"]), "--text-model", "none",
        "--speaker-model", "none", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    with open_cache(out) as c:
        table = {k: list(v) for k, v in c.table.items()}
        rate = c.streams["speech"].attrs["frame_rate"]
        n_frames = dict(zip(table["id"], table["n_frames"], strict=True))
        for stream in ("phone", "syllable", "word"):
            spans, offsets = c.load(stream, "spans")
            symbols, _ = c.load(stream, "symbols")
            for k, uid in enumerate(c.ids):
                got = spans[offsets[k] : offsets[k + 1]].tolist()
                syms = [str(s) for s in symbols[offsets[k] : offsets[k + 1]]]
                if uid == utts[5].id:
                    assert got == [] and not table["aligned"][k]
                    continue
                intervals = read_textgrid(tmp_path / f"tg/{uid}.TextGrid")[stream]
                want = []
                for s, e, _ in intervals:
                    a = min(math.floor(s * rate + 1e-6), n_frames[uid] - 1)
                    want.append([a, max(a + 1, min(math.ceil(e * rate - 1e-6), n_frames[uid]))])
                assert got == want, (stream, uid)
                assert syms == [clean_symbol(sym) for *_, sym in intervals]
                assert table["aligned"][k]
        assert int(np.sum(table["aligned"])) == 5


def test_mfa_textgrid_in_a_manifest_gets_syllables(tmp_path, synth_utts):
    from tests.asr.test_textgrid import _mfa_file

    u = synth_utts[0]
    _mfa_file(tmp_path / "mfa.TextGrid")
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"id,audio,text,label,speaker,alignment\n{u.id},{u.audio},x,neu,s1,mfa.TextGrid\n"
    )
    from emofuse.corpus import read_corpus

    (got,) = read_corpus("manifest", manifest=manifest, progress=False).utterances
    assert set(got.tiers) == {"word", "syllable", "phone"}
    assert len(got.tiers["syllable"]) == 5


def test_missing_textgrid_is_a_one_line_error(tmp_path, synth_utts):
    from emofuse.corpus import read_corpus

    u = synth_utts[0]
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"id,audio,text,label,speaker,alignment\n{u.id},{u.audio},x,neu,s1,nope.TextGrid\n"
    )
    with pytest.raises(EmofuseError, match="row 1: alignment .*nope.TextGrid .* is missing"):
        read_corpus("manifest", manifest=manifest, progress=False)


def test_a_textgrid_without_a_tier_asked_for_is_noted_at_extract(tmp_path, tiny, synth_utts):
    """A words-only TextGrid gave its utterance 0 phone and syllable rows with no word said."""
    utts = synth_utts[:2]
    (tmp_path / "tg").mkdir()
    names = _textgrids(tmp_path / "tg", utts)
    u = utts[1]
    words = [s for s in u.tiers["word"] if not is_filler(s[2])]
    write_textgrid(tmp_path / names[1], {"word": words}, u.duration)  # no phones, no syllables
    manifest = write_manifest(tmp_path / "m.csv", utts)
    lines = manifest.read_text().splitlines()
    rows = [lines[0] + ",alignment"] + [f"{line},{names[i]}" for i, line in enumerate(lines[1:])]
    manifest.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(cli, [
        "extract", "--corpus", "manifest", "--manifest", str(manifest), "--out",
        str(tmp_path / "c.h5"), "--speech-model", str(tiny.speech["hubert"]), "--text-model",
        "none", "--speaker-model", "none", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    for tier in ("phone", "syllable"):
        assert (
            f"note: 1 aligned utterance(s) have no {tier} segments (e.g. {u.id}:" in result.output
        )
    assert "no word segments" not in result.output
