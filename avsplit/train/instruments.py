"""Train the query-conditioned instrument separator by Mix-and-Separate on rendered stems.

Data (:mod:`avsplit.train.music`): ensembles rendered from music21 scores, part by part.
Each training mixture takes 2-4 instrument stems, either together from one ensemble (real
harmony and rhythm, the hard case) or from different ensembles (Sound of Pixels' mixing of
independent solos), each at a random gain of -6..+6 dB, and with probability 0.35 each an
electric-bass line and a drum pattern as interferers. The network is asked for one of the
present instruments (or, one time in ten, for an absent one, whose target is silence) and is
trained to reproduce that stem's magnitude with an L1 loss on square-root compressed
magnitudes (compression weighs quiet notes and partials more than a plain L1 would).

Validation: ensembles rendered from held-out scores with the held-out soundfont; SI-SDR
improvement of the asked-for stem over the mixture, for 2- and 3-instrument mixtures.

    python -m avsplit.train music-data --out runs/music --scores 700
    python -m avsplit.train instruments --pools runs/music --out runs/instruments --steps 12000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from avsplit.audio import istft, si_sdr, stft
from avsplit.labels import LABELS
from avsplit.models.instruments import QuerySeparator, QuerySeparatorConfig
from avsplit.train import music
from avsplit.train.loop import fit

INTERFERER_LABELS = ("drums", "electric_bass")


@dataclass
class StemPool:
    """Rendered ensembles: per ensemble, labels and ``[parts, samples]`` float16 stems."""

    labels: list[list[str]]
    stems: list[np.ndarray]
    rate: int
    levels: dict = field(default_factory=dict)  # (ensemble, part) -> active RMS, filled lazily

    def instrument_parts(self, e: int) -> list[int]:
        return [i for i, lab in enumerate(self.labels[e]) if lab not in INTERFERER_LABELS]


def _render_worker(args) -> list[music.Ensemble]:
    scores, fonts, seed = args
    torch.set_num_threads(1)
    return music.render_pool(scores, fonts, seed)


def build_pool(scores: list[str], fonts: tuple[str, ...], path: Path, seed: int, workers: int = 2
               ) -> StemPool:
    """Render one ensemble per score in ``workers`` processes and save the pool to ``path``."""
    chunks = [(scores[i::workers], fonts, seed + i) for i in range(workers)]
    with Pool(workers) as pool:
        parts = pool.map(_render_worker, chunks)
    ens = [e for chunk in parts for e in chunk]
    stems = [np.stack(e.stems).astype(np.float16) for e in ens]
    pool = StemPool([e.labels for e in ens], stems, music.SAMPLE_RATE)
    torch.save({"labels": pool.labels, "stems": pool.stems, "rate": pool.rate,
                "scores": [e.score for e in ens], "soundfonts": [e.soundfont for e in ens]}, path)
    return pool


def render_data(out: Path, n_scores: int = 700, n_valid: int = 60, seed: int = 0,
                workers: int = 2) -> None:
    """Render ``out/pool-train.pt`` (training scores, training soundfonts) and
    ``out/pool-valid.pt`` (held-out scores, held-out soundfont)."""
    out.mkdir(parents=True, exist_ok=True)
    train_scores, valid_scores = music.split_scores(music.corpus_scores())
    rng = np.random.default_rng(seed)
    train_scores = [train_scores[i] for i in rng.permutation(len(train_scores))[:n_scores]]
    valid_scores = [valid_scores[i] for i in rng.permutation(len(valid_scores))[:n_valid]]
    build_pool(valid_scores, music.VALID_SOUNDFONTS, out / "pool-valid.pt", seed + 100, workers)
    print(f"rendered {len(valid_scores)} validation scores", flush=True)
    build_pool(train_scores, music.TRAIN_SOUNDFONTS, out / "pool-train.pt", seed, workers)
    print(f"rendered {len(train_scores)} training scores", flush=True)


def load_pool(path: Path) -> StemPool:
    d = torch.load(path, weights_only=False)
    return StemPool(d["labels"], d["stems"], d["rate"])


def _active_crop(x: np.ndarray, start: int, length: int) -> np.ndarray:
    seg = x[start:start + length].astype(np.float32)
    return np.pad(seg, (0, length - len(seg)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x) + 1e-12))


def _level(pool: StemPool, e: int, i: int) -> float:
    """RMS of part ``i`` of ensemble ``e`` over its active (non-silent) frames."""
    key = (e, i)
    if key not in pool.levels:
        x = pool.stems[e][i].astype(np.float32)
        frames = x[: len(x) // 512 * 512].reshape(-1, 512)
        rms = np.sqrt((frames ** 2).mean(axis=1))
        active = rms[rms > 1e-3 * rms.max()] if rms.max() > 0 else rms
        pool.levels[key] = float(np.sqrt((active ** 2).mean())) if len(active) else 0.0
    return pool.levels[key]


def _is_active(pool: StemPool, e: int, i: int, crop: np.ndarray) -> bool:
    """A crop counts when it holds at least a third of the part's usual level (not just a
    release tail or a rest, which normalisation would blow up into a loud, odd target)."""
    return _rms(crop) > 0.33 * _level(pool, e, i) and _rms(crop) > 1e-4


def synthetic_room_response(rng: np.random.Generator, rate: int) -> np.ndarray:
    """A random room impulse response ``[taps]`` float32: a unit direct path followed by
    exponentially decaying Gaussian noise (RT60 0.15-0.8 s, direct-to-reverberant ratio
    0-12 dB), the usual statistical model of late reverberation (Polack 1993)."""
    rt60 = rng.uniform(0.15, 0.8)
    taps = int(rt60 * rate)
    t = np.arange(1, taps) / rate
    tail = rng.standard_normal(taps - 1) * np.exp(-np.log(1e3) * t / rt60)  # -60 dB at rt60
    drr_db = rng.uniform(0, 12)
    tail *= 10 ** (-drr_db / 20) / (np.sqrt((tail ** 2).sum()) + 1e-12)
    return np.concatenate([[1.0], tail]).astype(np.float32)


def augment_timbre(x: np.ndarray, rng: np.random.Generator, rate: int = 11025,
                   p_reverb: float = 0.5) -> np.ndarray:
    """Random timbre and room change of one stem ``[n]`` float32 at ``rate`` Hz, so that the
    network cannot learn the training soundfonts' dry samples by heart: playback speed
    0.94-1.06 (moves pitch and formants together, linear interpolation), a random smooth
    equaliser (+-6 dB at 6 points spread over log frequency, interpolated) and, with
    probability ``p_reverb``, a :func:`synthetic_room_response` (real recordings are never dry).
    The result has the same length; the reverberant stem is the target, as in real stems."""
    n = len(x)
    speed = rng.uniform(0.94, 1.06)
    pos = np.arange(n) * speed
    y = np.interp(pos, np.arange(n), x, right=0.0)
    rir = synthetic_room_response(rng, rate) if rng.random() < p_reverb else np.ones(1, np.float32)
    size = n + len(rir) - 1
    spec = np.fft.rfft(y, size) * np.fft.rfft(rir, size)
    f = np.fft.rfftfreq(size)  # cycles per sample, 0..0.5
    anchors = np.log(np.geomspace(1e-3, 0.5, 6))
    gains_db = rng.uniform(-6, 6, 6)
    curve = np.interp(np.log(np.maximum(f, 1e-3)), anchors, gains_db)
    return np.fft.irfft(spec * 10 ** (curve / 20), size)[:n].astype(np.float32)


def make_example(pool: StemPool, length: int, rng: np.random.Generator, p_absent: float = 0.1,
                 n_sources: int | None = None, augment: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, str]:
    """One Mix-and-Separate example (``augment``: :func:`augment_timbre` on every stem).

    Returns:
        ``(mixture, target, label)``: ``[length]`` float32 each at ``pool.rate``; ``target`` is
        the stem of ``label`` in the mixture (zeros when the label is absent).
    """
    n = n_sources or int(rng.choice([2, 3, 4], p=[0.45, 0.35, 0.2]))
    picked: list[tuple[str, np.ndarray]] = []
    if rng.random() < 0.5:  # several parts of one ensemble: shared harmony and rhythm
        for _ in range(20):
            e = int(rng.integers(len(pool.stems)))
            parts = pool.instrument_parts(e)
            if len(parts) >= 2:
                break
        chosen = [int(i) for i in rng.permutation(parts)[:n]]
        best, best_start = -1, 0
        for _ in range(8):  # a window where as many of them as possible play
            start = int(rng.integers(max(pool.stems[e].shape[1] - length, 1)))
            k = sum(_is_active(pool, e, i, _active_crop(pool.stems[e][i], start, length))
                    for i in chosen)
            if k > best:
                best, best_start = k, start
        for i in chosen:
            crop = _active_crop(pool.stems[e][i], best_start, length)
            if _is_active(pool, e, i, crop):
                picked.append((pool.labels[e][i], crop))
    for _ in range(50):  # independent solos
        if len(picked) >= n:
            break
        e = int(rng.integers(len(pool.stems)))
        parts = [i for i in pool.instrument_parts(e)
                 if pool.labels[e][i] not in {lab for lab, _ in picked}]
        if not parts:
            continue
        i = int(rng.choice(parts))
        start = int(rng.integers(max(pool.stems[e].shape[1] - length, 1)))
        crop = _active_crop(pool.stems[e][i], start, length)
        if _is_active(pool, e, i, crop):
            picked.append((pool.labels[e][i], crop))
    if augment:
        picked = [(lab, augment_timbre(x, rng, pool.rate)) for lab, x in picked]
    sources = [(lab, x / _rms(x) * 10 ** (rng.uniform(-6, 6) / 20)) for lab, x in picked]
    for name in INTERFERER_LABELS:
        if rng.random() < 0.35:
            e = int(rng.integers(len(pool.stems)))
            if name in pool.labels[e]:
                i = pool.labels[e].index(name)
                start = int(rng.integers(max(pool.stems[e].shape[1] - length, 1)))
                x = _active_crop(pool.stems[e][i], start, length)
                if _is_active(pool, e, i, x):
                    sources.append((name, x / _rms(x) * 10 ** (rng.uniform(-10, 0) / 20)))
    present = [lab for lab, _ in sources if lab not in INTERFERER_LABELS]
    mixture = np.sum([x for _, x in sources], axis=0) if sources else np.zeros(length, np.float32)
    if not present or rng.random() < p_absent:
        absent = [lab for lab in LABELS if lab not in present]
        label, target = str(rng.choice(absent)), np.zeros(length, np.float32)
    else:
        label = str(rng.choice(present))
        target = np.sum([x for lab, x in sources if lab == label], axis=0)
    scale = 0.1 * 10 ** (rng.uniform(-10, 6) / 20) / (_rms(mixture) + 1e-8)
    return (mixture * scale).astype(np.float32), (target * scale).astype(np.float32), label


def compressed_l1(masks: torch.Tensor, mixture_spec: torch.Tensor, target_spec: torch.Tensor
                  ) -> torch.Tensor:
    """L1 distance of square-root compressed magnitudes, ``|M·|X||^0.5`` vs ``|S|^0.5``,
    normalised by the mixture's compressed magnitude. Shapes ``[batch, bins, frames]``."""
    est = (masks * mixture_spec.abs() + 1e-8).sqrt()
    ref = (target_spec.abs() + 1e-8).sqrt()
    norm = (mixture_spec.abs() + 1e-8).sqrt().mean(dim=(1, 2), keepdim=True)
    return ((est - ref).abs() / norm).mean()


