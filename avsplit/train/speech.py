"""Train the speech separator (:class:`avsplit.models.speech.SpeechSeparator`).

The recipe (what the model is asked to do, and how it is scored):

* **Task mix** (dynamic mixing, Zeghidour & Grangier 2021, Wavesplit Sec. 4.3): 75 % of the
  examples are two voices at a relative level of -5..+5 dB, a third of those with a real
  background (noise or instrumental music) at 0..15 dB below the speech; 25 % are one voice
  plus a background at -5..10 dB. Two speech slots (the most a mixture holds) and one
  background slot. A quarter of the two-voice examples (:data:`TURN_PROB`, since 2026-12-07)
  are voices that take turns (:func:`turn_gates`), so that a slot learns to follow one speaker
  across turns instead of holding whoever talks.
* **Loss**: negative thresholded SNR on the waveforms (MixIT, Wisdom et al. 2020, Eq. 4:
  ``-10 log10(|s|^2 / (|s - s_hat|^2 + tau |s|^2))``, capped at 30 dB), utterance-level PIT
  (Kolbaek et al. 2017) over the two speech slots; an empty speech slot, and the background
  slot of an example without background, is pushed towards silence with MixIT's thresholded
  energy term ``10 log10(|s_hat|^2 / |x|^2 + tau)``. A scale-dependent loss, not SI-SDR: under
  SI-SDR (until step 26,757) the network learnt to put the second voice into the then
  unsupervised background slot and to leave speech slot 1 at -45 dB with the right shape
  (measured on the 0 dB validation mixtures), so slot 1 never carried a voice in the product.
* **New voices**: speed perturbation (0.9..1.1, pitch and tempo together) and a formant shift
  (vocal tract length perturbation, Jaitly & Hinton 2013: the STFT magnitude is warped along
  frequency by 0.9..1.1, the phase kept).
* **Crops with speech in them**: of a few random 2 s excerpts, the one with the most active
  20 ms frames (within 35 dB of the utterance's loudest frame) is used.
* **Validation** (fixed, logged every ``eval_every`` steps): 100 held-out-speaker mixtures per
  condition at exactly 0 dB (two voices; two voices + background; one voice + background; two
  voices taking turns),
  scored with the best *distinct* slot assignment, plus the real talking-head clips of
  ``DATA/av/speech`` (audio only) mixed at 0 dB with a held-out voice. ``best.pt`` is chosen on
  the synthetic held-out mean only, so the real clips stay a check.

Run (resumes from ``OUT/last.pt``; ``--init`` warm-starts from exported weights and continues
their learning-rate schedule at the step stored in them)::

    python -m avsplit.train speech --data ../shared/data --out runs/speech3 --steps 30000
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import fftconvolve

from avsplit.audio import istft, resample, si_sdr, stft, stft_frame_times
from avsplit.cue import CUE_CHANNELS, mouth_cue
from avsplit.models.speech import SpeechSeparator, SpeechSeparatorConfig
from avsplit.train import corpus
from avsplit.train.loop import fit, model_entry

TWO_VOICE_PROB = 0.75
TWO_VOICE_BACKGROUND_PROB = 1 / 3
RELATIVE_LEVEL_DB = 5.0
SNR_TWO_VOICES_DB = (0.0, 15.0)
SNR_ONE_VOICE_DB = (-5.0, 10.0)
SILENT_SLOT_TAU = 1e-3  # MixIT threshold: an empty slot's loss bottoms out at -30 dB
# of the two-voice examples, the share in which the voices take turns (since 2026-12-07): each
# talks in its own stretches with little overlap, as an on-screen talker and an off-screen voice
# answering do. Under utterance-level PIT a slot must then follow one speaker across the turns;
# with fully overlapped voices only, the separator put both voices of a turn-taking clip into one
# slot (the events benchmark's GRID clips, docs/benchmarks.md).
TURN_PROB = 0.25
TURN_FADE_S = 0.02


@dataclass
class Pools:
    """Audio held in memory at the training rate: speech by speaker, backgrounds, RIRs."""

    speakers: list[list[np.ndarray]]
    backgrounds: list[np.ndarray]
    rirs: list[np.ndarray]


def load_pools(data: Path, split: str, rate: int, cache: Path | None = None) -> Pools:
    """Read (or load cached) speech/background pools for ``split`` at ``rate`` Hz.

    FSDD digits (0.4 s at 8 kHz) are left out: they are not the speech the product meets.
    """
    if cache is not None and cache.exists():
        z = torch.load(cache, weights_only=False)
        return Pools(**z)
    groups = {k: v for k, v in corpus.speech_speakers(data, split).items()
              if not k.startswith("fsdd/")}
    speakers = [[corpus.load_mono(f, rate) for f in files] for files in groups.values()]
    speakers = [[u for u in utts if len(u) > rate] for utts in speakers]
    speakers = [u for u in speakers if u]
    backgrounds = [corpus.load_mono(f, rate) for f in corpus.background_files(data, split)]
    backgrounds = [b for b in backgrounds if np.abs(b).max() > 1e-4]
    rirs = []
    for f in corpus.room_impulse_responses(data):
        r = corpus.load_mono(f, rate)
        peak = int(np.argmax(np.abs(r)))
        r = r[max(0, peak - 16):]
        rirs.append(r / np.sqrt((r ** 2).sum()))
    pools = Pools(speakers, backgrounds, rirs)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(pools.__dict__, cache)
    return pools


def _active_fraction(x: np.ndarray, frame: int, floor_db: float = 35.0) -> float:
    """Share of ``frame``-sample frames within ``floor_db`` of the loudest frame."""
    n = len(x) // frame
    if n == 0:
        return 0.0
    e = (x[: n * frame].reshape(n, frame) ** 2).mean(1) + 1e-12
    db = 10 * np.log10(e)
    return float(np.mean(db > db.max() - floor_db)) if db.max() > -90 else 0.0


def _crop(x: np.ndarray, length: int, rng: np.random.Generator, frame: int = 320,
          tries: int = 4) -> np.ndarray:
    """A ``length``-sample excerpt with speech in it: the most active of ``tries`` random ones.

    Shorter signals are placed at a random offset in zeros.
    """
    if len(x) < length:
        out = np.zeros(length, np.float32)
        start = rng.integers(0, length - len(x) + 1)
        out[start:start + len(x)] = x
        return out
    starts = rng.integers(0, len(x) - length + 1, size=tries)
    best = max(starts, key=lambda s: _active_fraction(x[s:s + length], frame))
    return x[best:best + length].copy()


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x ** 2) + 1e-10)


def _formant_shift(x: np.ndarray, alpha: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Vocal tract length perturbation: magnitude warped along frequency by ``alpha``, phase kept."""
    spec = stft(torch.from_numpy(x), n_fft, hop)  # [F, T]
    mag, phase = spec.abs(), torch.angle(spec)
    bins = mag.shape[0]
    src = torch.clamp(torch.arange(bins, dtype=torch.float32) / alpha, 0, bins - 1)
    lo = src.floor().long()
    hi = torch.clamp(lo + 1, max=bins - 1)
    w = (src - lo)[:, None]
    warped = mag[lo] * (1 - w) + mag[hi] * w
    return istft(torch.polar(warped, phase), n_fft, hop, len(x)).numpy().astype(np.float32)


