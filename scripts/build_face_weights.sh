#!/bin/sh
# Rebuild the MediaPipe face weights in this folder from the mediapipe 0.10.21 wheel (PyPI).
#
#   pip download --no-deps mediapipe==0.10.21 --python-version 3.11 \
#       --platform manylinux_2_28_x86_64 --only-binary=:all: -d /tmp/mp
#   sh scripts/build_face_weights.sh /tmp/mp/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl
#
# Copies (next to this script), unchanged:
#   face_detection_short_range.tflite  mediapipe/modules/face_detection/  (BlazeFace, run by mediapipe Tasks' FaceDetector)
#   face_landmark.tflite               mediapipe/modules/face_landmark/   (468-point face mesh, run with LiteRT)
#   LICENSE-mediapipe.txt              mediapipe-0.10.21.dist-info/LICENSE (Apache-2.0)
set -eu
WHEEL=${1:?usage: build_face_weights.sh path/to/mediapipe-0.10.21-*.whl}
OUT=$(cd "$(dirname "$0")/../weights" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unzip -q -o -j "$WHEEL" \
    mediapipe/modules/face_detection/face_detection_short_range.tflite \
    mediapipe/modules/face_landmark/face_landmark.tflite \
    mediapipe-0.10.21.dist-info/LICENSE \
    -d "$TMP"
cp "$TMP/face_detection_short_range.tflite" "$TMP/face_landmark.tflite" "$OUT/"
cp "$TMP/LICENSE" "$OUT/LICENSE-mediapipe.txt"
sha256sum "$OUT/face_detection_short_range.tflite" "$OUT/face_landmark.tflite"
