"""``avsplit localize``: where in the picture the sound comes from, frame by frame.

Computed, not learned, from two audio-visual synchrony cues:

* faces: each face track's jaw opening is correlated with the loudness of the mixture
  (:func:`avsplit.associate.sync_score`); a face lights up (a blob on its mouth) while its
  mouth is moving and the audio is loud, weighted by its sync r (``FACE_PRIOR`` at least, so
  a talking face still shows when other sounds hide its sync);
* everything else: per grid cell, the correlation between motion energy and the audio level
  (:mod:`avsplit.vision.motion`, after Hershey & Movellan, 2000), over the whole clip and in
  sliding 2 s windows (averaged), lights up where the picture currently moves. A steady
  sound (an engine) does not co-vary with anything, so every cell keeps a small prior
  (``MOTION_PRIOR``): while there is sound, what moves most is the best remaining guess.
  Picture-wide change (camera shake, the median over cells) is removed from the current
  motion first, and motion on a face, around the head and on the body below it counts
  little (the face term speaks for that person).

The per-frame heatmap (a class-activation-style map as in Owens & Efros, 2018) is the sum of
both, smoothed, scaled by how loud the audio is at that moment and normalised by one reference
for the whole clip, so quiet moments fade out instead of being stretched to full scale.

Instruments (when the picture shows some): the ``--mode instruments`` analysis
(:func:`avsplit.instruments.analyse_instruments`: MobileNetV2 class-activation maps for what and
where, the query-conditioned separator for each seen label's mask) gives one stem per seen
instrument. Each gets its own colour (``INSTRUMENT_PALETTE``, distinct from the face colours)
and a blob over its box whose opacity follows its stem's loudness frame by frame:

* loudness: the stem's mask (times its share when several instruments of one label split it)
  on the mixture's STFT power at the separator's rate, summed over bins, averaged over
  ``SMOOTH_S``, in dB against the mixture's own loud level (95th percentile of the same
  smoothed energy) and mapped to 0..1 over ``LOUD_RANGE_DB`` like the face/motion loudness.
  One reference for all stems, so a stem that carries a tenth of the sound shows fainter than
  one that carries all of it. A stem the separator hears almost nothing of (under
  :data:`avsplit.instruments.SILENT_SHARE` of the energy) has loudness 0 and is "silent" in the
  legend;
* shape: a Gaussian blob centred on the instrument's box (standard deviations
  ``INSTRUMENT_SIGMA`` of its sides), fading to nothing ``INSTRUMENT_BOX_GROW`` beyond it. The
  box is already the recogniser's class-activation map (CAM) segmented at 30% of its peak, so
  it is where the CAM puts the instance; the CAM itself is not used for the shape because
  inside the box it often peaks beside the instrument (on the wall behind a guitarist, on the
  trunk next to a violinist in the development clips) and would move the colour off the
  player, while the box centre sits on the player and instrument. The box is fixed over the
  clip (the recogniser looks at a few frames spread over it), so a player who walks far
  leaves it.

While some instrument is audible the face/motion heat is still drawn (a singer's face, other
movement with the sound), but at ``HEAT_WEIGHT_WITH_INSTRUMENTS`` of its usual opacity, and the
instrument blobs go on top, so the coloured instruments read first and the TURBO heat does not
drown them. Without instruments (none recognised, or the bundled separator/recogniser weights
missing, which adds a note) everything is exactly as described above.

This module is the analysis; the drawing is :mod:`avsplit.overlay` (which never imports this
one). Every clip goes through a :class:`~avsplit.clip.Clip` (opened and its audio decoded
once) and an :class:`~avsplit.engine.Engine` (device, models, face tracker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from avsplit.associate import R_BEST, Z_BEST, SyncScore, speech_envelope, sync_score
from avsplit.clip import ANALYSIS_MAX_SIDE, Clip
from avsplit.engine import Engine
from avsplit.errors import AvsplitError, WeightsUnavailableError
from avsplit.events import frame_events
from avsplit.instruments import (SILENT_SHARE, InstrumentAnalysis, RecognitionFrames,
                                 analyse_instruments)
from avsplit.overlay import (INSTRUMENT_ALPHA, INSTRUMENT_BOX_GROW, INSTRUMENT_PALETTE,
                             INSTRUMENT_SIGMA, OVERLAY_MAX_SIDE, PALETTE, Instrument,
                             instrument_footprint, write_overlay)
from avsplit.progress import NullProgress, Progress
from avsplit.structures import MediaInfo, VisualTrack
from avsplit.vision.motion import (MotionAccumulator, audio_motion_map, cut_frames,
                                   sliding_audio_motion_map)

__all__ = ["localize_file", "stem_loudness", "instrument_footprint", "Instrument",
           "PALETTE", "INSTRUMENT_PALETTE", "INSTRUMENT_ALPHA", "INSTRUMENT_BOX_GROW",
           "INSTRUMENT_SIGMA", "OVERLAY_MAX_SIDE", "LOUD_RANGE_DB", "SMOOTH_S"]

ENV_RATE = 16000
MAX_ANALYSIS_FRAMES = 1500
MIN_ANALYSIS_FPS = 8.0
HEAT_UPSAMPLE = 4
WINDOW_S = 2.0
SMOOTH_S = 0.2
MOUTH_WINDOW_S = 0.4
LOUD_RANGE_DB = 30.0
SILENT_LOUDNESS = 0.05
MIN_SCORE = 0.1
HEAT_REF_FLOOR = 0.15
MOTION_PRIOR = 0.15
FACE_PRIOR = 0.15
BODY_WEIGHT = 0.3
MOUTH_Y = 0.72
TALKING = 0.25  # mouth movement x loudness (0..1) from which a face counts as audible


@dataclass
class _Analysis:
    """Everything needed to draw the heat of any analysed frame.

    Attributes:
        times: ``[T]`` seconds of the analysed frames.
        frame_size: ``(height, width)`` of the analysis frames.
        motion_part: ``[T, gh, gw]`` float32 motion/audio heat before smoothing.
        tracks: face tracks aligned with ``times``; face_weight: ``[F, T]`` their heat weights.
        heat: ``[T, hh, hw]`` float32 normalised heat 0..1.
        loud: ``[T]`` loudness 0..1.
    """

    times: np.ndarray
    frame_size: tuple[int, int]
    motion_part: np.ndarray
    tracks: list[VisualTrack]
    face_weight: np.ndarray
    heat: np.ndarray | None = None
    loud: np.ndarray | None = None


def _analysis_fps(info: MediaInfo) -> float | None:
    """``None`` (every frame) when the clip has at most ``MAX_ANALYSIS_FRAMES`` frames, else a
    lower rate that gives about that many (never below ``MIN_ANALYSIS_FPS``)."""
    v = info.video
    duration = (v.duration if v and v.duration else None) or info.duration
    if not duration or not v or not v.fps:
        return None
    frames = v.frames or duration * v.fps
    if frames <= MAX_ANALYSIS_FRAMES:
        return None
    return max(MIN_ANALYSIS_FPS, MAX_ANALYSIS_FRAMES / duration)


def _loudness(env: np.ndarray, env_t: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``[T]`` 0..1: the audio level at each time, 0 at ``LOUD_RANGE_DB`` below the clip's
    loud reference (95th percentile of the envelope) and below, 1 at the reference and above."""
    if len(env) < 2:
        return np.zeros(len(times), np.float32)
    ref = float(np.percentile(env, 95))
    if ref < 1e-4:  # digital silence (below -80 dBFS RMS)
        return np.zeros(len(times), np.float32)
    level = np.interp(times, env_t, env)
    db = 20 * np.log10(np.maximum(level, 1e-12) / ref)
    return np.clip((db + LOUD_RANGE_DB) / LOUD_RANGE_DB, 0.0, 1.0).astype(np.float32)


