#!/bin/sh
# Rebuild the MediaPipe face weights in this folder from the mediapipe 0.10.21 wheel (PyPI).
#
#   pip download --no-deps mediapipe==0.10.21 --python-version 3.11 \
#       --platform manylinux_2_28_x86_64 -d /tmp/mp
#   sh weights/build_face_weights.sh /tmp/mp/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
#
# Writes (next to this script):
#   face_detection_short_range.tflite  copied from the wheel
#   face_landmarker.task               uncompressed zip (zip -0) that mediapipe>=0.10.30 Tasks'
#                                      FaceLandmarker loads: face_detector.tflite (= the
#                                      short-range detector) + face_landmarks_detector.tflite
#                                      (= face_landmark.tflite)
#   LICENSE-mediapipe.txt              the wheel's Apache-2.0 licence text
# Needs: unzip, zip. File times are pinned so the .task is byte-identical on every run.
set -eu
WHEEL=${1:?usage: build_face_weights.sh path/to/mediapipe-0.10.21-*.whl}
OUT=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

unzip -q -o -j "$WHEEL" \
    mediapipe/modules/face_detection/face_detection_short_range.tflite \
    mediapipe/modules/face_landmark/face_landmark.tflite \
    mediapipe-0.10.21.dist-info/LICENSE \
    -d "$TMP"

cp "$TMP/face_detection_short_range.tflite" "$OUT/face_detection_short_range.tflite"
cp "$TMP/LICENSE" "$OUT/LICENSE-mediapipe.txt"

mkdir "$TMP/task"
cp "$TMP/face_detection_short_range.tflite" "$TMP/task/face_detector.tflite"
cp "$TMP/face_landmark.tflite" "$TMP/task/face_landmarks_detector.tflite"
touch -t 202501312017 "$TMP/task/face_detector.tflite" "$TMP/task/face_landmarks_detector.tflite"
rm -f "$OUT/face_landmarker.task"
(cd "$TMP/task" && TZ=UTC zip -q -0 -X "$OUT/face_landmarker.task" \
    face_detector.tflite face_landmarks_detector.tflite)

sha256sum "$OUT/face_detection_short_range.tflite" "$OUT/face_landmarker.task"
