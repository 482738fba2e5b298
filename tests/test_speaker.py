"""The d-vector speaker encoder (avsplit.models.speaker): mel frames, talker identity."""

import numpy as np

from helpers import voice_like
from avsplit.models.speaker import (HOP, MIN_FRAMES, N_MELS, RATE, SpeakerEncoder, mel_frames,
                                    talker_similarity)


def test_mel_frames_are_centred_every_10_ms_and_put_a_tone_in_its_band():
    """A 1 kHz burst from 0.5 s to 0.7 s: frames every 10 ms from sample 0, its energy in the
    frames centred inside the burst and in the mel band that holds 1 kHz, not in the 3-4 kHz bands."""
    t = np.arange(RATE) / RATE
    wave = np.where((t >= 0.5) & (t < 0.7), np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
    mels = mel_frames(wave)
    assert mels.shape == (len(wave) // HOP + 1, N_MELS) and mels.dtype == np.float32
    loud = np.flatnonzero(mels.sum(axis=1) > 0.5 * mels.sum(axis=1).max())
    assert abs(loud[0] - 50) <= 2 and abs(loud[-1] - 70) <= 2
    band = int(np.argmax(mels[60]))
    assert 10 <= band <= 25 and mels[60, band] > 100 * mels[60, -5:].max()


def _similarity(encoder, a, b, block_s=30.0):
    pair = np.stack([a[: min(len(a), len(b))], b[: min(len(a), len(b))]])
    return talker_similarity(encoder, lambda i, j: pair[:, i:j], 0, pair.shape[1], block_s)


def test_two_excerpts_of_one_talker_are_closer_than_two_talkers():
    """Generated voices (glottal pulses through moving formants): two excerpts at one pitch
    range are more alike (cosine of d-vectors) than a low and a high voice, by a clear margin,
    read whole or in 4 s blocks; half a second of voice is too little to embed (None)."""
    encoder = SpeakerEncoder.pretrained()
    low = [voice_like(s, 8.0, f0_range=(95, 105)) for s in (1, 2)]
    high = [voice_like(s, 8.0, f0_range=(200, 220)) for s in (3, 4)]
    for block_s in (30.0, 4.0):
        same = min(_similarity(encoder, *low, block_s), _similarity(encoder, *high, block_s))
        different = max(_similarity(encoder, low[0], high[0], block_s),
                        _similarity(encoder, low[1], high[1], block_s))
        assert same > different + 0.1
    short = low[0][: RATE // 2]
    assert len(mel_frames(short)) < MIN_FRAMES
    assert _similarity(encoder, short, low[1]) is None
    e = encoder.embed(mel_frames(low[0]))
    assert e.shape == (256,) and e.dtype == np.float32 and abs(np.linalg.norm(e) - 1) < 1e-4
