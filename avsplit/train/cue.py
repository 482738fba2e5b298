"""Pseudo-visual mouth cues for training the target-speaker extractor without AV training data.

No audio-visual training corpus exists here, so the extractor learns from a jaw-opening track
*predicted from the clean target voice*, passed through the same code path as a real face at
inference (:func:`avsplit.cue.mouth_cue`: video frame times, per-track z-normalisation, a
face-seen flag). The predictor is a small linear model (ridge regression) from band energies of
the voice around each video frame to the jaw opening that MediaPipe measures on the real
single-talker clips of ``DATA/av/speech``; it is checked leave-one-clip-out
(:func:`leave_one_clip_out`). Training then degrades the predicted track as real tracks are
degraded (:func:`pseudo_cue`): correlated slow noise (r with the clean prediction 0.3..1, the
lower bound reached by a curriculum from 1), a lip-to-sound lag of -40..+120 ms, 25 or 30 fps with
timing jitter, dropped frames and stretches where the face is not seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avsplit.audio import stft
from avsplit.cue import mouth_cue

BANDS_HZ = [(80, 300), (300, 1000), (1000, 2500), (2500, 8000)]
OFFSETS_S = np.round(np.arange(-0.12, 0.2001, 0.04), 3)  # audio context around each video frame
FEATURE_HOP_S = 0.01
SINGLE_TALKER = ["crema_d/*.flv", "grid/*.mpg", "talking_heads/*.mp4", "talking_heads_2/*.mp4"]


def band_energies(wave: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``([bands + 1, N] log10 energies (bands, then total), [N] seconds)`` every 10 ms."""
    n_fft, hop = int(2 * round(0.016 * rate)), int(round(FEATURE_HOP_S * rate))
    power = stft(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), n_fft, hop).abs().pow(2).numpy()
    freqs = np.arange(power.shape[0]) * rate / n_fft
    rows = [power[(freqs >= lo) & (freqs < hi)].sum(0) for lo, hi in BANDS_HZ]
    rows.append(power.sum(0))
    return np.log10(np.stack(rows) + 1e-8), np.arange(power.shape[1]) * hop / rate


def features(wave: np.ndarray, rate: int, times: np.ndarray) -> np.ndarray:
    """``[len(times), (bands + 1) * offsets]`` audio features around each time (per-clip
    standardised band energies, sampled at ``times + offsets``)."""
    bands, bt = band_energies(wave, rate)
    bands = (bands - bands.mean(1, keepdims=True)) / (bands.std(1, keepdims=True) + 1e-6)
    cols = [np.interp(times + o, bt, row) for o in OFFSETS_S for row in bands]
    return np.stack(cols, axis=1)


@dataclass
class JawModel:
    """Ridge regression from :func:`features` to the z-normalised jaw opening.

    Attributes:
        weights: ``[features + 1]`` float64 (bias last).
    """

    weights: np.ndarray

    def predict(self, wave: np.ndarray, rate: int, times: np.ndarray) -> np.ndarray:
        """``[len(times)]`` predicted jaw opening (z-scale) of ``wave`` at video ``times``."""
        x = features(wave, rate, times)
        return x @ self.weights[:-1] + self.weights[-1]


def fit_jaw_model(clips: list[dict], ridge: float = 3000.0) -> JawModel:
    """Fit on clips ``{"wave", "rate", "times", "jaw"}`` (jaw: seen frames only, any scale).

    The strong ridge matters more for new voices than for the fit: with ``ridge = 10`` the
    leave-one-clip-out r is 0.57 but the prediction's correlation with the envelope of
    held-out training voices is 0.33 on average (10 % of them below -0.1: the weights alternate
    in sign over bands and offsets); with 3000, 0.54 and 0.61 (10th percentile 0.38).
    """
    xs, ys = [], []
    for c in clips:
        x = features(c["wave"], c["rate"], c["times"])
        y = (c["jaw"] - c["jaw"].mean()) / (c["jaw"].std() + 1e-9)
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs)
    x = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    y = np.concatenate(ys)
    reg = ridge * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    return JawModel(np.linalg.solve(x.T @ x + reg, x.T @ y))