def _moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average along axis 0 over ``n`` samples (edges use the samples there)."""
    if n <= 1 or len(x) < 2:
        return x
    flat = x.reshape(len(x), -1).astype(np.float64)
    pad = n // 2
    padded = np.concatenate([np.repeat(flat[:1], pad, 0), flat,
                             np.repeat(flat[-1:], n - 1 - pad, 0)])
    csum = np.concatenate([np.zeros((1, flat.shape[1])), np.cumsum(padded, axis=0)])
    out = (csum[n:] - csum[:-n]) / n
    return out.reshape(x.shape).astype(np.float32)


def _rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Centred rolling standard deviation of ``x [T]`` over ``n`` frames, ignoring NaN;
    NaN where ``x`` is NaN or fewer than 3 values are in the window."""
    ok = ~np.isnan(x)
    v = np.where(ok, x, 0.0).astype(np.float64)
    pad = n // 2
    c = np.concatenate([[0.0], np.cumsum(np.pad(ok.astype(np.float64), (pad, n - 1 - pad)))])
    s = np.concatenate([[0.0], np.cumsum(np.pad(v, (pad, n - 1 - pad)))])
    s2 = np.concatenate([[0.0], np.cumsum(np.pad(v * v, (pad, n - 1 - pad)))])
    cnt = c[n:] - c[:-n]
    mean = (s[n:] - s[:-n]) / np.maximum(cnt, 1)
    var = (s2[n:] - s2[:-n]) / np.maximum(cnt, 1) - mean ** 2
    out = np.sqrt(np.maximum(var, 0.0))
    out[(cnt < 3) | ~ok] = np.nan
    return out


