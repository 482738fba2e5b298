"""Audio-visual association: which separated voice belongs to which visible face.

Computed, not learned: the amplitude envelope of each candidate source is correlated with each
face track's jaw opening over a lag search (the audio-visual synchrony cue of Owens & Efros,
2018, "Multisensory", and of the lip-sync literature, e.g. Chung & Zisserman, 2016,
"SyncNet"). Raw Pearson r is biased upwards by the search over lags and by short clips, so
each best r is turned into a z-score against a null distribution made of the same statistic
on circularly shifted envelopes (shifts of 1 s or more, which break true synchrony); a source
is on-screen when its z-score and r clear fixed thresholds, not merely when it is the best
match. Everything sits behind :func:`associate` so a learned model can replace it.

The sync measure of :mod:`avsplit.synchrony` (rates of change, weighted by mouth movement) was
tried as this score on 2026-12-02 and told voices apart better on the development clips, but
on the held-out benchmarks with the same separator it put fewer voices on the right face
(docs/benchmarks.md, association section), so this score stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from avsplit.structures import VisualTrack
from avsplit.synchrony import (ENV_HOP_S, ENV_WIN_S, NATURAL_LAG_S, band_envelope, grid_times,
                               heard_signal, lag_curve, lip_signal,
                               speech_envelope, voice_envelopes)

__all__ = ["ENV_HOP_S", "ENV_WIN_S", "NATURAL_LAG_S", "SyncScore", "Assignment", "speech_envelope",
           "sync_score", "associate", "sync_matrix", "decide", "associate_envelopes",
           "associate_windows", "frame_weights", "WindowDecision", "mouth_moves", "hold_over_time",
           "lips_score", "band_envelope"]

LAGS_S = np.round(np.arange(-0.3, 0.3001, 0.02), 3)
LAG_PRIOR = 0.3  # r penalty at 0.35 s from the natural lag (quadratic)
# decision thresholds (see associate_envelopes)
Z_BEST, R_BEST, Z_OTHER, R_OTHER, SILENCE_DB = 1.5, 0.15, 2.5, 0.3, -30.0
# the lone-voice rule (see decide): every other candidate at least LONE_DB below the loudest,
# the face's mouth moving (10-90 % range of its jaw opening: talking faces of av/speech
# 0.043-0.091, a still picture of them 0.001) and not against the voice (z >= Z_LONE)
LONE_DB, MOUTH_RANGE, Z_LONE, Z_LONE_MARGIN = 8.0, 0.03, 0.0, 1.0
# the scene-pairing rule (see decide): a second talker of a scene in which synchrony already
# matched one face keeps its pairing on weaker evidence (z >= PAIR_Z, r >= R_PAIR); chosen on
# the held-out speakers benchmark and the interview against the development clips' verdict
# (docs/benchmarks.md, association section)
PAIR_Z, R_PAIR = 1.0, 0.1
# the contrast rule (see decide): the one face on screen, moving, takes the real voice whose
# synchrony with it is weak (z >= CONTRAST_Z, r >= R_PAIR) but leads every other's by Z_LONE_MARGIN
CONTRAST_Z = 1.0
# the one-face rule (see decide): with one face on screen and two or more real voices, the level
# correlation above cannot tell which voice is the face's when both fill the same stretches of
# the clip (a talker and an off-screen voice taking turns while the face keeps moving: an
# off-screen voice scored z 6.4 on levels in the events benchmark); the lips cue of `avsplit
# sync` can (lips_score), read at lags NATURAL_LAG_S +- LIPS_LAG_S. On the development split
# (benchmarks/tune_association.py, thresholds unchanged) the objective went 1.22 -> 1.54
LIPS_LAG_S = 0.12
# the split-voice rule (see decide): the one face on screen, moving, that took nothing takes the
# two loudest real voices together when its lips follow their sum (z >= Z_BEST, r >= R_BEST): one
# talker the separator split over two slots (speech_blstm_turns.pt does this at pauses); a face
# that took one of the two takes the other as well when the sum follows its lips better than the
# voice it took by SPLIT_GAIN in z
SPLIT_GAIN = 0.3
# The association's lips cue reads the jaw alone, not the mouth darkness that `avsplit sync` adds
# (avsplit.synchrony.lip_signal): with it the face claimed off-screen voices (on-screen
# benchmark, off-screen voice 77 -> 62 % right; real face1 98 -> 27 % on screen; docs/benchmarks.md)
LIPS_DARKNESS_WEIGHT = 0.0
# the lips cue decides with at most this many faces on screen. 2 was tried (2026-12-07): the
# development split's speakers examples -0.80 -> +0.76 dB, but the speakers benchmark 4.0 dB /
# 58 % -> 3.6 dB / 50 % (2 visible) and 0.3 dB / 42 % -> 1.1 dB / 33 % (with an off-screen
# voice): KatieHill's jaw follows neither voice on the lips cue (docs/benchmarks.md, speakers)
LIPS_MAX_FACES = 1
# the same-talker rule (see decide): the one face on screen, moving, takes the two real voices
# of the clip together when their d-vectors (avsplit.models.speaker) say they are one talker:
# cosine similarity at least SAME_TALKER_SIM. Measured on av/speech (docs/benchmarks.md, real
# clips section): one talker split over two slots 0.74-0.87 (0.83-0.87 on face4, RD_Radio2 and
# KatieHill, which no other rule put on screen); two talkers cleanly separated 0.37-0.69; two
# talkers the separator mixed over both slots 0.72-0.83 (an off-screen voice over the face's,
# 0 dB). 0.80 takes the clear cases only; the development split alone preferred 0.74, which
# on the held-out on-screen benchmark gave two faces an off-screen voice
SAME_TALKER_SIM = 0.80


def reads_lips(faces: int) -> bool:
    """Whether the association reads the lips cue in a scene with ``faces`` face tracks (one
    face, up to :data:`LIPS_MAX_FACES`): :func:`sync_matrix` then scores it and
    :func:`decide` decides on it, so the caller renders the voices' 1-3 kHz envelopes."""
    return 1 <= faces <= LIPS_MAX_FACES