def validation_set(pool: StemPool, length: int, per_condition: int = 40, seed: int = 1234):
    rng = np.random.default_rng(seed)
    return {f"{n}src": [make_example(pool, length, rng, p_absent=0.0, n_sources=n)
                        for _ in range(per_condition)] for n in (2, 3)}


@torch.no_grad()
def evaluate(model: QuerySeparator, sets: dict, mask_power: float = 1.0) -> dict[str, float]:
    """Mean SI-SDR improvement (dB) of the asked-for stem over the mixture, per condition."""
    c = model.config
    out = {}
    for name, examples in sets.items():
        mix = torch.from_numpy(np.stack([m for m, _, _ in examples]))
        ref = torch.from_numpy(np.stack([t for _, t, _ in examples]))
        query = model.label_index([lab for _, _, lab in examples])
        spec = stft(mix, c.n_fft, c.hop)
        est = istft(spec * model.masks(spec, query) ** mask_power, c.n_fft, c.hop, mix.shape[-1])
        out[name] = float((si_sdr(est, ref) - si_sdr(mix, ref)).mean())
    return out


def tune_mask_power(model: QuerySeparator, pools: Path,
                    powers: tuple[float, ...] = (1.0, 0.75, 0.5, 0.35, 0.25)) -> tuple[float, dict]:
    """Choose the inference mask power on the held-out-soundfont validation set
    (``pools/pool-valid.pt``): the one with the best mean SI-SDR improvement.

    Returns:
        ``(best power, {power: {condition: dB}})``.
    """
    sets = validation_set(load_pool(pools / "pool-valid.pt"),
                          int(4.0 * model.config.sample_rate))
    scores = {p: evaluate(model, sets, p) for p in powers}
    best = max(powers, key=lambda p: float(np.mean(list(scores[p].values()))))
    return best, scores


