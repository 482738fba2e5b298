"""Speakers benchmark (mix-and-separate of two real talking faces put side by side).

``--mode speakers`` writes one ``speaker-<track id>`` stem per visible face. To score it on
real video with known references, we take two single-talker videos of DIFFERENT people from
``DATA/av/speech`` (a fixed list, :data:`PAIRS`, mostly across folders; CREMA-D has one actor
only, so at most one CREMA-D clip is ever used, and the seven GRID clips are seven different
talkers, checked on their frames), trim both to the shorter one, scale both to 360 px height and
put them side by side (ffmpeg ``hstack``, 25 fps, H.264). The sound is made here: each clip's own
voice (mono, 16 kHz), the two at equal RMS (0 dB), written as a 48 kHz wav and muxed as AAC
192 kb/s. Conditions (``--kinds``):

* ``2v``: the two visible voices only;
* ``2v+off``: plus an off-screen voice, a held-out LibriSpeech/speechocean762/SiSEC speaker
  (several utterances back to back), at 0 dB relative to each visible voice;
* ``blind``: audio only, no video: the 100 fixed held-out two-voice mixtures at exactly 0 dB
  of :func:`avsplit.train.speech.validation_set` (condition ``2spk``, 3 s each).

For ``2v`` / ``2v+off`` we run ``avsplit separate PAIR.mp4 --mode speakers --no-video --json -q
--device cpu`` and score at 16 kHz mono, against the decoded audio of the muxed mp4 (what the
CLI sees, AAC included) as the mixture and each clip's own voice (trimmed to the common length)
as the reference. The manifest's face tracks say which stem is whose: a track whose mean box
centre is left of the middle is the left person's, right of it the right person's (one track per
half, the most-seen one; further tracks, or a track with no box, count as unmatched). Per
visible person:

* SI-SDR improvement of their ``speaker-<id>.wav`` over the mixture (a person with no matched
  track, no stem or a stem flagged ``silent`` scores the mixture: 0 dB, and counts as wrong);
* right face: their stem is closer (SI-SDR) to their own voice than to the other visible
  person's voice;
* ceilings in the same run, with the bundled separator in-process: the oracle assignment (the
  best single separated speech slot for that person, chosen with the reference) and the ideal
  ratio mask (32 ms / 8 ms STFT, ``|S| / (|S| + |mix - S|)``);
* speed: real-time factor (wall seconds of the CLI process, start-up included / seconds of
  input) and the size of the side-by-side video.

``blind`` scores the bundled separator's speech slots under the best distinct slot assignment
per voice, the ideal ratio mask at the model's own STFT (512 / 256 at 16 kHz) and the mixture
(0 dB improvement by definition).

    python benchmarks/speakers.py --data ../shared/data [--limit N] [--kinds 2v,2v+off,blind]
        [--json-out runs/bench_speakers.json] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import held_out_voice, parse_args, product_masks, run_separate, write_section
import torch

from avsplit import media
from avsplit.audio import istft, resample, si_sdr, stft
from avsplit.engine import Engine

ENGINE = Engine("cpu")
RATE = 16000          # scoring rate (the separator's rate)
MUX_RATE = 48000      # rate of the wav that goes into the mp4
HEIGHT = 360          # both videos are scaled to this height
FPS = 25

# (left, right), relative to DATA/av/speech; every pair is two different people (the 14
# people: 7 GRID talkers, face1 / face2 / face4, the 3 HDTF women, CREMA-D actor 1001).
# (pairs with a development clip of report.DEV_CLIPS are left out: RD_Radio34 | face2 and
# 1001_DFA_NEU | face2 were pairs until 2026-12-02)
PAIRS = [
    ("talking_heads/face1.mp4", "talking_heads_2/RD_Radio2_000.mp4"),          # M / F
    ("talking_heads/face4.mp4", "talking_heads_2/WDA_KatieHill_000.mp4"),      # F / F
    ("grid/brbk7n.mpg", "talking_heads/face1.mp4"),                            # F / M
    ("talking_heads_2/RD_Radio2_000.mp4", "grid/sbia1a.mpg"),                  # F / M
    ("grid/id2_vcd_swwp2s.mpg", "talking_heads/face4.mp4"),                    # M / F
    ("grid/lwbsza.mpg", "talking_heads_2/WDA_KatieHill_000.mp4"),              # F / F
]
KINDS = {"2v": "2 visible", "2v+off": "2 visible + 1 off-screen", "blind": "blind 2 voices"}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) + 1e-12


def _voice(clip: Path) -> np.ndarray:
    """The clip's own audio, mono at :data:`RATE`."""
    audio, rate = media.load_audio(clip)
    return resample(audio.mean(axis=0), rate, RATE)


