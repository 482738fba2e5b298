"""Tune the association thresholds (:mod:`avsplit.associate`) on the development clips.

The development clips (:data:`report.DEV_CLIPS`) are real talking-face videos of
``DATA/av/speech`` that ``benchmarks/onscreen.py`` and ``benchmarks/speakers.py`` do not score.
On them we build, in-process and at the separator's 16 kHz (no AAC round trip):

* ``onscreen``: each clip's own voice + a held-out off-screen voice at 0 dB (``--voices``
  different speakers per clip, seeds disjoint from the benchmarks'), and + held-out noise at
  0 dB (``--noises`` per clip);
* ``speakers``: :data:`DEV_PAIRS`, two dev clips of different people side by side (ffmpeg
  ``hstack``, as ``benchmarks/speakers.py`` builds them), their voices at 0 dB, with and without
  an off-screen voice.

The product's voice candidates (separator slots x enhancer speech mask), their envelopes and the
face tracks of the real video are computed once; the synchrony scores are computed once
(:func:`avsplit.associate.sync_matrix`, with the lips cue of the one-face rule); then every
threshold set of the grid is scored with
:func:`avsplit.associate.decide`, as the product decides for a clip up to 30 s:

* onscreen: SI-SDRi of the on-screen stem (the sum of the on-screen candidates; none: silence,
  0 dB SI-SDR), right when the on-screen stem is closer to the own voice than the off-screen
  rest and the rest closer to the interferer;
* speakers: per visible person, SI-SDRi of the candidates matched to their face track (none:
  the mixture, 0 dB, wrong), right when closer to their own voice than to the other person's.

The objective is the mean SI-SDRi over all onscreen examples and visible people; the top
threshold sets are printed with both modes' numbers and the share right.

    python benchmarks/tune_association.py --data ../shared/data [--json-out runs/tune.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
from report import DEV_CLIPS, held_out_noise, held_out_voice, product_masks
from speakers import RATE, _rms, _side_by_side, _voice

from avsplit import media
from avsplit.apply import slot_envelopes
from avsplit.associate import ENV_HOP_S, decide, mouth_moves, split_voice_score, sync_matrix
from avsplit.audio import si_sdr
from avsplit.clip import Clip
from avsplit.engine import Engine
from avsplit.models.speaker import talker_similarity
from avsplit.modes.speech import speech_network
from avsplit.synchrony import voice_envelopes

ENGINE = Engine("cpu")
# two dev clips of different people each (GRID talkers differ; CREMA-D is one actor)
DEV_PAIRS = [("grid/lbbc2a.mpg", "grid/lrwp9a.mpg"), ("grid/sbwe5n.mpg", "crema_d/1001_DFA_ANG_XX.flv"),
             ("crema_d/1001_DFA_DIS_XX.flv", "grid/lbbc2a.mpg"), ("grid/lrwp9a.mpg", "grid/sbwe5n.mpg"),
             ("talking_heads_2/RD_Radio34_000.mp4", "talking_heads/face2.mp4")]
GRID = {"z_best": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0], "r_best": [0.05, 0.1, 0.15, 0.2, 0.3],
        "z_other": [1.5, 2.0, 2.5, 3.0, 4.0, 99.0], "r_other": [0.15, 0.2, 0.3, 0.4],
        "silence_db": [-15.0, -20.0, -25.0, -30.0, -40.0],
        "lone_db": [float("inf"), 8.0], "join_db": [float("inf"), 0.0, 8.0],
        "pair_z": [float("inf"), 0.5, 1.0], "contrast_z": [float("inf"), 1.0, 1.5]}  # inf: rule off
RULES = ("lone_db", "join_db", "pair_z", "contrast_z")


def _candidates(mix: np.ndarray, separator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Voice candidates of a 16 kHz mixture: ``(waves [k, S], envelopes [k, N], 1-3 kHz
    envelopes [k, N] (the lips cue of the one-face rule), env_t [N])``."""
    masks = product_masks(ENGINE, separator, mix)
    k = masks.shape[0] - 1
    waves = separator.apply(mix[None], RATE, masks)[:k, 0]
    envs, env_t = slot_envelopes(mix, masks, list(range(k)), separator.n_fft, separator.hop,
                                 RATE, voice_envelopes, int(round(ENV_HOP_S * RATE)))
    return waves, envs[:, 0], envs[:, 1], env_t


def _tracks(video: Path):
    with Clip(video) as clip:
        return ENGINE.face_tracks(clip)


