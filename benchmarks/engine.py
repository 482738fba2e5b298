"""Engine benchmark: how often each command opens its input, and how memory grows with duration.

* Opens: ``strace -f -e trace=openat`` around the CLI, counting the ``openat`` calls on the
  input file (every process: PyAV in-process, the ffmpeg children) for
  ``avsplit separate --no-video`` and ``avsplit localize --overlay`` on a real talking-head clip
  (``DATA/av/speech/interview_2spk``) when present, else on a generated clip.
* Memory: peak resident memory (``ru_maxrss`` of the child) of ``avsplit separate --no-video``
  on generated 1-minute and 10-minute inputs with 48 kHz stereo audio (a small testsrc picture,
  so no face is found and the separator, face tracker and writer still run over the whole
  duration); the target is at most 1.2x from 1 to 10 minutes.

    python benchmarks/engine.py --data ../shared/data [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_section

from avsplit import media


def count_opens(cmd: list[str], target: Path, work: Path) -> tuple[int, int]:
    """``(openat calls on target, exit code)`` of ``cmd`` under ``strace -f``."""
    log = work / "strace.txt"
    proc = subprocess.run(["strace", "-f", "-e", "trace=openat", "-o", str(log), *cmd],
                          capture_output=True, text=True)
    name = re.escape(target.name)
    text = log.read_text(errors="replace")
    hits = [line for line in text.splitlines()
            if re.search(rf'openat\([^,]+, "[^"]*/{name}"', line)]
    return len(hits), proc.returncode


def make_clip(path: Path, seconds: int) -> Path:
    """A testsrc 160x120 at 25 fps video with 48 kHz stereo audio (sine + pink noise)."""
    cmd = [media.ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error",
           "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
           "-f", "lavfi", "-i", "sine=frequency=220:sample_rate=48000",
           "-f", "lavfi", "-i", "anoisesrc=color=pink:sample_rate=48000:amplitude=0.1",
           "-filter_complex", "[1:a][2:a]amerge=inputs=2[a]", "-map", "0:v", "-map", "[a]",
           "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-b:a", "128k", str(path)]
    subprocess.run(cmd, check=True)
    return path


def peak_memory(cmd: list[str]) -> tuple[float, float, int]:
    """``(peak RSS MB, wall s, exit code)`` of one child process."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--minutes", default="1,10")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "avsplit.cli"]
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips = sorted((args.data / "av" / "speech" / "interview_2spk").glob("*.mp4"))
        clip = clips[0] if clips else make_clip(work / "generated.mp4", 10)
        lines += ["| command | opens of the input |", "|---|---:|"]
        for name, cmd in [
            ("avsplit separate --no-video", [*cli, "separate", str(clip), "-o", str(work / "o"),
                                             "--no-video", "-q"]),
            ("avsplit separate (with remuxed .mp4)", [*cli, "separate", str(clip), "-o",
                                                      str(work / "o"), "-q"]),
            ("avsplit localize --overlay", [*cli, "localize", str(clip), "--overlay", "-o",
                                            str(work / "overlay.mp4"), "-q"]),
        ]:
            n, rc = count_opens(cmd, clip, work)
            lines.append(f"| `{name}` | {n}{'' if rc == 0 else f' (exit {rc})'} |")
            print(lines[-1], flush=True)
        lines += ["", f"Clip: `{clip.relative_to(args.data) if clips else clip.name}`.", "",
                  "| input (48 kHz stereo) | peak memory | wall time | real-time factor |",
                  "|---|---:|---:|---:|"]
        peaks = {}
        for minutes in [int(m) for m in args.minutes.split(",")]:
            path = make_clip(work / f"long-{minutes}min.mp4", 60 * minutes)
            mb, wall, rc = peak_memory([*cli, "separate", str(path), "-o", str(work / "o"),
                                        "--no-video", "-q"])
            peaks[minutes] = mb
            lines.append(f"| {minutes} min | {mb:.0f} MB | {wall:.0f} s | {wall / (60 * minutes):.2f} |"
                         + ("" if rc == 0 else f" exit {rc}"))
            print(lines[-1], flush=True)
            path.unlink()
        if len(peaks) >= 2:
            lo, hi = min(peaks), max(peaks)
            lines += ["", f"Peak memory ratio {hi} min / {lo} min: {peaks[hi] / peaks[lo]:.2f} "
                      "(target at most 1.2)."]
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}; "
               f"date {time.strftime('%Y-%m-%d')}")
    text = "\n".join(lines) + f"\n\nMachine: {machine}."
    print(text)
    if args.write:
        write_section(args.write, "engine", " ".join(["python benchmarks/engine.py", *sys.argv[1:]]),
                      text, intro="## Engine: input opens and memory against duration")


if __name__ == "__main__":
    main()
