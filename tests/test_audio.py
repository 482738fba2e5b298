import numpy as np
import torch

from avsplit.audio import apply_masks, istft, resample, si_sdr, stft, transfer_masks


def test_stft_round_trip_is_exact():
    x = torch.randn(2, 16000)
    y = istft(stft(x, 512, 128), 512, 128, 16000)
    assert torch.allclose(x, y, atol=1e-5)


def test_resample_keeps_a_tone():
    t = np.arange(48000) / 48000
    x = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 440 * t)]).astype(np.float32)
    y = resample(x, 48000, 16000)
    assert y.shape == (2, 16000) and y.dtype == np.float32
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert si_sdr(y[0, 1000:-1000], ref[1000:-1000]) > 40


def test_si_sdr_is_scale_invariant_and_ranks_estimates():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(8000)
    noisy = ref + 0.1 * rng.standard_normal(8000)
    worse = ref + 1.0 * rng.standard_normal(8000)
    assert abs(si_sdr(3 * noisy, ref) - si_sdr(noisy, ref)) < 1e-6
    assert si_sdr(noisy, ref) > si_sdr(worse, ref) + 10
    assert abs(float(si_sdr(torch.tensor(noisy), torch.tensor(ref))) - si_sdr(noisy, ref)) < 1e-3


def test_masks_that_sum_to_one_give_stems_that_sum_to_the_mixture_at_another_rate():
    rng = np.random.default_rng(1)
    mixture = rng.standard_normal((2, 44100)).astype(np.float32) * 0.1
    frames = 16000 // 128 + 1
    raw = rng.random((3, 257, frames)).astype(np.float32)
    masks = raw / raw.sum(0, keepdims=True)
    stems = apply_masks(mixture, 44100, masks, 16000, 128, 512)
    assert stems.shape == (3, 2, 44100)
    assert np.abs(stems.sum(0) - mixture).max() < 1e-4


def test_transfer_masks_keeps_band_structure_and_fills_the_high_band():
    masks = np.zeros((2, 257, 20), np.float32)
    masks[0, :64] = 1.0  # low band (0-2 kHz) to source 0
    masks[1, 64:] = 1.0
    out = transfer_masks(masks, 16000, 128, 48000, 1536, 384, 20)
    freqs = np.linspace(0, 24000, 769)
    assert out[0, freqs < 1800].min() > 0.99
    assert out[1, (freqs > 2200) & (freqs < 7900)].min() > 0.99
    assert out[1, freqs > 8000].min() > 0.99  # high band follows the top octave