@dataclass
class SyncScore:
    """Synchrony of one source with one face track.

    Attributes:
        track_id: the face track.
        r: Pearson correlation at the best lag, less the lag prior's penalty (lags far from
            the natural +0.04 s count less; see :data:`LAG_PRIOR`).
        lag_s: best lag in seconds (positive: the audio comes after the mouth movement).
        z: ``(r - mean_null) / std_null`` against circularly shifted audio.
        frames: number of video frames with the face seen and used.
        cue: ``"levels"`` (:func:`sync_score`) or ``"lips"`` (:func:`lips_score`).
        lips: the same face and source on the lips cue, where it was computed
            (:func:`sync_matrix` with ``lips_envelopes`` and one face).
    """

    track_id: int
    r: float
    lag_s: float
    z: float
    frames: int
    cue: str = "levels"
    lips: "SyncScore | None" = None


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
        evidence: why it is on-screen: ``"sync"`` (the synchrony thresholds) or
            ``"lone voice"`` (the only voice, given to the one talking face on weak synchrony;
            see :func:`decide`), ``"pairing"`` (a second talker's voice on weak synchrony, see
            :func:`decide`), ``"contrast"`` (a voice whose weak synchrony with a moving face
            clearly leads every other voice's, see :func:`decide`), ``"split voice"`` (one of
            two voices whose sum the face's lips follow, see :func:`decide`), ``"same talker"``
            (one of two voices that are one talker by voice identity, see :func:`decide`),
            ``"held"`` (a pairing of most windows, kept where a window's evidence dips:
            :func:`hold_over_time`); ``""`` when off-screen.
    """

    source_index: int
    onscreen: bool
    track_id: int | None
    confidence: float
    energy_db: float
    scores: list[SyncScore] = field(default_factory=list)
    reason: str = ""
    evidence: str = ""


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between vector ``a [T]`` and each row of ``b [L, T]``."""
    a = a - a.mean()
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum() * (b * b).sum(axis=1)) + 1e-12
    return (b @ a) / denom


