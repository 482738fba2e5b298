"""Instrument separation benchmark (mix-and-separate on real recordings, label queries).

Sets (each source of a mixture is asked for with its true label; every label of an item is
different, so a query names exactly one source):

* **MUSIC pairs** (``DATA/audio/music/MUSIC/<inst1>-<inst2>[-n]/``): ``gt1 + gt2`` summed here
  (the folder's ``mix.flac`` is not exactly their sum), 11.025 kHz, 5.9 s. Pairs of one
  instrument twice (``erhu-erhu``, ...) are skipped: a label query cannot tell the two apart.
* **URMP pairs and trios** (``DATA/audio/music/URMP/*/<piece>/``): all combinations of 2 and of
  3 time-aligned stems of a piece whose labels all differ (violin 1 + violin 2 is skipped),
  summed here, one window of at most 10 s per combination (the one where the quietest of its
  stems is loudest), at the stems' own rate (11.025 or 48 kHz). A piece found in several
  folders (01, 12, 35) is taken once: from the folder with the most stems, then the longest.
* **Synthetic validation**: 2-instrument mixtures from ``POOLS/pool-valid.pt`` (held-out scores
  rendered with the held-out soundfont): two instrument parts of one ensemble with different
  labels, each scaled to the same RMS, the 6 s window where the quieter part is loudest.

Scores: BSS-eval v3 SDR / SIR / SAR (``fast_bss_eval.bss_eval_sources``, 512-tap distortion
filter, no permutation: the query fixes which estimate is which source), at the input's rate,
as Sound of Pixels evaluates (mir_eval's ``bss_eval_sources``); means are over all sources.
In the same run: the mixture as the estimate of every source (floor), the ideal ratio mask
``|S_i| / sum_j |S_j|`` with the mixture's phase (ceiling of masking), and a KL-NMF baseline with
oracle grouping (:func:`nmf_estimates`); with ``--methods``, also the NMF separator with the
learnt assignment (``nmf_learned``; ``nmf_learned_net`` with the network's masks as prior) and
combinations of it with the network (``mean``, ``mean_prior``, ``choice``, ``product_prior``, and
``combined``, the product re-separated as ``--separator combined`` does; see
:func:`learned_nmf_estimates`). All three use an STFT at the input's rate with the
separator's window and hop durations (93 ms / 23 ms). Speed: real-time factor of
``separate_queries`` (both queries) on the MUSIC mixtures.

Recognition: the instruments recognised in each real clip of ``DATA/av/music/*/`` (frames
sampled as ``avsplit separate`` does) against the instruments the clip shows.

End to end (``av``): the CLI on the real CLIPSep clips with references, see :func:`end_to_end`.

    python benchmarks/instruments.py --data ../shared/data [--weights runs/instruments/best.pt]
        [--methods ours,mixture,nmf_sup,nmf_learned,nmf_learned_net] [--nmf-classifier PATH]
        [--json-out runs/bench_instruments.json] [--write docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from report import run_separate, write_section
import soundfile as sf
import torch

from avsplit.instruments import COMBINED_RULE, separate_queries
from avsplit.audio import istft, stft
from avsplit.nmf import fit_nmf, kl_nmf
from avsplit.train import corpus

#: Separator STFT durations (1024 and 256 samples at 11,025 Hz); baselines use them at any rate.
WINDOW_S, HOP_S = 1024 / 11025, 256 / 11025
URMP_MAX_S, SYNTH_S, SYNTH_ITEMS = 10.0, 6.0, 40
METHODS = ("ours", "mixture", "nmf_sup", "nmf", "irm", "nmf_learned", "nmf_learned_net",
           "mean", "mean_prior", "choice", "product_prior", "combined", "net_soft")
DEFAULT_METHODS = ("ours", "mixture", "nmf_sup", "nmf", "irm")
#: Methods from the NMF separator with the learnt assignment (``--nmf-classifier``), alone
#: (``None``), combined with the network by a rule of :data:`avsplit.nmf.RULES`, or the
#: ``soft`` control (the network's masks only).
NMF_LEARNED = {"nmf_learned": None, "nmf_learned_net": "prior", "mean": "mean",
               "mean_prior": "mean_prior", "choice": "choice", "product_prior": "product_prior",
               "combined": "product_prior",
               "net_soft": "soft"}
METHOD_NAMES = {"ours": "ours", "mixture": "mixture floor", "nmf_sup": "NMF (supervised)",
                "nmf": "NMF (oracle grouping)", "irm": "IRM ceiling",
                "nmf_learned": "NMF (learnt assignment)",
                "nmf_learned_net": "NMF (learnt assignment + network prior)",
                "mean": "mean of ours and NMF (learnt)",
                "mean_prior": "mean of ours and NMF (learnt + prior)",
                "product_prior": "product of ours and NMF (learnt + prior)",
                "combined": "combined (the default): product of ours and NMF (learnt + prior), re-separated",
                "choice": "per clip: ours or NMF (learnt + prior), more confident",
                "net_soft": "control: ours averaged with its own masks spread evenly"}
#: The methods of this run, in table order (set from ``--methods``).
METHODS_RUN: list[str] = list(DEFAULT_METHODS)
SETS = ("MUSIC pairs", "URMP pairs", "URMP trios", "synthetic validation")

#: What each real clip in ``av/music`` shows (from the data README) and which label sets count
#: as correct. Tabla, cajon, bagpipes, theremin and harpsichord have no label; an electronic
#: keyboard is a piano; a harpsichord recognised as a piano is accepted too (same keyboard look).
CLIPS: dict[str, tuple[str, list[set[str]]]] = {
    "avsbench_guitar_keyboard": ("acoustic guitar + electronic keyboard (duet)",
                                 [{"acoustic_guitar", "piano"}]),
    "avsbench_tabla_solo": ("tabla (solo)", [set()]),
    "avsbench_trio_piano_guitar_cajon": ("piano + acoustic guitar + cajon (trio)",
                                         [{"piano", "acoustic_guitar"}]),
    "avsbench_violin_guitar": ("violin + acoustic guitar (duet)", [{"violin", "acoustic_guitar"}]),
    "clipsep_accordion": ("accordion (solo)", [{"accordion"}]),
    "clipsep_acoustic_guitar": ("acoustic guitar (solo, close-up)", [{"acoustic_guitar"}]),
    "clipsep_bagpipes": ("bagpipes (solo, small in frame)", [set()]),
    "clipsep_harpsichord": ("harpsichord (solo)", [set(), {"piano"}]),
    "clipsep_theremin": ("theremin (solo)", [set()]),
    "clipsep_violin": ("violin (solo)", [{"violin"}]),
}
ENSEMBLE_CLIPS = ("avsbench_guitar_keyboard", "avsbench_trio_piano_guitar_cajon",
                  "avsbench_violin_guitar")


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), rate


def _stft_params(rate: int) -> tuple[int, int]:
    return int(2 * round(WINDOW_S / 2 * rate)), max(1, int(round(HOP_S * rate)))


# ------------------------------------------------------------------------------- items
def music_items(data: Path) -> tuple[list[dict], list[str]]:
    """MUSIC pairs: ``(items, skipped folder names)``."""
    items, skipped = [], []
    for folder in sorted((data / "audio" / "music" / "MUSIC").iterdir()):
        if not (folder / "gt1.flac").exists():
            continue
        labels = corpus.music_pair_labels(folder.name)
        if labels[0] == labels[1]:
            skipped.append(folder.name)
            continue
        (a, rate), (b, _) = _read_mono(folder / "gt1.flac"), _read_mono(folder / "gt2.flac")
        n = min(len(a), len(b))
        items.append({"set": "MUSIC pairs", "item": folder.name, "labels": labels,
                      "refs": np.stack([a[:n], b[:n]]), "rate": rate})
    return items, skipped


def urmp_items(data: Path, n_sources: int) -> list[dict]:
    """URMP combinations of ``n_sources`` stems with different labels, at their own rate."""
    return corpus.urmp_items(data, n_sources, URMP_MAX_S)


def synthetic_items(pools: Path, count: int = SYNTH_ITEMS, seed: int = 7) -> list[dict]:
    """Deterministic 2-instrument mixtures from the held-out-soundfont validation pool."""
    from avsplit.train.instruments import load_pool

    pool = load_pool(pools / "pool-valid.pt")
    rng = np.random.default_rng(seed)
    length = int(SYNTH_S * pool.rate)
    items, tries = [], 0
    while len(items) < count and tries < 50 * count:
        tries += 1
        e = int(rng.integers(len(pool.stems)))
        parts = pool.instrument_parts(e)
        pairs = [(i, j) for i, j in itertools.combinations(parts, 2)
                 if pool.labels[e][i] != pool.labels[e][j]]
        if not pairs:
            continue
        i, j = pairs[int(rng.integers(len(pairs)))]
        stems = pool.stems[e][[i, j]].astype(np.float32)
        start = corpus.loudest_window(stems, length, pool.rate // 2)
        seg = stems[:, start:start + length]
        rms = np.sqrt((seg ** 2).mean(axis=1))
        if seg.shape[1] < length or rms.min() < 1e-4:
            continue
        name = f"ens{e}:{pool.labels[e][i]}+{pool.labels[e][j]}@{start / pool.rate:.1f}s"
        if any(it["item"] == name for it in items):
            continue
        items.append({"set": "synthetic validation", "item": name,
                      "labels": [pool.labels[e][i], pool.labels[e][j]],
                      "refs": seg / rms[:, None] * 0.05, "rate": pool.rate})
    return items


# ------------------------------------------------------------------------------- estimates
def irm_estimates(refs: np.ndarray, rate: int) -> np.ndarray:
    """Ideal ratio mask ``|S_i| / sum_j |S_j|`` on the mixture STFT (mixture phase)."""
    n_fft, hop = _stft_params(rate)
    mix = stft(torch.from_numpy(refs.sum(0)), n_fft, hop)
    mags = stft(torch.from_numpy(refs), n_fft, hop).abs()
    masks = mags / (mags.sum(0, keepdim=True) + 1e-8)
    return istft(mix[None] * masks, n_fft, hop, refs.shape[1]).numpy()


def nmf_estimates(refs: np.ndarray, rate: int, per_source: int = 20, iters: int = 100,
                  seed: int = 0) -> np.ndarray:
    """KL-NMF baseline with oracle grouping.

    ``|X| ~ W H`` with ``per_source * sources`` components (Lee & Seung multiplicative updates
    for the generalised KL divergence, ``iters`` iterations, random init); each component
    ``w_k h_k^T`` goes to the source whose reference magnitude it correlates best with (Pearson,
    over all time-frequency cells; every source gets at least its best component); source ``i``
    is ``X * V_i / sum_j V_j`` with ``V_i`` the sum of its components (Wiener-style mask).
    """
    eps = 1e-12
    n_fft, hop = _stft_params(rate)
    X = stft(torch.from_numpy(refs.sum(0)), n_fft, hop)
    V = X.abs().double().numpy()
    S = stft(torch.from_numpy(refs), n_fft, hop).abs().double().numpy()  # [n, F, T]
    (F, T), k = V.shape, per_source * len(refs)
    W, H = fit_nmf(V, k, iters, seed)
    # Pearson correlation of each rank-1 spectrogram w_k h_k^T with each |S_i|, in closed form
    n_cells = F * T
    cross = np.einsum("fk,nft,kt->nk", W, S, H) / n_cells
    mw, mh = W.mean(0), H.mean(1)
    sd_comp = np.sqrt(np.maximum((W ** 2).sum(0) * (H ** 2).sum(1) / n_cells - (mw * mh) ** 2, eps))
    ms, sd_ref = S.mean(axis=(1, 2)), S.std(axis=(1, 2)) + eps
    corr = (cross - ms[:, None] * (mw * mh)[None]) / (sd_ref[:, None] * sd_comp[None])
    owner = corr.argmax(0)
    for i in range(len(refs)):
        if not (owner == i).any():
            owner[int(corr[i].argmax())] = i
    parts = np.stack([W[:, owner == i] @ H[owner == i] for i in range(len(refs))])
    masks = torch.from_numpy(parts / (parts.sum(0, keepdims=True) + eps)).float()
    return istft(X[None] * masks, n_fft, hop, refs.shape[1]).numpy()


NMF_RATE, NMF_FFT, NMF_HOP = 11025, 1024, 256
NMF_DICTS: dict[str, np.ndarray] = {}


def learn_nmf_dictionaries(pools: Path, per_label: int = 20, seconds: float = 60.0,
                           seed: int = 0) -> dict[str, np.ndarray]:
    """Per-label NMF dictionaries ``[513, per_label]`` (KL-NMF, 11,025 Hz, STFT 1024/256) from
    ``seconds`` of that label's stems in the *training* pool (``pools/pool-train.pt``) — the
    same rendered data our separator learns from. Cached in ``pools/nmf-dictionaries.npz``."""
    cache = pools / "nmf-dictionaries.npz"
    if cache.exists():
        return dict(np.load(cache))
    from avsplit.labels import LABELS
    from avsplit.train.instruments import load_pool

    pool = load_pool(pools / "pool-train.pt")
    rng = np.random.default_rng(seed)
    out = {}
    for lab in LABELS:
        found = [(e, i) for e, labs in enumerate(pool.labels) for i, x in enumerate(labs) if x == lab]
        rng.shuffle(found)
        audio, total = [], 0
        for e, i in found:
            x = pool.stems[e][i].astype(np.float32)
            audio.append(x)
            total += len(x)
            if total >= seconds * pool.rate:
                break
        V = stft(torch.from_numpy(np.concatenate(audio)), NMF_FFT, NMF_HOP).abs().double().numpy()
        V = V[:, V.sum(0) > 1e-3 * V.sum(0).max()] + 1e-12  # drop silent frames
        W = rng.uniform(0.1, 1.0, (V.shape[0], per_label))
        H = rng.uniform(0.1, 1.0, (per_label, V.shape[1]))
        W, _ = kl_nmf(V, W, H, 100, True)
        out[lab] = W / W.sum(0, keepdims=True)
    np.savez(cache, **out)
    return out


def nmf_supervised_estimates(mix: np.ndarray, rate: int, labels: list[str],
                             iters: int = 100, seed: int = 0) -> np.ndarray:
    """Supervised NMF baseline (Smaragdis et al., 2007): the mixture's magnitude at 11,025 Hz
    is fitted with the asked labels' fixed dictionaries (:func:`learn_nmf_dictionaries`),
    activations only, KL divergence; Wiener-style masks ``W_i H_i / sum_j W_j H_j`` are applied
    at the input rate as our separator's masks are (:func:`avsplit.audio.apply_masks`)."""
    from avsplit.audio import apply_masks, resample

    x = resample(mix, rate, NMF_RATE).astype(np.float32)
    V = stft(torch.from_numpy(x), NMF_FFT, NMF_HOP).abs().double().numpy() + 1e-12
    Ws = [NMF_DICTS[lab] for lab in labels]
    W = np.concatenate(Ws, axis=1)
    rng = np.random.default_rng(seed)
    H = rng.uniform(0.1, 1.0, (W.shape[1], V.shape[1])) * V.mean()
    _, H = kl_nmf(V, W, H, iters, False)
    k = np.cumsum([0] + [w.shape[1] for w in Ws])
    parts = np.stack([Ws[i] @ H[k[i]:k[i + 1]] for i in range(len(Ws))])
    masks = (parts / (parts.sum(0, keepdims=True) + 1e-12)).astype(np.float32)
    return apply_masks(mix[None].astype(np.float32), rate, masks, NMF_RATE, NMF_HOP,
                       NMF_FFT)[:, 0]


