"""``avsplit separate`` for one clip: check the input, let the mode plan its stems, write them.

Thin over the pieces (as demucs' ``separate.py`` over ``apply.py``): the :class:`~avsplit.clip.Clip`
decodes once, the :class:`~avsplit.engine.Engine` holds the models, the mode
(:mod:`avsplit.modes.speech` or :mod:`avsplit.modes.instruments`) returns a
:class:`~avsplit.modes.plan.Plan`, and :class:`~avsplit.outputs.ClipWriter` renders the stems
block by block into a temporary folder that replaces ``OUTDIR/<folder>`` whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avsplit.clip import Clip
from avsplit.engine import Engine
from avsplit.errors import AvsplitError
from avsplit.events import stem_events, write_csv
from avsplit.modes import instruments, speech
from avsplit.instruments import SILENT_SHARE
from avsplit.modes.plan import MODES, SeparateOptions
from avsplit.outputs import ClipWriter, OutputLayout
from avsplit.progress import NullProgress, Progress
from avsplit.report import write_report
from avsplit.results import Result


def check_input(clip: Clip, options: SeparateOptions) -> None:
    """Raise :class:`AvsplitError` (one line) when ``clip`` cannot be used in ``options.mode``."""
    path, info = clip.path, clip.info
    if options.mode not in MODES:
        raise AvsplitError(f"unknown mode '{options.mode}'; choose one of {', '.join(MODES)}")
    if not info.has_audio:
        raise AvsplitError(f"{path} has no audio stream; there is nothing to separate")
    if options.mode == "instruments":
        if not info.has_video and not options.query:
            raise AvsplitError(f"{path} has no video stream, so no instrument can be seen; "
                               "name the instruments with --query (e.g. --query violin,cello)")
    elif not info.has_video:
        raise AvsplitError(f"{path} has no video stream; --mode {options.mode} needs faces to "
                           "look at (audio-only input works with --mode instruments --query)")


SILENT_PEAK = 10 ** (-80 / 20)  # below -80 dBFS peak the input counts as silent
SHORT_DECODE_S = 0.5  # decoded audio this much shorter than the container says: warn


def input_notes(clip: Clip, options: SeparateOptions) -> list[str]:
    """What the user should know about the input itself (manifest notes, printed by the CLI):
    the audio stream chosen when there are several, decoded audio shorter than the container
    announces (a truncated file), and silent audio.

    Reads the decoded audio once in blocks (peak level); never raises for a readable clip.
    """
    info, notes = clip.info, []
    if len(info.audio) > 1:
        a = info.audio[options.audio_stream]
        notes.append(f"the input has {len(info.audio)} audio streams; used stream "
                     f"{options.audio_stream} ({a.codec}, {a.channels} ch, {a.sample_rate} Hz); "
                     "choose another with --audio-stream N")
    decoded = clip.samples / clip.rate
    if info.duration and decoded < info.duration - max(SHORT_DECODE_S, 0.05 * info.duration):
        notes.append(f"only {decoded:.1f} s of audio could be decoded although the file says it "
                     f"lasts {info.duration:.1f} s; the file may be truncated or damaged, and the "
                     "stems cover only the decoded part")
    peak, block = 0.0, 1 << 20
    for s in range(0, clip.samples, block):
        peak = max(peak, float(np.abs(clip.read(s, s + block)).max(initial=0.0)))
    if peak < SILENT_PEAK:
        notes.append("the input's audio is silent (peak below -80 dBFS): every stem is silent")
    return notes


def input_entry(clip: Clip, options: SeparateOptions) -> dict:
    """The manifest's ``input`` entry."""
    info = clip.info
    return {"path": str(clip.path), "duration": info.duration, "sample_rate": clip.rate,
            "channels": clip.channels, "samples": clip.samples,
            "audio_stream": options.audio_stream,
            "video": None if info.video is None else {
                "width": info.video.width, "height": info.video.height,
                "fps": info.video.fps, "codec": info.video.codec}}


def separate_clip(clip: Clip, engine: Engine, options: SeparateOptions, outdir: Path,
                  folder: str | None = None, progress: Progress | None = None,
                  layout: OutputLayout | None = None) -> Result:
    """Separate one clip and write ``OUTDIR/<folder>/`` (stems, remuxes, ``manifest.json``).

    Args:
        folder: the clip folder's name (default: the input's stem; the CLI gives ``clip-2``
            to a second input named ``clip``).
        layout: where each output goes (``--filename``); default
            ``OUTDIR/<folder>/<stem>.<ext>``.

    Returns:
        The :class:`~avsplit.results.Result` (what ``manifest.json`` holds).

    Raises:
        AvsplitError / MediaError: the input cannot be used in this mode, or writing failed
            (one-line message); nothing is left in ``outdir`` for this input, and an earlier
            folder of the same name is kept.
    """
    progress = progress or NullProgress()
    check_input(clip, options)
    if clip.samples == 0:  # decode now: a bad audio stream fails before any model runs
        raise AvsplitError(f"{clip.path}: audio stream {options.audio_stream} is empty; "
                           "there is nothing to separate")
    notes = input_notes(clip, options)
    mode = instruments if options.mode == "instruments" else speech
    plan = mode.plan(clip, engine, options, progress)
    plan.notes[:0] = notes
    layout = layout or OutputLayout(outdir, folder or clip.path.stem, mode=options.mode)
    folder = layout.stem
    result = Result(input_entry(clip, options), options.mode, folder, Path(outdir), plan.models,
                    [*plan.stems, plan.rest], plan.tracks, plan.sources, list(plan.notes),
                    dict(plan.extra), [e.row() for e in plan.events])
    advance = progress.stage("writing outputs", len(result.stems) + 1)
    with ClipWriter(layout, fmt=options.fmt) as writer:
        blocks = plan.separator.render(clip.read, clip.samples, clip.rate, plan.masks,
                                       plan.weights)
        writer.write_stems(result.stems, blocks, clip.rate, clip.channels)
        advance(1)
        for st in result.stems:
            if "silent" in st.fields and options.mode != "instruments":
                st.fields["silent"] = bool(st.fields["silent"] or st.energy_share < SILENT_SHARE)
        if options.video and clip.has_video:
            writer.remux(result.stems, clip.path, clip.info.video.index)
        advance(len(result.stems))
        if options.mode == "instruments":  # its timeline comes from the written stems
            result.events = [e.row() for e in stem_events(result.stems, clip.samples / clip.rate)]
        if options.report:
            write_report(result, writer.tmp, clip)
            result.extra["report"] = "report.html"
        if options.events is not None:
            result.extra["events_csv"] = str(write_csv(result.events, options.events))
        writer.commit(result)
    return result
