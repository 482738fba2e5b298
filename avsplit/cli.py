"""The ``avsplit`` command line (Typer). Parsing, progress and exit codes only.

Exit codes: 0 all inputs done, 1 any input failed (the others still run), 2 usage error.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from avsplit import __version__
from avsplit.errors import AvsplitError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Separate the sounds of a video by what is seen in it, and show where "
                       "in the picture the sound comes from.")
stderr = Console(stderr=True)


class Mode(str, Enum):
    onscreen = "onscreen"
    speakers = "speakers"
    instruments = "instruments"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Format(str, Enum):
    wav = "wav"
    flac = "flac"


class RichProgress:
    """Rich progress bars on stderr, one per stage (see :class:`avsplit.progress.Progress`)."""

    def __init__(self, progress: Progress | None, prefix: str):
        self.progress = progress
        self.prefix = prefix

    def stage(self, description: str, total: float | None = None) -> Callable[[float], None]:
        if self.progress is None:
            return lambda n=1: None
        task = self.progress.add_task(f"{self.prefix}: {description}", total=total)

        def advance(n: float = 1) -> None:
            self.progress.advance(task, n)

        return advance


@contextmanager
def _progress(quiet: bool):
    if quiet:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=stderr, transient=False) as p:
        yield p


def _fail(input_path, exc: BaseException, debug: bool) -> str:
    """Print one line for a failed input (a traceback too with --debug); return the message."""
    if isinstance(exc, AvsplitError):
        message = str(exc)
    else:
        message = f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it"
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    where = "" if message.startswith(str(input_path)) else f"{input_path}: "
    stderr.print(f"avsplit: error: {where}{message}", markup=False, highlight=False,
                 soft_wrap=True)
    return message


def _failed(path: Path, message: str, seconds: float) -> dict:
    """The ``--json`` summary entry of an input that failed."""
    return {"input": str(path), "path": str(path), "ok": False, "status": "failed",
            "error": message, "outputs": [], "seconds": round(seconds, 3)}


@app.command()
def separate(
    inputs: list[Path] = typer.Argument(..., help="Video (or audio) files to separate."),
    outdir: Path = typer.Option(Path("separated"), "-o", "--out",
                                help="Output folder; results of clip.mp4 go to OUTDIR/clip/."),
    mode: Optional[Mode] = typer.Option(None, help="onscreen (default): on-screen vs off-screen sound; "
                                        "speakers: one voice per visible face; instruments: one stem "
                                        "per instrument seen (or asked for with --query)."),
    query: Optional[str] = typer.Option(None, help="Comma-separated instruments to separate instead of "
                                        "recognising them in the picture, e.g. violin,cello (implies "
                                        "--mode instruments; works on audio-only input; "
                                        "`avsplit models` lists the labels)."),
    device: Device = typer.Option(Device.auto, help="Where the networks run."),
    fmt: Format = typer.Option(Format.wav, "--format", help="Audio format of the stems."),
    no_video: bool = typer.Option(False, "--no-video", help="Do not write remuxed .mp4 files."),
    audio_stream: int = typer.Option(0, "--audio-stream", min=0,
                                     help="Which audio stream of the input to use (0 = first)."),
    weights: Optional[Path] = typer.Option(None, "--weights",
                                           help="Separator checkpoint to use instead of the bundled one "
                                           "(speech for onscreen/speakers, instruments for instruments)."),
    no_enhance: bool = typer.Option(False, "--no-enhance",
                                    help="onscreen/speakers: let our separator's background slot "
                                    "decide speech vs. background instead of the pretrained "
                                    "speech enhancer (DTLN)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    events: Optional[Path] = typer.Option(None, "--events", metavar="FILE.csv",
                                          help="Write the audio-visual event timeline (start_s,end_s,"
                                          "track,label,audible,visible,score) to FILE.csv "
                                          "(FILE-<clip>.csv per input when there are several)."),
    report: bool = typer.Option(False, "--report", help="Write report.html in the clip's folder."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Separate the sound of each INPUT by what is seen in it.

    Writes OUTDIR/<input name>/ with one audio file per stem (onscreen/offscreen,
    speaker-<id>, or <instrument>), a remuxed .mp4 per stem for video input, and manifest.json.
    """
    from avsplit.labels import parse_query

    labels: list[str] = []
    if query is not None:
        if mode not in (None, Mode.instruments):
            raise typer.BadParameter(f"--query only works with --mode instruments, not {mode.value}",
                                     param_hint="--query")
        try:
            labels = parse_query(query)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--query") from None
        mode = Mode.instruments
    from dataclasses import replace

    from avsplit.clip import Clip
    from avsplit.engine import Engine
    from avsplit.events import events_path
    from avsplit.modes.plan import SeparateOptions
    from avsplit.outputs import folder_name
    from avsplit.separate import separate_clip

    options = SeparateOptions(mode=(mode or Mode.onscreen).value, fmt=fmt.value, video=not no_video,
                              audio_stream=audio_stream, query=labels, weights=weights,
                              enhance=not no_enhance, report=report)
    try:
        engine = Engine(device.value)
    except AvsplitError as exc:  # the device cannot be used: every input fails the same way
        message = _fail("", exc, debug)
        if json_out:
            print(json.dumps({"results": [_failed(p, message, 0.0) for p in inputs]}, indent=2))
        raise typer.Exit(1)
    results = []
    taken: set[str] = set()
    with engine, _progress(quiet) as bars:
        for path in inputs:
            t0 = time.perf_counter()
            folder = folder_name(path, taken)
            try:
                csv_path = None if events is None else events_path(events, folder, len(inputs) > 1)
                with Clip(path, audio_stream) as clip:
                    result = separate_clip(clip, engine, replace(options, events=csv_path), outdir,
                                           folder, RichProgress(bars, path.name))
            except (Exception, KeyboardInterrupt) as exc:  # one input never stops the batch
                if isinstance(exc, KeyboardInterrupt):
                    raise
                results.append(_failed(path, _fail(path, exc, debug), time.perf_counter() - t0))
                continue
            summary = result.summary()
            results.append({**summary, "path": str(path), "error": None,
                            "seconds": round(time.perf_counter() - t0, 3)})
            if not quiet and not json_out:
                stderr.print(f"{path}: wrote {len(summary['files'])} files to {result.path}",
                             markup=False, highlight=False, soft_wrap=True)
    if json_out:
        print(json.dumps({"results": results}, indent=2))
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@app.command()
def localize(
    input: Path = typer.Argument(..., help="Video file."),
    overlay: bool = typer.Option(False, "--overlay", help="Write the video with a heatmap of where the sound comes from."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Overlay video path (default <input>_overlay.mp4)."),
    json_out: bool = typer.Option(False, "--json", help="Print per-frame peak positions and scores, each instrument's loudness and the event timeline, as JSON."),
    report: bool = typer.Option(False, "--report", help="Write <input>_report.html next to the input."),
    audio_stream: int = typer.Option(0, "--audio-stream", min=0, help="Audio stream to use (0 = first)."),
    device: Device = typer.Option(Device.auto, help="Where the networks run."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="PATH",
                                           help="Instrument separator checkpoint instead of the bundled one."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Show where in the picture the sound of INPUT comes from (one colour per instrument seen)."""
    from avsplit.engine import Engine
    from avsplit.localize import localize_file

    if out is not None and not overlay:
        overlay = True
    with _progress(quiet) as bars:
        try:
            with Engine(device.value) as engine:
                result = localize_file(input, overlay_path=(out or input.with_name(f"{input.stem}_overlay.mp4"))
                                       if overlay else None, audio_stream=audio_stream,
                                       progress=RichProgress(bars, input.name), weights=weights,
                                       engine=engine, report_path=input.with_name(
                                           f"{input.stem}_report.html") if report else None)
        except Exception as exc:
            _fail(input, exc, debug)
            raise typer.Exit(1)
    if json_out:
        print(json.dumps(result, indent=2))
    elif not quiet:
        for note in result.get("notes", []):
            stderr.print(f"{input}: {note}", markup=False, highlight=False, soft_wrap=True)
        if result.get("instruments"):
            names = ", ".join(i["name"] + (" (silent)" if i["silent"] else "")
                              for i in result["instruments"])
            stderr.print(f"{input}: instruments: {names}", markup=False, highlight=False, soft_wrap=True)
        if result.get("report"):
            stderr.print(f"{input}: wrote {result['report']}", markup=False, highlight=False, soft_wrap=True)
        if result.get("overlay"):
            stderr.print(f"{input}: wrote {result['overlay']}", markup=False, highlight=False, soft_wrap=True)
        else:
            stderr.print(f"{input}: {len(result['frames'])} frames analysed; add --overlay to write a video",
                         markup=False, highlight=False, soft_wrap=True)


@app.command()
def sync(
    input: Path = typer.Argument(..., help="Video file with sound (a visible speaker is best)."),
    fix: bool = typer.Option(False, "--fix", help="Write a copy with the audio shifted into sync (needs -o)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output video for --fix."),
    audio_stream: int = typer.Option(0, "--audio-stream", min=0, help="Audio stream to use (0 = first)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Measure how far the audio of INPUT is ahead of or behind the picture (and fix it).

    Reads the lips of a visible face (or, without one, motion onsets against sound onsets);
    refuses with exit code 1 when it cannot tell with confidence.
    """
    from avsplit.engine import Engine
    from avsplit.sync import describe, sync_input

    if fix and out is None:
        stderr.print("avsplit: error: --fix needs -o OUT.mp4", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    with _progress(quiet) as bars:
        try:
            with Engine("cpu") as engine:
                result = sync_input(input, engine, audio_stream, out if fix else None,
                                    RichProgress(bars, input.name))
        except Exception as exc:
            message = _fail(input, exc, debug)
            if json_out:
                partial = getattr(exc, "result", None) or {"input": str(input), "offset_s": None}
                print(json.dumps({**partial, "status": "failed", "error": message}, indent=2))
            raise typer.Exit(1)
    if json_out:
        print(json.dumps(result, indent=2))
    else:
        print(f"{input}: {describe(result)}")


@app.command()
def models(json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the bundled models, their licences and sha256, and the instrument labels."""
    from avsplit.models.registry import MODELS, weights_dir

    rows = []
    for m in MODELS.values():
        path = weights_dir() / m.file
        rows.append({"name": m.name, "file": m.file, "task": m.task, "sample_rate": m.sample_rate,
                     "licence": m.licence, "origin": m.origin, "sha256": m.sha256,
                     "present": path.exists()})
    from avsplit.labels import LABELS, SYNONYMS

    for r in rows:
        if r["name"] == "instrument-separator":
            r["labels"] = list(LABELS)
            r["synonyms"] = SYNONYMS
    if json_out:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(f"{r['name']}\t{r['file']}\t{r['licence']}\tsha256:{r['sha256']}\t{r['task']}")
    print(f"\ninstrument labels (--query): {', '.join(LABELS)}")
    print("synonyms: " + ", ".join(f"{k}={v}" for k, v in SYNONYMS.items()))


def _silence_native_logs() -> None:
    """Send what native libraries write straight to file descriptor 2 (LiteRT and MediaPipe
    print INFO lines there, unaffected by -q) to /dev/null, while Python's ``sys.stderr`` (our
    progress bars, warnings and error lines) keeps writing to the real stderr. Set
    ``AVSPLIT_NATIVE_LOGS=1`` to keep the native lines."""
    if os.environ.get("AVSPLIT_NATIVE_LOGS") == "1" or sys.stderr is not sys.__stderr__:
        return  # asked to keep them, or stderr is captured (tests, embedding): leave it alone
    try:
        sys.stderr.flush()
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded use): leave it
        pass


def _version(value: bool) -> None:
    if value:
        print(f"avsplit {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """avsplit: audio-visual scene analysis."""
    _silence_native_logs()


if __name__ == "__main__":
    app()