def _align(track: VisualTrack, times: np.ndarray) -> VisualTrack:
    """The track resampled (nearest frame) onto ``times`` when its own timestamps differ."""
    tt = np.asarray(track.timestamps, np.float64)
    if len(tt) == len(times) and np.allclose(tt, times, atol=1e-3):
        return track
    if len(tt) == 0:
        idx = None
    else:
        idx = np.clip(np.searchsorted(tt, times), 0, len(tt) - 1)
        prev = np.clip(idx - 1, 0, len(tt) - 1)
        idx = np.where(np.abs(tt[prev] - times) < np.abs(tt[idx] - times), prev, idx)
    boxes = np.full((len(times), 4), np.nan, np.float32)
    act = np.full(len(times), np.nan, np.float32)
    dark = None if track.mouth_darkness is None else np.full(len(times), np.nan, np.float32)
    if idx is not None:
        near = np.abs(tt[idx] - times) < 0.1
        boxes[near] = track.boxes[idx[near]]
        act[near] = track.activity[idx[near]]
        if dark is not None:
            dark[near] = track.mouth_darkness[idx[near]]
    return VisualTrack(track.track_id, track.kind, times, boxes, act, track.label, track.score, dark)


def _sync_weight(score: SyncScore) -> float:
    """How much a face's heat counts: ``max(0, r)``, faded out for z-scores below 2 (a best r
    that the lag search alone could explain), but never below ``FACE_PRIOR``: a mouth moving
    while there is sound is a candidate even when other sounds hide the sync."""
    return max(FACE_PRIOR, max(0.0, score.r) * float(np.clip(score.z / 2.0, 0.0, 1.0)))


def _face_weights(tracks: list[VisualTrack], scores: list[SyncScore], loud: np.ndarray,
                  fps: float) -> np.ndarray:
    """``[F, T]`` heat weight of each face per frame: sync weight x mouth movement x loudness.

    Mouth movement is the rolling standard deviation of the jaw opening (in face heights, over
    ``MOUTH_WINDOW_S``), divided by the largest 90th percentile over all faces (so the faces
    are compared on one scale; floored at 0.01 face heights) and clipped to 0..1.
    """
    T = len(loud)
    if not tracks:
        return np.zeros((0, T), np.float32)
    n = max(3, int(round(MOUTH_WINDOW_S * fps)))
    moves = [_rolling_std(tr.activity.astype(np.float64), n) for tr in tracks]
    p90 = [np.nanpercentile(m, 90) for m in moves if np.isfinite(m).any()]
    scale = max([0.01, *p90])
    out = np.zeros((len(tracks), T), np.float32)
    for i, (m, s) in enumerate(zip(moves, scores)):
        dev = np.clip(np.nan_to_num(m, nan=0.0) / scale, 0.0, 1.0)
        out[i] = _sync_weight(s) * dev * loud
    return out


