"""Train the instrument tagger (:class:`avsplit.models.tagger.InstrumentTagger`).

Data: the instrument separator's training mixtures (:func:`avsplit.train.instruments.make_example`:
1-4 rendered instruments with timbre, room and level changes, electric bass and drums as
interferers that are not labels, and with ``--music-folds`` a share ``--p-real`` of mixtures of
real MUSIC solos), with every instrument that plays as a positive label. Real sounds that are
not instruments (speech and the noise/ambience recordings of ``DATA/audio``) are added to a
quarter of the mixtures and make up one example in seven on their own (no label), so that
speech, animals or engines are not heard as instruments. Loss: binary cross-entropy per label
(multi-label tagging, Kong et al. 2020).

Validation (every 250 steps): label-ranking precision, the share of a mixture's true labels
among its ``K`` highest-scored labels (``K`` = how many play), on held-out renders (held-out
scores and soundfont), real URMP pairs (never in training) and, with one MUSIC fold in training,
the other fold's real pairs; and on held-out speech and noise ("nonmusic"), the share of
recordings on which no label reaches probability 0.5.

    python -m avsplit.train tagger --pools runs/music --data ../shared/data --out runs/tagger \
        --steps 4000 --music-folds 0,1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avsplit.models.tagger import InstrumentTagger, InstrumentTaggerConfig
from avsplit.train.instruments import (Example, load_pool, make_example, music_validation_set,
                                       real_validation_set)
from avsplit.train.loop import fit


P_NON_MUSIC_ONLY, P_NON_MUSIC_ADDED = 1 / 7, 0.25


def non_music_sounds(data: Path, split: str, rate: int, speech_files: int = 150
                     ) -> list[np.ndarray]:
    """Real recordings that hold no instrument: the noise and ambience files of ``split``
    (:func:`avsplit.train.corpus.background_files`, music excluded) and up to
    ``speech_files`` speech files of ``split`` speakers, mono float32 at ``rate``."""
    from avsplit.train.corpus import background_files, load_mono, speech_speakers

    noise = [f for f in background_files(data, split) if "noise" in f.parts]
    speech = sorted(f for files in speech_speakers(data, split).values() for f in files[:2])
    pick = np.random.default_rng(7).permutation(len(speech))[:speech_files]
    out = [load_mono(f, rate) for f in noise + [speech[int(i)] for i in pick]]
    return [x for x in out if len(x) >= rate]


def _crop(x: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) < length:
        x = np.tile(x, -(-length // len(x)))
    s = int(rng.integers(len(x) - length + 1))
    return x[s:s + length]


def with_non_music(ex: Example, sounds: list[np.ndarray], rng: np.random.Generator,
                   only: bool) -> Example:
    """``ex`` with a random non-music sound added at -10..+5 dB to its mixture, or (``only``)
    replaced by that sound alone (no label)."""
    n = len(ex.mixture)
    x = _crop(sounds[int(rng.integers(len(sounds)))], n, rng).astype(np.float32)
    rms = float(np.sqrt(np.mean(x ** 2))) + 1e-8
    ref = float(np.sqrt(np.mean(ex.mixture ** 2))) + 1e-8
    if only:
        mix = x / rms * ref
        return Example(mix.astype(np.float32), np.zeros((0, n), np.float32), [], mix)
    x = x / rms * ref * 10 ** (rng.uniform(-10, 5) / 20)
    return Example((ex.mixture + x).astype(np.float32), ex.stems, ex.labels, ex.residual + x)


def non_music_score(model: "InstrumentTagger", examples: list[Example]) -> float:
    """Share of label-free examples on which no label reaches probability 0.5."""
    with torch.no_grad():
        p = torch.sigmoid(model(torch.from_numpy(np.stack([ex.mixture for ex in examples]))))
    return float((p.max(dim=1).values < 0.5).float().mean())


def targets(model: InstrumentTagger, examples: list[Example]) -> torch.Tensor:
    """``[B, labels]`` float32 multi-hot of the labels playing in each example."""
    labels = model.config.labels
    y = torch.zeros(len(examples), len(labels))
    for b, ex in enumerate(examples):
        for lab in ex.labels:
            y[b, labels.index(lab)] = 1.0
    return y


def ranking_precision(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over examples of the share of true labels among the ``K`` best-scored (``K`` = the
    number of true labels); examples without a true label are skipped."""
    out = []
    for lg, t in zip(logits, y):
        k = int(t.sum())
        if k:
            out.append(float(t[torch.topk(lg, k).indices].mean()))
    return float(np.mean(out)) if out else float("nan")


