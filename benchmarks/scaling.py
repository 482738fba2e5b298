"""Batch and long-input benchmark: time and memory against length, batch throughput, bad inputs.

* Long inputs: the real 1280x720 interview of ``DATA/av/speech/interview_2spk`` looped (stream
  copy) to 1, 10 and 60 minutes; ``avsplit separate --no-video`` on each in its own process:
  wall time, real-time factor and peak resident memory (``ru_maxrss`` via ``wait4``).
* Batch: the first ``--batch`` short real clips of ``DATA/av/speech`` (GRID, CREMA-D, ...) in
  one ``avsplit separate --no-video`` run with ``--jobs 1``, ``--jobs 2`` and
  ``--executor ray --jobs 2`` (when Ray is installed): clips per minute.
* Bad inputs: each input of the batch issue's matrix made here with ffmpeg, run alone:
  exit code, the first error line, what is left in the output folder.

    python benchmarks/scaling.py --data ../shared/data [--minutes 1,10,60] [--batch 50]
        [--parts long,batch,bad] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from engine import peak_memory
from report import write_section

from avsplit import media

CLI = [sys.executable, "-m", "avsplit.cli"]
PICTURE = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"]
H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
TONE = ["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100"]

# name -> ffmpeg arguments before the output (None: made in Python below)
MATRIX = {
    "zero-byte file": None, "text saved as .mp4": None, "truncated mp4 (index first)": None,
    "no audio stream": PICTURE + ["-t", "1"] + H264,
    "no video stream (onscreen)": TONE + ["-t", "1", "-c:a", "flac"],
    "silent audio": PICTURE + ["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "1.5"]
    + H264 + ["-c:a", "aac"],
    "5.1 audio": PICTURE + ["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000",
                            "-t", "1.5"] + H264 + ["-ac", "6", "-c:a", "aac"],
    "two audio streams": PICTURE + TONE + ["-f", "lavfi", "-i", "sine=frequency=500", "-t", "1.5",
                                           "-map", "0:v", "-map", "1:a", "-map", "2:a"]
    + H264 + ["-c:a", "aac"],
    "variable frame rate": PICTURE + TONE + ["-t", "2", "-vf", "select='not(mod(n\\,3))'",
                                             "-fps_mode", "vfr"] + H264 + ["-c:a", "aac"],
    "4K": ["-f", "lavfi", "-i", "testsrc2=size=3840x2160:rate=25"] + TONE + ["-t", "1"] + H264
    + ["-c:a", "aac"],
    "8 kHz mono": PICTURE + ["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=8000",
                             "-t", "1.5"] + H264 + ["-ac", "1", "-c:a", "aac"],
    "under one second": PICTURE + TONE + ["-t", "0.4"] + H264 + ["-c:a", "aac"],
}
SUFFIX = {"no video stream (onscreen)": ".flac", "two audio streams": ".mkv"}
NAMES = {"name with spaces and unicode": "a clip ü.mp4", "leading dash": "-clip.mp4",
         "stem of ..": "...mp4"}


def ffmpeg(out: Path, args: list[str]) -> Path:
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *args, str(out)],
                   check=True)
    return out


def loop_clip(src: Path, minutes: int, out: Path) -> Path:
    """``src`` looped to ``minutes`` (stream copy: the real picture and sound, repeated)."""
    loops = int(np.ceil(60 * minutes / max(media.probe(src).duration, 1.0)))
    return ffmpeg(out, ["-stream_loop", str(loops), "-i", str(src), "-t", str(60 * minutes),
                        "-c", "copy"])


def long_inputs(data: Path, minutes: list[int], work: Path) -> list[str]:
    src = data / "av" / "speech" / "interview_2spk" / "interview.mp4"
    v = media.probe(src).video
    lines = [f"Input: `av/speech/interview_2spk/interview.mp4` ({v.width}x{v.height}, "
             f"{v.fps:g} fps, 48 kHz stereo) looped.", "",
             "| input | wall time | real-time factor | peak memory |", "|---|---:|---:|---:|"]
    for m in minutes:
        clip = loop_clip(src, m, work / f"loop-{m}min.mp4")
        mb, wall, rc = peak_memory([*CLI, "separate", str(clip), "-o", str(work / "long"),
                                    "--no-video", "-q", "--overwrite"])
        lines.append(f"| {m} min | {wall:.0f} s | {wall / (60 * m):.2f} | {mb:.0f} MB |"
                     + ("" if rc == 0 else f" exit {rc}"))
        print(lines[-1], flush=True)
        clip.unlink()
    return lines


def short_clips(data: Path, n: int) -> list[Path]:
    """The first ``n`` real clips under 10 s of ``DATA/av/speech`` (sorted by path)."""
    out = []
    for p in sorted((data / "av" / "speech").rglob("*")):
        if p.is_file() and p.suffix.lower() in (".mp4", ".mpg", ".flv", ".avi", ".mkv"):
            try:
                info = media.probe(p)
            except media.MediaError:
                continue
            if info.has_video and info.has_audio and 0 < info.duration < 10:
                out.append(p)
        if len(out) == n:
            break
    return out


def batch(data: Path, n: int, work: Path) -> list[str]:
    clips = short_clips(data, n)
    seconds = sum(media.probe(c).duration for c in clips)
    lines = [f"{len(clips)} real clips of `av/speech` under 10 s ({seconds:.0f} s of video in "
             "all), one run each:", "", "| run | wall time | clips per minute | done | failed |",
             "|---|---:|---:|---:|---:|"]
    runs = [("--jobs 1", ["--jobs", "1"]), ("--jobs 2", ["--jobs", "2"])]
    if importlib.util.find_spec("ray") is not None:
        runs.append(("--executor ray --jobs 2", ["--executor", "ray", "--jobs", "2"]))
    else:
        lines.insert(0, "(Ray is not installed here: no Ray row.)")
    for name, extra in runs:
        out = work / f"batch-{name.replace(' ', '')}"
        t0 = time.perf_counter()
        proc = subprocess.run([*CLI, "separate", *map(str, clips), "-o", str(out), "--no-video",
                               "-q", "--json", *extra], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        status = [json.loads(x)["status"] for x in proc.stdout.splitlines() if x.strip()]
        lines.append(f"| `{name}` | {wall:.0f} s | {60 * len(clips) / wall:.1f} | "
                     f"{status.count('done')} | {status.count('failed')} |")
        print(lines[-1], flush=True)
        shutil.rmtree(out, ignore_errors=True)
    return lines


def make_matrix(folder: Path, clip: Path) -> dict[str, Path]:
    """The bad inputs, made in ``folder`` (``clip``: a good short clip to rename)."""
    m: dict[str, Path] = {}
    for name, args in MATRIX.items():
        if args is not None:
            m[name] = ffmpeg(folder / f"{len(m)}{SUFFIX.get(name, '.mp4')}", args)
    (folder / "zero.mp4").write_bytes(b"")
    m["zero-byte file"] = folder / "zero.mp4"
    (folder / "text.mp4").write_text("not a video\n" * 50)
    m["text saved as .mp4"] = folder / "text.mp4"
    full = ffmpeg(folder / "full.mp4", PICTURE + TONE + ["-t", "6"] + H264
                  + ["-c:a", "aac", "-movflags", "+faststart"])
    data = full.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: int(len(data) * 0.4)])
    m["truncated mp4 (index first)"] = folder / "truncated.mp4"
    for name, file in NAMES.items():
        shutil.copy(clip, folder / file)
        m[name] = folder / file
    return m


def bad_inputs(work: Path) -> list[str]:
    folder = work / "matrix"
    folder.mkdir()
    clip = ffmpeg(work / "good.mp4", PICTURE + TONE + ["-t", "1.5"] + H264 + ["-c:a", "aac"])
    cases: list[tuple[str, list[str], Path]] = []
    for name, path in make_matrix(folder, clip).items():
        out = work / f"out-{len(cases)}"
        cases.append((name, [str(path), "-o", str(out)], out))
    afile = work / "a-file"
    afile.write_text("x")
    cases.append(("output folder is a file", [str(clip), "-o", str(afile)], afile))
    notckpt = work / "notes.pt"
    notckpt.write_text("not a checkpoint")
    from avsplit.models.registry import weights_path

    for name, w in (("--weights missing", work / "missing.pt"),
                    ("--weights not a checkpoint", notckpt),
                    ("--weights of the wrong model", weights_path("instrument-separator"))):
        out = work / f"out-{len(cases)}"
        cases.append((name, [str(clip), "-o", str(out), "--weights", str(w)], out))
    disk = work / "disk"
    disk.mkdir()
    full_disk = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
        capture_output=True).returncode == 0
    if full_disk:
        long = ffmpeg(work / "long.mp4", PICTURE + TONE + ["-t", "4"] + H264 + ["-c:a", "aac"])
        cases.append(("full disk (256 kB tmpfs)", [str(long), "-o", str(disk)], disk))
    lines = ["| input | exit code | message (first line, shortened) | left in the output folder |",
             "|---|---:|---|---|"]
    try:
        for name, args, out in cases:
            proc = subprocess.run([*CLI, "separate", *args, "-q", "--json"], capture_output=True,
                                  text=True)
            err = [x for x in proc.stderr.splitlines() if x.strip()]
            notes = [n for x in proc.stdout.splitlines() if x.strip()
                     for n in json.loads(x).get("notes", [])]
            message = (err[0] if err else ("note: " + notes[0] if notes else "")).replace(
                str(work) + "/", "")
            message = message.replace("|", "\\|")
            message = message[:140] + ("..." if len(message) > 140 else "")
            if out.is_dir():
                files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
                hidden = [f for f in files if any(part.startswith(".") for part in Path(f).parts)]
                left = (f"{len(files)} files" + (f", {len(hidden)} hidden!" if hidden else "")
                        if files else "nothing")
            else:
                left = "no folder" if not out.exists() else "the file, untouched"
            lines.append(f"| {name} | {proc.returncode} | {message} | {left} |")
            print(lines[-1], flush=True)
    finally:
        if full_disk:
            subprocess.run(["umount", str(disk)])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--minutes", default="1,10,60")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--parts", default="long,batch,bad")
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    parts = args.parts.split(",")
    text = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "long" in parts:
            text += ["### Long inputs", ""] + long_inputs(
                args.data, [int(m) for m in args.minutes.split(",")], work) + [""]
        if "batch" in parts:
            text += ["### Batch throughput", ""] + batch(args.data, args.batch, work) + [""]
        if "bad" in parts:
            text += ["### Bad inputs (`avsplit separate INPUT -o OUT -q --json`)", ""] + \
                bad_inputs(work) + [""]
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
               f"{platform.python_version()}; date {time.strftime('%Y-%m-%d')}")
    body = "\n".join(text) + f"\nMachine: {machine}."
    print(body)
    if args.write:
        write_section(args.write, f"scaling-{'-'.join(parts)}",
                      " ".join(["python benchmarks/scaling.py", *sys.argv[1:]]), body,
                      intro=f"## Batch and long inputs: {', '.join(parts)} (`benchmarks/scaling.py`)")


if __name__ == "__main__":
    main()
