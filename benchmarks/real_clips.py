"""What ``avsplit separate`` does on the real clips of ``DATA/av/speech`` as they are.

No mixing and no references: every clip is run as a user would run it, in ``--mode onscreen``
and ``--mode speakers``, and the table lists per clip the face tracks, each stem's share of
the mixture's energy (from ``manifest.json``), silent stems and the manifest's notes. It shows
behaviour that the mix-and-separate benchmarks cannot: a visible talker in a loud room, the
two-speaker interview, the clip whose voice is off screen.

    python benchmarks/real_clips.py --data ../shared/data [--write docs/benchmarks.md]
"""

from __future__ import annotations

import json
from pathlib import Path

from report import bench_main, run_separate

SUFFIXES = {".mp4", ".flv", ".mpg", ".avi", ".mkv", ".webm"}


def run(data: Path, work: Path) -> list[dict]:
    root = data / "av" / "speech"
    rows = []
    for clip in sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES):
        for mode in ("onscreen", "speakers"):
            out = work / mode
            proc, wall = run_separate(clip, out, "--mode", mode, "--no-video", "--json",
                                      "--device", "cpu")
            row = {"clip": clip.relative_to(root).as_posix(), "mode": mode, "seconds": wall}
            if proc.returncode != 0:
                row["error"] = proc.stderr.strip()[-300:]
            else:
                outdir = Path(json.loads(proc.stdout.splitlines()[0])["outdir"])
                manifest = json.loads((outdir / "manifest.json").read_text())
                row.update(faces=len(manifest.get("tracks", [])),
                           stems={s["name"]: round(s.get("energy_share", 0.0), 3)
                                  for s in manifest.get("stems", [])},
                           silent=[s["name"] for s in manifest.get("stems", []) if s.get("silent")],
                           notes=manifest.get("notes", []),
                           duration=manifest["input"].get("duration"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| clip | mode | faces | stems (share of the mixture's energy) | notes |",
             "|---|---|---:|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['clip']} | {r['mode']} | | failed: {r['error'][-120:]} | |")
            continue
        stems = ", ".join(f"{k} {100 * v:.0f} %" + (" (silent)" if k in r["silent"] else "")
                          for k, v in r["stems"].items())
        notes = "; ".join(r["notes"])[:160]
        lines.append(f"| {r['clip']} | {r['mode']} | {r['faces']} | {stems} | {notes} |")
    return "\n".join(lines)


def main() -> None:
    bench_main(__doc__, "benchmarks/real_clips.py", "real-clips",
               "Real clips as they are (`benchmarks/real_clips.py`)", run, table)


if __name__ == "__main__":
    main()
