"""The modes of ``avsplit separate``, built from media -> models/vision -> association -> outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from avsplit import __version__, media
from avsplit.apply import masks_to_waves, separate_masks
from avsplit.associate import Assignment, associate
from avsplit.audio import apply_masks, resample
from avsplit.errors import AvsplitError
from avsplit.outputs import ClipOutput
from avsplit.structures import MediaInfo, VisualTrack

ANALYSIS_MAX_SIDE = 640
MODES = ("onscreen", "speakers", "instruments")


class Progress(Protocol):
    """Reports stages of work; :meth:`stage` returns a function that advances the stage."""

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]: ...


class NullProgress:
    """A :class:`Progress` that shows nothing."""

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]:
        return lambda n=1: None


@dataclass
class SeparateOptions:
    """Settings of ``avsplit separate`` (see the CLI for their meaning)."""

    mode: str = "onscreen"
    fmt: str = "wav"
    video: bool = True
    device: str = "cpu"
    audio_stream: int = 0
    query: list[str] = field(default_factory=list)
    weights: Path | None = None


@dataclass
class SpeechAnalysis:
    """What the speech model and the face association found in one clip.

    Attributes:
        masks: ``[slots, bins, frames]`` model-rate masks (speech slots, background last).
        sources: ``[slots, samples]`` model-rate waveforms of the slots.
        rate: the model's sample rate (Hz); hop: its STFT hop (samples).
        tracks: face tracks; assignments: one per speech slot.
        model_id: ``{"name", "file", "sha256"}`` of the separator.
    """

    masks: np.ndarray
    sources: np.ndarray
    rate: int
    hop: int
    tracks: list[VisualTrack]
    assignments: list[Assignment]
    model_ids: list[dict]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise AvsplitError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return name


def face_tracks(path: Path, info: MediaInfo, progress: Progress) -> tuple[list[VisualTrack], list[dict]]:
    """Face tracks of a video (MediaPipe face detection + face mesh, linked over time).

    Returns ``(tracks, model_ids)``.
    """
    from avsplit.models.registry import sha256_of, weights_path
    from avsplit.vision.faces import FaceAnalyzer, track_faces

    total = None
    if info.video and info.video.duration and info.video.fps:
        total = info.video.duration * info.video.fps
    advance = progress.stage("finding faces", total)
    with FaceAnalyzer() as analyzer:
        tracks = track_faces(media.iter_frames(path, max_side=ANALYSIS_MAX_SIDE), analyzer,
                             progress=advance)
    ids = []
    for name in ("face-detector", "face-mesh"):
        file = weights_path(name)
        ids.append({"name": name, "file": file.name, "sha256": sha256_of(file)})
    return tracks, ids


def analyse_speech(path: Path, info: MediaInfo, mixture: np.ndarray, rate: int,
                   options: SeparateOptions, progress: Progress) -> SpeechAnalysis:
    """Separate the voices of a clip and match them to its faces."""
    from avsplit.models.registry import load_speech_separator

    device = _device(options.device)
    model, model_id = load_speech_separator(options.weights, device)
    cfg = model.config
    mono = resample(mixture.mean(axis=0), rate, cfg.sample_rate)
    step = progress.stage("separating voices", 1)
    masks = separate_masks(model, mono, device=device)
    sources = masks_to_waves(model, mono, masks)
    step(1)
    tracks, face_ids = face_tracks(path, info, progress)
    step = progress.stage("matching voices to faces", 1)
    assignments = associate(sources[:-1], cfg.sample_rate, tracks)
    step(1)
    return SpeechAnalysis(masks, sources, cfg.sample_rate, cfg.hop, tracks, assignments,
                          [model_id, *face_ids])


def _track_entry(track: VisualTrack) -> dict:
    seen = track.seen
    t = track.timestamps
    ranges: list[list[float]] = []
    for i in np.flatnonzero(seen):
        if ranges and t[i] - ranges[-1][1] < 0.5:
            ranges[-1][1] = float(t[i])
        else:
            ranges.append([float(t[i]), float(t[i])])
    box = np.nanmean(track.boxes, axis=0) if seen.any() else np.full(4, np.nan)
    return {"track_id": track.track_id, "kind": track.kind, "label": track.label,
            "score": round(float(track.score), 3), "mean_box": [round(float(v), 4) for v in box],
            "seen_fraction": round(float(seen.mean()), 3) if len(seen) else 0.0,
            "seen_ranges": [[round(a, 3), round(b, 3)] for a, b in ranges]}


def _assignment_entry(a: Assignment) -> dict:
    return {"source": a.source_index, "onscreen": a.onscreen, "track_id": a.track_id,
            "confidence": round(a.confidence, 3), "energy_db": round(a.energy_db, 1),
            "reason": a.reason,
            "sync": [{"track_id": s.track_id, "r": round(s.r, 3), "lag_s": s.lag_s,
                      "z": round(s.z, 2), "frames": s.frames} for s in a.scores]}


def separate_file(path: Path, outdir: Path, options: SeparateOptions,
                  progress: Progress | None = None) -> Path:
    """Run ``avsplit separate`` on one input and write ``OUTDIR/<stem>/``.

    Returns:
        The path of the clip's ``manifest.json``.

    Raises:
        AvsplitError / MediaError: the input cannot be used in this mode (one-line message);
            nothing is left in ``outdir`` for this input.
    """
    progress = progress or NullProgress()
    path = Path(path)
    if options.mode not in MODES:
        raise AvsplitError(f"unknown mode '{options.mode}'; choose one of {', '.join(MODES)}")
    info = media.probe(path)
    if not info.has_audio:
        raise AvsplitError(f"{path} has no audio stream; there is nothing to separate")
    if options.mode == "instruments":
        raise AvsplitError("--mode instruments is not available in this version yet; "
                           "use --mode onscreen or --mode speakers")
    if not info.has_video:
        raise AvsplitError(f"{path} has no video stream; --mode {options.mode} needs faces to "
                           "look at (audio-only input works with --mode instruments --query)")
    mixture, rate = media.load_audio(path, stream=options.audio_stream, info=info)
    analysis = analyse_speech(path, info, mixture, rate, options, progress)
    video_from = path if options.video else None
    notes = []
    if not analysis.tracks:
        notes.append("no face visible: all sound is off-screen")
    elif not any(a.onscreen for a in analysis.assignments):
        notes.append("no separated voice is in sync with a visible face: all sound is off-screen")

    # groups of speech slots -> stems
    groups: dict[str, list[int]] = {}
    if options.mode == "onscreen":
        groups["onscreen"] = [a.source_index for a in analysis.assignments if a.onscreen]
    else:
        for tr in analysis.tracks:
            groups[f"speaker-{tr.track_id}"] = [a.source_index for a in analysis.assignments
                                               if a.onscreen and a.track_id == tr.track_id]
    advance = progress.stage("writing outputs", len(groups) + 1)
    stem_masks = {name: analysis.masks[idx].sum(axis=0, keepdims=True) if idx
                  else np.zeros_like(analysis.masks[:1]) for name, idx in groups.items()}
    with ClipOutput(outdir, path.stem, options.fmt) as out:
        written = np.zeros_like(mixture)
        for name, idx in groups.items():
            stem = apply_masks(mixture, rate, stem_masks[name], analysis.rate, analysis.hop)[0]
            written += stem
            track_ids = sorted({analysis.assignments[i].track_id for i in idx})
            scores = [_assignment_entry(analysis.assignments[i]) for i in idx]
            out.add_stem(name, stem, rate, video_from, label=name, track_ids=track_ids,
                         onscreen=True, sources=idx, scores=scores)
            advance(1)
        offscreen = mixture - written  # exactly the rest, so the stems sum to the mixture
        off_idx = [a.source_index for a in analysis.assignments if not a.onscreen]
        out.add_stem("offscreen", offscreen, rate, video_from, label="offscreen", track_ids=[],
                     onscreen=False, sources=off_idx + [len(analysis.assignments)],
                     scores=[_assignment_entry(analysis.assignments[i]) for i in off_idx])
        advance(1)
        manifest_path = out.write_manifest({
            "avsplit_version": __version__,
            "input": {"path": str(path), "duration": info.duration, "sample_rate": rate,
                      "channels": int(mixture.shape[0]), "samples": int(mixture.shape[1]),
                      "audio_stream": options.audio_stream,
                      "video": None if info.video is None else {
                          "width": info.video.width, "height": info.video.height,
                          "fps": info.video.fps, "codec": info.video.codec}},
            "mode": options.mode,
            "models": analysis.model_ids,
            "tracks": [_track_entry(t) for t in analysis.tracks],
            "sources": [_assignment_entry(a) for a in analysis.assignments],
            "notes": notes,
        })
    return manifest_path
