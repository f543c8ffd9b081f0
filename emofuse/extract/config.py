"""What an extraction is asked to do: its settings, the models they load, and the cache's fingerprint.

Everything here is decided before the first batch: which models (``load_models``), on which device and
in which dtype, which layers, which streams (``stream_specs``), and the fingerprint a resume must match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from emofuse import __version__
from emofuse.audio import SAMPLE_RATE
from emofuse.encoders import DEFAULT_SPEAKER_MODEL, DEFAULT_SPEECH_MODEL, DEFAULT_TEXT_MODEL
from emofuse.encoders.common import DTYPES, auto_dtype
from emofuse.errors import EmofuseError, os_reason
from emofuse.streams import GRANULARITIES, SEGMENT_TIERS

if TYPE_CHECKING:
    from emofuse.encoders.fbank import FbankEncoder
    from emofuse.encoders.speaker import SpeakerEncoder
    from emofuse.encoders.speech import SpeechEncoder
    from emofuse.encoders.text import TextEncoder

DEFAULT_SPEECH = DEFAULT_SPEECH_MODEL
DEFAULT_TEXT = DEFAULT_TEXT_MODEL
DEFAULT_SPEAKER = DEFAULT_SPEAKER_MODEL


@dataclass
class ExtractConfig:
    """Everything that decides what goes into the cache (and how fast it gets there)."""

    out: Path
    speech_model: str | None = DEFAULT_SPEECH  # hub id or folder; None = no speech streams
    text_model: str | None = DEFAULT_TEXT
    speaker_model: str | None = DEFAULT_SPEAKER
    layers: str = "all"  # speech layers stored frame by frame: all | last | 0,6,12
    text_layers: str = "all"
    granularity: tuple[str, ...] = GRANULARITIES
    keep_fillers: bool = False
    text_norm: str = "default"  # the reader's normalisation mode (recorded in the fingerprint)
    fbank: bool = False
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (common.auto_dtype) | float32 | float16 | bfloat16
    batch_seconds: float = 120.0  # padded audio seconds per speech-model batch
    flush_seconds: float = 10.0  # commit finished work at least this often (what a kill can lose)
    limit: int | None = None
    strict: bool = False
    decode_workers: int = 4
    # torch intra-op threads for this run (None: torch's current setting, i.e. OMP_NUM_THREADS or
    # one per core). Not load-adaptive on purpose: the thread count moves the last bits of CPU
    # kernels, and a resumed or torchrun-sharded run must store what an uninterrupted one stores.
    threads: int | None = None
    model_dir: Path | None = None  # where SpeechBrain keeps its loaded hparams (savedir)
    progress: bool = True


@dataclass
class ExtractSummary:
    """What one run did; printed by the CLI and returned to library callers."""

    out: Path
    stored: int = 0  # utterances written by this run
    resumed: int = 0  # utterances already in the store when the run started
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"id", "reason"}]
    padded: list[str] = field(default_factory=list)  # too short, padded to the model minimum
    min_samples: int = 0  # that minimum: the longest of every loaded model's shortest input
    truncated: int = 0  # transcripts cut at the text model's maximum length
    unaligned: int = 0  # stored utterances without alignment, those of an earlier (resumed) run too
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    estimate_bytes: int = 0
    digest: str | None = None  # content digest of the finished store (rank 0)
    is_main: bool = True  # rank 0 (prints the summary)


def parse_layers(spec: str, num_layers: int, option: str = "--layers") -> list[int]:
    """``all`` | ``last`` | ``0,6,12`` (negative indices count from the end) → absolute indices."""
    spec = spec.strip().lower()
    if spec == "all":
        return list(range(num_layers))
    if spec == "last":
        return [num_layers - 1]
    try:
        picked = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise EmofuseError(f"{option} {spec!r}: use all, last, or indices like 0,6,12") from None
    out = sorted({i % num_layers if -num_layers <= i < 0 else i for i in picked})
    if not out or out[-1] >= num_layers or out[0] < 0:
        raise EmofuseError(
            f"{option} {spec!r}: the model has hidden states 0..{num_layers - 1}; pick from those"
        )
    return out


@dataclass
class Models:
    """The frozen encoders a run loaded (None: that model is not used)."""

    speech: SpeechEncoder | None
    text: TextEncoder | None
    speaker: SpeakerEncoder | None
    fbank: FbankEncoder | None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return auto_dtype(device)
    if dtype not in DTYPES:
        raise EmofuseError(f"--dtype {dtype!r}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_models(cfg: ExtractConfig, device: torch.device, dtype: torch.dtype) -> Models:
    """Load the frozen encoders (each raises EmofuseError naming itself when it cannot load)."""
    # each import only when its model is asked for (start-up time counts on a short corpus)
    speech = text = speaker = fbank = None
    if cfg.speech_model:
        from emofuse.encoders.families import load_speech_encoder

        speech = load_speech_encoder(
            cfg.speech_model, device=device, dtype=dtype, max_batch_seconds=cfg.batch_seconds
        )
    if cfg.text_model:
        from emofuse.encoders.text import load_text_encoder

        text = load_text_encoder(cfg.text_model, device=device, dtype=dtype)
    if cfg.speaker_model:
        from emofuse.encoders.common import is_local
        from emofuse.encoders.speaker import load_speaker_encoder

        savedir = None  # a local folder is read in place: no copy that a stale one could shadow
        if not is_local(cfg.speaker_model):  # a hub id: SpeechBrain links its files here
            savedir = Path(cfg.model_dir or Path(cfg.out).parent / ".emofuse-models")
            savedir = savedir / str(cfg.speaker_model).replace("/", "--")  # one folder an id
            _check_savedir(savedir)
        speaker = load_speaker_encoder(cfg.speaker_model, device=device, savedir=savedir)
    if cfg.fbank:
        from emofuse.encoders.fbank import FbankEncoder

        fbank = FbankEncoder()
    return Models(speech, text, speaker, fbank)


def _check_savedir(savedir: Path) -> None:
    """SpeechBrain copies the speaker model's files into ``savedir``: a file there, or a path
    through a file, failed inside it and read as a broken model folder."""
    try:
        savedir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise EmofuseError(
            f"{savedir} (where the speaker model's files are linked for SpeechBrain, beside the "
            "--out cache) is a file or lies under one; move it away, or check --out"
        ) from None
    except OSError as err:
        raise EmofuseError(
            f"cannot create {savedir} (where the speaker model's files are linked for "
            f"SpeechBrain, beside the --out cache): {os_reason(err)}; choose a writable --out"
        ) from None


def _model_ref(enc: SpeechEncoder | TextEncoder | SpeakerEncoder | None) -> dict | None:
    """The model as the fingerprint names it: id, the revision of its weights and, for a local
    folder, of its configuration files (a hub revision is a commit: it covers both)."""
    if enc is None:
        return None
    from emofuse.encoders.common import config_sha256, is_local

    ref = {"id": str(enc.model_id), "revision": str(enc.revision)}
    config = (
        config_sha256(Path(str(enc.model_id)).expanduser()) if is_local(str(enc.model_id)) else None
    )
    return {**ref, "config": config} if config else ref


def content_settings(cfg: ExtractConfig, device: torch.device) -> dict:
    """The settings stored with the cache: what shaped its content, nothing about where or how fast.

    Output path, worker counts, progress and the number of ranks are left out, so a resumed or a
    sharded run describes itself exactly as an uninterrupted single-process run does.
    """
    keep = ("speech_model", "text_model", "speaker_model", "layers", "text_layers", "granularity",
            "keep_fillers", "text_norm", "fbank", "dtype", "batch_seconds")  # fmt: skip
    return {**{k: getattr(cfg, k) for k in keep}, "device": device.type}


def build_fingerprint(
    cfg: ExtractConfig,
    models: Models,
    layers: list[int],
    text_layers: list[int],
    dtype: torch.dtype,
    specs: list,
) -> dict:
    """What decides the stored numbers; resume only continues a store with the same fingerprint.
    ``specs`` (``stream_specs``'s) enter as their digest: the store's metadata is checked against
    it at open (cache/metacheck.py)."""
    from emofuse.cache.schema import specs_digest

    return {
        "emofuse": __version__,
        "speech_model": _model_ref(models.speech),
        "text_model": _model_ref(models.text),
        "speaker_model": _model_ref(models.speaker),
        "fbank": bool(models.fbank),
        "layers": layers,
        "text_layers": text_layers,
        "dtype": str(dtype).removeprefix("torch."),
        "sample_rate": SAMPLE_RATE,
        "text_norm": cfg.text_norm,
        "granularity": list(cfg.granularity),
        "keep_fillers": cfg.keep_fillers,
        "streams": specs_digest(specs),
    }


def stream_specs(cfg: ExtractConfig, models: Models, layers: list[int], text_layers: list[int]):
    """The cache streams this configuration writes (docs/architecture.md, section 2)."""
    from emofuse.cache import fixed, ragged

    specs = []
    if (sp := models.speech) is not None:
        model = str(sp.model_id)
        every = list(range(sp.num_layers))
        rows = ("float16", (len(layers), sp.dim))
        if "frame" in cfg.granularity:
            specs.append(
                ragged(
                    "speech",
                    {"data": rows},
                    model=model,
                    layers=layers,
                    num_layers=sp.num_layers,
                    dim=sp.dim,
                    frame_rate=sp.frame_rate,
                )
            )
        for name in ("speech_mean", "speech_std"):
            specs.append(
                fixed(
                    name, {"data": ("float16", (sp.num_layers, sp.dim))}, model=model, layers=every
                )
            )
        for tier in SEGMENT_TIERS:
            if tier in cfg.granularity:
                arrays = {"data": rows, "spans": ("int32", (2,)), "symbols": ("str", ())}
                specs.append(
                    ragged(
                        tier,
                        arrays,
                        model=model,
                        layers=layers,
                        keep_fillers=cfg.keep_fillers,
                        frame_rate=sp.frame_rate,
                    )
                )
    if (tx := models.text) is not None:
        specs.append(
            ragged(
                "text",
                {"data": ("float16", (len(text_layers), tx.dim)), "word_ids": ("int32", ())},
                model=str(tx.model_id),
                layers=text_layers,
                num_layers=tx.num_layers,
                max_tokens=getattr(tx, "max_tokens", None),
                text_norm=cfg.text_norm,
            )
        )
    if (sk := models.speaker) is not None:
        specs.append(
            fixed(
                "speaker", {"data": ("float16", (getattr(sk, "dim", 192),))}, model=str(sk.model_id)
            )
        )
    if models.fbank is not None:
        specs.append(
            ragged(
                "fbank",
                {"data": ("float16", (1, models.fbank.dim))},
                frame_rate=getattr(models.fbank, "frame_rate", 100.0),
            )
        )
    return specs
