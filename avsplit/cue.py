"""The mouth-motion cue that steers the target-speaker extractor.

One face track's jaw opening (:class:`avsplit.structures.VisualTrack` ``activity``, sampled at
the video's frames, NaN where the face is not seen) becomes two channels on the separator's
STFT frame grid: the per-track z-normalised jaw opening (0 where unseen) and a face-seen flag.
Training (:mod:`avsplit.train.speech`, ``--cue``) builds its pseudo-visual cue through this very
function from a jaw track predicted from the clean voice, so the network sees at inference what
it saw in training (the recipe of BISS, Ceolini et al. 2020: train on a clean cue, run on a
noisy decoded one; ADEnet, Delcroix et al. 2021: extract a speaker from its activity alone).
"""

from __future__ import annotations

import numpy as np

CUE_CHANNELS = 2


def mouth_cue(timestamps: np.ndarray, activity: np.ndarray, frame_times: np.ndarray,
              max_gap_s: float = 0.12) -> np.ndarray:
    """Cue channels of one face track on a frame grid.

    Args:
        timestamps: ``[V]`` float seconds of the video frames.
        activity: ``[V]`` float jaw opening, NaN where the face is not seen.
        frame_times: ``[T]`` float seconds of the separator's STFT frames.
        max_gap_s: a frame further than this from any seen video frame counts as unseen.

    Returns:
        ``[2, T]`` float32: row 0 the jaw opening, z-normalised over the seen frames of this
        track (so its scale and the face's size do not matter) and linearly interpolated, 0
        where unseen; row 1 is 1 where the face is seen, else 0. All zeros when the face is
        seen in fewer than 2 frames or does not move.
    """
    out = np.zeros((CUE_CHANNELS, len(frame_times)), np.float32)
    timestamps = np.asarray(timestamps, np.float64)
    activity = np.asarray(activity, np.float64)
    seen = np.isfinite(activity)
    if seen.sum() < 2:
        return out
    t, a = timestamps[seen], activity[seen]
    std = a.std()
    if std < 1e-9:
        return out
    a = (a - a.mean()) / std
    value = np.interp(frame_times, t, a)
    near = _nearest_distance(np.asarray(frame_times, np.float64), t) <= max_gap_s
    out[0] = np.where(near, value, 0.0)
    out[1] = near
    return out


def _nearest_distance(x: np.ndarray, sorted_t: np.ndarray) -> np.ndarray:
    """Distance from each ``x`` to the nearest of the sorted times ``sorted_t``."""
    i = np.clip(np.searchsorted(sorted_t, x), 1, len(sorted_t) - 1)
    return np.minimum(np.abs(x - sorted_t[i - 1]), np.abs(sorted_t[i] - x))
