"""The synthetic corpus: IEMOCAP layout and quirks, exact tiers, full-scale counts, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from emofuse.cli import cli
from emofuse.corpus import read_corpus
from emofuse.corpus.iemocap import SKIP_ODD_LINE, SKIP_TWIN, skip_label_reason
from emofuse.corpus.synthetic import dialog_names, write_synthetic_corpus
from emofuse.errors import EmofuseError

# iemocap.md: 4-class counts per session (ang, hap+exc, sad, neu) and per speaker
SESSION_TABLE = {
    "Ses01": (229, 278, 194, 384),
    "Ses02": (137, 327, 197, 362),
    "Ses03": (240, 286, 305, 320),
    "Ses04": (327, 303, 143, 258),
    "Ses05": (170, 442, 245, 384),
}
SPEAKERS = {
    "Ses01_F": 528, "Ses01_M": 557, "Ses02_F": 481, "Ses02_M": 542, "Ses03_F": 522,
    "Ses03_M": 629, "Ses04_F": 528, "Ses04_M": 503, "Ses05_F": 590, "Ses05_M": 651,
}  # fmt: skip


@pytest.mark.slow
def test_counts_profile_reproduces_the_real_four_class_table(counts_corpus):
    root = str(counts_corpus.root)
    out = CliRunner().invoke(cli, ["corpus", "stats", "--root", root, "--json"])
    assert out.exit_code == 0, out.output
    stats = json.loads(out.stdout)
    assert stats["utterances"] == 5531
    assert stats["labels"] == {"ang": 1103, "hap": 1636, "neu": 1708, "sad": 1084}
    assert stats["speakers"] == SPEAKERS
    assert stats["sessions"] == {s: sum(v) for s, v in SESSION_TABLE.items()}
    assert stats["with_alignment"] == 5530  # Ses03M_impro03_M001 has no alignment files
    assert stats["skipped"][SKIP_ODD_LINE]["count"] == 200
    assert stats["skipped"][skip_label_reason("xxx", "4")]["count"] == 2507
    assert stats["skipped"][skip_label_reason("fru", "4")]["count"] == 1849
    for ses, (ang, hap, sad, neu) in SESSION_TABLE.items():
        assert stats["session_labels"][ses] == {"ang": ang, "hap": hap, "sad": sad, "neu": neu}
    # the rest of the real corpus's numbers, from what the generator wrote
    utts = counts_corpus.utterances.values()
    assert len(utts) == 10039
    codes: dict[str, int] = {}
    for u in utts:
        codes[u.code] = codes.get(u.code, 0) + 1
    assert codes == {
        "xxx": 2507, "fru": 1849, "neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041,
        "hap": 595, "sur": 107, "fea": 40, "oth": 3, "dis": 2,
    }  # fmt: skip
    assert {g: sum(u.speaker.endswith(g) for u in utts) for g in "FM"} == {"F": 4800, "M": 5239}
    assert sorted(u.id for u in utts if u.tiers is None) == [
        "Ses03F_impro07_M030",
        "Ses03M_impro03_M001",
    ]
    dialogs = {u.dialog for u in utts}
    assert len(dialogs) == 151
    assert {"Ses03M_impro05a", "Ses03M_impro08b", "Ses05M_script01_1b"} <= dialogs
    assert all(0.05 <= u.duration <= 0.2 for u in utts)


def test_dialog_names_per_session():
    assert [len(dialog_names(s)) for s in range(1, 6)] == [28, 30, 32, 30, 31]


def test_reader_tiers_equal_the_generators_truth(demo_corpus):
    res = read_corpus("iemocap", root=demo_corpus.root, classes="all", progress=False)
    truth = demo_corpus.utterances
    assert {u.id for u in res.utterances} == set(truth)
    for u in res.utterances:
        t = truth[u.id]
        assert (u.extra["code"], u.speaker, u.text) == (t.code, t.speaker, t.text)
        assert u.duration == pytest.approx(t.duration)
        if t.tiers is None:
            assert u.tiers is None
            continue
        for tier in ("word", "syllable", "phone"):
            assert u.tiers[tier] == t.tiers[tier], (u.id, tier)
    assert sum(not u.aligned for u in res.utterances) == 2
    assert (
        sum(
            not u.aligned and u.label in ("neu", "hap", "exc", "sad", "ang") for u in res.utterances
        )
        == 1
    )


def _rms(wav: np.ndarray, a: float, b: float) -> float:
    seg = wav[int(round(a * 16000)) : int(round(b * 16000))]
    return float(np.sqrt(np.mean(seg**2)))


def _silence_violations(corpus, shift: float) -> int:
    """Utterances where a silence segment (shifted by `shift` s) holds speech energy."""
    bad = 0
    for utt_id, t in list(corpus.utterances.items())[::3]:
        if t.tiers is None:
            continue
        wav, _ = sf.read(
            corpus.root / f"Session{int(utt_id[3:5])}/sentences/wav/{t.dialog}/{utt_id}.wav"
        )
        sil = [
            (a + shift, b + shift) for a, b, s in t.tiers["word"] if s in ("<s>", "</s>", "<sil>")
        ]
        if max(_rms(wav, max(a, 0), b) for a, b in sil) > 0.005:
            bad += 1
    return bad


def test_alignment_matches_where_the_audio_is(demo_corpus):
    """Silences hold no speech and the last segment ends at the last sample; a reader that forgot
    the 2-frame delay (20 ms early) would put speech inside the silences."""
    for t in list(demo_corpus.utterances.values())[:50]:
        if t.tiers is not None:
            assert t.tiers["word"][-1][1] == pytest.approx(t.duration)
            assert t.tiers["word"][0][0] == pytest.approx(0.02)
    assert _silence_violations(demo_corpus, 0.0) == 0
    assert _silence_violations(demo_corpus, -0.02) > 20


def test_synthetic_quirks_are_present(demo_corpus):
    root = demo_corpus.root
    res = read_corpus("iemocap", root=root, classes="4", progress=False)
    assert len(res.skipped[SKIP_TWIN]) == len(demo_corpus.twins) == 6
    twin = root / demo_corpus.twins[3]
    assert twin.read_bytes()[:4] == bytes.fromhex("00051607")
    tx = (root / "Session3/dialog/transcriptions").glob("*.txt")
    body = b"".join(p.read_bytes() for p in tx if not p.name.startswith("._"))
    assert b"\r\n" in body and b"XX" in body
    lines = body.decode().split("\r\n")
    assert any(line in ("M: Yeah.", "F:Umm.", "M:", "F :Here you go.") for line in lines)
    assert len(res.skipped[SKIP_ODD_LINE]) == 14
    texts = " ".join(u.text for u in res.utterances)
    assert "[LAUGHTER]" in texts
    words = {s for u in res.utterances if u.tiers for _, _, s in u.tiers["word"]}
    assert {"<s>", "</s>", "<sil>", "++LAUGHTER++"} <= words
    assert any(w.endswith("(2)") for w in words)
    phones = {s for u in res.utterances if u.tiers for _, _, s in u.tiers["phone"]}
    assert any(p.endswith(" b") and "(" in p for p in phones)
    emo = (root / "Session1/dialog/EmoEvaluation").glob("Ses*.txt")
    ann = "".join(p.read_text() for p in emo)
    assert "dom ;" in ann and "dom  " in ann and "\t;\t()" in ann and "Other; ;" in ann
    assert (root / "Documentation" / "timeinfo.txt").is_file()
    assert all(1.0 <= u.duration <= 3.05 for u in res.utterances)
    for classes in ("5", "6", "all"):
        labels = {
            u.label
            for u in read_corpus("iemocap", root=root, classes=classes, progress=False).utterances
        }
        assert {"6": {"fru", "exc"}, "5": {"exc"}, "all": {"xxx", "fru", "sur"}}[classes] <= labels


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_other_corpus(tmp_path):
    kw = dict(utterances_per_speaker=4, others_per_speaker=1, duration=(0.3, 0.6), progress=False)
    a = _digest(write_synthetic_corpus(tmp_path / "a", seed=3, **kw).root)
    b = _digest(write_synthetic_corpus(tmp_path / "b", seed=3, **kw).root)
    c = _digest(write_synthetic_corpus(tmp_path / "c", seed=4, **kw).root)
    assert a == b
    assert len(a) > 300
    wavs = [k for k in a if k.endswith(".wav") and "._" not in k]
    assert sum(a[k] != c.get(k) for k in wavs) > len(wavs) // 2


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(EmofuseError, match="not empty"):
        write_synthetic_corpus(tmp_path, utterances_per_speaker=4, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_synth_command_writes_a_readable_corpus(tmp_path):
    out = tmp_path / "syn"
    args = ["corpus", "synth", "--out", str(out), "--utterances-per-speaker", "4"]
    args += ["--others-per-speaker", "0", "--duration", "0.3", "0.5", "--seed", "1"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "wrote 40 utterances" in r.output
    # rewriting our own output is allowed
    assert CliRunner().invoke(cli, args).exit_code == 0
    res = read_corpus("iemocap", root=out, progress=False)
    assert len(res.utterances) == 40 and {u.label for u in res.utterances} == {
        "neu",
        "hap",
        "sad",
        "ang",
    }