def _voice(utts: list[np.ndarray], length: int, rng: np.random.Generator, rate: int,
           augment: bool) -> np.ndarray:
    """One speaker's excerpt, optionally speed- and formant-perturbed (a 'new' voice)."""
    x = utts[rng.integers(len(utts))]
    if augment and rng.random() < 0.5:
        speed = rng.uniform(0.9, 1.1)
        need = int(np.ceil(length * speed)) + 1
        x = _crop(x, need, rng)
        x = resample(x, int(round(rate * speed)), rate)[:length]
        if len(x) < length:
            x = np.pad(x, (0, length - len(x)))
    else:
        x = _crop(x, length, rng)
    if augment and rng.random() < 0.3:
        x = _formant_shift(x, rng.uniform(0.9, 1.1))
    return x.astype(np.float32)


def turn_gates(length: int, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    """Gains ``[2, length]`` float32 (0..1) for two voices that take turns: 2-4 turns of at
    least a quarter of the segment's length / turns, alternating speakers (who starts is
    drawn), each stretched by 0-0.15 s of overlap into its neighbours, 20 ms fades."""
    n_turns = int(rng.integers(2, 5))
    cuts = np.sort(rng.uniform(0, 1, n_turns - 1))
    bounds = np.concatenate([[0.0], cuts, [1.0]])
    widths = np.diff(bounds)
    widths = 0.25 / n_turns + widths * (1 - 0.25) / widths.sum()  # no turn shorter than 1/4 of its share
    bounds = np.concatenate([[0.0], np.cumsum(widths)]) * length
    first = int(rng.integers(2))
    fade = max(1, int(TURN_FADE_S * rate))
    gates = np.zeros((2, length), np.float32)
    for i in range(n_turns):
        a = max(0, int(bounds[i] - rng.uniform(0, 0.15) * rate))
        b = min(length, int(bounds[i + 1] + rng.uniform(0, 0.15) * rate))
        g = np.ones(b - a, np.float32)
        k = min(fade, (b - a) // 2)
        ramp = np.linspace(0, 1, k, dtype=np.float32)
        g[:k] = np.minimum(g[:k], ramp)
        g[len(g) - k:] = np.minimum(g[len(g) - k:], ramp[::-1])
        row = (first + i) % 2
        gates[row, a:b] = np.maximum(gates[row, a:b], g)
    return gates


def make_mixture(pools: Pools, length: int, rng: np.random.Generator, n_speakers: int | None = None,
                 relative_db: float | None = None, snr_db: float | None = None,
                 background: bool | None = None, reverb_prob: float = 0.3,
                 augment: bool = True, rate: int = 16000, turns: bool | None = None,
                 turn_prob: float = TURN_PROB):
    """One example of the recipe (see the module docstring); fixed values override the draws.

    Args:
        n_speakers: 1 or 2 voices (drawn: 2 with p = 0.75).
        relative_db: level of the second voice relative to the first (drawn: -5..5 dB).
        snr_db: speech-to-background ratio in dB (drawn per case).
        background: add a background (drawn: always with one voice, p = 1/3 with two).
        turns: two voices that take turns (:func:`turn_gates`; drawn with ``turn_prob`` for
            two voices, never for one).

    Returns:
        ``(mixture [length], speech [2, length], background [length], has_background)``;
        float32 arrays, an unused speech row is zeros, ``mixture == speech.sum(0) + background``.
    """
    if n_speakers is None:
        n_speakers = 2 if rng.random() < TWO_VOICE_PROB else 1
    if background is None:
        background = n_speakers == 1 or rng.random() < TWO_VOICE_BACKGROUND_PROB
    if turns is None:
        turns = n_speakers == 2 and rng.random() < turn_prob
    gates = turn_gates(length, rng, rate) if turns and n_speakers == 2 else None
    speech = np.zeros((2, length), np.float32)
    chosen = rng.choice(len(pools.speakers), size=n_speakers, replace=False)
    level = rng.uniform(-28, -16)
    rel = rng.uniform(-RELATIVE_LEVEL_DB, RELATIVE_LEVEL_DB) if relative_db is None else relative_db
    for row, spk in enumerate(chosen):
        x = _voice(pools.speakers[spk], length, rng, rate, augment)
        if gates is not None:
            x = x * gates[row]
        elif augment and rng.random() < 0.15:  # the voice covers only part of the segment
            keep = rng.integers(length // 2, length)
            start = rng.integers(0, length - keep + 1)
            x[:start] = 0
            x[start + keep:] = 0
        if pools.rirs and rng.random() < reverb_prob:
            x = fftconvolve(x, pools.rirs[rng.integers(len(pools.rirs))])[:length].astype(np.float32)
        if not np.any(x):
            x = _crop(pools.speakers[spk][0], length, rng)
        gain_db = level + (rel if row == 1 else 0.0) - _rms_db(x)
        speech[row] = x * 10 ** (gain_db / 20)
    bg = np.zeros(length, np.float32)
    if background and pools.backgrounds:
        for _ in range(1 + int(rng.random() < 0.3)):
            bg += _crop(pools.backgrounds[rng.integers(len(pools.backgrounds))], length, rng)
        if np.any(bg):
            if snr_db is None:
                snr_db = rng.uniform(*(SNR_ONE_VOICE_DB if n_speakers == 1 else SNR_TWO_VOICES_DB))
            target = _rms_db(speech.sum(0)) - snr_db
            bg *= 10 ** ((target - _rms_db(bg)) / 20)
    has_bg = bool(np.any(bg))
    mixture = speech.sum(0) + bg
    peak = np.abs(mixture).max()
    if peak > 0.99:
        speech, bg, mixture = speech / peak * 0.9, bg / peak * 0.9, mixture / peak * 0.9
    return mixture.astype(np.float32), speech.astype(np.float32), bg.astype(np.float32), has_bg


def make_batch(pools: Pools, batch: int, length: int, rng: np.random.Generator, rate: int = 16000,
               turn_prob: float = TURN_PROB):
    """Stack :func:`make_mixture` examples: ``[B, S]``, ``[B, 2, S]``, ``[B, S]``, ``[B]`` bool."""
    items = [make_mixture(pools, length, rng, rate=rate, turn_prob=turn_prob) for _ in range(batch)]
    mix, speech, bg, has_bg = zip(*items)
    return (torch.from_numpy(np.stack(mix)), torch.from_numpy(np.stack(speech)),
            torch.from_numpy(np.stack(bg)), torch.tensor(has_bg))


def _neg_snr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``-10 log10(|s|^2 / (|s - s_hat|^2 + tau |s|^2))`` over the last axis (dB)."""
    ref = reference.pow(2).sum(-1)
    err = (reference - estimate).pow(2).sum(-1)
    return -10 * torch.log10((ref + 1e-8) / (err + SILENT_SLOT_TAU * ref + 1e-8))


def _energy(estimate: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    """MixIT's silence term ``10 log10(|s_hat|^2 / |x|^2 + tau)`` (dB); ``mixture`` ``[B, S]``
    broadcasts against ``estimate`` ``[B, ..., S]``."""
    mix = mixture.pow(2).sum(-1)
    while mix.dim() < estimate.dim() - 1:
        mix = mix[:, None]
    return 10 * torch.log10(estimate.pow(2).sum(-1) / (mix + 1e-8) + SILENT_SLOT_TAU)


def separation_loss(estimates: torch.Tensor, mixture: torch.Tensor, speech: torch.Tensor,
                    background: torch.Tensor, has_background: torch.Tensor,
                    fixed: torch.Tensor | None = None) -> torch.Tensor:
    """Permutation-invariant thresholded-SNR loss over the speech slots, plus the background slot.

    Args:
        estimates: ``[B, K + 1, S]`` separated waveforms (speech slots, then background).
        mixture: ``[B, S]``; speech: ``[B, K, S]`` (silent rows for absent voices);
        background: ``[B, S]``; has_background: ``[B]`` bool.
        fixed: ``[B]`` bool, examples whose slots are not permuted (slot ``k`` is voice ``k``:
            the target-speaker extractor given a cue for voice 0); default none.

    Returns:
        Scalar loss in dB (lower is better): per active voice ``-SNR`` (capped at 30 dB) under
        the best slot permutation, for an absent voice the energy term; ``-SNR`` of the
        background slot where there is a background, else its energy term (half weight).
    """
    k = speech.shape[1]
    est = estimates[:, :k]
    active = speech.pow(2).sum(-1) > 0  # [B, K]
    neg_snr = _neg_snr(est[:, :, None], speech[:, None])  # [B, K est, K ref]
    energy = _energy(est, mixture)  # [B, K est]
    pair = torch.where(active[:, None, :], neg_snr, energy[:, :, None])
    costs = torch.stack([pair[:, list(p), list(range(k))].sum(-1)
                         for p in itertools.permutations(range(k))], dim=1)
    speech_loss = costs.min(dim=1).values / k
    if fixed is not None:  # permutation 0 is the identity
        speech_loss = torch.where(fixed, costs[:, 0] / k, speech_loss)
    bg_loss = torch.where(has_background, _neg_snr(estimates[:, k], background),
                          _energy(estimates[:, k], mixture))
    return (speech_loss + 0.5 * bg_loss).mean()


def validation_set(pools: Pools, length: int, n: int = 100, seed: int = 1234):
    """Fixed held-out mixtures at 0 dB: ``{condition: (mixture, speech, background, has_bg)}``
    (``2spk-turns``: two voices taking turns, :func:`turn_gates`; drawn after the other three,
    so those stay the mixtures of earlier runs)."""
    rng = np.random.default_rng(seed)
    sets = {}
    for name, n_spk, bg, turns in [("2spk", 2, False, False), ("2spk+bg", 2, True, False),
                                   ("1spk+bg", 1, True, False), ("2spk-turns", 2, False, True)]:
        items = [make_mixture(pools, length, rng, n_speakers=n_spk, relative_db=0.0, snr_db=0.0,
                              background=bg, reverb_prob=0.0, augment=False, turns=turns)
                 for _ in range(n)]
        mix, speech, b, has = zip(*items)
        sets[name] = (torch.from_numpy(np.stack(mix)), torch.from_numpy(np.stack(speech)),
                      torch.from_numpy(np.stack(b)), torch.tensor(has))
    return sets


def real_clip_set(data: Path, pools: Pools, rate: int, seconds: float = 6.0, seed: int = 99):
    """The real talking-head clips of ``DATA/av/speech`` (audio only, mono, at ``rate``), each
    mixed at 0 dB with a held-out voice: ``[(mixture, own voice, other voice)]`` float32."""
    from avsplit import media

    rng = np.random.default_rng(seed)
    clips = sorted(p for p in (Path(data) / "av" / "speech").rglob("*")
                   if p.suffix.lower() in {".mp4", ".flv", ".mpg", ".avi", ".mkv", ".webm"})
    out = []
    for clip in clips:
        try:
            audio, sr = media.load_audio(clip)
        except Exception:
            continue
        own = resample(audio.mean(0), sr, rate)[: int(seconds * rate)]
        if np.abs(own).max() < 1e-4 or len(own) < rate:
            continue
        other = np.concatenate([u for u in pools.speakers[rng.integers(len(pools.speakers))]])
        other = _crop(other, len(own), rng)
        other *= 10 ** ((_rms_db(own) - _rms_db(other)) / 20)
        out.append((own + other, own.astype(np.float32), other.astype(np.float32)))
    return out


def _distinct_sisdri(est: torch.Tensor, mix: torch.Tensor, refs: torch.Tensor) -> list[float]:
    """SI-SDR improvement per reference under the best one-to-one slot assignment.

    ``est`` ``[K, S]`` speech slots, ``mix`` ``[S]``, ``refs`` ``[R, S]`` with ``R <= K``.
    """
    k, r = est.shape[0], refs.shape[0]
    scores = si_sdr(est[:, None], refs[None])  # [K, R]
    best = max(itertools.permutations(range(k), r),
               key=lambda p: float(sum(scores[p[j], j] for j in range(r))))
    return [float(scores[best[j], j] - si_sdr(mix, refs[j])) for j in range(r)]


@torch.no_grad()
def evaluate(model: SpeechSeparator, sets: dict, real: list | None = None) -> dict:
    """Mean SI-SDR improvement (dB) per condition, distinct slots per voice (see module doc).

    Keys starting with ``real`` are the real clips; the others are the synthetic held-out sets.
    """
    model.eval()
    out = {}
    k = model.config.n_speakers
    for name, (mix, speech, bg, has) in sets.items():
        est, _ = model(mix)
        gains = []
        for b in range(mix.shape[0]):
            refs = speech[b][speech[b].pow(2).sum(-1) > 0]
            gains += _distinct_sisdri(est[b, :k], mix[b], refs)
        out[name] = float(np.mean(gains))
    if real:
        own_gain = []
        for mix, own, other in real:
            est, _ = model(torch.from_numpy(mix)[None])
            g = _distinct_sisdri(est[0, :k], torch.from_numpy(mix),
                                 torch.from_numpy(np.stack([own, other])))
            own_gain.append(g[0])
        out["real_av_speech"] = float(np.mean(own_gain))
    model.train()
    return out


CUE_PROB = 0.5  # share of training examples with a cue; the rest keep training the blind
# separator, which this same network stays (it is shipped as one only if it separates blind too)
CUE_CURRICULUM_STEPS = 4000  # the cue's lowest correlation falls from 1 to 0.3 over these


def cue_batch(speech: torch.Tensor, rng: np.random.Generator, jaw_model, hop: int, rate: int,
              r_low: float, cue_prob: float = CUE_PROB) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cues for a batch of :func:`make_batch`: ``(speech [B, 2, S] with the cued voice moved to
    row 0, cue [B, 2, frames] float32, cued [B] bool)``. An uncued example has an all-zero cue."""
    from avsplit.train.cue import pseudo_cue

    speech = speech.clone()
    b, _, length = speech.shape
    times = stft_frame_times(length, hop, rate)
    cue = torch.zeros(b, CUE_CHANNELS, len(times))
    cued = torch.zeros(b, dtype=torch.bool)
    for i in range(b):
        if rng.random() >= cue_prob:
            continue
        active = [j for j in range(2) if speech[i, j].pow(2).sum() > 0]
        target = active[int(rng.integers(len(active)))]
        if target != 0:
            speech[i] = speech[i].flip(0)
        cue[i] = torch.from_numpy(pseudo_cue(speech[i, 0].numpy(), rate, times, jaw_model, rng,
                                             (r_low, 1.0)))
        cued[i] = True
    return speech, cue, cued


def cue_validation(sets: dict, jaw_model, hop: int, rate: int, seed: int = 4321) -> dict:
    """Fixed pseudo-visual cues (r 0.3..1, no curriculum) for the voiced validation sets:
    ``{condition: (cue [N, 2, frames], speech with the cued voice in row 0)}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (mix, speech, bg, has) in sets.items():
        sp, cue, _ = cue_batch(speech, rng, jaw_model, hop, rate, 0.3, cue_prob=1.0)
        out[name] = (cue, sp)
    return out


def real_cue_set(clips: list[dict], pools: Pools, rate: int, hop: int, seconds: float = 6.0,
                 seed: int = 77) -> list[tuple]:
    """Real single-talker clips (:func:`avsplit.train.cue.real_clip_tracks`) mixed at 0 dB with
    a held-out voice, with the cue of their real face track:
    ``[(mixture, own, other, cue [2, frames])]``."""
    rng = np.random.default_rng(seed)
    out = []
    for c in clips:
        own = c["wave"][: int(seconds * rate)]
        other = np.concatenate([u for u in pools.speakers[rng.integers(len(pools.speakers))]])
        other = _crop(other, len(own), rng)
        other = other * 10 ** ((_rms_db(own) - _rms_db(other)) / 20)
        cue = mouth_cue(c["timestamps"], c["activity"], stft_frame_times(len(own), hop, rate))
        out.append(((own + other).astype(np.float32), own.astype(np.float32),
                    other.astype(np.float32), cue))
    return out


@torch.no_grad()
def evaluate_cued(model: SpeechSeparator, sets: dict, cues: dict, real: list) -> dict:
    """Extractor validation: slot 0 with the cue vs the cued voice (SI-SDRi, dB) per condition
    (``cue:<condition>``), the blind metrics of :func:`evaluate` with zero cues, and on the real
    clips with their real face tracks slot 0's SI-SDRi for the own voice (``real_cue``) and the
    share of clips where slot 0 is closer to the own voice than to the other (``real_cue_right``)."""
    out = evaluate(model, sets)
    model.eval()
    for name, (mix, speech, bg, has) in sets.items():
        cue, sp = cues[name]
        est, _ = model(mix, cue)
        gains = si_sdr(est[:, 0], sp[:, 0]) - si_sdr(mix, sp[:, 0])
        out[f"cue:{name}"] = float(gains.mean())
    gains, right = [], []
    for mix, own, other, cue in real:
        est, _ = model(torch.from_numpy(mix)[None], torch.from_numpy(cue)[None])
        e = est[0, 0]
        s_own = float(si_sdr(e, torch.from_numpy(own)))
        gains.append(s_own - float(si_sdr(torch.from_numpy(mix), torch.from_numpy(own))))
        right.append(s_own > float(si_sdr(e, torch.from_numpy(other))))
    out["real_cue"] = float(np.mean(gains))
    out["real_cue_right"] = float(np.mean(right))
    model.train()
    return out


def train(data: Path, out: Path, steps: int = 30000, batch: int = 8, seconds: float = 2.0,
          lr: float = 1e-3, checkpoint_minutes: float = 4.0, eval_every: int = 500,
          config: SpeechSeparatorConfig | None = None, seed: int = 0, threads: int = 2,
          init: Path | None = None, cue: bool = False, residual_layers: int | None = None,
          residual_hidden: int | None = None, turn_prob: float = TURN_PROB) -> Path:
    """Train (or resume) and write ``out/best.pt`` (best synthetic validation) and ``out/last.pt``.

    Logs one JSON line per evaluation to ``out/log.jsonl``. Returns the path of ``best.pt``.
    ``init``: exported weights or a checkpoint to start from (ignored when resuming from
    ``out/last.pt``); its stored step continues the learning-rate schedule.
    The network's shape comes from ``config``, else from ``out/last.pt`` or ``init``, else the
    default; ``residual_layers``/``residual_hidden`` override it (widening a trained network:
    the added blocks start at zero output, see :class:`SpeechSeparatorConfig`).
    ``cue``: train the target-speaker extractor (``cue_channels = 2``): ``init`` must then be
    the blind separator's weights; its schedule starts at step 0; the pseudo-visual cue's jaw
    model is fitted on the real single-talker clips (:mod:`avsplit.train.cue`).
    """
    torch.set_num_threads(threads)
    if cue:
        return _train_cued(data, out, steps, batch, seconds, lr, checkpoint_minutes, eval_every,
                           seed, init)
    config = config or _stored_config(out / "last.pt") or _stored_config(init) or SpeechSeparatorConfig()
    widen = {k: v for k, v in (("residual_layers", residual_layers),
                               ("residual_hidden", residual_hidden)) if v is not None}
    config = SpeechSeparatorConfig(**{**asdict(config), **widen})
    rate = config.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    train_pools = load_pools(data, "train", rate, out / "pools-train.pt")
    val_pools = load_pools(data, "heldout", rate, out / "pools-heldout.pt")
    sets = validation_set(val_pools, int(3.0 * rate))
    real = real_clip_set(data, val_pools, rate)
    model = SpeechSeparator(config)
    length = int(seconds * rate)

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        mix, speech, bg, has_bg = make_batch(train_pools, batch, length, rng, rate, turn_prob)
        est, _ = model(mix)
        return separation_loss(est, mix, speech, bg, has_bg)

    def score(metrics: dict) -> float:
        return float(np.mean([v for key, v in metrics.items() if not key.startswith("real")]))

    return fit(model, out, loss_of, lambda: evaluate(model, sets, real), steps, lr=lr,
               eval_every=eval_every, checkpoint_minutes=checkpoint_minutes, seed=seed, init=init,
               score=score)


def _stored_config(path: Path | None) -> SpeechSeparatorConfig | None:
    """The network config stored in a checkpoint or exported weights file, if there is one."""
    if path is None or not Path(path).exists():
        return None
    weights = model_entry(torch.load(path, map_location="cpu", weights_only=True))
    return SpeechSeparatorConfig(**weights["config"]) if "config" in weights else None


def _train_cued(data: Path, out: Path, steps: int, batch: int, seconds: float, lr: float,
                checkpoint_minutes: float, eval_every: int, seed: int, init: Path | None) -> Path:
    """:func:`train` with ``cue=True``."""
    from avsplit.train.cue import fit_jaw_model, leave_one_clip_out, real_clip_tracks

    out.mkdir(parents=True, exist_ok=True)
    model = SpeechSeparator(SpeechSeparatorConfig(cue_channels=CUE_CHANNELS))
    if not (out / "last.pt").exists():
        if init is None:
            raise ValueError("training the extractor needs --init: the blind separator's weights")
        model.load_warm_start(model_entry(torch.load(init, map_location="cpu", weights_only=True))["state_dict"])
    rate, hop = model.config.sample_rate, model.config.hop
    clips = real_clip_tracks(data, rate, out / "real-tracks.pt")
    loo = leave_one_clip_out(clips)
    print(json.dumps({"jaw_model_loo_r": {c["name"]: round(r, 3) for c, r in zip(clips, loo)},
                      "mean": round(float(np.mean(loo)), 3)}), flush=True)
    jaw = fit_jaw_model(clips)
    train_pools = load_pools(data, "train", rate, out / "pools-train.pt")
    val_pools = load_pools(data, "heldout", rate, out / "pools-heldout.pt")
    sets = validation_set(val_pools, int(3.0 * rate))
    cues = cue_validation(sets, jaw, hop, rate)
    real = real_cue_set(clips, val_pools, rate, hop)
    length = int(seconds * rate)
    calls = [torch.load(out / "last.pt", weights_only=True)["step"]
             if (out / "last.pt").exists() else 0]

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        r_low = 1.0 - 0.7 * min(1.0, calls[0] / CUE_CURRICULUM_STEPS)
        calls[0] += 1
        mix, speech, bg, has_bg = make_batch(train_pools, batch, length, rng, rate)
        speech, cue, cued = cue_batch(speech, rng, jaw, hop, rate, r_low)
        est, _ = model(mix, cue)
        return separation_loss(est, mix, speech, bg, has_bg, fixed=cued)

    def score(metrics: dict) -> float:
        return float(np.mean([v for key, v in metrics.items() if key.startswith("cue:")]))

    return fit(model, out, loss_of, lambda: evaluate_cued(model, sets, cues, real), steps, lr=lr,
               eval_every=eval_every, checkpoint_minutes=checkpoint_minutes, seed=seed,
               score=score)
