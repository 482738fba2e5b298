"""Audio-visual association: which separated voice belongs to which visible face.

Computed, not learned: the amplitude envelope of each candidate source is correlated with each
face track's jaw opening over a lag search (the audio-visual synchrony cue of Owens & Efros,
2018, "Multisensory", and of the lip-sync literature, e.g. Chung & Zisserman, 2016,
"SyncNet"). Raw Pearson r is biased upwards by the search over lags and by short clips, so
each best r is turned into a z-score against a null distribution made of the same statistic
on circularly shifted envelopes (shifts of 1 s or more, which break true synchrony); a source
is on-screen when its z-score and r clear fixed thresholds, not merely when it is the best
match. Everything sits behind :func:`associate` so a learned model can replace it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avsplit.structures import VisualTrack

ENV_HOP_S = 0.01
ENV_WIN_S = 0.04
LAGS_S = np.round(np.arange(-0.3, 0.3001, 0.02), 3)
NATURAL_LAG_S = 0.05  # speech sound trails jaw opening by tens of ms (design doc: peak at 0..+0.1 s)
LAG_PRIOR = 0.3  # r penalty at 0.35 s from the natural lag (quadratic)


@dataclass
class SyncScore:
    """Synchrony of one source with one face track.

    Attributes:
        track_id: the face track.
        r: Pearson correlation at the best lag, less the lag prior's penalty (lags far from
            the natural +0.05 s count less; see :data:`LAG_PRIOR`).
        lag_s: best lag in seconds (positive: the audio comes after the mouth movement).
        z: ``(r - mean_null) / std_null`` against circularly shifted audio.
        frames: number of video frames with the face seen and used.
    """

    track_id: int
    r: float
    lag_s: float
    z: float
    frames: int


@dataclass
class Assignment:
    """The association decision for one candidate source.

    Attributes:
        source_index: row in the sources array.
        onscreen: matched to a visible face.
        track_id: the matched face track (``None`` when off-screen).
        confidence: 0..1 that the decision is right (a logistic of the z-score around the threshold).
        energy_db: the source's RMS level in dB relative to the loudest candidate.
        scores: one :class:`SyncScore` per face track.
        reason: a short explanation for the manifest.
    """

    source_index: int
    onscreen: bool
    track_id: int | None
    confidence: float
    energy_db: float
    scores: list[SyncScore] = field(default_factory=list)
    reason: str = ""


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


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between vector ``a [T]`` and each row of ``b [L, T]``."""
    a = a - a.mean()
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum() * (b * b).sum(axis=1)) + 1e-12
    return (b @ a) / denom


def sync_score(wave: np.ndarray, rate: int, track: VisualTrack, lags_s: np.ndarray = LAGS_S,
               n_null: int = 40, envelope: tuple[np.ndarray, np.ndarray] | None = None) -> SyncScore:
    """Synchrony of a source waveform with a face track's jaw opening.

    Args:
        wave: ``[samples]`` float32 mono at ``rate`` Hz (ignored when ``envelope`` is given).
        track: a face :class:`VisualTrack` (``activity`` = jaw opening, NaN where unseen).
        lags_s: audio lags to search, seconds (default -0.3..+0.3 s in 20 ms steps).
        n_null: number of circular shifts for the null distribution.

    Returns:
        A :class:`SyncScore`; ``r = z = 0`` when the face is seen in fewer than 10 frames.
    """
    env, env_t = envelope if envelope is not None else speech_envelope(wave, rate)
    seen = ~np.isnan(track.activity)
    t = track.timestamps[seen]
    act = track.activity[seen].astype(np.float64)
    if len(act) < 10 or act.std() < 1e-9 or env.std() < 1e-12:
        return SyncScore(track.track_id, 0.0, 0.0, 0.0, int(len(act)))
    duration = env_t[-1] + ENV_HOP_S

    penalty = LAG_PRIOR * ((lags_s - NATURAL_LAG_S) / 0.35) ** 2

    def best_r(shift: float) -> tuple[float, float]:
        times = (t[None, :] + lags_s[:, None] + shift) % duration
        rows = np.interp(times, env_t, env)
        r = _pearson_rows(act, rows)
        i = int(np.argmax(r - penalty))
        return float(r[i] - penalty[i]), float(lags_s[i])

    r, lag = best_r(0.0)
    span = duration - 2.0
    null = []
    if span > 0:
        for shift in 1.0 + span * (np.arange(n_null) + 0.5) / n_null:
            null.append(best_r(shift)[0])
    null = np.array(null) if null else np.array([0.0, 0.3])
    z = (r - null.mean()) / (null.std() + 0.05)
    return SyncScore(track.track_id, r, lag, float(z), int(len(act)))


