"""Audio-visual synchrony measures: ``avsplit sync``'s lag curves, the envelope and mouth
movement that the association and the event timeline read.

What is seen (a face's jaw opening, the picture's motion) and what is heard (a source's RMS
envelope; for ``avsplit sync``'s lips cue, the mixture's 1-3 kHz envelope, :func:`band_envelope`)
are put on one 10 ms grid and correlated over audio lags (Owens & Efros, 2018,
"Multisensory"; Chung & Zisserman, 2016, "SyncNet"): rates of change smoothed over 50 ms
(they match timing better than levels match levels), in a Pearson r weighted by how much the
mouth moves or whether there is sound, whichever is larger, so that a still mouth while a voice
speaks counts against that voice and silence with a still mouth counts next to nothing (the
measures of DESIGN.md). The peak is read as a z-score, ``r * sqrt(evidence seconds /
decorrelation time)`` (:attr:`LagCurve.z`). :mod:`avsplit.sync` searches ±1 s to measure an
offset; :mod:`avsplit.associate` and :mod:`avsplit.events` use :func:`speech_envelope` and
:func:`mouth_movement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avsplit.structures import VisualTrack

NATURAL_LAG_S = 0.04  # speech sound trails jaw opening: median best lag of benchmarks/sync.py on the unshifted av/speech clips (0.042 s)
ENV_HOP_S = 0.01
ENV_WIN_S = 0.04
STEP_S = ENV_HOP_S  # the common grid of both signals (the envelope's hop)
ACTIVITY_S = 0.3
MAX_GAP_S = 0.25  # face unseen for longer: those frames carry no lip evidence
SMOOTH_S = 0.05  # both signals are smoothed over this before their rate of change is taken
# how long the signals take to decorrelate, per cue (rates of change of jaw and envelope
# within ~0.1 s; motion onsets are sparse, and their correlation is counted more strictly)
DECORRELATION_S = {"lips": 0.1, "motion": 0.3}
# z of the peak (see LagCurve.z) where the confidence is 0.5, per cue: chosen on the shifted
# av/speech clips of benchmarks/sync.py (lips: 2.1 since the 1-3 kHz envelope; 2.3 before)
Z_REFUSE = {"lips": 2.1, "motion": 2.3}
FLOOR_WEIGHT = 0.05
# the audio band whose envelope follows the lips best: the second-formant region (Grant &
# Seitz, 2000: the F2 band's envelope correlates best with lip area; Chandrasekaran et al.,
# 2009: mouth opening follows the 1-3 kHz envelope most). On the unshifted av/speech clips its
# rate of change against the jaw's peaked at the natural lag on 16 of 21 clips, against 13 of
# 21 for the broadband RMS envelope (benchmarks/sync.py measures the effect on sync).
LIPS_BAND_HZ = (1000.0, 3000.0)
DARKNESS_WEIGHT = 0.5  # the mouth darkness against the jaw in sync's lips cue (lip_signal)
# speech's 1-3 kHz envelope trails the jaw opening by this: the median best lag of
# benchmarks/sync.py on the unshifted av/speech clips that it answers (0.026 s)
LIPS_BAND_LAG_S = 0.025


def speech_envelope(wave: np.ndarray, rate: int, hop_s: float = ENV_HOP_S,
                    win_s: float = ENV_WIN_S) -> tuple[np.ndarray, np.ndarray]:
    """Linear RMS envelope.

    Args:
        wave: ``[samples]`` float32 at ``rate`` Hz.

    Returns:
        ``(envelope [N] float64, times [N] seconds)``, one value per ``hop_s``, each the RMS
        of a ``win_s`` window centred on its time.
    """
    hop = max(1, int(round(hop_s * rate)))
    win = max(hop, int(round(win_s * rate)))
    power = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    centres = np.arange(0, len(wave), hop)
    lo = np.clip(centres - win // 2, 0, len(wave))
    hi = np.clip(centres + win // 2, 0, len(wave))
    env = np.sqrt((power[hi] - power[lo]) / np.maximum(hi - lo, 1))
    return env, centres / rate


def band_envelope(wave: np.ndarray, rate: int, band_hz: tuple[float, float] = LIPS_BAND_HZ,
                  hop_s: float = ENV_HOP_S, win_s: float = ENV_WIN_S
                  ) -> tuple[np.ndarray, np.ndarray]:
    """RMS envelope of one frequency band (default :data:`LIPS_BAND_HZ`), on the time axis of
    :func:`speech_envelope`.

    Args:
        wave: ``[samples]`` float32 at ``rate`` Hz.
        band_hz: ``(low, high)`` Hz; the STFT bins from ``low`` (inclusive) to ``high``.

    Returns:
        ``(envelope [N] float64, times [N] seconds)``: one value per ``hop_s``, the root mean
        power of the band's bins in a Hann-windowed ``win_s`` frame centred on its time (zeros
        when no bin falls in the band). Its scale is arbitrary but the same for every frame.
    """
    hop = max(1, int(round(hop_s * rate)))
    win = max(hop, int(round(win_s * rate)))
    freqs = np.fft.rfftfreq(win, 1.0 / rate)
    band = (freqs >= band_hz[0]) & (freqs < band_hz[1])
    centres = np.arange(0, len(wave), hop)
    env = np.zeros(len(centres))
    if not band.any():
        return env, centres / rate
    padded = np.pad(wave.astype(np.float64), (win // 2, win - win // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)
    window = np.hanning(win)
    for i in range(0, len(centres), 4096):  # chunks: a long clip never holds all frames at once
        chunk = frames[centres[i:i + 4096]] * window
        env[i:i + 4096] = np.sqrt((np.abs(np.fft.rfft(chunk, axis=1)[:, band]) ** 2).mean(axis=1))
    return env, centres / rate


def voice_envelopes(wave: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Both cues' envelopes of one voice on one time axis: ``([2, N] float64, times [N] s)``,
    row 0 :func:`speech_envelope` (the association's levels), row 1 :func:`band_envelope`
    (the lips cue, :data:`LIPS_BAND_HZ`), so a separated voice is rendered once for both."""
    level, times = speech_envelope(wave, rate)
    return np.stack([level, band_envelope(wave, rate)[0]]), times


