#!/usr/bin/env bash
# The GPU benchmarks in one device call (the device image has torch/transformers/h5py but not zarr,
# speechbrain or soundfile: their wheels travel in .wheels/, made with `pip download` here).
#   bash bench/gpu.sh     # TDFNet GRU check, extraction (HuBERT-large, 1 h, fp16), TDFNet paper LOPO plan
# Each step has a time limit in seconds; 0 skips it: HEADS_S (120), EXTRACT_S (200), PLAN_S (330).
# The plan keeps its run folder in runs/bench-plan (ignored by git, so it stays on a warm machine):
# a second call with EXTRACT_S=0 HEADS_S=0 resumes it, skipping finished folds.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 -m pip install --no-deps -q .wheels/*.whl 2>&1 | tail -2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cudnn', \
torch.backends.cudnn.version(), 'transformers', transformers.__version__)"
date -u +"%Y-%m-%d %H:%M UTC"
if [ "${HEADS_S:-120}" -gt 0 ]; then  # bf16 autocast as in `emofuse train`; GRU fp32 vs bf16
    timeout "${HEADS_S:-120}" python3 bench/heads.py --preset paper --device cuda --amp \
        --heads tdfnet --gru-compare --steps 5 2>&1 | tee "$OUT/heads.log"
fi
if [ "${EXTRACT_S:-200}" -gt 0 ]; then
    timeout "${EXTRACT_S:-200}" python3 bench/extract.py --synthetic-hours 1 \
        --arch-config hubert-large --device cuda --dtype float16 --layers last \
        --batch-seconds 600 2>&1 | tee "$OUT/extract.log"
fi
if [ "${PLAN_S:-330}" -gt 0 ]; then
    timeout "${PLAN_S:-330}" python3 bench/plan.py --head tdfnet --preset paper --split lopo \
        --device cuda --run runs/bench-plan ${PLAN_ARGS:-} 2>&1 | tee -a "$OUT/plan.log"
fi
