"""Face front end: mouth-opening measure, track linking, and the bundled detector on a blank frame."""

import numpy as np
import pytest

from avsplit.vision.faces import (CHIN, FOREHEAD, LOWER_LIP_BOTTOM, LOWER_LIP_INNER, NOSE_TIP,
                                  UPPER_LIP_INNER, FaceAnalyzer, FaceObservation, link_tracks,
                                  mouth_openings, track_faces)


def _mesh(jaw_drop: float, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    """A 468-point stand-in mesh with the points the measure uses placed on a vertical line."""
    lm = np.zeros((468, 3), np.float32)
    y = {FOREHEAD: 0.0, NOSE_TIP: 0.5, UPPER_LIP_INNER: 0.62, LOWER_LIP_INNER: 0.64 + jaw_drop,
         LOWER_LIP_BOTTOM: 0.7 + jaw_drop, CHIN: 1.0 + jaw_drop}
    for i, v in y.items():
        lm[i, :2] = (0.5 * scale + shift[0], v * 0.3 * scale + 0.1 + shift[1])
    return lm


def test_mouth_opening_grows_with_the_jaw_and_ignores_face_size():
    closed = mouth_openings(_mesh(0.0), 640, 480)
    opened = mouth_openings(_mesh(0.1), 640, 480)
    assert opened[0] > closed[0] and opened[1] > closed[1]
    small = mouth_openings(_mesh(0.1, scale=0.5), 640, 480)
    assert np.allclose(small, opened, atol=1e-4)


def _obs(x: float, y: float = 0.3, jaw: float = 0.2) -> FaceObservation:
    box = np.array([x, y, x + 0.2, y + 0.3], np.float32)
    return FaceObservation(box, 0.9, np.zeros((468, 3), np.float32), jaw)


def test_two_moving_faces_stay_two_tracks_ordered_left_to_right():
    times = np.arange(50) / 25
    frames = [[_obs(0.6 - 0.001 * i, jaw=0.3), _obs(0.1 + 0.002 * i, jaw=0.1)] for i in range(50)]
    tracks = link_tracks(frames, times)
    assert len(tracks) == 2
    assert [t.track_id for t in tracks] == [0, 1]
    assert np.nanmean(tracks[0].activity) == np.float32(0.1)  # the left face
    assert all(t.seen.all() for t in tracks)
    assert tracks[0].boxes.shape == (50, 4) and tracks[0].timestamps is not None


def test_spurious_detection_is_dropped_and_short_gaps_are_bridged():
    times = np.arange(50) / 25
    frames = [[_obs(0.3)] for _ in range(50)]
    frames[20] = frames[20] + [_obs(0.75, 0.6)]  # one-frame false positive
    for i in range(30, 36):  # 0.24 s without the face
        frames[i] = []
    tracks = link_tracks(frames, times)
    assert len(tracks) == 1
    assert tracks[0].seen.sum() == 44 and np.isnan(tracks[0].activity[32])


def test_long_gap_splits_a_track():
    times = np.arange(100) / 25
    frames = [[_obs(0.3)] if (i < 40 or i >= 70) else [] for i in range(100)]
    assert len(link_tracks(frames, times)) == 2


def test_blank_and_test_pattern_frames_have_no_faces():
    frames = [(i / 25, np.zeros((240, 320, 3), np.uint8)) for i in range(5)]
    rng = np.random.default_rng(0)
    frames += [(0.2 + i / 25, rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)) for i in range(5)]
    with FaceAnalyzer() as analyzer:
        assert analyzer.analyze(frames[0][1]) == []
        assert track_faces(frames, analyzer) == []


def test_tracking_does_not_keep_each_frames_mesh():
    """A long video's observations keep boxes and openings only: the 468-point mesh of an
    earlier frame is freed while tracking goes on (a ``[:0]`` view kept it alive: ~1 GB/hour)."""
    import gc
    import weakref

    from avsplit.vision.faces import FaceObservation, track_faces

    meshes = []

    class Analyzer:
        def analyze(self, frame):
            lm = np.random.default_rng(len(meshes)).random((468, 3)).astype(np.float32)
            meshes.append(weakref.ref(lm))
            return [FaceObservation(np.array([0.4, 0.4, 0.6, 0.6], np.float32), 0.9, lm, 0.2)]

    alive = []

    def progress(n):
        gc.collect()
        alive.append(sum(r() is not None for r in meshes))

    frames = ((i / 25, np.zeros((8, 8, 3), np.uint8)) for i in range(50))
    tracks = track_faces(frames, Analyzer(), progress)
    assert len(tracks) == 1 and len(tracks[0].timestamps) == 50
    assert max(alive) == 0


def test_mouth_darkness_sees_an_open_mouth_wherever_the_head_turns():
    """A dark oval between the mouth corners reads darker than skin there, at any roll angle of
    the mouth and any position in the frame (the crop follows the corners)."""
    import cv2

    from avsplit.vision.faces import MOUTH_LEFT, MOUTH_RIGHT, UPPER_LIP_TOP, mouth_darkness

    def frame(open_mouth: bool, angle_deg: float, centre=(160.0, 120.0)):
        grey = np.full((240, 320), 180, np.uint8)
        a = np.radians(angle_deg)
        along, across = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        c = np.array(centre)
        if open_mouth:
            cv2.ellipse(grey, (int(c[0]), int(c[1])), (14, 7), angle_deg, 0, 360, 30, -1)
        points = np.zeros((468, 2))
        points[MOUTH_LEFT], points[MOUTH_RIGHT] = c - 20 * along, c + 20 * along
        points[UPPER_LIP_TOP], points[LOWER_LIP_BOTTOM] = c - 8 * across, c + 8 * across
        return grey, points

    for angle, centre in ((0.0, (160.0, 120.0)), (25.0, (100.0, 150.0)), (-30.0, (220.0, 90.0))):
        shut = mouth_darkness(*frame(False, angle, centre))
        opened = mouth_darkness(*frame(True, angle, centre))
        assert shut == pytest.approx(-180.0, abs=1.0)
        assert opened > shut + 60
