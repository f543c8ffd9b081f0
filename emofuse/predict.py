"""Trained heads on new recordings: same encoders, same features, fold models averaged.

``predict`` does not re-implement feature extraction. It builds Utterance records for the new
files and runs the very extraction pipeline (``emofuse.extract.run_extract``) with the settings
recorded in the run's cache, into a temporary cache; it then checks that the models it loaded are
the ones the run was trained on (same model ids and weight hashes, layers, text normalisation),
loads the temporary cache with the training data layer and runs the heads. Whatever holds for the
training features (padding invariance, true frame counts, fp16 storage) holds here too.

With `asr_model`, files without a given transcript are transcribed (Whisper, emofuse.asr). When the
head reads segment streams, files with a transcript are force-aligned (PocketSphinx); files that have
none or cannot be aligned keep empty segment streams, and heads fall back to frames for those
branches (as they do for unaligned corpus utterances); the notes say so. Without a transcript the
text model sees an empty string (only its special tokens).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.corpus import Utterance
from emofuse.corpus.text import normalize_text
from emofuse.device import resolve_device
from emofuse.errors import EmofuseError
from emofuse.heads.registry import head_streams
from emofuse.streams import SEGMENT_TIERS
from emofuse.train.checkpoints import load_fold_model, resolve_saved_head
from emofuse.train.configseal import check_config_seal
from emofuse.train.data import NonFiniteError, TrainData
from emofuse.train.headcode import check_no_unrecorded_modules
from emofuse.train.headerrors import user_head_code
from emofuse.train.loop import predict_probs
from emofuse.train.paths import relative_path_error
from emofuse.train.rundir import (
    check_checkpoints,
    finished_folds,
    is_trained_run,
    read_run_config,
)
from emofuse.transcripts import read_transcripts, texts_for

# fingerprint keys that decide what the head sees; dtype/device may differ between the GPU box that
# extracted the training cache and the machine that predicts (fp16 storage rounds both the same way)
MATCH_KEYS = ("speech_model", "text_model", "speaker_model", "fbank", "layers", "text_layers")


@dataclass
class Prediction:
    audio: str
    label: str
    probabilities: dict[str, float]
    text: str | None


@dataclass
class PredictResult:
    predictions: list[Prediction]
    folds: list[int]
    notes: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    text_ignored: bool = False  # a transcript was given but the head reads no text
    reads_text: bool = True  # the run's head reads the text stream at all

    def to_dict(self) -> dict[str, Any]:
        return {
            "folds": self.folds,
            "notes": self.notes,
            "text_used": self.reads_text and not self.text_ignored,
            "skipped": self.skipped,
            "predictions": [p.__dict__ for p in self.predictions],
        }


def _audio_advice(why: str) -> str:
    """What to do about audio extraction skipped: the reasons that carry their own advice keep it
    (a truncated copy, a sample rate, cancelling channels), the others get the one that fits."""
    if "; " in why:
        return ""
    if why.startswith(("silent audio", "empty audio")):
        return "; give a recording with speech in it"
    if why.startswith("corrupt audio"):
        return "; give an intact copy of the recording (export it again)"
    return "; give a recording soundfile reads (WAV, FLAC, OGG or MP3)"


def _unfinished_note(run: Path, config: dict[str, Any]) -> list[str]:
    """A note when the run lacks folds of its plan: the prediction is the mean of fewer folds
    than its report may show (a fold deleted or damaged since, or trained with --folds)."""
    from emofuse.train.folds import FoldPlan

    try:
        plan = FoldPlan.load(run / "folds.json")
    except EmofuseError:
        return []
    chosen = config.get("folds")  # the last train call's --folds, or all the plan's
    wanted = chosen if isinstance(chosen, list) else [f.fold for f in plan.folds]
    done = set(finished_folds(run))
    missing = [k for k in wanted if k not in done]
    if not missing:
        return []
    others = [k for k in wanted if k in done] or sorted(done)
    rest = f"fold{'s' if len(others) > 1 else ''} {', '.join(map(str, others))}"
    return [
        f"{run}: fold {', '.join(map(str, missing))} of the {len(wanted)} it was trained with "
        f"{'is' if len(missing) == 1 else 'are'} not finished (never finished, or deleted or "
        f"damaged since; rerun `emofuse train` with the same options to train them): predicting "
        f"with {rest} only"
    ]


def _run_settings(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run config, extraction settings of the cache it was trained on)."""
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        from emofuse.train.outdir import config_missing_error, reproduce_refusal

        raise (
            config_missing_error(run)
            or reproduce_refusal(run, "predict")
            or EmofuseError(f"{run} is not an emofuse run folder (no config.json): give --run RUN")
        )
    config = read_run_config(cfg_path)
    if not is_trained_run(config):
        raise EmofuseError(fused_run_message(run, config))
    from emofuse.train.configseal import check_config_seal

    check_config_seal(cfg_path, config)  # an edited model record is config.json's, not the models'
    settings = config.get("cache_settings")
    if not settings:
        raise EmofuseError(
            f"{cfg_path} does not record the extraction settings (trained with an older emofuse); "
            "retrain the run to predict with it"
        )
    return config, settings


