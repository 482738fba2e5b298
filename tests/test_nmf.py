"""The NMF instrument separator (avsplit.nmf): NMF, features, grouping, masks, bundled classifier.

Signals are synthesised here (harmonic tones); no shared data is read.
"""

import numpy as np
import pytest
import torch

from avsplit.audio import istft, si_sdr, stft
from avsplit.instruments import COMBINED_RULE
from avsplit.labels import BY_LABEL
from avsplit.nmf import (HARMONICS, HOP, LOG_BINS, N_FFT, RATE, RESIDUAL, CombinedSeparator,
                         NMFClassifier, NMFSeparator, combine_masks, component_features,
                         component_pitch, fit_nmf, kl_nmf, load_nmf_separator, pitch_prior)

SECONDS = 4.0


def tone(midi: float, period: float, harmonics: int, decay: float, seed: int) -> np.ndarray:
    """Repeated notes of one pitch at 11,025 Hz: ``harmonics`` partials of amplitude
    ``decay ** k``, a note every ``period`` s with an exponential decay, a random phase."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    f0 = 440 * 2 ** ((midi - 69) / 12)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, harmonics)
    wave = sum(decay ** k * np.sin(2 * np.pi * f0 * (k + 1) * t + phase[k])
               for k in range(harmonics) if f0 * (k + 1) < RATE / 2)
    env = np.exp(-4 * (t % period))
    return (0.1 * env * wave).astype(np.float32)


def sources():
    """A low, bright, fast source (cello-like, MIDI 45) and a high, dull, slow one (flute-like,
    MIDI 81)."""
    return np.stack([tone(45, 0.25, 12, 0.8, 0), tone(81, 0.7, 4, 0.4, 1)])


def pitch_classifier(classes=("cello", "flute", RESIDUAL), split_midi: float = 63.0,
                     **settings) -> NMFClassifier:
    """A hand-made classifier: the pitch feature alone decides cello (low) vs flute (high);
    the residual is never preferred."""
    n_feat = LOG_BINS + HARMONICS + 10
    pitch = LOG_BINS + HARMONICS  # index of MIDI / 100 in component_features
    w1 = np.zeros((n_feat, 2), np.float32)
    w1[pitch] = [-100.0, 100.0]
    b1 = np.array([split_midi, -split_midi], np.float32)
    w2 = np.zeros((2, len(classes)), np.float32)
    w2[0, classes.index("cello")] = w2[1, classes.index("flute")] = 1.0
    b2 = np.zeros(len(classes), np.float32)
    b2[classes.index(RESIDUAL)] = -5.0
    return NMFClassifier(list(classes), np.zeros(n_feat, np.float32), np.ones(n_feat, np.float32),
                         w1, b1, w2, b2, per_label=8, **settings)


def separator(clf=None) -> NMFSeparator:
    return NMFSeparator(clf or pitch_classifier(), {"name": "test", "file": "-", "sha256": "-"})


def uninformed(**settings) -> NMFClassifier:
    """A classifier whose features carry no evidence: every asked class equally likely."""
    clf = pitch_classifier(**settings)
    clf.w2[:] = 0
    clf.b2[:] = 0
    return clf


def stems_from(masks: np.ndarray, mix: np.ndarray) -> np.ndarray:
    spec = stft(torch.from_numpy(mix), N_FFT, HOP)
    return istft(spec[None] * torch.from_numpy(masks.astype(np.float32)), N_FFT, HOP,
                 len(mix)).numpy()


def gain_over_mixture(masks: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """SI-SDR of each masked stem minus that of the mixture, dB."""
    mix = refs.sum(0)
    return si_sdr(stems_from(masks, mix), refs) - si_sdr(np.stack([mix, mix]), refs)


def test_kl_nmf_lowers_the_divergence_and_fit_nmf_normalises_the_bases():
    V = stft(torch.from_numpy(sources().sum(0)), N_FFT, HOP).abs().double().numpy() + 1e-12

    def kl(W, H):
        R = W @ H + 1e-12
        return float((V * np.log(V / R) - V + R).sum())

    rng = np.random.default_rng(0)
    W, H = rng.uniform(0.1, 1, (V.shape[0], 6)), rng.uniform(0.1, 1, (6, V.shape[1]))
    before = kl(W, H)
    W, H = kl_nmf(V, W, H, 30)
    assert kl(W, H) < 0.5 * before
    W, H = fit_nmf(V, 6, 50)
    assert np.allclose(W.sum(0), 1.0) and (W >= 0).all() and (H >= 0).all()
    assert kl(W, H) < 0.1 * float(V.sum())


def test_pitch_estimate_and_pitch_range_prior():
    bins = N_FFT // 2 + 1
    W = np.zeros((bins, 2))
    for k, midi in enumerate((45, 81)):
        f0 = 440 * 2 ** ((midi - 69) / 12)
        for h in range(1, 7):
            b = int(round(h * f0 * N_FFT / RATE))
            if b < bins:
                W[b, k] = 0.8 ** h
    W /= W.sum(0)
    midi, salience, harmonics = component_pitch(W)
    assert np.abs(midi - [45, 81]).max() <= 0.5
    assert (salience > 1).all() and harmonics.shape == (HARMONICS, 2)
    prior = pitch_prior(midi, ["cello", "flute", RESIDUAL])
    lo_flute = BY_LABEL["flute"].pitch_range[0]
    assert prior[0, 0] == 0 and prior[0, 1] == pytest.approx(lo_flute - 2 - midi[0])
    assert prior[1, 1] == 0 and prior[1, 0] > 0 and (prior[:, 2] == 0).all()


def test_each_stem_is_closer_to_its_source_than_the_mixture_is():
    refs = sources()
    mix = refs.sum(0)
    sep = separator()
    masks = sep.masks(mix, ["cello", "flute"])
    gain = gain_over_mixture(masks, refs)
    assert (gain > 3.0).all(), gain
    # swapping the labels swaps the stems: the assignment, not the order, decides
    swapped = sep.masks(mix, ["flute", "cello"])
    assert np.abs(swapped.astype(np.float32) - masks[::-1].astype(np.float32)).max() < 1e-3


def test_masks_shape_range_sum_and_errors():
    mix = sources().sum(0)
    sep = separator()
    masks = sep.masks(mix, ["cello", "flute", "cello"])
    frames = len(mix) // HOP + 1
    assert masks.shape == (3, N_FFT // 2 + 1, frames)
    m = masks.astype(np.float32)
    assert m.min() >= 0 and m.max() <= 1
    assert m[:2].sum(0).max() <= 1 + 1e-3
    assert np.array_equal(masks[0], masks[2])  # a repeated label repeats its row
    assert sep.masks(mix, []).shape == (0, N_FFT // 2 + 1, frames)
    with pytest.raises(ValueError, match="unknown instrument"):
        sep.masks(mix, ["cello", "violin"])  # not among the classifier's classes
    with pytest.raises(ValueError, match="unknown instrument"):
        sep.masks(mix, [RESIDUAL])
    with pytest.raises(ValueError, match="prior_masks"):
        sep.masks(mix, ["cello", "flute"], prior_masks=np.zeros((2, 10, frames)))


def test_long_input_is_cut_into_cross_faded_chunks():
    refs = np.concatenate([sources()] * 2, axis=1)  # 8 s
    mix = refs.sum(0)
    masks = separator().masks(mix, ["cello", "flute"], chunk_s=3.0, overlap_s=1.0)
    assert masks.shape[2] == len(mix) // HOP + 1
    gain = gain_over_mixture(masks, refs)
    assert (gain > 3.0).all(), gain


def test_network_prior_steers_an_uninformed_classifier():
    refs = sources()
    mix = refs.sum(0)
    sep = separator(uninformed(prior_weight=4.0))
    blind = sep.masks(mix, ["cello", "flute"]).astype(np.float32)
    assert np.allclose(blind[0], blind[1], atol=0.02)  # an even split
    spec = np.abs(stft(torch.from_numpy(refs), N_FFT, HOP).numpy())
    ideal = spec / (spec.sum(0, keepdims=True) + 1e-9)
    gain = gain_over_mixture(sep.masks(mix, ["cello", "flute"], prior_masks=ideal), refs)
    assert (gain > 3.0).all(), gain


def test_pitch_prior_alone_separates_by_range():
    refs = sources()
    mix = refs.sum(0)
    gain = gain_over_mixture(separator(uninformed(pitch_weight=24.0)).masks(mix, ["cello", "flute"]),
                             refs)
    assert (gain > 1.0).all(), gain


def test_component_features_are_finite_and_sized():
    V = np.abs(stft(torch.from_numpy(sources().sum(0)), N_FFT, HOP).numpy())
    W, H = fit_nmf(V, 5, 20)
    f = component_features(W, H)
    assert f.shape == (5, LOG_BINS + HARMONICS + 10) and f.dtype == np.float32
    assert np.isfinite(f).all()


def test_classifier_round_trips_through_npz(tmp_path):
    clf = pitch_classifier(pitch_weight=1.5, sharpness=2.0)
    clf.save(tmp_path / "c.npz")
    back = NMFClassifier.load(tmp_path / "c.npz")
    assert back.classes == clf.classes and back.pitch_weight == 1.5 and back.sharpness == 2.0
    assert back.per_label == 8 and isinstance(back.per_label, int)
    x = np.random.default_rng(0).standard_normal((4, len(clf.mean))).astype(np.float32)
    assert np.allclose(back.logits(x), clf.logits(x))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an NMF classifier"):
        NMFClassifier.load(tmp_path / "bad.npz")


def test_combination_rules():
    net = np.full((2, 3, 4), 0.5, np.float32)
    nmf = np.stack([np.ones((3, 4)), np.zeros((3, 4))]).astype(np.float32)
    power = np.ones((3, 4), np.float32)
    assert np.allclose(combine_masks(net, nmf, "mean"), [[[0.75]], [[0.25]]])
    assert np.array_equal(combine_masks(net, nmf, "prior"), nmf)
    assert np.array_equal(combine_masks(net, nmf, "choice", power), nmf)  # more confident
    assert np.array_equal(combine_masks(nmf * 0.4, net, "choice", power), net)
    # the product keeps a bin with the stem both give it to, and drops one expert's leakage
    a = np.stack([np.full((3, 4), 0.8), np.full((3, 4), 0.2)]).astype(np.float32)
    b = np.stack([np.full((3, 4), 0.8), np.zeros((3, 4))]).astype(np.float32)
    prod, mean = combine_masks(a, b, "product_prior"), combine_masks(a, b, "mean_prior")
    assert prod.dtype == np.float32 and prod.shape == a.shape
    assert np.all(prod[0] > 0.95) and np.all(prod[1] < 0.02)
    assert np.all(mean[0] < prod[0]) and np.all(mean[1] > 5 * prod[1])
    # where the two disagree completely, the bin is shared between their choices
    split = combine_masks(nmf, nmf[::-1], "product_prior")
    assert np.allclose(split, 0.5, atol=0.01) and np.all(split.sum(0) <= 1 + 1e-6)
    with pytest.raises(ValueError, match="unknown combination rule"):
        combine_masks(net, nmf, "max")
    with pytest.raises(ValueError, match="unknown combination rule"):
        CombinedSeparator(separator(), separator(), "max")


def test_bundled_classifier_loads_matches_its_sha256_and_separates():
    from avsplit.models.registry import MODELS, sha256_of, weights_path

    entry = MODELS["instrument-nmf"]
    path = weights_path("instrument-nmf")
    assert sha256_of(path) == entry.sha256 and path.stat().st_size < 1_000_000
    sep = load_nmf_separator()
    assert sep.model_id["sha256"] == entry.sha256 and sep.rate == RATE
    assert set(BY_LABEL) | {RESIDUAL} == set(sep.classifier.classes)
    # a rich low tone in the tuba's register and a nearly pure high one in the flute's (as
    # the network's test in test_instruments.py); measured gains 7.9 / 10.3 dB
    refs = np.stack([tone(43, 1.0, 12, 0.8, 0), tone(84, 0.5, 2, 0.2, 1)])
    masks = sep.masks(refs.sum(0), ["tuba", "flute"]).astype(np.float32)
    assert masks.sum(0).max() <= 1 + 1e-3
    gain = gain_over_mixture(masks, refs)
    assert (gain > 3.0).all(), gain


# --- command line (``avsplit separate --separator``) -------------------------------------------

def _separate(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "avsplit.cli", "separate", *map(str, args)],
                          capture_output=True, text=True)


@pytest.mark.subprocess
@pytest.mark.parametrize("kind,models", [
    ("nmf", {"instrument-nmf"}),
    ("combined", {"instrument-separator", "instrument-nmf"})])
def test_cli_separator_option_keeps_the_outputs_and_lists_its_models(tmp_path, kind, models):
    import json

    import soundfile as sf

    mix = sources().sum(0)[: RATE * 2]
    wav = tmp_path / "duet.wav"
    sf.write(wav, np.stack([mix, 0.5 * mix]).T, RATE, subtype="FLOAT")
    res = _separate(wav, "--query", "cello,flute", "--separator", kind, "-o", tmp_path / "out",
                    "-q")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "out" / "duet"
    assert sorted(p.name for p in folder.iterdir()) == ["cello.wav", "flute.wav",
                                                        "manifest.json", "residual.wav"]
    parts = [sf.read(folder / f, dtype="float32", always_2d=True)[0]
             for f in ("cello.wav", "flute.wav", "residual.wav")]
    np.testing.assert_allclose(sum(parts), np.stack([mix, 0.5 * mix]).T, atol=1e-3)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {m["name"] for m in manifest["models"]} == models
    assert manifest["query"] == ["cello", "flute"]


@pytest.mark.subprocess
def test_cli_separator_option_needs_the_instruments_mode(tmp_path):
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, sources().sum(0)[:RATE], RATE)
    res = _separate(wav, "--mode", "onscreen", "--separator", "nmf", "-o", tmp_path / "out")
    assert res.returncode == 2 and "--separator" in res.stderr
    res = _separate(wav, "--query", "cello", "--separator", "svm", "-o", tmp_path / "out")
    assert res.returncode == 2


def test_combined_masks_are_the_same_in_frame_blocks(monkeypatch):
    """Long inputs are combined block by block over frames (no whole-clip float32 copies);
    the result must not depend on the block size."""
    from types import SimpleNamespace

    import avsplit.nmf as nmf_module

    mix = sources().sum(0)
    frames = len(mix) // HOP + 1
    fixed = np.random.default_rng(3).uniform(0, 0.5, (2, N_FFT // 2 + 1, frames)).astype(np.float16)
    network = SimpleNamespace(config=SimpleNamespace(sample_rate=RATE, n_fft=N_FFT, hop=HOP),
                              model_id={"name": "net", "file": "-", "sha256": "-"},
                              masks=lambda wave, labels: fixed)
    whole = CombinedSeparator(network, separator(), COMBINED_RULE).masks(mix, ["cello", "flute"])
    monkeypatch.setattr(nmf_module, "COMBINE_BLOCK", 7)
    blocks = CombinedSeparator(network, separator(), COMBINED_RULE).masks(mix, ["cello", "flute"])
    assert whole.shape == (2, N_FFT // 2 + 1, frames) and whole.dtype == np.float16
    assert np.array_equal(whole, blocks) and frames > 7
    assert not np.array_equal(whole, fixed)  # the NMF's masks are in it


class LeakyNetwork:
    """A stand-in instrument network that gives ``cello`` 80 % of every bin under 500 Hz and
    20 % above, ``flute`` the rest, whatever it hears: a separator that leaks."""

    rate, n_fft, hop = RATE, N_FFT, HOP

    def masks(self, wave, labels):
        frames = stft(torch.from_numpy(np.ascontiguousarray(wave, np.float32)), N_FFT, HOP).shape[-1]
        low = (np.fft.rfftfreq(N_FFT, 1 / RATE) < 500)[:, None]
        cello = np.broadcast_to(np.where(low, 0.8, 0.2), (N_FFT // 2 + 1, frames))
        share = {"cello": cello, "flute": 1 - cello}
        return np.stack([share[lab] for lab in labels]).astype(np.float16)

    def apply(self, mixture, rate, masks):
        spec = stft(torch.from_numpy(np.ascontiguousarray(mixture, np.float32)), N_FFT, HOP)
        m = torch.from_numpy(masks.astype(np.float32))[:, None, :, :spec.shape[-1]]
        return istft(spec[None] * m, N_FFT, HOP, mixture.shape[-1]).numpy()


def test_reseparation_takes_the_leak_out_of_each_stem():
    """Each stem separated again keeps the share its label still gets: the cello stem's flute
    leak (and the flute stem's cello leak) drop, the masks keep their shape and sum to at most
    one, and power 0 leaves them as they are."""
    from avsplit.nmf import reseparate

    cello, flute = sources()
    mix = cello + flute
    net = LeakyNetwork()
    masks = net.masks(mix, ["cello", "flute"])
    before = net.apply(mix[None], RATE, masks)[:, 0]
    after_masks = reseparate(net, mix, ["cello", "flute"], masks.astype(np.float32).copy(), 1.0)
    after = net.apply(mix[None], RATE, after_masks)[:, 0]
    assert after_masks.shape == masks.shape and after_masks.sum(0).max() <= 1.0 + 1e-3
    for i, (own, other) in enumerate(((cello, flute), (flute, cello))):
        leak_before = np.dot(before[i], other) / np.dot(before[i], own)
        leak_after = np.dot(after[i], other) / np.dot(after[i], own)
        assert leak_after < 0.75 * leak_before  # interference down (the SIR side)
    same = reseparate(net, mix, ["cello", "flute"], masks.astype(np.float32).copy(), 0.0)
    assert np.array_equal(same, masks.astype(np.float32))
    # two rows of one label: each keeps the label's whole share, not half of it
    twice = reseparate(net, mix, ["cello", "cello"], np.repeat(masks[:1], 2, 0).astype(np.float32), 1.0)
    once = reseparate(net, mix, ["cello"], masks[:1].astype(np.float32).copy(), 1.0)
    assert np.allclose(twice[0], once[0], atol=1e-3) and np.allclose(twice[1], once[0], atol=1e-3)
