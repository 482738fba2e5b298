"""The ``avsplit`` command line (Typer). Parsing, progress and exit codes only.

Exit codes: 0 all inputs done, 1 any input failed (the others still run), 2 usage error.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from avsplit import __version__

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


class SeparatorKind(str, Enum):
    net = "net"
    nmf = "nmf"
    combined = "combined"


class Format(str, Enum):
    wav = "wav"
    flac = "flac"


def _fail(input_path, exc: BaseException, debug: bool) -> str:
    """Print one line for a failed input (a traceback too with --debug); return the message."""
    from avsplit.batch import error_message

    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = error_message(exc, input_path)
    _say(f"avsplit: error: {message}")
    return message


def _say(text: str) -> None:
    """One line on stderr, as it is (no rich markup)."""
    stderr.print(text, markup=False, highlight=False, soft_wrap=True)


def _summary_table(report) -> None:
    """The end-of-batch table on stderr (a :class:`avsplit.batch.BatchReport`): counts, then
    one row per input (only those not done when there are many)."""
    from rich.table import Table

    counts, lines = report.counts, report.lines
    table = Table(title=f"{counts['done']} done, {counts['skipped']} skipped, "
                        f"{counts['failed']} failed", title_justify="left", show_edge=False)
    table.add_column("input", overflow="fold")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("reason / outputs", overflow="fold")
    shown = [x for x in lines if x["status"] != "done"] if len(lines) > 20 else lines
    for line in shown:
        detail = line.get("error") or line.get("reason") or (
            line.get("outdir") or (line["outputs"][0] if line["outputs"] else ""))
        table.add_row(line["path"], line["status"], f"{line['seconds']:.1f}", str(detail))
    stderr.print(table)


def _batch(task, inputs: list[Path], *, recursive: bool, jobs: int, executor: str,
           ray_address: Optional[str], skip_existing: bool, overwrite: bool, json_out: bool,
           quiet: bool, debug: bool, describe: Callable[[dict], None],
           exclude: tuple = ()) -> None:
    """Run ``task`` over ``inputs`` (see :func:`avsplit.batch.run_batch`): a JSON line per input
    with ``--json``, one line per failure, a summary table, exit 0/1 (130/143 when stopped)."""
    import signal as _signal

    from avsplit.batch import Interrupted, raise_on_sigterm, run_batch
    from avsplit.progress import RichProgress, rich_bars

    if skip_existing and overwrite:
        raise typer.BadParameter("use either --skip-existing or --overwrite, not both",
                                 param_hint="--skip-existing")
    raise_on_sigterm()
    finished: list[dict] = []
    with rich_bars(stderr, quiet) as bars:
        def on_line(line: dict) -> None:
            finished.append(line)
            if json_out:
                print(json.dumps(line, default=str), flush=True)
            if line["status"] == "failed":
                _say(f"avsplit: error: {line['error']}")
            elif line["status"] == "skipped" and not quiet:
                _say(f"{line['path']}: skipped ({line.get('error') or line.get('reason')})")
            elif not quiet and not json_out:
                describe(line)

        def overall(total: int):
            if bars is None:
                return lambda: None
            task_id = bars.add_task(f"{task.command}: inputs", total=total)
            return lambda: bars.advance(task_id, 1)

        try:
            report = run_batch(task, inputs, recursive=recursive, jobs=jobs, executor=executor,
                               ray_address=ray_address, skip_existing=skip_existing,
                               overwrite=overwrite, debug=debug, exclude=exclude,
                               on_line=on_line, overall=overall,
                               progress_for=lambda job: RichProgress(bars, job.input.path.name))
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else int(_signal.SIGINT)
            done = sum(1 for x in finished if x["status"] == "done")
            _say(f"avsplit: interrupted by {_signal.Signals(signum).name}: {done} input(s) done; "
                 "the input in progress left no output behind; rerun with --skip-existing "
                 "to resume")
            raise typer.Exit(128 + signum)
    if not quiet and len(report.lines) > 1:
        _summary_table(report)
    raise typer.Exit(report.exit_code)


class Executor(str, Enum):
    local = "local"
    ray = "ray"


def _batch_options():
    """Typer options shared by the commands that take many inputs."""
    return dict(
        recursive=typer.Option(False, "--recursive", "-r",
                               help="Also look for media files in sub-folders of folder inputs."),
        jobs=typer.Option(1, "--jobs", "-j", min=1,
                          help="Worker processes (each loads the models once)."),
        executor=typer.Option(Executor.local, "--executor",
                              help="local: this machine; ray: Ray tasks (pip install 'avsplit[ray]')."),
        ray_address=typer.Option(None, "--ray-address", metavar="ADDR",
                                 help="Ray cluster to use with --executor ray (default: start a local one)."),
    )


_B = _batch_options()


@app.command()
def separate(
    inputs: list[Path] = typer.Argument(..., help="Video (or audio) files, folders or globs to separate."),
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
                                           "(speech for onscreen/speakers, whatever the number of faces; "
                                           "instruments for instruments)."),
    separator: Optional[SeparatorKind] = typer.Option(
        None, "--separator",
        help="instruments: combined (default): the normalised product (geometric mean) of the "
        "instrument network's masks and the NMF's (grouped with the network's masks as prior): "
        "a bin goes to an instrument as far as both give it, then each stem re-separated by the "
        "network to take out what leaked in; net: the network alone; nmf: NMF "
        "of the mixture with a learnt assignment of its components."),
    no_enhance: bool = typer.Option(False, "--no-enhance",
                                    help="onscreen/speakers: let our separator's background slot "
                                    "decide speech vs. background instead of the pretrained "
                                    "speech enhancer (DTLN)."),
    filename: str = typer.Option("{stem}/{source}.{ext}", "--filename", metavar="TEMPLATE",
                                 help="Output path of each file inside OUTDIR; fields {stem} (input "
                                 "name), {source} (onscreen, speaker-0, violin, manifest), {ext}, "
                                 "{mode}, {parent} (sub-folder of a folder input). Never leaves OUTDIR."),
    skip_existing: bool = typer.Option(False, "--skip-existing",
                                       help="Skip inputs whose outputs are complete (resume a batch)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace existing outputs (default: an input whose outputs "
                                   "exist fails)."),
    recursive: bool = _B["recursive"],
    jobs: int = _B["jobs"],
    executor: Executor = _B["executor"],
    ray_address: Optional[str] = _B["ray_address"],
    events: Optional[Path] = typer.Option(None, "--events", metavar="FILE.csv",
                                          help="Write the audio-visual event timeline (start_s,end_s,"
                                          "track,label,audible,visible,score) to FILE.csv "
                                          "(FILE-<clip>.csv per input when there are several)."),
    report: bool = typer.Option(False, "--report", help="Write report.html in the clip's folder."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON line per input on stdout."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Separate the sound of each INPUT by what is seen in it.

    Writes OUTDIR/<input name>/ with one audio file per stem (onscreen/offscreen,
    speaker-<id>, or <instrument>), a remuxed .mp4 per stem for video input, and manifest.json.
    INPUT may be files, folders (--recursive descends) or globs; media is found by probing.
    Exit code 0: all done (or skipped); 1: any input failed; 2: usage error.
    """
    from avsplit.labels import parse_query
    from avsplit.outputs import check_template

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
    if separator is not None and mode != Mode.instruments:
        raise typer.BadParameter("--separator only works with --mode instruments (or --query)",
                                 param_hint="--separator")
    try:
        check_template(filename)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--filename") from None
    from avsplit.modes.plan import SeparateOptions
    from avsplit.tasks import SeparateTask

    options = SeparateOptions(mode=(mode or Mode.onscreen).value, fmt=fmt.value, video=not no_video,
                              audio_stream=audio_stream, query=labels, weights=weights,
                              enhance=not no_enhance, report=report,
                              separator=(separator or SeparatorKind.combined).value)
    task = SeparateTask(options, outdir, filename, device.value, events)

    def describe(line: dict) -> None:
        for note in line.get("notes", []):
            _say(f"{line['path']}: note: {note}")
        _say(f"{line['path']}: wrote {len(line.get('files', []))} files to {line.get('outdir')}")

    _batch(task, inputs, recursive=recursive, jobs=jobs, executor=executor.value,
           ray_address=ray_address, skip_existing=skip_existing, overwrite=overwrite,
           json_out=json_out, quiet=quiet, debug=debug, describe=describe, exclude=(outdir,))


