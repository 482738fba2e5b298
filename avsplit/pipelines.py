"""The modes of ``avsplit separate``, built from media -> models/vision -> association -> outputs."""

from __future__ import annotations

import dataclasses
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
        if not info.has_video and not options.query:
            raise AvsplitError(f"{path} has no video stream, so no instrument can be seen; "
                               "name the instruments with --query (e.g. --query violin,cello)")
    elif not info.has_video:
        raise AvsplitError(f"{path} has no video stream; --mode {options.mode} needs faces to "
                           "look at (audio-only input works with --mode instruments --query)")
    mixture, rate = media.load_audio(path, stream=options.audio_stream, info=info)
    if options.mode == "instruments":
        return _separate_instruments(path, info, mixture, rate, outdir, options, progress)
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
            "input": _input_entry(path, info, mixture, rate, options),
            "mode": options.mode,
            "models": analysis.model_ids,
            "tracks": [_track_entry(t) for t in analysis.tracks],
            "sources": [_assignment_entry(a) for a in analysis.assignments],
            "notes": notes,
        })
    return manifest_path


def _input_entry(path: Path, info: MediaInfo, mixture: np.ndarray, rate: int,
                 options: SeparateOptions) -> dict:
    return {"path": str(path), "duration": info.duration, "sample_rate": rate,
            "channels": int(mixture.shape[0]), "samples": int(mixture.shape[1]),
            "audio_stream": options.audio_stream,
            "video": None if info.video is None else {
                "width": info.video.width, "height": info.video.height,
                "fps": info.video.fps, "codec": info.video.codec}}


# --- instruments --------------------------------------------------------------------------

RECOGNITION_FRAMES = 8
SILENT_SHARE = 0.01   # a stem with < 1 % of the mixture's energy (-20 dB) is called silent
# visual confidence under which the audio may change a label within its family; low, because
# the separator's label scores confuse relatives on real recordings (on the av/music clips it
# heard a violin as a cello and an accordion as an organ), so only a barely-sure picture yields
RELABEL_BELOW = 0.25
FAMILIES = (
    ("acoustic_guitar", "electric_guitar", "banjo", "harp"),
    ("piano", "organ", "accordion", "marimba", "xylophone", "harmonica"),
    ("violin", "viola", "cello", "double_bass", "erhu"),
    ("trumpet", "trombone", "french_horn", "tuba"),
    ("flute", "oboe", "clarinet", "saxophone", "bassoon"),
)


@dataclass
class InstrumentStem:
    """One stem to write in ``--mode instruments``.

    Attributes:
        name: file stem (``violin``, ``violin-2``); label: instrument label.
        mask_index: row of the mask array this stem comes from; share: split of that mask
            between instances of the same label (1 / instances).
        box: ``[x0, y0, x1, y1]`` in pixels of the video frame, or None (``--query``).
        visual_confidence: 0..1 from the picture, None with ``--query``.
        relabelled_from: the picture's label when the audio changed it to a near relative.
    """

    name: str
    label: str
    mask_index: int
    share: float = 1.0
    box: list[float] | None = None
    visual_confidence: float | None = None
    relabelled_from: str | None = None


def recognise_instruments(path: Path, info: MediaInfo, device: str, progress: Progress):
    """Instruments seen in a video: a few frames spread over the clip through
    :class:`avsplit.vision.instruments.InstrumentRecognizer`.

    Returns ``(detections, model_ids)``.
    """
    from avsplit.models.registry import sha256_of, weights_path
    from avsplit.vision.instruments import InstrumentRecognizer

    advance = progress.stage("recognising instruments", 1)
    duration = info.video.duration or info.duration or 1.0
    fps = min(2.0, RECOGNITION_FRAMES / max(duration, 0.1))
    frames = [f for _, f in media.iter_frames(path, max_side=ANALYSIS_MAX_SIDE, fps=fps)]
    frames = frames[:RECOGNITION_FRAMES]
    detections = InstrumentRecognizer(device=device).recognize(frames) if frames else []
    if detections and info.video.width:  # boxes in pixels of the original picture
        scale = info.video.width / frames[0].shape[1]
        detections = [dataclasses.replace(d, box=tuple(float(v) * scale for v in d.box))
                      for d in detections]
    advance(1)
    file = weights_path("instrument-recognizer")
    return detections, [{"name": "instrument-recognizer", "file": file.name,
                         "sha256": sha256_of(file)}]


