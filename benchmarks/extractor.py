"""Face-steered target-speaker extractor vs blind separation + association (issue: the ship test).

On the clips the on-screen benchmark scores (``DATA/av/speech`` without the development clips)
and the side-by-side pairs of the speakers benchmark, with the real MediaPipe face tracks of the
real videos, at 16 kHz in-process (built as ``benchmarks/tune_association.py`` builds its
examples, interferer seeds of the benchmarks' range but not the same draws):

* **blind + association**: the product's voice candidates from the blind separator (``--blind``,
  default the bundled weights) and :func:`avsplit.associate.decide` with the shipped thresholds;
* **extractor**: the cue-steered network (``--extractor``) given each face's cue
  (:func:`avsplit.cue.mouth_cue` of the track's jaw opening), slot 0 refined by the speech
  enhancer's mask as the product refines its candidates (``slot 0 x E``), and raw slot 0.

Scored as in ``tune_association.py``: SI-SDRi of the face's stem; right when the on-screen stem
is closer to the own voice than the rest is (and the rest closer to the interferer), or, for
two faces, when a face's stem is closer to its own voice than to the other person's.

    python benchmarks/extractor.py --data ../shared/data --extractor runs/speech5/best.pt
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from onscreen import CLIP_GLOBS
from report import DEV_CLIPS
from speakers import PAIRS
from tune_association import ENGINE, RATE, build, score

from avsplit import associate as A
from avsplit.audio import si_sdr, stft_frame_times
from avsplit.cue import mouth_cue
from avsplit.modes.speech import refine_speech_masks


def _scored_clips(data: Path) -> list[str]:
    root = data / "av" / "speech"
    return sorted(p.relative_to(root).as_posix() for g in CLIP_GLOBS for p in root.glob(g)
                  if p.relative_to(root).as_posix() not in DEV_CLIPS)


def _extract(ex: dict, extractor, track, enhanced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(slot 0 x enhancer mask, raw slot 0)`` waveforms for one face track; ``enhanced``: the
    enhancer's output for the example's mixture."""
    mix = ex["mix"]
    cue = mouth_cue(track.timestamps, track.activity, stft_frame_times(len(mix), extractor.hop, RATE))
    masks = extractor.masks(mix, cue=cue)
    refined = refine_speech_masks(masks, mix, enhanced, extractor.n_fft, extractor.hop)
    return (extractor.apply(mix[None], RATE, refined[:1])[0, 0],
            extractor.apply(mix[None], RATE, masks[:1])[0, 0])


def evaluate(examples: list[dict], extractor) -> list[dict]:
    thresholds = dict(z_best=A.Z_BEST, r_best=A.R_BEST, z_other=A.Z_OTHER, r_other=A.R_OTHER,
                      silence_db=A.SILENCE_DB)
    rows = []
    for ex in examples:
        blind = score(ex, thresholds, {})
        mix, refs = ex["mix"], ex["refs"]
        base = [float(si_sdr(mix, r)) for r in refs]
        people = []
        enhanced = ENGINE.speech_enhancer().enhance(mix)
        if ex["mode"] == "onscreen":
            track = max(ex["tracks"], key=lambda t: int(np.isfinite(t.activity).sum()), default=None)
            targets = [(track, 0)]
        else:
            by_id = {t.track_id: t for t in ex["tracks"]}
            targets = [(by_id.get(ex["sides"].get(side)), side) for side in (0, 1)]
        for (track, j), (b_gain, b_right) in zip(targets, blind):
            entry = {"blind": b_gain, "blind_right": b_right}
            if track is None:
                entry.update(extractor=0.0, extractor_right=False, raw=0.0, raw_right=False)
            else:
                for key, wave in zip(("extractor", "raw"), _extract(ex, extractor, track, enhanced)):
                    s_own = float(si_sdr(wave, refs[j]))
                    if ex["mode"] == "onscreen":
                        rest = mix - wave
                        right = s_own > float(si_sdr(rest, refs[0])) and \
                            float(si_sdr(rest, refs[1])) > float(si_sdr(wave, refs[1]))
                    else:
                        right = s_own > float(si_sdr(wave, refs[1 - j]))
                    entry[key], entry[f"{key}_right"] = s_own - base[j], bool(right)
            people.append(entry)
        rows.append({"mode": ex["mode"], "kind": ex["kind"], "clip": ex["clip"], "people": people})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| condition | stems | blind + association | right | extractor (slot 0 x enhancer) | right | extractor, raw slot 0 | right |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, kind in [("onscreen", "voice"), ("onscreen", "noise"), ("speakers", "2v"),
                       ("speakers", "2v+off")]:
        ps = [p for r in rows if r["mode"] == mode and r["kind"] == kind for p in r["people"]]
        if not ps:
            continue
        m = lambda k: np.mean([p[k] for p in ps])
        lines.append(f"| {mode}, {kind} (0 dB) | {len(ps)} | {m('blind'):.1f} dB | "
                     f"{100 * m('blind_right'):.0f} % | {m('extractor'):.1f} dB | "
                     f"{100 * m('extractor_right'):.0f} % | {m('raw'):.1f} dB | {100 * m('raw_right'):.0f} % |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--extractor", type=Path, required=True, help="cue-steered checkpoint")
    parser.add_argument("--blind", type=Path, default=None, help="blind separator (default: bundled)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips and pairs")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    blind = ENGINE.separator("speech-blstm", args.blind)
    extractor = ENGINE.separator("speech-blstm", args.extractor)
    if not extractor.takes_cue:
        parser.error(f"{args.extractor} is not a cue-steered network")
    with tempfile.TemporaryDirectory() as tmp:
        examples = build(args.data, 1, 1, Path(tmp), clips=_scored_clips(args.data)[:args.limit],
                         pairs=PAIRS[:args.limit],
                         separator=blind, seed=100)
    rows = evaluate(examples, extractor)
    print()
    print(table(rows))
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