@dataclass
class LagCurve:
    """Correlation of a seen and a heard signal over audio lags.

    Attributes:
        lags_s: ``[L]`` seconds (positive: the audio comes after the picture).
        r: ``[L]`` weighted Pearson correlation at each lag.
        evidence_s: ``[L]`` seconds of overlap of valid visual and audio samples at each lag.
        cue: ``"lips"`` or ``"motion"``; track_id: the face track (``None`` for motion).
    """

    lags_s: np.ndarray
    r: np.ndarray
    evidence_s: np.ndarray
    cue: str
    track_id: int | None = None
    best: int = field(init=False)

    def __post_init__(self):
        self.best = int(np.argmax(self.r)) if len(self.r) else 0

    @property
    def lag_s(self) -> float:
        """The best lag in seconds, refined by a parabola through its neighbours."""
        i = self.best
        if 0 < i < len(self.r) - 1:
            a, b, c = self.r[i - 1], self.r[i], self.r[i + 1]
            den = a - 2 * b + c
            if den < 0:
                return float(self.lags_s[i] + 0.5 * (a - c) / den * (self.lags_s[1] - self.lags_s[0]))
        return float(self.lags_s[i])

    @property
    def peak(self) -> float:
        return float(self.r[self.best])

    @property
    def z(self) -> float:
        """The peak correlation as a z-score: ``r * sqrt(evidence_s / DECORRELATION_S[cue])``
        (a correlation of ``n`` independent samples has a null spread of ``1 / sqrt(n)``)."""
        n = max(float(self.evidence_s[self.best]), 0.0) / DECORRELATION_S[self.cue]
        return self.peak * float(np.sqrt(n))

    @property
    def confidence(self) -> float:
        """0..1, a logistic of :attr:`z` that is 0.5 at the cue's :data:`Z_REFUSE`."""
        return float(1.0 / (1.0 + np.exp(-2.0 * (self.z - Z_REFUSE[self.cue]))))


def moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average of ``x [N]`` over ``n`` samples (fewer at the edges), float64."""
    if n <= 1:
        return x.astype(np.float64)
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    half = n // 2
    idx = np.arange(len(x))
    lo = np.clip(idx - half, 0, len(x))
    hi = np.clip(idx + half + 1, 0, len(x))
    return (c[hi] - c[lo]) / np.maximum(hi - lo, 1)


def activity(x: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Soft activity 0..1: the local standard deviation of ``x`` over ``n`` samples against
    its 90th percentile over the masked samples."""
    m = mask.astype(np.float64)
    cnt = np.maximum(moving_average(m, n), 1e-9)
    mean = moving_average(x * m, n) / cnt
    var = np.maximum(moving_average(x * x * m, n) / cnt - mean ** 2, 0.0)
    sd = np.sqrt(var) * mask
    ref = float(np.percentile(sd[mask], 90)) if mask.any() else 0.0
    return np.clip(sd / ref, 0.0, 1.0) if ref > 0 else np.zeros(len(x))


def lag_curve(seen: np.ndarray, seen_mask: np.ndarray, seen_act: np.ndarray,
              heard: np.ndarray, heard_act: np.ndarray, cue: str, track_id: int | None = None,
              max_lag_s: float = 1.0) -> LagCurve:
    """Weighted Pearson correlation of a visual and an audio signal over audio lags.

    For lag ``L`` (``k = L / STEP_S`` grid steps), visual sample ``t`` is paired with audio
    sample ``t + k`` where both exist (no wrap-around) and weighted by
    ``max(seen_act[t], heard_act[t + k], FLOOR_WEIGHT)`` where ``seen_mask[t]``.

    Args:
        seen, seen_mask, seen_act: ``[N]`` float64 visual signal on the :data:`STEP_S` grid,
            bool where it is valid, and its activity 0..1.
        heard, heard_act: ``[M]`` float64 audio signal on the same grid and its activity.
        max_lag_s: the search covers ``-max_lag_s..+max_lag_s`` seconds symmetrically.

    Returns:
        A :class:`LagCurve` with lags every :data:`STEP_S`.
    """
    kmax = int(round(max_lag_s / STEP_S))
    lags = np.arange(-kmax, kmax + 1)
    r = np.zeros(len(lags))
    ev = np.zeros(len(lags))
    n, m = len(seen), len(heard)
    for j, k in enumerate(lags):
        t0, t1 = max(0, -k), min(n, m - k)
        if t1 - t0 < 10:
            continue
        x = seen[t0:t1]
        y = heard[t0 + k:t1 + k]
        w = np.maximum(np.maximum(seen_act[t0:t1], heard_act[t0 + k:t1 + k]), FLOOR_WEIGHT)
        w = w * seen_mask[t0:t1]
        sw = w.sum()
        ev[j] = seen_mask[t0:t1].sum() * STEP_S
        if sw <= 0:
            continue
        xm, ym = (w * x).sum() / sw, (w * y).sum() / sw
        dx, dy = x - xm, y - ym
        den = np.sqrt((w * dx * dx).sum() * (w * dy * dy).sum())
        r[j] = (w * dx * dy).sum() / den if den > 0 else 0.0
    return LagCurve(np.round(lags * STEP_S, 3), r, ev, cue, track_id)


def grid_times(duration: float) -> np.ndarray:
    return np.arange(int(np.ceil(duration / STEP_S))) * STEP_S


