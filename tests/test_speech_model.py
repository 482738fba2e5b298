"""The bundled speech separator really separates, and training's pieces behave."""

import numpy as np
import torch

from avsplit.apply import masks_to_waves, separate_masks
from avsplit.audio import si_sdr, stft
from avsplit.models.registry import MODELS, load_speech_separator, sha256_of, weights_path
from avsplit.train.speech import Pools, make_batch, psa_pit_loss

RATE = 16000


def _voice(seed: int, seconds: float = 4.0) -> np.ndarray:
    """A voice-like signal: a glottal pulse train with a gliding pitch, filtered by moving
    vowel formants and gated into syllables (no recorded speech in tests)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(100, 200) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = np.cumsum(f0 / RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    out = np.zeros(n)
    for block in range(0, n, 1600):  # new vowel every 0.1 s
        f1, f2 = rng.uniform(300, 800), rng.uniform(900, 2300)
        x = pulses[block:block + 1600]
        for f, bw in ((f1, 80), (f2, 120)):
            r = np.exp(-np.pi * bw / RATE)
            x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / RATE), r * r], x)
        out[block:block + 1600] = x
    gate = np.zeros(n)
    pos = 0.1
    while pos < seconds - 0.4:
        length = rng.uniform(0.15, 0.35)
        a, b = int(pos * RATE), int((pos + length) * RATE)
        gate[a:b] = np.hanning(b - a)
        pos += length + rng.uniform(0.05, 0.25)
    out = out * gate
    return (0.1 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)


def test_bundled_weights_match_their_registered_sha256():
    for entry in MODELS.values():
        assert sha256_of(weights_path(entry.name, verify=False)) == entry.sha256


def test_separator_output_is_closer_to_the_voice_than_the_mixture_is():
    model, model_id = load_speech_separator()
    assert model_id["sha256"] == MODELS["speech-blstm"].sha256
    voice = _voice(0)
    noise = np.random.default_rng(1).standard_normal(len(voice)).astype(np.float32)
    noise *= np.sqrt(np.mean(voice ** 2) / np.mean(noise ** 2))  # 0 dB
    mixture = voice + noise
    masks = separate_masks(model, mixture)
    assert masks.shape[0] == model.config.n_speakers + 1
    assert np.allclose(masks.sum(0), 1, atol=1e-4)
    sources = masks_to_waves(model, mixture, masks)
    best = max(float(si_sdr(s, voice)) for s in sources[:-1])
    assert best > float(si_sdr(mixture, voice)) + 3.0


def test_chunked_separation_matches_one_pass_where_chunks_agree():
    model, _ = load_speech_separator()
    mixture = _voice(2, 6.0) + 0.3 * _voice(3, 6.0)
    whole = separate_masks(model, mixture, chunk_s=60)
    chunked = separate_masks(model, mixture, chunk_s=2.5, overlap_s=0.5)
    assert chunked.shape == whole.shape
    assert np.allclose(chunked.sum(0), 1, atol=1e-4)


def test_training_batches_are_exact_mixtures_and_pit_ignores_slot_order():
    rng = np.random.default_rng(0)
    pools = Pools(speakers=[[_voice(i, 2.0)] for i in range(4)],
                  backgrounds=[0.01 * rng.standard_normal(RATE * 2).astype(np.float32)], rirs=[])
    mix, speech, background = make_batch(pools, 4, RATE, rng)
    assert torch.allclose(mix, speech.sum(1) + background, atol=1e-6)
    spec = stft(mix, 512, 256)
    refs = stft(torch.cat([speech, background[:, None]], dim=1), 512, 256).abs()
    ideal = refs / (refs.sum(1, keepdim=True) + 1e-8)  # ideal ratio masks, speech slots first
    loss_a = psa_pit_loss(ideal, mix, speech, background, 512, 256)
    loss_b = psa_pit_loss(torch.cat([ideal[:, :3].flip(1), ideal[:, 3:]], dim=1), mix, speech,
                          background, 512, 256)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    everything_in_background = torch.zeros_like(ideal)
    everything_in_background[:, 3] = 1
    assert psa_pit_loss(everything_in_background, mix, speech, background, 512, 256) > 5 * loss_a
    assert spec.shape[-2] == 257
