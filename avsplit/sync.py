"""``avsplit sync``: measure (and fix) the audio-to-video offset.

The offset is the lag of best synchrony between what is heard and what is seen (Owens &
Efros, 2018, "Multisensory", Sec. 4's synchronisation task; Chung & Zisserman, 2016,
SyncNet's offset search and confidence), searched over ±1 s, symmetric, with no prior on the
lag: every lag of the search counts the same, and only the natural lip-to-sound lag
(:data:`avsplit.synchrony.LIPS_BAND_LAG_S`, measured on the real talking heads of ``av/speech``)
is subtracted from the best one.

Two cues:

* ``lips`` (a face is visible): the rate of change of each face track's jaw opening against
  the rate of change of the mixture's 1-3 kHz envelope (the second-formant region,
  :data:`avsplit.synchrony.LIPS_BAND_HZ`, :func:`avsplit.synchrony.band_envelope`), both on a
  10 ms grid and smoothed over 50 ms (rates of change match timing better than levels match
  levels: in development 68 % against 49 % of shifted ``av/speech`` clips came within a
  frame; the 1-3 kHz band against the broadband RMS envelope took the refusals on those
  clips from 33 % to the figure in ``docs/benchmarks.md``, mostly TV talking heads whose jaw
  follows the broadband level only loosely). The correlation is a
  weighted Pearson r over the whole track: a frame counts by how much the mouth moves there
  or whether there is speech, whichever is larger (the measures of DESIGN.md: a still mouth
  while someone speaks is evidence against that lag, silence with a still mouth is next to
  no evidence; :func:`avsplit.synchrony.lip_curve`). The face with the most confident curve
  gives the offset.
* ``motion`` (no face): onsets of the picture's motion energy (half-wave rectified rise of
  the log motion energy, :mod:`avsplit.vision.motion`) against onsets of the sound (rise of
  the envelope in dB) - a hit, a bark, a step is seen and heard at once.

The confidence (0..1) is a logistic of the peak correlation read as a z-score,
``r * sqrt(overlap seconds / decorrelation time)`` (:attr:`avsplit.synchrony.LagCurve.z`), 0.5 at
:data:`avsplit.synchrony.Z_REFUSE`: a weak correlation over a long track and a strong one over a short track
can both be trusted, a weak one over a short track cannot. Of the features tried on the
shifted ``av/speech`` clips it separated right from wrong estimates best (area under the ROC
0.93, against 0.82 for the margin over the best rival lag and 0.65 for SyncNet's peak over
the median of the curve). Below :data:`MIN_CONFIDENCE`, or with less than
:data:`MIN_EVIDENCE_S` seconds of usable overlap, :func:`measure_offset` refuses to guess
(:class:`SyncRefused`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from avsplit import media
from avsplit.clip import ANALYSIS_MAX_SIDE, Clip
from avsplit.engine import Engine
from avsplit.errors import AvsplitError, MediaError
from avsplit.progress import NullProgress, Progress
from avsplit.structures import VisualTrack
from avsplit.synchrony import (ACTIVITY_S, LIPS_BAND_LAG_S, STEP_S, LagCurve, activity,
                               band_envelope, grid_times, heard_signal, lag_curve, lip_curve,
                               on_grid, rate_of_change, speech_envelope)
from avsplit.vision.motion import MotionAccumulator, cut_frames

ENV_RATE = 16000
MAX_LAG_S = 1.0
TOLERANCE_S = 0.045  # |offset| up to this is "in sync" (about one 25 fps frame)
MIN_EVIDENCE_S = 1.0
MIN_CONFIDENCE = 0.5
MOTION_NATURAL_LAG_S = 0.0  # sound and sight of an impact arrive together (at camera distance)


class SyncRefused(AvsplitError):
    """``avsplit sync`` will not guess: the confidence is too low or the clip too short.

    Attributes:
        result: the measurement so far (``offset_s`` the refused best guess or ``None``,
            ``confidence``, ``cue``, ``track_id``, ...), for ``--json``.
    """

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def motion_curve(energy: np.ndarray, times: np.ndarray, heard: tuple[np.ndarray, np.ndarray],
                 grid: np.ndarray) -> LagCurve:
    """:func:`lag_curve` of the picture's motion onsets against the sound's onsets
    (``motion`` cue).

    Args:
        energy: ``[T, gh, gw]`` motion energy (:class:`avsplit.vision.motion.MotionAccumulator`);
            times: ``[T]`` seconds. Scene cuts (:func:`avsplit.vision.motion.cut_frames`) are
            left out.
    """
    cuts = cut_frames(energy)
    glob = np.log1p(np.maximum(energy.reshape(len(energy), -1), 0.0)).mean(axis=1)
    glob = np.where(cuts, np.nan, glob)
    vals, valid = on_grid(np.asarray(times, np.float64), glob, grid)
    rise = np.maximum(rate_of_change(vals, valid), 0.0)
    act = activity(rise, valid, int(ACTIVITY_S / STEP_S))
    return lag_curve(rise, valid, act, *heard, "motion", None, MAX_LAG_S)


def estimate(curves: list[LagCurve], tracks: list[VisualTrack] | None = None) -> dict:
    """The offset from the most confident curve.

    Args:
        curves: one :class:`LagCurve` per face track (lips) or one for the picture (motion).
        tracks: the face tracks, to name the face used with its mean box.

    Returns:
        ``{"offset_s", "lag_s", "confidence", "cue", "track_id", "face", "r", "z",
        "evidence_s", "candidates"}``: ``offset_s`` = best lag less the cue's natural lag
        (seconds, rounded to ms; positive: audio late); ``face`` the face used
        (``{"track_id", "mean_box"}`` with the box ``[x0, y0, x1, y1]`` 0..1) or ``None``;
        ``candidates`` every curve's ``track_id``/``offset_s``/``confidence``/``r``.
    """
    best = max(curves, key=lambda c: (c.confidence, c.peak))
    natural = LIPS_BAND_LAG_S if best.cue == "lips" else MOTION_NATURAL_LAG_S
    face = None
    for t in tracks or []:
        if best.cue == "lips" and t.track_id == best.track_id:
            box = np.nanmean(t.boxes[t.seen], axis=0) if t.seen.any() else np.zeros(4)
            face = {"track_id": int(t.track_id), "mean_box": [round(float(v), 4) for v in box]}
    return {"offset_s": round(best.lag_s - natural, 3), "lag_s": round(best.lag_s, 3),
            "confidence": round(best.confidence, 3), "cue": best.cue, "track_id": best.track_id,
            "face": face, "r": round(best.peak, 3), "z": round(best.z, 2),
            "evidence_s": round(float(best.evidence_s[best.best]), 2),
            "candidates": [{"track_id": c.track_id, "offset_s": round(c.lag_s - natural, 3),
                            "confidence": round(c.confidence, 3), "r": round(c.peak, 3)}
                           for c in curves]}


def measure_offset(path: Path | str, audio_stream: int = 0, progress: Progress | None = None,
                   engine: Engine | None = None, min_confidence: float = MIN_CONFIDENCE) -> dict:
    """Estimate how late the audio is relative to the picture (the module docstring's method).

    The input is opened once (:class:`~avsplit.clip.Clip`); the video is decoded at analysis
    size for the face tracker, and once more for the motion energy when no face is usable.

    Args:
        path: a video file with sound.
        audio_stream: which audio stream (0 = the first).
        progress: a :class:`~avsplit.progress.Progress`.
        engine: the :class:`~avsplit.engine.Engine` whose face tracker reads the lips; by
            default a CPU one, closed after.
        min_confidence: refuse below this confidence (:data:`MIN_CONFIDENCE`).

    Returns:
        ``{"input", "offset_s", "in_sync", "confidence", "cue", "track_id", "face", "r", "z",
        "lag_s", "evidence_s", "candidates", "faces", "frames", "duration"}`` (see
        :func:`estimate` and :func:`offset_from`): ``offset_s`` (float seconds) > 0 means the
        audio comes too late; ``in_sync`` is ``|offset_s| <= TOLERANCE_S``; ``cue``
        ``"lips"`` (``face``/``track_id``: the face used) or ``"motion"`` (no face visible;
        ``face`` None).

    Raises:
        MediaError: the file is missing or not media, or the audio stream does not exist.
        AvsplitError: no video or no audio stream.
        SyncRefused: the clip is too short to tell, or the confidence is below
            ``min_confidence`` (one line saying which).
    """
    progress = progress or NullProgress()
    own = engine is None
    if own:
        engine = Engine("cpu")
    try:
        with Clip(path, audio_stream) as clip:
            return measure_clip(clip, engine, progress, min_confidence)
    finally:
        if own:
            engine.close()


def measure_clip(clip: Clip, engine: Engine, progress: Progress | None = None,
                 min_confidence: float = MIN_CONFIDENCE) -> dict:
    """:func:`measure_offset` on an open :class:`~avsplit.clip.Clip` (same result and errors)."""
    progress = progress or NullProgress()
    path = clip.path
    if not clip.has_video or not clip.has_audio:
        raise AvsplitError(f"{path} needs both a video and an audio stream for sync")
    mono = clip.mono(ENV_RATE)  # first: a missing audio stream fails before the video work
    tracks = [t for t in engine.face_tracks(clip, progress) if t.kind == "face"]
    acc = MotionAccumulator()
    if not _usable(tracks):  # no face to read: the motion cue needs the frames once more
        advance = progress.stage("measuring motion", None)
        for t, frame in clip.frames(ANALYSIS_MAX_SIDE):
            acc.add(t, frame)
            advance(1)
    return judge(offset_from(mono, ENV_RATE, tracks, acc.energy, acc.timestamps), path,
                 min_confidence)


def _usable(tracks: list[VisualTrack]) -> list[VisualTrack]:
    """Face tracks with at least 10 seen frames (a jaw to read)."""
    return [t for t in tracks if t.kind == "face" and np.isfinite(t.activity).sum() >= 10]


def offset_from(mono: np.ndarray, rate: int, tracks: list[VisualTrack], motion: np.ndarray,
                motion_times: np.ndarray) -> dict:
    """The offset estimate of decoded signals (no decision): lips when a face track has at
    least 10 seen frames, else motion onsets.

    Args:
        mono: ``[samples]`` float32 mono audio at ``rate`` Hz.
        tracks: face tracks (real timestamps, seconds; ``activity`` = jaw opening).
        motion: ``[T, gh, gw]`` motion energy at ``motion_times`` ``[T]`` seconds (only used
            without a usable face track).

    Returns:
        :func:`estimate`'s dict plus ``duration`` (s), ``frames`` (video frames seen) and
        ``faces`` (face tracks with at least 10 seen frames);
        ``offset_s``/``confidence`` are ``None``/0 without a usable face and with fewer than
        10 motion frames.
    """
    duration = len(mono) / rate
    grid = grid_times(duration)
    tracks = _usable(tracks)
    base = {"duration": round(duration, 3), "frames": int(len(motion_times)),
            "faces": len(tracks)}
    if tracks:
        heard = heard_signal(band_envelope(mono, rate, hop_s=STEP_S), grid, onsets=False)
        return {**estimate([lip_curve(t, heard, grid, MAX_LAG_S) for t in tracks], tracks), **base}
    if len(motion_times) < 10:
        return {"offset_s": None, "lag_s": None, "confidence": 0.0, "cue": "motion",
                "track_id": None, "face": None, "r": 0.0, "z": 0.0, "evidence_s": 0.0,
                "candidates": [], **base}
    heard = heard_signal(speech_envelope(mono, rate, hop_s=STEP_S), grid, onsets=True)
    return {**estimate([motion_curve(motion, motion_times, heard, grid)]), **base}


def judge(found: dict, path: Path | str, min_confidence: float = MIN_CONFIDENCE) -> dict:
    """Accept an :func:`offset_from` estimate or refuse it.

    Returns:
        ``{"input", **estimate, "in_sync"}``.

    Raises:
        SyncRefused: under :data:`MIN_EVIDENCE_S` seconds of evidence ("too short"), or a
            confidence under ``min_confidence``.
    """
    result = {"input": str(path), **found}
    cue = (f"the lips of face {result['track_id']}" if result["cue"] == "lips"
           else "motion onsets (no face visible)")
    if result["offset_s"] is None:
        raise SyncRefused(f"{path}: too few video frames to tell the offset ({result['frames']} "
                          "frames and no face; at least 10 needed)",
                          {**result, "in_sync": None, "refused": "too short"})
    if result["evidence_s"] < MIN_EVIDENCE_S:
        raise SyncRefused(f"{path}: too short to tell the offset ({result['evidence_s']:.1f} s "
                          f"of usable {cue}; at least {MIN_EVIDENCE_S:.1f} s needed)",
                          {**result, "in_sync": None, "refused": "too short"})
    result["in_sync"] = abs(result["offset_s"]) <= TOLERANCE_S
    if result["confidence"] < min_confidence:
        raise SyncRefused(f"{path}: will not guess the offset: confidence {result['confidence']:.2f} "
                          f"is below {min_confidence:.2f} (best guess {result['offset_s']:+.2f} s "
                          f"from {cue})", {**result, "in_sync": None, "refused": "low confidence"})
    return result


def sync_input(path: Path | str, engine: Engine, audio_stream: int = 0,
               fix_path: Path | str | None = None, progress: Progress | None = None,
               min_confidence: float = MIN_CONFIDENCE) -> dict:
    """``avsplit sync`` for one input: measure the offset and, with ``fix_path``, write the
    corrected copy (:func:`fix_offset`).

    Returns:
        :func:`measure_offset`'s dict plus ``status`` ``"done"``, ``error`` ``None`` and
        ``fixed`` (the written path, or ``None``).

    Raises:
        SyncRefused: the offset is not measured with confidence (nothing is written).
        AvsplitError / MediaError: as :func:`measure_offset` and :func:`fix_offset`.
    """
    with Clip(path, audio_stream) as clip:
        result = measure_clip(clip, engine, progress, min_confidence)
    result["fixed"] = None
    if fix_path is not None:
        result["fixed"] = str(fix_offset(Path(path), result["offset_s"], Path(fix_path),
                                         audio_stream))
    return {**result, "status": "done", "error": None}


def describe(result: dict) -> str:
    """One line for a :func:`sync_input` result, e.g. ``audio 0.20 s late (out of sync; lips
    of face 0, confidence 0.93); wrote fixed.mp4``."""
    off = result["offset_s"]
    when = "in sync" if result["in_sync"] else "out of sync"
    side = "late" if off > 0 else "early"
    cue = (f"lips of face {result['track_id']}" if result["cue"] == "lips"
           else "motion onsets, no face visible")
    head = f"audio in sync (offset {off:+.2f} s" if result["in_sync"] else \
        f"audio {abs(off):.2f} s {side} ({when}"
    line = f"{head}; {cue}, confidence {result['confidence']:.2f})"
    return line + (f"; wrote {result['fixed']}" if result.get("fixed") else "")


def fix_offset(path: Path, offset_s: float, out_path: Path, audio_stream: int = 0) -> Path:
    """Write ``out_path``: the video stream copied, the audio shifted by ``-offset_s`` seconds.

    The audio is shifted sample-exactly by a filter (late audio is trimmed at the start and
    padded with silence at the end, early audio delayed with silence) and keeps its length,
    then re-encoded (AAC 192 kb/s); the video packets are copied untouched.

    Raises:
        MediaError: the video cannot be copied into that container, or ffmpeg failed
            (nothing is left at ``out_path``).
    """
    out_path = Path(out_path)
    path = Path(path)
    if out_path.exists() and out_path.resolve() == path.resolve():
        raise MediaError(f"the output {out_path} is the input itself; give another path with -o")
    info = media.probe(path)
    if not 0 <= audio_stream < len(info.audio):
        raise MediaError(f"{path} has no audio stream {audio_stream}")
    dur = info.audio[audio_stream].duration or info.duration
    if offset_s >= 0:  # audio late: take the first offset_s off, pad the end
        filt = f"atrim=start={offset_s:.6f},asetpts=PTS-STARTPTS,apad,atrim=end={dur:.6f}"
    else:  # audio early: delay it
        filt = f"adelay=delays={-offset_s * 1000:.3f}:all=1,atrim=end={dur:.6f}"
    tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix or '.mp4'}")
    cmd = [media.ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", f"file:{path}",
           "-map", "0:v:0", "-map", f"0:a:{audio_stream}", "-c:v", "copy", "-af", filt,
           "-c:a", "aac", "-b:a", "192k", f"file:{tmp}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        last = (res.stderr.strip().splitlines() or ["unknown error"])[-1]
        codec = info.video.codec if info.video else "?"
        raise MediaError(f"could not write {out_path} with the {codec} video copied ({last}); "
                         "try another container, e.g. -o OUT.mkv")
    tmp.replace(out_path)
    return out_path