def rate_of_change(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """``d/dt`` (per grid step) of ``x`` smoothed over :data:`SMOOTH_S`; 0 where invalid."""
    d = np.gradient(moving_average(x, max(1, int(round(SMOOTH_S / STEP_S)))))
    return d if valid is None else d * valid


def heard_signal(envelope: tuple[np.ndarray, np.ndarray], grid: np.ndarray, onsets: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The audio side on the grid: ``(signal, activity 0..1)``, from an RMS envelope
    (:func:`speech_envelope`, or :func:`band_envelope` for the lips cue of ``avsplit sync``;
    ``(values [N], times [N] s)``). For lips, the rate of change
    of the envelope (the jaw's rate of change matches it better than opening matches
    level: 68 % against 49 % of shifted ``av/speech`` clips within a frame in development);
    for motion, the half-wave rectified rise of the envelope in dB (onsets). Speech activity:
    0 at 40 dB below the loudest moment, 1 from 20 dB below it."""
    env, env_t = envelope
    env = np.interp(grid, env_t, env) if len(env) else np.zeros(len(grid))
    db = 20 * np.log10(np.maximum(env, 1e-5))
    loud = np.clip((db - (db.max() - 40.0)) / 20.0, 0.0, 1.0)
    if onsets:
        rise = np.maximum(rate_of_change(db), 0.0)
        return rise, activity(rise, np.ones(len(grid), bool), int(ACTIVITY_S / STEP_S))
    return rate_of_change(env), loud


def on_grid(t: np.ndarray, x: np.ndarray, grid: np.ndarray, max_gap_s: float = MAX_GAP_S
             ) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame ``x`` at times ``t`` (NaN where unseen) linearly interpolated onto ``grid``;
    ``(values, valid mask)``, invalid beyond the seen frames and across gaps over
    ``max_gap_s``."""
    ok = np.isfinite(x)
    t, x = t[ok], x[ok]
    if len(t) < 2:
        return np.zeros(len(grid)), np.zeros(len(grid), bool)
    vals = np.interp(grid, t, x)
    i = np.clip(np.searchsorted(t, grid), 1, len(t) - 1)
    gap = t[i] - t[i - 1]
    valid = (grid >= t[0]) & (grid <= t[-1]) & (gap <= max_gap_s)
    return vals, valid


def mouth_movement(track: VisualTrack, grid: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much a face's mouth moves: ``(jaw opening [N], valid [N] bool, movement [N] 0..1)``
    on ``grid`` (seconds); movement is the jaw's local standard deviation over
    :data:`ACTIVITY_S` against its 90th percentile over the track."""
    jaw, valid = on_grid(track.timestamps, track.activity.astype(np.float64), grid)
    return jaw, valid, activity(jaw, valid, int(ACTIVITY_S / STEP_S))


def lip_signal(track: VisualTrack, grid: np.ndarray, darkness_weight: float = DARKNESS_WEIGHT
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The visual side of the lips cue: ``(signal [N], valid [N] bool, movement [N] 0..1)`` on
    ``grid`` (seconds).

    The signal is the rate of change (:func:`rate_of_change`) of the jaw opening (``activity``)
    plus, where the track has it, ``darkness_weight`` times that of the mouth darkness
    (``mouth_darkness``, see :func:`avsplit.vision.faces.mouth_darkness`), each divided by its
    standard deviation over the valid samples. The darkness carries what the lips do without
    the jaw (a smiling or tight-lipped talker, as on several TV heads of ``av/speech``).
    ``avsplit sync`` reads it at :data:`DARKNESS_WEIGHT` (``benchmarks/sync.py``: 10 -> 7 % of
    the lips copies refused, all answers still within a frame of the clip's own estimate); the
    association's :func:`avsplit.associate.lips_score` at 0, the jaw alone
    (``docs/benchmarks.md``, events section).

    Returns:
        ``valid`` is where the signal exists (the jaw's, and the darkness's where it is used);
        ``movement`` is :func:`mouth_movement`'s (the jaw's).
    """
    jaw, valid, moving = mouth_movement(track, grid)
    jaw_change = rate_of_change(jaw, valid)
    dark = track.mouth_darkness
    if dark is None or darkness_weight == 0 or int(np.isfinite(dark).sum()) < 10:
        return jaw_change, valid, moving
    dark, dark_valid = on_grid(track.timestamps, np.asarray(dark, np.float64), grid)
    both = valid & dark_valid
    dark_change = rate_of_change(dark, both)
    if both.sum() < 2:
        return jaw_change, valid, moving
    unit = lambda x: x / (x[both].std() + 1e-12)
    return (unit(jaw_change) + darkness_weight * unit(dark_change)) * both, both, moving


def lip_curve(track: VisualTrack, heard: tuple[np.ndarray, np.ndarray], grid: np.ndarray,
              max_lag_s: float = 1.0) -> LagCurve:
    """:func:`lag_curve` of a face track's lips (:func:`lip_signal`) against the audio side of
    :func:`heard_signal` (``lips`` cue), over ``±max_lag_s`` seconds."""
    signal, valid, act = lip_signal(track, grid)
    return lag_curve(signal, valid, act, *heard, "lips", int(track.track_id), max_lag_s)
