#!/usr/bin/env bash
# The GPU benchmarks in one device call (the device image has torch/transformers/h5py but not zarr,
# speechbrain or soundfile: their wheels travel in .wheels/, made with `pip download` here).
#   bash bench/gpu.sh            # extraction (HuBERT-large, 1 h, fp16) + whole LOPO plan (TDFNet paper)
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -m pip install --no-deps -q .wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
date -u +"%Y-%m-%d %H:%M UTC"
timeout ${EXTRACT_S:-200} python3 bench/extract.py --synthetic-hours 1 --arch-config hubert-large \
    --device cuda --dtype float16 --layers last --batch-seconds 600 2>&1 | tee "$OUT/extract.log"
timeout ${PLAN_S:-330} python3 bench/plan.py --head tdfnet --preset paper --split lopo \
    --device cuda ${PLAN_ARGS:-} 2>&1 | tee "$OUT/plan.log"