def _face_blob(box: np.ndarray, hh: int, hw: int) -> np.ndarray:
    """``[hh, hw]`` Gaussian over a normalised face box (the face mesh's extent, forehead to
    chin), centred on the mouth (``MOUTH_Y`` = 72% down the box), standard deviations 30% of
    the box, peak 1."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, y0 + MOUTH_Y * (y1 - y0)
    sx, sy = max(0.3 * (x1 - x0), 0.5 / hw), max(0.3 * (y1 - y0), 0.5 / hh)
    xs = (np.arange(hw) + 0.5) / hw
    ys = (np.arange(hh) + 0.5) / hh
    gx = np.exp(-0.5 * ((xs - cx) / sx) ** 2)
    gy = np.exp(-0.5 * ((ys - cy) / sy) ** 2)
    return np.outer(gy, gx).astype(np.float32)


def _face_mask(boxes: list[np.ndarray], hh: int, hw: int, grow: float = 0.1) -> np.ndarray:
    """``[hh, hw]`` float32 weight of the motion heat around faces: 0 inside the (grown) face
    boxes (the face term covers them), ``BODY_WEIGHT`` around the head (hair, ears) and in the
    body below each face (one face width either side, three face heights down: nodding,
    gestures and swaying are not the voice), 1 elsewhere."""
    mask = np.ones((hh, hw), np.float32)

    def put(x0, y0, x1, y1, value):
        c0, c1 = max(int(np.floor(x0 * hw)), 0), max(int(np.ceil(x1 * hw)), 0)
        r0, r1 = max(int(np.floor(y0 * hh)), 0), max(int(np.ceil(y1 * hh)), 0)
        mask[r0:r1, c0:c1] = np.minimum(mask[r0:r1, c0:c1], value)

    for x0, y0, x1, y1 in boxes:
        fw, fh = x1 - x0, y1 - y0
        put(x0 - fw, y1, x1 + fw, y1 + 3 * fh, BODY_WEIGHT)
        put(x0 - 0.3 * fw, y0 - 0.8 * fh, x1 + 0.3 * fw, y1, BODY_WEIGHT)
    for x0, y0, x1, y1 in boxes:
        dx, dy = grow * (x1 - x0), grow * (y1 - y0)
        put(x0 - dx, y0 - dy, x1 + dx, y1 + dy, 0.0)
    return mask


def _heat_maps(a: _Analysis) -> np.ndarray:
    """``[T, hh, hw]`` float32 un-normalised heat: upsampled motion part outside faces plus
    face blobs, Gaussian-smoothed."""
    T, gh, gw = a.motion_part.shape
    hh, hw = gh * HEAT_UPSAMPLE, gw * HEAT_UPSAMPLE
    sigma = 0.75 * HEAT_UPSAMPLE
    out = np.zeros((T, hh, hw), np.float32)
    for k in range(T):
        heat = cv2.resize(a.motion_part[k], (hw, hh), interpolation=cv2.INTER_LINEAR)
        boxes = [tr.boxes[k] for tr in a.tracks if not np.isnan(tr.boxes[k, 0])]
        if boxes:
            heat *= _face_mask(boxes, hh, hw)
        for i, tr in enumerate(a.tracks):
            if not np.isnan(tr.boxes[k, 0]) and a.face_weight[i, k] > 0:
                heat += a.face_weight[i, k] * _face_blob(tr.boxes[k], hh, hw)
        out[k] = cv2.GaussianBlur(heat, (0, 0), sigma)
    return out


def _track_entry(track: VisualTrack, score: SyncScore) -> dict:
    seen = track.seen
    box = np.nanmean(track.boxes[seen], axis=0) if seen.any() else np.full(4, np.nan)
    return {"track_id": int(track.track_id), "kind": track.kind, "sync_r": round(float(score.r), 3),
            "sync_z": round(float(score.z), 2), "lag_s": round(float(score.lag_s), 3),
            "mean_box": [None if np.isnan(v) else round(float(v), 4) for v in box],
            "seen_fraction": round(float(seen.mean()), 3) if len(seen) else 0.0}


def _face_at(tracks: list[VisualTrack], k: int, x: float, y: float) -> int | None:
    """Id of the smallest face box (grown by 15%) containing normalised point ``(x, y)`` at
    frame ``k``, else ``None``."""
    best, area = None, np.inf
    for tr in tracks:
        x0, y0, x1, y1 = tr.boxes[k]
        if np.isnan(x0):
            continue
        dx, dy = 0.15 * (x1 - x0), 0.15 * (y1 - y0)
        if x0 - dx <= x <= x1 + dx and y0 - dy <= y <= y1 + dy and (x1 - x0) * (y1 - y0) < area:
            best, area = int(tr.track_id), (x1 - x0) * (y1 - y0)
    return best


def _analyse(clip: Clip, engine: Engine, progress: Progress
             ) -> tuple[_Analysis, list[SyncScore], np.ndarray, float | None]:
    """Envelope, one analysis decode of the video (faces, motion and the recognition frames
    from the same frames), sync scores and the heat. Returns
    ``(analysis, sync scores, global motion/audio map, analysis fps or None for all frames)``."""
    info = clip.info
    step = progress.stage("decoding audio", 1)
    mono = clip.mono(ENV_RATE)
    env, env_t = speech_envelope(mono, ENV_RATE)
    step(1)

    fps = _analysis_fps(info)
    v = info.video
    duration = (v.duration if v is not None and v.duration else None) or info.duration
    total = None
    if v is not None and v.fps:
        total = (v.frames or (duration * v.fps if duration else None)) if fps is None else \
            (duration * fps if duration else None)
    advance = progress.stage("finding faces and motion", total)
    acc = MotionAccumulator()
    recognition = RecognitionFrames(duration or 0.0)
    shapes: list[tuple[int, int]] = []

    def frames():
        decoded = clip.frames(ANALYSIS_MAX_SIDE, fps=fps)
        for t, frame in recognition.watch(acc.watch(decoded)):
            if not shapes:
                shapes.append(frame.shape[:2])
            advance(1)
            yield t, frame

    source = frames()
    tracks = engine.face_tracks(clip, NullProgress(), frames=source)
    for _ in source:  # face tracks already cached for this clip: motion still needs the frames
        pass
    clip.cache.setdefault("recognition_frames", recognition.frames)
    times = acc.timestamps
    if len(times) == 0:
        raise AvsplitError(f"{clip.path}: no video frame could be decoded; re-encode the file "
                           "or give another video")
    energy = acc.energy
    tracks = [_align(tr, times) for tr in tracks if tr.kind == "face"]

    step = progress.stage("matching sound to picture", 1)
    scores = [sync_score(np.zeros(0, np.float32), ENV_RATE, tr, envelope=(env, env_t))
              for tr in tracks]
    loud = _loudness(env, env_t, times)
    span = times[-1] - times[0]
    fps_a = (len(times) - 1) / span if len(times) > 1 and span > 0 else 25.0
    face_weight = _face_weights(tracks, scores, loud, fps_a)

    cuts = cut_frames(energy)
    global_map = audio_motion_map(energy, times, env, env_t, exclude=cuts)
    local_maps, centres = sliding_audio_motion_map(energy, times, env, env_t, window_s=WINDOW_S,
                                                   exclude=cuts)
    near = np.clip(np.searchsorted(centres, times), 0, len(centres) - 1)
    prev = np.clip(near - 1, 0, len(centres) - 1)
    near = np.where(np.abs(centres[prev] - times) < np.abs(centres[near] - times), prev, near)
    corr = 0.5 * global_map[None] + 0.5 * local_maps[near]  # [T, gh, gw]

    # what moves now, beyond the picture-wide change (camera shake, swaying trees, noise)
    smooth = _moving_average(energy, max(1, int(round(SMOOTH_S * fps_a))))
    picture_wide = np.median(smooth.reshape(len(smooth), -1), axis=1)[:, None, None]
    smooth = np.maximum(smooth - picture_wide, 0)
    e_ref = max(float(np.percentile(smooth[~cuts], 99.5)) if (~cuts).any() else 0.0, 4.0)
    moving = np.sqrt(np.clip(smooth / e_ref, 0.0, 1.0))
    motion_part = (np.maximum(corr, MOTION_PRIOR) * moving * loud[:, None, None]).astype(np.float32)
    motion_part[cuts] = 0.0

    a = _Analysis(times, shapes[0], motion_part, tracks, face_weight, loud=loud)
    raw = _heat_maps(a)
    peaks = raw.reshape(len(raw), -1).max(axis=1)[loud >= SILENT_LOUDNESS]
    ref = max(float(np.percentile(peaks, 90)) if len(peaks) else 0.0, HEAT_REF_FLOOR)
    a.heat = np.clip(raw / ref, 0.0, 1.0).astype(np.float32)
    step(1)
    return a, scores, global_map, fps


def _frame_entries(a: _Analysis) -> list[dict]:
    out = []
    T, hh, hw = a.heat.shape
    for k in range(T):
        h = a.heat[k]
        i = int(np.argmax(h))
        score = float(h.flat[i])
        entry = {"t": round(float(a.times[k]), 3), "peak": None, "score": round(score, 3),
                 "track_id": None}
        if a.loud[k] >= SILENT_LOUDNESS and score >= MIN_SCORE:
            y, x = divmod(i, hw)
            px, py = (x + 0.5) / hw, (y + 0.5) / hh
            entry["peak"] = [round(px, 4), round(py, 4)]
            entry["track_id"] = _face_at(a.tracks, k, px, py)
        out.append(entry)
    return out


# ---------------------------------------------------------------- instruments

def stem_loudness(masks, power: np.ndarray, rate: int, hop: int, times: np.ndarray,
                  gains=None) -> np.ndarray:
    """Loudness 0..1 of masked stems over time, sampled at ``times``.

    Args:
        masks: ``N`` amplitude masks (0..1), each ``[bins, frames]`` (an ``[N, bins, frames]``
            array or a list of views).
        power: ``[bins, frames]`` the mixture's STFT power ``|X|^2`` (same STFT as the masks;
            frame ``k`` centred at ``k * hop / rate`` s).
        rate: sample rate (Hz) and ``hop``: STFT hop (samples) of that STFT.
        times: ``[T]`` seconds to sample at.
        gains: ``[N]`` amplitude factors of the masks (a stem's split between instances of
            one label), 1 when None.

    Returns:
        ``[N, T]`` float32: each stem's energy ``sum_bins (gain * mask * |X|)^2`` per frame,
        averaged over ``SMOOTH_S``, in dB against the 95th percentile of the mixture's own
        smoothed energy ``sum_bins |X|^2``, mapped to 0 at ``LOUD_RANGE_DB`` below it and 1 at
        it or above. All zero when the mixture is digitally silent (reference below -80 dBFS
        RMS).
    """
    n_stems = len(masks)
    out = np.zeros((n_stems, len(times)), np.float32)
    frames = min([power.shape[1], *(m.shape[1] for m in masks)])
    if frames < 2 or len(times) == 0:
        return out
    power = np.asarray(power[:, :frames], np.float32)
    n = max(1, int(round(SMOOTH_S * rate / hop)))
    mix = _moving_average(power.sum(axis=0, dtype=np.float64), n)
    ref = float(np.percentile(mix, 95))
    n_fft = 2 * (power.shape[0] - 1)
    if 2 * np.sqrt(max(ref, 0.0)) / max(n_fft, 1) < 1e-4:  # sum of |X|^2 ~ (n_fft/2)^2 RMS^2
        return out
    frame_t = np.arange(frames) * hop / rate
    chunk = 4096
    for i in range(n_stems):
        gain = 1.0 if gains is None else float(gains[i])
        energy = np.empty(frames, np.float64)
        for a in range(0, frames, chunk):  # float32 in chunks: long clips stay small
            m = np.asarray(masks[i][:, a:a + chunk], np.float32)
            energy[a:a + chunk] = np.einsum("ft,ft->t", m * m, power[:, a:a + chunk])
        energy = _moving_average(energy * gain ** 2, n)
        db = 10 * np.log10(np.maximum(energy, 1e-20) / ref)
        level = np.clip((db + LOUD_RANGE_DB) / LOUD_RANGE_DB, 0.0, 1.0)
        out[i] = np.interp(times, frame_t, level)
    return out




def _instruments_from(ia: InstrumentAnalysis, clip: Clip, times: np.ndarray) -> list[Instrument]:
    """The drawn/reported instruments of an analysis: colours in stem order, boxes normalised
    by the video's size, loudness of each stem (:func:`stem_loudness`) at ``times``, on the
    clip's STFT power at the separator's rate (the STFT the masks were computed on, cached by
    the clip)."""
    if not ia.stems:
        return []
    sep = ia.separator
    power = (clip.stft(sep.rate, sep.n_fft, sep.hop).abs() ** 2).numpy()
    loud = stem_loudness([ia.masks[st.mask_index] for st in ia.stems], power, sep.rate, sep.hop,
                         times, gains=[st.share for st in ia.stems])
    info = clip.info
    w = float(info.video.width) if info.video and info.video.width else 1.0
    h = float(info.video.height) if info.video and info.video.height else 1.0
    out = []
    for i, st in enumerate(ia.stems):
        heard = float(ia.share[st.mask_index] * st.share) if len(ia.share) else 0.0
        silent = heard < SILENT_SHARE
        box_px = st.box if st.box is not None else [0.0, 0.0, w, h]
        box = np.clip(np.asarray(box_px, np.float64) / [w, h, w, h], 0.0, 1.0)
        out.append(Instrument(st.name, st.label, INSTRUMENT_PALETTE[i % len(INSTRUMENT_PALETTE)],
                              box, [round(float(v), 1) for v in box_px], st.visual_confidence,
                              heard, silent,
                              np.zeros(len(times), np.float32) if silent else loud[i],
                              st.relabelled_from))
    return out


def _find_instruments(clip: Clip, engine: Engine, weights: Path | None, times: np.ndarray,
                      progress: Progress) -> tuple[list[Instrument], list[str]]:
    """Run the instruments analysis (:func:`avsplit.instruments.analyse_instruments`) on the
    clip. Returns ``(instruments, notes)``; no instruments and a note when none is recognised
    or a bundled weights file is missing or corrupt (:class:`WeightsUnavailableError`); any
    other error (an unreadable ``weights`` checkpoint, ...) propagates."""
    try:
        ia = analyse_instruments(clip, engine, None, weights, progress)
    except WeightsUnavailableError as exc:
        from avsplit.models.registry import MODELS

        entry = MODELS.get("instrument-separator")
        hint = ("; give a separator checkpoint with --weights"
                if weights is None and entry is not None and entry.file in str(exc) else "")
        return [], [f"instruments not shown: {exc}{hint}"]
    # the analysis's own notes (relabelled instruments), or ours when nothing was seen (its
    # note then speaks of stems and --query, which mean nothing here)
    notes = list(ia.notes) if ia.stems else ["no instrument recognised in the picture"]
    instruments = _instruments_from(ia, clip, times)
    for ins in instruments:
        if ins.silent:
            notes.append(f"{ins.name}: seen but silent (the separator hears almost none of it)")
    return instruments, notes


def _instrument_entry(ins: Instrument) -> dict:
    return {"name": ins.name, "label": ins.label,
            "box": [round(float(v), 4) for v in ins.box], "box_px": ins.box_px,
            "visual_confidence": (None if ins.visual_confidence is None
                                  else round(float(ins.visual_confidence), 3)),
            "audio_share": round(ins.heard, 4), "silent": ins.silent,
            "relabelled_from": ins.relabelled_from, "colour": list(ins.colour),
            "loudness": [round(float(v), 3) for v in ins.loud]}


def _events(a: _Analysis, scores: list[SyncScore], instruments: list[Instrument]) -> list:
    """The event timeline (:func:`avsplit.events.frame_events`): a face is audible where its
    mouth moves while there is sound (its face weight without the sync weight at
    :data:`TALKING` or more) and its sync is credible (the association's ``Z_BEST`` and
    ``R_BEST``); an instrument where its stem's loudness is at :data:`TALKING` or more."""
    faces = []
    for tr, s, w in zip(a.tracks, scores, a.face_weight):
        credible = s.z >= Z_BEST and s.r >= R_BEST
        faces.append((tr, (w / _sync_weight(s) >= TALKING) & credible, float(np.clip(s.r, 0, 1))))
    inst = [(ins.name, ins.label, np.asarray(ins.loud) >= TALKING,
             float(ins.visual_confidence or 0.0)) for ins in instruments if not ins.silent]
    return frame_events(a.times, a.loud, faces, inst)


