"""Speech separation network: a BLSTM time-frequency mask estimator.

Method: uPIT-BLSTM (Kolbaek et al., 2017, "Multitalker speech separation with
utterance-level permutation invariant training") on a 16 kHz STFT, with a fixed slot for the
non-speech background and a softmax over all slots so that the masks sum to one and the
separated outputs add up to the mixture exactly. Trained with a thresholded SNR on the waveforms
under utterance-level PIT over the speech slots (an absent voice's slot, and the background
slot of a mixture without background, is pushed to silence), so one network covers one or two
voices plus background (see :mod:`avsplit.train.speech`). With ``cue_channels = 2`` the same
network is a target-speaker extractor steered by a face's mouth-motion cue (slot 0 is the cued
voice; an all-zero cue separates blind). Checkpoints from before the recipe
change (3 speech slots) still load: the slot count comes from the stored config.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from avsplit.audio import istft, stft
from avsplit.models.checkpoint import CheckpointMixin


@dataclass
class SpeechSeparatorConfig:
    """Hyper-parameters (stored with the weights).

    Attributes:
        sample_rate: Hz the network works at.
        n_fft, hop: STFT window/FFT length and hop in samples (32 ms / 16 ms at 16 kHz).
        n_speakers: speech slots (exchangeable, PIT-trained); one more slot holds the background.
        proj: width of the input projection; hidden: LSTM units per direction; layers: BLSTM depth.
        cue_channels: 0 for the blind separator; 2 for the target-speaker extractor steered
            by a face's mouth-motion cue (:func:`avsplit.cue.mouth_cue`): with a cue, slot 0
            is the cue's voice; with an all-zero cue it is the blind separator.
        residual_layers, residual_hidden: BLSTM blocks stacked on the BLSTM with a residual
            connection (``h + W * BLSTM(LayerNorm(h))``, ``residual_hidden`` units per
            direction). ``W`` starts at zero, so a network widened this way from trained
            weights starts as exactly that network (function-preserving growth, as in
            Net2Net, Chen et al. 2016, and zero-initialised residual branches, Goyal et al.
            2017): capacity is added when the learning curve of the smaller one flattens.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop: int = 256
    n_speakers: int = 2
    proj: int = 128
    hidden: int = 192
    layers: int = 2
    cue_channels: int = 0
    residual_layers: int = 0
    residual_hidden: int = 256


class _ResidualBLSTM(nn.Module):
    """``h + W * BLSTM(LayerNorm(h))`` on ``[batch, frames, width]``; ``W`` starts at zero."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.blstm = nn.LSTM(width, hidden, 1, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.proj(self.blstm(self.norm(h))[0])


class SpeechSeparator(CheckpointMixin, nn.Module):
    """Mixture -> ``n_speakers`` speech masks + 1 background mask.

    Input ``[batch, samples]`` float32 at ``config.sample_rate``; see :meth:`masks` and
    :meth:`forward` for outputs.
    """

    config_class = SpeechSeparatorConfig

    def __init__(self, config: SpeechSeparatorConfig | None = None):
        super().__init__()
        self.config = config or SpeechSeparatorConfig()
        c = self.config
        bins = c.n_fft // 2 + 1
        self.n_slots = c.n_speakers + 1
        self.input = nn.Sequential(nn.Linear(bins, c.proj), nn.LayerNorm(c.proj))
        self.blstm = nn.LSTM(c.proj, c.hidden, c.layers, batch_first=True, bidirectional=True)
        self.refine = nn.Sequential(*[_ResidualBLSTM(2 * c.hidden, c.residual_hidden)
                                      for _ in range(c.residual_layers)])
        self.output = nn.Linear(2 * c.hidden, bins * self.n_slots)
        if c.cue_channels:
            # a short temporal filter over the cue (+-64 ms: lip-to-sound lags vary), added to
            # the input projection; the last layer starts at zero so that a warm start from the
            # blind separator begins as exactly that network
            self.cue = nn.Sequential(nn.Conv1d(c.cue_channels, 64, 9, padding=4), nn.ReLU(),
                                     nn.Conv1d(64, 64, 5, padding=2), nn.ReLU(),
                                     nn.Conv1d(64, c.proj, 1))
            nn.init.zeros_(self.cue[-1].weight)
            nn.init.zeros_(self.cue[-1].bias)

    def masks(self, spec: torch.Tensor, cue: torch.Tensor | None = None) -> torch.Tensor:
        """Masks for a mixture STFT.

        Args:
            spec: ``[batch, bins, frames]`` complex STFT of the mixture.
            cue: ``[batch, cue_channels, frames]`` float mouth-motion cue on the same frames
                (:func:`avsplit.cue.mouth_cue`); ``None`` means all zeros: blind separation.
                Ignored by a network without cue input.

        Returns:
            ``[batch, slots, bins, frames]`` float in 0..1 summing to 1 over slots; slot
            ``-1`` is the background.
        """
        mag = spec.abs()
        feat = torch.log(mag + 1e-5)
        feat = feat - feat.mean(dim=(1, 2), keepdim=True)  # gain invariance
        h = self.input(feat.transpose(1, 2))
        if self.config.cue_channels:
            if cue is None:  # blind: the all-zero cue the network was trained with
                cue = torch.zeros(h.shape[0], self.config.cue_channels, h.shape[1], device=h.device)
            h = h + self.cue(cue.to(h.dtype)).transpose(1, 2)
        h, _ = self.blstm(h)
        h = self.refine(h)
        logits = self.output(h)  # [B, T, slots*bins]
        b, t, _ = logits.shape
        logits = logits.view(b, t, self.n_slots, -1).permute(0, 2, 3, 1)
        return torch.softmax(logits, dim=1)

    def forward(self, mixture: torch.Tensor, cue: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Separate.

        Args:
            mixture: ``[batch, samples]`` float32.
            cue: optional ``[batch, cue_channels, frames]`` (see :meth:`masks`).

        Returns:
            ``(sources, masks)``: ``[batch, slots, samples]`` waveforms (speech slots first,
            background last) and ``[batch, slots, bins, frames]`` masks.
        """
        c = self.config
        spec = stft(mixture, c.n_fft, c.hop)
        masks = self.masks(spec, cue)
        sources = istft(spec[:, None] * masks, c.n_fft, c.hop, mixture.shape[-1])
        return sources, masks

    def load_warm_start(self, state_dict: dict) -> None:
        """Warm start from a smaller separator's weights: the layers it lacks (the cue input,
        residual BLSTM blocks) keep their zero-output init, so the result computes the same
        masks as the network the weights come from.

        Raises:
            ValueError: the weights have other layer names or shapes than this network's
                shared layers.
        """
        try:
            missing, unexpected = self.load_state_dict(state_dict, strict=False)
        except RuntimeError as err:  # a shared layer of another shape
            raise ValueError(f"not a compatible separator: {err}") from None
        if unexpected or any(not k.startswith(("cue.", "refine.")) for k in missing):
            raise ValueError(f"not a compatible separator: missing {missing}, unexpected {unexpected}")