def bss(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    """``[3, sources]`` SDR, SIR, SAR (dB), BSS-eval v3 with a 512-tap filter, no permutation."""
    import fast_bss_eval

    # with more than one torch thread, torch.linalg.solve inside fast_bss_eval fails on some
    # items ("Pivots given to lu_solve must all be greater or equal to 1", torch 2.13 CPU)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = fast_bss_eval.bss_eval_sources(torch.from_numpy(refs).double(),
                                             torch.from_numpy(ests).double(),
                                             compute_permutation=False)
    finally:
        torch.set_num_threads(threads)
    return np.stack([o.numpy() for o in out[:3]])


def learned_nmf_estimates(model, nmf_sep, mix: np.ndarray, rate: int, labels: list[str],
                          methods) -> dict[str, np.ndarray]:
    """Stems of the NMF separator with the learnt assignment (:class:`avsplit.nmf.NMFSeparator`)
    and of its combinations with the network (:func:`avsplit.nmf.combine_masks`), for the
    asked ``methods`` of :data:`NMF_LEARNED`; masks applied at the input rate as ``ours``."""
    from avsplit.apply import limit_total
    from avsplit.nmf import RESEPARATION_POWER, combine_masks, reseparate

    mono = model.mono(mix[None], rate)
    net = limit_total(model.masks(mono, labels)).astype(np.float32)
    def nmf_kind(rule):  # which NMF masks a rule combines: without or with the network prior
        return "plain" if rule in (None, "mean") else "prior"

    needed = {nmf_kind(NMF_LEARNED[m]) for m in methods
              if m in NMF_LEARNED and NMF_LEARNED[m] != "soft"}
    masks = {kind: nmf_sep.masks(mono, labels, prior_masks=net if kind == "prior" else None
                                 ).astype(np.float32) for kind in needed}
    power = (stft(torch.from_numpy(mono), model.n_fft, model.hop).abs() ** 2).numpy()
    out = {}
    for m in methods:
        if m not in NMF_LEARNED:
            continue
        rule = NMF_LEARNED[m]
        if rule == "soft":  # is an average's gain only softer masks? same total, spread evenly
            even = np.repeat(net.sum(0, keepdims=True) / len(net), len(net), 0)
            out[m] = model.apply(mix[None], rate, 0.5 * (net + even))[:, 0]
            continue
        m_nmf = masks[nmf_kind(rule)]
        est = m_nmf if rule is None else combine_masks(net, m_nmf, rule, power)
        if m == "combined":  # what --separator combined does: the product, re-separated
            est = reseparate(model, mono, labels, est, RESEPARATION_POWER)
        out[m] = model.apply(mix[None], rate, est)[:, 0]
    return out