def train(pools: Path, out: Path, steps: int = 12000, batch: int = 16, seconds: float = 4.0,
          lr: float = 1e-3, threads: int = 2, seed: int = 0, init: Path | None = None,
          config: QuerySeparatorConfig | None = None) -> Path:
    """Train (or resume) into ``out`` from the rendered pools in ``pools`` (see
    :func:`render_data`). Returns the path of ``out/best.pt``."""
    torch.set_num_threads(threads)
    config = config or QuerySeparatorConfig()
    train_pool = load_pool(pools / "pool-train.pt")
    valid_pool = load_pool(pools / "pool-valid.pt")
    length = int(seconds * config.sample_rate)
    sets = validation_set(valid_pool, length)
    model = QuerySeparator(config)

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        examples = [make_example(train_pool, length, rng, augment=True) for _ in range(batch)]
        mix = torch.from_numpy(np.stack([m for m, _, _ in examples]))
        tgt = torch.from_numpy(np.stack([t for _, t, _ in examples]))
        spec_mix = stft(mix, config.n_fft, config.hop)
        spec_tgt = stft(tgt, config.n_fft, config.hop)
        query = model.label_index([lab for _, _, lab in examples])
        return compressed_l1(model.masks(spec_mix, query), spec_mix, spec_tgt)

    return fit(model, out, loss_of, lambda: evaluate(model, sets), steps, lr=lr, seed=seed,
               init=init)