# ---------------------------------------------------------------- entry point

def localize_clip(clip: Clip, engine: Engine, overlay_path: Path | str | None = None,
                  progress: Progress | None = None, weights: Path | str | None = None,
                  report_path: Path | str | None = None) -> dict:
    """:func:`localize_file` on an open :class:`~avsplit.clip.Clip` with an
    :class:`~avsplit.engine.Engine` (the clip's cached audio, STFTs and face tracks are reused;
    the face tracks and recognition frames it computes are left in ``clip.cache``).

    Same arguments (less ``path``, ``audio_stream`` and ``device``, which the clip and the
    engine carry), result and errors as :func:`localize_file`.
    """
    progress = progress or NullProgress()
    path = clip.path
    info = clip.info
    if not info.has_video:
        raise AvsplitError(f"{path} has no video stream; localize needs a video to show where "
                           "the sound comes from")
    if not info.has_audio:
        raise AvsplitError(f"{path} has no audio stream; localize needs sound to locate")
    if overlay_path is not None:
        overlay_path = Path(overlay_path)
        if overlay_path.suffix.lower() not in (".mp4", ".mov", ".mkv", ".m4v"):
            raise AvsplitError(f"cannot write the overlay to {overlay_path}: give a .mp4 path")
        if not overlay_path.parent.is_dir():
            raise AvsplitError(f"cannot write the overlay to {overlay_path}: the folder "
                               f"{overlay_path.parent} does not exist")
        if overlay_path.exists() and overlay_path.resolve() == path.resolve():
            raise AvsplitError(f"the overlay path {overlay_path} is the input itself; give another "
                               "output path with -o")
    if weights is not None and not Path(weights).is_file():
        raise AvsplitError(f"weights file {weights} does not exist")

    a, scores, global_map, fps = _analyse(clip, engine, progress)
    times = a.times
    instruments, notes = _find_instruments(clip, engine, None if weights is None else Path(weights),
                                           times, progress)
    gh, gw = global_map.shape
    gi = int(np.argmax(global_map))
    gmax = float(global_map.flat[gi])
    gy, gx = divmod(gi, gw)
    fps_analysed = ((len(times) - 1) / (times[-1] - times[0])
                    if len(times) > 1 and times[-1] > times[0] else (info.video.fps or 0.0))
    result = {
        "input": str(path),
        "duration": round(float(info.duration), 3),
        "fps_analysed": round(float(fps_analysed), 3),
        "grid": [gh, gw],
        "motion_map_peak": ([round((gx + 0.5) / gw, 4), round((gy + 0.5) / gh, 4)]
                            if gmax > 0 else None),
        "motion_map_max": round(gmax, 3),
        "tracks": [_track_entry(tr, s) for tr, s in zip(a.tracks, scores)],
        "frames": _frame_entries(a),
        "instruments": [_instrument_entry(ins) for ins in instruments],
        "events": [e.row() for e in _events(a, scores, instruments)],
        "notes": list(dict.fromkeys(notes)),
    }
    if overlay_path is not None:
        result["overlay"] = str(write_overlay(clip, overlay_path, times, a.heat, a.tracks, scores,
                                              progress, instruments))
        v = info.video
        if max(v.width, v.height) > OVERLAY_MAX_SIDE:
            from avsplit.media import probe

            o = probe(result["overlay"]).video
            result["notes"].append(f"the overlay is {o.width}x{o.height}, not the input's "
                                   f"{v.width}x{v.height}: inputs larger than "
                                   f"{OVERLAY_MAX_SIDE} px are drawn at analysis size")
    if report_path is not None:
        from avsplit.report import write_localize_report

        result["report"] = str(write_localize_report(result, clip, Path(report_path)))
    return result


