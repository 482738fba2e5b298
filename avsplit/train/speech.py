"""Train the speech separator (:class:`avsplit.models.speech.SpeechSeparator`).

The recipe (what the model is asked to do, and how it is scored):

* **Task mix** (dynamic mixing, Zeghidour & Grangier 2021, Wavesplit Sec. 4.3): 75 % of the
  examples are two voices at a relative level of -5..+5 dB, a third of those with a real
  background (noise or instrumental music) at 0..15 dB below the speech; 25 % are one voice
  plus a background at -5..10 dB. Two speech slots (the most a mixture holds) and one
  background slot.
* **Loss**: negative SI-SDR (Le Roux et al. 2019) on the waveforms, utterance-level PIT
  (Kolbaek et al. 2017) over the two speech slots; an empty speech slot is pushed towards
  silence with the thresholded energy term of MixIT (Wisdom et al. 2020, Eq. 4,
  ``10 log10(|s_hat|^2 / |x|^2 + tau)``); the background slot is supervised only when the
  example has a background.
* **New voices**: speed perturbation (0.9..1.1, pitch and tempo together) and a formant shift
  (vocal tract length perturbation, Jaitly & Hinton 2013: the STFT magnitude is warped along
  frequency by 0.9..1.1, the phase kept).
* **Crops with speech in them**: of a few random 2 s excerpts, the one with the most active
  20 ms frames (within 35 dB of the utterance's loudest frame) is used.
* **Validation** (fixed, logged every ``eval_every`` steps): 100 held-out-speaker mixtures per
  condition at exactly 0 dB (two voices; two voices + background; one voice + background),
  scored with the best *distinct* slot assignment, plus the real talking-head clips of
  ``DATA/av/speech`` (audio only) mixed at 0 dB with a held-out voice. ``best.pt`` is chosen on
  the synthetic held-out mean only, so the real clips stay a check.

Run (resumes from ``OUT/last.pt``; ``--init`` warm-starts from exported weights and continues
their learning-rate schedule at the step stored in them)::

    python -m avsplit.train speech --data ../shared/data --out runs/speech3 --steps 30000
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import fftconvolve

from avsplit.audio import resample, si_sdr, stft, istft
from avsplit.models.speech import SpeechSeparator, SpeechSeparatorConfig
from avsplit.train import corpus
from avsplit.train.loop import fit

TWO_VOICE_PROB = 0.75
TWO_VOICE_BACKGROUND_PROB = 1 / 3
RELATIVE_LEVEL_DB = 5.0
SNR_TWO_VOICES_DB = (0.0, 15.0)
SNR_ONE_VOICE_DB = (-5.0, 10.0)
SILENT_SLOT_TAU = 1e-3  # MixIT threshold: an empty slot's loss bottoms out at -30 dB


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


def make_mixture(pools: Pools, length: int, rng: np.random.Generator, n_speakers: int | None = None,
                 relative_db: float | None = None, snr_db: float | None = None,
                 background: bool | None = None, reverb_prob: float = 0.3,
                 augment: bool = True, rate: int = 16000):
    """One example of the recipe (see the module docstring); fixed values override the draws.

    Args:
        n_speakers: 1 or 2 voices (drawn: 2 with p = 0.75).
        relative_db: level of the second voice relative to the first (drawn: -5..5 dB).
        snr_db: speech-to-background ratio in dB (drawn per case).
        background: add a background (drawn: always with one voice, p = 1/3 with two).

    Returns:
        ``(mixture [length], speech [2, length], background [length], has_background)``;
        float32 arrays, an unused speech row is zeros, ``mixture == speech.sum(0) + background``.
    """
    if n_speakers is None:
        n_speakers = 2 if rng.random() < TWO_VOICE_PROB else 1
    if background is None:
        background = n_speakers == 1 or rng.random() < TWO_VOICE_BACKGROUND_PROB
    speech = np.zeros((2, length), np.float32)
    chosen = rng.choice(len(pools.speakers), size=n_speakers, replace=False)
    level = rng.uniform(-28, -16)
    rel = rng.uniform(-RELATIVE_LEVEL_DB, RELATIVE_LEVEL_DB) if relative_db is None else relative_db
    for row, spk in enumerate(chosen):
        x = _voice(pools.speakers[spk], length, rng, rate, augment)
        if augment and rng.random() < 0.15:  # the voice covers only part of the segment
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


def make_batch(pools: Pools, batch: int, length: int, rng: np.random.Generator, rate: int = 16000):
    """Stack :func:`make_mixture` examples: ``[B, S]``, ``[B, 2, S]``, ``[B, S]``, ``[B]`` bool."""
    items = [make_mixture(pools, length, rng, rate=rate) for _ in range(batch)]
    mix, speech, bg, has_bg = zip(*items)
    return (torch.from_numpy(np.stack(mix)), torch.from_numpy(np.stack(speech)),
            torch.from_numpy(np.stack(bg)), torch.tensor(has_bg))


def sisdr_pit_loss(estimates: torch.Tensor, mixture: torch.Tensor, speech: torch.Tensor,
                   background: torch.Tensor, has_background: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant SI-SDR loss over the speech slots, background slot when present.

    Args:
        estimates: ``[B, K + 1, S]`` separated waveforms (speech slots, then background).
        mixture: ``[B, S]``; speech: ``[B, K, S]`` (silent rows for absent voices);
        background: ``[B, S]``; has_background: ``[B]`` bool.

    Returns:
        Scalar loss in dB (lower is better): ``-SI-SDR`` per active voice under the best slot
        permutation; for an absent voice ``10 log10(|s_hat|^2 / |x|^2 + tau)`` (MixIT, Wisdom et
        al. 2020); ``-SI-SDR`` of the background slot where there is a background.
    """
    k = speech.shape[1]
    est = estimates[:, :k]
    active = speech.pow(2).sum(-1) > 0  # [B, K]
    neg_sisdr = -si_sdr(est[:, :, None], speech[:, None])  # [B, K est, K ref]
    energy = 10 * torch.log10(est.pow(2).sum(-1) / (mixture.pow(2).sum(-1, keepdim=True) + 1e-8)
                              + SILENT_SLOT_TAU)  # [B, K est]
    pair = torch.where(active[:, None, :], neg_sisdr, energy[:, :, None])
    costs = torch.stack([pair[:, list(p), list(range(k))].sum(-1)
                         for p in itertools.permutations(range(k))], dim=1)
    speech_loss = costs.min(dim=1).values / k
    bg_loss = -si_sdr(estimates[:, k], background)
    bg_loss = torch.where(has_background, bg_loss, torch.zeros_like(bg_loss))
    return (speech_loss + 0.5 * bg_loss).mean()


