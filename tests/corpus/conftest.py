"""Fixtures of the corpus tests: generated corpora (made once per test session) and a tiny
handwritten IEMOCAP_full_release with the verbatim lines of iemocap.md."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emofuse.corpus.synthetic import SyntheticCorpus, write_synthetic_corpus


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> SyntheticCorpus:
    """The demo profile exactly as `make demo` writes it (seed 0)."""
    return write_synthetic_corpus(tmp_path_factory.mktemp("demo"), "demo", seed=0, progress=False)


@pytest.fixture(scope="session")
def counts_corpus():
    """10,039 utterances (≈ 40k files): removed at teardown rather than left to pytest's
    retention, so no later test session (ours or another area's) pays for deleting them."""
    with tempfile.TemporaryDirectory(prefix="emofuse-counts-") as tmp:
        yield write_synthetic_corpus(Path(tmp) / "counts", "counts", seed=0, progress=False)


# AppleDouble companion bytes as macOS writes them: magic 00 05 16 07, version 00 02 00 00
APPLEDOUBLE = bytes.fromhex("0005160700020000") + b"Mac OS X        " + b"\x00\x02" + b"\x00" * 64

# ---- verbatim from iemocap.md (tabs are real tabs) -------------------------------------------
SUMMARY_01 = (
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"
    "\n"
    "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
    "C-E2:\tNeutral;\t()\n"
    "C-F1:\tNeutral;\t(curious)\n"
    "A-E3:\tval 3; act 2; dom  2;\t()\n"
    "A-F1:\tval 3; act 2; dom  1;\t()\n"
    "\n"
    "[7.5712 - 10.4750]\tSes01F_impro01_M000\tfru\t[2.5000, 2.0000, 2.5000]\n"
    "C-M5:\t;\t()\n"
    "C-E1:\tOther; ;\t()\n"
    "C-E3:\tFrustration; Disgust;\t()\n"
    "A-E1:\tval 2; act 3; dom ;\t()\n"
    "\n"
    "[11.0000 - 12.5000]\tSes01F_impro01_M001\texc\t[4.0000, 3.6667, 3.0000]\n"
    "C-E2:\tExcited;\t()\n"
    "\n"
)
TRANSCRIPT_01 = [
    "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.",
    "M: Yeah.",
    "Ses01F_impro01_M000 [007.5712-010.4750]: Do you have your forms?",
    "M: Yeah. ",
    "F:Umm.",
    "Ses01F_impro01_M001 [011.0000-012.5000]: Oh  [LAUGHTER] great!",
    "M:",
    "F :Here you go.",
]
SUMMARY_03 = (
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"
    "\n"
    "[60.7300 - 65.8600]\tSes01F_impro03_F013\tsad\t[1.3333, 2.0000, 2.5000]\n"
    "C-E1:\tSadness;\t()\n"
    "\n"
    "[37.7175 - 40.4700]\tSes01F_impro03_M007\thap\t[4.0000, 3.5000, 3.0000]\n"
    "C-E1:\tHappiness;\t()\n"
    "\n"
)
TRANSCRIPT_03 = [
    "Ses01F_impro03_M007 [037.7175-040.4700]: [LAUGHTER] That's really romantic.",
    "Ses01F_impro03_F013 [060.7300-065.8600]: I guess I'll-  I guess I'll have an internet husband.[LAUGHTER]",
]
WDSEG = (
    "\t SFrm  EFrm    SegAScr Word\n"
    "\t    0    40     -81920 <s>\n"
    "\t   41    72     -17530 WHAT(2)\n"
    "\t   73   132     -20000 ++LAUGHTER++\n"
    "\t  133   146    -258661 WELL\n"
    "\t  147   169     -10000 <sil>\n"
    "\t  170   199     -40511 </s>\n"
    " Total score:     -2398000\n"
)
PHSEG = (
    "\t     SFrm      EFrm    SegAScr Phone\n"
    "\t        0        40     -81920 SIL\n"
    "\t       41        50      -1000 W(SIL,AH) b\n"
    "\t       51        72      -1000 AH(HH,L) e\n"
    "\t       73       199      -1000 +LAUGHTER+\n"
    " Total score:     -2398000\n"
)
SYSEG = (
    "\t SFrm  EFrm    SegAScr Syllable\n"
    "\t    0    40     -81920 SIL\n"
    "\t   41   199     -17530 w_ah\n"
    " Total score:     -99450\n"
)
# session 3: an XX line (no wav, no label), an irregular dialog name, the unaligned utterance
SUMMARY_3 = (
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"
    "\n"
    "[1.0000 - 2.0000]\tSes03M_impro05a_F000\tang\t[1.5000, 4.0000, 4.0000]\n"
    "C-E1:\tAnger;\t()\n"
    "\n"
    "[3.0000 - 4.0000]\tSes03M_impro05a_M000\txxx\t[3.0000, 3.0000, 3.0000]\n"
    "C-E1:\tAnger;\t()\n"
    "C-E2:\tSadness;\t()\n"
    "\n"
)
TRANSCRIPT_3 = [
    "Ses03M_impro05a_F000 [001.0000-002.0000]: Get out!",
    "Ses03F_impro06_MXX0 [033.0941-033.6931]: Mmm, Hmm.",
    "Ses03M_impro05a_M000 [003.0000-004.0000]: [BREATHING] [garbage] Fine.",
]
SUMMARY_5 = (
    "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n"
    "\n"
    "[5.0000 - 6.5000]\tSes05M_script01_1b_F002\tneu\t[3.0000, 2.5000, 3.0000]\n"
    "C-E1:\tNeutral;\t()\n"
    "\n"
)
TRANSCRIPT_5 = ["Ses05M_script01_1b_F002 [005.0000-006.5000]: The table is there."]


def _wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * 16000)) / 16000
    sf.write(path, 0.1 * np.sin(2 * np.pi * 220 * t), 16000, subtype="PCM_16")


