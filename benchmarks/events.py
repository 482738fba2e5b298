"""The audio-visual event timeline of ``avsplit separate --events`` on real talking heads.

Each single-talker clip of ``DATA/av/speech`` (GRID, the TV talking heads, HDTF, the noisy
restaurant; the 2 s CREMA-D takes are too short for a muted interval with speech around it)
gets its own voice muted from 35 % to 65 % of its length (20 ms fades), and a held-out
off-screen voice (``benchmarks/report.held_out_voice``, at the own voice's RMS) talks in that
interval instead; the video is copied. ``avsplit separate --events`` runs on it as a user
would (``--mode onscreen``, the bundled models, its own face tracking).

Scored on 20 ms frames (DMMAN / AVE's event localisation asks per segment whether the event
is audible and visible): the truth of the face's *audible and visible* frames is where the
clip's own (muted) voice is *speech* - Silero VAD (``silero-vad``, default settings) on the
clean own track - and audible in the new mixture - :func:`avsplit.events.active_ranges` of
its envelope against the mixture's, the rule the product uses on separated voices - while
the face is on screen (it is, in every frame, in these clips). The second truth, *energy*
(the only one until 2026-12-08), is the audible part alone: it counts a recording's room
noise between sentences (GRID's half second of silence before and after each sentence, 20-30
dB under the speech, the mouth closed) as the face's voice. Predicted: frames inside a CSV row of a
face track with ``audible=1, visible=1``. Reported: frame F1 (pooled over all clips, and the
mean per clip; speech truth, and pooled on the energy truth), the share of the muted interval in which the face is wrongly audible, and the
share of the off-screen voice's active frames covered by an ``offscreen`` audible row.
Baselines in the same run: *whole clip* (the face audible and visible throughout) and
*mixture activity* (the face audible wherever the mixture is: the timeline without
separation and association).

    python benchmarks/events.py --data ../shared/data [--write docs/benchmarks.md]
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from report import bench_main, held_out_voice, run_separate

FRAME_S = 0.02
MUTE = (0.35, 0.65)
CORPORA = ("grid", "talking_heads", "talking_heads_2", "noisy_restaurant")
SUFFIXES = {".mp4", ".flv", ".mpg", ".avi", ".mkv"}


def _frames(ranges: list[list[float]], n: int) -> np.ndarray:
    out = np.zeros(n, bool)
    for a, b in ranges:
        out[int(round(a / FRAME_S)):int(round(b / FRAME_S))] = True
    return out


def _fade(n: int, rate: int) -> np.ndarray:
    """``[n]`` gain 0..1: a 20 ms raised-cosine fade in and out."""
    k = min(n // 2, int(0.02 * rate))
    g = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / max(k, 1))
    g[:k], g[n - k:] = ramp, ramp[::-1]
    return g


def make_item(clip: Path, seed: int, data: Path, work: Path) -> dict:
    """Write ``work/<stem>_muted.mp4`` (see the module docstring); return its references."""
    import soundfile as sf

    from avsplit import media

    audio, rate = media.load_audio(clip)
    n = audio.shape[1]
    a, b = int(MUTE[0] * n), int(MUTE[1] * n)
    own = audio.astype(np.float64).copy()
    gate = np.ones(n)
    gate[a:b] = 1 - _fade(b - a, rate)
    own *= gate
    voice = held_out_voice(seed, b - a, rate, data).astype(np.float64)
    mono_own = own.mean(axis=0)
    active = np.abs(mono_own) > 0.1 * np.abs(mono_own).max()
    rms_own = np.sqrt(np.mean(mono_own[active] ** 2)) if active.any() else 0.05
    voice *= rms_own / (np.sqrt(np.mean(voice ** 2)) + 1e-9) * _fade(b - a, rate)
    off = np.zeros(n)
    off[a:b] = voice
    mix = own + off[None]
    wav = work / f"{clip.stem}_muted.wav"
    sf.write(wav, mix.T.astype(np.float32), rate, subtype="FLOAT")
    out = media.remux(clip, wav, work / f"{clip.stem}_muted.mp4")
    wav.unlink()
    return {"video": out, "own": mono_own, "off": off, "mix": mix.mean(axis=0), "rate": rate,
            "mute_s": (a / rate, b / rate), "duration": n / rate}


_VAD = []


def speech_frames(wave: np.ndarray, rate: int, n: int) -> np.ndarray:
    """``[n]`` bool 20 ms frames where Silero VAD (default settings, 16 kHz) finds speech in
    ``wave`` (``[samples]`` float at ``rate`` Hz)."""
    import soxr
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    if not _VAD:
        _VAD.append(load_silero_vad())
    x = torch.from_numpy(soxr.resample(wave.astype(np.float32), rate, 16000))
    found = get_speech_timestamps(x, _VAD[0], sampling_rate=16000, return_seconds=True)
    return _frames([[t["start"], t["end"]] for t in found], n)


def truth(item: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """``(own voice speech and audible [F], off-screen voice active [F], mixture active [F], F,
    own voice audible [F] (the energy truth))`` on 20 ms frames."""
    from avsplit.associate import speech_envelope
    from avsplit.events import active_ranges

    rate = item["rate"]
    env = {k: speech_envelope(item[k].astype(np.float32), rate)[0] for k in ("own", "off", "mix")}
    n = int(np.ceil(item["duration"] / FRAME_S))
    own = _frames(active_ranges(env["own"], env["mix"], 0.01), n)
    off = _frames(active_ranges(env["off"], env["mix"], 0.01), n)
    mix = _frames(active_ranges(env["mix"], env["mix"], 0.01), n)
    return own & speech_frames(item["own"], rate, n), off, mix, n, own


def _f1(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
    return int((pred & ref).sum()), int((pred & ~ref).sum()), int((~pred & ref).sum())


def run(data: Path, work: Path) -> list[dict]:
    root = data / "av" / "speech"
    clips = sorted(p for c in CORPORA for p in (root / c).rglob("*") if p.suffix.lower() in SUFFIXES)
    rows = []
    for i, clip in enumerate(clips):
        item = make_item(clip, 100 + i, data, work)
        own, off, mix_active, n, own_energy = truth(item)
        csv_path = work / f"{clip.stem}.csv"
        proc, wall = run_separate(item["video"], work / "out", "--no-video", "--device", "cpu",
                                  "--events", csv_path)
        row = {"clip": clip.relative_to(root).as_posix(), "seconds": round(wall, 1),
               "duration": round(item["duration"], 2)}
        if proc.returncode != 0:
            row["error"] = proc.stderr.strip()[-300:]
            rows.append(row)
            continue
        events = list(csv.DictReader(csv_path.read_text().splitlines()))
        face = [[float(e["start_s"]), float(e["end_s"])] for e in events
                if e["track"] != "offscreen" and e["audible"] == "1" and e["visible"] == "1"]
        offscreen = [[float(e["start_s"]), float(e["end_s"])] for e in events
                     if e["track"] == "offscreen" and e["audible"] == "1" and e["label"] == "voice"]
        pred = _frames(face, n)
        mute = np.zeros(n, bool)
        mute[int(item["mute_s"][0] / FRAME_S):int(item["mute_s"][1] / FRAME_S)] = True
        row.update(
            faces=len({e["track"] for e in events if e["track"] != "offscreen"}),
            product=_f1(pred, own), whole=_f1(np.ones(n, bool), own), mixture=_f1(mix_active, own),
            energy={"product": _f1(pred, own_energy), "whole": _f1(np.ones(n, bool), own_energy),
                    "mixture": _f1(mix_active, own_energy)},
            muted_face_audible=round(float(pred[mute].mean()), 3),
            muted_mixture_audible=round(float(mix_active[mute].mean()), 3),
            offscreen_recall=round(float(_frames(offscreen, n)[off].mean()) if off.any() else float("nan"), 3))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _f(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / max(2 * tp + fp + fn, 1)


def table(rows: list[dict]) -> str:
    ok = [r for r in rows if "error" not in r]
    lines = ["| timeline | frame F1, pooled | frame F1, mean per clip | frame F1, pooled, energy truth "
             "| face audible in the muted interval |",
             "|---|---:|---:|---:|---:|"]
    for key, name, muted in (("product", "avsplit separate --events", "muted_face_audible"),
                             ("mixture", "baseline: mixture activity", "muted_mixture_audible"),
                             ("whole", "floor: whole clip", None)):
        pooled = _f(*np.sum([r[key] for r in ok], axis=0)) if ok else float("nan")
        mean = np.mean([_f(*r[key]) for r in ok]) if ok else float("nan")
        energy = [r["energy"][key] for r in ok if "energy" in r]
        e = f"{_f(*np.sum(energy, axis=0)):.2f}" if energy else ""
        m = f"{100 * np.mean([r[muted] for r in ok]):.0f} %" if muted else "100 %"
        lines.append(f"| {name} | {pooled:.2f} | {mean:.2f} | {e} | {m} |")
    rec = [r["offscreen_recall"] for r in ok if np.isfinite(r["offscreen_recall"])]
    lines += ["", f"Off-screen voice: {100 * np.mean(rec):.0f} % of its active frames lie in an "
              f"`offscreen` audible row (mean over {len(rec)} clips).", "",
              "| clip | s | face tracks | F1 | F1, energy truth | face audible while muted | off-screen voice found |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['clip']} | | | failed: {r['error'][-100:]} | | | |")
            continue
        e = f"{_f(*r['energy']['product']):.2f}" if "energy" in r else ""
        lines.append(f"| {r['clip']} | {r['duration']} | {r['faces']} | {_f(*r['product']):.2f} | {e} | "
                     f"{100 * r['muted_face_audible']:.0f} % | {100 * r['offscreen_recall']:.0f} % |")
    return "\n".join(lines)


def main() -> None:
    bench_main(__doc__, "benchmarks/events.py", "events", "Audio-visual event timeline (`benchmarks/events.py`)", run, table)


if __name__ == "__main__":
    main()
