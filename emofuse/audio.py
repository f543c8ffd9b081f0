"""Audio decoding for extraction: any file soundfile reads → 16 kHz mono float32.

Decoding and resampling run in the extraction pipeline's thread pool (soundfile and torch release
the GIL), so the model never waits on the disk. Bad audio is not an exception to crash on: it is a
reason (``AudioProblem``) the pipeline reports, records in the cache and skips — or, with
``--strict``, turns into a one-line error.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from emofuse.errors import os_reason

SAMPLE_RATE = 16000  # what every encoder reads; all audio is resampled to it
SILENCE_PEAK = 1e-4  # below -80 dBFS everywhere: nothing an encoder can use
MIN_SAMPLE_RATE = 4000  # below this no speech is left (a 1 Hz header is a broken file, not audio)
# above this no recorder writes (384 kHz is the top professional rate); a 1 MHz or 2 GHz header is a
# damaged file, whose few "samples" per 16 kHz frame would be resampled into a clip of nothing
MAX_SAMPLE_RATE = 384000
RATE_RANGE = f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz"


MAX_PEAK = 1e3  # float samples beyond this are not audio (full scale is ±1; ±1e3 is +60 dB over it)


class AudioProblem(Exception):
    """An utterance's audio cannot be used; ``str()`` is the reason stored in the cache."""


@dataclass
class Decoded:
    wav: np.ndarray  # (n,) float32 at SAMPLE_RATE, mono
    source_rate: int
    channels: int
    sha1: str = ""  # of the file's bytes, as decoded: what a resumed extraction compares


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> Decoded:
    """Read ``path``, average the channels, resample to ``target_rate``.

    Raises AudioProblem for a missing, unreadable, corrupt, empty or silent file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioProblem(f"missing audio file {path}")
    try:  # read once: the bytes that are hashed are the bytes that are decoded
        raw = path.read_bytes()
    except OSError as err:
        raise AudioProblem(f"unreadable audio {path.name}: {os_reason(err)}") from None
    try:
        data, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)  # (n, C)
    except Exception as err:  # libsndfile raises several types for damaged files
        why = getattr(err, "error_string", None) or str(err).splitlines()[0]
        raise AudioProblem(f"unreadable audio {path.name}: {why}") from None
    problem = header_problem(path, int(rate)) or _decoded_short(path, raw, data.shape[0], rate)
    if problem:
        raise AudioProblem(problem)
    if data.shape[0] == 0:
        raise AudioProblem(f"empty audio {path.name} (0 samples)")
    if not np.isfinite(data).all():
        raise AudioProblem(f"corrupt audio {path.name} (NaN/inf samples)")
    peak = float(np.abs(data).max())
    if peak > MAX_PEAK:  # a float WAV's full scale is ±1; the models' statistics overflow to NaN
        raise AudioProblem(
            f"corrupt audio {path.name} (samples reach {peak:.3g}, far outside a float file's ±1)"
        )
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (n,)
    if float(np.abs(wav).max()) < SILENCE_PEAK:
        if peak >= SILENCE_PEAK:  # each channel has sound; their mean cancels (antiphase)
            raise AudioProblem(
                f"audio {path.name}: its {data.shape[1]} channels cancel when mixed to mono "
                "(one is the other inverted); export one channel (e.g. sox in.wav out.wav "
                "remix 1) and use that file"
            )
        raise AudioProblem(f"silent audio {path.name} (peak below -80 dBFS)")
    if rate != target_rate:
        import torch  # noqa: PLC0415 - here, so the corpus readers' header checks stay light
        import torchaudio.functional as AF  # noqa: N812, PLC0415

        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), rate, target_rate).numpy()
    return Decoded(
        np.ascontiguousarray(wav, dtype=np.float32),
        int(rate),
        int(data.shape[1]),
        hashlib.sha1(raw).hexdigest(),
    )


def audio_sha1(path: str | Path) -> str | None:
    """SHA-1 of a file's bytes (``Decoded.sha1`` without decoding); None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha1").hexdigest()
    except OSError:
        return None


