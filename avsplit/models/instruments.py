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