def fused_run_message(run: Path, config: dict[str, Any]) -> str:
    """Why a run made by `emofuse fuse` cannot predict: it holds the members' weights per fold,
    no model; its predictions come from its member runs."""
    members = [str(m) for m in config.get("fused_runs") or []]
    named = f" of {', '.join(members)}" if members else ""
    each = f" (e.g. --run {members[0]})" if members else ""
    return (
        f"{run} is a fused run (a late fusion{named}, made by `emofuse fuse`): it has no model "
        f"of its own and cannot predict alone; predict with each member run{each}"
    )


def _extract_config(settings: dict[str, Any], out: Path, device: str):
    from emofuse.extract import ExtractConfig

    fp = settings["fingerprint"]
    return ExtractConfig(
        out=out,
        speech_model=settings.get("speech_model"),
        text_model=settings.get("text_model"),
        speaker_model=settings.get("speaker_model"),
        layers=",".join(str(x) for x in fp.get("layers") or []) or "all",
        text_layers=",".join(str(x) for x in fp.get("text_layers") or []) or "all",
        # same streams as the training cache; new audio has no alignment, so segment rows are empty
        granularity=tuple(settings.get("granularity") or ("frame",)),
        keep_fillers=bool(settings.get("keep_fillers", False)),
        text_norm=settings.get("text_norm", "default"),
        fbank=bool(settings.get("fbank")),
        device=device,
        dtype="float32" if device == "cpu" else "auto",
        batch_seconds=float(settings.get("batch_seconds", 120.0)),
        model_dir=out.parent / "models",
        progress=False,
    )


MODEL_KEYS = ("speech_model", "text_model", "speaker_model")


def _recorded_dirs(
    settings: dict[str, Any], config: dict[str, Any], moved: dict[str, str]
) -> dict[str, str]:
    """The absolute model folders the run recorded (``model_dirs``) for models whose path in the
    settings is relative and does not exist from here: used as moved folders (their weights are
    checked against the fingerprint's revision)."""
    found = {}
    for key, folder in (config.get("model_dirs") or {}).items():
        path = settings.get(key)
        if key not in moved and path and not Path(path).expanduser().exists():
            found[key] = folder
    return found


def _locate_models(
    run: Path, settings: dict[str, Any], moved: dict[str, str], given: Sequence[str] = ()
) -> dict[str, Any]:
    """The run's extraction settings with any moved model folders put in; a local model folder
    that is gone is a one-line error naming the option that gives its new place."""
    from emofuse.encoders.common import is_local

    settings = {**settings, **{k: v for k, v in moved.items() if v is not None}}
    for key in MODEL_KEYS:
        path = settings.get(key)
        if path and path != "none" and is_local(path) and not Path(path).expanduser().exists():
            option = "--" + key.replace("_", "-")
            if key in given:  # the folder the user gave now is not there: not the run's one
                raise EmofuseError(f"{option} {path} does not exist: give the folder the "
                                   f"{key.replace('_', ' ')} was moved to")  # fmt: skip
            if not Path(path).expanduser().is_absolute() and key not in moved:
                raise relative_path_error(
                    run, key.replace("_", " "), path, f"run predict from the folder the cache was "
                    f"extracted in, or give the model's folder with `emofuse predict {option} DIR`"
                )  # fmt: skip
            raise EmofuseError(
                f"the {key.replace('_', ' ')} {run} was trained with, {path}, is gone (moved or "
                f"deleted); give its new folder with `emofuse predict {option} DIR`"
            )
    return settings