@app.command()
def localize(
    inputs: list[Path] = typer.Argument(..., help="Video files, folders or globs."),
    overlay: bool = typer.Option(False, "--overlay", help="Write the video with a heatmap of where the sound comes from."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Overlay video path for one input "
                                       "(default <input>_overlay.mp4), or a folder for several "
                                       "(created when missing)."),
    json_out: bool = typer.Option(False, "--json", help="Print per-frame peak positions and scores, each instrument's loudness and the event timeline, as one JSON line per input."),
    report: bool = typer.Option(False, "--report", help="Write <input>_report.html next to the input."),
    audio_stream: int = typer.Option(0, "--audio-stream", min=0, help="Audio stream to use (0 = first)."),
    device: Device = typer.Option(Device.auto, help="Where the networks run."),
    weights: Optional[Path] = typer.Option(None, "--weights", metavar="PATH",
                                           help="Instrument separator checkpoint instead of the bundled one."),
    skip_existing: bool = typer.Option(False, "--skip-existing",
                                       help="Skip inputs whose overlay is already there."),
    recursive: bool = _B["recursive"],
    jobs: int = _B["jobs"],
    executor: Executor = _B["executor"],
    ray_address: Optional[str] = _B["ray_address"],
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Show where in the picture the sound of each INPUT comes from (one colour per instrument seen)."""
    from avsplit.tasks import LocalizeTask

    if out is not None and not overlay:
        overlay = True
    task = LocalizeTask(overlay, out, weights, audio_stream, device.value, report)

    def describe(line: dict) -> None:
        path = line["path"]
        for note in line.get("notes", []):
            _say(f"{path}: {note}")
        if line.get("instruments"):
            names = ", ".join(i["name"] + (" (silent)" if i["silent"] else "")
                              for i in line["instruments"])
            _say(f"{path}: instruments: {names}")
        if line.get("report"):
            _say(f"{path}: wrote {line['report']}")
        if line.get("overlay"):
            _say(f"{path}: wrote {line['overlay']}")
        else:
            _say(f"{path}: {len(line.get('frames', []))} frames analysed; add --overlay to write a video")

    _batch(task, inputs, recursive=recursive, jobs=jobs, executor=executor.value,
           ray_address=ray_address, skip_existing=skip_existing, overwrite=not skip_existing,
           json_out=json_out, quiet=quiet, debug=debug, describe=describe,
           exclude=(out,) if out is not None and overlay and out.suffix == "" else ())


@app.command()
def sync(
    inputs: list[Path] = typer.Argument(..., help="Video files (folders, globs) with sound (a visible speaker is best)."),
    fix: bool = typer.Option(False, "--fix", help="Write a copy with the audio shifted into sync (needs -o)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output video for --fix (a folder for several inputs)."),
    audio_stream: int = typer.Option(0, "--audio-stream", min=0, help="Audio stream to use (0 = first)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as one JSON line per input."),
    recursive: bool = _B["recursive"],
    jobs: int = _B["jobs"],
    executor: Executor = _B["executor"],
    ray_address: Optional[str] = _B["ray_address"],
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors."),
) -> None:
    """Measure how far the audio of each INPUT is ahead of or behind the picture (and fix it).

    Reads the lips of a visible face (or, without one, motion onsets against sound onsets);
    refuses with exit code 1 when it cannot tell with confidence.
    """
    from avsplit.tasks import SyncTask

    if fix and out is None:
        _say("avsplit: error: --fix needs -o OUT.mp4")
        raise typer.Exit(2)
    task = SyncTask(fix, out, audio_stream)

    def describe(line: dict) -> None:
        from avsplit.sync import describe as say

        print(f"{line['path']}: {say(line)}", flush=True)

    _batch(task, inputs, recursive=recursive, jobs=jobs, executor=executor.value,
           ray_address=ray_address, skip_existing=False, overwrite=True, json_out=json_out,
           quiet=quiet, debug=debug, describe=describe)


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
