"""Instrument separator: a mixture + the labels of the instruments in it -> one mask per label.

Method: Sound of Pixels' Mix-and-Separate (Zhao et al., ECCV 2018, Sec. 3) with the visual
feature of a pixel replaced by a learned embedding of the instrument label, and the independent
per-source sigmoid replaced by masks that compete (a softmax over the labels asked together and
a residual): they sum to the mixture, so what the network is unsure of is shared, not thrown
away. The STFT follows Sound of Pixels: 11,025 Hz (the MUSIC evaluation audio's rate), a
1024-sample (93 ms) Hann window that resolves the harmonics of low instruments (double bass,
tuba: ~10 Hz bins), hop 256 (23 ms); above 5.5 kHz the stems share the mixture's high band in
proportion to their masks (:func:`avsplit.audio.transfer_masks`).

The network (:class:`EnsembleSeparator`) works on a log-frequency axis, where a harmonic
pattern has the same shape at every pitch, with convolutions along frequency (a U-Net as Sound
of Pixels' audio network) around a BLSTM over frames (as open-unmix, Stöter et al. 2019).
Training: :mod:`avsplit.train.instruments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from avsplit.audio import istft, stft
from avsplit.labels import LABELS
from avsplit.models.checkpoint import CheckpointMixin


@dataclass
class EnsembleSeparatorConfig:
    """Hyper-parameters of :class:`EnsembleSeparator` (stored with the weights).

    Attributes:
        sample_rate, n_fft, hop: the STFT (Hz, samples): 11,025 Hz, 1024-sample (93 ms) Hann
            window, hop 256 (23 ms), as Sound of Pixels.
        labels: instrument labels in embedding order; one more row is the residual.
        log_bins: bins of the log-frequency axis the network works on; f_min: its lowest
            centre (Hz; the highest is the Nyquist frequency).
        channels: channels of the four frequency-local encoder levels (each level after the
            first halves the log-frequency axis).
        kernel: frequency extent of the encoder/decoder kernels (log bins).
        bottleneck: width of the input of the BLSTM; hidden: LSTM units per direction;
            layers: depth.
        features: feature maps the decoder outputs; each label's mask logit is a learned
            linear combination of them (Sound of Pixels' audio-visual product, Sec. 3.2, with a
            label embedding in place of the pixel's visual feature).
        mask_power: inference mask power (1: the masks sum to one with the residual).
    """

    sample_rate: int = 11025
    n_fft: int = 1024
    hop: int = 256
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    log_bins: int = 256
    f_min: float = 25.0
    channels: list[int] = field(default_factory=lambda: [16, 24, 32, 48])
    kernel: int = 5
    bottleneck: int = 256
    hidden: int = 192
    layers: int = 2
    features: int = 24
    mask_power: float = 1.0


def log_frequency_maps(n_fft: int, rate: int, log_bins: int, f_min: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed maps between the linear STFT axis and a log-frequency axis.

    Log-bin centres are geometrically spaced from ``f_min`` to the Nyquist frequency (256 bins
    from 25 Hz at 11,025 Hz: 0.37 semitone apart). Each map is a triangular interpolation whose
    width is the wider of the two grids' spacings at that frequency, so a narrow target bin
    interpolates and a wide one averages (as Sound of Pixels' log-frequency resampling, Sec. 4.1).

    Returns:
        ``(to_log [log_bins, bins], to_linear [bins, log_bins])`` float32, rows summing to 1
        (``bins = n_fft // 2 + 1``).
    """
    bins = n_fft // 2 + 1
    f_lin = np.arange(bins) * rate / n_fft
    d_lin = rate / n_fft
    centres = np.geomspace(f_min, rate / 2, log_bins)
    step = np.log(centres[1] / centres[0])
    # linear -> log: triangle in Hz around each log centre
    width = np.maximum(centres * (np.exp(step) - 1), d_lin)[:, None]
    to_log = np.maximum(0.0, 1 - np.abs(f_lin[None] - centres[:, None]) / width)
    # log -> linear: triangle in log-frequency around each linear bin's position
    pos = np.log(np.maximum(f_lin, f_min))[:, None]
    lwidth = np.maximum(step, np.log1p(d_lin / np.maximum(f_lin, f_min)))[:, None]
    to_linear = np.maximum(0.0, 1 - np.abs(pos - np.log(centres)[None]) / lwidth)
    for m in (to_log, to_linear):
        empty = m.sum(axis=1) == 0
        if empty.any():  # cannot happen with the widths above; kept as a guard
            m[empty, np.argmin(np.abs(np.arange(m.shape[1])))] = 1
        m /= m.sum(axis=1, keepdims=True)
    return (torch.tensor(to_log, dtype=torch.float32), torch.tensor(to_linear, dtype=torch.float32))


def _block(c_in: int, c_out: int, kernel: int, stride: int = 1, up: bool = False) -> nn.Module:
    """Convolution along log frequency only (time context comes from the BLSTM), GroupNorm, ReLU."""
    if up:
        conv = nn.ConvTranspose2d(c_in, c_out, (4, 1), stride=(2, 1), padding=(1, 0))
    elif stride == 2:
        conv = nn.Conv2d(c_in, c_out, (4, 1), stride=(2, 1), padding=(1, 0))
    else:
        conv = nn.Conv2d(c_in, c_out, (kernel, 1), padding=(kernel // 2, 0))
    return nn.Sequential(conv, nn.GroupNorm(4, c_out), nn.ReLU())


class EnsembleSeparator(CheckpointMixin, nn.Module):
    """Mixture STFT + the labels of the instruments playing -> one mask per label + a residual,
    competing: a softmax over the asked labels and the residual, so the masks sum to one in
    every bin and no energy is thrown away (independent sigmoids, as in Sound of Pixels, gave
    near-empty masks on unfamiliar timbres: 61 % of real mixtures went to no stem).

    Layout: log-magnitude on a log-frequency axis (:func:`log_frequency_maps`; a harmonic
    pattern then has the same shape at every pitch), a per-bin learned input scale and
    shift, a U-Net of frequency-local convolutions (Sound of Pixels' audio network, Sec. 3.1,
    with kernels along frequency only) around a BLSTM over frames at the bottleneck (the
    time context, as open-unmix), ``features`` output maps and, per label, mask logits as a
    linear combination of them; logits go back to the linear STFT axis before the softmax.

    Input: ``[batch, bins, frames]`` complex STFT at ``config``, ``[batch, K]`` label indices
    (see :meth:`masks`).
    """

    config_class = EnsembleSeparatorConfig

    def __init__(self, config: EnsembleSeparatorConfig | None = None):
        super().__init__()
        self.config = c = config or EnsembleSeparatorConfig()
        if c.log_bins % 8:
            raise ValueError("log_bins must be a multiple of 8 (three halvings)")
        to_log, to_linear = log_frequency_maps(c.n_fft, c.sample_rate, c.log_bins, c.f_min)
        self.register_buffer("to_log", to_log, persistent=False)
        self.register_buffer("to_linear", to_linear, persistent=False)
        self.input_scale = nn.Parameter(torch.ones(c.log_bins))
        self.input_shift = nn.Parameter(torch.zeros(c.log_bins))
        ch = c.channels
        self.enc = nn.ModuleList([_block(1, ch[0], c.kernel)] +
                                 [_block(ch[i], ch[i + 1], c.kernel, stride=2) for i in range(3)])
        self.low_bins = c.log_bins // 8
        flat = ch[3] * self.low_bins
        self.squeeze = nn.Sequential(nn.Linear(flat, c.bottleneck), nn.LayerNorm(c.bottleneck))
        self.blstm = nn.LSTM(c.bottleneck, c.hidden, c.layers, batch_first=True, bidirectional=True)
        self.expand = nn.Sequential(nn.Linear(2 * c.hidden, flat), nn.ReLU())
        self.dec = nn.ModuleList([_block(2 * ch[3], ch[2], c.kernel, up=True),
                                  _block(2 * ch[2], ch[1], c.kernel, up=True),
                                  _block(2 * ch[1], ch[0], c.kernel, up=True)])
        self.head = nn.Sequential(nn.Conv2d(2 * ch[0], c.features, 1), nn.ReLU())
        self.label_weights = nn.Embedding(len(c.labels) + 1, c.features)  # last row: residual
        self.label_bias = nn.Embedding(len(c.labels) + 1, 1)
        nn.init.normal_(self.label_weights.weight, std=c.features ** -0.5)
        nn.init.zeros_(self.label_bias.weight)

    @property
    def residual_index(self) -> int:
        return len(self.config.labels)

    def label_index(self, labels: list[str]) -> torch.Tensor:
        """``[len(labels)]`` int64 embedding indices.

        Raises:
            ValueError: a label the network was not trained on, or a label asked twice.
        """
        known = self.config.labels
        missing = [lab for lab in labels if lab not in known]
        if missing:
            raise ValueError(f"the instrument separator does not know {', '.join(missing)}")
        if len(set(labels)) != len(labels):
            raise ValueError("each label can be asked once per mixture")
        return torch.tensor([known.index(lab) for lab in labels], dtype=torch.long)

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """``[B, bins, frames]`` complex -> ``[B, features, log_bins, frames]`` feature maps."""
        mag = torch.einsum("lf,bft->blt", self.to_log, spec.abs())
        x = torch.log(mag + 1e-5)
        x = x - x.mean(dim=(1, 2), keepdim=True)  # gain invariance
        x = x * self.input_scale[:, None] + self.input_shift[:, None]
        skips, h = [], x[:, None]
        for layer in self.enc:
            h = layer(h)
            skips.append(h)
        b, ch, lb, t = h.shape
        z = self.squeeze(h.permute(0, 3, 1, 2).reshape(b, t, ch * lb))
        z, _ = self.blstm(z)
        h = self.expand(z).reshape(b, t, ch, lb).permute(0, 2, 3, 1)
        for layer, skip in zip(self.dec, skips[:0:-1]):
            h = layer(torch.cat([h, skip], dim=1))
        return self.head(torch.cat([h, skips[0]], dim=1))

    def logits(self, spec: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Mask logits on the linear axis, ``[B, K + 1, bins, frames]``: the ``K`` asked labels
        then the residual; ``query`` entries of -1 (padding) get ``-inf``."""
        feats = self.features(spec)
        b = feats.shape[0]
        rest = torch.full((b, 1), self.residual_index, dtype=torch.long, device=feats.device)
        q = torch.cat([query.to(feats.device), rest], dim=1)
        valid = q >= 0
        qi = q.clamp(min=0)
        w = self.label_weights(qi)                        # [B, K+1, features]
        logit = torch.einsum("bkc,bclt->bklt", w, feats) + self.label_bias(qi)[..., None]
        logit = torch.einsum("fl,bklt->bkft", self.to_linear, logit)
        return logit.masked_fill(~valid[:, :, None, None], float("-inf"))

    def masks(self, spec: torch.Tensor, query: torch.Tensor, residual: bool = False
              ) -> torch.Tensor:
        """Competing masks for a mixture STFT.

        Args:
            spec: ``[B, bins, frames]`` complex STFT of the mixture.
            query: ``[B, K]`` int64 label indices (:meth:`label_index`; -1 pads a shorter list),
                or ``[K]`` (the same labels for every mixture of the batch).
            residual: also return the residual's mask as the last row.

        Returns:
            ``[B, K (+1), bins, frames]`` float in 0..1; with the residual they sum to 1.
        """
        if query.ndim == 1:
            query = query[None].expand(spec.shape[0], -1)
        m = torch.softmax(self.logits(spec, query), dim=1)
        return m if residual else m[:, :-1]

    def forward(self, mixture: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Separate: ``[B, samples]`` float32 mixtures, ``[B, K]`` labels -> ``[B, K, samples]``
        stems (mixture phase)."""
        c = self.config
        spec = stft(mixture, c.n_fft, c.hop)
        return istft(spec[:, None] * self.masks(spec, query), c.n_fft, c.hop, mixture.shape[-1])