def validation_set(pools: Pools, length: int, n: int = 100, seed: int = 1234):
    """Fixed held-out mixtures at 0 dB: ``{condition: (mixture, speech, background, has_bg)}``."""
    rng = np.random.default_rng(seed)
    sets = {}
    for name, n_spk, bg in [("2spk", 2, False), ("2spk+bg", 2, True), ("1spk+bg", 1, True)]:
        items = [make_mixture(pools, length, rng, n_speakers=n_spk, relative_db=0.0, snr_db=0.0,
                              background=bg, reverb_prob=0.0, augment=False) for _ in range(n)]
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


def train(data: Path, out: Path, steps: int = 30000, batch: int = 8, seconds: float = 2.0,
          lr: float = 1e-3, checkpoint_minutes: float = 4.0, eval_every: int = 500,
          config: SpeechSeparatorConfig | None = None, seed: int = 0, threads: int = 2,
          init: Path | None = None) -> Path:
    """Train (or resume) and write ``out/best.pt`` (best synthetic validation) and ``out/last.pt``.

    Logs one JSON line per evaluation to ``out/log.jsonl``. Returns the path of ``best.pt``.
    ``init``: exported weights or a checkpoint to start from (ignored when resuming from
    ``out/last.pt``); its stored step continues the learning-rate schedule.
    """
    torch.set_num_threads(threads)
    config = config or SpeechSeparatorConfig()
    rate = config.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    train_pools = load_pools(data, "train", rate, out / "pools-train.pt")
    val_pools = load_pools(data, "heldout", rate, out / "pools-heldout.pt")
    sets = validation_set(val_pools, int(3.0 * rate))
    real = real_clip_set(data, val_pools, rate)
    model = SpeechSeparator(config)
    length = int(seconds * rate)

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        mix, speech, bg, has_bg = make_batch(train_pools, batch, length, rng, rate)
        est, _ = model(mix)
        return sisdr_pit_loss(est, mix, speech, bg, has_bg)

    def score(metrics: dict) -> float:
        return float(np.mean([v for key, v in metrics.items() if not key.startswith("real")]))

    return fit(model, out, loss_of, lambda: evaluate(model, sets, real), steps, lr=lr,
               eval_every=eval_every, checkpoint_minutes=checkpoint_minutes, seed=seed, init=init,
               score=score)
