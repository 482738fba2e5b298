"""Train the speech separator (:class:`avsplit.models.speech.SpeechSeparator`).

Dynamic mixing (Zeghidour & Grangier, 2021, Wavesplit Sec. 4.3): every batch is a fresh set of
mixtures of 1-3 random training speakers at random levels and offsets, with real background
noise/music at a random SNR and, sometimes, the measured room impulse response. Held-out
speakers and backgrounds (see :mod:`avsplit.train.corpus`) give a fixed validation set whose
SI-SDR improvement is logged.

Run (resumes from ``OUT/last.pt`` when present)::

    python -m avsplit.train speech --data ../shared/data --out runs/speech --steps 12000
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.signal import fftconvolve

from avsplit.train.loop import fit
from avsplit.audio import si_sdr, stft
from avsplit.models.speech import SpeechSeparator, SpeechSeparatorConfig
from avsplit.train import corpus


@dataclass
class Pools:
    """Audio held in memory at the training rate: speech by speaker, backgrounds, RIRs."""

    speakers: list[list[np.ndarray]]
    backgrounds: list[np.ndarray]
    rirs: list[np.ndarray]


def load_pools(data: Path, split: str, rate: int, cache: Path | None = None) -> Pools:
    """Read (or load cached) speech/background pools for ``split`` at ``rate`` Hz."""
    if cache is not None and cache.exists():
        z = torch.load(cache, weights_only=False)
        return Pools(**z)
    speakers = [[corpus.load_mono(f, rate) for f in files]
                for files in corpus.speech_speakers(data, split).values()]
    speakers = [[u for u in utts if len(u) > rate // 4] for utts in speakers]
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


def _crop(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample excerpt; shorter signals are placed at a random offset."""
    if len(x) >= length:
        start = rng.integers(0, len(x) - length + 1)
        return x[start:start + length].copy()
    out = np.zeros(length, np.float32)
    start = rng.integers(0, length - len(x) + 1)
    out[start:start + len(x)] = x
    return out


def _rms_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x ** 2) + 1e-10)


