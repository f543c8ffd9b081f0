"""The demo corpus carries emotion in its acoustics: simple features + logistic regression across
sessions (leave one session out) clearly beat chance, and the same pipeline on shuffled labels
does not — so a working pipeline can learn it and a broken one cannot pass by accident."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emofuse.corpus import read_corpus

SR, WIN, HOP, NFFT = 16000, 400, 320, 512


def _mel_filters(n_mels: int = 24) -> np.ndarray:
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(mel(50), mel(7600), n_mels + 2))
    bins = np.fft.rfftfreq(NFFT, 1 / SR)
    fb = np.zeros((n_mels, len(bins)))
    for i in range(n_mels):
        lo, c, hi = edges[i : i + 3]
        fb[i] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    return fb


FB = _mel_filters()


def features(wav: np.ndarray) -> np.ndarray:
    """Mean/std log-mel, energy stats and autocorrelation pitch stats of one utterance."""
    frames = np.lib.stride_tricks.sliding_window_view(wav, WIN)[::HOP] * np.hanning(WIN)  # (T, W)
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2  # (T, F)
    logmel = np.log(power @ FB.T + 1e-8)  # (T, 24)
    energy = logmel.mean(1)  # (T,)
    voiced = energy > np.median(energy)
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames[voiced], 1024)) ** 2)[:, 40:267]  # lags 60-400 Hz
    log_f0 = np.log(SR / (ac.argmax(1) + 40))
    summary = [energy.max(), energy.std(), log_f0.mean(), log_f0.std(), voiced.mean()]
    return np.concatenate([logmel.mean(0), logmel.std(0), summary])


def _loso_ua(x: np.ndarray, y: np.ndarray, sessions: np.ndarray) -> float:
    pred = np.empty_like(y)
    for ses in np.unique(sessions):
        test = sessions == ses
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5))
        pred[test] = clf.fit(x[~test], y[~test]).predict(x[test])
    return balanced_accuracy_score(y, pred)


def test_demo_corpus_is_learnable_from_acoustics_and_shuffled_labels_are_not(demo_corpus):
    res = read_corpus("iemocap", root=demo_corpus.root, progress=False)
    x = np.stack([features(sf.read(u.audio, dtype="float32")[0]) for u in res.utterances])
    y = np.array([u.label for u in res.utterances])
    sessions = np.array([u.session for u in res.utterances])
    assert sorted(set(y)) == ["ang", "hap", "neu", "sad"]
    ua = _loso_ua(x, y, sessions)
    shuffled = _loso_ua(x, np.random.default_rng(0).permutation(y), sessions)
    print(f"LOSO UA acoustic features: {ua:.3f}, shuffled labels: {shuffled:.3f}")
    assert ua >= 0.6
    assert shuffled < 0.4


def test_demo_words_lean_towards_the_emotion(demo_corpus):
    """Lexical cue for the text model: each class's sentences favour their own word list."""
    from emofuse.corpus.synthetic import WORDS

    res = read_corpus("iemocap", root=demo_corpus.root, progress=False)
    for label in ("ang", "hap", "sad"):
        own = [
            np.mean([w.strip(".!?").lower() in WORDS[label] for w in u.text_norm.split()])
            for u in res.utterances
            if u.label == label
        ]
        other = [
            np.mean([w.strip(".!?").lower() in WORDS[label] for w in u.text_norm.split()])
            for u in res.utterances
            if u.label != label
        ]
        assert np.mean(own) > 0.3 > 0.05 > np.mean(other)