def associate(sources: np.ndarray, rate: int, tracks: list[VisualTrack], **thresholds
              ) -> list[Assignment]:
    """:func:`associate_envelopes` of waveforms ``[K, samples]`` float32 mono at ``rate`` Hz."""
    envs = [speech_envelope(s, rate) for s in sources]
    if not envs:
        return []
    return associate_envelopes(np.stack([e for e, _ in envs]), envs[0][1], tracks, **thresholds)


def associate_envelopes(envelopes: np.ndarray, env_t: np.ndarray, tracks: list[VisualTrack],
                        z_best: float = 1.0, r_best: float = 0.15, z_other: float = 3.0,
                        r_other: float = 0.3, silence_db: float = -30.0) -> list[Assignment]:
    """Decide for each candidate source whether it is the voice of a visible face.

    Each face takes its best-synchronised source when that source's ``z >= z_best`` and
    ``r >= r_best``; any other source joins a face only on strong evidence (``z >= z_other``
    and ``r >= r_other``: a voice the separator split over two slots). Thresholds were set on
    the development clips (own voice vs. held-out impostor voices; see docs/benchmarks.md).

    Args:
        envelopes: ``[K, N]`` RMS envelopes (:func:`speech_envelope`) of the candidate speech
            sources; env_t: ``[N]`` their times in seconds.
        tracks: face tracks of the clip (may be empty).
        silence_db: sources quieter than this (dB relative to the loudest candidate) are
            treated as empty and left off-screen.

    Returns:
        One :class:`Assignment` per source, in source order.
    """
    rms = np.sqrt((envelopes.astype(np.float64) ** 2).mean(axis=1)) + 1e-12
    level = 20 * np.log10(rms / rms.max())
    n_sources = len(envelopes)
    active = [k for k in range(n_sources) if level[k] >= silence_db]
    scores: dict[int, list[SyncScore]] = {}
    for k in active:
        env = (envelopes[k], env_t)
        scores[k] = [sync_score(np.zeros(0, np.float32), 0, tr, envelope=env) for tr in tracks]
    matched: dict[int, SyncScore] = {}
    for f in range(len(tracks)):
        ranked = sorted(active, key=lambda k: -scores[k][f].z)
        for rank, k in enumerate(ranked):
            s = scores[k][f]
            strong = s.z >= z_other and s.r >= r_other
            plausible = rank == 0 and s.z >= z_best and s.r >= r_best
            if (strong or plausible) and (k not in matched or s.z > matched[k].z):
                matched[k] = s
    out = []
    for k in range(n_sources):
        if k not in scores:
            out.append(Assignment(k, False, None, 0.0, float(level[k]), [], f"empty source ({level[k]:.0f} dB)"))
        elif not tracks:
            out.append(Assignment(k, False, None, 0.0, float(level[k]), [], "no face visible"))
        elif k in matched:
            s = matched[k]
            out.append(Assignment(k, True, s.track_id, float(1 / (1 + np.exp(-(s.z - z_best)))),
                                  float(level[k]), scores[k],
                                  f"in sync with face {s.track_id} (r={s.r:.2f}, z={s.z:.1f})"))
        else:
            best = max(scores[k], key=lambda s: s.z)
            out.append(Assignment(k, False, None, float(1 / (1 + np.exp(best.z - z_best))),
                                  float(level[k]), scores[k],
                                  f"no face in sync (best face {best.track_id}: r={best.r:.2f}, z={best.z:.1f})"))
    return out
