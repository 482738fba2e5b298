"""Instrument tagger: which instruments a recording holds, from its sound alone.

Used where the picture is unsure (:mod:`avsplit.instruments`): the picture proposes candidate
labels, and the audio tells a keyboard from a marimba or confirms a half-hidden guitar (issue 9,
"let the audio decide between candidate labels"; DMMAN's matching of audio and visual evidence,
Hu et al. 2021).

Method: a small convolutional audio tagger in the manner of PANNs (Kong et al., 2020, "PANNs:
Large-scale pretrained audio neural networks for audio pattern recognition", IEEE/ACM TASLP,
Sec. III: a CNN on a log-frequency spectrogram, frame-wise label scores, pooled over time) with
decision-level attention pooling (Kong et al. 2019, "Weakly labelled AudioSet tagging with
attention neural networks", Sec. 3): per frame and label a logit and an attention weight, the
clip's logit is the attention-weighted mean over frames, so a label can rest on the frames where
the instrument plays. Multi-label: one sigmoid per label. Input: the same STFT as the instrument
separator (11,025 Hz, 1024-sample window, hop 256) on a log-frequency axis
(:func:`avsplit.models.instruments.log_frequency_maps`), log magnitude minus its mean (gain
invariance). Training: :mod:`avsplit.train.tagger`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from avsplit.audio import stft
from avsplit.labels import LABELS
from avsplit.models.checkpoint import CheckpointMixin
from avsplit.models.instruments import log_frequency_maps


@dataclass
class InstrumentTaggerConfig:
    """Hyper-parameters of :class:`InstrumentTagger` (stored with the weights).

    Attributes:
        sample_rate, n_fft, hop: the STFT (Hz, samples).
        labels: the instrument labels scored, in output order.
        log_bins: bins of the log-frequency axis (geometric from ``f_min`` Hz to Nyquist).
        channels: channels of the convolution blocks; each block but the last halves
            frequency and time.
        hidden: width of the frame-wise layer before the label logits.
    """

    sample_rate: int = 11025
    n_fft: int = 1024
    hop: int = 256
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    log_bins: int = 96
    f_min: float = 40.0
    channels: list[int] = field(default_factory=lambda: [24, 48, 64, 96])
    hidden: int = 192


def _conv_block(c_in: int, c_out: int, pool: tuple[int, int]) -> nn.Module:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.ReLU(),
              nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.ReLU()]
    if pool != (1, 1):
        layers.append(nn.AvgPool2d(pool, ceil_mode=True))
    return nn.Sequential(*layers)


class InstrumentTagger(CheckpointMixin, nn.Module):
    """Mixture waveform -> one logit per instrument label (present / absent).

    Input ``[B, samples]`` float32 at ``config.sample_rate`` (any length of at least one STFT
    frame); output ``[B, labels]`` logits (:meth:`forward`) or probabilities 0..1
    (:meth:`predict`).
    """

    config_class = InstrumentTaggerConfig

    def __init__(self, config: InstrumentTaggerConfig | None = None):
        super().__init__()
        self.config = c = config or InstrumentTaggerConfig()
        to_log, _ = log_frequency_maps(c.n_fft, c.sample_rate, c.log_bins, c.f_min)
        self.register_buffer("to_log", to_log, persistent=False)
        self.input_scale = nn.Parameter(torch.ones(c.log_bins))
        self.input_shift = nn.Parameter(torch.zeros(c.log_bins))
        blocks, c_in, bins = [], 1, c.log_bins
        for i, ch in enumerate(c.channels):
            pool = (2, 2) if i < len(c.channels) - 1 else (2, 1)
            blocks.append(_conv_block(c_in, ch, pool))
            c_in, bins = ch, -(-bins // 2)
        self.blocks = nn.Sequential(*blocks)
        self.frame = nn.Sequential(nn.Linear(c_in * bins, c.hidden), nn.ReLU(), nn.Dropout(0.2))
        self.label_logit = nn.Linear(c.hidden, len(c.labels))
        self.label_attention = nn.Linear(c.hidden, len(c.labels))

    def frame_scores(self, mixture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, samples]`` -> ``(logits, attention logits)``, each ``[B, frames', labels]``
        (``frames'`` = STFT frames / 8)."""
        c = self.config
        mag = torch.einsum("lf,bft->blt", self.to_log, stft(mixture, c.n_fft, c.hop).abs())
        x = torch.log(mag + 1e-5)
        x = x - x.mean(dim=(1, 2), keepdim=True)
        x = x * self.input_scale[:, None] + self.input_shift[:, None]
        h = self.blocks(x[:, None])                       # [B, C, bins', frames']
        b, ch, lb, t = h.shape
        h = self.frame(h.permute(0, 3, 1, 2).reshape(b, t, ch * lb))
        return self.label_logit(h), self.label_attention(h)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        """``[B, samples]`` float32 -> ``[B, labels]`` clip logits (attention pooling)."""
        logit, att = self.frame_scores(mixture)
        return (torch.softmax(att, dim=1) * logit).sum(dim=1)

    @torch.no_grad()
    def predict(self, mixture: np.ndarray, chunk_s: float = 10.0) -> dict[str, float]:
        """Probability that each label plays in a recording.

        Args:
            mixture: ``[samples]`` float32 mono at ``config.sample_rate``.
            chunk_s: longer recordings are scored in chunks of this many seconds; a label's
                probability is the largest over the chunks (present somewhere in the clip).

        Returns:
            ``{label: probability 0..1}`` for every label of the config.

        Raises:
            ValueError: not a 1-D array, or shorter than one STFT window.
        """
        x = np.asarray(mixture, np.float32)
        if x.ndim != 1 or len(x) < self.config.n_fft:
            raise ValueError(f"predict() needs a 1-D recording of at least {self.config.n_fft} "
                             f"samples; got shape {x.shape}")
        n = int(chunk_s * self.config.sample_rate)
        starts = range(0, max(len(x) - n // 4, 1), n) if len(x) > n else [0]
        self.eval()
        probs = []
        for s in starts:
            part = x[s:s + n]
            if len(part) < self.config.n_fft:
                continue
            probs.append(torch.sigmoid(self(torch.from_numpy(part)[None]))[0].numpy())
        p = np.max(probs, axis=0)
        return {lab: float(v) for lab, v in zip(self.config.labels, p)}
