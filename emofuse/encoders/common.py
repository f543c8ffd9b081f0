"""Helpers shared by the encoders: device/dtype handling, batching plans, fingerprints, load errors.

Kept in one place so that every encoder reports the same kind of revision (for the cache fingerprint)
and the same one-line error when a model cannot be loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import warnings
import zipfile
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from emofuse.audio import SAMPLE_RATE  # noqa: F401 - the encoders' input rate, re-exported
from emofuse.errors import MAKE_READABLE, MEMORY_ADVICE, EmofuseError, out_of_memory

# Weight files whose bytes identify a model folder (transformers, SpeechBrain, plain torch).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")

# compute dtypes by name (the CLI's --dtype choices), and the short names the Python API accepts too
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPES = {**DTYPES, "fp32": torch.float32, "fp16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16}  # fmt: skip


FP16_MAX = 65504.0


def fp16_range(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself, or clamped to ±65504 where a value would overflow float16 (stored as ±max,
    not inf). One ``aminmax`` read; the clamp (a full extra pass) only when a value overflowed."""
    if x.dtype != torch.float16 and x.numel():
        low, high = torch.aminmax(x)
        if low < -FP16_MAX or high > FP16_MAX:
            return x.clamp(-FP16_MAX, FP16_MAX)
    return x


def half(x: torch.Tensor) -> torch.Tensor:
    """float16 for storage, clamped (``fp16_range``) so a rare large activation is not inf."""
    return fp16_range(x).to(torch.float16)


def as_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device if device is not None else "cpu")


def as_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Accept a torch dtype or a CLI-style name ("fp16", "bf16", "fp32")."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise EmofuseError(f"unknown dtype '{dtype}': use one of fp32, fp16, bf16") from None


# "1"/"0" overrides the CPU's bf16 detection (tests cover both branches; a user may force either)
BF16_ENV = "EMOFUSE_CPU_BF16"
# CPU flags (Linux /proc/cpuinfo names) of native bf16 matrix/dot-product units: Intel AMX tiles
# and AVX-512 BF16 (vdpbf16ps: twice fp32's multiply-adds per cycle). Without them torch emulates
# bf16 matmuls through fp32, slower than fp32 itself.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cpu_has_native_bf16() -> bool:
    forced = os.environ.get(BF16_ENV)
    if forced is not None:
        if forced not in ("0", "1"):
            raise EmofuseError(f"{BF16_ENV}={forced!r}: set it to 1 or 0, or unset it")
        return forced == "1"
    return bool(cpu_flags() & set(BF16_FLAGS))


def auto_dtype(device: torch.device) -> torch.dtype:
    """``--dtype auto``: float16 on CUDA; bfloat16 on a CPU with native bf16 units, else float32."""
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def hold_frozen(encoder: object, model_id: str, revision: str, device, dtype) -> None:
    """The attributes every frozen encoder carries: where it came from and where it runs."""
    encoder.model_id, encoder.revision = model_id, revision
    encoder.device, encoder.dtype = device, dtype


def is_local(name_or_path: str | os.PathLike) -> bool:
    """A name is a local folder if it exists, or if it is spelled like a path (so a typo in a
    folder name gives 'folder not found' instead of a confusing hub lookup)."""
    text = str(name_or_path)
    # hub ids are "name" or "org/name"; anything deeper or anchored is a path
    return (
        Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or text.count("/") > 1
    )