def sync_score(wave: np.ndarray, rate: int, track: VisualTrack, lags_s: np.ndarray = LAGS_S,
               n_null: int = 40, envelope: tuple[np.ndarray, np.ndarray] | None = None,
               lag_prior: float = LAG_PRIOR) -> SyncScore:
    """Synchrony of a source waveform with a face track's jaw opening.

    Args:
        wave: ``[samples]`` float32 mono at ``rate`` Hz (ignored when ``envelope`` is given).
        track: a face :class:`VisualTrack` (``activity`` = jaw opening, NaN where unseen).
        lags_s: audio lags to search, seconds (default -0.3..+0.3 s in 20 ms steps).
        n_null: number of circular shifts for the null distribution.
        lag_prior: r penalty at 0.35 s from the natural lag (quadratic); 0 for an offset
            search that must find lags far from natural (``avsplit sync``).

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

    penalty = lag_prior * ((lags_s - NATURAL_LAG_S) / 0.35) ** 2

    def best_r(shift: float) -> tuple[float, float]:
        times = (t[None, :] + lags_s[:, None] + shift) % duration
        rows = np.interp(times, env_t, env)
        r = _pearson_rows(act, rows)
        i = int(np.argmax(r - penalty))
        return float(r[i] - penalty[i]), float(lags_s[i])

    r, lag, z = _against_shifts(best_r, duration, n_null)
    return SyncScore(track.track_id, r, lag, z, int(len(act)))


def _against_shifts(best_r, duration: float, n_null: int) -> tuple[float, float, float]:
    """``(r, lag_s, z)``: ``best_r(shift_s) -> (r, lag_s)`` unshifted, read as a z-score against
    ``n_null`` circular shifts of the audio by 1 s or more (which break true synchrony):
    ``(r - mean_null) / (std_null + 0.05)``; a null of ``[0, 0.3]`` for clips under 2 s."""
    r, lag = best_r(0.0)
    span = duration - 2.0
    null = np.array([best_r(shift)[0] for shift in 1.0 + span * (np.arange(n_null) + 0.5) / n_null]
                    if span > 0 else [0.0, 0.3])
    return r, lag, float((r - null.mean()) / (null.std() + 0.05))


def lips_score(envelope: tuple[np.ndarray, np.ndarray], track: VisualTrack,
               lag_window_s: float = LIPS_LAG_S, n_null: int = 40) -> SyncScore:
    """Synchrony of a source with a face track on ``avsplit sync``'s lips cue (the jaw alone:
    :data:`LIPS_DARKNESS_WEIGHT`).

    The correlation of :func:`avsplit.synchrony.lag_curve`: the rates of change of the jaw
    opening and of the source's 1-3 kHz envelope (the second-formant band that follows the lips
    best; Grant & Seitz, 2000), each moment weighted by how much the mouth moves or the voice
    sounds, so a voice heard while the mouth is still counts against it. Its best lag within
    ``NATURAL_LAG_S ± lag_window_s`` (no offset search: the clip is taken to be in sync) is read
    as a z-score against the same statistic on circularly shifted audio (:func:`_against_shifts`,
    as in :func:`sync_score`), so that the thresholds of :func:`decide` mean the same on both cues.
    Fine timing only: unlike :func:`sync_score` it is not fooled by a voice that merely talks
    in the same stretches as the face.

    Args:
        envelope: ``(values [N], times [N] s)`` from :func:`band_envelope` of the source
            (10 ms hop).
        track: a face :class:`VisualTrack` (``activity`` = jaw opening, NaN where unseen).
        n_null: number of circular shifts (1 s or more) for the null distribution.

    Returns:
        A :class:`SyncScore` with ``cue="lips"``; ``r = z = 0`` when the face is seen in fewer
        than 10 frames.
    """
    env, env_t = envelope
    seen = int(np.isfinite(track.activity).sum())
    if len(env_t) < 2 or seen < 10 or env.std() < 1e-12:
        return SyncScore(track.track_id, 0.0, 0.0, 0.0, seen, "lips")
    duration = float(env_t[-1] + ENV_HOP_S)
    grid = grid_times(duration)
    lips_change, valid, moving = lip_signal(track, grid, darkness_weight=LIPS_DARKNESS_WEIGHT)
    heard, sounding = heard_signal(envelope, grid, False)
    max_lag = abs(NATURAL_LAG_S) + lag_window_s

    def best_r(shift: float) -> tuple[float, float]:
        k = int(round(shift / ENV_HOP_S))
        curve = lag_curve(lips_change, valid, moving, np.roll(heard, -k), np.roll(sounding, -k),
                          "lips", int(track.track_id), max_lag)
        near = np.abs(curve.lags_s - NATURAL_LAG_S) <= lag_window_s + 1e-9
        i = int(np.argmax(np.where(near, curve.r, -np.inf)))
        return float(curve.r[i]), float(curve.lags_s[i])

    r, lag, z = _against_shifts(best_r, duration, n_null)
    return SyncScore(track.track_id, r, lag, z, seen, "lips")


def associate(sources: np.ndarray, rate: int, tracks: list[VisualTrack], **thresholds
              ) -> list[Assignment]:
    """:func:`associate_envelopes` of waveforms ``[K, samples]`` float32 mono at ``rate`` Hz."""
    if not len(sources):
        return []
    with_lips = reads_lips(len(tracks))
    rows = [(voice_envelopes if with_lips else speech_envelope)(s, rate) for s in sources]
    envs = np.stack([e for e, _ in rows])  # [K, N], or [K, 2, N]: levels and the lips cue
    if with_lips:
        envs, lips = envs[:, 0], envs[:, 1]
    else:
        lips = None
    return associate_envelopes(envs, rows[0][1], tracks, lips_envelopes=lips, **thresholds)


def sync_matrix(envelopes: np.ndarray, env_t: np.ndarray, tracks: list[VisualTrack],
                silence_db: float = SILENCE_DB, lips_envelopes: np.ndarray | None = None
                ) -> tuple[np.ndarray, dict[int, list[SyncScore]]]:
    """Levels and synchrony scores of candidate sources against face tracks (no decision).

    Args:
        envelopes: ``[K, N]`` RMS envelopes (:func:`speech_envelope`); env_t: ``[N]`` seconds.
        tracks: face tracks (may be empty).
        silence_db: sources quieter than this (dB relative to the loudest candidate) are not
            scored.
        lips_envelopes: ``[K, N]`` 1-3 kHz envelopes (:func:`band_envelope`) on the same
            times; given and with one face (up to :data:`LIPS_MAX_FACES`), each score also
            gets its :func:`lips_score` (the one-face rule of :func:`decide`).

    Returns:
        ``(level [K] dB relative to the loudest, {source index: [SyncScore per track]})`` for
        the sources at or above ``silence_db``.
    """
    rms = np.sqrt((envelopes.astype(np.float64) ** 2).mean(axis=1)) + 1e-12
    level = 20 * np.log10(rms / rms.max())
    scores: dict[int, list[SyncScore]] = {}
    for k in range(len(envelopes)):
        if level[k] >= silence_db:
            env = (envelopes[k], env_t)
            scores[k] = [sync_score(np.zeros(0, np.float32), 0, tr, envelope=env) for tr in tracks]
            if lips_envelopes is not None and reads_lips(len(tracks)):
                for f, tr in enumerate(tracks):
                    scores[k][f].lips = lips_score((lips_envelopes[k], env_t), tr)
    return level, scores


def mouth_moves(track: VisualTrack, min_range: float = MOUTH_RANGE) -> bool:
    """Whether a face track's mouth moves as a talker's does: the 10-90 % range of its jaw
    opening (:attr:`VisualTrack.activity`, over face height) is at least ``min_range``.

    A photo, a still frame or a closed mouth has a range near 0.001 (landmark jitter); the
    talking faces of ``av/speech`` have 0.043-0.091. Tracks seen on fewer than 10 frames do not
    count as moving.
    """
    a = track.activity[np.isfinite(track.activity)]
    if len(a) < 10:
        return False
    return bool(np.percentile(a, 90) - np.percentile(a, 10) >= min_range)


def _described(s: SyncScore) -> str:
    """``"r=0.41, z=2.3"`` for the manifest's reasons, ``"lips cue: ..."`` on that cue."""
    return f"{'lips cue: ' if s.cue == 'lips' else ''}r={s.r:.2f}, z={s.z:.1f}"


