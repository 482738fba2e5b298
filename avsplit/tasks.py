"""The commands as batch tasks (:class:`avsplit.batch.Task`): ``separate``, ``localize``, ``sync``.

Each task holds only settings (it is pickled to worker processes); its :meth:`run` opens one
input, does the command's work with the worker's :class:`~avsplit.engine.Engine` and returns the
fields of the input's result line.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from avsplit.batch import Input, Job, Task
from avsplit.errors import AvsplitError, MediaError
from avsplit.outputs import (DEFAULT_TEMPLATE, assign_layouts, manifest_complete,
                             remove_stale_partials, safe_component, write_error)
from avsplit.progress import Progress

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi")


def check_output_folder(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written in it.

    Raises:
        MediaError: it is a file, or cannot be created or written (read-only, no space);
            one line saying what and where.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise MediaError(f"output folder {folder} is a file, not a folder; give a folder "
                         "with -o")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".avsplit-write-test-")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise write_error(e, folder) from None


def check_weights_file(weights: Path | None) -> None:
    """A ``--weights`` file must exist before any input runs (what it holds is checked when
    it loads: :func:`avsplit.models.registry.load_network`).

    Raises:
        AvsplitError: it does not exist or is a folder.
    """
    if weights is not None and not Path(weights).is_file():
        what = "is a folder" if Path(weights).is_dir() else "does not exist"
        raise AvsplitError(f"--weights {weights} {what}; give a separator checkpoint file")


def _resolved_device(device: str) -> str:
    from avsplit.engine import resolve_device

    return resolve_device(device)


@dataclass
class SeparateTask(Task):
    """``avsplit separate``: one clip folder (or ``--filename`` layout) per input.

    Args:
        options: :class:`avsplit.modes.plan.SeparateOptions`.
        outdir: ``-o``; template: ``--filename`` (checked); device: ``auto``/``cpu``/``cuda``.
        events: ``--events FILE.csv`` (``FILE-<clip>.csv`` per input when there are several,
            :func:`avsplit.events.events_path`).
        several: set by :meth:`assign` (the batch has more than one input).
    """

    options: object
    outdir: Path
    template: str = DEFAULT_TEMPLATE
    device: str = "auto"
    events: Path | None = None
    command = "separate"
    several: bool = False

    def prepare(self) -> None:
        check_output_folder(self.outdir)
        check_weights_file(self.options.weights)
        remove_stale_partials(self.outdir)
        self.device = _resolved_device(self.device)

    def assign(self, inputs: list[Input]) -> list[Job]:
        self.several = len(inputs) > 1
        layouts = assign_layouts([x.path for x in inputs], self.outdir, self.template,
                                 self.options.mode, [x.parent for x in inputs])
        return [Job(i, x, lay) for i, (x, lay) in enumerate(zip(inputs, layouts))]

    def existing(self, job: Job) -> tuple[Path | None, bool]:
        manifest = job.output.manifest
        if manifest.exists():
            return manifest, manifest_complete(manifest)
        return None, False

    def run(self, engine, job: Job, progress: Progress) -> dict:
        from dataclasses import replace

        from avsplit.clip import Clip
        from avsplit.events import events_path
        from avsplit.separate import separate_clip

        options = self.options
        if self.events is not None:
            options = replace(options, events=events_path(self.events, job.output.stem,
                                                          self.several))
        with Clip(job.input.path, options.audio_stream) as clip:
            result = separate_clip(clip, engine, options, self.outdir, progress=progress,
                                   layout=job.output)
        summary = result.summary()
        for key in ("input", "ok", "status"):
            summary.pop(key, None)
        return summary


def _single_output(out: Path | None, n_inputs: int) -> bool:
    """Whether ``-o`` names one output file (one input and a video suffix) rather than a
    folder."""
    return out is not None and n_inputs == 1 and Path(out).suffix.lower() in VIDEO_SUFFIXES


def _video_outputs(inputs: list[Input], out: Path | None, suffix: str) -> list[Path]:
    """Output video paths: ``-o FILE`` for one input; inside the ``-o`` folder (or next to
    each input without ``-o``) as ``<stem><suffix>.mp4``, ``<stem>-2<suffix>.mp4`` for a
    repeated name."""
    if _single_output(out, len(inputs)):
        return [Path(out)]
    taken: set[Path] = set()
    paths = []
    for x in inputs:
        folder = Path(out) / x.parent if out is not None else x.path.parent
        stem, k = safe_component(x.path.stem), 1
        p = folder / f"{stem}{suffix}.mp4"
        while p in taken:
            k += 1
            p = folder / f"{stem}-{k}{suffix}.mp4"
        taken.add(p)
        paths.append(p)
    return paths


class VideoOutputTask(Task):
    """A task whose optional output per input is one video file next to ``-o`` (the
    overlay, the fixed copy): subclasses give ``suffix`` and :meth:`writes`."""

    suffix = ""
    out: Path | None = None

    def writes(self) -> bool:
        """Whether this run writes the video output."""
        raise NotImplementedError

    def assign(self, inputs: list[Input]) -> list[Job]:
        if not self.writes():
            return [Job(i, x) for i, x in enumerate(inputs)]
        outs = _video_outputs(inputs, self.out, self.suffix)
        for folder in {p.parent for p in outs}:
            check_output_folder(folder)
        return [Job(i, x, o) for i, (x, o) in enumerate(zip(inputs, outs))]

    def existing(self, job: Job) -> tuple[Path | None, bool]:
        if job.output is not None and Path(job.output).exists():
            return Path(job.output), True
        return None, False


@dataclass
class LocalizeTask(VideoOutputTask):
    """``avsplit localize``: per-frame sound positions, optionally an overlay video per input.

    Args:
        overlay: write overlays; out: ``-o`` (a file for one input, else a folder, created
            when missing); weights: instrument separator checkpoint; audio_stream; device;
        report: write ``<input>_report.html`` next to the input.
    """

    overlay: bool = False
    out: Path | None = None
    weights: Path | None = None
    audio_stream: int = 0
    device: str = "auto"
    report: bool = False
    command = "localize"
    suffix = "_overlay"

    def prepare(self) -> None:
        check_weights_file(self.weights)
        self.device = _resolved_device(self.device)

    def writes(self) -> bool:
        return self.overlay

    def run(self, engine, job: Job, progress: Progress) -> dict:
        from avsplit.localize import localize_file

        path = Path(job.input.path)
        result = localize_file(path, overlay_path=job.output,
                               audio_stream=self.audio_stream, progress=progress,
                               weights=self.weights, engine=engine,
                               report_path=path.with_name(f"{path.stem}_report.html")
                               if self.report else None)
        result = dict(result)
        result.pop("input", None)
        result["outputs"] = [result[k] for k in ("overlay", "report") if result.get(k)]
        return result


@dataclass
class SyncTask(VideoOutputTask):
    """``avsplit sync``: the audio-to-video offset of each input, optionally a fixed copy.

    Args:
        fix: write a copy with the audio shifted into sync; out: ``-o`` (a file for one
            input, else a folder); audio_stream.
    """

    fix: bool = False
    out: Path | None = None
    audio_stream: int = 0
    device: str = "cpu"
    command = "sync"
    suffix = "_synced"

    def writes(self) -> bool:
        return self.fix

    def run(self, engine, job: Job, progress: Progress) -> dict:
        from avsplit.sync import sync_input

        result = dict(sync_input(job.input.path, engine, self.audio_stream,
                                 job.output if self.fix else None, progress))
        for key in ("input", "status", "error"):
            result.pop(key, None)
        result["outputs"] = [result["fixed"]] if result.get("fixed") else []
        return result
