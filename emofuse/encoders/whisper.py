"""Whisper encoders on real frames only: no 30 s padding, 30 s windows for longer audio.

Hugging Face's ``WhisperEncoder.forward`` insists on exactly 3000 mel frames (30 s) and adds all 1500
positional embeddings, so a 4 s clip costs as much as 30 s and its frames attend over 26 s of padding.
Here the encoder runs on the utterance's own mel frames with the positional table sliced to their
length (measured ~10x faster on short clips). That is not numerically the padded model's output:
Whisper's encoder attends over the whole window, so the padded frames influence the real ones; it is
the model applied to the real audio, consistently for every utterance whatever its batch.

Longer audio is cut into windows of the model's 30 s, each encoded on its own and concatenated.
Batches of windows of different lengths are padded with zero mel frames and masked: the conv outputs
of padded frames are zeroed before the strided conv (as the conv's own zero padding would be) and
attention ignores them, so batched output equals one-at-a-time output up to float rounding (checked
≤ 1e-4 on the tiny model; real Whisper-base has layers whose values reach ±400, where fp32 rounding of
a different batch shape is ~1e-3 absolute, ~5e-6 relative).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from transformers import WhisperFeatureExtractor, WhisperModel
from transformers.masking_utils import create_bidirectional_mask

from emofuse.encoders.common import (
    SAMPLE_RATE,
    check_sampling_rate,
    fp16_range,
    from_pretrained,
    hold_frozen,
    load_error,
    model_revision,
    pack_batches,
    quiet_hf,
    resolved_dir,
    to_device,
)
from emofuse.encoders.speech import OPTION, SpeechEncoder


class WhisperSpeechEncoder(SpeechEncoder):
    """A Whisper encoder (``WhisperModel.get_encoder()``) with its feature extractor."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_extractor: WhisperFeatureExtractor,
        model_id: str,
        revision: str,
        device: torch.device,
        dtype: torch.dtype,
        max_batch_seconds: float,
    ):
        self.encoder = encoder.eval().requires_grad_(False)
        self.feature_extractor = feature_extractor
        hold_frozen(self, model_id, revision, device, dtype)
        config = encoder.config
        self.family = "whisper"
        self.hop = feature_extractor.hop_length  # 160 samples = one mel frame (100 /s)
        stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]  # 2 mel frames per output frame
        self.mel_per_frame = stride
        self.window_frames = config.max_source_positions  # 1500 output frames = 30 s
        self.window_samples = self.window_frames * stride * self.hop  # 480_000
        self.num_layers = config.encoder_layers + 1
        self.dim = config.d_model
        self.frame_rate = SAMPLE_RATE / (self.hop * stride)
        self.min_samples = stride * self.hop  # one output frame
        self.max_batch_mel = int(max_batch_seconds * SAMPLE_RATE / self.hop)

    def _window_frames(self, n_samples: int) -> int:
        return (n_samples // self.hop) // self.mel_per_frame

    def n_frames(self, n_samples: int) -> int:
        """mel frames // 2 per 30 s window (a trailing window too short for a frame adds none)."""
        full, rest = divmod(int(n_samples), self.window_samples)
        return full * self.window_frames + self._window_frames(rest)

    def windows(self, wav: np.ndarray) -> list[np.ndarray]:
        """The ≤ 30 s pieces encoded on their own (pieces too short for one frame are dropped)."""
        pieces = [wav[s : s + self.window_samples] for s in range(0, len(wav), self.window_samples)]
        return [p for p in pieces if self._window_frames(len(p)) > 0]

    def mel(self, window: np.ndarray) -> np.ndarray:
        """Log-mel (n_mels, 2 * frames) of one window, as Whisper sees audio followed by silence.

        Zeros are appended (HF pads with zeros to 30 s; the STFT of the last real frames reaches past
        the end), then only the frames belonging to the audio are kept, an even number of them.
        """
        mels, lengths = self.log_mel([np.asarray(window, np.float32)])
        return mels[0, :, : lengths[0]].numpy()

    def log_mel(self, windows: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """Log-mel of several windows at once: (B, n_mels, M) zero-padded, and each one's length.

        The numbers of Hugging Face's torch front end run on each window + ``n_fft`` zeros (what
        ``mel`` promised before): one batched STFT instead of one per window. Frames of a shorter
        window only see its own samples and zeros (the zeros a lone window's end padding would
        reflect), the log floor (``max - 8``) is taken per window over exactly the frames HF keeps,
        and frames past a window's length are zero (what forward's masking expects).
        """
        fe = self.feature_extractor
        if getattr(fe, "dither", 0.0):  # random dither: keep HF's own per-window path
            return self._log_mel_hf(windows)
        n_fft, hop = fe.n_fft, self.hop
        if not hasattr(self, "_mel_window"):
            self._mel_window = torch.hann_window(n_fft)
            self._mel_filters = torch.from_numpy(fe.mel_filters).float().T.contiguous()
        sizes = [len(w) + n_fft for w in windows]  # each window + n_fft zeros
        kept = [n // hop for n in sizes]  # STFT frames HF keeps (it drops the last one)
        lengths = [self._window_frames(len(w)) * self.mel_per_frame for w in windows]
        wav = torch.zeros(len(windows), max(sizes))  # (B, S)
        for i, w in enumerate(windows):
            wav[i, : len(w)] = torch.from_numpy(w)
        spec = torch.stft(wav, n_fft, hop, window=self._mel_window, return_complex=True)
        power = (spec[..., : max(kept)].abs() ** 2).contiguous()  # (B, n_freq, F)
        log = torch.clamp(self._mel_filters @ power, min=1e-10).log10()  # (B, n_mels, F)
        frame = torch.arange(log.shape[-1])
        outside = frame[None, :] >= torch.tensor(kept)[:, None]  # (B, F)
        peak = log.masked_fill(outside[:, None, :], -torch.inf).amax(dim=(1, 2), keepdim=True)
        log = (torch.maximum(log[..., : max(lengths)], peak - 8.0) + 4.0) / 4.0  # (B, n_mels, M)
        real = frame[None, : max(lengths)] < torch.tensor(lengths)[:, None]  # (B, M)
        return log * real[:, None, :], lengths

    def _log_mel_hf(self, windows: list[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        mels = []
        for window in windows:
            n_mel = self._window_frames(len(window)) * self.mel_per_frame
            padded = np.concatenate([window, np.zeros(self.feature_extractor.n_fft, np.float32)])
            feats = self.feature_extractor(
                padded,
                sampling_rate=SAMPLE_RATE,
                padding="longest",
                truncation=False,
                return_tensors="np",
            )["input_features"][0]  # (n_mels, M')
            mels.append(feats[:, :n_mel].astype(np.float32, copy=False))
        return self._pad_mels(mels), [m.shape[1] for m in mels]

    @staticmethod
    def _pad_mels(mels: list[np.ndarray]) -> torch.Tensor:
        padded = torch.zeros(len(mels), mels[0].shape[0], max(m.shape[1] for m in mels))
        for i, m in enumerate(mels):
            padded[i, :, : m.shape[1]] = torch.from_numpy(m)
        return padded  # (B, n_mels, M)

    def _encode_checked(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        owners: list[int] = []  # utterance index of each window, windows in order
        windows: list[np.ndarray] = []
        for idx, wav in enumerate(arrays):
            for window in self.windows(wav):
                owners.append(idx)
                windows.append(window)
        n_mel = [self._window_frames(len(w)) * self.mel_per_frame for w in windows]
        outputs: list[torch.Tensor | None] = [None] * len(windows)
        for batch in pack_batches(n_mel, self.max_batch_mel):
            mels, lengths = self.log_mel([windows[j] for j in batch])
            for j, states in zip(batch, self._forward_padded(mels, lengths), strict=True):
                outputs[j] = states
        per_utt: list[list[torch.Tensor]] = [[] for _ in arrays]
        for owner, states in zip(owners, outputs, strict=True):
            per_utt[owner].append(states)
        # one window (every clip under 30 s): its view as is, no copy
        return [parts[0] if len(parts) == 1 else torch.cat(parts, dim=0) for parts in per_utt]

    def _forward_padded(self, padded: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
        """Encode log-mel windows zero-padded into one (B, n_mels, M) tensor (each window's M even,
        ≤ 3000) → (M_i/2, num_layers, D) each: the embedding output, each layer's output, and the
        last one after the final layer norm, as Hugging Face's hidden states are."""
        enc = self.encoder
        frames = [n // self.mel_per_frame for n in lengths]
        longest = max(lengths)
        padded = padded[..., :longest]
        x = to_device(padded, self.device).to(self.dtype)
        ragged = len(set(lengths)) > 1
        hidden = nn.functional.gelu(enc.conv1(x))  # (B, D, M)
        if ragged:
            mel_mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
            hidden = hidden * mel_mask[:, None, :].to(self.device, hidden.dtype)
        hidden = nn.functional.gelu(enc.conv2(hidden))  # (B, D, T)
        hidden = hidden.permute(0, 2, 1)  # (B, T, D)
        t_max = hidden.shape[1]
        hidden = hidden + enc.embed_positions.weight[:t_max]  # sliced positions: (B, T, D)
        mask = None
        if ragged:
            frame_mask = torch.arange(t_max)[None, :] < torch.tensor(frames)[:, None]
            mask = create_bidirectional_mask(
                config=enc.config,
                inputs_embeds=hidden,
                attention_mask=frame_mask.to(self.device),
            )
        if self.device.type != "cpu":  # stack on the device, then one device -> host copy
            states = [hidden, *self._layers(hidden, mask)]
            return self._to_host(torch.stack(states, dim=2), frames)  # (B, T, L, D)
        # on a CPU each state goes straight into the host tensor in the output dtype: no fp32
        # stack of all layers and no second conversion pass (same values, ~10 % of encode time)
        host = torch.empty(
            (*hidden.shape[:2], self.num_layers, hidden.shape[2]),
            dtype=getattr(self, "_out_dtype", torch.float32),
        )  # (B, T, L, D)
        fit = fp16_range if host.dtype == torch.float16 else (lambda x: x)  # ±max, not inf
        host[:, :, 0] = fit(hidden)
        for i, state in enumerate(self._layers(hidden, mask), start=1):
            host[:, :, i] = fit(state)
        return [host[i, :n] for i, n in enumerate(frames)]

    def _layers(self, hidden: torch.Tensor, mask):
        """Each transformer layer's output (B, T, D), the last one after the final layer norm."""
        layers = self.encoder.layers
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
            for k, layer in enumerate(layers):
                hidden = layer(hidden, mask)  # (B, T, D)
                yield self.encoder.layer_norm(hidden) if k == len(layers) - 1 else hidden


def load_whisper_encoder(
    name: str, device: torch.device, dtype: torch.dtype, max_batch_seconds: float
) -> WhisperSpeechEncoder:
    """Load only what is needed: the encoder of a WhisperModel checkpoint, and its mel front end."""
    try:
        model = from_pretrained(WhisperModel, name, device, dtype)
        encoder = model.get_encoder().to(device)
        del model  # the decoder is never used
        with quiet_hf():  # an 8 kHz preprocessor's mel filters warn before the rate is checked
            feature_extractor = WhisperFeatureExtractor.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - any failure here is "cannot load this model"
        raise load_error("speech", name, OPTION, exc) from exc
    check_sampling_rate(name, feature_extractor)
    revision = model_revision(name, resolved_dir(name))
    return WhisperSpeechEncoder(
        encoder, feature_extractor, name, revision, device, dtype, max_batch_seconds
    )
