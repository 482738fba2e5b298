"""Train the component classifier of the NMF separator (:mod:`avsplit.nmf`) on rendered mixtures.

Recipe:

1. Mixtures as the instrument network is trained on (:func:`avsplit.train.instruments.make_example`:
   1-4 instruments of different labels, half from one ensemble, -8..+8 dB, timbre/room
   augmentation, bass and drum interferers, sometimes only a subset asked), 6 s at 11,025 Hz,
   from the training pool (``pool-train.pt``) minus every 10th ensemble, which is kept for
   tuning the inference settings.
2. KL-NMF of each mixture's magnitude STFT with :func:`avsplit.nmf.components_for` components
   (as at inference), and each component's oracle owner: the share of its reconstruction
   ``w_k h_k^T`` that each stem's ideal ratio mask ``|S_i| / sum_j |S_j|`` takes (the asked
   stems and the residual); the hard owner is the stem with most of it.
3. The classifier (:class:`avsplit.nmf.NMFClassifier`, a one-hidden-layer MLP) is fitted with a
   cross-entropy against these soft ownerships, the softmax restricted to the mixture's asked
   labels and the residual (as at inference), each component weighted by its share of the
   mixture's magnitude (every mixture counts the same).
4. Tuning (tuning split): the posterior sharpness and the pitch-range prior weight by the mean
   SI-SDR of the masked stems, then the weight of the network-mask prior (the bundled
   instrument network's masks).
5. Evaluation on the held-out pool (``pool-valid.pt``: held-out scores and soundfont): the
   energy-weighted component accuracy (share of the components' energy whose predicted class
   is the hard owner), with and without the priors, and the SI-SDR of the stems.

    python -m avsplit.train nmf --pools runs/music --out runs/nmf
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from avsplit.audio import istft, si_sdr, stft
from avsplit.labels import LABELS
from avsplit.nmf import (EPS, HOP, N_FFT, RESIDUAL, NMFClassifier, component_features,
                         components_for, fit_nmf, group_masks, mask_prior, posteriors)
from avsplit.train.instruments import StemPool, load_pool, make_example

CLASSES = list(LABELS) + [RESIDUAL]


def _subpool(pool: StemPool, keep) -> StemPool:
    idx = [i for i in range(len(pool.stems)) if keep(i)]
    return StemPool([pool.labels[i] for i in idx], [pool.stems[i] for i in idx], pool.rate)


def mixture_components(ex, per_label: int, iters: int, seed: int, keep_signals: bool = False
                       ) -> dict:
    """NMF of one example's mixture and the oracle ownership of its components.

    Returns:
        ``{"labels", "features" [K, D], "own" [K, L + 1] (soft ownership over the asked labels
        and the residual, rows summing to one), "mass" [K] (magnitude share), "energy" [K]}``;
        with ``keep_signals`` also ``W``, ``H``, ``spec`` (mixture STFT) and ``refs``
        (``[L + 1, samples]`` asked stems and residual) for scoring masks.
    """
    spec = stft(torch.from_numpy(ex.mixture), N_FFT, HOP)
    V = spec.abs().numpy()
    W, H = fit_nmf(V, components_for(len(ex.labels), per_label), iters, seed, np.float32)
    W, H = W.astype(np.float64), H.astype(np.float64)
    refs = np.concatenate([ex.stems, ex.residual[None]]).astype(np.float32)
    S = stft(torch.from_numpy(refs), N_FFT, HOP).abs().double().numpy()
    ratio = S / (S.sum(0, keepdims=True) + EPS)
    own = np.einsum("fk,lft,kt->kl", W, ratio, H)
    mass = W.sum(0) * H.sum(1)
    out = {"labels": list(ex.labels), "features": component_features(W, H),
           "own": own / (own.sum(1, keepdims=True) + EPS), "mass": mass / (mass.sum() + EPS),
           "energy": (W ** 2).sum(0) * (H ** 2).sum(1)}
    if keep_signals:
        out.update(W=W, H=H, spec=spec, refs=refs)
    return out


def build_set(pool: StemPool, count: int, seconds: float, seed: int, augment: bool,
              per_label: int, iters: int, keep_signals: bool = False, log_every: int = 250
              ) -> list[dict]:
    """``count`` examples from ``pool`` (deterministic for ``seed``) through
    :func:`mixture_components`; examples with nothing asked are skipped."""
    rng = np.random.default_rng(seed)
    length = int(seconds * pool.rate)
    out: list[dict] = []
    t0 = time.perf_counter()
    while len(out) < count:
        ex = make_example(pool, length, rng, augment=augment)
        if not ex.labels:
            continue
        out.append(mixture_components(ex, per_label, iters, seed + len(out), keep_signals))
        if len(out) % log_every == 0:
            print(f"  {len(out)}/{count} mixtures ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def _flat(items: list[dict]):
    """Stack the components of many mixtures: features, soft targets over all classes, the
    allowed-class mask, weights (per-mixture magnitude share), energies, mixture index."""
    feats, target, allowed, weight, energy, which = [], [], [], [], [], []
    for m, it in enumerate(items):
        cols = [CLASSES.index(c) for c in it["labels"] + [RESIDUAL]]
        K = len(it["features"])
        t = np.zeros((K, len(CLASSES)), np.float32)
        t[:, cols] = it["own"]
        a = np.zeros((K, len(CLASSES)), bool)
        a[:, cols] = True
        feats.append(it["features"])
        target.append(t)
        allowed.append(a)
        weight.append(it["mass"])
        energy.append(it["energy"])
        which.append(np.full(K, m))
    return tuple(np.concatenate(x) for x in (feats, target, allowed, weight, energy, which))


def fit_classifier(items: list[dict], hidden: int = 128, steps: int = 3000, lr: float = 3e-3,
                   weight_decay: float = 1e-4, seed: int = 0, per_label: int = 20,
                   iters: int = 100) -> NMFClassifier:
    """Fit the MLP on the components of ``items`` (full batch, Adam)."""
    torch.manual_seed(seed)
    feats, target, allowed, weight, _, _ = _flat(items)
    mean, std = feats.mean(0), feats.std(0) + 1e-3
    x = torch.from_numpy((feats - mean) / std)
    t, a = torch.from_numpy(target), torch.from_numpy(allowed)
    w = torch.from_numpy(weight.astype(np.float32))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, len(CLASSES)))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, lr * 0.05)
    for step in range(steps):
        z = net(x).masked_fill(~a, -1e9)
        loss = -(w * (t * torch.log_softmax(z, 1)).sum(1)).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"  step {step}: loss {loss.item():.4f}", flush=True)
    l1, l2 = net[0], net[2]
    return NMFClassifier(CLASSES, mean.astype(np.float32), std.astype(np.float32),
                         l1.weight.detach().numpy().T.copy(), l1.bias.detach().numpy().copy(),
                         l2.weight.detach().numpy().T.copy(), l2.bias.detach().numpy().copy(),
                         per_label=per_label, iters=iters)


def _prior_of(it: dict) -> np.ndarray | None:
    """The network-mask prior of one item (:func:`avsplit.nmf.mask_prior` of its ``net_masks``)."""
    return mask_prior(it["net_masks"], it["W"], it["H"]) if "net_masks" in it else None


def evaluate(clf: NMFClassifier, items: list[dict], use_prior: bool = False,
             sdr: bool = False) -> dict:
    """Energy-weighted component accuracy (predicted class = hard owner) and, with ``sdr``,
    the mean SI-SDR (dB) of the asked stems from the grouped masks (items need
    ``keep_signals``; ``use_prior`` needs ``net_masks`` in them)."""
    right = total = 0.0
    scores: list[float] = []
    for it in items:
        L = len(it["labels"])
        prior = _prior_of(it) if use_prior else None
        if "W" in it:
            q = posteriors(clf, it["W"], it["H"], it["labels"], prior)
        else:  # features only: the classifier without priors
            cols = [clf.classes.index(c) for c in it["labels"] + [RESIDUAL]]
            z = clf.logits(it["features"])[:, cols]
            q = np.exp(z - z.max(1, keepdims=True))
        right += float((it["energy"] * (q.argmax(1) == it["own"].argmax(1))).sum())
        total += float(it["energy"].sum())
        if sdr:
            masks = group_masks(it["W"], it["H"], q[:, :L])
            est = istft(it["spec"][None] * torch.from_numpy(masks), N_FFT, HOP,
                        it["refs"].shape[1]).numpy()
            scores += si_sdr(est, it["refs"][:L]).tolist()
    out = {"accuracy": right / max(total, EPS)}
    if sdr:
        out["si_sdr"] = float(np.mean(scores))
    return out


def add_network_masks(items: list[dict], separator) -> None:
    """Put the instrument network's masks (``[L, bins, frames]``, limited to a sum of one) of
    each item's mixture into ``item["net_masks"]``, and the stems' SI-SDR from them into
    ``item["net_si_sdr"]``."""
    from avsplit.apply import limit_total

    for it in items:
        mix = it["refs"].sum(0)
        m = limit_total(separator.masks(mix, it["labels"]).astype(np.float32))
        it["net_masks"] = m.astype(np.float16)
        est = istft(it["spec"][None] * torch.from_numpy(m), N_FFT, HOP, len(mix)).numpy()
        it["net_si_sdr"] = si_sdr(est, it["refs"][:len(it["labels"])]).tolist()


def tune(clf: NMFClassifier, items: list[dict], with_prior: bool) -> dict:
    """Pick ``sharpness`` and ``pitch_weight`` (then ``prior_weight``) on ``items`` by mean
    SI-SDR; sets them on ``clf`` and returns the grid's scores."""
    grid = {}
    best = (-np.inf, None)
    for sharp in (0.5, 1.0, 2.0):
        for pw in (0.0, 1.0, 2.0, 4.0):
            clf.sharpness, clf.pitch_weight = sharp, pw
            s = evaluate(clf, items, sdr=True)["si_sdr"]
            grid[f"sharpness={sharp},pitch_weight={pw}"] = s
            if s > best[0]:
                best = (s, (sharp, pw))
    clf.sharpness, clf.pitch_weight = best[1]
    if with_prior:
        best_p = (-np.inf, 0.0)
        for w in (0.0, 1.0, 2.0, 4.0, 8.0):
            clf.prior_weight = w
            s = evaluate(clf, items, use_prior=True, sdr=True)["si_sdr"]
            grid[f"prior_weight={w}"] = s
            if s > best_p[0]:
                best_p = (s, w)
        clf.prior_weight = best_p[1]
    return grid


