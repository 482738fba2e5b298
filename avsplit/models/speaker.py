"""Talker identity: a pretrained d-vector speaker encoder, to tell whether two separated voices
are one talker.

The network is GE2E's (Wan, Wang, Papir & Lopez Moreno, "Generalized End-to-End Loss for
Speaker Verification", ICASSP 2018): three LSTM layers of 256 units over 40-band mel power
frames (25 ms windows every 10 ms, 16 kHz), a 256-unit linear layer with ReLU on the last
state, L2-normalised. Weights: Resemblyzer 0.1.4's ``pretrained.pt`` (Apache-2.0, Resemble.AI;
the speaker encoder of the Real-Time Voice Cloning project), the model's tensors only (registry
entry ``speaker-ge2e``, ``weights/README.md``). Our own code computes the mel frames
(Slaney-style filterbank, as the encoder was trained with) and averages the embeddings of 1.6 s
partial utterances, as Resemblyzer's ``embed_utterance`` does.

Used by :mod:`avsplit.modes.speech`: one talker that the speech separator split over two slots
(at its pauses, on TV heads) gives two slots of the same talker; two talkers give two
different ones (the same-talker rule of :func:`avsplit.associate.decide`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

RATE = 16000
N_MELS = 40
WIN = 400  # samples (25 ms)
HOP = 160  # samples (10 ms)
PARTIAL = 160  # frames of one partial utterance (1.6 s)
PARTIAL_HOP = 80  # frames between partial utterances
ACTIVE_DB = 30.0  # frames this far under a voice's loudest frame are left out
MIN_FRAMES = 150  # voiced frames (1.5 s) below which a voice gets no embedding


def mel_filterbank(rate: int = RATE, n_fft: int = WIN, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-style mel filterbank (Slaney's Auditory Toolbox: linear below 1 kHz, logarithmic
    above; triangles of unit area), the filterbank librosa gives by default.

    Returns:
        ``[n_mels, n_fft // 2 + 1]`` float64 weights on the rFFT bins.
    """
    fmax = rate / 2 if fmax is None else fmax
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def to_mel(f):
        f = np.asarray(f, np.float64)
        logarithmic = min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep
        return np.where(f >= min_log_hz, logarithmic, f / f_sp)

    def to_hz(m):
        m = np.asarray(m, np.float64)
        logarithmic = min_log_hz * np.exp(logstep * (m - min_log_mel))
        return np.where(m >= min_log_mel, logarithmic, f_sp * m)

    edges = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    widths = np.diff(edges)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


_FILTERBANK = mel_filterbank()


def mel_frames(wave: np.ndarray) -> np.ndarray:
    """40-band mel power frames of a 16 kHz voice, as the encoder was trained on them.

    Args:
        wave: ``[samples]`` float at 16 kHz.

    Returns:
        ``[frames, 40]`` float32, one frame per 10 ms starting at sample 0 (frame ``t`` is a
        Hann-windowed 25 ms frame centred on sample ``160 t``, zero-padded at the edges).
    """
    x = np.pad(np.asarray(wave, np.float64), (WIN // 2, WIN // 2))
    if len(x) < WIN:
        return np.zeros((0, N_MELS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, WIN)[::HOP]
    out = np.empty((len(frames), N_MELS), np.float32)
    window = np.hanning(WIN + 1)[:-1]  # periodic Hann, as scipy/librosa use
    for i in range(0, len(frames), 4096):
        power = np.abs(np.fft.rfft(frames[i:i + 4096] * window, axis=1)) ** 2
        out[i:i + 4096] = power @ _FILTERBANK.T
    return out


class SpeakerEncoder(nn.Module):
    """GE2E d-vector network: ``[batch, frames, 40]`` mel power -> ``[batch, 256]`` unit vectors.

    Load the bundled weights with :meth:`pretrained`.
    """

    def __init__(self, hidden: int = 256, layers: int = 3, dim: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, dim)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        e = torch.relu(self.linear(hidden[-1]))
        return e / (e.norm(dim=1, keepdim=True) + 1e-12)

    @classmethod
    def pretrained(cls) -> "SpeakerEncoder":
        """The bundled ``speaker-ge2e`` weights (sha256-checked), in eval mode on the CPU.

        Raises:
            WeightsUnavailableError: the weights file is missing or corrupt.
        """
        from avsplit.models.registry import weights_path

        ckpt = torch.load(weights_path("speaker-ge2e"), map_location="cpu", weights_only=True)
        model = cls()
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()

    @torch.no_grad()
    def embed(self, mels: np.ndarray) -> np.ndarray | None:
        """The d-vector of one voice: the mean of its 1.6 s partial utterances' embeddings,
        renormalised, over its voiced frames (within :data:`ACTIVE_DB` of its loudest frame).

        Args:
            mels: ``[frames, 40]`` from :func:`mel_frames`.

        Returns:
            ``[256]`` float32 unit vector, or ``None`` with fewer than :data:`MIN_FRAMES`
            voiced frames (too little of the voice to tell who talks).
        """
        if len(mels) == 0:
            return None
        level = 10 * np.log10(mels.sum(axis=1) + 1e-12)
        voiced = mels[level > level.max() - ACTIVE_DB]
        if len(voiced) < MIN_FRAMES:
            return None
        starts = range(0, max(1, len(voiced) - PARTIAL + 1), PARTIAL_HOP)
        batch = torch.from_numpy(np.stack([voiced[s:s + PARTIAL] for s in starts]))
        e = self.forward(batch).mean(dim=0)
        return (e / (e.norm() + 1e-12)).numpy().astype(np.float32)


BLOCK_S = 30.0  # seconds of voice embedded at a time (memory bounded for long inputs)


def talker_similarity(encoder: SpeakerEncoder, read: Callable[[int, int], np.ndarray],
                      start: int, end: int, block_s: float = BLOCK_S) -> float | None:
    """Cosine similarity of the d-vectors of two voices over one stretch (1: the same talker).

    The stretch is read in blocks of at most ``block_s`` seconds; each voice's d-vector is the
    normalised sum of its blocks' (:meth:`SpeakerEncoder.embed`; blocks with too little voice
    are left out), so memory does not grow with the stretch.

    Args:
        encoder: a :class:`SpeakerEncoder`.
        read: ``read(a, b)`` -> ``[2, b - a]`` float samples of the two voices at 16 kHz.
        start, end: the stretch in samples.

    Returns:
        The similarity in -1..1, or ``None`` when either voice is too short to embed in every
        block (:data:`MIN_FRAMES`).
    """
    sums = np.zeros((2, encoder.linear.out_features), np.float64)
    block = max(1, int(block_s * RATE))
    for a in range(int(start), int(end), block):
        waves = read(a, min(int(end), a + block))
        for i in range(2):
            e = encoder.embed(mel_frames(waves[i]))
            if e is not None:
                sums[i] += e
    norms = np.linalg.norm(sums, axis=1)
    if not (norms > 0).all():
        return None
    return float((sums[0] / norms[0]) @ (sums[1] / norms[1]))