def score(model, item: dict, methods=DEFAULT_METHODS, nmf_sep=None) -> dict:
    refs, rate = item["refs"].astype(np.float32), item["rate"]
    mix = refs.sum(0)
    t0 = time.perf_counter()
    ours = separate_queries(model, mix[None], rate, item["labels"])[:, 0]
    wall = time.perf_counter() - t0
    ests = {"ours": ours}
    if "mixture" in methods:
        ests["mixture"] = np.repeat(mix[None], len(refs), 0)
    if "nmf" in methods:
        ests["nmf"] = nmf_estimates(refs, rate)
    if "irm" in methods:
        ests["irm"] = irm_estimates(refs, rate)
    if NMF_DICTS and "nmf_sup" in methods:
        ests["nmf_sup"] = nmf_supervised_estimates(mix, rate, item["labels"])
    if nmf_sep is not None:
        ests.update(learned_nmf_estimates(model, nmf_sep, mix, rate, item["labels"], methods))
    row = {k: item[k] for k in ("set", "item", "labels", "rate")}
    row["seconds"] = refs.shape[1] / rate
    row["separate_s"] = wall
    for name, est in ests.items():
        sdr, sir, sar = bss(refs, est.astype(np.float32))
        row[name] = {"sdr": sdr.tolist(), "sir": sir.tolist(), "sar": sar.tolist()}
    return row