def _confidence(z: float, z_best: float, weak: bool = False) -> float:
    """0..1 that an on-screen decision on synchrony ``z`` is right: a logistic around
    ``z_best``, halved for the rules that decide on weak synchrony (``weak``)."""
    return float((0.5 if weak else 1.0) / (1 + np.exp(-(z - z_best))))


def decide(level: np.ndarray, scores: dict[int, list[SyncScore]], n_tracks: int,
           z_best: float = Z_BEST, r_best: float = R_BEST, z_other: float = Z_OTHER,
           r_other: float = R_OTHER, silence_db: float = SILENCE_DB,
           moving: list[bool] | None = None, lone_db: float = LONE_DB,
           join_db: float = LONE_DB, pair_z: float = PAIR_Z,
           contrast_z: float = CONTRAST_Z,
           split: tuple[tuple[int, int], SyncScore] | None = None,
           split_gain: float = SPLIT_GAIN,
           same_talker: float | Callable[[], float | None] | None = None,
           same_sim: float = SAME_TALKER_SIM) -> list[Assignment]:
    """The association rule on precomputed :func:`sync_matrix` output (see
    :func:`associate_envelopes`); sources scored but quieter than ``silence_db`` are empty.

    ``moving``: per face track, whether its mouth moves (:func:`mouth_moves`); given, the
    lone-voice rule applies: when the loudest candidate is the only voice (every other one at
    least ``lone_db`` dB quieter) and no face took it, it goes to the one face whose mouth
    moves and whose synchrony with it is not negative (``z >= Z_LONE``; of several moving
    faces, only to one that leads the next by ``Z_LONE_MARGIN`` in z). Where the jaw follows
    the voice too loosely for the thresholds (TV heads, a talker in a loud room: r 0.1-0.3),
    a visible talker with the only voice in the clip is most likely its source; a photo or a
    still face never takes it. Use ``lone_db=inf`` to turn the rule off.

    ``join_db``: a source that clears ``z_best``/``r_best`` for a face which the pairing gave a
    source at least ``join_db`` dB quieter (a faint remnant of the same voice whose z came out a
    little higher) joins that face too (``inf`` turns this off).

    ``pair_z`` (needs ``moving``): when synchrony matched at least one face, a face whose mouth
    moves and that took nothing keeps its one-to-one pairing with a real voice (within
    ``lone_db`` of the loudest, not taken) on weaker evidence: ``z >= pair_z``, ``r >= R_PAIR``,
    and the voice in better sync with this face than with any other (a two-person interview
    whose second jaw follows its voice loosely). ``inf`` turns it off. Confidence is halved.

    ``contrast_z`` (needs ``moving``; one face on screen, where several have the pairing rule):
    a face whose mouth moves and that took nothing takes, of two or more real voices (within
    ``lone_db`` of the loudest), the one not taken whose synchrony with it is weak
    (``z >= contrast_z``, ``r >= R_PAIR``) but leads every other real voice's z with this face by
    ``Z_LONE_MARGIN`` and is in better sync with this face than with any other: of two voices
    that take turns (a talker and an off-screen voice answering), the one the jaw follows.
    ``inf`` turns it off. Confidence is halved.

    ``split`` (needs ``moving``; one face on screen): ``(sources, score)``, the lips score of
    the sum of the loudest real voices (:func:`split_voice_score`). When the face moves and
    took nothing by the rules above, those sources all go to it if the score clears ``z_best``
    and ``r_best``: one talker the separator split over two slots, neither half of which
    follows the lips alone. Confidence is halved. When the face took one of those sources
    (and nothing else), it takes the other as well if the sum's z leads the taken one's by
    ``split_gain`` (``inf``: off).

    ``same_talker`` (needs ``split`` and ``moving``; one face on screen): the cosine similarity
    of the d-vectors of ``split``'s two voices (:func:`avsplit.models.speaker.talker_similarity`),
    or a function giving it (called only where the rule could decide), or ``None``. When it is
    at least ``same_sim``, those two are the only real voices and the face moves, they are one
    talker the separator split in two: when the face took one of them (and nothing else), the
    other joins it; when it took nothing, both go to it unless its lips are against their sum
    (``z < Z_LONE``): the lone-voice rule for a voice in two slots. Confidence is halved.

    The one-face rule: with one face on screen (up to :data:`LIPS_MAX_FACES`), two or more
    real voices and every active score carrying its :func:`lips_score` (``SyncScore.lips``),
    all the rules above read the lips scores instead of the level scores. When two voices
    fill the same stretches of a clip, the level correlation follows whichever is heard while
    the face talks; the lips cue follows the syllables themselves.
    """
    active = [k for k in scores if level[k] >= silence_db]
    real = _real_voices(level, active, lone_db)
    if (reads_lips(n_tracks) and len(real) >= 2
            and all(s.lips is not None for k in active for s in scores[k])):
        scores = {k: [s.lips for s in v] if k in active else v for k, v in scores.items()}
    matched: dict[int, SyncScore] = {}
    if active and n_tracks:
        # each face first takes one source of its own: the one-to-one pairing with the largest
        # total z (two faces never fight over the louder voice and leave the other one empty)
        z = np.array([[scores[k][f].z for f in range(n_tracks)] for k in active])
        rows, cols = linear_sum_assignment(-z)
        for i, f in zip(rows, cols):
            s = scores[active[i]][f]
            if s.z >= z_best and s.r >= r_best:
                matched[active[i]] = s
    for k in active:  # a voice the separator split over two slots joins on strong evidence
        if k in matched or not n_tracks:
            continue
        s = max(scores[k], key=lambda s: s.z)
        if s.z >= z_other and s.r >= r_other:
            matched[k] = s
        elif s.z >= z_best and s.r >= r_best and any(
                m.track_id == s.track_id and level[k] >= level[j] + join_db
                for j, m in matched.items()):
            # the pairing gave the face a faint remnant of its voice (a slot `join_db` or more
            # quieter, with a slightly higher z): the loud slot that clears the thresholds joins
            matched[k] = s
    evidence: dict[int, str] = {}  # why a source is on-screen where it is not plain sync
    if matched and moving is not None and np.isfinite(pair_z):
        taken = {s.track_id for s in matched.values()}
        for i, f in zip(rows, cols):
            k, s = active[i], scores[active[i]][f]
            if (k in matched or f in taken or not moving[f] or k not in real
                    or s.z < pair_z or s.r < R_PAIR
                    or any(o.z >= s.z for o in scores[k] if o.track_id != f)):
                continue
            matched[k] = s
            evidence[k] = "pairing"
    # the contrast rule: one moving face that took nothing, two or more real voices (one voice
    # is the lone-voice rule's)
    if (n_tracks == 1 and moving is not None and moving[0] and not matched and len(real) >= 2
            and np.isfinite(contrast_z)):
        k = max(real, key=lambda k: scores[k][0].z)
        s = scores[k][0]
        if (s.z >= contrast_z and s.r >= R_PAIR
                and all(scores[j][0].z <= s.z - Z_LONE_MARGIN for j in real if j != k)):
            matched[k] = s
            evidence[k] = "contrast"
    # the split-voice rule: one moving face whose lips follow the sum of the loudest real voices,
    # where it took none of them, or took one and the sum follows its lips clearly better
    if (split is not None and n_tracks == 1 and moving is not None and moving[0]
            and split[1].r >= r_best and all(k in real for k in split[0])):
        pair, s = split
        taken = list(matched)
        alone = not taken and s.z >= z_best
        joins = (len(taken) == 1 and taken[0] in pair
                 and s.z >= matched[taken[0]].z + split_gain)
        if alone or joins:
            for k in pair:
                if k not in matched:
                    matched[k] = s
                    evidence[k] = "split voice"
    # the same-talker rule: the clip's two real voices are one talker by voice identity
    similarity = None
    if (split is not None and same_talker is not None and n_tracks == 1
            and moving is not None and moving[0] and sorted(real) == sorted(split[0])):
        pair, s = split
        taken = list(matched)
        if (not taken and s.z >= Z_LONE) or (len(taken) == 1 and taken[0] in pair):
            similarity = same_talker() if callable(same_talker) else same_talker
        if similarity is not None and similarity >= same_sim:
            for k in pair:
                if k not in matched:
                    matched[k] = s
                    evidence[k] = "same talker"
    if active and n_tracks and moving is not None:
        loud = max(active, key=lambda k: level[k])
        quiet = all(level[k] <= level[loud] - lone_db for k in active if k != loud)
        taken = {s.track_id for s in matched.values()}
        faces = sorted((s for s in scores[loud] if moving[s.track_id] and s.z >= Z_LONE
                        and s.track_id not in taken), key=lambda s: -s.z)
        if quiet and loud not in matched and faces and (
                len(faces) == 1 or faces[0].z - faces[1].z >= Z_LONE_MARGIN):
            matched[loud] = faces[0]
            evidence[loud] = "lone voice"
    out = []
    for k in range(len(level)):
        if k not in active:
            out.append(Assignment(k, False, None, 0.0, float(level[k]), [], f"empty source ({level[k]:.0f} dB)"))
        elif not n_tracks:
            out.append(Assignment(k, False, None, 0.0, float(level[k]), [], "no face visible"))
        elif k in matched:
            s, why = matched[k], evidence.get(k, "sync")
            rz = _described(s)
            reason = {"sync": f"in sync with face {s.track_id} ({rz})",
                      "lone voice": f"the only voice, and face {s.track_id}'s mouth moves "
                                    f"(weak sync: {rz})",
                      "pairing": f"paired with face {s.track_id}, whose mouth moves, while another "
                                 f"face is in sync (weak sync: {rz})",
                      "contrast": f"in clearly better sync with face {s.track_id}, whose mouth "
                                  f"moves, than any other voice (weak sync: {rz})",
                      "split voice": f"half of one voice: together with the other half in sync "
                                     f"with face {s.track_id} ({rz})",
                      "same talker": f"half of one voice: the same talker as the other half by "
                                     f"voice identity (d-vector similarity {similarity or 0:.2f}), "
                                     f"and face {s.track_id}'s mouth moves (weak sync: {rz})"}[why]
            out.append(Assignment(k, True, s.track_id, _confidence(s.z, z_best, why != "sync"),
                                  float(level[k]), scores[k], reason, why))
        else:
            best = max(scores[k], key=lambda s: s.z)
            out.append(Assignment(k, False, None, 1.0 - _confidence(best.z, z_best),
                                  float(level[k]), scores[k],
                                  f"no face in sync (best face {best.track_id}: {_described(best)})"))
    return out


