"""Core objects passed between the stages (media -> models/vision -> association -> outputs).

Shapes follow the design doc: audio is ``[channels, samples]`` float32, per-frame visual
signals are ``[T]`` or ``[T, 4]`` aligned with ``timestamps`` (seconds, real frame times).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class AudioStreamInfo:
    """One audio stream of a media file.

    Attributes:
        index: position among the file's audio streams (0 = first audio stream).
        sample_rate: Hz.
        channels: channel count.
        codec: ffmpeg codec name, e.g. ``"aac"``.
        duration: seconds, or ``None`` when the container does not say.
    """

    index: int
    sample_rate: int
    channels: int
    codec: str
    duration: float | None = None


@dataclass
class VideoStreamInfo:
    """The first video stream of a media file.

    Attributes:
        width, height: pixels.
        fps: average frame rate in frames per second (may be variable; use real timestamps).
        codec: ffmpeg codec name, e.g. ``"h264"``.
        duration: seconds, or ``None``.
        frames: number of frames when the container says, else ``None``.
        index: the stream's index in the container (for ``-map 0:<index>``).
    """

    width: int
    height: int
    fps: float
    codec: str
    duration: float | None = None
    frames: int | None = None
    index: int = 0


@dataclass
class MediaInfo:
    """What :func:`avsplit.media.probe` found in a file.

    Attributes:
        path: the probed file.
        duration: container duration in seconds (0.0 when unknown).
        format: container format name, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``.
        audio: the audio streams, in file order.
        video: the first video stream, or ``None`` for audio-only files. Attached pictures
            (cover art) are not counted as video.
    """

    path: Path
    duration: float
    format: str
    audio: list[AudioStreamInfo] = field(default_factory=list)
    video: VideoStreamInfo | None = None

    @property
    def has_audio(self) -> bool:
        return bool(self.audio)

    @property
    def has_video(self) -> bool:
        return self.video is not None


@dataclass
class VisualTrack:
    """One visible thing followed over time (a face, an instrument, a moving region).

    Attributes:
        track_id: small integer, unique within a clip, stable over frames.
        kind: ``"face"``, ``"instrument"`` or ``"region"``.
        timestamps: ``[T]`` float64, seconds of each analysed video frame (shared by all
            tracks of a clip; frames where this track is not seen have NaN boxes).
        boxes: ``[T, 4]`` float32, ``(x0, y0, x1, y1)`` normalised to 0..1 of the frame
            width/height; NaN where the track is not seen.
        activity: ``[T]`` float32, the per-frame visual activity signal (for faces: jaw
            opening, lower lip to nose tip divided by face height); NaN where not seen.
        label: human-readable label (``"face"``, ``"violin"``, ...).
        score: detector confidence 0..1 (mean over the frames where it is seen).
        mouth_darkness: ``[T]`` float32 or ``None``; for faces, how dark the inside of the
            mouth is (:func:`avsplit.vision.faces.mouth_darkness`), NaN where not seen; with
            the jaw opening it makes the lips cue (:func:`avsplit.synchrony.lip_signal`).
    """

    track_id: int
    kind: str
    timestamps: np.ndarray
    boxes: np.ndarray
    activity: np.ndarray
    label: str = "face"
    score: float = 0.0
    mouth_darkness: np.ndarray | None = None

    @property
    def seen(self) -> np.ndarray:
        """``[T]`` bool, frames where the track is visible."""
        return ~np.isnan(self.boxes[:, 0])
