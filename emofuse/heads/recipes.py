"""What the ``small`` presets of the fusion heads (TDFNet, co-attention) train with.

Chosen on validation UA (RAVDESS lopo, Whisper-base + MiniLM, all layers; bench/RESULTS.md,
2026-12-01) among: the papers' loop, lr 5e-4/3e-4 with cosine decay, dropout 0.1/0.3/0.5, masks
0.1/0.2, mixup, weight EMA. Both ``small`` presets also read every layer through their input
Linear (``layer_mix=concat``: validation UA 0.770 vs 0.742 with the weighted mix for TDFNet, 0.768
vs 0.682 for co-attention's frame branch). With the papers' loop these heads memorise 600
training clips in a few
epochs (training loss 0.04, validation loss rising after epoch 6); frames averaged 4 by 4 also make
them ~3-4x faster on a CPU.
"""

from __future__ import annotations

# head config values of the `small` presets (the papers' sizes keep the papers' settings)
SMALL_REGULARISATION = {
    "frame_pool": 4,
    "dropout": 0.3,
    "time_mask": 0.2,
    "feature_mask": 0.2,
}
# their training loop (LoopConfig fields over the papers' protocol)
SMALL_RECIPE = {
    "lr": 5e-4,
    "batch_size": 32,
    "epochs": 30,
    "patience": 6,
    "schedule": "cosine",
    "warmup_epochs": 2,
    "grad_clip": 1.0,
    "mixup": 0.4,
}
