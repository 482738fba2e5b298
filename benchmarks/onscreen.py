"""On-screen speech benchmark (mix-and-separate on real talking-face videos).

For each talking-face video in ``DATA/av/speech`` (its own voice is the on-screen reference;
the development clips :data:`report.DEV_CLIPS`, on which the association was tuned, are left out)
we add, at 0 dB, either off-screen speech from a held-out speaker (``DATA/audio/speech``) or
held-out background noise, run ``avsplit separate`` on the remuxed mixture, and score
``onscreen.wav``:

* SI-SDR improvement over the mixture (the mixture-as-estimate floor is 0 dB by definition);
* assignment correct: the on-screen stem is closer (SI-SDR) to the own voice than the
  off-screen stem is, and the off-screen stem is closer to the interferer than the on-screen one;
* ceilings in the same run: the oracle assignment (best subset of the same separated speech
  slots, chosen with the reference) and the ideal ratio mask; a simple audio-only baseline:
  the loudest separated voice is called on-screen (no picture);
* speed: real-time factor (wall seconds of the CLI run / seconds of input) and peak memory.

    python benchmarks/onscreen.py --data ../shared/data [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from report import (DEV_CLIPS, SEPARATE_OPTIONS, held_out_noise, held_out_voice, parse_args,
                    product_masks, run_separate, write_section)
import torch

from avsplit import media
from avsplit.audio import istft, si_sdr, stft
from avsplit.engine import Engine
from avsplit.modes.speech import speech_network

ENGINE = Engine("cpu")
CLIP_GLOBS = ["crema_d/*.flv", "grid/*.mpg", "talking_heads/*.mp4", "talking_heads_2/*.mp4",
              "noisy_restaurant/*.mp4", "interview_2spk/*.mp4"]


def _mono(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0)


def _scale_to(x: np.ndarray, ref: np.ndarray, snr_db: float) -> np.ndarray:
    """Scale ``x`` so that ``ref`` is ``snr_db`` above it (RMS over the whole signal)."""
    rx, rr = np.sqrt(np.mean(x ** 2)) + 1e-12, np.sqrt(np.mean(ref ** 2)) + 1e-12
    return x * (rr / rx) * 10 ** (-snr_db / 20)


def _interferer(kind: str, i: int, length: int, rate: int, data: Path) -> np.ndarray:
    """A held-out off-screen voice (several utterances back to back) or held-out noise."""
    if kind == "speech":
        return held_out_voice(100 + i, length, rate, data)
    return held_out_noise(100 + i, length, rate, data)


def _oracle_and_baselines(own: np.ndarray, mix: np.ndarray, rate: int, model) -> dict:
    """SI-SDR (dB, mono) of the oracle slot assignment, loudest-voice baseline and IRM."""
    mono = model.mono(mix, rate)
    masks = model.masks(mono) if "--no-enhance" in SEPARATE_OPTIONS else product_masks(ENGINE, model, mono)
    k = masks.shape[0] - 1  # voice candidates (the product: every separator slot x speech mask)
    slot_stems = model.apply(mix[None], rate, masks)[:, 0]  # [slots, S]
    best = -np.inf
    for r in range(1, k + 1):
        for subset in itertools.combinations(range(k), r):
            best = max(best, float(si_sdr(slot_stems[list(subset)].sum(0), own)))
    loudest = int(np.argmax((slot_stems[:k] ** 2).sum(1)))
    # ideal ratio mask at the same STFT resolution (32 ms / 8 ms)
    n_fft, hop = int(2 * round(0.016 * rate)), int(round(0.008 * rate))
    s = stft(torch.from_numpy(own), n_fft, hop)
    n = stft(torch.from_numpy(mix - own), n_fft, hop)
    irm = s.abs() / (s.abs() + n.abs() + 1e-8)
    irm_est = istft(stft(torch.from_numpy(mix), n_fft, hop) * irm, n_fft, hop, len(mix)).numpy()
    return {"oracle_assign": best, "loudest_voice": float(si_sdr(slot_stems[loudest], own)),
            "irm": float(si_sdr(irm_est, own))}


def run(data: Path, work: Path, kinds: list[str], limit: int | None) -> list[dict]:
    root = data / "av" / "speech"
    clips = sorted(p for g in CLIP_GLOBS for p in root.glob(g)
                   if p.relative_to(root).as_posix() not in DEV_CLIPS)[:limit]
    rows = []
    for kind in kinds:
        for i, clip in enumerate(clips):
            own_native, rate = media.load_audio(clip)
            own = _mono(own_native)
            interferer = _scale_to(_interferer(kind, i, len(own), rate, data), own, 0.0)
            mix_native = own_native + interferer[None]
            peak = np.abs(mix_native).max()
            gain = 0.9 / peak if peak > 0.9 else 1.0
            mix_native, own, interferer = mix_native * gain, own * gain, interferer * gain
            name = f"{clip.stem}-{kind}"
            wav = work / f"{name}.wav"
            media.write_audio(wav, mix_native.astype(np.float32), rate, "wav")
            video = work / f"{name}.mp4"
            media.remux(clip, wav, video)
            # the remuxed AAC is what the CLI sees; take it as the mixture reference
            coded, _ = media.load_audio(video)
            n = min(coded.shape[1], len(own))
            proc, wall = run_separate(video, work / "out", "--no-video", "--json", "--device", "cpu")
            if proc.returncode != 0:
                rows.append({"clip": clip.name, "kind": kind, "error": proc.stderr.strip()[-300:]})
                continue
            out = work / "out" / name
            onscreen, _ = media.load_audio(out / "onscreen.wav")
            offscreen, _ = media.load_audio(out / "offscreen.wav")
            on, off = _mono(onscreen)[:n], _mono(offscreen)[:n]
            mixc = _mono(coded)[:n]
            own_n, int_n = own[:n], interferer[:n]
            base = float(si_sdr(mixc, own_n))
            manifest = json.loads((out / "manifest.json").read_text())
            # the ceilings use the bundled network the CLI picks for this scene (also when
            # --separate-options gives the CLI a checkpoint)
            model = ENGINE.separator(speech_network(len(manifest["tracks"])))
            extra = _oracle_and_baselines(own_n, mixc, rate, model)
            correct = (si_sdr(on, own_n) > si_sdr(off, own_n)) and (si_sdr(off, int_n) > si_sdr(on, int_n))
            rows.append({
                "clip": clip.name, "kind": kind, "duration": n / rate,
                "size": f"{manifest['input']['video']['width']}x{manifest['input']['video']['height']}",
                "faces": len(manifest["tracks"]),
                "mixture_si_sdr": base,
                "si_sdri": float(si_sdr(on, own_n)) - base,
                "oracle_assign_si_sdri": extra["oracle_assign"] - base,
                "loudest_voice_si_sdri": extra["loudest_voice"] - base,
                "irm_si_sdri": extra["irm"] - base,
                "correct": bool(correct), "rtf": wall / (n / rate),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    ok = [r for r in rows if "error" not in r]
    lines = ["| interferer | clips | SI-SDRi onscreen.wav | oracle assignment | loudest voice (audio only) | ideal ratio mask | correct assignment | RTF (all) | RTF (720p) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind in sorted({r["kind"] for r in ok}):
        rs = [r for r in ok if r["kind"] == kind]
        hd = [r["rtf"] for r in rs if r["size"].endswith("720")]
        m = lambda key: np.mean([r[key] for r in rs])
        lines.append(f"| {'off-screen voice' if kind == 'speech' else 'noise'} (0 dB) | {len(rs)} | "
                     f"{m('si_sdri'):.1f} dB | {m('oracle_assign_si_sdri'):.1f} dB | "
                     f"{m('loudest_voice_si_sdri'):.1f} dB | {m('irm_si_sdri'):.1f} dB | "
                     f"{100 * np.mean([r['correct'] for r in rs]):.0f} % | {m('rtf'):.2f} | "
                     f"{np.mean(hd) if hd else float('nan'):.2f} |")
    errors = [r for r in rows if "error" in r]
    if errors:
        lines.append("")
        lines += [f"- failed: {r['clip']} ({r['kind']}): {r['error']}" for r in errors]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--kinds", default="speech,noise")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--json-out", type=Path, default=None, help="write per-clip rows here")
    parser.add_argument("--write", type=Path, default=None,
                        help="replace the on-screen section of this markdown file (docs/benchmarks.md)")
    args = parse_args(parser)  # and --separate-options
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.data, Path(tmp), args.kinds.split(","), args.limit)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}, "
               f"torch {torch.__version__}, no GPU used")
    text = (f"{table(rows)}\n\nPeak memory of one `avsplit separate` run: {peak_mb:.0f} MB. "
            f"Machine: {machine}. Date: {time.strftime('%Y-%m-%d')}.")
    print()
    print(text)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))
    if args.write:
        write_section(args.write, "onscreen", " ".join(["python benchmarks/onscreen.py", *sys.argv[1:]]), text)


if __name__ == "__main__":
    main()