def _dialog(root: Path, session: int, dialog: str, summary: str, transcript: list[str], wavs):
    sdir = root / f"Session{session}"
    (sdir / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
    (sdir / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
    (sdir / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text(summary, newline="\n")
    (sdir / "dialog" / "transcriptions" / f"{dialog}.txt").write_bytes(
        ("\r\n".join(transcript) + "\r\n").encode()
    )
    for utt, seconds in wavs.items():
        _wav(sdir / "sentences" / "wav" / dialog / f"{utt}.wav", seconds)


@pytest.fixture
def mini_iemocap(tmp_path) -> Path:
    """A five-session IEMOCAP_full_release holding the verbatim examples of iemocap.md."""
    root = tmp_path / "IEMOCAP_full_release"
    for s in range(1, 6):
        for sub in ("dialog/EmoEvaluation", "dialog/transcriptions", "sentences/wav"):
            (root / f"Session{s}" / sub).mkdir(parents=True, exist_ok=True)
    (root / "Documentation").mkdir()
    (root / "Documentation" / "timeinfo.txt").write_text("seconds = (frame + 2) / 100\n")
    wavs_01 = {"Ses01F_impro01_F000": 2.02, "Ses01F_impro01_M000": 2.9, "Ses01F_impro01_M001": 1.5}
    _dialog(root, 1, "Ses01F_impro01", SUMMARY_01, TRANSCRIPT_01, wavs_01)
    _dialog(root, 1, "Ses01F_impro03", SUMMARY_03, TRANSCRIPT_03, {"Ses01F_impro03_M007": 2.75})
    # Ses01F_impro03_F013 is labelled and transcribed but its wav is missing
    _dialog(root, 3, "Ses03M_impro05a", SUMMARY_3, TRANSCRIPT_3, {"Ses03M_impro05a_F000": 1.0})
    (root / "Session3/sentences/wav/Ses03M_impro05a/Ses03M_impro05a_M000.wav").write_bytes(
        (root / "Session3/sentences/wav/Ses03M_impro05a/Ses03M_impro05a_F000.wav").read_bytes()
    )
    _dialog(
        root, 5, "Ses05M_script01_1b", SUMMARY_5, TRANSCRIPT_5, {"Ses05M_script01_1b_F002": 1.5}
    )
    fa = root / "Session1" / "sentences" / "ForcedAlignment" / "Ses01F_impro01"
    fa.mkdir(parents=True)
    for ext, body in ((".wdseg", WDSEG), (".phseg", PHSEG), (".syseg", SYSEG)):
        (fa / f"Ses01F_impro01_F000{ext}").write_text(body)
    # macOS twins beside real files, in several folders
    twins = [
        "Session1/sentences/wav/Ses01F_impro01/._Ses01F_impro01_F000.wav",
        "Session1/dialog/EmoEvaluation/._Ses01F_impro01.txt",
        "Session1/dialog/transcriptions/._Ses01F_impro01.txt",
        "Session1/sentences/ForcedAlignment/Ses01F_impro01/._Ses01F_impro01_F000.wdseg",
    ]
    for twin in twins:
        (root / twin).write_bytes(APPLEDOUBLE)
    # per-annotator folders are not label files
    (root / "Session1/dialog/EmoEvaluation/Categorical").mkdir()
    (root / "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_e1_cat.txt").write_text(
        "Ses01F_impro01_F000 :Neutral; ()\n"
    )
    return root
