"""Motion energy on a coarse grid, and where in the picture it moves with the sound.

The cue is audio-visual co-occurrence: a region whose pixels change when the sound gets loud
is likely where the sound comes from. Hershey & Movellan (2000, "Audio vision: using
audio-visual synchrony to locate sounds", NIPS 12) correlate each pixel's intensity with the
audio energy over time and read the sound source off the correlation map; we do the same with
frame-difference energy pooled on a coarse grid, searched over small audio lags, and show the
map as a class-activation-style heatmap over the picture as in Owens & Efros (2018,
"Audio-Visual Scene Analysis with Self-Supervised Multisensory Features", ECCV).

Conventions: frames are ``[H, W, 3]`` uint8 RGB at analysis size with real timestamps in
seconds; grid signals are ``[T, gh, gw]`` float32 aligned with those timestamps; the audio
envelope is linear RMS with its own time axis (:func:`avsplit.synchrony.speech_envelope`).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import cv2
import numpy as np

CELL_PX = 24
LAGS_S = np.round(np.arange(-0.2, 0.2001, 0.04), 3)
MIN_FRAMES = 10


def grid_shape(height: int, width: int, cell_px: int = CELL_PX) -> tuple[int, int]:
    """``(gh, gw)``: the number of grid rows and columns for a frame of this size.

    Cells are about ``cell_px`` pixels square; there are at least 2 cells each way.
    """
    return max(2, int(round(height / cell_px))), max(2, int(round(width / cell_px)))


def _stabilized_diff(prev: np.ndarray, grey: np.ndarray, diff: np.ndarray,
                     min_shift: float = 0.5, min_gain: float = 0.15) -> np.ndarray:
    """Frame difference after undoing a global translation, when that is the better account.

    The shift between ``prev`` and ``grey`` (``[H, W]`` uint8) is found by phase correlation
    (sub-pixel, Hann-windowed); ``prev`` is shifted by it and differenced again. The
    compensated difference (``[H, W]`` uint8, 0 in the uncovered border) is used only when the
    shift is at least ``min_shift`` px and it lowers the mean difference by ``min_gain`` (15%)
    or more: a moving object among still ones is not "stabilised" away (aligning it would
    misalign the rest), but a lone object on a featureless background can be.
    """
    h, w = grey.shape
    if h < 16 or w < 16:
        return diff
    (dx, dy), _ = cv2.phaseCorrelate(prev.astype(np.float32), grey.astype(np.float32),
                                     _hann(grey.shape))
    if not np.isfinite(dx + dy) or np.hypot(dx, dy) < min_shift or max(abs(dx), abs(dy)) > w / 8:
        return diff
    shift = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(prev, shift, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    comp = cv2.absdiff(grey, moved)
    bx, by = int(np.ceil(abs(dx))), int(np.ceil(abs(dy)))
    inner = (slice(by, h - by), slice(bx, w - bx))
    if comp[inner].size == 0 or comp[inner].mean() > (1 - min_gain) * diff[inner].mean():
        return diff
    comp[:by], comp[h - by:], comp[:, :bx], comp[:, w - bx:] = 0, 0, 0, 0
    return comp


_HANN: dict[tuple[int, int], np.ndarray] = {}


def _hann(shape: tuple[int, int]) -> np.ndarray:
    if shape not in _HANN:
        _HANN[shape] = cv2.createHanningWindow((shape[1], shape[0]), cv2.CV_32F)
    return _HANN[shape]


class MotionAccumulator:
    """Motion energy computed frame by frame, so frames never need to be kept in memory.

    Feed ``(t, frame)`` pairs to :meth:`add`; read :attr:`energy` and :attr:`timestamps`.
    The energy of frame ``k`` is the mean absolute greyscale difference (0..255 grey levels
    per pixel) between frame ``k`` and frame ``k - 1`` in each grid cell; frame 0 gets the
    energy of frame 1 (or zeros for a single frame). With ``stabilize`` a global shift of the
    picture (hand-held camera shake) is removed first when that explains the change better
    (see :func:`_stabilized_diff`).
    """

    def __init__(self, cell_px: int = CELL_PX, grid: tuple[int, int] | None = None,
                 stabilize: bool = True):
        self.cell_px = cell_px
        self.stabilize = stabilize
        self.grid = grid
        self._prev: np.ndarray | None = None
        self._rows: list[np.ndarray] = []
        self._times: list[float] = []

    def add(self, t: float, frame: np.ndarray) -> None:
        """Add one ``[H, W, 3]`` uint8 RGB frame (or ``[H, W]`` grey) shown at ``t`` seconds."""
        grey = frame if frame.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(frame),
                                                          cv2.COLOR_RGB2GRAY)
        if self.grid is None:
            self.grid = grid_shape(*grey.shape[:2], cell_px=self.cell_px)
        gh, gw = self.grid
        if self._prev is None or self._prev.shape != grey.shape:
            row = None
        else:
            diff = cv2.absdiff(grey, self._prev)
            if self.stabilize:
                diff = _stabilized_diff(self._prev, grey, diff)
            row = cv2.resize(diff.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
        self._prev = grey
        if row is None:
            row = self._rows[-1] if self._rows else None
        self._rows.append(row)
        self._times.append(float(t))

    @property
    def timestamps(self) -> np.ndarray:
        """``[T]`` float64 seconds."""
        return np.asarray(self._times, np.float64)

    @property
    def energy(self) -> np.ndarray:
        """``[T, gh, gw]`` float32 mean absolute grey-level difference per cell."""
        if not self._rows:
            gh, gw = self.grid or (2, 2)
            return np.zeros((0, gh, gw), np.float32)
        gh, gw = self.grid
        first = next((r for r in self._rows if r is not None), None)
        zero = np.zeros((gh, gw), np.float32)
        rows = [r if r is not None else (first if first is not None else zero) for r in self._rows]
        return np.stack(rows).astype(np.float32)

    def watch(self, frames: Iterable[tuple[float, np.ndarray]]
              ) -> Iterator[tuple[float, np.ndarray]]:
        """Pass ``(t, frame)`` pairs through unchanged while adding each to the accumulator.

        Lets one decoding pass feed both a face tracker and the motion energy.
        """
        for t, frame in frames:
            self.add(t, frame)
            yield t, frame


def motion_energy(frames: np.ndarray | Iterable, timestamps: np.ndarray | None = None,
                  cell_px: int = CELL_PX,
                  grid: tuple[int, int] | None = None,
                  stabilize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell motion energy: absolute frame differences of greyscale frames, pooled on a grid.

    Args:
        frames: ``[T, H, W, 3]`` uint8 RGB frames at analysis size (with ``timestamps``), or an
            iterable of ``[H, W, 3]`` frames (with ``timestamps``), or an iterable of
            ``(t, frame)`` pairs (``timestamps`` ``None``, e.g. :func:`avsplit.media.iter_frames`).
        timestamps: ``[T]`` seconds of each frame.
        cell_px: approximate cell side in pixels (default 24: a 640x360 frame gives 15x27
            cells); ignored when ``grid`` is given.
        grid: ``(gh, gw)`` to force the grid size.
        stabilize: undo a global shift of the picture (camera shake) before differencing
            when that explains the change better (:class:`MotionAccumulator`).

    Returns:
        ``(energy, timestamps)``: ``[T, gh, gw]`` float32 mean absolute grey-level change per
        pixel (0..255) between each frame and the one before (frame 0 copies frame 1), and
        ``[T]`` float64 seconds.
    """
    acc = MotionAccumulator(cell_px=cell_px, grid=grid, stabilize=stabilize)
    if timestamps is None:
        for t, frame in frames:
            acc.add(t, frame)
    else:
        timestamps = np.asarray(timestamps, np.float64)
        n = 0
        for t, frame in zip(timestamps, frames):
            acc.add(float(t), frame)
            n += 1
        if n != len(timestamps):
            raise ValueError(f"{len(timestamps)} timestamps for {n} frames")
    return acc.energy, acc.timestamps