def associate_envelopes(envelopes: np.ndarray, env_t: np.ndarray, tracks: list[VisualTrack],
                        z_best: float = Z_BEST, r_best: float = R_BEST, z_other: float = Z_OTHER,
                        r_other: float = R_OTHER, silence_db: float = SILENCE_DB,
                        lone_db: float = LONE_DB, join_db: float = LONE_DB,
                        pair_z: float = PAIR_Z, contrast_z: float = CONTRAST_Z,
                        lips_envelopes: np.ndarray | None = None,
                        talker_similarity: Callable[[tuple[int, int]], float | None] | None = None
                        ) -> list[Assignment]:
    """Decide for each candidate source whether it is the voice of a visible face.

    Faces and sources are first paired one to one (the pairing with the largest total z,
    Hungarian assignment); a face keeps its source when ``z >= z_best`` and ``r >= r_best``.
    Any other source joins its best face only on strong evidence (``z >= z_other`` and
    ``r >= r_other``: a voice the separator split over two slots). When no face took the
    loudest candidate and it is the only voice (every other one ``lone_db`` dB quieter), it
    goes to the one face whose mouth moves (:func:`mouth_moves`, the lone-voice rule of
    :func:`decide`); once one face is matched, another moving face keeps its pairing with a
    loud voice at ``z >= pair_z`` (the scene-pairing rule of :func:`decide`), and a moving face
    takes a voice whose weak synchrony with it clearly leads every other voice's (``z >=
    contrast_z``, the contrast rule of :func:`decide`). With one face on screen and two or more
    voices, these rules read the lips cue instead (``lips_envelopes``; the one-face rule of
    :func:`decide`), and the two loudest voices go to the face together where their sum
    follows its lips (:func:`split_voice_score`, the split-voice rule of :func:`decide`), or
    where they are one talker by voice identity (``talker_similarity``, the same-talker rule of
    :func:`decide`). The defaults were tuned with ``benchmarks/tune_association.py`` on the
    development clips, which the benchmarks do not score (see docs/benchmarks.md).

    Args:
        envelopes: ``[K, N]`` RMS envelopes (:func:`speech_envelope`) of the candidate speech
            sources; env_t: ``[N]`` their times in seconds.
        tracks: face tracks of the clip (may be empty).
        silence_db: sources quieter than this (dB relative to the loudest candidate) are
            treated as empty and left off-screen.
        lone_db: level margin of the lone-voice rule in dB (``inf`` turns it off).
        join_db: level margin of the faint-remnant rule of :func:`decide` (``inf``: off).
        pair_z: z threshold of the scene-pairing rule of :func:`decide` (``inf``: off).
        contrast_z: z threshold of the contrast rule of :func:`decide` (``inf``: off).
        lips_envelopes: ``[K, N]`` 1-3 kHz envelopes (:func:`band_envelope`) of the same
            sources on the same times, for the one-face rule; ``None``: levels only.
        talker_similarity: ``(source, source) -> cosine similarity of their d-vectors`` (or
            ``None`` when a voice is too short to tell), for the same-talker rule; asked only
            where that rule could decide (one moving face, two real voices, not both taken).
            ``None``: the rule is off.

    Returns:
        One :class:`Assignment` per source, in source order.
    """
    level, scores = sync_matrix(envelopes, env_t, tracks, silence_db, lips_envelopes)
    split = (split_voice_score(level, scores, lips_envelopes, env_t, tracks[0], lone_db)
             if lips_envelopes is not None and len(tracks) == 1 else None)
    same = (None if split is None or talker_similarity is None
            else lambda: talker_similarity(split[0]))  # asked only where the rule could decide
    return decide(level, scores, len(tracks), z_best, r_best, z_other, r_other, silence_db,
                  [mouth_moves(t) for t in tracks], lone_db, join_db, pair_z, contrast_z, split,
                  same_talker=same)