def _energy_share(masks: np.ndarray, power: np.ndarray) -> np.ndarray:
    """Share of the mixture's energy under each mask: ``[Q, F, T]`` masks, ``[F, T]`` power."""
    return (masks ** 2 * power).sum(axis=(1, 2)) / max(float(power.sum()), 1e-12)


def plan_instrument_stems(detections, audio_share) -> tuple[list[InstrumentStem], list[str]]:
    """Turn picture detections into stems, using the audio to settle near-confusions.

    A detection the picture is unsure of (confidence < :data:`RELABEL_BELOW`) whose label the
    separator hears little of (< 4 x the silent share) while a member of the same family
    (guitar/banjo, piano/organ/accordion, ...) is clearly heard (> 10 %) is relabelled to that
    relative (DMMAN's matching of visual and audio evidence). A confident detection keeps its
    label: the separator's label scores are less reliable than a sure picture.

    Args:
        detections: ``InstrumentDetection`` s from the recogniser (label, box, confidence).
        audio_share: ``label -> share of the mixture's energy`` (0..1) for every label asked.

    Returns:
        ``(stems, labels)``: the stems to write and the distinct labels whose masks they need.
    """
    stems: list[InstrumentStem] = []
    labels: list[str] = []
    named: dict[str, int] = {}
    for det in detections:
        label, relabelled = det.label, None
        family = next((f for f in FAMILIES if label in f), (label,))
        best = max(family, key=lambda lab: audio_share.get(lab, 0.0))
        if (det.confidence < RELABEL_BELOW and audio_share.get(label, 0.0) < 4 * SILENT_SHARE
                and best != label and audio_share.get(best, 0.0) > 0.1):
            label, relabelled = best, det.label
        if label not in labels:
            labels.append(label)
        named[label] = named.get(label, 0) + 1
        name = label if named[label] == 1 else f"{label}-{named[label]}"
        stems.append(InstrumentStem(name, label, labels.index(label), 1.0,
                                    [round(float(v), 1) for v in det.box],
                                    round(float(det.confidence), 3), relabelled))
    for st in stems:
        st.share = 1.0 / named[st.label]
    return stems, labels


@dataclass
class InstrumentAnalysis:
    """What the picture and the separator found in one clip (``--mode instruments``).

    Attributes:
        stems: the stems to write, in order (see :class:`InstrumentStem`).
        labels: the distinct labels; ``masks[i]`` belongs to ``labels[i]``.
        masks: ``[len(labels), bins, frames]`` model-rate masks, scaled so that their sum
            never exceeds one (what no instrument takes is the residual).
        share: ``[len(labels)]`` share of the mixture's energy under each mask (0..1).
        rate, hop, n_fft: the separator's sample rate (Hz), STFT hop and window (samples).
        detections: the recogniser's detections (empty with ``--query``).
        model_ids: ``{"name", "file", "sha256"}`` of the models used.
        notes: what the manifest should tell the user.
    """

    stems: list[InstrumentStem]
    labels: list[str]
    masks: np.ndarray
    share: np.ndarray
    rate: int
    hop: int
    n_fft: int
    detections: list
    model_ids: list[dict]
    notes: list[str]