def _offscreen_voice(i: int, length: int, data: Path) -> np.ndarray:
    """A held-out speaker (several utterances back to back), ``length`` samples at :data:`RATE`."""
    return held_out_voice(200 + i, length, RATE, data)


def _side_by_side(left: Path, right: Path, seconds: float, wav: Path, out: Path) -> None:
    """``left | right`` (both trimmed to ``seconds``, :data:`HEIGHT` px high, even widths) with
    ``wav`` as the sound: H.264 + AAC 192 kb/s mp4."""
    branch = f"fps={FPS},scale=-2:{HEIGHT},setsar=1,format=yuv420p"
    cmd = [media.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-t", f"{seconds:.3f}", "-i", f"file:{left}", "-t", f"{seconds:.3f}", "-i", f"file:{right}",
           "-i", f"file:{wav}",
           "-filter_complex", f"[0:v]{branch}[a];[1:v]{branch}[b];[a][b]hstack=inputs=2[v]",
           "-map", "[v]", "-map", "2:a:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
           "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart",
           f"file:{out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not build {out.name}: {proc.stderr.strip()[-300:]}")


def _match_tracks(tracks: list[dict]) -> tuple[dict, int]:
    """``({"left": track, "right": track}, unmatched count)`` from the manifest's tracks."""
    halves: dict[str, list[dict]] = {"left": [], "right": []}
    unmatched = 0
    for tr in tracks:
        box = tr.get("mean_box") or []
        if len(box) != 4 or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in box):
            unmatched += 1
            continue
        cx = (box[0] + box[2]) / 2
        if cx < 0.5:
            halves["left"].append(tr)
        elif cx > 0.5:
            halves["right"].append(tr)
        else:
            unmatched += 1
    matched = {}
    for side, trs in halves.items():
        if trs:
            trs = sorted(trs, key=lambda t: (-t.get("seen_fraction", 0.0), -t.get("score", 0.0)))
            matched[side] = trs[0]
            unmatched += len(trs) - 1
    return matched, unmatched


