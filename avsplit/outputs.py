"""Writing a clip's results: stems, remuxed videos and ``manifest.json``, all or nothing.

Files are written into a hidden temporary folder next to the clip's output folder and moved
into place only when every file of the clip is done, so a failed input leaves no partial
output behind.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from avsplit import media


def activity_ranges(audio: np.ndarray, rate: int, floor_db: float = -40.0, hop_s: float = 0.05,
                    min_gap_s: float = 0.3, min_len_s: float = 0.2) -> list[list[float]]:
    """Time ranges where a stem is audible.

    Args:
        audio: ``[channels, samples]`` float32.
        floor_db: a 50 ms frame is active when its RMS is within this many dB of the
            loudest frame and above -70 dBFS.

    Returns:
        ``[[start_s, end_s], ...]``, gaps shorter than ``min_gap_s`` merged, ranges shorter
        than ``min_len_s`` dropped; rounded to milliseconds.
    """
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    hop = max(1, int(hop_s * rate))
    n = len(mono) // hop
    if n == 0:
        return []
    frames = mono[: n * hop].reshape(n, hop)
    db = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    active = (db > db.max() + floor_db) & (db > -70)
    ranges: list[list[float]] = []
    for i in np.flatnonzero(active):
        start, end = i * hop_s, (i + 1) * hop_s
        if ranges and start - ranges[-1][1] < min_gap_s:
            ranges[-1][1] = end
        else:
            ranges.append([start, end])
    return [[round(s, 3), round(e, 3)] for s, e in ranges if e - s >= min_len_s]


class ClipOutput:
    """Collects one clip's output files and commits them atomically.

    Use as a context manager: files go to ``OUTDIR/.<name>.partial-<pid>/`` and are moved to
    ``OUTDIR/<name>/`` on success; on an exception the temporary folder is removed.

    Args:
        outdir: the run's output folder (``-o``).
        name: the clip's folder name (the input file's stem).
        fmt: ``"wav"`` or ``"flac"``.
    """

    def __init__(self, outdir: Path, name: str, fmt: str = "wav"):
        self.final = Path(outdir) / name
        self.tmp = Path(outdir) / f".{name}.partial-{os.getpid()}"
        self.fmt = fmt
        self.entries: list[dict] = []

    def __enter__(self) -> "ClipOutput":
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        self.final.mkdir(parents=True, exist_ok=True)
        for f in sorted(self.tmp.iterdir()):
            os.replace(f, self.final / f.name)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def add_stem(self, stem: str, audio: np.ndarray, rate: int, video_from: Path | None,
                 **fields) -> list[dict]:
        """Write ``<stem>.<fmt>`` (and ``<stem>.mp4`` with ``video_from``'s video stream).

        ``fields`` (label, track_ids, onscreen, scores, ...) go into each manifest entry,
        with the stem's audible ``time_ranges``. Returns the entries added.
        """
        audio_file = self.tmp / f"{stem}.{self.fmt}"
        media.write_audio(audio_file, audio, rate, self.fmt)
        base = {"stem": stem, **fields, "time_ranges": activity_ranges(audio, rate)}
        added = [{"file": audio_file.name, "kind": "audio", **base}]
        if video_from is not None:
            video_file = self.tmp / f"{stem}.mp4"
            media.remux(video_from, audio_file, video_file)
            added.append({"file": video_file.name, "kind": "video", **base})
        self.entries += added
        return added

    def write_manifest(self, manifest: dict) -> Path:
        """Write ``manifest.json`` (with ``files`` = the entries so far); returns its final path."""
        manifest = {**manifest, "files": self.entries}
        path = self.tmp / "manifest.json"
        path.write_text(json.dumps(manifest, indent=2, default=_jsonable) + "\n")
        return self.final / "manifest.json"


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