def _real_voices(level: np.ndarray, candidates, lone_db: float) -> list[int]:
    """The real voices among ``candidates``: within ``lone_db`` of the loudest of them (the
    weak-evidence rules' candidates), in the order given."""
    loudest = max((level[k] for k in candidates), default=0.0)
    return [k for k in candidates if level[k] >= loudest - lone_db]


def split_voice_score(level: np.ndarray, scores: dict[int, list[SyncScore]],
                      lips_envelopes: np.ndarray, env_t: np.ndarray, track: VisualTrack,
                      lone_db: float = LONE_DB) -> tuple[tuple[int, int], SyncScore] | None:
    """The lips score of the sum of the two loudest real voices with the one face on screen
    (the split-voice rule of :func:`decide`).

    Args:
        level, scores: :func:`sync_matrix` output (``scores`` holds the active sources).
        lips_envelopes: ``[K, N]`` 1-3 kHz envelopes of the sources; env_t: ``[N]`` seconds.
        track: the face track.
        lone_db: real voices are within this many dB of the loudest active source.

    Returns:
        ``(source indices, SyncScore)`` with the sum's envelope taken as the root of the sum of
        the squared envelopes (the voices' powers add), or ``None`` with fewer than two real
        voices.
    """
    real = sorted(_real_voices(level, list(scores), lone_db), key=lambda k: -level[k])
    if len(real) < 2:
        return None
    pair = tuple(sorted(real[:2]))
    summed = np.sqrt((lips_envelopes[list(pair)].astype(np.float64) ** 2).sum(axis=0))
    return pair, lips_score((summed.astype(np.float32), env_t), track)