@torch.no_grad()
def evaluate(model: InstrumentTagger, sets: dict[str, list[Example]], batch: int = 16
             ) -> dict[str, float]:
    """:func:`ranking_precision` per validation set (examples of one set share a length)."""
    out = {}
    for name, examples in sets.items():
        if name == "nonmusic":
            out[name] = float(np.mean([non_music_score(model, examples[b:b + batch])
                                       for b in range(0, len(examples), batch)]))
            continue
        logits, ys = [], []
        for b0 in range(0, len(examples), batch):
            part = examples[b0:b0 + batch]
            n = min(len(ex.mixture) for ex in part)
            logits.append(model(torch.from_numpy(np.stack([ex.mixture[:n] for ex in part]))))
            ys.append(targets(model, part))
        out[name] = ranking_precision(torch.cat(logits), torch.cat(ys))
    return out


def train(pools: Path, out: Path, data: Path | None = None, steps: int = 4000, batch: int = 16,
          seconds: float = 3.0, lr: float = 1e-3, threads: int = 1, seed: int = 0,
          init: Path | None = None, music_folds: set[int] | None = None, p_real: float = 0.4
          ) -> Path:
    """Train (or resume) the tagger into ``out`` (``last.pt``, ``best.pt``, ``log.jsonl``);
    arguments as :func:`avsplit.train.instruments.train`. Returns ``out/best.pt``."""
    torch.set_num_threads(threads)
    config = InstrumentTaggerConfig()
    train_pool, valid_pool = load_pool(pools / "pool-train.pt"), load_pool(pools / "pool-valid.pt")
    length = int(seconds * config.sample_rate)
    rng = np.random.default_rng(4321)
    sets = {"renders": [make_example(valid_pool, length, rng, p_subset=0.0) for _ in range(120)]}
    solos, sounds = None, []
    if data is not None:
        sounds = non_music_sounds(data, "train", config.sample_rate)
        held = non_music_sounds(data, "heldout", config.sample_rate, speech_files=40)
        if held:
            blank = Example(np.zeros(length, np.float32), np.zeros((0, length), np.float32), [],
                            np.zeros(length, np.float32))
            sets["nonmusic"] = [with_non_music(blank, held, rng, only=True) for _ in range(64)]
        urmp = real_validation_set(data, config.sample_rate, limit=48)
        if urmp:
            sets["urmp"] = urmp
        if music_folds:
            from avsplit.train.corpus import music_solos

            solos = music_solos(data, set(music_folds), config.sample_rate)
            held = {0, 1} - set(music_folds)
            if held:
                sets["music"] = music_validation_set(data, held, config.sample_rate)
    model = InstrumentTagger(config)
    bce = torch.nn.BCEWithLogitsLoss()

    def loss_of(r: np.random.Generator) -> torch.Tensor:
        examples = [make_example(train_pool, length, r, augment=True, p_subset=0.0, solos=solos,
                                 p_real=p_real) for _ in range(batch)]
        if sounds:
            for i, ex in enumerate(examples):
                u = r.random()
                if u < P_NON_MUSIC_ONLY + P_NON_MUSIC_ADDED:
                    examples[i] = with_non_music(ex, sounds, r, only=u < P_NON_MUSIC_ONLY)
        mix = torch.from_numpy(np.stack([ex.mixture for ex in examples]))
        return bce(model(mix), targets(model, examples))

    return fit(model, out, loss_of, lambda: evaluate(model, sets), steps, lr=lr, seed=seed,
               init=init)
