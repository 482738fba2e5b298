"""The engine: the device and the loaded models, kept for many clips.

One :class:`Engine` serves a whole batch: each network or vision model is loaded (and its
sha256 checked) the first time a clip needs it and reused for every later clip. Face tracking
goes through a :class:`FaceTracker`, which tests replace with a fake one to drive the real
modes with known tracks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from avsplit.clip import ANALYSIS_MAX_SIDE, Clip
from avsplit.errors import AvsplitError
from avsplit.progress import NullProgress, Progress
from avsplit.structures import VisualTrack


def resolve_device(name: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA GPU is available, else ``"cpu"``.

    Raises:
        AvsplitError: ``"cuda"`` asked for without a GPU, or an unknown name.
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise AvsplitError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise AvsplitError(f"unknown device '{name}'; use auto, cpu or cuda")
    return name


class FaceTracker(Protocol):
    """Turns frames into face tracks.

    ``track(frames, progress)``: ``frames`` yields ``(t seconds, [H, W, 3] uint8 RGB)``;
    returns face :class:`~avsplit.structures.VisualTrack` s (track ids from 0). ``model_ids``:
    the ``{"name", "file", "sha256"}`` of the models it uses.
    """

    model_ids: list[dict]

    def track(self, frames: Iterable[tuple[float, np.ndarray]], progress) -> list[VisualTrack]: ...


class MediaPipeFaceTracker:
    """BlazeFace + face mesh (:class:`avsplit.vision.faces.FaceAnalyzer`), loaded once."""

    def __init__(self):
        self._analyzer = None
        self._ids: list[dict] | None = None

    @property
    def model_ids(self) -> list[dict]:
        if self._ids is None:
            from avsplit.models.registry import sha256_of, weights_path

            self._ids = [{"name": n, "file": weights_path(n).name, "sha256": sha256_of(weights_path(n))}
                         for n in ("face-detector", "face-mesh")]
        return self._ids

    def track(self, frames, progress) -> list[VisualTrack]:
        from avsplit.vision.faces import FaceAnalyzer, track_faces

        if self._analyzer is None:
            self._analyzer = FaceAnalyzer()
        return track_faces(frames, self._analyzer, progress=progress)

    def close(self) -> None:
        if self._analyzer is not None:
            self._analyzer.close()
            self._analyzer = None


class Engine:
    """Device + models for a run over many clips.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (resolved once, see :func:`resolve_device`).
        face_tracker: a :class:`FaceTracker` (default: MediaPipe's, loaded on first use).

    Raises:
        AvsplitError: ``device`` cannot be used.
    """

    def __init__(self, device: str = "auto", face_tracker: FaceTracker | None = None):
        self.device = resolve_device(device)
        self.face_tracker = face_tracker or MediaPipeFaceTracker()
        self._separators: dict = {}
        self._enhancer = None
        self._speaker_encoder = None
        self._recognizer = None
        self._recognizer_id: dict | None = None
        self._nmf = None
        self._tagger = None

    def close(self) -> None:
        """Release the models (the face tracker's native resources)."""
        close = getattr(self.face_tracker, "close", None)
        if close:
            close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- audio networks -----------------------------------------------------------------
    def separator(self, name: str, weights: Path | None = None):
        """The :class:`avsplit.separator.Separator` of registry entry ``name`` (or of the
        checkpoint ``weights``), loaded once per engine.

        Raises:
            AvsplitError: missing/corrupt weights, or a checkpoint of another network.
        """
        key = (name, None if weights is None else str(Path(weights).resolve()))
        if key not in self._separators:
            from avsplit.models.registry import load_network
            from avsplit.separator import Separator

            model, model_id = load_network(name, weights, self.device)
            self._separators[key] = Separator(model, model_id, self.device)
        return self._separators[key]

    def use_separator(self, name: str, separator) -> None:
        """Serve ``separator`` (a :class:`avsplit.separator.Separator`) for registry entry ``name``
        instead of loading the bundled weights (tests drive the real modes with a known network)."""
        self._separators[(name, None)] = separator

    def nmf_separator(self):
        """The NMF instrument separator with the bundled component classifier
        (:class:`avsplit.nmf.NMFSeparator`, registry ``instrument-nmf``), loaded once.

        Raises:
            AvsplitError: its classifier file is missing or corrupt.
        """
        if self._nmf is None:
            from avsplit.nmf import load_nmf_separator

            self._nmf = load_nmf_separator()
        return self._nmf

    def instrument_tagger(self):
        """``(InstrumentTagger, model_id)``: the audio instrument tagger
        (:class:`avsplit.models.tagger.InstrumentTagger`, registry ``instrument-tagger``),
        loaded once per engine.

        Raises:
            AvsplitError: its weights are missing or corrupt.
        """
        if self._tagger is None:
            from avsplit.models.registry import load_network

            self._tagger = load_network("instrument-tagger", device="cpu")
        return self._tagger

    def speech_enhancer(self):
        """The pretrained speech enhancer (:class:`avsplit.models.enhancer.SpeechEnhancer`,
        DTLN on the CPU), loaded once per engine.

        Raises:
            AvsplitError / WeightsUnavailableError: its weights are missing or corrupt.
        """
        if self._enhancer is None:
            from avsplit.models.enhancer import SpeechEnhancer

            self._enhancer = SpeechEnhancer()
        return self._enhancer

    def speaker_encoder(self):
        """The pretrained d-vector speaker encoder (:class:`avsplit.models.speaker.SpeakerEncoder`,
        on the CPU), loaded once per engine.

        Raises:
            WeightsUnavailableError: its weights are missing or corrupt.
        """
        if self._speaker_encoder is None:
            from avsplit.models.speaker import SpeakerEncoder

            self._speaker_encoder = SpeakerEncoder.pretrained()
        return self._speaker_encoder

    # -- vision -------------------------------------------------------------------------
    def instrument_recognizer(self):
        """``(InstrumentRecognizer, model_id)``, loaded once per engine."""
        if self._recognizer is None:
            from avsplit.models.registry import sha256_of, weights_path
            from avsplit.vision.instruments import InstrumentRecognizer

            self._recognizer = InstrumentRecognizer(device=self.device)
            file = weights_path("instrument-recognizer")
            self._recognizer_id = {"name": "instrument-recognizer", "file": file.name,
                                   "sha256": sha256_of(file)}
        return self._recognizer, self._recognizer_id

    def face_tracks(self, clip: Clip, progress: Progress | None = None,
                    frames: Iterable[tuple[float, np.ndarray]] | None = None
                    ) -> list[VisualTrack]:
        """Face tracks of a clip, computed once per clip (cached in ``clip.cache``).

        Args:
            frames: the frames to track in (default: every frame of the clip at
                :data:`avsplit.clip.ANALYSIS_MAX_SIDE`); a caller that also needs the frames
                for something else passes its own iterator so the video is decoded once.

        Raises:
            MediaError: the video cannot be decoded.
        """
        if "faces" not in clip.cache:
            progress = progress or NullProgress()
            v = clip.info.video
            total = v.duration * v.fps if v and v.duration and v.fps else None
            advance = progress.stage("finding faces", total if frames is None else None)
            source = clip.frames(ANALYSIS_MAX_SIDE) if frames is None else frames
            clip.cache["faces"] = self.face_tracker.track(source, advance)
        return clip.cache["faces"]

    def face_model_ids(self) -> list[dict]:
        """Model ids of the face tracker (for manifests)."""
        return list(self.face_tracker.model_ids)