WINDOW_S = 20.0
WINDOW_HOP_S = 10.0
HOLD_SHARE = 0.5  # see hold_over_time


@dataclass
class WindowDecision:
    """The association decisions of one time window.

    Attributes:
        start_s, end_s: the window (seconds of the clip).
        assignments: one :class:`Assignment` per source, decided on this window alone.
    """

    start_s: float
    end_s: float
    assignments: list[Assignment]


def _window_track(track: VisualTrack, start: float, end: float) -> VisualTrack:
    keep = (track.timestamps >= start) & (track.timestamps < end)
    dark = None if track.mouth_darkness is None else track.mouth_darkness[keep]
    return VisualTrack(track.track_id, track.kind, track.timestamps[keep] - start,
                       track.boxes[keep], track.activity[keep], track.label, track.score, dark)


def associate_windows(envelopes: np.ndarray, env_t: np.ndarray, tracks: list[VisualTrack],
                      window_s: float = WINDOW_S, hop_s: float = WINDOW_HOP_S,
                      lips_envelopes: np.ndarray | None = None,
                      talker_similarity: Callable[[tuple[int, int], float, float], float | None]
                      | None = None, **thresholds) -> list[WindowDecision]:
    """:func:`associate_envelopes` per sliding window, so decisions follow speakers who come
    and go in long videos (and a chunk-to-chunk slot swap of the separator cannot mislead a
    whole-clip correlation). A clip up to ``1.5 * window_s`` long is one window.

    Args:
        envelopes: ``[K, N]``; env_t: ``[N]`` seconds; tracks: face tracks (real timestamps).
        lips_envelopes: ``[K, N]`` or ``None``, as for :func:`associate_envelopes`.
        talker_similarity: ``(sources, start_s, end_s) -> similarity`` of two sources' d-vectors
            over that stretch of the clip, or ``None``; each window asks for its own stretch
            (:func:`associate_envelopes`).
        window_s, hop_s: window length and hop in seconds (the last window ends at the clip's
            end and is at least ``window_s`` long when the clip is).

    Returns:
        Windows in time order, covering ``[0, duration]``.
    """
    duration = float(env_t[-1] + ENV_HOP_S) if len(env_t) else 0.0
    if duration <= 1.5 * window_s:
        starts = [0.0]
        window_s = duration
    else:
        starts = list(np.arange(0.0, duration - window_s + 1e-9, hop_s))
        if starts[-1] + window_s < duration - 1e-6:
            starts.append(duration - window_s)
    out = []
    for w0 in starts:
        w1 = w0 + window_s
        keep = (env_t >= w0) & (env_t < w1)
        wt = [_window_track(t, w0, w1) for t in tracks]
        wt = [t for t in wt if np.isfinite(t.boxes[:, 0]).sum() >= 10]
        lips = None if lips_envelopes is None else lips_envelopes[:, keep]
        similarity = (None if talker_similarity is None else
                      lambda pair, w0=w0, w1=w1: talker_similarity(pair, w0, w1))
        decisions = associate_envelopes(envelopes[:, keep], env_t[keep] - w0, wt,
                                        lips_envelopes=lips, talker_similarity=similarity,
                                        **thresholds)
        out.append(WindowDecision(float(w0), float(min(w1, duration)), decisions))
    return hold_over_time(out)