def analyse_instruments(path: Path, info: MediaInfo, mixture: np.ndarray, rate: int,
                        options: SeparateOptions, progress: Progress) -> InstrumentAnalysis:
    """Find the instruments of a clip (picture + audio, or ``options.query``) and their masks.

    Raises:
        AvsplitError: an unknown ``--query`` label.
    """
    import torch

    from avsplit.apply import limit_total, query_masks
    from avsplit.audio import stft
    from avsplit.labels import normalize_label
    from avsplit.models.registry import load_instrument_separator

    device = _device(options.device)
    model, model_id = load_instrument_separator(options.weights, device)
    cfg = model.config
    model_ids = [model_id]
    notes: list[str] = []
    detections: list = []
    mono = resample(mixture.mean(axis=0), rate, cfg.sample_rate)
    power = (stft(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)), cfg.n_fft,
                  cfg.hop).abs() ** 2).numpy()
    if options.query:
        try:
            labels = list(dict.fromkeys(normalize_label(q) for q in options.query))
        except ValueError as exc:
            raise AvsplitError(str(exc)) from None
        stems = [InstrumentStem(lab, lab, i) for i, lab in enumerate(labels)]
        step = progress.stage("separating instruments", 1)
        masks = query_masks(model, mixture, rate, labels, device=device)
        step(1)
    else:
        detections, ids = recognise_instruments(path, info, device, progress)
        model_ids += ids
        step = progress.stage("separating instruments", 1)
        candidates = list(dict.fromkeys(lab for d in detections for f in FAMILIES + ((d.label,),)
                                        if d.label in f for lab in f))
        cand_masks = (query_masks(model, mixture, rate, candidates, device=device)
                      if candidates else np.zeros((0,) + power.shape, np.float32))
        share = dict(zip(candidates, _energy_share(cand_masks, power)))
        stems, labels = plan_instrument_stems(detections, share)
        masks = (cand_masks[[candidates.index(lab) for lab in labels]] if labels
                 else cand_masks[:0])
        step(1)
        if not detections:
            notes.append("no instrument recognised in the picture: all sound is in the residual "
                         "(name the instruments with --query to separate them)")
        for st in stems:
            if st.relabelled_from:
                notes.append(f"{st.name}: seen as {st.relabelled_from}, heard as {st.label}")
    # masks of different labels may overlap; scale them so that they never take more than the
    # whole mixture, and the residual is what no instrument took
    masks = limit_total(masks)
    share = _energy_share(masks, power) if len(masks) else np.zeros(0)
    return InstrumentAnalysis(stems, labels, masks, share, cfg.sample_rate, cfg.hop, cfg.n_fft,
                              detections, model_ids, notes)


def _separate_instruments(path: Path, info: MediaInfo, mixture: np.ndarray, rate: int,
                          outdir: Path, options: SeparateOptions, progress: Progress) -> Path:
    """``--mode instruments``: one stem per seen (or asked-for) instrument + ``residual``."""
    a = analyse_instruments(path, info, mixture, rate, options, progress)
    stems, share, notes = a.stems, a.share, list(a.notes)
    audio = (apply_masks(mixture, rate, a.masks, a.rate, a.hop, window_s=a.n_fft / a.rate)
             if len(a.masks) else np.zeros((0,) + mixture.shape, np.float32))
    video_from = path if (options.video and info.has_video) else None
    advance = progress.stage("writing outputs", len(stems) + 1)
    with ClipOutput(outdir, path.stem, options.fmt) as out:
        written = np.zeros_like(mixture)
        for st in stems:
            wave = audio[st.mask_index] * st.share
            written += wave
            silent = bool(share[st.mask_index] * st.share < SILENT_SHARE)
            same = [o.name for o in stems if o.label == st.label and o is not st]
            out.add_stem(st.name, wave, rate, video_from, label=st.label, track_ids=[],
                         onscreen=st.box is not None, box=st.box,
                         visual_confidence=st.visual_confidence,
                         audio_confidence=round(float(min(1.0, share[st.mask_index] * st.share)), 4),
                         silent=silent, shared_with=same, relabelled_from=st.relabelled_from,
                         scores=[])
            if silent:
                how = "seen" if st.box is not None else "asked for"
                notes.append(f"{st.name}: {how} but silent (the separator hears almost none of it)")
            if same:
                notes.append(f"{st.name}: the separator cannot tell instruments of one kind "
                             f"apart; the {st.label} sound is split evenly between "
                             f"{', '.join(sorted([st.name, *same]))}")
            advance(1)
        out.add_stem("residual", mixture - written, rate, video_from, label="residual",
                     track_ids=[], onscreen=False, scores=[])
        advance(1)
        return out.write_manifest({
            "avsplit_version": __version__,
            "input": _input_entry(path, info, mixture, rate, options),
            "mode": options.mode,
            "query": a.labels if options.query else None,
            "models": a.model_ids,
            "instruments": [{"name": st.name, "label": st.label, "box": st.box,
                             "visual_confidence": st.visual_confidence,
                             "audio_confidence": round(float(share[st.mask_index] * st.share), 4)}
                            for st in stems],
            "notes": list(dict.fromkeys(notes)),
        })
