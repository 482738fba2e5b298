"""What every mode hands to the writer: the options, and a :class:`Plan` of stems from masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avsplit.results import Stem
from avsplit.structures import VisualTrack

MODES = ("onscreen", "speakers", "instruments")


@dataclass
class SeparateOptions:
    """Settings of ``avsplit separate`` (see the CLI for their meaning)."""

    mode: str = "onscreen"
    fmt: str = "wav"
    video: bool = True
    audio_stream: int = 0
    query: list[str] = field(default_factory=list)
    weights: Path | None = None
    enhance: bool = True
    events: Path | None = None  # --events FILE.csv (this input's path, see avsplit.events.events_path)
    report: bool = False  # --report: report.html in the clip folder
    separator: str = "combined"  # --separator (instruments): combined | net | nmf


@dataclass
class Plan:
    """The stems of one clip as weighted sums of a separator's masks.

    Attributes:
        separator: the :class:`avsplit.separator.Separator` the masks come from.
        masks: ``[slots, bins, frames]`` at the separator's rate.
        stems: the stems made from masks; weights: ``[len(stems), slots]`` (stem ``g`` gets
            ``sum_s weights[g, s] * masks[s]``).
        rest: the last stem: the mixture minus all others (``offscreen``, ``residual``).
        models, tracks, sources, notes, extra: for the :class:`avsplit.results.Result`.
        events: the audio-visual event timeline (:class:`avsplit.events.Event` rows), when the
            mode knows it before writing (the instruments mode's comes from the written stems).
    """

    separator: object
    masks: np.ndarray
    stems: list[Stem]
    weights: np.ndarray
    rest: Stem
    models: list[dict]
    tracks: list[dict] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    events: list = field(default_factory=list)


def track_entry(track: VisualTrack) -> dict:
    """Manifest entry of a visual track: id, kind, label, score, mean box, when it is seen."""
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
