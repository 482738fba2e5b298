"""Faces: detection + landmarks (MediaPipe Face Mesh), tracks over time, jaw opening.

Method: MediaPipe's BlazeFace short-range detector (Bazarevsky et al., 2019) followed by the
468-point face mesh (Kartynnik et al., 2019), both from the mediapipe 0.10.21 wheel, on every
analysed frame;
detections are linked into tracks across frames by box overlap (Hungarian assignment on
1 - IoU), bridging gaps of up to :data:`MAX_GAP_S`. The per-frame activity signal is the jaw
opening: lower-lip bottom (mesh point 17) to nose tip (point 1), divided by the face height
(forehead point 10 to chin point 152) so it does not depend on the face's size in the frame;
the design doc measured it as the best lip feature for audio-visual synchrony.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from scipy.optimize import linear_sum_assignment

from avsplit.structures import VisualTrack

NOSE_TIP, LOWER_LIP_BOTTOM, UPPER_LIP_INNER, LOWER_LIP_INNER, FOREHEAD, CHIN = 1, 17, 13, 14, 10, 152
MOUTH_LEFT, MOUTH_RIGHT, UPPER_LIP_TOP = 61, 291, 0
MOUTH_CROP = (48, 32)  # (width, height) of the mouth crop of :func:`mouth_darkness`, pixels
MOUTH_CROP_SCALE = 1.6  # the crop spans this many mouth widths
MAX_GAP_S = 0.5
MIN_IOU = 0.2
MIN_SEEN_S = 0.5
MIN_SEEN_FRACTION = 0.1


@dataclass
class FaceObservation:
    """One face in one frame.

    Attributes:
        box: ``[4]`` float32 ``(x0, y0, x1, y1)`` normalised to 0..1 (from the landmarks).
        score: presence confidence 0..1 (1.0 when MediaPipe gives none).
        landmarks: ``[N, 3]`` float32 normalised mesh points (x, y in 0..1 of width/height).
        jaw_opening: lower lip to nose tip over face height (unitless, ~0.15-0.35); the
            design doc measured it as the best synchrony feature (better than the inner-lip gap).
        mouth_darkness: :func:`mouth_darkness` (grey levels, higher when the mouth opens onto
            the dark oral cavity); NaN when not measured.
    """

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    jaw_opening: float
    mouth_darkness: float = float("nan")


NO_LANDMARKS = np.zeros((0, 3), np.float32)  # what a tracked observation keeps of its mesh


def mouth_openings(landmarks: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """``(jaw_opening, lip_opening)`` of one face from its normalised mesh points ``[N, >=2]``.

    Distances are measured in pixels (``width``/``height`` undo the normalisation's aspect)
    and divided by the forehead-chin distance.
    """
    p = landmarks[:, :2] * np.array([width, height], np.float32)
    face = np.linalg.norm(p[FOREHEAD] - p[CHIN]) + 1e-6
    jaw = np.linalg.norm(p[LOWER_LIP_BOTTOM] - p[NOSE_TIP]) / face
    lips = np.linalg.norm(p[LOWER_LIP_INNER] - p[UPPER_LIP_INNER]) / face
    return float(jaw), float(lips)


def mouth_darkness(grey: np.ndarray, points_px: np.ndarray) -> float:
    """How dark the inside of the mouth is: minus the mean grey level (0..255) of the middle
    half of a mouth crop aligned on the mouth corners.

    The crop (:data:`MOUTH_CROP` pixels, :data:`MOUTH_CROP_SCALE` mouth widths wide, rotated so
    the corners are level, centred between the corners and the lips' top and bottom) follows
    the mouth whatever the head does, so the measure changes with what the lips uncover: the
    oral cavity (dark) as the mouth opens, teeth and lips as it closes. Articulation without
    much jaw travel (a smiling or a tight-lipped talker) shows here and not in the jaw opening.
    Mouth-region pixel intensities as the visual side of audio-visual synchrony: Hershey &
    Movellan (2000), Slaney & Covell (2001, "FaceSync").

    Args:
        grey: ``[H, W]`` uint8 or float grey frame.
        points_px: ``[468, >=2]`` face mesh points in pixels of ``grey``.

    Returns:
        ``-mean`` grey level, in ``[-255, 0]``.
    """
    import cv2

    p = np.asarray(points_px, np.float64)[:, :2]
    left, right = p[MOUTH_LEFT], p[MOUTH_RIGHT]
    centre = (left + right + p[UPPER_LIP_TOP] + p[LOWER_LIP_BOTTOM]) / 4
    width = max(float(np.linalg.norm(right - left)) * MOUTH_CROP_SCALE, 1e-6)
    w, h = MOUTH_CROP
    angle = float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, w / width)
    m[:, 2] += np.array([w / 2, h / 2]) - centre
    crop = cv2.warpAffine(np.asarray(grey, np.float32), m, (w, h), flags=cv2.INTER_AREA)
    return -float(crop[h // 4: 3 * h // 4, w // 4: 3 * w // 4].mean())


def _weights_file(name: str) -> Path:
    from avsplit.models.registry import weights_path

    return weights_path(name)


LANDMARK_INPUT = 192  # face_landmark.tflite takes a 192x192 RGB crop in 0..1
ROI_SCALE = 1.5  # the crop is 1.5x the detected box, as in MediaPipe's face_landmark_front graph


class FaceAnalyzer:
    """Faces and their 468 mesh points in single RGB frames.

    The BlazeFace short-range detector (MediaPipe Tasks ``FaceDetector``) gives boxes and
    eye keypoints; each face is cropped to an upright square 1.5x its box (rotated so the eyes
    are level, as MediaPipe's face mesh graph does) and the face mesh network
    (``face_landmark.tflite``, run with LiteRT) gives the 468 points.

    Raises:
        AvsplitError: a bundled model file is missing or corrupt.
    """

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5, min_presence: float = 0.5):
        import mediapipe as mp
        from ai_edge_litert.interpreter import Interpreter
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        options = vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(_weights_file("face-detector"))),
            running_mode=vision.RunningMode.IMAGE, min_detection_confidence=min_confidence)
        self._detector = vision.FaceDetector.create_from_options(options)
        self._mesh = Interpreter(model_path=str(_weights_file("face-mesh")), num_threads=1)
        self._mesh.allocate_tensors()
        self._mesh_in = self._mesh.get_input_details()[0]["index"]
        outs = self._mesh.get_output_details()
        self._mesh_points = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1404)
        self._mesh_flag = next(o["index"] for o in outs if int(np.prod(o["shape"])) == 1)
        self.max_faces = max_faces
        self.min_presence = min_presence

    def _landmarks(self, frame: np.ndarray, box_px: np.ndarray, eyes_px: np.ndarray
                   ) -> tuple[np.ndarray, float]:
        """Mesh points ``[468, 3]`` (pixels; z in pixels too) and presence 0..1 of one face."""
        import cv2

        (x0, y0, w, h) = box_px
        centre = np.array([x0 + w / 2, y0 + h / 2], np.float64)
        size = max(w, h) * ROI_SCALE
        right_eye, left_eye = eyes_px
        angle = -np.arctan2(-(left_eye[1] - right_eye[1]), left_eye[0] - right_eye[0])
        cos, sin = np.cos(angle), np.sin(angle)
        scale = size / LANDMARK_INPUT
        # crop pixel (u, v) -> image pixel: centre + R(angle) @ ((u, v) - 96) * scale
        m = np.array([[cos * scale, -sin * scale, 0.0], [sin * scale, cos * scale, 0.0]])
        m[:, 2] = centre - m[:, :2] @ np.array([LANDMARK_INPUT / 2] * 2)
        crop = cv2.warpAffine(frame, m, (LANDMARK_INPUT, LANDMARK_INPUT),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        self._mesh.set_tensor(self._mesh_in, (crop.astype(np.float32) / 255.0)[None])
        self._mesh.invoke()
        pts = self._mesh.get_tensor(self._mesh_points).reshape(468, 3).astype(np.float64)
        presence = float(1 / (1 + np.exp(-self._mesh.get_tensor(self._mesh_flag).ravel()[0])))
        xy = pts[:, :2] @ m[:, :2].T + m[:, 2]
        return np.column_stack([xy, pts[:, 2] * scale]).astype(np.float32), presence

    def analyze(self, frame: np.ndarray) -> list[FaceObservation]:
        """Faces in one ``[H, W, 3]`` uint8 RGB frame (at most ``max_faces``, most confident first)."""
        import cv2

        h, w = frame.shape[:2]
        frame = np.ascontiguousarray(frame)
        grey = None
        result = self._detector.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=frame))
        detections = sorted(result.detections, key=lambda d: -d.categories[0].score)[: self.max_faces]
        faces = []
        for d in detections:
            bb = d.bounding_box
            box = np.array([bb.origin_x, bb.origin_y, bb.width, bb.height], np.float64)
            eyes = np.array([[d.keypoints[i].x * w, d.keypoints[i].y * h] for i in (0, 1)])
            points, presence = self._landmarks(frame, box, eyes)
            if presence < self.min_presence:
                continue
            lm = points / np.array([w, h, w], np.float32)
            jaw, _ = mouth_openings(lm, w, h)
            if grey is None:
                grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            mesh_box = np.array([lm[:, 0].min(), lm[:, 1].min(), lm[:, 0].max(), lm[:, 1].max()], np.float32)
            faces.append(FaceObservation(np.clip(mesh_box, 0, 1), float(d.categories[0].score) * presence,
                                         lm, jaw, mouth_darkness(grey, points)))
        return faces

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> "FaceAnalyzer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def link_tracks(observations: list[list[FaceObservation]], timestamps: np.ndarray,
                max_gap_s: float = MAX_GAP_S, min_iou: float = MIN_IOU,
                min_seen_s: float = MIN_SEEN_S, min_seen_fraction: float = MIN_SEEN_FRACTION
                ) -> list[VisualTrack]:
    """Link per-frame face observations into tracks.

    Args:
        observations: per frame, the faces seen (``len == T``).
        timestamps: ``[T]`` seconds of the frames.
        max_gap_s: a track unseen for longer than this ends.
        min_iou: least box overlap with a track's last box to continue it.
        min_seen_s, min_seen_fraction: tracks seen for a shorter time span or in a smaller
            share of the frames are dropped as spurious.

    Returns:
        Face :class:`VisualTrack` s with ids 0, 1, ... from left to right (mean box centre).
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    n = len(timestamps)
    open_tracks: list[dict] = []
    done: list[dict] = []
    for i, faces in enumerate(observations):
        alive = [timestamps[i] - timestamps[t["last"]] <= max_gap_s for t in open_tracks]
        done += [t for t, a in zip(open_tracks, alive) if not a]
        open_tracks = [t for t, a in zip(open_tracks, alive) if a]
        used = set()
        if faces and open_tracks:
            cost = np.array([[1 - _iou(t["obs"][t["last"]].box, f.box) for f in faces] for t in open_tracks])
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if 1 - cost[r, c] >= min_iou:
                    open_tracks[r]["obs"][i] = faces[c]
                    open_tracks[r]["last"] = i
                    used.add(c)
        for c, f in enumerate(faces):
            if c not in used:
                open_tracks.append({"obs": {i: f}, "last": i})
    done += open_tracks
    tracks = []
    for t in done:
        frames = sorted(t["obs"])
        span = timestamps[frames[-1]] - timestamps[frames[0]]
        if span < min_seen_s or len(frames) < max(3, min_seen_fraction * n):
            continue
        boxes = np.full((n, 4), np.nan, np.float32)
        activity = np.full(n, np.nan, np.float32)
        darkness = np.full(n, np.nan, np.float32)
        for i in frames:
            boxes[i] = t["obs"][i].box
            activity[i] = t["obs"][i].jaw_opening
            darkness[i] = t["obs"][i].mouth_darkness
        score = float(np.mean([t["obs"][i].score for i in frames]))
        tracks.append(VisualTrack(0, "face", timestamps, boxes, activity, "face", score,
                                  darkness if np.isfinite(darkness).any() else None))
    tracks.sort(key=lambda tr: float(np.nanmean((tr.boxes[:, 0] + tr.boxes[:, 2]) / 2)))
    for k, tr in enumerate(tracks):
        tr.track_id = k
    return tracks


def track_faces(frames: Iterable[tuple[float, np.ndarray]], analyzer: FaceAnalyzer | None = None,
                progress: Callable[[float], None] | None = None) -> list[VisualTrack]:
    """Face tracks of a video.

    Args:
        frames: ``(timestamp_s, rgb uint8 [H, W, 3])`` pairs with REAL frame times
            (:func:`avsplit.media.iter_frames`).
        analyzer: a :class:`FaceAnalyzer` to reuse (one is made and closed otherwise).
        progress: called with 1 after each frame.

    Returns:
        See :func:`link_tracks`; ``[]`` when no face is seen long enough.
    """
    own = analyzer is None
    analyzer = analyzer or FaceAnalyzer()
    observations, times = [], []
    try:
        for t, frame in frames:
            faces = analyzer.analyze(frame)
            for f in faces:  # tracks keep boxes and openings only: bounded memory on long videos
                f.landmarks = NO_LANDMARKS  # (a [:0] view would keep the whole mesh alive)
            observations.append(faces)
            times.append(t)
            if progress is not None:
                progress(1)
    finally:
        if own:
            analyzer.close()
    return link_tracks(observations, np.array(times))