def _check_same_encoders(
    run: Path, trained: dict[str, Any], now: dict[str, Any], moved: Sequence[str] = ()
) -> None:
    for key in MATCH_KEYS:
        if key in moved and trained.get(key) and now.get(key):
            # a moved folder has another path: the weights (their hash) must be the same
            recorded = trained[key].get("config")  # an older run records none
            if trained[key].get("revision") != now[key].get("revision") or (
                recorded and recorded != now[key].get("config")
            ):
                raise EmofuseError(
                    f"--{key.replace('_', '-')} {now[key].get('id')} holds other weights than "
                    f"the model {run} was trained with ({trained[key].get('id')}); give the "
                    "folder of the original model"
                )
            continue
        was, current = trained.get(key), now.get(key)
        if isinstance(was, dict) and isinstance(current, dict) and "config" not in was:
            current = {k: v for k, v in current.items() if k != "config"}  # an older run's record
        if was != current:
            raise EmofuseError(
                f"the encoders loaded now differ from those {run} was trained on ({key}: "
                f"{trained.get(key)!r} vs {now.get(key)!r}); restore the original model folders"
            )


def predict(
    run: str | Path,
    audio: Sequence[str],
    text: str | None = None,
    transcripts: str | Path | None = None,
    fold: int | None = None,
    device: str = "auto",
    asr_model: str | None = None,
    models: dict[str, str | None] | None = None,
) -> PredictResult:
    """Label + class probabilities for each audio file, by the run's fold models (averaged).

    ``models``: {"speech_model" | "text_model" | "speaker_model": folder} for model folders that
    moved since the run's cache was extracted (their weights must be the same)."""
    from emofuse.cache import open_cache
    from emofuse.extract import run_extract

    run = Path(run)
    config, settings = _run_settings(run)
    moved = {k: v for k, v in (models or {}).items() if v is not None}
    given = tuple(moved)  # on the command line (the others: the run's recorded folders)
    moved = {**_recorded_dirs(settings, config, moved), **moved}
    settings = _locate_models(run, settings, moved, given)
    if not audio:
        raise EmofuseError("no AUDIO given: name one or more audio files")
    if text is not None and transcripts is not None:
        raise EmofuseError("give --text or --transcripts, not both")
    table = read_transcripts(transcripts) if transcripts is not None else None
    folds = finished_folds(run)
    if fold is not None:
        if fold not in folds:
            raise EmofuseError(
                f"--fold {fold}: {run} has finished folds {', '.join(map(str, folds)) or 'none'}"
            )
        folds = [fold]
    if not folds:
        from emofuse.train.outdir import unfinished_advice

        raise EmofuseError(f"{run} has no finished fold: {unfinished_advice(run)}")
    notes = [] if fold is not None else _unfinished_note(run, config)
    check_checkpoints(run, folds)  # a damaged one fails now, not after the features are made

    norm = settings.get("text_norm", "default")
    utts, texts = [], []
    for given in audio:
        if Path(given).is_dir():
            raise EmofuseError(
                f"audio {given} is a folder: give audio files (e.g. {Path(given) / '*.wav'})"
            )
        if Path(given).exists() and not Path(given).is_file():  # a FIFO, /dev/zero: never read
            raise EmofuseError(f"audio {given} is a device or a pipe, not a file: give audio files")
        if not Path(given).is_file():
            raise EmofuseError(f"audio file {given} not found")
    texts = [text] * len(audio) if text is not None else texts_for(audio, table)
    if asr_model is not None:
        notes += _transcribe_missing(audio, texts, asr_model, device)
    for i, (given, t) in enumerate(zip(audio, texts, strict=True)):
        path = Path(given)
        raw = t or ""  # the text model sees what the corpus reader would have given it
        utts.append(
            Utterance(
                id=f"{i:06d}",
                audio=path.resolve(),
                text=raw,
                label="?",
                speaker="?",
                text_norm=normalize_text(raw, norm),
            )
        )

    dev = resolve_device(device)
    head_cls = resolve_saved_head(run, config["head"])
    head_cfg = head_cls.config_from_saved(config["head_config"])
    needs = head_streams(head_cls, head_cfg, config["head"])
    if needs & set(SEGMENT_TIERS):
        notes += _align(utts, audio, texts, sorted(needs & set(SEGMENT_TIERS)))
    speaker_norm = bool(config.get("loop", {}).get("speaker_norm"))
    if speaker_norm:
        if len(audio) < 2:
            raise EmofuseError(
                f"{run} was trained with --speaker-norm: give several recordings of one speaker "
                "(they are standardised together), not a single file"
            )
        notes.append(
            f"the run standardises features per speaker: the {len(audio)} files were standardised "
            "together as one speaker (give recordings of a single speaker)"
        )
    text_only = needs == {"text"}  # nothing but the transcript to predict from
    if "text" in needs and text is None and table is None and asr_model is None:
        if text_only:
            raise EmofuseError(
                f"head {config.get('head_name') or config['head']} of {run} reads text only and "
                "no transcript was given, so a prediction would say nothing of the recording: "
                "give --text, --transcripts or --asr-model"
            )
        notes.append("no transcript given: the text stream is empty (the text model saw '')")
    elif "text" in needs:  # given, but nothing a text model reads is left of it
        wordless = [
            str(a) for u, a, t in zip(utts, audio, texts, strict=True)
            if t is not None and not any(ch.isalnum() for ch in u.model_text)
        ]  # fmt: skip
        if wordless and text_only:
            raise EmofuseError(
                f"the transcript of {_some(wordless)} has no words once normalised as in "
                f"extraction (text_norm {norm}: tags and blanks removed), and head "
                f"{config.get('head_name') or config['head']} of {run} reads text only, so a "
                "prediction would say nothing of the recording: give a transcript with words"
            )
        if wordless:
            notes.append(
                f"the transcript of {_some(wordless)} has no words once normalised as in "
                f"extraction (text_norm {norm}: tags and blanks removed), so the text model saw "
                "none and the prediction rests on the other streams"
            )
    text_ignored = "text" not in needs and any(t is not None for t in texts)
    if text_ignored:
        option = "--text" if text is not None else "--transcripts"
        notes.append(
            f"{option} is ignored: head {config.get('head_name') or config['head']} of {run} "
            "reads no text"
        )

    with tempfile.TemporaryDirectory(prefix="emofuse-predict-") as tmp:
        cache_path = Path(tmp) / "features.h5"
        summary = run_extract(utts, _extract_config(settings, cache_path, dev.type), echo=_quiet)
        with open_cache(cache_path) as cache:
            _check_same_encoders(
                run, settings["fingerprint"], cache.settings["fingerprint"], tuple(moved)
            )
            by_id = {u.id: str(a) for u, a in zip(utts, audio, strict=True)}
            if summary.skipped:
                bad = summary.skipped[0]
                given = by_id.get(bad["id"], bad["id"])
                why = str(bad["reason"]).replace(f" {Path(given).name}", "", 1).rstrip(".")
                raise EmofuseError(f"{given}: {why}{_audio_advice(why)}")
            flags = [str(f) for f in cache.table["flags"]]
            cut = [by_id.get(str(i), str(i)) for i, f in zip(cache.ids, flags, strict=True)
                   if "text-truncated" in f]  # fmt: skip
            if cut and "text" in needs:
                notes.append(
                    f"the transcript of {_some(cut)} is longer than the text model takes: it was "
                    "cut to the model's maximum length (its tail dropped), as in extraction"
                )
            if summary.padded:
                short = _some([by_id.get(uid, uid) for uid in summary.padded], shown=3)
                notes.append(
                    f"{short}: shorter than the encoders' minimum of {summary.min_samples} "
                    f"samples ({1000 * summary.min_samples / 16000:.0f} ms at 16 kHz), padded with "
                    "silence as in extraction"
                )
            try:
                # checksums: the temporary cache was verified as it was consolidated, just now
                data = TrainData.from_cache(
                    cache,
                    _loadable(needs, cache),
                    head_cfg,
                    dev,
                    checksums=False,
                    max_lengths=head_cls.max_lengths(head_cfg),
                )
            except NonFiniteError as err:  # the temporary cache's ids mean nothing to the user
                why = (
                    "the encoder overflowed in float16 on the GPU); try --device cpu (float32), or"
                    if dev.type == "cuda"
                    else "the encoder diverged on it);"
                )
                raise EmofuseError(
                    f"{by_id.get(err.utterance, err.utterance)}: its '{err.stream}' features hold "
                    f"NaN or inf ({why} check that recording (clipping, silence, length)"
                ) from None
        if speaker_norm:
            data.normalize_per_speaker(["?"] * len(data.ids))  # the given files: one speaker
        idx = data.indices([u.id for u in utts])
        probs = np.zeros((len(utts), len(config["labels"])))
        for k in folds:  # predict_probs runs without autograd
            model = load_fold_model(run, k, data.device)
            with user_head_code(config["head"], k, "predicting with", "rerun the same command"):
                probs += predict_probs(model, data, idx, 32)  # (N, C)
        check_no_unrecorded_modules(config["head"], config, run, "these predictions ran")
        check_config_seal(run / "config.json", config)  # an edit not named by those checks
        probs /= len(folds)
    labels = list(config["labels"])
    preds = [
        Prediction(
            audio=str(a),
            label=labels[int(np.argmax(p))],
            probabilities={c: float(x) for c, x in zip(labels, p, strict=True)},
            text=None if text_ignored else t,  # never echoed as if the head had read it
        )
        for a, p, t in zip(audio, probs, texts, strict=True)
    ]
    return PredictResult(preds, folds, notes, text_ignored=text_ignored, reads_text="text" in needs)