def _compress(energy: np.ndarray) -> np.ndarray:
    """``log1p`` of motion energy: a few very large changes (cuts, flashes) weigh less."""
    return np.log1p(np.maximum(energy, 0.0))


def cut_frames(energy: np.ndarray, factor: float = 8.0, floor: float = 25.0) -> np.ndarray:
    """``[T]`` bool: frames whose whole-picture change looks like a scene cut.

    A frame is a cut when its mean energy over all cells is above ``floor`` grey levels and
    ``factor`` times the clip's median.
    """
    if len(energy) == 0:
        return np.zeros(0, bool)
    glob = energy.reshape(len(energy), -1).mean(axis=1)
    return glob > max(floor, factor * float(np.median(glob)))


def _log_envelope(envelope: np.ndarray, floor_db: float = -60.0) -> np.ndarray:
    """Envelope in dB relative to its maximum, floored at ``floor_db``."""
    env = np.asarray(envelope, np.float64)
    ref = float(env.max()) if env.size else 0.0
    if ref <= 0:
        return np.full(env.shape, floor_db)
    return np.maximum(20 * np.log10(np.maximum(env, 1e-12) / ref), floor_db)


def _best_r(x: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Best Pearson r over lags.

    Args:
        x: ``[T, C]`` per-cell signals; audio: ``[L, T]`` lagged audio envelopes.

    Returns:
        ``[C]`` max over the ``L`` lags of the correlation (0 for constant signals).
    """
    x = x - x.mean(axis=0, keepdims=True)
    a = audio - audio.mean(axis=1, keepdims=True)
    xn = np.sqrt((x * x).sum(axis=0))
    an = np.sqrt((a * a).sum(axis=1))
    r = (a @ x) / (an[:, None] * xn[None, :] + 1e-12)  # [L, C]
    r[:, xn < 1e-6] = 0.0
    r[an < 1e-9, :] = 0.0
    return r.max(axis=0)


def _lagged_audio(envelope: np.ndarray, env_times: np.ndarray, timestamps: np.ndarray,
                  lags_s: np.ndarray) -> np.ndarray:
    """``[L, T]`` log envelope sampled at ``timestamps + lag`` for each lag."""
    log_env = _log_envelope(envelope)
    times = np.asarray(timestamps, np.float64)[None, :] + np.asarray(lags_s, np.float64)[:, None]
    return np.interp(times, env_times, log_env)


def audio_motion_map(energy: np.ndarray, timestamps: np.ndarray, envelope: np.ndarray,
                     env_times: np.ndarray, lags_s: np.ndarray = LAGS_S,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """Where the picture moves with the sound: per-cell best correlation with the audio level.

    For each cell, the Pearson r between its (log-compressed) motion energy and the audio RMS
    envelope in dB sampled at the frame times plus a lag, maximised over ``lags_s`` and
    clipped at 0 (Hershey & Movellan, 2000).

    Args:
        energy: ``[T, gh, gw]`` float32 motion energy (:func:`motion_energy`).
        timestamps: ``[T]`` seconds of the frames.
        envelope: ``[N]`` linear RMS envelope of the audio (any scale).
        env_times: ``[N]`` seconds of the envelope values, increasing.
        lags_s: audio lags to search, seconds (positive: the sound comes after the motion);
            default -0.2..+0.2 s in 40 ms steps.
        exclude: ``[T]`` bool frames to leave out (e.g. :func:`cut_frames`); ``None`` keeps all.

    Returns:
        ``[gh, gw]`` float32 correlation in 0..1 (zeros with fewer than ``MIN_FRAMES`` = 10
        frames: a correlation over fewer means nothing).
    """
    T, gh, gw = energy.shape
    keep = np.ones(T, bool) if exclude is None else ~np.asarray(exclude, bool)
    if keep.sum() < MIN_FRAMES or len(env_times) < 2:
        return np.zeros((gh, gw), np.float32)
    x = _compress(energy[keep].reshape(int(keep.sum()), -1).astype(np.float64))
    audio = _lagged_audio(envelope, env_times, np.asarray(timestamps)[keep], lags_s)
    return np.clip(_best_r(x, audio), 0.0, 1.0).reshape(gh, gw).astype(np.float32)


def sliding_audio_motion_map(energy: np.ndarray, timestamps: np.ndarray, envelope: np.ndarray,
                             env_times: np.ndarray, window_s: float = 2.0, hop_s: float = 0.25,
                             lags_s: np.ndarray = LAGS_S,
                             exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`audio_motion_map` over sliding windows, so the map can change over time.

    Args:
        energy, timestamps, envelope, env_times, lags_s, exclude: as :func:`audio_motion_map`.
        window_s: window length in seconds (default 2 s).
        hop_s: step between window centres in seconds.

    Returns:
        ``(maps, centres)``: ``[K, gh, gw]`` float32 correlations in 0..1 and ``[K]`` float64
        seconds of the window centres (``K >= 1`` for a non-empty clip; one window covering
        the whole clip when it is shorter than ``window_s``; zero maps for windows with fewer
        than ``MIN_FRAMES`` frames).
    """
    T, gh, gw = energy.shape
    timestamps = np.asarray(timestamps, np.float64)
    if T == 0:
        return np.zeros((0, gh, gw), np.float32), np.zeros(0)
    keep = np.ones(T, bool) if exclude is None else ~np.asarray(exclude, bool)
    x_all = _compress(energy.reshape(T, -1).astype(np.float64))
    audio_all = _lagged_audio(envelope, env_times, timestamps, lags_s)
    t0, t1 = float(timestamps[0]), float(timestamps[-1])
    if t1 - t0 <= window_s:
        centres = np.array([(t0 + t1) / 2])
    else:
        centres = np.arange(t0 + window_s / 2, t1 - window_s / 2 + hop_s, hop_s)
    maps = np.zeros((len(centres), gh * gw), np.float32)
    for k, c in enumerate(centres):
        sel = keep & (timestamps >= c - window_s / 2) & (timestamps <= c + window_s / 2)
        if sel.sum() >= MIN_FRAMES:
            maps[k] = np.clip(_best_r(x_all[sel], audio_all[:, sel]), 0.0, 1.0)
    return maps.reshape(len(centres), gh, gw), centres
