"""The pretrained speech enhancer (DTLN, ONNX) on generated signals only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avsplit.audio import istft, si_sdr, stft
from avsplit.errors import AvsplitError
from avsplit.models.enhancer import SpeechEnhancer
from avsplit.models.registry import MODELS, sha256_of, weights_path
from helpers import RATE, voice_like


@pytest.fixture(scope="module")
def enhancer() -> SpeechEnhancer:
    return SpeechEnhancer(threads=1)


def _noise(kind: str, n: int, seed: int) -> np.ndarray:
    white = np.random.default_rng(seed).standard_normal(n)
    if kind == "white":
        return white.astype(np.float32)
    spec = np.fft.rfft(white)
    spec[1:] /= np.sqrt(np.arange(1, spec.size))  # 1/f power
    spec[0] = 0
    return np.fft.irfft(spec, n=n).astype(np.float32)


def _mixture(seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    voice = voice_like(seed)
    noise = _noise(kind, voice.size, seed + 100)
    noise *= np.sqrt(np.mean(voice ** 2) / np.mean(noise ** 2))  # 0 dB SNR
    return voice, (voice + noise).astype(np.float32)


def test_weights_registered_and_checked():
    for name in ("dtln-1", "dtln-2"):
        entry = MODELS[name]
        assert entry.sample_rate == 16000
        assert sha256_of(weights_path(name)) == entry.sha256


# Measured (seeds 0-2): white noise +12.1..+13.5 dB, pink noise +10.0..+11.6 dB; the mask on
# our STFT grid within 0.2 dB of the waveform. The bounds leave about 5 dB of margin.
@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("seed", [0, 1])
def test_enhancer_removes_noise(enhancer, seed, kind):
    voice, mix = _mixture(seed, kind)
    base = si_sdr(mix, voice)
    out = enhancer.enhance(mix)
    assert out.shape == mix.shape and out.dtype == np.float32
    assert si_sdr(out, voice) - base > 5.0

    mask = enhancer.speech_mask(mix, enhanced=out)
    assert mask.shape == (257, mix.size // 256 + 1) and mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    spec = stft(torch.from_numpy(mix), 512, 256)
    masked = istft(spec * torch.from_numpy(mask), 512, 256, mix.size).numpy()
    assert si_sdr(masked, voice) - base > 4.0


def test_clean_voice_passes(enhancer):
    voice = voice_like(3)
    assert si_sdr(enhancer.enhance(voice), voice) > 15.0  # measured 22-33 dB


def test_mask_grid(enhancer):
    _, mix = _mixture(4, "white")
    mix = mix[:RATE + 300]
    mask = enhancer.speech_mask(mix, n_fft=1024, hop=160)
    assert mask.shape == (513, mix.size // 160 + 1)
    assert np.all((mask >= 0) & (mask <= 1))
    assert np.all(enhancer.speech_mask(np.zeros(RATE, np.float32)) == 0)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 511, 513, RATE + 37])
def test_any_length(enhancer, n):
    x = 0.05 * _noise("white", n, 5)
    out = enhancer.enhance(x)
    assert out.shape == (n,) and out.dtype == np.float32 and np.all(np.isfinite(out))


def test_streaming_pass_and_level(enhancer):
    """One causal pass: samples more than 512 ahead do not change the output; with the level
    normalisation the output follows the input's scale."""
    _, mix = _mixture(6, "pink")
    plain = SpeechEnhancer(level_dbfs=None)
    full = plain.enhance(mix)
    m = 2 * RATE
    np.testing.assert_allclose(plain.enhance(mix[:m + 512])[:m], full[:m], atol=1e-5)
    a = enhancer.enhance(mix)
    b = enhancer.enhance(10 * mix)
    np.testing.assert_allclose(b, 10 * a, rtol=1e-3, atol=1e-4)
    with pytest.raises(AvsplitError):
        enhancer.enhance(np.zeros((2, 100), np.float32))