def train(pools: Path, out: Path, n_train: int = 2000, n_tune: int = 150, n_valid: int = 200,
          seconds: float = 6.0, per_label: int = 20, iters: int = 100, hidden: int = 128,
          steps: int = 3000, threads: int = 1, seed: int = 0, net_prior: bool = True) -> Path:
    """Build the component sets, fit, tune and evaluate the classifier; writes
    ``out/classifier.npz`` and ``out/summary.json`` (accuracies, SI-SDR, settings, wall time).
    Returns the classifier's path."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    full = load_pool(pools / "pool-train.pt")
    train_pool = _subpool(full, lambda i: i % 10 != 0)
    tune_pool = _subpool(full, lambda i: i % 10 == 0)
    valid_pool = load_pool(pools / "pool-valid.pt")
    print(f"pools: {len(train_pool.stems)} training, {len(tune_pool.stems)} tuning, "
          f"{len(valid_pool.stems)} held-out ensembles", flush=True)
    train_items = build_set(train_pool, n_train, seconds, seed, True, per_label, iters)
    tune_items = build_set(tune_pool, n_tune, seconds, seed + 1, True, per_label, iters, True)
    valid_items = build_set(valid_pool, n_valid, seconds, seed + 2, False, per_label, iters, True)
    t_data = time.perf_counter() - t0
    print(f"component sets built in {t_data:.0f} s", flush=True)
    clf = fit_classifier(train_items, hidden, steps, seed=seed, per_label=per_label, iters=iters)
    if net_prior:
        from avsplit.engine import Engine

        separator = Engine("cpu").separator("instrument-separator")
        add_network_masks(tune_items, separator)
        add_network_masks(valid_items, separator)
    grid = tune(clf, tune_items, net_prior)
    clf.save(out / "classifier.npz")
    summary = {"settings": {"sharpness": clf.sharpness, "pitch_weight": clf.pitch_weight,
                            "prior_weight": clf.prior_weight, "per_label": per_label,
                            "iters": iters, "hidden": hidden, "steps": steps,
                            "seconds": seconds, "n_train": n_train, "n_tune": n_tune,
                            "n_valid": n_valid},
               "tuning_grid_si_sdr": grid,
               "train_accuracy_no_prior": evaluate(clf, train_items)["accuracy"]}
    pw, clf.pitch_weight = clf.pitch_weight, 0.0
    summary["valid_no_pitch_prior"] = evaluate(clf, valid_items, sdr=True)
    clf.pitch_weight = pw
    summary["valid"] = evaluate(clf, valid_items, sdr=True)
    if net_prior:
        summary["valid_net_prior"] = evaluate(clf, valid_items, use_prior=True, sdr=True)
        summary["valid_network_alone_si_sdr"] = float(np.mean(
            [v for it in valid_items for v in it["net_si_sdr"]]))
    summary["wall_s"] = time.perf_counter() - t0
    summary["data_wall_s"] = t_data
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2), flush=True)
    v = summary["valid"]
    print(f"held-out energy-weighted component accuracy: {100 * v['accuracy']:.1f} % "
          f"(SI-SDR of the stems {v['si_sdr']:.2f} dB)", flush=True)
    return out / "classifier.npz"