# ------------------------------------------------------------------------------- recognition
def recognition(data: Path, limit: int | None, device: str, weights: Path | None = None
                ) -> list[dict] | str:
    """Instruments named per real clip against the ones it shows, through the product's own path
    (:func:`avsplit.instruments.analyse_instruments`: frames at the CLI's analysis size, the
    picture's detections confirmed or settled by the audio tagger); a string says why it was
    skipped."""
    try:
        from avsplit.clip import Clip
        from avsplit.engine import Engine
        from avsplit.instruments import analyse_instruments
        from avsplit.progress import NullProgress

        engine = Engine(device)
        engine.instrument_recognizer()
    except Exception as e:  # its weights are missing
        return f"instrument recogniser not available ({type(e).__name__}: {e})"
    rows = []
    for folder in sorted(p for p in (data / "av" / "music").iterdir() if p.is_dir())[:limit]:
        videos = sorted(folder.glob("*.mp4"))
        if not videos:
            continue
        t0 = time.perf_counter()
        with Clip(videos[0]) as clip:
            analysis = analyse_instruments(clip, engine, None, weights, NullProgress())
        shows, accepted = CLIPS.get(folder.name, ("(not described)", None))
        found = sorted({st.label for st in analysis.stems})
        conf = {d.label: d.confidence for d in analysis.detections}
        rows.append({"clip": folder.name, "video": videos[0].name, "shows": shows,
                     "expected": [sorted(s) for s in accepted] if accepted else None,
                     "recognised": [{"label": st.label,
                                     "confidence": round(float(conf.get(st.relabelled_from or st.label,
                                                                        st.visual_confidence or 0)), 3),
                                     **({"seen_as": st.relabelled_from} if st.relabelled_from else {})}
                                    for st in analysis.stems],
                     "heard": {lab: round(p, 2) for lab, p in sorted(
                         (analysis.heard or {}).items(), key=lambda kv: -kv[1])[:4]},
                     "correct": None if accepted is None else set(found) in accepted,
                     "seconds": time.perf_counter() - t0})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ------------------------------------------------------------------------------- end to end
