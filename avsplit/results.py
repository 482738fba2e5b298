"""Typed results of a run: one :class:`Result` per clip, one :class:`Stem` per written stem.

A :class:`Result` serialises to the clip's ``manifest.json`` (:meth:`Result.manifest`, with
``schema_version``) and gives the CLI's per-input summary (:meth:`Result.summary`), so the two
never disagree and nobody re-reads the file.

Manifest fields (schema 3; schema 2 had the same fields without ``events``, schema 1 also
without ``schema_version``, ``folder`` and ``stems``): ``avsplit_version``, ``input`` (path, duration, sample_rate,
channels, samples, audio_stream, video), ``mode``, ``folder`` (the clip folder's name:
``clip``, or ``clip-2`` when another input of the same run had that name), ``models``
(name, file, sha256), ``tracks``, ``sources``, ``notes``, mode extras (``query``,
``instruments``; ``report`` = ``report.html`` and ``events_csv`` = the ``--events`` file
when written), ``events`` (the audio-visual event timeline, :mod:`avsplit.events`: rows
``start_s``, ``end_s``, ``track``, ``label``, ``audible``, ``visible``, ``score``), ``stems``
(one entry per stem) and ``files`` (one entry per written file:
``file``, ``kind`` audio|video, ``stem``, ``label``, ``track_ids``, ``onscreen``, ``scores``,
``time_ranges`` and the mode's fields such as ``silent``, ``box``, ``visual_confidence``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 3


@dataclass
class Stem:
    """One stem of a clip.

    Attributes:
        name: file stem (``onscreen``, ``speaker-0``, ``violin-2``, ``residual``).
        label: what it holds (``onscreen``, ``offscreen``, ``speaker-0``, ``violin``).
        onscreen: whether the sound is judged to come from something visible.
        track_ids: visual tracks it belongs to; sources: separator slots it is made of.
        scores: per-source association scores for the manifest.
        fields: mode-specific manifest fields (``silent``, ``box``, ``visual_confidence``, ...).
        files: written file names (set by the writer); time_ranges: ``[[start_s, end_s]]``
            where it is audible (set by the writer); energy_share: its share of the
            mixture's energy, 0..1 (set by the writer).
    """

    name: str
    label: str
    onscreen: bool
    track_ids: list[int] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    fields: dict = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    time_ranges: list[list[float]] = field(default_factory=list)
    energy_share: float = 0.0

    def entry(self) -> dict:
        """The manifest fields every file of this stem carries."""
        return {"stem": self.name, "label": self.label, "track_ids": self.track_ids,
                "onscreen": self.onscreen, "sources": self.sources, "scores": self.scores,
                **self.fields, "time_ranges": self.time_ranges}


@dataclass
class Result:
    """What one run of ``avsplit separate`` made of one input.

    Attributes:
        input: the ``input`` manifest entry; mode: the mode; folder: the clip folder's name.
        outdir: where the clip folder is (``OUTDIR/<folder>``).
        models: model ids used; tracks / sources: manifest entries of visual tracks and
            separated sources; notes: what the user should know; extra: mode-specific
            top-level fields (``query``, ``instruments``).
        stems: the stems, in writing order (the last one takes the rest of the mixture).
        layout: the :class:`avsplit.outputs.OutputLayout` the files were written to (set by
            the writer; file names in the manifest are relative to the manifest's folder).
        events: the event timeline rows (:meth:`avsplit.events.Event.row` dicts).
    """

    input: dict
    mode: str
    folder: str
    outdir: Path
    models: list[dict]
    stems: list[Stem]
    tracks: list[dict] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    layout: object = None

    @property
    def path(self) -> Path:
        """The clip folder (the folder of ``manifest.json``)."""
        if self.layout is not None:
            return self.layout.folder
        return Path(self.outdir) / self.folder

    @property
    def manifest_path(self) -> Path:
        if self.layout is not None:
            return self.layout.manifest
        return self.path / "manifest.json"

    def files(self) -> list[dict]:
        """One manifest entry per written file."""
        out = []
        for st in self.stems:
            for f in st.files:
                out.append({"file": f, "kind": "video" if f.endswith(".mp4") else "audio",
                            **st.entry()})
        return out

    def manifest(self) -> dict:
        """The ``manifest.json`` content (JSON-ready)."""
        from avsplit import __version__

        return {"schema_version": SCHEMA_VERSION, "avsplit_version": __version__,
                "input": self.input, "mode": self.mode, "folder": self.folder,
                "models": self.models, "tracks": self.tracks, "sources": self.sources,
                **self.extra, "notes": list(dict.fromkeys(self.notes)), "events": self.events,
                "stems": [{"name": st.name, "label": st.label, "onscreen": st.onscreen,
                           "track_ids": st.track_ids, "energy_share": round(st.energy_share, 4),
                           **{k: v for k, v in st.fields.items() if k == "silent"}}
                          for st in self.stems],
                "files": self.files()}

    def summary(self) -> dict:
        """The CLI's JSON summary of this input (``outputs`` also lists the report and the
        events CSV when written)."""
        extra = ([str(self.path / self.extra["report"])] if "report" in self.extra else []) + \
            ([self.extra["events_csv"]] if "events_csv" in self.extra else [])
        return {"input": self.input["path"], "ok": True, "status": "done",
                "outdir": str(self.path), "manifest": str(self.manifest_path),
                "files": [f["file"] for f in self.files()], "outputs": [
                    *(os.path.normpath(self.path / f["file"]) for f in self.files()),
                    str(self.manifest_path)] + extra,
                "notes": list(dict.fromkeys(self.notes))}