def leave_one_clip_out(clips: list[dict]) -> list[float]:
    """Pearson r between the real and the predicted jaw track of each clip, the model fitted
    on the other clips."""
    out = []
    for i, c in enumerate(clips):
        model = fit_jaw_model(clips[:i] + clips[i + 1:])
        pred = model.predict(c["wave"], c["rate"], c["times"])
        out.append(float(np.corrcoef(pred, c["jaw"])[0, 1]))
    return out


def real_clip_tracks(data: Path, rate: int, cache: Path | None = None) -> list[dict]:
    """The single-talker clips of ``DATA/av/speech``: own voice at ``rate`` and the jaw track of
    the most-seen face (``{"name", "wave", "rate", "times", "jaw", "timestamps", "activity"}``;
    ``times``/``jaw`` are the seen frames only). Cached in ``cache`` (computing the tracks runs
    the face tracker on every clip)."""
    if cache is not None and cache.exists():
        return torch.load(cache, weights_only=False)
    from avsplit.clip import Clip
    from avsplit.engine import Engine

    engine = Engine("cpu")
    root = Path(data) / "av" / "speech"
    out = []
    for path in sorted(p for g in SINGLE_TALKER for p in root.glob(g)):
        try:
            with Clip(path) as clip:
                wave = clip.mono(rate).astype(np.float32)
                tracks = engine.face_tracks(clip)
        except Exception as e:  # an unreadable clip is left out of the fit
            print(f"skipping {path.name}: {e}", flush=True)
            continue
        if not tracks:
            continue
        track = max(tracks, key=lambda t: int(np.isfinite(t.activity).sum()))
        seen = np.isfinite(track.activity)
        if seen.sum() < 20:
            continue
        out.append({"name": path.relative_to(root).as_posix(), "wave": wave, "rate": rate,
                    "times": track.timestamps[seen], "jaw": track.activity[seen].astype(np.float64),
                    "timestamps": track.timestamps, "activity": track.activity})
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(out, cache)
    return out


def _slow_noise(n: int, fps: float, rng: np.random.Generator, cutoff_hz: float = 4.0) -> np.ndarray:
    """Unit-variance Gaussian noise low-passed to about ``cutoff_hz`` (jaw tracks move slowly)."""
    width = max(1, int(round(fps / cutoff_hz)))
    x = np.convolve(rng.standard_normal(n + 2 * width), np.hanning(2 * width + 1), mode="same")
    x = x[width:width + n]
    return (x - x.mean()) / (x.std() + 1e-9)


def pseudo_cue(voice: np.ndarray, rate: int, frame_times: np.ndarray, model: JawModel,
               rng: np.random.Generator, r_range: tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
    """A degraded pseudo-visual cue of ``voice`` on the separator's frames (``[2, T]`` float32,
    as :func:`avsplit.cue.mouth_cue` returns for a real face).

    Args:
        voice: ``[samples]`` float32 clean target voice at ``rate``.
        frame_times: ``[T]`` seconds of the STFT frames.
        r_range: the correlation of the cue with the clean prediction is drawn from it.
    """
    duration = len(voice) / rate
    fps = float(rng.choice([25.0, 30.0]))
    times = np.arange(0.0, duration, 1.0 / fps) + rng.uniform(0, 1.0 / fps)
    times = times + rng.normal(0, 0.003, len(times))
    lag = rng.uniform(-0.04, 0.12)  # the sound comes this long after the mouth movement
    jaw = model.predict(voice, rate, times + lag)
    jaw = (jaw - jaw.mean()) / (jaw.std() + 1e-9)
    r = rng.uniform(*r_range)
    sigma = np.sqrt(max(1.0 / r ** 2 - 1.0, 0.0))
    jaw = jaw + sigma * _slow_noise(len(times), fps, rng)
    if rng.random() < 0.5:  # frames where the face was not found
        jaw[rng.random(len(times)) < rng.uniform(0.0, 0.15)] = np.nan
    if rng.random() < 0.2:  # a stretch where the face is not seen at all
        span = int(rng.uniform(0.1, 0.5) * len(times))
        start = int(rng.integers(0, len(times) - span + 1))
        jaw[start:start + span] = np.nan
    return mouth_cue(times, jaw, frame_times)