def rate_problem(path: str | Path, rate: int) -> str | None:
    """Why a header's sample rate cannot be speech audio (outside ``RATE_RANGE``), or None.

    The one check of the rate: decoding (extract, predict, transcribe, align) and the corpus readers
    (stats, folds, extract's reading) all ask it."""
    if rate < MIN_SAMPLE_RATE:
        where = f"below {MIN_SAMPLE_RATE} Hz"
    elif rate > MAX_SAMPLE_RATE:
        where = f"above {MAX_SAMPLE_RATE} Hz"
    else:
        return None
    return (
        f"sample rate {rate} Hz of {Path(path).name} is {where}, outside {RATE_RANGE} "
        "(a damaged header or not speech audio); re-export the file at 16 kHz"
    )


def _decoded_short(path: Path, raw: bytes, n: int, rate: int) -> str | None:
    """A compressed file (MP3 with a Xing/LAME header, say) whose header states a length its
    data falls well short of: cut short, decoded without complaint (it was stored short)."""
    try:
        claimed = sf.info(io.BytesIO(raw)).frames
    except Exception:  # noqa: BLE001 - the read above succeeded: no header figure to compare
        return None
    if claimed > 0 and n < 0.95 * claimed and (claimed - n) / rate > 0.1:
        return (
            f"truncated audio {path.name}: its header states {claimed / rate:.2f} s, its data "
            f"holds {n / rate:.2f} s (an interrupted copy?); copy the file again"
        )
    return None


def wav_truncated(path: Path) -> tuple[int, int] | None:
    """(bytes the WAV header claims for its data, bytes the file holds) when the file is cut short.

    libsndfile reads such a file without complaint, only shorter; the header tells. None for a
    whole file, a non-WAV file, or a streaming header (size 0 or 0xFFFFFFFF: length unknown).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            order = "<" if head[:4] == b"RIFF" else ">"
            size = os.fstat(fh.fileno()).st_size
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                (length,) = struct.unpack(order + "I", chunk[4:8])
                if chunk[:4] == b"data":
                    if length in (0, 0xFFFFFFFF):
                        return None
                    held = size - pos - 8
                    return (length, held) if held < length else None
                pos += 8 + length + (length & 1)
    except OSError:
        return None
    return None


_OGG_MAX_PAGE = 27 + 255 + 255 * 255  # an Ogg page's header, lacing table and body at most


def ogg_truncated(path: Path) -> bool:
    """An Ogg file (Vorbis, Opus, FLAC in Ogg) whose last page does not end its stream.

    Ogg states no total length, so libsndfile decodes a cut file without complaint, only shorter;
    but the stream's last page carries the end-of-stream flag (header type bit 0x04), and a file
    cut short ends on a page without it."""
    try:
        with open(path, "rb") as fh:
            if fh.read(4) != b"OggS":
                return False
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - _OGG_MAX_PAGE))
            tail = fh.read()
    except OSError:
        return False
    last = len(tail)
    while (last := tail.rfind(b"OggS", 0, last)) >= 0:  # the page that ends where the file does
        if len(tail) < last + 27 or tail[last + 4] != 0:  # cut in its header, or not a page
            continue
        lacing = tail[last + 27 : last + 27 + tail[last + 26]]  # the page's segment sizes
        if last + 27 + len(lacing) + sum(lacing) == len(tail):
            return not tail[last + 5] & 0x04
    return True  # no page ends at the end of the file: cut inside one


def truncation_problem(path: Path) -> str | None:
    """The reason a WAV or Ogg file cut short is skipped (see ``wav_truncated``,
    ``ogg_truncated``), or None; header and tail reads only."""
    if cut := wav_truncated(path):
        return (
            f"truncated audio {Path(path).name}: the header claims {cut[0]} data bytes, the file "
            f"holds {cut[1]} (an interrupted copy?); copy the file again"
        )
    if ogg_truncated(path):
        return (
            f"truncated audio {Path(path).name}: its last Ogg page does not end the stream (an "
            "interrupted copy?); copy the file again"
        )
    return None


def header_problem(path: Path, rate: int) -> str | None:
    """Why a file soundfile opened is still not usable audio (absurd rate, truncated), or None."""
    return rate_problem(path, rate) or truncation_problem(path)


def duration_of(path: str | Path) -> float:
    """Duration in seconds from the header only (0.0 when unreadable: decoding will report why)."""
    try:
        return float(sf.info(str(path)).duration)
    except Exception:
        return 0.0