def check_folder(name_or_path: str | os.PathLike, option: str) -> None:
    """Raise the one-line error for a local path that is not a folder, or for a hub id that can
    be neither read from the local model cache nor fetched (instead of the hub client's retries)."""
    path = Path(str(name_or_path)).expanduser()
    if is_local(name_or_path):
        if not path.is_dir():
            raise EmofuseError(
                f"{option} {name_or_path}: model folder not found; pass an existing folder"
            )
        return
    name = str(name_or_path)
    if _in_hub_cache(name):
        return
    host = _hub_unreachable()
    if host is None:
        return
    as_folder = f"there is no folder {path.resolve()} here, and " if "/" in name else ""
    raise EmofuseError(
        f"{option} {name}: {as_folder}as a model hub id it is not in the local model cache and "
        f"the hub ({host}) cannot be reached; pass an existing model folder, or on a connected "
        f"machine run `huggingface-cli download {name} --local-dir DIR`, copy DIR here and pass "
        f"{option} DIR"
    )


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # no hub client: the loader says what is wrong
        return True
    return (Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}").is_dir()


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """The hub's host when offline mode is on or no connection to it opens; None if reachable."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    offline = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    if any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in offline):
        return f"{host}, offline mode is on"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return host
    return None


def load_error(kind: str, name: str, option: str, exc: BaseException) -> EmofuseError:
    """The one-line message for a model that cannot be loaded: what failed and how to fix it."""
    reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    if isinstance(exc, MissingWeights):  # the folder is whole but inconsistent: say so
        return EmofuseError(f"{option} {name}: {exc}")
    if out_of_memory(exc):  # an intact model that did not fit: never "damaged" or "re-download"
        return EmofuseError(f"cannot load {kind} model {name}: {MEMORY_ADVICE} ({reason[:120]})")
    if is_local(name):
        if kind != "speaker" and (Path(name).expanduser() / "hyperparams.yaml").is_file():
            return EmofuseError(
                f"{option} {name} is a SpeechBrain speaker model (it holds hyperparams.yaml), not "
                f"a {kind} model: give it as --speaker-model, and a transformers {kind} model "
                f"folder as {option}"
            )
        broken = broken_file(Path(name))
        if broken is not None:
            path, why = broken
            if why.startswith("cannot be read"):
                return EmofuseError(
                    f"cannot load {kind} model from folder {name}: {path.name} {why}"
                )
            return EmofuseError(
                f"cannot load {kind} model from folder {name}: {path.name} is damaged ({why}); "
                f"copy that file again from where the model came from (or save_pretrained again)"
            )
        holds = (
            "SpeechBrain's hyperparams.yaml and the checkpoints it names (embedding_model.ckpt …)"
            if kind == "speaker"
            else "the model's config and weights as written by save_pretrained (or "
            "huggingface-cli download)"
        )
        return EmofuseError(
            f"cannot load {kind} model from folder {name} ({reason}); the folder must hold {holds}"
        )
    return EmofuseError(
        f"cannot load {kind} model '{name}' ({reason}); no model hub is reachable here: on a connected "
        f"machine run `huggingface-cli download {name} --local-dir DIR` (or save_pretrained to DIR), "
        f"copy DIR here and pass {option} DIR"
    )


def broken_file(folder: Path) -> tuple[Path, str] | None:
    """The first file of a model folder that cannot be what its name says: a JSON file that does
    not parse, a safetensors file whose header does not (truncated, overwritten), with why."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.json")):
        if not os.access(path, os.R_OK):
            return path, f"cannot be read (Permission denied): {MAKE_READABLE}"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            return path, f"not valid JSON: {' '.join(str(err).split())[:80]}"
    for path in sorted(folder.glob("*.safetensors")):
        if not os.access(path, os.R_OK):  # intact, perhaps: "damaged, copy it again" is wrong
            return path, f"cannot be read (Permission denied): {MAKE_READABLE}"
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            if out_of_memory(err):  # a mapping refused by a memory limit: the file may be fine
                continue
            return path, f"not a readable safetensors file: {' '.join(str(err).split())[:80]}"
    for path in sorted([*folder.glob("*.ckpt"), *folder.glob("*.pt"), *folder.glob("*.bin")]):
        try:  # torch.save's zip archive (SpeechBrain's checkpoints): cut short, it has no end
            with open(path, "rb") as fh:
                zipped = fh.read(4) == b"PK\x03\x04"
        except OSError:
            continue  # named by the loader itself
        if zipped and not zipfile.is_zipfile(path):
            return path, "a torch checkpoint cut short (its zip archive has no end record)"
    return None


CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".model")  # configs, vocabularies