def build(data: Path, voices: int, noises: int, work: Path, clips: list[str] = DEV_CLIPS,
          pairs: list[tuple[str, str]] = DEV_PAIRS, separator=None, seed: int = 500) -> list[dict]:
    """Examples on ``clips`` and side-by-side ``pairs`` (default: the development ones), each
    with the product's voice candidates (``separator``: default the bundled speech network the
    CLI picks for the example's number of faces, :func:`avsplit.modes.speech.speech_network`),
    references, face tracks and synchrony scores. Interferer seeds start at ``seed``."""
    def network(tracks):
        return separator or ENGINE.separator(speech_network(len(tracks)))

    speech = data / "av" / "speech"
    examples = []
    for c, rel in enumerate(clips):
        path = speech / rel
        if not path.exists():
            continue
        own = _voice(path)
        tracks = _tracks(path)
        interferers = [("voice", held_out_voice(seed + 10 * c + i, len(own), RATE, data))
                       for i in range(voices)]
        interferers += [("noise", held_out_noise(seed + 200 + 10 * c + i, len(own), RATE, data))
                        for i in range(noises)]
        for kind, y in interferers:
            y = y * (_rms(own) / _rms(y))
            mix = own + y
            g = 0.9 / np.abs(mix).max() if np.abs(mix).max() > 0.9 else 1.0
            waves, envs, lips, env_t = _candidates(mix * g, network(tracks))
            level, scores = sync_matrix(envs, env_t, tracks, silence_db=-200.0, lips_envelopes=lips)
            split = (split_voice_score(level, scores, lips, env_t, tracks[0])
                     if len(tracks) == 1 else None)
            examples.append({"mode": "onscreen", "kind": kind, "clip": rel, "mix": mix * g,
                             "refs": [own * g, y * g], "waves": waves, "level": level,
                             "scores": scores, "tracks": tracks, "split": split})
        print(f"{rel}: {len(tracks)} face tracks", flush=True)
    for p, (a, b) in enumerate(pairs):
        va, vb = _voice(speech / a), _voice(speech / b)
        n = min(len(va), len(vb))
        va, vb = va[:n], vb[:n] * (_rms(va[:n]) / _rms(vb[:n]))
        wav = work / f"pair{p}.wav"
        media.write_audio(wav, (va + vb)[None] * 0.5, RATE, "wav")
        video = work / f"pair{p}.mp4"
        _side_by_side(speech / a, speech / b, n / RATE, wav, video)
        tracks = _tracks(video)
        sides = {}
        for tr in tracks:  # one track per half: the most-seen one
            seen = np.isfinite(tr.boxes[:, 0])
            if seen.sum() == 0:
                continue
            cx = float(np.nanmean((tr.boxes[seen, 0] + tr.boxes[seen, 2]) / 2))
            side = 0 if cx < 0.5 else 1
            if side not in sides or seen.sum() > sides[side][1]:
                sides[side] = (tr.track_id, int(seen.sum()))
        for with_off in (False, True):
            off = held_out_voice(seed + 400 + p, n, RATE, data) if with_off else np.zeros(n, np.float32)
            off = off * (_rms(va) / _rms(off)) if with_off else off
            mix = va + vb + off
            g = 0.9 / np.abs(mix).max() if np.abs(mix).max() > 0.9 else 1.0
            waves, envs, lips, env_t = _candidates(mix * g, network(tracks))
            level, scores = sync_matrix(envs, env_t, tracks, silence_db=-200.0, lips_envelopes=lips)
            examples.append({"mode": "speakers", "kind": "2v+off" if with_off else "2v",
                             "clip": f"{a} | {b}", "mix": mix * g, "refs": [va * g, vb * g],
                             "waves": waves, "level": level, "scores": scores, "tracks": tracks,
                             "sides": {s: t for s, (t, _) in sides.items()}})
        print(f"pair {a} | {b}: {len(tracks)} face tracks, halves {sorted(sides)}", flush=True)
    return examples