def make_mixture(pools: Pools, length: int, n_speakers: int, rng: np.random.Generator,
                 max_speakers: int = 3, background_prob: float = 0.75,
                 snr_db: tuple[float, float] = (-5.0, 15.0), reverb_prob: float = 0.3):
    """One training example.

    Returns:
        ``(mixture [length], speech [max_speakers, length], background [length])`` float32;
        unused speech rows are zeros; ``mixture == speech.sum(0) + background``.
    """
    speech = np.zeros((max_speakers, length), np.float32)
    chosen = rng.choice(len(pools.speakers), size=n_speakers, replace=False)
    for row, spk in enumerate(chosen):
        utts = pools.speakers[spk]
        x = _crop(utts[rng.integers(len(utts))], length, rng)
        if len(x) and rng.random() < 0.25:  # the voice covers only part of the segment
            keep = rng.integers(length // 3, length)
            start = rng.integers(0, length - keep + 1)
            x[:start] = 0
            x[start + keep:] = 0
        if pools.rirs and rng.random() < reverb_prob:
            x = fftconvolve(x, pools.rirs[rng.integers(len(pools.rirs))])[:length].astype(np.float32)
        if not np.any(x):
            x = _crop(utts[0], length, rng)
        gain_db = rng.uniform(-28, -16) - _rms_db(x[x != 0] if np.any(x) else x)
        speech[row] = x * 10 ** (gain_db / 20)
    background = np.zeros(length, np.float32)
    if pools.backgrounds and rng.random() < background_prob:
        for _ in range(1 + int(rng.random() < 0.3)):
            background += _crop(pools.backgrounds[rng.integers(len(pools.backgrounds))], length, rng)
        if np.any(background):
            target = _rms_db(speech.sum(0)) - rng.uniform(*snr_db)
            background *= 10 ** ((target - _rms_db(background)) / 20)
    mixture = speech.sum(0) + background
    peak = np.abs(mixture).max()
    if peak > 0.99:
        speech, background, mixture = speech / peak * 0.9, background / peak * 0.9, mixture / peak * 0.9
    return mixture.astype(np.float32), speech.astype(np.float32), background.astype(np.float32)


def make_batch(pools: Pools, batch: int, length: int, rng: np.random.Generator,
               max_speakers: int = 3, speaker_probs=(0.3, 0.55, 0.15)):
    """Stack :func:`make_mixture` examples into torch tensors ``[B, S]``, ``[B, K, S]``, ``[B, S]``."""
    items = [make_mixture(pools, length, int(rng.choice(np.arange(1, max_speakers + 1), p=speaker_probs)),
                          rng, max_speakers) for _ in range(batch)]
    return tuple(torch.from_numpy(np.stack(z)) for z in zip(*items))


def psa_pit_loss(masks: torch.Tensor, mixture: torch.Tensor, speech: torch.Tensor,
                 background: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Permutation-invariant phase-sensitive spectrum approximation loss.

    Erdogan et al., 2015 (PSA) as used by uPIT (Kolbaek et al., 2017): the masked mixture
    magnitude ``M |Y|`` approximates ``|S| cos(angle(Y) - angle(S))`` truncated to ``[0, |Y|]``,
    mean squared error normalised by the mixture's energy. Silent references have a zero
    target, so mixtures with fewer voices than slots need no special case.

    Args:
        masks: ``[B, K + 1, F, T]``; mixture: ``[B, S]``; speech: ``[B, K, S]``; background: ``[B, S]``.

    Returns:
        Scalar loss.
    """
    k = speech.shape[1]
    y = stft(mixture, n_fft, hop)  # [B, F, T]
    refs = stft(torch.cat([speech, background[:, None]], dim=1), n_fft, hop)  # [B, K+1, F, T]
    mag = y.abs()[:, None]
    target = (refs * y.conj()[:, None]).real / (mag + 1e-8)
    target = torch.minimum(target.clamp(min=0), mag)
    norm = (mag ** 2).mean(dim=(-1, -2)) + 1e-8  # [B, 1]
    est = masks * mag
    pair = ((est[:, :k, None] - target[:, None, :k]) ** 2).mean(dim=(-1, -2)) / norm[:, :, None]  # [B, K, K]
    perms = torch.tensor(list(itertools.permutations(range(k))))
    costs = torch.stack([pair[:, p, torch.arange(k)].sum(-1) for p in perms], dim=1)
    speech_loss = costs.min(dim=1).values
    bg_loss = ((est[:, k] - target[:, k]) ** 2).mean(dim=(-1, -2)) / norm[:, 0]
    return (speech_loss + bg_loss).mean()


def validation_set(pools: Pools, length: int, seed: int = 1234):
    """Fixed held-out mixtures: ``{condition: (mixture, speech, background)}`` batches."""
    rng = np.random.default_rng(seed)
    sets = {}
    for name, n_spk, bg in [("1spk+noise", 1, 1.0), ("2spk", 2, 0.0), ("2spk+noise", 2, 1.0)]:
        items = [make_mixture(pools, length, n_spk, rng, background_prob=bg, snr_db=(0.0, 0.0),
                              reverb_prob=0.0) for _ in range(24)]
        sets[name] = tuple(torch.from_numpy(np.stack(z)) for z in zip(*items))
    return sets


@torch.no_grad()
def evaluate(model: SpeechSeparator, sets: dict) -> dict:
    """Mean SI-SDR improvement (dB) of the best-matching speech slot per active reference."""
    model.eval()
    out = {}
    for name, (mix, speech, bg) in sets.items():
        est, _ = model(mix)
        k = speech.shape[1]
        gains = []
        for b in range(mix.shape[0]):
            for j in range(k):
                if speech[b, j].abs().sum() == 0:
                    continue
                scores = si_sdr(est[b, :k], speech[b, j][None].expand(k, -1))
                gains.append(float(scores.max() - si_sdr(mix[b], speech[b, j])))
        out[name] = float(np.mean(gains))
    model.train()
    return out


def train(data: Path, out: Path, steps: int = 12000, batch: int = 8, seconds: float = 3.0,
          lr: float = 1e-3, checkpoint_minutes: float = 5.0, eval_every: int = 250,
          config: SpeechSeparatorConfig | None = None, seed: int = 0, threads: int = 2,
          init: Path | None = None) -> Path:
    """Train (or resume) and write ``out/best.pt`` (best validation) and ``out/last.pt``.

    Logs one JSON line per evaluation to ``out/log.jsonl``. Returns the path of ``best.pt``.
    ``init``: a checkpoint to start from (ignored when resuming from ``out/last.pt``).
    """
    torch.set_num_threads(threads)
    config = config or SpeechSeparatorConfig()
    rate = config.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    train_pools = load_pools(data, "train", rate, out / "pools-train.pt")
    val_pools = load_pools(data, "heldout", rate, out / "pools-heldout.pt")
    sets = validation_set(val_pools, int(seconds * rate))
    model = SpeechSeparator(config)
    length = int(seconds * rate)

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        mix, speech, bg = make_batch(train_pools, batch, length, rng)
        masks = model.masks(stft(mix, config.n_fft, config.hop))
        return psa_pit_loss(masks, mix, speech, bg, config.n_fft, config.hop)

    return fit(model, out, loss_of, lambda: evaluate(model, sets), steps, lr=lr,
               eval_every=eval_every, checkpoint_minutes=checkpoint_minutes, seed=seed, init=init)
