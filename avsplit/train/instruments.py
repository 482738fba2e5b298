"""Train the instrument separator by Mix-and-Separate on rendered stems, all instruments at once.

Data (:mod:`avsplit.train.music`): ensembles rendered from music21 scores, part by part.
Each training mixture takes 1-4 instrument stems with different labels, either together from
one ensemble (real harmony and rhythm, the hard case) or from different ensembles (Sound of
Pixels' mixing of independent solos, as the real MUSIC pairs are made), each with a random
timbre and room change (:func:`augment_timbre`) at a random gain of -8..+8 dB, and with
probability 0.35 each an electric-bass line and a drum pattern as interferers.

The recipe (issue 9; the previous one asked for one label at a time with an independent sigmoid
and an L1 loss on compressed magnitudes, one query in ten for an absent instrument with a silent
target, and learnt "silent when unsure": on real recordings 61 % of the mixture went nowhere):

* every instrument of a mixture is asked for in one pass (:class:`EnsembleSeparator`): the masks
  compete (softmax over the asked labels and a residual) and sum to the mixture; one example in
  five asks for a random subset only, the others then belong to the residual (as with
  ``--query``);
* no query is ever for an instrument that is not playing (a seen but silent instrument is the
  pipeline's business: :data:`avsplit.instruments.SILENT_SHARE`);
* the loss is the negative thresholded SDR of every asked stem (and of the residual when it
  holds something) on waveforms with the mixture's phase (Wisdom et al., 2020, "Unsupervised
  sound separation using mixture invariant training", Sec. 3: ``10 log10(|s|^2 / (|s - s'|^2 +
  tau |s|^2))``, tau = -30 dB), so every source counts the same whatever its level, and a stem
  that comes out too quiet is penalised (SDR is not scale-invariant);
* mask power 1 at inference.

Real solos (``--music-folds``, 2026-12-03): a share of the mixtures (``--p-real``, 0.5) is made
of real solo recordings instead, the ``gt`` solos of the MUSIC pairs in ``../shared/data``
(Sound of Pixels' own Mix-and-Separate of real solos, Zhao et al. 2018, Sec. 3.1): two or three
of different labels, now and then with one rendered instrument. The pairs are split in two
folds that share no recording (:func:`avsplit.train.corpus.music_pair_folds`), so a network
trained on one fold's solos is scored on the other fold's pairs; the shipped one is trained on
both.

Validation (logged every 250 steps): SI-SDR improvement of every stem over the mixture for
2- and 3-instrument mixtures from held-out scores rendered with the held-out soundfont, and on
real URMP pairs (``DATA/audio/music/URMP``), and with one fold's solos in training on the
other fold's MUSIC pairs ("music").

    python -m avsplit.train music-data --out runs/music --scores 700
    python -m avsplit.train instruments --pools runs/music --data ../shared/data \
        --out runs/instruments3 --steps 5000
    python -m avsplit.train instruments --pools runs/music --data ../shared/data \
        --out runs/instreal --steps 10000 --init weights/instrument_unet.pt --music-folds 0,1
"""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from avsplit.audio import istft, si_sdr, stft
from avsplit.models.instruments import EnsembleSeparator, EnsembleSeparatorConfig
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
                   p_reverb: float = 0.5, eq_db: float = 6.0) -> np.ndarray:
    """Random timbre and room change of one stem ``[n]`` float32 at ``rate`` Hz, so that the
    network cannot learn the training soundfonts' dry samples by heart: playback speed
    0.94-1.06 (moves pitch and formants together, linear interpolation), a random smooth
    equaliser (+-``eq_db`` dB at 6 points spread over log frequency, interpolated) and, with
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
    gains_db = rng.uniform(-eq_db, eq_db, 6)
    curve = np.interp(np.log(np.maximum(f, 1e-3)), anchors, gains_db)
    return np.fft.irfft(spec * 10 ** (curve / 20), size)[:n].astype(np.float32)


@dataclass
class Example:
    """One Mix-and-Separate training example at the pool's rate.

    Attributes:
        mixture: ``[samples]`` float32.
        stems: ``[K, samples]`` float32, the stem of each asked label (all present).
        labels: the ``K`` asked labels, all different.
        residual: ``[samples]`` float32, what is in the mixture but not asked for (interferers
            and instruments left out of the query); ``mixture == stems.sum(0) + residual``.
    """

    mixture: np.ndarray
    stems: np.ndarray
    labels: list[str]
    residual: np.ndarray


def _pick_sources(pool: StemPool, length: int, n: int, rng: np.random.Generator
                  ) -> list[tuple[str, np.ndarray]]:
    """Up to ``n`` active instrument crops with different labels: half of the time first from
    one ensemble (the window where most of its chosen parts play), then independent solos."""
    picked: list[tuple[str, np.ndarray]] = []
    if n >= 2 and rng.random() < 0.5:
        for _ in range(20):
            e = int(rng.integers(len(pool.stems)))
            parts = pool.instrument_parts(e)
            if len(parts) >= 2:
                break
        chosen = [int(i) for i in rng.permutation(parts)[:n]]
        best, best_start = -1, 0
        for _ in range(8):
            start = int(rng.integers(max(pool.stems[e].shape[1] - length, 1)))
            k = sum(_is_active(pool, e, i, _active_crop(pool.stems[e][i], start, length))
                    for i in chosen)
            if k > best:
                best, best_start = k, start
        for i in chosen:
            crop = _active_crop(pool.stems[e][i], best_start, length)
            if pool.labels[e][i] not in {lab for lab, _ in picked} and _is_active(pool, e, i, crop):
                picked.append((pool.labels[e][i], crop))
    for _ in range(60):
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
    return picked


def _pick_real_solos(solos: list[tuple[str, np.ndarray]], pool: StemPool, length: int,
                     rng: np.random.Generator) -> list[tuple[str, np.ndarray, bool]]:
    """Two real solos (three with p = 0.3) with different labels, each cut at the loudest of
    four random windows, and with p = 0.3 one more rendered instrument of another label:
    ``[(label, crop, is_real)]``."""
    n = 3 if rng.random() < 0.3 else 2
    picked: list[tuple[str, np.ndarray, bool]] = []
    for i in rng.permutation(len(solos)):
        label, x = solos[int(i)]
        if label in {lab for lab, _, _ in picked}:
            continue
        starts = rng.integers(0, max(len(x) - length, 1), 4)
        crops = [_active_crop(x, int(s), length) for s in starts]
        picked.append((label, max(crops, key=_rms), True))
        if len(picked) == n:
            break
    if rng.random() < 0.3:
        for label, x in _pick_sources(pool, length, 4, rng):
            if label not in {lab for lab, _, _ in picked}:
                picked.append((label, x, False))
                break
    return picked


def make_example(pool: StemPool, length: int, rng: np.random.Generator,
                 n_sources: int | None = None, augment: bool = False, p_subset: float = 0.2,
                 p_interferer: float = 0.35, solos: list[tuple[str, np.ndarray]] | None = None,
                 p_real: float = 0.0) -> Example:
    """One training (or validation) example; see the module docstring for the recipe.

    Args:
        pool: rendered stems; length: samples.
        n_sources: instruments in the mixture (default 1-4, mostly 2-3).
        augment: :func:`augment_timbre` on every stem (training); real solos get the speed and
            equaliser change but a synthetic room only with p = 0.2 (they have their own room).
        p_subset: probability of asking for a random non-empty subset of the instruments.
        p_interferer: probability of each interferer (bass line, drums).
        solos: real solo recordings ``[(label, [samples] float32 at pool.rate)]``
            (:func:`avsplit.train.corpus.music_solos`); with probability ``p_real`` the mixture
            is made of them instead (Sound of Pixels' Mix-and-Separate of real solos, Zhao et
            al. 2018, Sec. 3.1), see :func:`_pick_real_solos`.
    """
    if solos and rng.random() < p_real:
        chosen = _pick_real_solos(solos, pool, length, rng)
    else:
        n = n_sources or int(rng.choice([1, 2, 3, 4], p=[0.1, 0.4, 0.3, 0.2]))
        chosen = [(lab, x, False) for lab, x in _pick_sources(pool, length, n, rng)]
    picked = [(lab, x) for lab, x, _ in chosen]
    if augment:
        picked = [(lab, augment_timbre(x, rng, pool.rate, p_reverb=0.2 if real else 0.5,
                                       eq_db=6.0 if real else 10.0))
                  for lab, x, real in chosen]
    sources = [(lab, x / _rms(x) * 10 ** (rng.uniform(-8, 8) / 20)) for lab, x in picked]
    rest = np.zeros(length, np.float32)
    for name in INTERFERER_LABELS:
        if rng.random() < p_interferer:
            e = int(rng.integers(len(pool.stems)))
            if name in pool.labels[e]:
                i = pool.labels[e].index(name)
                start = int(rng.integers(max(pool.stems[e].shape[1] - length, 1)))
                x = _active_crop(pool.stems[e][i], start, length)
                if _is_active(pool, e, i, x):
                    rest = rest + x / _rms(x) * 10 ** (rng.uniform(-10, 0) / 20)
    asked = list(range(len(sources)))
    if len(sources) >= 2 and rng.random() < p_subset:
        asked = sorted(int(i) for i in rng.permutation(len(sources))[:int(rng.integers(1, len(sources)))])
    for i, (_, x) in enumerate(sources):
        if i not in asked:
            rest = rest + x
    stems = (np.stack([sources[i][1] for i in asked]) if asked
             else np.zeros((0, length), np.float32))
    mixture = stems.sum(axis=0) + rest
    scale = 0.1 * 10 ** (rng.uniform(-10, 6) / 20) / (_rms(mixture) + 1e-8)
    return Example((mixture * scale).astype(np.float32), (stems * scale).astype(np.float32),
                   [sources[i][0] for i in asked], (rest * scale).astype(np.float32))


def batch_tensors(model: EnsembleSeparator, examples: list[Example]):
    """Stack examples with different numbers of asked labels: ``(mixture [B, n], stems
    [B, K, n], query [B, K] with -1 padding, residual [B, n])``."""
    k = max(len(ex.labels) for ex in examples)
    n = len(examples[0].mixture)
    stems = np.zeros((len(examples), k, n), np.float32)
    query = torch.full((len(examples), k), -1, dtype=torch.long)
    for b, ex in enumerate(examples):
        stems[b, :len(ex.labels)] = ex.stems
        if ex.labels:
            query[b, :len(ex.labels)] = model.label_index(ex.labels)
    mix = torch.from_numpy(np.stack([ex.mixture for ex in examples]))
    res = torch.from_numpy(np.stack([ex.residual for ex in examples]))
    return mix, torch.from_numpy(stems), query, res


def thresholded_sdr(estimate: torch.Tensor, reference: torch.Tensor, tau_db: float = -30.0
                    ) -> torch.Tensor:
    """``10 log10(|s|^2 / (|s - s'|^2 + tau |s|^2))`` in dB over the last axis (Wisdom et al.
    2020, Sec. 3): SDR capped near ``-tau_db``, so sources already well separated stop
    dominating the gradient. Shapes ``[..., samples]`` -> ``[...]``."""
    ref = (reference ** 2).sum(-1)
    err = ((reference - estimate) ** 2).sum(-1)
    return 10 * torch.log10((ref + 1e-8) / (err + 10 ** (tau_db / 10) * ref + 1e-8))


def separation_loss(model: EnsembleSeparator, mix: torch.Tensor, stems: torch.Tensor,
                    query: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Mean negative :func:`thresholded_sdr` of every asked stem and of every residual that holds
    more than -40 dB of the mixture; estimates are the masked mixture STFT inverted with the
    mixture's phase (so they add up to the mixture exactly)."""
    c = model.config
    spec = stft(mix, c.n_fft, c.hop)
    masks = model.masks(spec, query, residual=True)
    est = istft(spec[:, None] * masks, c.n_fft, c.hop, mix.shape[-1])
    refs = torch.cat([stems, residual[:, None]], dim=1)
    mix_energy = (mix ** 2).sum(-1, keepdim=True)
    valid = torch.cat([query >= 0, (residual ** 2).sum(-1, keepdim=True) > 1e-4 * mix_energy], 1)
    sdr = thresholded_sdr(est, refs)
    return -(sdr * valid).sum() / valid.sum().clamp(min=1)


def validation_set(pool: StemPool, length: int, per_condition: int = 40, seed: int = 1234
                   ) -> dict[str, list[Example]]:
    """Fixed held-out examples: ``{"2src": [...], "3src": [...]}``, every instrument asked,
    no interferers."""
    rng = np.random.default_rng(seed)
    return {f"{n}src": [make_example(pool, length, rng, n_sources=n, p_subset=0.0, p_interferer=0.0)
                        for _ in range(per_condition)] for n in (2, 3)}


def music_validation_set(data: Path, folds: set[int], rate: int) -> list[Example]:
    """The real MUSIC pairs of ``folds`` (:func:`avsplit.train.corpus.music_pair_folds`) with
    two different labels, whole (5.9 s), as examples at ``rate``."""
    from avsplit.train.corpus import load_mono, music_pair_folds, music_pair_labels

    root = Path(data) / "audio" / "music" / "MUSIC"
    out = []
    for pair, fold in sorted(music_pair_folds(data).items()):
        labels = music_pair_labels(pair)
        if fold not in folds or labels[0] == labels[1]:
            continue
        refs = [load_mono(root / pair / f"{gt}.flac", rate) for gt in ("gt1", "gt2")]
        n = min(map(len, refs))
        refs = np.stack([r[:n] for r in refs]).astype(np.float32)
        scale = 0.1 / (_rms(refs.sum(0)) + 1e-8)
        out.append(Example((refs.sum(0) * scale).astype(np.float32), refs * scale, labels,
                           np.zeros(n, np.float32)))
    return out


def real_validation_set(data: Path, rate: int, seconds: float = 6.0, limit: int = 24
                        ) -> list[Example]:
    """Real URMP pairs (:func:`avsplit.train.corpus.urmp_items`) as examples at ``rate``, at
    most ``limit`` of them spread over the list (deterministic); empty without the data."""
    from avsplit.train.corpus import urmp_items

    try:
        items = urmp_items(data, 2, seconds, rate)
    except (FileNotFoundError, OSError):
        return []
    items = [items[i] for i in np.linspace(0, len(items) - 1, min(limit, len(items))).astype(int)
             ] if items else []
    out = []
    for it in items:
        refs = it["refs"].astype(np.float32)
        scale = 0.1 / (_rms(refs.sum(0)) + 1e-8)
        out.append(Example((refs.sum(0) * scale).astype(np.float32), refs * scale, it["labels"],
                           np.zeros(refs.shape[1], np.float32)))
    return out


@torch.no_grad()
def evaluate(model: EnsembleSeparator, sets: dict[str, list[Example]], batch: int = 8
             ) -> dict[str, float]:
    """Mean SI-SDR improvement (dB) of every asked stem over the mixture, per set."""
    c = model.config
    out = {}
    for name, examples in sets.items():
        gains = []
        for b0 in range(0, len(examples), batch):
            part = examples[b0:b0 + batch]
            mix, stems, query, _ = batch_tensors(model, part)
            est = model(mix, query)
            valid = query >= 0
            gain = si_sdr(est, stems) - si_sdr(mix[:, None].expand_as(stems), stems)
            gains += gain[valid].tolist()
        out[name] = float(np.mean(gains)) if gains else float("nan")
    return out


def train(pools: Path, out: Path, data: Path | None = None, steps: int = 5000, batch: int = 8,
          seconds: float = 3.0, lr: float = 1e-3, threads: int = 2, seed: int = 0,
          init: Path | None = None, config: EnsembleSeparatorConfig | None = None,
          music_folds: set[int] | None = None, p_real: float = 0.5) -> Path:
    """Train (or resume) into ``out`` from the rendered pools in ``pools`` (see
    :func:`render_data`), validating on ``data``'s URMP pairs too when given. With
    ``music_folds`` (a subset of ``{0, 1}``, needs ``data``), a share ``p_real`` of the training
    mixtures is made of the real MUSIC solos of those folds
    (:func:`avsplit.train.corpus.music_solos`), and the MUSIC pairs of the other fold, if
    any, are validated on too ("music"). Returns the path of ``out/best.pt`` (best mean over
    the validation sets)."""
    torch.set_num_threads(threads)
    config = config or EnsembleSeparatorConfig()
    train_pool = load_pool(pools / "pool-train.pt")
    valid_pool = load_pool(pools / "pool-valid.pt")
    length = int(seconds * config.sample_rate)
    sets = validation_set(valid_pool, length)
    if data is not None:
        real = real_validation_set(data, config.sample_rate)
        if real:
            sets["urmp"] = real
    solos = None
    if music_folds:
        if data is None:
            raise ValueError("music_folds needs data (the MUSIC solos are in ../shared/data)")
        from avsplit.train.corpus import music_solos

        solos = music_solos(data, set(music_folds), config.sample_rate)
        held = {0, 1} - set(music_folds)
        if held:
            sets["music"] = music_validation_set(data, held, config.sample_rate)
        print(f"{len(solos)} real MUSIC solos of folds {sorted(music_folds)}; validating on "
              f"{len(sets.get('music', []))} MUSIC pairs of folds {sorted(held)}", flush=True)
    model = EnsembleSeparator(config)

    def loss_of(rng: np.random.Generator) -> torch.Tensor:
        examples = [make_example(train_pool, length, rng, augment=True, solos=solos,
                                 p_real=p_real) for _ in range(batch)]
        return separation_loss(model, *batch_tensors(model, examples))

    return fit(model, out, loss_of, lambda: evaluate(model, sets), steps, lr=lr, seed=seed,
               init=init)
