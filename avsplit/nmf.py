"""NMF with a learned assignment: a second instrument separator, numpy only at inference.

Method. The mixture's magnitude STFT ``V`` is factorised as ``V ~ W H`` with the generalised
Kullback-Leibler divergence and Lee & Seung's multiplicative updates (Smaragdis & Brown 2003,
"Non-negative matrix factorization for polyphonic music transcription"; Virtanen 2007,
"Monaural sound source separation by nonnegative matrix factorization with temporal continuity
and sparseness criteria"). Each component ``w_k h_k^T`` is then given to one of the asked
instruments, as unsupervised NMF separation clusters its components (Spiertz & Gnann 2009,
"Source-filter based clustering for monaural blind source separation", DAFx), but the
grouping here is a small classifier learnt on rendered mixtures: a one-hidden-layer MLP on
features of the component's spectral basis on a log-frequency axis, of its pitch (harmonic-sum
estimate) and harmonic envelope, and of its activation over time (:func:`component_features`).
Its label scores are combined with a pitch-range prior per instrument (a component whose
fundamental lies outside an instrument's range is unlikely to be it) and, optionally, with the
share of the component that the network's masks give each label (``prior_masks``). A
"residual" class takes components of sounds that were not asked for (drums, bass, noise).
The stems' masks are Wiener-style ratios of the grouped reconstructions,
``m_l = sum_k q_kl w_k h_k^T / (W H)`` with ``q_kl`` the component's label posterior, as Sound
of Pixels' NMF baseline (Zhao et al. 2018, Sec. 5; Virtanen's grouping of NMF components).

The STFT grid is the instrument network's (:class:`avsplit.models.instruments.EnsembleSeparator`:
11,025 Hz, 1024-sample sqrt-Hann window, hop 256), so masks of both separators can be mixed
and applied by the same code (:class:`avsplit.separator.Separator` ``render``/``apply``).
Training: :mod:`avsplit.train.nmf`; weights: ``weights/instrument_nmf_classifier.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from avsplit import apply
from avsplit.labels import BY_LABEL, LABELS
from avsplit.separator import Separator

RATE, N_FFT, HOP = 11025, 1024, 256
RESIDUAL = "residual"
EPS = 1e-12
#: Log-frequency axis of the basis feature (bins from F_MIN to the Nyquist frequency).
LOG_BINS, F_MIN = 48, 40.0
#: Candidate fundamentals of the pitch estimate: MIDI 24 (32.7 Hz) to 100 (2637 Hz), half semitones.
PITCH_GRID = np.arange(24.0, 100.5, 0.5)
HARMONICS = 8


def kl_nmf(V: np.ndarray, W: np.ndarray, H: np.ndarray, iters: int, update_w: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """Lee & Seung multiplicative updates for the generalised KL divergence ``D(V || W H)``.

    Args:
        V: ``[bins, frames]`` non-negative float64 (a magnitude spectrogram).
        W: ``[bins, K]`` and H: ``[K, frames]`` positive initial factors, updated in place.
        iters: iterations; update_w: also update ``W`` (False: supervised NMF, fixed bases).

    Returns:
        ``(W, H)`` (the same arrays).
    """
    for _ in range(iters):
        H *= (W.T @ (V / (W @ H + EPS))) / (W.sum(0)[:, None] + EPS)
        if update_w:
            W *= ((V / (W @ H + EPS)) @ H.T) / (H.sum(1)[None, :] + EPS)
    return W, H


def fit_nmf(V: np.ndarray, k: int, iters: int = 100, seed: int = 0, dtype=np.float64
            ) -> tuple[np.ndarray, np.ndarray]:
    """Unsupervised KL-NMF of a magnitude spectrogram from a seeded random start.

    Args:
        V: ``[bins, frames]`` non-negative magnitudes (any float type).
        k: components; iters: multiplicative-update iterations; seed: of the random start.
        dtype: of the computation (float32 is twice as fast; the separator uses it).

    Returns:
        ``(W [bins, k], H [k, frames])`` of ``dtype`` with every basis column summing to one (the
        scale moved into ``H``), so ``W H`` approximates ``V``.
    """
    V = np.asarray(V, dtype) + EPS
    rng = np.random.default_rng(seed)
    W = rng.uniform(0.1, 1.0, (V.shape[0], k)).astype(dtype)
    H = (rng.uniform(0.1, 1.0, (k, V.shape[1])) * V.mean() / (0.3 * k)).astype(dtype)
    W, H = kl_nmf(V, W, H, iters, True)
    scale = W.sum(0) + EPS
    return W / scale, H * scale[:, None]


def components_for(n_labels: int, per_label: int = 20) -> int:
    """Number of NMF components for ``n_labels`` asked instruments (one more share for the
    residual): ``per_label * (n_labels + 1)``, at most 100. (20 per label separated the
    held-out renders 0.2 dB better than 12 and 0.3 dB better than 8, at 1.7x the time of 12.)"""
    return int(min(100, per_label * (max(n_labels, 1) + 1)))


# ------------------------------------------------------------------------------- features
def _log_map(bins: int, rate: int, n_fft: int) -> np.ndarray:
    """``[LOG_BINS, bins]`` triangular map from the linear STFT axis to the log axis."""
    from avsplit.models.instruments import log_frequency_maps

    return log_frequency_maps(n_fft, rate, LOG_BINS, F_MIN)[0].numpy().astype(np.float64)


def _harmonic_map(bins: int, rate: int, n_fft: int) -> np.ndarray:
    """``[len(PITCH_GRID), HARMONICS, bins]`` linear interpolation weights of the basis at
    ``h * f0`` for every candidate fundamental ``f0`` and harmonic ``h`` (0 above Nyquist)."""
    f0 = 440.0 * 2 ** ((PITCH_GRID - 69) / 12)
    pos = f0[:, None] * np.arange(1, HARMONICS + 1)[None] * n_fft / rate  # fractional bin
    out = np.zeros((len(f0), HARMONICS, bins))
    lo = np.floor(pos).astype(int)
    frac = pos - lo
    ok = lo + 1 < bins
    i, h = np.nonzero(ok)
    out[i, h, lo[ok]] = 1 - frac[ok]
    out[i, h, lo[ok] + 1] = frac[ok]
    return out


@lru_cache(maxsize=None)
def _maps(bins: int, rate: int = RATE, n_fft: int = N_FFT):
    """``(log map, harmonic map)`` of an STFT axis, built once per grid."""
    return _log_map(bins, rate, n_fft), _harmonic_map(bins, rate, n_fft)


def component_pitch(W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Harmonic-sum pitch estimate of each basis (Klapuri's weighted sum of harmonic
    amplitudes, weights ``1/h``), on the 11,025 Hz / 1024 grid.

    Args:
        W: ``[bins, K]`` bases (columns summing to one).

    Returns:
        ``(midi [K] float64 MIDI note of the best fundamental, salience [K] best harmonic sum
        over the median one (harmonicity, >= 1), harmonics [HARMONICS, K] basis amplitude at
        each harmonic of the best fundamental)``.
    """
    _, hmap = _maps(W.shape[0])
    amp = np.einsum("phb,bk->phk", hmap, W)  # [pitches, harmonics, K]
    sal = (amp / np.arange(1, HARMONICS + 1)[None, :, None]).sum(1)  # [pitches, K]
    best = sal.argmax(0)
    ratio = sal.max(0) / (np.median(sal, axis=0) + EPS)
    return PITCH_GRID[best], ratio, amp[best, :, np.arange(W.shape[1])].T


