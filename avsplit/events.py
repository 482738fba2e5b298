"""The audio-visual event timeline: when each track or source is audible, visible, or both.

This is the audio-visual event localisation task of Tian et al. (2018, "Audio-Visual Event
Localization in Unconstrained Videos", AVE; the task DMMAN, Hu et al. 2021, also solves): a
segment is an *audio-visual event* when the thing is seen and heard at once. Here it is
computed, not learned, per visual track and per separated source:

* a face track is *visible* where the face tracker sees it (gaps under
  :data:`MAX_GAP_S` bridged) and *audible* where a separated voice matched to it (in that
  association window) is active *and* its mouth moves (:func:`moving_ranges`: a still mouth
  while a voice talks is evidence that the voice is someone else's, the measure of DESIGN.md;
  it matters because a separator has no reason to split two voices that never overlap, so an
  off-screen voice that talks while the face is silent often shares the face's slot); a face
  seen while someone off screen talks is visible but not audible;
* a separated source matched to no face is an ``offscreen`` row: audible where active,
  never visible; so is a matched source while its face's mouth is still;
* an instrument stem is visible over the clip when the recogniser put a box on it (the
  recogniser looks at a few frames, so its box holds for the whole clip) and audible where
  its stem is (the stem's ``time_ranges``); a ``--query`` stem without a box is ``offscreen``.

A source is *active* at a moment (:func:`active_ranges`) when its smoothed envelope is within
:data:`FLOOR_DB` of the mixture's loudest moment and holds at least :data:`MIN_SHARE` of the
mixture's power there, so a separator's faint leakage is not heard as the source.

Rows (:class:`Event`) tile each track's time: consecutive segments differ in ``audible`` or
``visible``; spans where a track is neither are left out. The CSV (:func:`write_csv`) has
exactly the columns :data:`CSV_COLUMNS`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsplit.synchrony import mouth_movement, moving_average

CSV_COLUMNS = ("start_s", "end_s", "track", "label", "audible", "visible", "score")
OFFSCREEN = "offscreen"
FLOOR_DB = 35.0
MIN_SHARE = 0.1
SMOOTH_S = 0.1
MIN_GAP_S = 0.3
MIN_LEN_S = 0.2
MAX_GAP_S = 0.5
MOVING = 0.3  # mouth movement (0..1, avsplit.synchrony.mouth_movement) from which the mouth moves
MOVING_PAD_S = 0.3  # a moving mouth covers the sound this long before and after it


@dataclass
class Event:
    """One segment of the timeline.

    Attributes:
        start_s, end_s: seconds of the clip.
        track: a face or instrument track id (``"0"``, ``"violin-2"``) or ``"offscreen"``.
        label: what it is (``face``, ``voice``, ``background``, ``violin``, ...).
        audible, visible: heard / seen in this segment.
        score: 0..1, how sure: the association confidence of the voice for an audible face,
            the detector score for a silent visible face, the off-screen confidence for an
            off-screen source, the visual confidence for an instrument.
    """

    start_s: float
    end_s: float
    track: str
    label: str
    audible: bool
    visible: bool
    score: float

    def row(self) -> dict:
        """A JSON/CSV-ready dict with the keys :data:`CSV_COLUMNS` (audible/visible 1 or 0)."""
        return {"start_s": round(float(self.start_s), 3), "end_s": round(float(self.end_s), 3),
                "track": str(self.track), "label": self.label, "audible": int(self.audible),
                "visible": int(self.visible), "score": round(float(self.score), 3)}


def mask_to_ranges(active: np.ndarray, hop_s: float, min_gap_s: float = MIN_GAP_S,
                   min_len_s: float = MIN_LEN_S) -> list[list[float]]:
    """``[T]`` bool frames of ``hop_s`` seconds -> ``[[start_s, end_s], ...]``: gaps shorter
    than ``min_gap_s`` closed, then ranges shorter than ``min_len_s`` dropped."""
    ranges: list[list[float]] = []
    for i in np.flatnonzero(active):
        start, end = i * hop_s, (i + 1) * hop_s
        if ranges and start - ranges[-1][1] < min_gap_s - 1e-9:
            ranges[-1][1] = end
        else:
            ranges.append([start, end])
    return [[round(s, 3), round(e, 3)] for s, e in ranges if e - s >= min_len_s - 1e-9]


def active_ranges(envelope: np.ndarray, mixture: np.ndarray, hop_s: float,
                  floor_db: float = FLOOR_DB, min_share: float = MIN_SHARE) -> list[list[float]]:
    """Where a separated source is heard.

    Args:
        envelope: ``[N]`` linear RMS envelope of the source (e.g.
            :func:`avsplit.synchrony.speech_envelope`), one value per ``hop_s`` seconds.
        mixture: ``[N]`` the mixture's envelope on the same grid.
        floor_db: active only within this many dB of the mixture's loudest moment (the
            99th percentile of its smoothed envelope).
        min_share: ... and only where the source holds at least this share of the mixture's
            power (both smoothed over :data:`SMOOTH_S`).

    Returns:
        ``[[start_s, end_s], ...]`` (:func:`mask_to_ranges`).
    """
    n = max(1, int(round(SMOOTH_S / hop_s)))
    src = moving_average(np.asarray(envelope, np.float64) ** 2, n)
    mix = moving_average(np.asarray(mixture, np.float64)[: len(src)] ** 2, n)
    src = src[: len(mix)]
    if len(mix) == 0:
        return []
    ref = float(np.percentile(mix, 99))
    if ref <= 1e-14:
        return []
    loud = 10 * np.log10(np.maximum(src, 1e-20) / ref) > -floor_db
    share = src >= min_share * np.maximum(mix, 1e-20)
    return mask_to_ranges(loud & share, hop_s)


def seen_ranges(timestamps: np.ndarray, seen: np.ndarray, max_gap_s: float = MAX_GAP_S,
                frame_s: float | None = None) -> list[list[float]]:
    """``[[start_s, end_s], ...]`` where a visual track is seen: frame ``k`` covers
    ``timestamps[k]`` to the next frame's time (``frame_s`` for the last; default the median
    frame step); gaps up to ``max_gap_s`` bridged."""
    t = np.asarray(timestamps, np.float64)
    if len(t) == 0:
        return []
    step = frame_s if frame_s is not None else (float(np.median(np.diff(t))) if len(t) > 1 else 0.04)
    ends = np.append(t[1:], t[-1] + step)
    ranges: list[list[float]] = []
    for k in np.flatnonzero(np.asarray(seen, bool)):
        if ranges and t[k] - ranges[-1][1] <= max_gap_s:
            ranges[-1][1] = float(ends[k])
        else:
            ranges.append([float(t[k]), float(ends[k])])
    return [[round(a, 3), round(b, 3)] for a, b in ranges]


def _inside(ranges: list[list[float]], t: float) -> bool:
    return any(a <= t < b for a, b in ranges)


def segments(audible: list[list[float]], visible: list[list[float]]
             ) -> list[tuple[float, float, bool, bool]]:
    """Split time at every boundary of the two range lists: ``(start_s, end_s, audible,
    visible)`` for the pieces that are audible or visible, adjacent equal pieces merged."""
    cuts = sorted({round(x, 3) for r in (*audible, *visible) for x in r})
    out: list[tuple[float, float, bool, bool]] = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        mid = (a + b) / 2
        aud, vis = _inside(audible, mid), _inside(visible, mid)
        if not (aud or vis):
            continue
        if out and out[-1][1] == a and out[-1][2:] == (aud, vis):
            out[-1] = (out[-1][0], b, aud, vis)
        else:
            out.append((a, b, aud, vis))
    return out


def union(*range_lists: list[list[float]]) -> list[list[float]]:
    """The union of range lists (touching ranges joined)."""
    merged: list[list[float]] = []
    for a, b in sorted(r for rl in range_lists for r in rl):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def intersect(ranges: list[list[float]], start: float, end: float) -> list[list[float]]:
    """``ranges`` clipped to ``[start, end)``."""
    return [[max(a, start), min(b, end)] for a, b in ranges if min(b, end) > max(a, start)]


def track_events(track: str, label: str, audible: list[list[float]],
                 visible: list[list[float]], score_heard: float, score_seen: float) -> list[Event]:
    """The :class:`Event` rows of one track: its :func:`segments`, scored ``score_heard``
    where audible and ``score_seen`` where only visible."""
    return [Event(a, b, track, label, aud, vis, score_heard if aud else score_seen)
            for a, b, aud, vis in segments(audible, visible)]


def moving_ranges(track, duration: float, hop_s: float = 0.01, threshold: float = MOVING,
                  pad_s: float = MOVING_PAD_S) -> list[list[float]]:
    """``[[start_s, end_s], ...]`` where a face's mouth moves: movement
    (:func:`avsplit.synchrony.mouth_movement`) at ``threshold`` or more, widened by ``pad_s`` on each
    side (speech sound outlasts the jaw movement that makes it)."""
    grid = np.arange(int(np.ceil(duration / hop_s))) * hop_s
    _, valid, move = mouth_movement(track, grid)
    moving = (move >= threshold) & valid
    pad = int(round(pad_s / hop_s))
    if pad and moving.any():
        moving = np.convolve(moving.astype(float), np.ones(2 * pad + 1), mode="same") > 0
    return mask_to_ranges(moving, hop_s)


def subtract(ranges: list[list[float]], cut: list[list[float]]) -> list[list[float]]:
    """``ranges`` less ``cut`` (both sorted, non-overlapping lists)."""
    out = []
    for a, b in ranges:
        pieces = [[a, b]]
        for c, d in cut:
            pieces = [p for s, e in pieces for p in ([[s, min(e, c)]] if c > s else []) +
                      ([[max(s, d), e]] if d < e else []) if p[1] > p[0]]
        out += pieces
    return out


def speech_events(tracks, windows, envelopes: np.ndarray, env_t: np.ndarray,
                  mixture: np.ndarray, background: np.ndarray | None = None) -> list[Event]:
    """The timeline of ``--mode onscreen``/``speakers``.

    Args:
        tracks: the face :class:`~avsplit.structures.VisualTrack` s.
        windows: the association decisions (:func:`avsplit.associate.associate_windows`).
        envelopes: ``[K, N]`` envelopes of the voice candidates; env_t: ``[N]`` seconds.
        mixture: ``[N]`` the mixture's envelope; background: ``[N]`` the background slot's
            envelope (an ``offscreen`` ``background`` row), or ``None``.

    Returns:
        Rows per face track (``track`` = its id, label ``face``; audible where a matched voice
        is active while the mouth moves, :func:`moving_ranges`), then one ``offscreen``
        ``voice`` row set per voice candidate heard while matched to no face, one for matched
        voices heard while their face's mouth was still (score ``1 -`` the match's
        confidence), then the background (score 1: off-screen by construction); each set in
        time order.
    """
    hop = float(env_t[1] - env_t[0]) if len(env_t) > 1 else 0.01
    heard = [active_ranges(e, mixture, hop) for e in envelopes]
    face_heard: dict[int, list] = {int(t.track_id): [] for t in tracks}
    face_conf: dict[int, list[float]] = {int(t.track_id): [] for t in tracks}
    off_heard: dict[int, list] = {k: [] for k in range(len(envelopes))}
    off_conf: dict[int, list[float]] = {k: [] for k in range(len(envelopes))}
    for i, w in enumerate(windows):
        # each moment belongs to the window whose centre is nearest (as the stem weights do)
        lo = w.start_s if i == 0 else (w.start_s + w.end_s + windows[i - 1].start_s + windows[i - 1].end_s) / 4
        hi = w.end_s if i == len(windows) - 1 else (w.start_s + w.end_s + windows[i + 1].start_s + windows[i + 1].end_s) / 4
        for a in w.assignments:
            k = a.source_index
            if k >= len(heard):
                continue
            part = intersect(heard[k], lo, hi)
            if a.onscreen and a.track_id in face_heard:
                face_heard[a.track_id] += part
                if part:
                    face_conf[a.track_id].append(a.confidence)
            else:
                off_heard[k] += part
                if part:
                    off_conf[k].append(a.confidence)
    events: list[Event] = []
    duration = float(env_t[-1] + hop) if len(env_t) else 0.0
    still_heard, still_conf = [], []  # a matched voice heard while its face's mouth was still
    for t in tracks:
        tid = int(t.track_id)
        visible = seen_ranges(t.timestamps, t.seen)
        conf = float(np.mean(face_conf[tid])) if face_conf[tid] else 0.0
        heard_f = union(face_heard[tid])
        moving = moving_ranges(t, duration)
        still = subtract(heard_f, moving)
        if still:
            still_heard += still
            still_conf.append(1.0 - conf)
        events += track_events(str(tid), "face", subtract(heard_f, still), visible, conf,
                               float(t.score))
    for k in range(len(envelopes)):
        conf = float(np.mean(off_conf[k])) if off_conf[k] else 0.0
        events += track_events(OFFSCREEN, "voice", union(off_heard[k]), [], conf, 0.0)
    if still_heard:
        events += track_events(OFFSCREEN, "voice", union(still_heard), [],
                               float(np.mean(still_conf)), 0.0)
    if background is not None:
        events += track_events(OFFSCREEN, "background", active_ranges(background, mixture, hop),
                               [], 1.0, 0.0)
    return events


def stem_events(stems, duration: float) -> list[Event]:
    """The timeline of ``--mode instruments`` from written stems (the last, ``residual``, is
    left out): ``track`` = the stem name when the recogniser boxed it (visible over
    ``[0, duration]``), else ``offscreen``; audible over the stem's ``time_ranges`` unless it
    is flagged ``silent``; score = its ``visual_confidence`` (or ``audio_confidence``)."""
    events: list[Event] = []
    for st in stems[:-1]:
        boxed = st.fields.get("box") is not None
        audible = [] if st.fields.get("silent") else [list(r) for r in st.time_ranges]
        score = st.fields.get("visual_confidence") if boxed else st.fields.get("audio_confidence")
        events += track_events(st.name if boxed else OFFSCREEN, st.label, audible,
                               [[0.0, round(duration, 3)]] if boxed else [],
                               float(score or 0.0), float(score or 0.0))
    return events


def frame_events(times: np.ndarray, loud: np.ndarray, faces: list, instruments: list,
                 on: float = 0.5) -> list[Event]:
    """The timeline of ``avsplit localize`` (no separation: per analysed frame).

    Args:
        times: ``[T]`` seconds of the analysed frames; loud: ``[T]`` 0..1 mixture loudness.
        faces: ``(track, talking [T] bool, score)`` per face track: visible where seen,
            audible where ``talking``.
        instruments: ``(name, label, audible [T] bool, score)`` per boxed instrument stem:
            visible over the whole clip.
        on: the loudness above which a frame with sound that no visible track explains is
            an ``offscreen`` ``sound`` row.

    Returns:
        Face rows, instrument rows, then the off-screen sound.
    """
    times = np.asarray(times, np.float64)
    if len(times) == 0:
        return []
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
    end = round(float(times[-1]) + step, 3)

    def ranges(mask: np.ndarray) -> list[list[float]]:
        return [r for r in seen_ranges(times, mask, MIN_GAP_S, step) if r[1] - r[0] >= MIN_LEN_S]

    events: list[Event] = []
    explained = np.zeros(len(times), bool)
    for track, talking, score in faces:
        explained |= talking
        events += track_events(str(int(track.track_id)), "face", ranges(talking),
                               seen_ranges(track.timestamps, track.seen), score, float(track.score))
    for name, label, audible, score in instruments:
        explained |= audible
        events += track_events(name, label, ranges(audible), [[round(float(times[0]), 3), end]],
                               score, score)
    events += track_events(OFFSCREEN, "sound", ranges((np.asarray(loud) >= on) & ~explained), [],
                           1.0, 0.0)
    return events


def write_csv(events: list[dict] | list[Event], path: Path | str) -> Path:
    """Write the rows (dicts or :class:`Event` s) to ``path`` with exactly the header
    :data:`CSV_COLUMNS`, atomically (:func:`avsplit.outputs.write_text_atomic`).

    Raises:
        AvsplitError: the file cannot be written there (nothing is left behind).
    """
    from avsplit.outputs import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows([e.row() if isinstance(e, Event) else e for e in events])
    return write_text_atomic(path, buf.getvalue(), "the events", "check --events")


def events_path(base: Path | str, folder: str, several: bool) -> Path:
    """Where ``--events FILE.csv`` puts one input's rows: ``FILE.csv`` itself for a single
    input, ``FILE-<clip folder>.csv`` beside it when a run has several inputs."""
    base = Path(base)
    return base.with_name(f"{base.stem}-{folder}{base.suffix or '.csv'}") if several else base