def config_sha256(folder: str | os.PathLike) -> str | None:
    """sha256 over the names and bytes of a local model folder's other files that shape its
    output (config.json, preprocessor_config.json, tokenizer files, hyperparams.yaml), or None
    for a folder without one. With ``weights_sha256`` it is what a resume checks: an edited
    ``do_normalize`` or ``layer_norm_eps`` changes the features as the weights do."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CONFIG_SUFFIXES)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 over the names and bytes of the weight files in a folder (sorted): the revision of a
    local model, so that the cache fingerprint changes when the weights do."""
    folder = Path(folder)
    digest = hashlib.sha256()
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def hub_commit(resolved_file: str | os.PathLike | None) -> str | None:
    """The commit hash of a path in the Hugging Face cache (…/snapshots/<commit>[/file])."""
    if resolved_file is None:
        return None
    parts = Path(resolved_file).parts
    if "snapshots" in parts:
        idx = parts.index("snapshots")
        if idx + 1 < len(parts):
            return parts[idx + 1]
    return None


def model_revision(name_or_path: str, resolved_dir: str | os.PathLike | None = None) -> str:
    """Hub commit hash when the model came from the hub cache, else a hash of the weight files."""
    folder = (
        Path(resolved_dir) if resolved_dir is not None else Path(str(name_or_path)).expanduser()
    )
    if not is_local(name_or_path):
        commit = hub_commit(folder)
        if commit:
            return commit
    if folder.is_dir():
        return weights_sha256(folder)
    return "unknown"


def pack_batches(
    lengths: Sequence[float], budget: float, max_items: int | None = None
) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (ties: lower index first).

    Lengths are samples, tokens, mel frames or seconds: any unit, as long as ``budget`` uses it too.

    A batch's padded size (items x longest length) stays within ``budget`` (a single item longer
    than the budget gets a batch of its own), so sorting keeps padding waste small and memory bounded.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for idx in order:
        longest = lengths[current[0]] if current else lengths[idx]
        full = max_items is not None and len(current) >= max_items
        if current and (full or (len(current) + 1) * longest > budget):
            batches.append(current)
            current = []
        current.append(idx)
    if current:
        batches.append(current)
    return batches


@contextmanager
def quiet_hf():
    """Hide transformers' per-load progress bars (extract shows its own progress) and its
    warnings (a many-line LOAD REPORT of missing weights, a mel filter bank's UserWarning for a
    preprocessor at another rate: emofuse checks those itself and says so in one line)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → device copy; on CUDA from pinned memory without blocking the host."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def resolved_dir(name: str) -> Path | None:
    """The local folder a hub id resolved to (the HF cache snapshot), for the revision."""
    try:
        from transformers.utils import cached_file

        path = cached_file(name, "config.json")
    except (OSError, ValueError):
        return None
    return Path(path).parent if path else None


def from_pretrained(cls, name: str, device: torch.device, dtype: torch.dtype):
    """``cls.from_pretrained`` with SDPA attention on CUDA where the architecture has it; a
    checkpoint that lacks weights of its encoder layers (a config.json asking for more layers
    than the weights hold: transformers fills them at random) is refused."""
    with quiet_hf():
        model = info = None
        if device.type == "cuda":
            try:
                model, info = cls.from_pretrained(
                    name, dtype=dtype, attn_implementation="sdpa", output_loading_info=True
                )
            except ValueError:
                pass  # this architecture has no SDPA path (e.g. WavLM): its default attention
        if model is None:
            model, info = cls.from_pretrained(name, dtype=dtype, output_loading_info=True)
    random = [k for k in (info or {}).get("missing_keys", []) if _LAYER_KEY.search(k)]
    if random:
        raise MissingWeights(
            f"its weights lack {len(random)} tensor(s) its config.json asks for (e.g. "
            f"{random[0]}), which would be random: the config and the weights are not of one "
            "model; copy the folder again as save_pretrained wrote it"
        )
    return model


_LAYER_KEY = re.compile(r"(^|\.)(layers?|encoder|embeddings)\.")  # not a head or a pooler


class MissingWeights(ValueError):
    """A checkpoint whose weights do not fill the model its config describes."""


def check_sampling_rate(name: str, feature_extractor: Any) -> None:
    """The model's preprocessor reads 16 kHz (what emofuse decodes every file to); another rate
    in its preprocessor_config.json is one line, not transformers' ValueError on the first batch."""
    rate = getattr(feature_extractor, "sampling_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise EmofuseError(
            f"--speech-model {name}: its preprocessor_config.json says sampling_rate {rate}, but "
            f"emofuse feeds {SAMPLE_RATE} Hz audio (every file is resampled to it): give a "
            f"{SAMPLE_RATE // 1000} kHz speech model"
        )
