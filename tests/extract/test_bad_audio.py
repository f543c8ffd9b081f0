"""Bad input: corrupt, empty, silent, 44.1 kHz stereo and too-short audio; --strict."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from emofuse.cache import open_cache
from emofuse.cli import cli
from emofuse.encoders import load_speech_encoder


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad-audio")
    rng = np.random.default_rng(0)
    sf.write(folder / "good.wav", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    stereo = 0.1 * rng.standard_normal((52920, 2)).astype(np.float32)  # 1.2 s at 44.1 kHz
    sf.write(folder / "stereo44.flac", stereo, 44100)
    # corrupt: a valid FLAC header (the reader's header check passes) over garbage frames
    sf.write(folder / "corrupt.flac", 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    head = (folder / "corrupt.flac").read_bytes()[:300]
    (folder / "corrupt.flac").write_bytes(head + rng.bytes(20000))
    sf.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(folder / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(folder / "short.wav", 0.1 * rng.standard_normal(200).astype(np.float32), 16000)
    names = ["good.wav", "stereo44.flac", "corrupt.flac", "empty.wav", "silent.wav", "short.wav"]
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "audio", "text", "label", "speaker"])
        for name in names:
            w.writerow([Path(name).stem, name, "hello there", "neu", "spk1"])
    return folder / "manifest.csv"


def _args(manifest: Path, tiny, out: Path) -> list[str]:
    return [
        "extract", "--corpus", "manifest", "--manifest", str(manifest), "--out", str(out),
        "--speech-model", str(tiny.speech["wav2vec2-group"]), "--text-model", "none",
        "--speaker-model", "none", "--quiet",
    ]  # fmt: skip


def test_bad_audio_is_skipped_reported_and_listed(tmp_path, bad_manifest, tiny) -> None:
    out = tmp_path / "bad.h5"
    result = CliRunner().invoke(cli, _args(bad_manifest, tiny, out))
    assert result.exit_code == 0, result.output
    assert "skipped 3 utterances for bad audio" in result.output
    for uid in ("corrupt", "empty", "silent"):
        assert f"  {uid}: " in result.output
    c = open_cache(out)
    reasons = {s["id"]: s["reason"] for s in c.skipped}
    assert set(reasons) == {"corrupt", "empty", "silent"}
    assert "unreadable" in reasons["corrupt"] and "empty" in reasons["empty"]
    assert "silent" in reasons["silent"]
    assert c.ids == ["good", "stereo44", "short"]
    enc = load_speech_encoder(tiny.speech["wav2vec2-group"])
    flags = dict(zip(c.ids, c.table["flags"], strict=True))
    frames = dict(zip(c.ids, c.table["n_frames"].tolist(), strict=True))
    duration = dict(zip(c.ids, c.table["duration"].tolist(), strict=True))
    # 44.1 kHz stereo: downmixed and resampled to 19,200 samples at 16 kHz
    assert "resampled:44100" in flags["stereo44"] and "downmixed:2" in flags["stereo44"]
    assert duration["stereo44"] == pytest.approx(1.2)
    assert frames["stereo44"] == enc.n_frames(19200)
    # too short: padded to the model minimum, flagged, still stored with its true duration
    assert "padded" in flags["short"] and "padded" not in flags["good"]
    assert duration["short"] == pytest.approx(200 / 16000)
    assert frames["short"] == enc.n_frames(enc.min_samples) >= 1


def test_strict_makes_bad_audio_fatal(tmp_path, bad_manifest, tiny) -> None:
    out = tmp_path / "strict.h5"
    result = CliRunner().invoke(cli, [*_args(bad_manifest, tiny, out), "--strict"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    error_lines = [x for x in result.output.splitlines() if x.startswith("error: ")]
    assert len(error_lines) == 1 and "corrupt" in error_lines[0] and "--strict" in error_lines[0]
    assert not out.exists()  # never reported complete


def test_clips_shorter_than_the_speaker_models_minimum_are_padded_on_every_run(tmp_path, tiny):
    """ECAPA's dilated, reflect-padded convolutions need 5 Fbank frames (640 samples at 16 kHz): a
    clip of 400 samples used to stop `extract` inside SpeechBrain (a RuntimeError traceback, on
    every rerun). Such clips are padded to the speaker model's minimum and flagged, like short
    clips for the speech model."""
    from emofuse.encoders.speaker import load_speaker_encoder

    folder = tmp_path / "c"
    folder.mkdir()
    rng = np.random.default_rng(3)
    lengths = {"s100": 100, "s400": 400, "s560": 560, "long": 16000}
    for name, n in lengths.items():
        sf.write(folder / f"{name}.wav", 0.1 * rng.standard_normal(n).astype(np.float32), 16000)
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "audio", "text", "label", "speaker"])
        w.writerows([name, f"{name}.wav", "hi", "neu", "spk1"] for name in lengths)
    out = tmp_path / "short.h5"
    args = [
        "extract", "--corpus", "manifest", "--manifest", str(folder / "manifest.csv"),
        "--out", str(out), "--speech-model", str(tiny.speech["wav2vec2-group"]),
        "--text-model", "none", "--speaker-model", str(tiny.speaker), "--quiet",
    ]  # fmt: skip
    for _ in range(2):
        result = CliRunner().invoke(cli, args)
        assert "Traceback" not in result.output
        assert result.exit_code == 0, result.output
    assert "4 were already there" in result.output
    enc = load_speaker_encoder(tiny.speaker, savedir=tmp_path / "sb")
    assert enc.min_samples == 640  # (5 - 1) hops of 160: the tiny ECAPA has the real kernels
    with open_cache(out) as c:
        assert c.ids == list(lengths) and not c.skipped
        flags = dict(zip(c.ids, c.table["flags"], strict=True))
        assert [uid for uid in c.ids if "padded" in flags[uid]] == ["s100", "s400", "s560"]
        vectors, _ = c.load("speaker")
    assert np.isfinite(vectors.astype(np.float32)).all()
    # the stored vector is the speaker model's output for the clip padded with silence
    wav, _ = sf.read(folder / "s400.wav", dtype="float32")
    expected = enc.encode([np.pad(wav, (0, enc.min_samples - len(wav)))])[0].numpy()
    np.testing.assert_allclose(vectors[1].astype(np.float32), expected, atol=2e-3, rtol=2e-3)


def _wav_with_header_rate(path: Path, rate: int, seconds: float = 1.0) -> Path:
    """A 16-bit WAV of `seconds` of noise whose header claims `rate` (the samples are 16 kHz)."""
    rng = np.random.default_rng(5)
    sf.write(path, 0.1 * rng.standard_normal(int(16000 * seconds)).astype(np.float32), 16000,
             subtype="PCM_16")  # fmt: skip
    raw = bytearray(path.read_bytes())
    assert raw[12:16] == b"fmt " and int.from_bytes(raw[24:28], "little") == 16000
    raw[24:28] = rate.to_bytes(4, "little")  # sample rate
    raw[28:32] = min(2 * rate, 2**32 - 1).to_bytes(4, "little")  # byte rate (mono, 16 bit)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("rate", [1_000_000, 2_000_000_000])
def test_an_absurd_header_sample_rate_is_refused_naming_the_file(tmp_path, tiny, rate) -> None:
    """A header claiming 1 MHz or 2 GHz (a damaged file) was read as a clip of a few milliseconds
    and extracted (padded, exit 0); predict and transcribe did the same. The one rate check of
    emofuse.audio refuses it everywhere: the manifest reader (extract, corpus stats) in one line
    naming the file, decoding (predict, transcribe, align) with the same reason."""
    from emofuse.audio import AudioProblem, load_audio, rate_problem

    folder = tmp_path / "c"
    folder.mkdir()
    sf.write(folder / "good.wav", 0.1 * np.ones(16000, np.float32), 16000)
    _wav_with_header_rate(folder / "huge.wav", rate)
    with open(folder / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "audio", "text", "label", "speaker"])
        w.writerows([[n, f"{n}.wav", "hi", "neu", "spk1"] for n in ("good", "huge")])
    out = tmp_path / "huge.h5"
    for args in (_args(folder / "manifest.csv", tiny, out),
                 ["corpus", "stats", "--corpus", "manifest", "--manifest",
                  str(folder / "manifest.csv"), "--json"]):  # fmt: skip
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
        assert "huge.wav" in lines[0] and f"{rate} Hz" in lines[0], lines[0]
        assert "outside 4000–384000 Hz" in lines[0] and "--skip-missing" in lines[0], lines[0]
    assert not out.exists() and not Path(f"{out}.parts").exists()
    with pytest.raises(AudioProblem, match=rf"sample rate {rate} Hz of huge.wav is above 384000"):
        load_audio(folder / "huge.wav")
    assert rate_problem(Path("hi.wav"), 384000) is None  # the top professional rate is audio
    assert "below 4000 Hz" in rate_problem(Path("lo.wav"), 3999)


def test_rows_dropped_by_skip_missing_are_listed_in_the_cache(tmp_path, bad_manifest, tiny):
    """The reader dropped them (named on stderr), but the cache said '0 skipped'."""
    from emofuse.corpus.manifest import SKIP_MISSING

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id,audio,text,label,speaker\ngood,{bad_manifest.parent / 'good.wav'},"
                        "hi,neu,spk1\ngone,nowhere.wav,hi,sad,spk2\n")  # fmt: skip
    out = tmp_path / "c.h5"
    args = [*_args(manifest, tiny, out), "--skip-missing"]
    for _ in range(2):  # the rerun finds the cache complete, the skip already listed
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        c = open_cache(out)
        assert list(c.ids) == ["good"]
        assert [(s["id"], s["reason"]) for s in c.skipped] == [("gone", SKIP_MISSING)]
    info = CliRunner().invoke(cli, ["info", str(out)])
    assert "1 (1 skipped)" in info.output, info.output


def test_segment_granularity_without_frames_on_unaligned_audio_is_refused(tmp_path, bad_manifest,
                                                                          tiny):  # fmt: skip
    """It stored no speech rows at all, and the summary said 'frame-level features only'."""
    out = tmp_path / "w.h5"
    result = CliRunner().invoke(cli, [*_args(bad_manifest, tiny, out), "--granularity", "word"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--granularity word: 6 of 6 utterances (e.g. good) have no word alignment" in lines[0]
    assert "--granularity frame,word" in lines[0] and not out.exists()


def test_stereo_whose_channels_cancel_is_not_called_silent(tmp_path) -> None:
    """Right = -left at full level: 'silent audio (peak below -80 dBFS)' misstated the file."""
    from emofuse.audio import AudioProblem, load_audio

    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000).astype(np.float32)
    path = tmp_path / "antiphase.wav"
    sf.write(path, np.stack([tone, -tone], axis=1), 16000)
    with pytest.raises(AudioProblem) as err:
        load_audio(path)
    assert "channels cancel when mixed to mono" in str(err.value) and "silent" not in str(err.value)
    sf.write(tmp_path / "quiet.wav", np.zeros((16000, 2), np.float32), 16000)
    with pytest.raises(AudioProblem, match="silent audio quiet.wav"):
        load_audio(tmp_path / "quiet.wav")


@pytest.mark.parametrize("store", ["finished", "unfinished"])
def test_a_skipped_file_fixed_as_advised_is_not_kept_skipped_by_the_rerun(
    tmp_path, bad_manifest, tiny, store
) -> None:
    """Round-6 row 30: after the user repaired a skipped file, the rerun said "13 already stored"
    (9 were; 4 were skipped), kept the stale skip and never extracted the repaired utterance. Now
    the rerun counts stored utterances only, and a skipped file that reads now is named with what
    to delete: the store (finished), or the one committed part recording the skip (unfinished)."""
    import os
    import shutil

    from emofuse import faults

    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("good.wav", "corrupt.flac"):
        shutil.copy(bad_manifest.parent / name, folder / name)
    shutil.copy(bad_manifest.parent / "good.wav", folder / "other.wav")
    manifest = folder / "m.csv"
    manifest.write_text("id,audio,text,label,speaker\ngood,good.wav,hi,neu,spk1\n"
                        "broken,corrupt.flac,hi,sad,spk2\nother,other.wav,hi,ang,spk3\n")  # fmt: skip
    out = tmp_path / "c.h5"
    args = [*_args(manifest, tiny, out), "--flush-seconds", "0"]
    if store == "unfinished":  # every part committed, the consolidation refused (disk full)
        os.environ[faults.ENV] = "consolidate-open:1:enospc"
    try:
        first = CliRunner().invoke(cli, args)
    finally:
        os.environ.pop(faults.ENV, None)
        faults.reset()
    assert first.exit_code == (0 if store == "finished" else 2), first.output
    again = CliRunner().invoke(cli, args)  # the file is still bad: the skip stands
    assert again.exit_code == 0, again.output
    assert "resuming: 2 already stored" in again.output, again.output
    assert [s["id"] for s in open_cache(out).skipped] == ["broken"]
    shutil.copy(folder / "good.wav", folder / "corrupt.flac")  # repaired (a WAV under that name)
    if store == "unfinished":  # make the store unfinished again, as in the first run
        shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.environ[faults.ENV] = "consolidate-open:1:enospc"
        try:
            shutil.copy(bad_manifest.parent / "corrupt.flac", folder / "corrupt.flac")
            assert CliRunner().invoke(cli, args).exit_code == 2
        finally:
            os.environ.pop(faults.ENV, None)
            faults.reset()
        shutil.copy(folder / "good.wav", folder / "corrupt.flac")
    fixed = CliRunner().invoke(cli, args)
    assert fixed.exit_code == 2, fixed.output
    lines = [x for x in fixed.output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in fixed.output, fixed.output
    assert lines[0].startswith("error: utterance broken was skipped in ")
    assert f"but its audio {folder / 'corrupt.flac'} reads now; delete " in lines[0]
    victim = Path(lines[0].split("; delete ")[1].removeprefix("the folder ").split(" ")[0])
    if store == "finished":
        assert victim == out
    else:
        assert victim.parent == Path(f"{out}.parts") and victim.name.startswith("rank")
    shutil.rmtree(victim) if victim.is_dir() else victim.unlink()  # as the line says
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    c = open_cache(out)
    assert sorted(c.ids) == ["broken", "good", "other"] and c.skipped == []


def test_strict_makes_an_iemocap_wav_the_reader_skipped_fatal(
    tmp_path, corpus_root, utterances, tiny
):
    """Round-11 row 136: an unreadable IEMOCAP wav was skipped by the corpus reader and the
    extract went on under --strict ("bad audio is fatal instead of skipped"), exit 0."""
    import shutil

    from tests.helpers import extract_args

    root = tmp_path / "corpus"
    shutil.copytree(corpus_root, root)
    wav = root / Path(utterances[0].audio).relative_to(corpus_root)
    wav.write_bytes(b"RIFF\x00\x00")  # truncated to a few bytes
    out = tmp_path / "strict.h5"
    result = CliRunner().invoke(cli, [*extract_args(root, tiny, out), "--strict"])
    assert result.exit_code == 2, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: utterance {wav.stem}: "), errors
    assert "(--strict; drop --strict to skip bad audio" in errors[0] and not out.exists()
    assert "Traceback" not in result.output
    relaxed = CliRunner().invoke(cli, extract_args(root, tiny, out))  # without: skipped, listed
    assert relaxed.exit_code == 0 and wav.stem in relaxed.output, relaxed.output


def test_a_compressed_file_cut_short_is_truncated_audio_not_a_short_utterance(tmp_path):
    """An MP3 cut to half its bytes decoded without complaint and was stored as a 1.1 s utterance
    of a 2.6 s recording (round-14 extract side row 66); its Xing header states the length."""
    import numpy as np
    import soundfile as sf

    from emofuse.audio import AudioProblem, load_audio

    t = np.arange(16000 * 3) / 16000
    sf.write(tmp_path / "w.mp3", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    assert abs(len(load_audio(tmp_path / "w.mp3").wav) / 16000 - 3.0) < 0.05  # the whole file
    raw = (tmp_path / "w.mp3").read_bytes()
    (tmp_path / "half.mp3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AudioProblem, match=r"truncated audio half.mp3: its header states 3.00 s"):
        load_audio(tmp_path / "half.mp3")


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_file_cut_short_is_truncated_audio_not_a_short_utterance(tmp_path, subtype):
    """An OGG cut to half its bytes was stored as a 0.78 s utterance of a 2.56 s recording
    (round-15 extract side row 12): Ogg states no length, but its last page ends the stream."""
    import numpy as np
    import soundfile as sf

    from emofuse.audio import AudioProblem, load_audio

    noise = 0.1 * np.random.default_rng(0).standard_normal(16000 * 3)
    sf.write(tmp_path / "w.ogg", noise.astype(np.float32), 16000, format="OGG", subtype=subtype)
    assert abs(len(load_audio(tmp_path / "w.ogg").wav) / 16000 - 3.0) < 0.05  # the whole file
    raw = (tmp_path / "w.ogg").read_bytes()
    for frac in (0.5, 0.9):
        (tmp_path / "cut.ogg").write_bytes(raw[: int(len(raw) * frac)])
        with pytest.raises(AudioProblem, match="truncated audio cut.ogg: its last Ogg page"):
            load_audio(tmp_path / "cut.ogg")
