"""Writing a clip's results: stems, remuxed videos and ``manifest.json``, all or nothing.

The clip folder is written whole into a hidden temporary folder next to it and swapped in
only when every file is done: a failed input leaves nothing behind, and an existing folder is
replaced as a whole (no stale stems from an earlier run survive). Stems are written block by
block as :mod:`avsplit.apply` renders them, so memory does not grow with the duration.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from avsplit import media
from avsplit.errors import AvsplitError, MediaError
from avsplit.results import Result, Stem


class LevelMeter:
    """Frame levels of a signal fed block by block, for :func:`ranges_from_levels`.

    Args:
        rate: Hz; hop_s: frame length in seconds (50 ms).
    """

    def __init__(self, rate: int, hop_s: float = 0.05):
        self.hop = max(1, int(hop_s * rate))
        self.hop_s = hop_s
        self._rest = np.zeros(0, np.float64)
        self._db: list[np.ndarray] = []
        self.energy = 0.0

    def add(self, audio: np.ndarray) -> None:
        """Feed ``[channels, n]`` (or ``[n]``) float32."""
        mono = audio.mean(axis=0) if audio.ndim == 2 else audio
        self.energy += float((audio.astype(np.float64) ** 2).sum())
        x = np.concatenate([self._rest, mono.astype(np.float64)])
        n = len(x) // self.hop
        if n:
            frames = x[: n * self.hop].reshape(n, self.hop)
            self._db.append(10 * np.log10((frames ** 2).mean(axis=1) + 1e-12))
        self._rest = x[n * self.hop:]

    def levels(self) -> np.ndarray:
        """``[frames]`` dB of each complete frame."""
        return np.concatenate(self._db) if self._db else np.zeros(0)


def ranges_from_levels(db: np.ndarray, hop_s: float = 0.05, floor_db: float = -40.0,
                       min_gap_s: float = 0.3, min_len_s: float = 0.2) -> list[list[float]]:
    """Time ranges where frames are active (within ``floor_db`` of the loudest frame and above
    -70 dBFS); gaps shorter than ``min_gap_s`` merged, ranges shorter than ``min_len_s``
    dropped; ``[[start_s, end_s], ...]`` rounded to milliseconds."""
    if len(db) == 0:
        return []
    active = (db > db.max() + floor_db) & (db > -70)
    ranges: list[list[float]] = []
    for i in np.flatnonzero(active):
        start, end = i * hop_s, (i + 1) * hop_s
        if ranges and start - ranges[-1][1] < min_gap_s:
            ranges[-1][1] = end
        else:
            ranges.append([start, end])
    return [[round(s, 3), round(e, 3)] for s, e in ranges if e - s >= min_len_s]


def write_text_atomic(path: Path | str, text: str, what: str, hint: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a hidden temporary file renamed into place.

    Raises:
        AvsplitError: it cannot be written (``cannot write <what> to <path> (<reason>); <hint>``;
            nothing is left behind).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise AvsplitError(f"cannot write {what} to {path} ({e.strerror}); {hint}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def folder_name(path: Path, taken: set[str]) -> str:
    """The clip folder name of ``path`` in a run: its stem, or ``stem-2``, ``stem-3``, ... when an
    earlier input of the same run already took it (``taken`` is updated)."""
    stem = Path(path).stem or "clip"
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


class ClipWriter:
    """Writes one clip folder and swaps it in whole.

    Use as a context manager around the writing: files go to
    ``OUTDIR/.<folder>.partial-<pid>/``; :meth:`commit` writes the manifest and replaces
    ``OUTDIR/<folder>`` with it; leaving the block without a commit (an exception) removes
    the temporary folder and leaves any earlier ``OUTDIR/<folder>`` untouched.

    Args:
        outdir: the run's output folder (``-o``); folder: the clip folder's name.
        fmt: ``"wav"`` (32-bit float) or ``"flac"`` (24-bit, clipped to [-1, 1]).
    """

    def __init__(self, outdir: Path, folder: str, fmt: str = "wav"):
        if fmt not in media.AUDIO_FORMATS:
            raise MediaError(f"unknown audio format {fmt!r}; use 'wav' or 'flac'.")
        self.outdir = Path(outdir)
        self.final = self.outdir / folder
        self.tmp = self.outdir / f".{folder}.partial-{os.getpid()}"
        self.fmt = fmt
        self.committed = False

    def __enter__(self) -> "ClipWriter":
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        try:
            self.tmp.mkdir(parents=True)
        except OSError as e:
            raise MediaError(f"cannot create the output folder {self.outdir} ({e.strerror}); "
                             "check -o") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write_stems(self, stems: list[Stem], blocks: Iterable[tuple[int, np.ndarray, np.ndarray]],
                    rate: int, channels: int) -> None:
        """Write the stems' audio files from rendered blocks.

        Args:
            stems: ``G + 1`` stems; the first ``G`` get the rendered blocks, the last one the
                rest of the mixture (mixture minus the others, so the stems add up to it).
            blocks: ``(start, mixture [C, n], stems [G, C, n])`` as
                :func:`avsplit.apply.render_blocks` yields.

        Sets each stem's ``time_ranges``, ``energy_share`` and audio file name.
        """
        major, subtype = media.AUDIO_FORMATS[self.fmt]
        files = [sf.SoundFile(self.tmp / f"{st.name}.{self.fmt}", "w", rate, channels,
                              subtype=subtype, format=major) for st in stems]
        meters = [LevelMeter(rate) for _ in stems]
        mix_meter = LevelMeter(rate)
        try:
            for _, mix, rendered in blocks:
                rest = mix - rendered.sum(axis=0)
                for f, m, x in zip(files, meters, [*rendered, rest]):
                    f.write((np.clip(x, -1, 1) if self.fmt == "flac" else x).T.astype(np.float32))
                    m.add(x)
                mix_meter.add(mix)
        finally:
            for f in files:
                f.close()
        for st, m in zip(stems, meters):
            st.files = [f"{st.name}.{self.fmt}"]
            st.time_ranges = ranges_from_levels(m.levels())
            st.energy_share = m.energy / max(mix_meter.energy, 1e-12)

    def remux(self, stems: list[Stem], video_from: Path, video_stream_index: int) -> None:
        """Add ``<stem>.mp4`` per stem: ``video_from``'s video stream with the stem's audio."""
        for st in stems:
            video = self.tmp / f"{st.name}.mp4"
            media.remux(video_from, self.tmp / st.files[0], video, video_stream_index)
            st.files.append(video.name)

    def commit(self, result: Result) -> Path:
        """Write ``manifest.json`` and swap the folder in; returns the manifest's final path."""
        (self.tmp / "manifest.json").write_text(
            json.dumps(result.manifest(), indent=2, default=_jsonable) + "\n")
        old = None
        if self.final.exists():
            old = self.outdir / f".{self.final.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final / "manifest.json"


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