def score(example: dict, thresholds: dict, memo: dict) -> list[tuple[float, bool]]:
    """``[(SI-SDRi dB, right)]``: one entry (onscreen) or one per visible person (speakers)."""
    if "moving" not in memo:
        memo["moving"] = [mouth_moves(t) for t in example["tracks"]]
        memo["same"] = None  # the same-talker rule's d-vector similarity, as the CLI's
        if example.get("split") is not None:
            pair = example["waves"][list(example["split"][0])]
            memo["same"] = talker_similarity(ENGINE.speaker_encoder(),
                                             lambda a, b: pair[:, a:b], 0, pair.shape[1])
    asg = decide(example["level"], example["scores"], len(example["tracks"]),
                 moving=memo["moving"], split=example.get("split"), same_talker=memo["same"],
                 **thresholds)
    mix, waves = example["mix"], example["waves"]

    def sdr(subset: tuple, ref: int, rest: bool = False) -> float:
        key = (subset, ref, rest)
        if key not in memo:
            est = waves[list(subset)].sum(0) if subset else np.zeros_like(mix)
            memo[key] = float(si_sdr(mix - est if rest else est, example["refs"][ref]))
        return memo[key]

    if "base" not in memo:
        memo["base"] = [float(si_sdr(mix, r)) for r in example["refs"]]
    base = memo["base"]
    if example["mode"] == "onscreen":
        on = tuple(a.source_index for a in asg if a.onscreen)
        right = bool(on) and sdr(on, 0) > sdr(on, 0, True) and sdr(on, 1, True) > sdr(on, 1)
        return [(sdr(on, 0) - base[0], right)]
    out = []
    for side in (0, 1):
        track = example["sides"].get(side)
        idx = tuple(a.source_index for a in asg if a.onscreen and track is not None
                    and a.track_id == track)
        if not idx:
            out.append((0.0, False))
            continue
        out.append((sdr(idx, side) - base[side], sdr(idx, side) > sdr(idx, 1 - side)))
    return out


def search(examples: list[dict], grid: dict = GRID) -> list[dict]:
    """Every threshold set of ``grid`` (default :data:`GRID`), scored; best first."""
    memos = [dict() for _ in examples]
    results = []
    keys = list(grid)
    for values in itertools.product(*grid.values()):
        th = dict(zip(keys, values))
        per = {"onscreen": [], "speakers": []}
        for ex, memo in zip(examples, memos):
            per[ex["mode"]] += score(ex, th, memo)
        allv = per["onscreen"] + per["speakers"]
        row = {**th, "objective": float(np.mean([v for v, _ in allv]))}
        for mode, vs in per.items():
            if vs:
                row[f"{mode}_si_sdri"] = float(np.mean([v for v, _ in vs]))
                row[f"{mode}_right"] = float(np.mean([r for _, r in vs]))
        for kind in ("voice", "noise"):
            vs = [score(ex, th, memo)[0] for ex, memo in zip(examples, memos)
                  if ex["mode"] == "onscreen" and ex["kind"] == kind]
            if vs:
                row[f"onscreen_{kind}_si_sdri"] = float(np.mean([v for v, _ in vs]))
                row[f"onscreen_{kind}_right"] = float(np.mean([r for _, r in vs]))
        results.append(row)
    results.sort(key=lambda r: -r["objective"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--voices", type=int, default=3, help="off-screen voices per dev clip")
    parser.add_argument("--noises", type=int, default=2, help="noises per dev clip")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--weights", type=Path, default=None,
                        help="speech separator checkpoint (default: the bundled weights)")
    parser.add_argument("--rules-only", action="store_true",
                        help="keep the thresholds at the current defaults, vary only the rules")
    parser.add_argument("--examples", type=Path, default=None,
                        help="cache of the built examples (read when it exists, else written)")
    args = parser.parse_args()
    if args.examples is not None and args.examples.exists():
        examples = pickle.loads(args.examples.read_bytes())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            examples = build(args.data, args.voices, args.noises, Path(tmp),
                             separator=ENGINE.separator("speech-blstm", args.weights)
                             if args.weights else None)
        if args.examples is not None:
            args.examples.write_bytes(pickle.dumps(examples))
    from avsplit import associate as A

    current = dict(z_best=A.Z_BEST, r_best=A.R_BEST, z_other=A.Z_OTHER, r_other=A.R_OTHER,
                   silence_db=A.SILENCE_DB, lone_db=A.LONE_DB, join_db=A.LONE_DB,
                   pair_z=A.PAIR_Z, contrast_z=A.CONTRAST_Z)
    grid = GRID
    if args.rules_only:
        grid = {k: (GRID[k] if k in RULES else [v]) for k, v in current.items()}
    results = search(examples, grid)
    now = next((r for r in results if all(r[k] == v for k, v in current.items())), None)
    print(f"{len(examples)} examples; current defaults: {json.dumps(now)}")
    no_rules = next((r for r in results if all(r[k] == float("inf") for k in RULES)
                     and all(r[k] == v for k, v in current.items() if k not in RULES)), None)
    print(f"current defaults without the lone-voice, join, pairing and contrast rules: {json.dumps(no_rules)}")
    for r in results[: args.top]:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}))
    if args.json_out:
        args.json_out.write_text(json.dumps({"current": now, "results": results[:200]}, indent=1))


if __name__ == "__main__":
    main()