def _transcribe_missing(audio, texts: list, asr_model: str, device: str) -> list[str]:
    """Fill `texts` (in place) for files without a transcript; notes for the user."""
    from emofuse.asr.new_audio import transcribe_files

    todo = [i for i, t in enumerate(texts) if t is None]
    if not todo:
        return [f"--asr-model {asr_model} not used: every file has a transcript"]
    found = transcribe_files([Path(audio[i]) for i in todo], asr_model, device)
    for i, t in zip(todo, found, strict=True):
        texts[i] = t
    return [f"transcribed {len(todo)} file(s) with {asr_model}"]


def _align(utts: list[Utterance], audio, texts: list, tiers: list[str]) -> list[str]:
    """Force-align the files that have a transcript (their tiers go into the Utterances)."""
    branches = ",".join(tiers)
    if all(not t for t in texts):
        return [
            f"new audio has no transcript to align: the head's {branches} branches use the speech"
            " frames instead (give --text, --transcripts or --asr-model)"
        ]
    from emofuse.asr.new_audio import align_files

    got, problems = align_files([u.audio for u in utts], texts)
    for u, t in zip(utts, got, strict=True):
        u.tiers = t
    if not problems:
        return [f"aligned {len(utts)} file(s) with PocketSphinx for the {branches} branches"]
    why = "; ".join(f"{audio[i]}: {p}" for i, p in list(problems.items())[:3])
    return [
        f"{len(problems)} of {len(utts)} file(s) not aligned ({why}): their {branches} branches"
        " use the speech frames instead"
    ]


def _quiet(_: str) -> None:
    """Extraction's progress lines are not predict's output."""


def _loadable(needs: set[str], cache: Any) -> set[str]:
    """Streams to load: all the head needs, or a one-line refusal naming the one that is missing."""
    missing = sorted(needs - set(cache.streams))
    if missing:
        raise EmofuseError(
            f"the head needs stream '{missing[0]}', which cannot be made for new audio with the "
            "run's extraction settings"
        )
    return needs


def _some(names: list[str], shown: int = 1) -> str:
    """``a`` or ``a and 2 more``: the files a note is about."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
