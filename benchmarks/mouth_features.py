"""Which mouth feature follows a talker's own voice: the association's sync measure
(:func:`avsplit.associate.sync_score`) of each clip's clean audio against per-frame mouth
features of its largest face (MediaPipe Face Mesh, as the product tracks faces).

Features (distances in pixels, over the forehead-chin distance unless named): ``jaw`` (lower
lip bottom to nose tip: the product's feature), ``lips`` (inner-lip gap), ``mouth_h`` (outer
lip height), ``jaw_eye`` (jaw over the outer eye-corner distance), ``chin`` (chin to nose over
the eye distance). Prints ``r / z`` per clip and feature.

    python benchmarks/mouth_features.py --data ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avsplit.associate import sync_score
from avsplit.clip import Clip
from avsplit.structures import VisualTrack
from avsplit.vision.faces import (CHIN, FOREHEAD, LOWER_LIP_BOTTOM, LOWER_LIP_INNER, NOSE_TIP,
                                  UPPER_LIP_INNER, FaceAnalyzer)

RATE = 16000
EYE_OUTER = (33, 263)
OUTER_LIPS = (0, 17)


def features(points: np.ndarray) -> dict[str, float]:
    """Mouth features of one face's mesh points in pixels ``[N, 2]``."""
    def d(a, b):
        return float(np.linalg.norm(points[a] - points[b]))

    face, eye = d(FOREHEAD, CHIN) + 1e-6, d(*EYE_OUTER) + 1e-6
    return {"jaw": d(LOWER_LIP_BOTTOM, NOSE_TIP) / face, "lips": d(LOWER_LIP_INNER, UPPER_LIP_INNER) / face,
            "mouth_h": d(*OUTER_LIPS) / face, "jaw_eye": d(LOWER_LIP_BOTTOM, NOSE_TIP) / eye,
            "chin": d(CHIN, NOSE_TIP) / eye}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    analyzer = FaceAnalyzer()
    for path in sorted((args.data / "av" / "speech").glob("*/*.*")):
        if path.parent.name == "offscreen_speech_dog":  # its speech is off-screen
            continue
        rows, times = [], []
        with Clip(path) as clip:
            mono = clip.mono(RATE)
            for t, frame in clip.frames():
                faces = analyzer.analyze(frame)
                times.append(t)
                if not faces:
                    rows.append(None)
                    continue
                f = max(faces, key=lambda f: f.box[2] - f.box[0])
                h, w = frame.shape[:2]
                rows.append(features(f.landmarks[:, :2] * np.array([w, h], np.float32)))
        names = ["jaw", "lips", "mouth_h", "jaw_eye", "chin"]
        out = []
        for name in names:
            act = np.array([r[name] if r else np.nan for r in rows], np.float32)
            track = VisualTrack(0, "face", np.array(times), np.zeros((len(times), 4), np.float32), act)
            s = sync_score(mono, RATE, track)
            out.append(f"{name} {s.r:5.2f} / {s.z:4.1f}")
        print(f"{path.parent.name}/{path.name}"[:40].ljust(40), "  ".join(out), flush=True)
    analyzer.close()


if __name__ == "__main__":
    main()
