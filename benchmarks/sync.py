"""``avsplit sync`` on real clips whose audio was shifted by known offsets.

Every video of ``DATA/av/speech`` and ``DATA/av/other`` is re-muxed with its audio shifted by
each offset in ``OFFSETS_MS`` (positive: the audio comes late), the video stream copied, with
the product's own :func:`avsplit.sync.fix_offset` (a sample-exact shift into ``.mkv``). Each
copy is measured with :func:`avsplit.sync.measure_offset`, as ``avsplit sync`` does; the face
tracks of a clip are computed once on the original and replayed for its copies (the video
packets are identical, so the tracker would see the same frames; the motion energy and the
audio are computed from each copy; the replay makes ``measure_offset`` cost a decode of the
copy instead of a face-tracking pass).

An estimate is right when it is within one video frame (``1 / fps`` of the clip) of the
truth. Two truths are scored: *absolute*, the applied offset (assuming the originals are in
sync), and *relative*, the applied offset plus the estimate (its best guess, refused or not)
on the unshifted clip - the measure of the issue that asked for this (it does not hold a
clip's own original offset against the method). Clips without a usable face use the motion
cue; only the relative truth means anything for them (the natural sight-to-sound lag of a
bark or an engine is not known).

    python benchmarks/sync.py --data ../shared/data [--write docs/benchmarks.md]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from report import bench_main

OFFSETS_MS = [-500, -320, -160, -80, 0, 80, 160, 320, 500]
SUFFIXES = {".mp4", ".flv", ".mpg", ".avi", ".mkv", ".webm"}


class ReplayTracker:
    """A face tracker that returns tracks computed once (and consumes the frames it gets)."""

    model_ids: list = []

    def __init__(self, tracks):
        self.tracks = tracks

    def track(self, frames, progress):
        for _ in frames:
            pass
        return self.tracks


def run(data: Path, work: Path) -> list[dict]:
    import torch

    from avsplit.clip import Clip
    from avsplit.engine import Engine
    from avsplit.sync import SyncRefused, fix_offset, measure_offset

    torch.set_num_threads(1)
    clips = sorted(p for sub in ("speech", "other") for p in (data / "av" / sub).rglob("*")
                   if p.suffix.lower() in SUFFIXES)
    rows = []
    with Engine("cpu") as engine:
        for clip in clips:
            with Clip(clip) as c:
                if not c.has_video or not c.has_audio:
                    continue
                tracks = engine.face_tracks(c)
                fps = c.info.video.fps or 25.0
            replay = Engine("cpu", face_tracker=ReplayTracker(tracks))
            for ms in OFFSETS_MS:
                shifted = work / f"{clip.stem}_{ms:+d}.mkv"
                media_path = clip
                if ms:
                    fix_offset(clip, -ms / 1000, shifted)  # fix_offset moves the audio by -offset
                    media_path = shifted
                t0 = time.perf_counter()
                row = {"clip": clip.relative_to(data / "av").as_posix(), "shift_ms": ms,
                       "fps": round(float(fps), 3)}
                try:
                    res = measure_offset(media_path, engine=replay)
                    row.update(refused=None, offset_s=res["offset_s"], confidence=res["confidence"],
                               cue=res["cue"])
                except SyncRefused as exc:
                    res = exc.result
                    row.update(refused=res.get("refused", "refused"), offset_s=res.get("offset_s"),
                               confidence=res.get("confidence", 0.0), cue=res.get("cue"))
                row["seconds"] = round(time.perf_counter() - t0, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
                shifted.unlink(missing_ok=True)
    return rows


def score(rows: list[dict]) -> list[dict]:
    """Adds ``abs_ok`` / ``rel_ok`` (within one frame) to the rows of shifted copies."""
    base = {r["clip"]: r["offset_s"] for r in rows if r["shift_ms"] == 0}
    out = []
    for r in rows:
        frame = 1.0 / r["fps"]
        s = r["shift_ms"] / 1000
        r = dict(r)
        if r["offset_s"] is None:
            r["abs_ok"] = r["rel_ok"] = None
        else:
            r["abs_ok"] = abs(r["offset_s"] - s) <= frame + 1e-6
            b = base.get(r["clip"])
            r["rel_ok"] = None if b is None else abs(r["offset_s"] - b - s) <= frame + 1e-6
        out.append(r)
    return out


def _share(rows: list[dict], key: str) -> str:
    kept = [r for r in rows if not r["refused"] and r[key] is not None]
    if not kept:
        return "–"
    return f"{100 * np.mean([r[key] for r in kept]):.0f} % ({sum(r[key] for r in kept)}/{len(kept)})"


def table(rows: list[dict]) -> str:
    rows = [r for r in score(rows) if r["shift_ms"] != 0]  # the unshifted run is the reference
    groups = [("lips (a face is visible), all av/speech clips with a face", [r for r in rows if r["cue"] == "lips"])]
    for corpus in ("crema_d", "grid", "talking_heads", "talking_heads_2", "interview_2spk", "noisy_restaurant"):
        groups.append((f"  lips: {corpus}", [r for r in rows if r["cue"] == "lips"
                                            and r["clip"].split("/")[1] == corpus]))
    groups.append(("motion (no face): av/other + offscreen_speech_dog", [r for r in rows if r["cue"] == "motion"]))
    groups.append(("all av/speech clips (lips, and motion for the faceless one)",
                   [r for r in rows if r["clip"].startswith("speech/")]))
    groups.append(("all clips", rows))
    lines = ["| clips | shifted copies | refused | within one frame of the applied offset (of those not refused) "
             "| within one frame, relative to the unshifted estimate |", "|---|---:|---:|---:|---:|"]
    for name, g in groups:
        if not g:
            continue
        refused = sum(1 for r in g if r["refused"])
        # the applied offset is a truth only for the lips cue (a motion cue's natural lag is unknown)
        absolute = _share(g, "abs_ok") if all(r["cue"] == "lips" for r in g) else "(no truth)"
        lines.append(f"| {name} | {len(g)} | {100 * refused / len(g):.0f} % ({refused}) | {absolute} | "
                     f"{_share(g, 'rel_ok')} |")
    per_shift = ["", "| applied offset (ms) | " + " | ".join(str(m) for m in OFFSETS_MS if m) + " |",
                 "|---|" + "---:|" * (len(OFFSETS_MS) - 1)]
    lips = [r for r in rows if r["cue"] == "lips"]
    for key, label in (("abs_ok", "lips: right (absolute), of not refused"),
                       ("rel_ok", "lips: right (relative), of not refused")):
        cells = []
        for m in OFFSETS_MS:
            if m:
                g = [r for r in lips if r["shift_ms"] == m and not r["refused"] and r[key] is not None]
                cells.append(f"{sum(r[key] for r in g)}/{len(g)}")
        per_shift.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for m in OFFSETS_MS:
        if m:
            g = [r for r in lips if r["shift_ms"] == m]
            cells.append(f"{sum(1 for r in g if r['refused'])}/{len(g)}")
    per_shift.append("| lips: refused | " + " | ".join(cells) + " |")
    return "\n".join(lines + per_shift)


def main() -> None:
    bench_main(__doc__, "benchmarks/sync.py", "sync", "Sync: known audio offsets on real clips (`benchmarks/sync.py`)", run, table)


if __name__ == "__main__":
    main()
