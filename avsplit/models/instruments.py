"""Query-conditioned instrument separator: mixture + instrument label -> that instrument's mask.

Method: the Mix-and-Separate training of Sound of Pixels (Zhao et al., ECCV 2018, Sec. 3) with
the visual feature replaced by a learned embedding of the instrument label, injected by
feature-wise linear modulation (FiLM, Perez et al., AAAI 2018) before and after a BLSTM mask
estimator (as in open-unmix, Stöter et al. 2019, a BLSTM over STFT frames). The STFT follows
Sound of Pixels: 11,025 Hz, 1024-sample (93 ms) Hann window, hop 256 (23 ms) — the MUSIC
evaluation audio is at this rate, a long window resolves the harmonics of low instruments
(double bass, tuba: ~10 Hz bins), and the rate keeps CPU cost low; above 5.5 kHz the stems
share the mixture's high band in proportion to their masks (:func:`avsplit.audio.transfer_masks`).

The mask is a sigmoid (not a softmax over instruments), so any number of labels can be asked
for independently, and a label that is not playing gets a near-zero mask (a silent stem).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from avsplit.audio import istft, stft
from avsplit.labels import LABELS


@dataclass
class QuerySeparatorConfig:
    """Hyper-parameters (stored with the weights).

    Attributes:
        sample_rate: Hz the network works at.
        n_fft, hop: STFT window/FFT length and hop in samples.
        labels: instrument labels in embedding order (see :mod:`avsplit.labels`).
        proj: width of the input projection; hidden: LSTM units per direction; layers: depth;
        embed: width of the label embedding.
        mask_power: masks are raised to this power at inference (below 1 softens them: fewer
            artifacts, more leakage); chosen on the held-out-soundfont validation set after
            training (see the model card), 1 during training.
    """

    sample_rate: int = 11025
    n_fft: int = 1024
    hop: int = 256
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    proj: int = 192
    hidden: int = 192
    layers: int = 2
    embed: int = 64
    mask_power: float = 1.0


class FiLM(nn.Module):
    """``h * (1 + gamma(e)) + beta(e)`` for features ``[B, T, width]`` and embedding ``[B, E]``."""

    def __init__(self, embed: int, width: int):
        super().__init__()
        self.linear = nn.Linear(embed, 2 * width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.linear(e)[:, None].chunk(2, dim=-1)
        return h * (1 + gamma) + beta


class QuerySeparator(nn.Module):
    """Mixture STFT + label index -> mask of that label's stem.

    Input: ``[batch, bins, frames]`` complex STFT at ``config`` (see :meth:`masks`).
    """

    def __init__(self, config: QuerySeparatorConfig | None = None):
        super().__init__()
        self.config = config or QuerySeparatorConfig()
        c = self.config
        bins = c.n_fft // 2 + 1
        self.label_embedding = nn.Sequential(nn.Embedding(len(c.labels), c.embed),
                                             nn.Linear(c.embed, c.embed), nn.ReLU())
        self.input = nn.Sequential(nn.Linear(bins, c.proj), nn.LayerNorm(c.proj))
        self.film_in = FiLM(c.embed, c.proj)
        self.blstm = nn.LSTM(c.proj, c.hidden, c.layers, batch_first=True, bidirectional=True)
        self.film_out = FiLM(c.embed, 2 * c.hidden)
        self.output = nn.Linear(2 * c.hidden, bins)

    def label_index(self, labels: list[str]) -> torch.Tensor:
        """``[len(labels)]`` int64 embedding indices.

        Raises:
            ValueError: a label the network was not trained on.
        """
        known = self.config.labels
        missing = [lab for lab in labels if lab not in known]
        if missing:
            raise ValueError(f"the instrument separator does not know {', '.join(missing)}")
        return torch.tensor([known.index(lab) for lab in labels], dtype=torch.long)

    def masks(self, spec: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Masks for a mixture STFT.

        Args:
            spec: ``[batch, bins, frames]`` complex STFT of the mixture.
            query: ``[batch]`` int64 label indices (see :meth:`label_index`).

        Returns:
            ``[batch, bins, frames]`` float in 0..1.
        """
        feat = torch.log(spec.abs() + 1e-5)
        feat = feat - feat.mean(dim=(1, 2), keepdim=True)  # gain invariance
        e = self.label_embedding(query.to(spec.device))
        h = self.film_in(self.input(feat.transpose(1, 2)), e)
        h, _ = self.blstm(h)
        h = self.film_out(h, e)
        return torch.sigmoid(self.output(h)).transpose(1, 2)

    def forward(self, mixture: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Separate: ``[batch, samples]`` float32 mixtures, ``[batch]`` label indices ->
        ``[batch, samples]`` stems (mixture phase)."""
        c = self.config
        spec = stft(mixture, c.n_fft, c.hop)
        return istft(spec * self.masks(spec, query), c.n_fft, c.hop, mixture.shape[-1])

    def to_checkpoint(self) -> dict:
        """``{"config": dict, "state_dict": ...}`` as stored in ``weights/``."""
        return {"config": asdict(self.config), "state_dict": self.state_dict(),
                "network": "avsplit.models.instruments:QuerySeparator"}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "QuerySeparator":
        model = cls(QuerySeparatorConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()


# --- the competing-mask separator (issue 9) ---------------------------------------------------

@dataclass
class EnsembleSeparatorConfig:
    """Hyper-parameters of :class:`EnsembleSeparator` (stored with the weights).

    Attributes:
        sample_rate, n_fft, hop: the STFT (Hz, samples), as :class:`QuerySeparatorConfig`.
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


class EnsembleSeparator(nn.Module):
    """Mixture STFT + the labels of the instruments playing -> one mask per label + a residual,
    competing: a softmax over the asked labels and the residual, so the masks sum to one in
    every bin and no energy is thrown away (issue 9; Sound of Pixels separates by independent
    sigmoids, which on unfamiliar timbres gives near-empty masks).

    Layout: log-magnitude on a log-frequency axis (:func:`log_frequency_maps`; a harmonic
    pattern then has the same shape at every pitch), a per-bin learned input scale and
    shift, a U-Net of frequency-local convolutions (Sound of Pixels' audio network, Sec. 3.1,
    with kernels along frequency only) around a BLSTM over frames at the bottleneck (the
    time context, as open-unmix), ``features`` output maps and, per label, mask logits as a
    linear combination of them; logits go back to the linear STFT axis before the softmax.

    Input: ``[batch, bins, frames]`` complex STFT at ``config``, ``[batch, K]`` label indices
    (see :meth:`masks`).
    """

    joint = True  # the separator asks for all labels of a mixture in one call

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
                or ``[K]`` for one mixture... with ``B = 1``.
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

    def to_checkpoint(self) -> dict:
        """``{"config": dict, "state_dict": ..., "network": ...}`` as stored in ``weights/``."""
        return {"config": asdict(self.config), "state_dict": self.state_dict(),
                "network": "avsplit.models.instruments:EnsembleSeparator"}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "EnsembleSeparator":
        model = cls(EnsembleSeparatorConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()