def localize_file(path: Path | str, overlay_path: Path | str | None = None, audio_stream: int = 0,
                  device: str = "auto", progress: Progress | None = None,
                  weights: Path | str | None = None, engine: Engine | None = None,
                  report_path: Path | str | None = None) -> dict:
    """Find where in the picture the sound of a video comes from, frame by frame.

    The input is opened once by the :class:`~avsplit.clip.Clip` (one PyAV open for the probe
    and the analysis decode) and once by ffmpeg for the audio. Steps: the mixture's mono downmix at
    16 kHz (``ENV_RATE``) and its RMS envelope; one decode of the video at analysis size
    (longer side ``ANALYSIS_MAX_SIDE`` px; every frame for clips of up to
    ``MAX_ANALYSIS_FRAMES`` frames, else about that many frames spread evenly, at least
    ``MIN_ANALYSIS_FPS`` per second) whose frames feed the engine's face tracker, the motion
    energy and the instrument recogniser's frame picker at the same time (no frame is kept in
    memory but the 8 picked); each face's lip sync with the mixture envelope; motion
    correlated with the audio level per grid cell over the whole clip and over sliding 2 s
    windows; the per-frame heat (see the module docstring). Then the instruments
    (:func:`avsplit.instruments.analyse_instruments`: the recogniser on the picked frames, the
    separator's mask for each seen label on the clip's audio) and each stem's loudness at the
    analysed frame times (:func:`stem_loudness`). The overlay (:func:`avsplit.overlay.write_overlay`)
    decodes the video once more (the input's third and last open) and takes its sound from
    the clip's decoded audio.

    Args:
        path: a video file with sound.
        overlay_path: if given, write there an mp4 of the video at its original resolution
            (at analysis size instead when its longer side exceeds ``OVERLAY_MAX_SIDE`` =
            1280 px) with the heat blended in, one coloured blob per instrument following its
            stem's loudness (with a thin box and name tag), face boxes labelled with id and
            sync r, a legend in the corner with the fewest faces and instruments, and the
            chosen audio stream (AAC); same frame rate and frame count as the input; output
            frame ``k`` uses the heat and loudness of the nearest analysed frame.
        audio_stream: which audio stream of the input (0 = first).
        device: where the instrument recogniser and separator run (``"auto"``: CUDA when
            available); faces and motion run on the CPU (MediaPipe + numpy). ``"cuda"``
            without a GPU is an error. Ignored when ``engine`` is given.
        progress: a :class:`~avsplit.progress.Progress` (stages: decoding audio, finding faces
            and motion, matching sound to picture, the instrument analysis's own stages,
            writing overlay).
        weights: an instrument separator checkpoint (a training ``best.pt``/``last.pt`` or an
            exported file) instead of the bundled one. When a bundled separator or recogniser
            weights file is missing or corrupt (:class:`~avsplit.errors.WeightsUnavailableError`),
            instruments are skipped with a note; a ``weights`` file that does not exist is an
            error, raised before any analysis.
        engine: the :class:`~avsplit.engine.Engine` (device, models, face tracker) to use, e.g.
            one shared by many clips; by default one is made from ``device`` and closed after.
        report_path: if given, write the HTML report there
            (:func:`avsplit.report.write_localize_report`).

    Returns:
        A JSON-ready dict: ``input`` (str), ``duration`` (s), ``fps_analysed`` (frames per
        second actually analysed), ``grid`` ([rows, cols] of motion cells),
        ``motion_map_peak`` ([x, y] 0..1 of the strongest motion/audio correlation over the
        whole clip, ``None`` when nothing correlates), ``motion_map_max`` (that r),
        ``tracks`` (per face: ``track_id``, ``kind``, ``sync_r``, ``sync_z``, ``lag_s``,
        ``mean_box`` [x0, y0, x1, y1] 0..1, ``seen_fraction``), ``frames`` (per analysed frame:
        ``t`` s, ``peak`` [x, y] 0..1 of the heat maximum or ``None`` when silent or nothing
        stands out, ``score`` 0..1 the heat there, ``track_id`` of the face under the peak or
        ``None``), ``instruments`` (per stem: ``name``, ``label``, ``box`` 0..1, ``box_px``,
        ``visual_confidence``, ``audio_share`` 0..1, ``silent``, ``relabelled_from``,
        ``colour`` RGB, ``loudness`` [T] 0..1), ``events`` (the audio-visual event timeline,
        :func:`avsplit.events.frame_events` rows ``start_s``, ``end_s``, ``track``, ``label``,
        ``audible``, ``visible``, ``score``), ``notes`` (str list), and ``overlay`` /
        ``report`` (str paths) when written.

    Raises:
        MediaError: the file is missing or not media, the audio stream does not exist, or the
            video cannot be decoded.
        AvsplitError: ``device`` cannot be used, the input has no video or no audio stream, the
            overlay cannot be written there (not a video extension, the folder is missing, or
            it is the input itself), ``weights`` does not exist or is not a separator
            checkpoint.
    """
    own = engine is None
    if own:
        engine = Engine(device)
    try:
        with Clip(path, audio_stream) as clip:
            return localize_clip(clip, engine, overlay_path, progress, weights, report_path)
    finally:
        if own:
            engine.close()