def _irm(own: np.ndarray, mix: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Ideal ratio mask estimate of ``own`` in ``mix`` (``|S| / (|S| + |mix - S|)``)."""
    s = stft(torch.from_numpy(own), n_fft, hop)
    n = stft(torch.from_numpy(mix - own), n_fft, hop)
    irm = s.abs() / (s.abs() + n.abs() + 1e-8)
    return istft(stft(torch.from_numpy(mix), n_fft, hop) * irm, n_fft, hop, len(mix)).numpy()


def _ceilings(refs: list[np.ndarray], mix: np.ndarray, model) -> list[dict]:
    """Per reference: SI-SDR (dB) of the best single speech slot and of the IRM (32 / 8 ms)."""
    masks = product_masks(ENGINE, model, model.mono(mix[None], RATE))
    k = masks.shape[0] - 1  # voice candidates, as the product has them
    slots = model.apply(mix[None], RATE, masks)[:k, 0]  # [k, S]
    n_fft, hop = int(2 * round(0.016 * RATE)), int(round(0.008 * RATE))
    return [{"oracle": max(float(si_sdr(slots[j], ref)) for j in range(k)),
             "irm": float(si_sdr(_irm(ref, mix, n_fft, hop), ref))} for ref in refs]


def _stem_path(outdir: Path, manifest: dict, track_id) -> tuple[Path | None, bool]:
    """``(wav of speaker-<track_id>, flagged silent)``; ``(None, False)`` when there is none."""
    name = f"speaker-{track_id}"
    stem = next((s for s in manifest.get("stems", []) if s.get("name") == name), None)
    path = outdir / f"{name}.wav"
    if stem is None or not path.exists():
        return None, False
    return path, bool(stem.get("silent", False))


def run_pairs(data: Path, work: Path, kinds: list[str], limit: int | None, model) -> list[dict]:
    speech = data / "av" / "speech"
    pairs = PAIRS[:limit]
    rows = []
    for kind in kinds:
        for i, (a, b) in enumerate(pairs):
            name = f"pair{i}-{'off' if kind == '2v+off' else '2v'}"
            row = {"pair": f"{Path(a).name} | {Path(b).name}", "kind": kind}
            try:
                va, vb = _voice(speech / a), _voice(speech / b)
                n0 = min(len(va), len(vb))
                va, vb = va[:n0], vb[:n0] * (_rms(va[:n0]) / _rms(vb[:n0]))  # 0 dB
                voices = [va, vb]
                off = np.zeros(n0, np.float32)
                if kind == "2v+off":
                    off = _offscreen_voice(i, n0, data)
                    off = off * (_rms(va) / _rms(off))  # 0 dB against each visible voice
                mix = va + vb + off
                gain = 0.9 / np.abs(mix).max() if np.abs(mix).max() > 0.9 else 1.0
                voices, off, mix = [v * gain for v in voices], off * gain, mix * gain
                wav = work / f"{name}.wav"
                media.write_audio(wav, resample(mix.astype(np.float32), RATE, MUX_RATE), MUX_RATE, "wav")
                video = work / f"{name}.mp4"
                _side_by_side(speech / a, speech / b, n0 / RATE, wav, video)
            except Exception as e:  # a clip that cannot be read or built
                rows.append({**row, "error": f"building the pair failed: {e}"[-300:]})
                print(json.dumps(rows[-1]), flush=True)
                continue
            # the muxed AAC is what the CLI sees: it is the mixture we score against
            coded, _ = media.load_audio(video, sample_rate=RATE)
            mixc = coded.mean(0)
            n = min(len(mixc), n0)
            mixc, refs, off = mixc[:n], [v[:n] for v in voices], off[:n]
            proc, wall = run_separate(video, work / "out", "--mode", "speakers", "--no-video",
                                      "--json", "--device", "cpu")
            if proc.returncode != 0:
                rows.append({**row, "error": proc.stderr.strip()[-300:]})
                print(json.dumps(rows[-1]), flush=True)
                continue
            try:
                outdir = Path(json.loads(proc.stdout.splitlines()[0])["outdir"])
            except (ValueError, KeyError, IndexError):
                outdir = work / "out" / name
            manifest = json.loads((outdir / "manifest.json").read_text())
            matched, unmatched = _match_tracks(manifest.get("tracks", []))
            ceilings = _ceilings(refs, mixc, model)
            people = []
            for j, side in enumerate(("left", "right")):
                own, other = refs[j], refs[1 - j]
                base = float(si_sdr(mixc, own))
                tr = matched.get(side)
                path, silent = (_stem_path(outdir, manifest, tr["track_id"]) if tr else (None, False))
                if path is not None and not silent:
                    est = media.load_audio(path, sample_rate=RATE)[0].mean(0)[:n]
                    est = np.pad(est, (0, n - len(est)))
                    s_own, s_other = float(si_sdr(est, own)), float(si_sdr(est, other))
                    right = s_own > s_other
                else:  # no face, no stem or a silent stem: the person gets the mixture
                    s_own, right = base, False
                people.append({"side": side, "clip": Path((a, b)[j]).name,
                               "track_id": tr["track_id"] if tr else None,
                               "stem": path.name if path is not None else None, "silent": silent,
                               "mixture_si_sdr": base, "si_sdri": s_own - base,
                               "oracle_assign_si_sdri": ceilings[j]["oracle"] - base,
                               "irm_si_sdri": ceilings[j]["irm"] - base, "right_face": bool(right)})
            row.update({
                "duration": n / RATE,
                "size": f"{manifest['input']['video']['width']}x{manifest['input']['video']['height']}",
                "faces": len(manifest.get("tracks", [])), "unmatched_tracks": unmatched,
                "aac_si_sdr": float(si_sdr(mixc, mix[:n])),
                "people": people, "rtf": wall / (n / RATE)})
            if kind == "2v+off":
                offscreen = outdir / "offscreen.wav"
                if offscreen.exists():
                    est = media.load_audio(offscreen, sample_rate=RATE)[0].mean(0)[:n]
                    est = np.pad(est, (0, n - len(est)))
                    row["offscreen_si_sdri"] = float(si_sdr(est, off)) - float(si_sdr(mixc, off))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def run_blind(data: Path, model, n: int) -> dict:
    """Held-out two-voice mixtures at 0 dB, audio only: separator (best distinct slots), IRM."""
    from avsplit.train.speech import load_pools, validation_set

    pools = load_pools(data, "heldout", RATE)
    mix_b, speech_b, _, _ = validation_set(pools, 3 * RATE, n=n)["2spk"]
    k = model.unordered or 2
    sep, irm, floor = [], [], []
    for mix, speech in zip(mix_b.numpy(), speech_b.numpy()):
        refs = [s for s in speech if np.any(s)]
        waves = model.slot_waves(mix, model.masks(mix))[:k]
        scores = np.array([[float(si_sdr(w, r)) for r in refs] for w in waves])  # [k, R]
        best = max(itertools.permutations(range(k), len(refs)),
                   key=lambda p: sum(scores[p[j], j] for j in range(len(refs))))
        for j, r in enumerate(refs):
            base = float(si_sdr(mix, r))
            sep.append(scores[best[j], j] - base)
            irm.append(float(si_sdr(_irm(r, mix, model.n_fft, model.hop), r)) - base)
            floor.append(base)
    row = {"kind": "blind", "mixtures": int(mix_b.shape[0]), "voices": len(sep),
           "si_sdri": float(np.mean(sep)), "irm_si_sdri": float(np.mean(irm)),
           "mixture_si_sdr": float(np.mean(floor)), "n_fft": model.n_fft, "hop": model.hop}
    print(json.dumps(row), flush=True)
    return row


def tables(rows: list[dict], blind: dict | None) -> str:
    ok = [r for r in rows if "error" not in r]
    out = []
    if ok or any("error" in r for r in rows):
        out += ["| condition | pairs | SI-SDRi per visible speaker | oracle assignment | ideal ratio mask | stems on the right face | RTF |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for kind in [k for k in KINDS if any(r["kind"] == k for r in ok)]:
            rs = [r for r in ok if r["kind"] == kind]
            ps = [p for r in rs for p in r["people"]]
            m = lambda key: np.mean([p[key] for p in ps])
            right = sum(p["right_face"] for p in ps)
            out.append(f"| {KINDS[kind]} (0 dB) | {len(rs)} | {m('si_sdri'):.1f} dB | "
                       f"{m('oracle_assign_si_sdri'):.1f} dB | {m('irm_si_sdri'):.1f} dB | "
                       f"{right}/{len(ps)} ({100 * right / len(ps):.0f} %) | "
                       f"{np.mean([r['rtf'] for r in rs]):.2f} |")
        for kind in [k for k in KINDS if any(r["kind"] == k for r in ok)]:
            rs = [r for r in ok if r["kind"] == kind]
            ps = [p for r in rs for p in r["people"]]
            no_track = sum(p["track_id"] is None for p in ps)
            no_stem = sum(p["track_id"] is not None and (p["stem"] is None or p["silent"]) for p in ps)
            sizes = ", ".join(sorted({r["size"] for r in rs}))
            out.append(f"\n{KINDS[kind]}: {no_track} of {len(ps)} visible people without a face "
                       f"track in their half, {no_stem} with a missing or silent stem, "
                       f"{sum(r['unmatched_tracks'] for r in rs)} unmatched face tracks; "
                       f"video sizes {sizes}.")
        errors = [r for r in rows if "error" in r]
        if errors:
            out.append("")
            out += [f"- failed: {r['pair']} ({r['kind']}): {r['error']}" for r in errors]
    if blind is not None:
        out += ["", "| blind separation (audio only) | mixtures | SI-SDRi, best distinct slots | "
                f"ideal ratio mask ({blind['n_fft']}/{blind['hop']}) | mixture |",
                "|---|---:|---:|---:|---:|",
                f"| 2 held-out voices at 0 dB, 3 s | {blind['mixtures']} | {blind['si_sdri']:.1f} dB | "
                f"{blind['irm_si_sdri']:.1f} dB | 0.0 dB |"]
    return "\n".join(out).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"),
                        help="data root (relative to the current folder)")
    parser.add_argument("--kinds", default="2v,2v+off,blind",
                        help=f"comma-separated conditions: {', '.join(KINDS)}")
    parser.add_argument("--limit", type=int, default=None, help="at most this many pairs")
    parser.add_argument("--blind-n", type=int, default=100, help="held-out mixtures for 'blind'")
    parser.add_argument("--json-out", type=Path, default=None, help="write the rows here")
    parser.add_argument("--write", type=Path, default=None,
                        help="replace the speakers section of this markdown file (docs/benchmarks.md)")
    args = parse_args(parser)  # --separate-options: the ceilings stay the bundled separator's
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown condition(s) {', '.join(unknown)}; use {', '.join(KINDS)}")
    data = args.data.resolve()
    if not (data / "av" / "speech").is_dir():
        parser.error(f"{args.data} has no av/speech folder; give the data root with --data")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = ENGINE.separator("speech-blstm")
        rows = run_pairs(data, Path(tmp), [k for k in kinds if k != "blind"], args.limit, model)
        blind = run_blind(data, model, args.blind_n) if "blind" in kinds else None
    machine = (f"{platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
               f"torch {torch.__version__}, no GPU used; load average {load:.1f} at the start")
    text = f"{tables(rows, blind)}\n\nMachine: {machine}. Date: {time.strftime('%Y-%m-%d')}."
    print()
    print(text)
    if args.json_out:
        args.json_out.write_text(json.dumps({"pairs": rows, "blind": blind}, indent=2))
    if args.write:
        intro = ("## Speakers (`benchmarks/speakers.py`)\n\n"
                 "Two single-talker videos of different people side by side (`hstack`, 360 px high), "
                 "their own voices mixed at 0 dB (plus, in the second condition, a held-out "
                 "off-screen voice at 0 dB), muxed as AAC; `avsplit separate --mode speakers` is "
                 "scored per visible person (SI-SDRi of the stem of the face track in that "
                 "person's half; right face = the stem is closer to its own person's voice than "
                 "to the other's). Ceilings from the same separated slots (oracle assignment) and "
                 "the ideal ratio mask; blind two-voice separation of held-out speakers (audio "
                 "only) for reference. RTF = wall time of the whole CLI process / clip duration.\n")
        write_section(args.write, "speakers", " ".join(["python benchmarks/speakers.py", *sys.argv[1:]]),
                      text, intro)


if __name__ == "__main__":
    main()