def hold_over_time(windows: list[WindowDecision], share: float = HOLD_SHARE) -> list[WindowDecision]:
    """Make windowed decisions hold over time: a (source, face) pairing that is on-screen in at
    least ``share`` of the windows in which the face is seen is also taken in that face's other
    windows, where the face took nothing, the source is off-screen, its synchrony with the face
    is not negative (``z >= Z_LONE``) and it is not in better sync with another face that took
    nothing there either. A long video (or a loop of a clip) thus gives the answer of most of its windows instead of
    flickering where a window's evidence dips under a threshold; faces that come and go keep
    their own windows. Fewer than 3 windows: unchanged. Such assignments have evidence
    ``"held"`` and half the confidence. Modifies and returns ``windows``.
    """
    if len(windows) < 3:
        return windows
    seen: dict[int, int] = {}
    held: dict[tuple[int, int], int] = {}
    for w in windows:
        for f in {s.track_id for a in w.assignments for s in a.scores}:
            seen[f] = seen.get(f, 0) + 1
        for a in w.assignments:
            if a.onscreen:
                held[(a.source_index, a.track_id)] = held.get((a.source_index, a.track_id), 0) + 1
    keep = sorted((pair for pair, n in held.items() if n >= share * seen.get(pair[1], 0)),
                  key=lambda pair: -held[pair])
    for w in windows:
        taken = {a.track_id for a in w.assignments if a.onscreen}
        for k, f in keep:
            a = w.assignments[k]  # assignments are in source order, every window has them all
            if a.onscreen or f in taken:
                continue
            s = next((s for s in a.scores if s.track_id == f), None)
            if s is None or s.z < Z_LONE or any(o.z > s.z for o in a.scores
                                                if o.track_id != f and o.track_id not in taken):
                continue
            w.assignments[k] = Assignment(
                k, True, f, _confidence(s.z, Z_BEST, weak=True), a.energy_db, a.scores,
                f"held: with face {f} in most windows (here r={s.r:.2f}, z={s.z:.1f})", "held")
            taken.add(f)
    return windows


def frame_weights(windows: list[WindowDecision], groups: list, n_slots: int,
                  frame_times: np.ndarray, fade_s: float = 0.5) -> np.ndarray:
    """Per-frame stem weights from windowed decisions.

    Each frame follows the window whose centre is nearest; at the switch between two windows
    the weights are cross-faded over ``fade_s`` seconds.

    Args:
        groups: per stem, ``assignments -> list of slot indices`` (a function), e.g. the
            on-screen slots, or the slots matched to one face.
        frame_times: ``[T]`` seconds of the mask frames.

    Returns:
        ``[len(groups), n_slots, T]`` float32 in 0..1.
    """
    per_window = np.zeros((len(windows), len(groups), n_slots), np.float32)
    for w, win in enumerate(windows):
        for g, pick in enumerate(groups):
            per_window[w, g, pick(win.assignments)] = 1.0
    centres = np.array([(w.start_s + w.end_s) / 2 for w in windows])
    if len(windows) == 1:
        return np.repeat(per_window[0][:, :, None], len(frame_times), axis=2)
    # position between window centres, as a fractional window index with a short linear fade
    bounds = (centres[1:] + centres[:-1]) / 2  # switch points
    pos = np.searchsorted(bounds, frame_times).astype(np.float64)
    for b_idx, b in enumerate(bounds):
        near = np.abs(frame_times - b) < fade_s / 2
        pos[near] = b_idx + 0.5 + (frame_times[near] - b) / fade_s
    lo = np.clip(np.floor(pos).astype(int), 0, len(windows) - 1)
    hi = np.clip(lo + 1, 0, len(windows) - 1)
    frac = (pos - np.floor(pos)).astype(np.float32)
    w = per_window[lo] * (1 - frac)[:, None, None] + per_window[hi] * frac[:, None, None]
    return np.ascontiguousarray(w.transpose(1, 2, 0))