def _first_channel(path: Path, n: int) -> np.ndarray:
    """First channel of an audio file cut or zero-padded to ``n`` samples (a stem of an AAC
    remux can differ from the reference by a few samples)."""
    x = sf.read(path, dtype="float32", always_2d=True)[0][:n, 0]
    return np.pad(x, (0, n - len(x)))


def end_to_end(data: Path, weights: Path | None, limit: int | None) -> list[dict]:
    """``avsplit separate --mode instruments`` on the real CLIPSep clips of ``DATA/av/music``
    that come with ``gt.wav`` (the visible instrument), ``int.wav`` (an off-screen interferer)
    and ``mix.wav``: the clip's video with ``mix.wav`` as its sound goes through the CLI
    (recognition in the picture, then separation); the labelled stems (summed) are scored
    against ``gt`` and ``residual.wav`` against ``int`` (BSS-eval, 16 kHz), next to the mixture
    as the estimate of both."""
    import tempfile

    from avsplit import media

    rows = []
    folders = sorted(p for p in (data / "av" / "music").iterdir()
                     if (p / "gt.wav").exists() and (p / "mix.wav").exists())
    for folder in folders[:limit]:
        gt, rate = sf.read(folder / "gt.wav", dtype="float32")
        interferer, _ = sf.read(folder / "int.wav", dtype="float32")
        mix, _ = sf.read(folder / "mix.wav", dtype="float32")
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / f"{folder.name}.mp4"
            media.remux(next(folder.glob("*.mp4")), folder / "mix.wav", clip)
            options = ["--mode", "instruments", "--no-video"]
            res, wall = run_separate(clip, Path(tmp), *options,
                                     *(["--weights", str(weights)] if weights else []))
            if res.returncode != 0:
                rows.append({"clip": folder.name, "error": res.stderr.strip()[-300:]})
                continue
            out = Path(tmp) / folder.name
            manifest = json.loads((out / "manifest.json").read_text())
            stems = [f for f in manifest["files"] if f["file"].endswith(".wav")
                     and f["file"] != "residual.wav"]
            onscreen = (np.sum([_first_channel(out / f["file"], len(mix)) for f in stems], axis=0)
                        if stems else np.zeros_like(mix))
            residual = _first_channel(out / "residual.wav", len(mix))
        refs = np.stack([gt, interferer])
        ours = bss(refs, np.stack([onscreen, residual]))
        floor = bss(refs, np.stack([mix, mix]))
        rows.append({"clip": folder.name, "stems": [f["file"] for f in stems],
                     "ours": {"sdr": ours[0].tolist(), "sir": ours[1].tolist()},
                     "mixture": {"sdr": floor[0].tolist(), "sir": floor[1].tolist()},
                     "seconds": len(mix) / rate, "wall_s": wall})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def end_to_end_table(rows: list[dict]) -> str:
    lines = ["| clip | stems written | SDR instrument (mixture) | SIR instrument (mixture) | "
             "SDR residual vs interferer (mixture) | wall time |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['clip']} | failed: {r['error']} | | | | |")
            continue
        o, m = r["ours"], r["mixture"]
        lines.append(f"| {r['clip']} | {', '.join(r['stems']) or '(none: all residual)'} | "
                     f"{o['sdr'][0]:.1f} ({m['sdr'][0]:.1f}) | {o['sir'][0]:.1f} "
                     f"({m['sir'][0]:.1f}) | {o['sdr'][1]:.1f} ({m['sdr'][1]:.1f}) | "
                     f"{r['wall_s']:.1f} s |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- report
def _mean(rows: list[dict], method: str, metric: str) -> float:
    vals = [v for r in rows for v in r[method][metric]]
    return float(np.mean(vals)) if vals else float("nan")


def summary(rows: list[dict]) -> dict:
    out = {}
    for s in SETS:
        rs = [r for r in rows if r["set"] == s]
        if rs:
            out[s] = {"items": len(rs), "sources": sum(len(r["labels"]) for r in rs),
                      **{m: {k: _mean(rs, m, k) for k in ("sdr", "sir", "sar")}
                         for m in METHODS_RUN if all(m in r for r in rs)}}
    return out


def _db(x: float) -> str:
    """One decimal; the mixture's SAR is unbounded (no artifacts) and shows as infinity."""
    return "∞" if x > 99 else f"{x:.1f}"


def _finite(x):
    """JSON-safe copy: infinities and NaNs become ``None``."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def main_table(summ: dict) -> str:
    head = ("| set | items (sources) | " + " | ".join(
        f"{METHOD_NAMES[m]} {k}" for m in METHODS_RUN for k in ("SDR", "SIR", "SAR")) + " |")
    lines = [head, "|---|---:|" + "---:|" * 3 * len(METHODS_RUN)]
    for s, v in summ.items():
        cells = " | ".join(_db(v[m][k]) if m in v else "–" for m in METHODS_RUN
                           for k in ("sdr", "sir", "sar"))
        lines.append(f"| {s} | {v['items']} ({v['sources']}) | {cells} |")
    return "\n".join(lines)


def instrument_table(rows: list[dict]) -> str:
    groups = {"MUSIC pairs": [r for r in rows if r["set"] == "MUSIC pairs"],
              "URMP pairs + trios": [r for r in rows if r["set"].startswith("URMP")]}
    per: dict[str, dict[str, list]] = {}
    prod = product_method(METHODS_RUN)
    for g, rs in groups.items():
        for r in rs:
            for i, lab in enumerate(r["labels"]):
                per.setdefault(lab, {}).setdefault(g, []).append(
                    [r[prod][k][i] for k in ("sdr", "sir", "sar")])
    head = "| instrument | " + " | ".join(f"{g} SDR | SIR | SAR | n" for g in groups) + " |"
    lines = [head, "|---|" + "---:|" * 4 * len(groups)]
    for lab in sorted(per):
        cells = []
        for g in groups:
            v = per[lab].get(g)
            cells.append(" | ".join(f"{x:.1f}" for x in np.mean(v, 0)) + f" | {len(v)}"
                         if v else "– | – | – | 0")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recognition_table(rec: list[dict]) -> str:
    lines = ["| clip | shows | counts as correct | recognised (picture's confidence) | heard most "
             "(tagger's probability) | correct |",
             "|---|---|---|---|---|:-:|"]
    for r in rec:
        exp = (" or ".join("{" + ", ".join(s) + "}" if s else "nothing" for s in r["expected"])
               if r["expected"] is not None else "–")
        got = (", ".join(f"{d['label']} ({d['confidence']:.2f})" for d in r["recognised"])
               or "nothing")
        heard = ", ".join(f"{lab} ({p:.2f})" for lab, p in r.get("heard", {}).items()) or "–"
        mark = {True: "yes", False: "no", None: "–"}[r["correct"]]
        lines.append(f"| {r['clip']} | {r['shows']} | {exp} | {got} | {heard} | {mark} |")
    return "\n".join(lines)


def product_method(methods) -> str:
    """The method that is what ``avsplit separate --mode instruments`` does by default
    (``--separator combined``: :data:`avsplit.instruments.COMBINED_RULE`, re-separated) when it
    was run, else the product without re-separation, else the network alone (``ours``)."""
    return next((m for m in ("combined", COMBINED_RULE) if m in methods), "ours")


def targets(summ: dict, rec: list[dict] | str, music_in_training: bool = False
            ) -> list[tuple[str, str, bool | None]]:
    """``(target, measured, met)``; ``met`` is ``None`` when it was not measured, or when the
    MUSIC pairs are training data of the separator (``music_in_training``: no verdict)."""
    m = summ.get("MUSIC pairs")
    out = []
    if m:
        base = "nmf_sup" if "nmf_sup" in m else "nmf"
        prod = product_method(m)
        name = f" ({METHOD_NAMES[prod]})"
        out += [("average SDR on the MUSIC pairs >= 6.1 dB", f"{m[prod]['sdr']:.2f} dB{name}",
                 m[prod]["sdr"] >= 6.1),
                ("average SIR on the MUSIC pairs >= 10.9 dB", f"{m[prod]['sir']:.2f} dB{name}",
                 m[prod]["sir"] >= 10.9)]
        if base in m:
            gap = m[prod]["sdr"] - m[base]["sdr"]
            oracle = (f"; NMF with oracle grouping {m['nmf']['sdr']:.2f} dB" if "nmf" in m
                      else "")
            out.append(("SDR >= 3 dB above the NMF baseline (MUSIC pairs)",
                        f"{gap:+.2f} dB ({METHOD_NAMES[base]} {m[base]['sdr']:.2f} dB{oracle})",
                        gap >= 3.0))
        if music_in_training:
            out = [(t, f"{v} — training data of this separator, not a test: read the "
                       "cross-validated numbers", None) for t, v, _ in out]
    else:
        out += [("MUSIC targets (SDR >= 6.1 dB, SIR >= 10.9 dB, >= 3 dB above NMF)",
                 "not measured", None)]
    ens = [r for r in rec if r["clip"] in ENSEMBLE_CLIPS] if isinstance(rec, list) else []
    if ens:
        ok = sum(bool(r["correct"]) for r in ens)
        out.append(("instruments recognised correctly in most real duet/trio clips",
                    f"{ok} of {len(ens)}", ok > len(ens) / 2))
    else:
        out.append(("instruments recognised correctly in most real duet/trio clips",
                    "not measured", None))
    return out


def report(rows, summ, skipped_music, rec, synth_note, rtf, model_id, args,
           e2e: list[dict] | None = None) -> str:
    parts = [main_table(summ), ""]
    notes = [f"Mean over all sources of a set, dB. NMF (supervised), the baseline of the target: "
             f"20 KL-NMF components per instrument learnt from 60 s of that instrument in our "
             f"rendered training stems, activations fitted on the mixture at 11,025 Hz, "
             f"Wiener-style masks (Smaragdis et al., 2007) — no reference used. "
             f"NMF (oracle grouping), a stronger reference that cheats: KL-divergence NMF "
             f"(Lee & Seung multiplicative updates, 100 iterations) of the mixture's magnitude "
             f"STFT with 20 components per source, each component given to the source whose "
             f"reference magnitude it correlates best with, Wiener-style masks from the grouped "
             f"reconstructions. IRM: |S_i| / sum_j |S_j| with the mixture phase. The mixture "
             f"has no artifacts, so its SAR is unbounded (∞). All baselines "
             f"use a {WINDOW_S * 1000:.0f} ms window, {HOP_S * 1000:.0f} ms hop at the input rate."]
    if any(m in NMF_LEARNED for m in METHODS_RUN):
        notes.append("NMF (learnt assignment): KL-NMF of the mixture at 11,025 Hz (20 components "
                     "per asked instrument and 20 for the residual), each component given to an "
                     "asked label by the bundled classifier (`avsplit.nmf`, features of its "
                     "basis, pitch and activation, pitch-range prior); with the network prior, "
                     "the share of each component under the network's masks enters as a log "
                     "prior. mean: masks of ours and of the NMF averaged; choice: per clip the "
                     "masks that give each bin more decidedly to one stem (energy-weighted); "
                     "product: the normalised geometric mean of the two sets of masks, each with "
                     "its residual (`avsplit.nmf.product_of_masks`).")
    if skipped_music:
        notes.append(f"MUSIC pairs of one instrument twice, skipped: {', '.join(skipped_music)}.")
    if any(r["set"].startswith("URMP") for r in rows):
        pieces = ", ".join(f"{p} ({f.parent.name})" for p, f in corpus.urmp_pieces(args.data).items())
        notes.append(f"URMP: all 2- and 3-stem combinations with different labels of pieces "
                     f"{pieces}; one window of at most {URMP_MAX_S:.0f} s each (where the "
                     "quietest stem is loudest); combinations with the same instrument twice "
                     "(two violins) skipped.")
    if synth_note:
        notes.append(synth_note)
    elif any(r["set"] == "synthetic validation" for r in rows):
        notes.append(f"Synthetic validation: {SYNTH_ITEMS} two-instrument mixtures "
                     f"({SYNTH_S:.0f} s, parts at equal RMS) of held-out scores rendered with the "
                     f"held-out soundfont (`{args.pools}/pool-valid.pt`).")
    parts += [" ".join(notes), "", f"Per instrument ({METHOD_NAMES[product_method(METHODS_RUN)]}):", "", instrument_table(rows), ""]
    if isinstance(rec, str):
        parts += [f"Recognition: skipped, {rec}.", ""]
    else:
        ok = sum(bool(r["correct"]) for r in rec if r["correct"] is not None)
        n = sum(r["correct"] is not None for r in rec)
        parts += ["Recognition on the real clips of `av/music` (correct = the set of recognised "
                  "labels equals the set of shown instruments that have a label; tabla, cajon, "
                  "bagpipes, theremin and harpsichord have none, an electronic keyboard counts "
                  f"as piano, a harpsichord seen as a piano is accepted): {ok} of {n} correct.",
                  "", recognition_table(rec), ""]
    if e2e:
        parts += ["End to end on the real CLIPSep clips that come with references: the clip's "
                  "video with `mix.wav` (its instrument + an off-screen interferer) as sound, "
                  "through `avsplit separate --mode instruments` (recognition, then "
                  "separation); the stems written, summed, scored against `gt.wav` and "
                  "`residual.wav` against `int.wav` (BSS-eval at 16 kHz, dB; the mixture as "
                  "estimate in brackets).", "", end_to_end_table(e2e), ""]
    parts += ["Targets:", ""]
    for name, value, met in targets(summ, rec, args.music_in_training):
        parts.append(f"- {name}: " + (f"{value} — " + ("**met**" if met else "**not met**")
                                      if met is not None else value))
    threads = torch.get_num_threads()
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores, {threads} torch "
               f"thread{'s' if threads != 1 else ''}, "
               f"Python {platform.python_version()}, torch {torch.__version__}, no GPU used")
    parts += ["", f"Separator: `{model_id['file']}` (sha256 {model_id['sha256'][:12]}). "
              + (f"Real-time factor of `separate_queries` (2 queries) on the MUSIC mixtures: "
                 f"{rtf:.3f}. " if rtf is not None else "")
              + f"Machine: {machine}. Date: {time.strftime('%Y-%m-%d')}."]
    return "\n".join(parts)


INTRO = """## Instrument separation (`benchmarks/instruments.py`)

Mix-and-separate on real recordings with label queries: the MUSIC solo pairs (the pair's two
solos summed, each asked for with its true label) and time-aligned URMP stems (pairs and trios),
plus 2-instrument mixtures of the held-out soundfont; BSS-eval SDR / SIR / SAR as Sound of
Pixels reports them, with the mixture as estimate (floor), an NMF baseline and the ideal ratio
mask (ceiling) in the same run. Then the instruments recognised in the picture of the real
music clips of `av/music` against what each clip shows. The targets are checked from the
numbers of the run.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--weights", type=Path, default=None,
                        help="separator weights (a training best.pt/last.pt or an exported file); "
                             "default: the bundled ones")
    parser.add_argument("--pools", type=Path, default=Path("runs/music"),
                        help="folder with pool-valid.pt (synthetic validation; skipped if absent)")
    parser.add_argument("--sets", default="music,urmp,synthetic,recognition,av",
                        help="comma-separated subset of music,urmp,synthetic,recognition,av")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many items per set (and clips for recognition)")
    parser.add_argument("--music-fold", type=int, choices=(0, 1), default=None,
                        help="only the MUSIC pairs of this fold of avsplit.train.corpus."
                             "music_pair_folds (to score a separator trained on the other "
                             "fold's solos)")
    parser.add_argument("--music-in-training", action="store_true",
                        help="the separator was trained on the MUSIC solos (the bundled one is, "
                             "since 4d54e935): the MUSIC targets are reported without a verdict")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated subset of " + ",".join(METHODS)
                             + " (ours is always run)")
    parser.add_argument("--nmf-classifier", type=Path, default=None,
                        help="classifier of the NMF separator for the nmf_learned* methods "
                             "(default: the bundled weights/instrument_nmf_classifier.npz)")
    parser.add_argument("--json-out", type=Path, default=None, help="write per-item rows here")
    parser.add_argument("--write", type=Path, default=None,
                        help="replace the instruments section of this markdown file "
                             "(docs/benchmarks.md)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = set(args.sets.split(","))
    from avsplit.engine import Engine

    model = Engine(args.device).separator("instrument-separator", args.weights)
    model_id = model.model_id
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown --methods {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    METHODS_RUN[:] = [m for m in METHODS if m in methods or m == "ours"]
    nmf_sep = None
    if set(methods) & set(NMF_LEARNED):
        from avsplit.nmf import load_nmf_separator

        nmf_sep = load_nmf_separator(args.nmf_classifier)
        model_id = {**model_id, "nmf_classifier": nmf_sep.model_id}
    have_dicts = ((args.pools / "pool-train.pt").exists()
                  or (args.pools / "nmf-dictionaries.npz").exists())
    if "nmf_sup" in methods and have_dicts:
        NMF_DICTS.update(learn_nmf_dictionaries(args.pools))
    elif "nmf_sup" in methods:
        print(f"supervised NMF skipped: no {args.pools}/pool-train.pt", flush=True)
    items, skipped, synth_note = [], [], None
    if "music" in sets:
        music, skipped = music_items(args.data)
        if args.music_fold is not None:
            from avsplit.train.corpus import music_pair_folds

            fold_of = music_pair_folds(args.data)
            music = [it for it in music if fold_of[it["item"]] == args.music_fold]
        items += music[:args.limit]
    if "urmp" in sets:
        items += urmp_items(args.data, 2)[:args.limit] + urmp_items(args.data, 3)[:args.limit]
    if "synthetic" in sets:
        if (args.pools / "pool-valid.pt").exists():
            items += synthetic_items(args.pools)[:args.limit]
        else:
            synth_note = (f"Synthetic validation: skipped, `{args.pools}/pool-valid.pt` "
                          "does not exist.")
            print(synth_note, flush=True)
    music_mix = [it for it in items if it["set"] == "MUSIC pairs"]
    if music_mix:  # warm-up, so the real-time factor is not charged for first-call set-up
        separate_queries(model, music_mix[0]["refs"].sum(0, keepdims=True), music_mix[0]["rate"],
                         music_mix[0]["labels"])
    rows = []
    for it in items:
        rows.append(score(model, it, methods, nmf_sep))
        r = rows[-1]
        print(json.dumps({"set": r["set"], "item": r["item"],
                          **{m: [round(float(np.mean(r[m][k])), 2) for k in ("sdr", "sir", "sar")]
                             for m in METHODS_RUN if m in r}}), flush=True)
    mr = [r for r in rows if r["set"] == "MUSIC pairs"]
    rtf = sum(r["separate_s"] for r in mr) / sum(r["seconds"] for r in mr) if mr else None
    rec = (recognition(args.data, args.limit, args.device, args.weights) if "recognition" in sets
           else "not asked for (--sets)")
    if isinstance(rec, str):
        print(f"recognition skipped: {rec}", flush=True)
    e2e = end_to_end(args.data, args.weights, args.limit) if "av" in sets else None
    summ = summary(rows)
    text = report(rows, summ, skipped, rec, synth_note, rtf, model_id, args, e2e)
    print()
    print(text)
    if args.json_out:
        args.json_out.write_text(json.dumps(_finite({"summary": summ, "items": rows,
                                                     "recognition": rec, "rtf": rtf,
                                                     "end_to_end": e2e,
                                                     "model": model_id}), indent=2))
    if args.write:
        write_section(args.write, "instruments",
                      " ".join(["python benchmarks/instruments.py", *sys.argv[1:]]), text, INTRO)


if __name__ == "__main__":
    main()