def component_features(W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Features of every NMF component for the assignment classifier.

    Args:
        W: ``[bins, K]`` bases on the 11,025 Hz / 1024 STFT grid (columns summing to one).
        H: ``[K, frames]`` activations (magnitude units of the mixture STFT).

    Returns:
        ``[K, n_features]`` float32: the basis on a 48-bin log-frequency axis (log, relative
        to its peak), the pitch (MIDI / 100), log harmonicity, the harmonic envelope (log
        amplitude of harmonics 1-8 relative to the strongest), log spectral centroid and
        flatness, and activation statistics: the component's log share of the mixture's
        magnitude, active fraction, coefficient of variation, mean rise and largest drop
        between frames (of the activation scaled to mean one) and lag-1 autocorrelation.
    """
    lmap, _ = _maps(W.shape[0])
    K = W.shape[1]
    logw = np.log(lmap @ W + 1e-7)
    logw -= logw.max(0, keepdims=True)
    midi, ratio, harm = component_pitch(W)
    lh = np.log(harm + 1e-7)
    lh -= lh.max(0, keepdims=True)
    freqs = np.arange(W.shape[0]) * RATE / N_FFT
    centroid = np.log((freqs[:, None] * W).sum(0) + 1.0) / 8.0
    flat = np.exp(np.log(W + 1e-9).mean(0)) / (W.mean(0) + EPS)
    h = H / (H.mean(1, keepdims=True) + EPS)  # [K, T] mean 1
    share = H.sum(1) / (H.sum() + EPS)
    active = (h > 0.1 * h.max(1, keepdims=True)).mean(1)
    cv = h.std(1)
    d = np.diff(h, axis=1) if h.shape[1] > 1 else np.zeros((K, 1))
    onset = np.maximum(d, 0).mean(1)
    decay = np.maximum(-d, 0).max(1) if d.size else np.zeros(K)
    hc = h - h.mean(1, keepdims=True)
    ac = (hc[:, 1:] * hc[:, :-1]).sum(1) / ((hc ** 2).sum(1) + EPS) if h.shape[1] > 1 else np.zeros(K)
    stats = np.stack([midi / 100.0, np.log(ratio), centroid, np.log(flat + 1e-9) / 10,
                      np.log(share + 1e-9) / 10, active, np.log1p(cv), np.log1p(onset),
                      np.log1p(decay), ac], axis=1)
    return np.concatenate([logw.T / 10, lh.T / 10, stats], axis=1).astype(np.float32)


def pitch_prior(midi: np.ndarray, classes: list[str], margin: float = 2.0) -> np.ndarray:
    """``[K, len(classes)]`` semitones by which each component's pitch lies outside each
    instrument's range (:data:`avsplit.labels.INSTRUMENTS` ``pitch_range``, widened by
    ``margin``); 0 inside it and for the residual class. Times ``-pitch_weight / 12`` it is a
    log prior (one octave outside costs ``pitch_weight`` nats)."""
    out = np.zeros((len(midi), len(classes)))
    for j, c in enumerate(classes):
        if c in BY_LABEL:
            lo, hi = BY_LABEL[c].pitch_range
            out[:, j] = np.maximum(0, np.maximum(lo - margin - midi, midi - hi - margin))
    return out


# ------------------------------------------------------------------------------- classifier
@dataclass
class NMFClassifier:
    """The learnt component -> class scorer: standardised features, one ReLU hidden layer,
    one logit per class (the instrument labels and ``residual``).

    Attributes:
        classes: class names (labels + ``"residual"``), logit order.
        mean, std: ``[n_features]`` feature standardisation.
        w1 ``[n_features, hidden]``, b1 ``[hidden]``, w2 ``[hidden, classes]``, b2 ``[classes]``:
            float32 weights.
        per_label, iters: NMF settings the classifier was trained with (:func:`components_for`).
        pitch_weight: log-prior cost of one octave outside an instrument's range (nats).
        prior_weight: exponent of the network-mask prior (``prior_masks``).
        sharpness: exponent applied to the posteriors before they group the components.
    """

    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    per_label: int = 20
    iters: int = 100
    pitch_weight: float = 0.0
    prior_weight: float = 1.0
    sharpness: float = 1.0

    ARRAYS = ("mean", "std", "w1", "b1", "w2", "b2")
    SCALARS = ("per_label", "iters", "pitch_weight", "prior_weight", "sharpness")

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``[K, n_features]`` -> ``[K, classes]`` float64 logits."""
        x = (features - self.mean) / self.std
        hidden = np.maximum(x @ self.w1 + self.b1, 0)
        return (hidden @ self.w2 + self.b2).astype(np.float64)

    def save(self, path: Path) -> None:
        """Write an ``.npz`` (plain arrays, no pickles)."""
        np.savez(path, classes=np.array(self.classes),
                 **{k: np.asarray(getattr(self, k), np.float32) for k in self.ARRAYS},
                 **{k: np.array(getattr(self, k)) for k in self.SCALARS})

    @classmethod
    def load(cls, path: Path) -> "NMFClassifier":
        """Read a file written by :meth:`save` (``allow_pickle=False``).

        Raises:
            ValueError: not such a file (missing arrays, or a pickle inside).
        """
        try:
            with np.load(path, allow_pickle=False) as d:
                return cls([str(c) for c in d["classes"]],
                           **{k: d[k].astype(np.float32) for k in cls.ARRAYS},
                           **{k: type(getattr(cls, k))(d[k]) for k in cls.SCALARS})
        except (KeyError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not an NMF classifier file ({exc})") from None


def posteriors(clf: NMFClassifier, W: np.ndarray, H: np.ndarray, labels: list[str],
               prior: np.ndarray | None = None) -> np.ndarray:
    """Class posteriors of every component over the asked labels and the residual.

    Args:
        clf: the classifier; W ``[bins, K]``, H ``[K, frames]``: an NMF of the mixture.
        labels: asked labels (distinct, all in ``clf.classes``).
        prior: optional ``[len(labels) + 1, K]`` share of each component that a network's
            masks give each label and the residual (rows sum to one over classes).

    Returns:
        ``[K, len(labels) + 1]`` float64, rows summing to one, residual last.
    """
    classes = list(labels) + [RESIDUAL]
    cols = [clf.classes.index(c) for c in classes]
    z = clf.logits(component_features(W, H))[:, cols]
    if clf.pitch_weight:
        midi, _, _ = component_pitch(W)
        z = z - clf.pitch_weight / 12 * pitch_prior(midi, classes)
    if prior is not None and clf.prior_weight:
        z = z + clf.prior_weight * np.log(prior.T + 0.02)
    z = z * clf.sharpness
    z -= z.max(1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(1, keepdims=True)


def mask_prior(prior_masks: np.ndarray, W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Share of each component under each of a network's masks, as a label prior.

    Args:
        prior_masks: ``[L, bins, frames]`` masks in 0..1 (summing to at most one);
            W ``[bins, K]``, H ``[K, frames]``: the NMF.

    Returns:
        ``[L + 1, K]`` float64: ``sum_ft m_l w_k h_k / sum_ft w_k h_k`` for each mask and for
        what the masks leave (last row), normalised over the rows.
    """
    pm = np.clip(np.asarray(prior_masks, np.float64), 0, 1)
    pm = np.concatenate([pm, np.maximum(1 - pm.sum(0, keepdims=True), 0)])
    prior = np.einsum("lft,fk,kt->lk", pm, W, H) / (W.sum(0) * H.sum(1) + EPS)[None]
    return prior / (prior.sum(0, keepdims=True) + EPS)


def group_masks(W: np.ndarray, H: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Wiener-style masks of grouped components: ``m_l = sum_k q_kl w_k h_k / (W H)``.

    Args:
        W ``[bins, K]``, H ``[K, frames]``: the NMF; q: ``[K, L]`` component-to-stem weights
            (rows summing to at most one).

    Returns:
        ``[L, bins, frames]`` float32 in 0..1, summing to at most one.
    """
    grouped = np.einsum("fk,kl,kt->lft", W, q, H)
    return np.clip(grouped / (W @ H + EPS)[None], 0.0, 1.0).astype(np.float32)


class NMFSeparator(Separator):
    """KL-NMF of the mixture + learnt grouping of its components into the asked instruments.

    Same interface as the network :class:`avsplit.separator.Separator` for the instruments
    (``rate``, ``n_fft``, ``hop``, ``mono``, ``masks``, ``render``, ``apply``), so a mode can
    use either.

    Args:
        classifier: the :class:`NMFClassifier`.
        model_id: ``{"name", "file", "sha256"}`` for manifests.
        seed: of the NMF's random start (results are deterministic for a given seed).
    """

    def __init__(self, classifier: NMFClassifier, model_id: dict, seed: int = 0):
        config = SimpleNamespace(sample_rate=RATE, n_fft=N_FFT, hop=HOP)
        super().__init__(SimpleNamespace(config=config), model_id, "cpu")
        self.classifier = classifier
        self.seed = seed

    def chunk_masks(self, mag: np.ndarray, labels: list[str],
                    prior_masks: np.ndarray | None = None) -> np.ndarray:
        """Masks of one magnitude spectrogram ``[bins, frames]`` for the distinct ``labels``:
        ``[len(labels), bins, frames]`` float32 (see :meth:`masks`)."""
        clf = self.classifier
        W, H = fit_nmf(mag, components_for(len(labels), clf.per_label), clf.iters, self.seed,
                       np.float32)
        W, H = W.astype(np.float64), H.astype(np.float64)
        prior = None if prior_masks is None else mask_prior(prior_masks, W, H)
        q = posteriors(clf, W, H, labels, prior)[:, :len(labels)]  # [K, L]
        return group_masks(W, H, q)

    def masks(self, wave: np.ndarray, labels: list[str], prior_masks: np.ndarray | None = None,
              chunk_s: float = 12.0, overlap_s: float = 2.0, allocate=None, advance=None,
              **_) -> np.ndarray:
        """Masks of a recording, in overlapping chunks (:func:`avsplit.apply.estimate_masks`).

        Args:
            wave: ``[samples]`` float32 mono at 11,025 Hz (:attr:`rate`).
            labels: instrument labels; a repeated label repeats its row.
            prior_masks: optional ``[len(labels), 513, frames]`` masks of the instrument
                network for the same labels on the same grid (0..1): each component's share
                under them is a prior on its label (``classifier.prior_weight``).
            chunk_s, overlap_s: seconds of each NMF and of the cross-faded overlap.
            allocate, advance: as :meth:`avsplit.separator.Separator.masks`.

        Returns:
            ``[len(labels), 513, samples // 256 + 1]`` float16 in 0..1, summing to at most
            one in every bin (the rest is the residual: components of unasked sounds).

        Raises:
            ValueError: a label the classifier does not know, or ``prior_masks`` of another
                shape.
        """
        unknown = [lab for lab in labels if lab not in self.classifier.classes or lab == RESIDUAL]
        if unknown:
            raise ValueError(f"unknown instrument {unknown[0]!r}; known: {', '.join(LABELS)}")
        distinct = list(dict.fromkeys(labels))
        rows = [distinct.index(lab) for lab in labels]
        bins, frames = self.n_fft // 2 + 1, len(wave) // self.hop + 1
        if not labels:
            return np.zeros((0, bins, frames), np.float16)
        condition = None
        if prior_masks is not None:
            if prior_masks.shape != (len(labels), bins, frames):
                raise ValueError(f"prior_masks has shape {prior_masks.shape}, expected "
                                 f"{(len(labels), bins, frames)}")
            first = [labels.index(lab) for lab in distinct]
            condition = np.asarray(prior_masks[first], np.float16).reshape(-1, frames)

        def masks_of(spec, part=None) -> np.ndarray:
            prior = None if part is None else part.reshape(len(distinct), bins, -1)
            return self.chunk_masks(spec.abs().numpy(), distinct, prior)

        out = apply.estimate_masks(masks_of, wave, self.n_fft, self.hop, self.rate, chunk_s,
                                   overlap_s, condition=condition, allocate=allocate,
                                   advance=advance)
        return out if rows == list(range(len(distinct))) else out[rows]


def load_nmf_separator(path: Path | None = None) -> NMFSeparator:
    """The NMF separator with the bundled classifier (registry ``instrument-nmf``, checked
    against its sha256) or the classifier file ``path``.

    Raises:
        AvsplitError: missing or corrupt file.
    """
    from avsplit.errors import AvsplitError
    from avsplit.models.registry import sha256_of, weights_path

    path = weights_path("instrument-nmf") if path is None else Path(path)
    if not path.exists():
        raise AvsplitError(f"NMF classifier file {path} does not exist")
    try:
        clf = NMFClassifier.load(path)
    except ValueError as exc:
        raise AvsplitError(str(exc)) from None
    return NMFSeparator(clf, {"name": "instrument-nmf", "file": path.name,
                              "sha256": sha256_of(path)})


#: How :class:`CombinedSeparator` combines the network's masks with the NMF's: ``prior`` (NMF
#: grouping with the network's masks as prior), ``mean`` (mean of the network's and the plain
#: NMF's masks), ``mean_prior`` (mean of the network's and the prior-NMF's masks), ``choice``
#: (per clip, the more confident of the network and the prior-NMF, see :func:`confidence`),
#: ``product_prior`` (the normalised geometric mean of the network's and the prior-NMF's
#: masks, the residual included: a product of experts, see :func:`product_of_masks`).
RULES = ("prior", "mean", "mean_prior", "choice", "product_prior")


def confidence(masks: np.ndarray, power: np.ndarray) -> float:
    """Energy-weighted mean of the largest mask per bin: ``sum P max_l m_l / sum P`` (0..1;
    1 = every bin given entirely to one stem). ``masks [L, bins, frames]``, ``power [bins,
    frames]`` (the mixture's STFT power on the same grid)."""
    if not len(masks):
        return 0.0
    return float((masks.astype(np.float32).max(0) * power).sum() / max(float(power.sum()), EPS))


#: Floor of a mask value inside :func:`product_of_masks` (a mask of 0 would veto a bin alone).
PRODUCT_FLOOR = 1e-4


def product_of_masks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The normalised geometric mean of two sets of masks, each completed by its residual
    ``1 - sum``: ``m_l = sqrt(a_l b_l) / (sum_j sqrt(a_j b_j) + sqrt(r_a r_b))``.

    A product of experts (Hinton 2002, "Training products of experts by minimizing
    contrastive divergence"): a bin goes to a stem as far as *both* separators give it to
    that stem, where the arithmetic mean keeps half of either one's leakage. On the real
    MUSIC and URMP mixtures it raises SIR and SDR over the mean (docs/benchmarks.md,
    instrument section). Values are floored at :data:`PRODUCT_FLOOR` first, so where the two
    disagree completely the bin is shared between their choices.

    Args:
        a, b: ``[L, bins, frames]`` masks, each summing to at most one over ``L``.

    Returns:
        ``[L, bins, frames]`` float32 masks summing to at most one (the rest is the residual).
    """
    a = np.maximum(a.astype(np.float32), PRODUCT_FLOOR)
    b = np.maximum(b.astype(np.float32), PRODUCT_FLOOR)
    residual = np.sqrt(np.maximum(1 - a.sum(0), PRODUCT_FLOOR)
                       * np.maximum(1 - b.sum(0), PRODUCT_FLOOR))
    g = np.sqrt(a * b)
    return g / (g.sum(0) + residual)


def combine_masks(net: np.ndarray, nmf: np.ndarray, rule: str,
                  power: np.ndarray | None = None) -> np.ndarray:
    """Combine the network's masks ``net`` with NMF masks ``nmf`` (both ``[L, bins, frames]``,
    each summing to at most one; ``nmf`` from the prior-NMF for ``prior``/``mean_prior``/
    ``choice``/``product_prior``) by ``rule`` (:data:`RULES`; ``choice`` needs ``power
    [bins, frames]``). Returns ``[L, bins, frames]`` float32 summing to at most one.

    Raises:
        ValueError: an unknown rule.
    """
    if rule == "prior":
        return nmf.astype(np.float32)
    if rule in ("mean", "mean_prior"):
        return (0.5 * (net.astype(np.float32) + nmf.astype(np.float32)))
    if rule == "product_prior":
        return product_of_masks(net, nmf)
    if rule == "choice":
        pick = nmf if confidence(nmf, power) > confidence(net, power) else net
        return pick.astype(np.float32)
    raise ValueError(f"unknown combination rule {rule!r}; one of {', '.join(RULES)}")


COMBINE_BLOCK = 4096  # frames combined at a time (about 95 s at 11,025 Hz / hop 256)

#: Exponent of the re-separation share (:func:`reseparate`; 0 turns it off). Chosen on the
#: held-out renders, the URMP pairs and trios and the cross-validated MUSIC pairs together
#: (docs/benchmarks.md, instrument section): 1 gains most on the renders and URMP, 0.5 nearly as
#: much there and keeps the MUSIC pairs' SDR.
RESEPARATION_POWER = 0.5


def reseparate(network: Separator, wave: np.ndarray, labels: list[str], masks: np.ndarray,
               power: float = RESEPARATION_POWER) -> np.ndarray:
    """Re-separation: every stem goes through the network once more, and keeps of each bin the
    share that the network, asked for all ``labels`` again, still gives that stem's label:
    ``m_l <- m_l * s_l ** power`` with ``s = limit_total(network.masks(stem_l, labels))[l]``.
    What leaked from another instrument into a stem is the loudest foreign sound left in it,
    so the second pass, which no longer hears the rest of the mixture, finds it more easily
    (in the spirit of the iterative refinement of Sound of Pixels-style separators, e.g. Tzinis
    et al. 2020, "Into the wild with AudioScope", and of Wiener post-filtering). The residual
    takes what the stems give up, so the masks still sum to at most one.

    Args:
        network: the instrument network's :class:`avsplit.separator.Separator`.
        wave: ``[samples]`` float32 mono at the network's rate.
        labels: the asked labels, one per row of ``masks``; rows of one label share it (their
            stem keeps what the network gives that label, whichever row it is).
        masks: ``[len(labels), bins, frames]`` on the network's STFT grid of ``wave``.
        power: exponent of the share (0: ``masks`` unchanged).

    Returns:
        ``masks``, changed in place (one stem and one block of frames at a time: long inputs'
        masks are never copied whole).

    Raises:
        ValueError: a label the network does not know.
    """
    if power <= 0:
        return masks
    distinct = list(dict.fromkeys(labels))
    for i, label in enumerate(labels):
        stem = network.apply(wave[None], network.rate, masks[i:i + 1])[0, 0]
        share = apply.limit_total(network.masks(stem, distinct))[distinct.index(label)]
        frames = min(share.shape[-1], masks.shape[-1])
        for f0 in range(0, frames, COMBINE_BLOCK):
            f1 = min(frames, f0 + COMBINE_BLOCK)
            masks[i, :, f0:f1] = (masks[i, :, f0:f1].astype(np.float32)
                                  * share[:, f0:f1].astype(np.float32) ** power)
    return masks


class CombinedSeparator(Separator):
    """The instrument network and the NMF separator together (:func:`combine_masks`), behind
    the same interface as either.

    Args:
        network: the instrument network's :class:`avsplit.separator.Separator`.
        nmf: the :class:`NMFSeparator`; rule: one of :data:`RULES`.
        reseparation: the exponent of :func:`reseparate` applied to the combined masks (0:
            none; the product uses :data:`RESEPARATION_POWER`).

    Attributes:
        model_ids: both separators' ``model_id`` (the manifest lists both).
    """

    def __init__(self, network: Separator, nmf: NMFSeparator, rule: str = "mean",
                 reseparation: float = 0.0):
        if rule not in RULES:
            raise ValueError(f"unknown combination rule {rule!r}; one of {', '.join(RULES)}")
        super().__init__(SimpleNamespace(config=network.config), network.model_id, "cpu")
        self.network, self.nmf, self.rule = network, nmf, rule
        self.reseparation = reseparation
        self.model_ids = [network.model_id, nmf.model_id]

    def masks(self, wave: np.ndarray, labels: list[str], allocate=None, advance=None, **kw
              ) -> np.ndarray:
        """``[len(labels), 513, frames]`` float16 masks (see :meth:`NMFSeparator.masks`).

        Raises:
            ValueError: a label either separator does not know.
        """
        net = apply.limit_total(self.network.masks(wave, labels))
        prior = None if self.rule == "mean" else net
        nmf = self.nmf.masks(wave, labels, prior_masks=prior)
        power = None
        if self.rule == "choice":
            from avsplit.audio import stft
            import torch

            power = (stft(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), self.n_fft,
                          self.hop).abs() ** 2).numpy()
        if self.rule == "choice":  # one decision for the whole clip
            out = combine_masks(net, nmf, self.rule, power).astype(np.float16)
        else:  # frame blocks: no whole-clip float32 copies of long inputs' masks
            out = np.empty(net.shape, np.float16)
            for f0 in range(0, net.shape[2], COMBINE_BLOCK):
                f1 = min(net.shape[2], f0 + COMBINE_BLOCK)
                out[:, :, f0:f1] = combine_masks(net[:, :, f0:f1], nmf[:, :, f0:f1], self.rule)
        reseparate(self.network, wave, labels, out, self.reseparation)
        if allocate is not None:
            stored = allocate(out.shape, np.float16)
            stored[:, :, 0:out.shape[2]] = out
            return stored
        return out
