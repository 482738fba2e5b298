"""The separator interface: a mask network with its STFT, applied through :mod:`avsplit.apply`.

As open-unmix separates the network (``OpenUnmix``) from the thing that separates audio with
it (``Separator``), a network file in :mod:`avsplit.models` only defines the model (a
``config`` with ``sample_rate``, ``n_fft``, ``hop`` and a ``masks(spec, ...)`` method), and
:class:`Separator` does everything around it the same way for every network: the model-rate
mono signal, chunked mask estimation with overlap-add (with PIT slot alignment for
exchangeable slots), and chunked application at the input rate taking the STFT from the
model's own config. A new separator is one network file plus one registry row
(:data:`avsplit.models.registry.MODELS`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from avsplit import apply
from avsplit.audio import resample

INFERENCE_THREADS = 1


class Separator:
    """A loaded mask network on a device.

    Args:
        model: the network (eval mode) with ``config.sample_rate`` (Hz), ``config.n_fft``,
            ``config.hop`` (samples) and ``masks(spec [B, F, T] complex, *condition)`` ->
            ``[B, slots, F, T]`` in 0..1.
        model_id: ``{"name", "file", "sha256"}`` for manifests.
        device: ``"cpu"`` or ``"cuda"``.

    Attributes:
        unordered: how many leading slots are exchangeable (the speech slots of a PIT-trained
            network; 0 for query-conditioned networks).
    """

    def __init__(self, model, model_id: dict, device: str = "cpu"):
        self.model = model
        self.model_id = model_id
        self.device = device
        self.config = model.config
        self.unordered = int(getattr(model.config, "n_speakers", 0))

    @property
    def takes_cue(self) -> bool:
        """Whether the network is steered by a face's mouth-motion cue (slot 0 = that voice)."""
        return int(getattr(self.config, "cue_channels", 0)) > 0

    @property
    def rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def n_fft(self) -> int:
        return int(self.config.n_fft)

    @property
    def hop(self) -> int:
        return int(self.config.hop)

    def mono(self, mixture: np.ndarray, rate: int) -> np.ndarray:
        """``[channels, samples]`` (or ``[samples]``) at ``rate`` -> mono ``[samples']`` at the
        model's rate (for arrays; clips give :meth:`avsplit.clip.Clip.mono`)."""
        x = mixture.mean(axis=0) if mixture.ndim == 2 else mixture
        return resample(x, rate, self.rate)

    @torch.no_grad()
    def masks(self, wave: np.ndarray, labels: list[str] | None = None, chunk_s: float = 30.0,
              overlap_s: float = 3.0, cue: np.ndarray | None = None,
              allocate=None, advance=None) -> np.ndarray:
        """Masks of a recording at the model's rate.

        Args:
            wave: ``[samples]`` float32 mono at :attr:`rate`.
            labels: for a query-conditioned network, one mask row per label (repeats allowed);
                raised to ``config.mask_power`` when the config has one. All distinct labels
                are asked at once (:class:`avsplit.models.instruments.EnsembleSeparator`): the
                masks compete, so they depend on which labels are asked together.
            chunk_s, overlap_s: chunking (seconds).
            cue: for a cue-steered extractor (:attr:`takes_cue`), ``[2, frames]`` float32 on the
                model's frame grid (:func:`avsplit.cue.mouth_cue`): slot 0 is then the cued
                voice and no slot is permuted between chunks.
            allocate, advance: see :func:`avsplit.apply.estimate_masks` (masks on disk for
                long inputs; progress in seconds of audio).

        Returns:
            ``[slots or len(labels), bins, frames]`` float16, ``frames = samples // hop + 1``.

        Raises:
            ValueError: a label the network does not know.
        """
        power = float(getattr(self.config, "mask_power", 1.0))
        if labels is not None:
            # competing masks: every distinct label in one pass; a repeated label repeats its row
            distinct = list(dict.fromkeys(labels))
            query = self.model.label_index(distinct).to(self.device)[None]
            rows = [distinct.index(lab) for lab in labels]

            def masks_of(spec: torch.Tensor) -> np.ndarray:
                m = self.model.masks(spec.to(self.device)[None], query)[0].cpu().numpy()
                return m[rows] ** power
        elif cue is not None:
            if not self.takes_cue:
                raise ValueError(f"{self.model_id.get('name')} takes no mouth-motion cue")

            def masks_of(spec: torch.Tensor, part: np.ndarray) -> np.ndarray:
                c = torch.from_numpy(np.ascontiguousarray(part, np.float32)).to(self.device)[None]
                return self.model.masks(spec.to(self.device)[None], c)[0].cpu().numpy()
        else:
            def masks_of(spec: torch.Tensor) -> np.ndarray:
                return self.model.masks(spec.to(self.device)[None])[0].cpu().numpy()
        if labels is not None and not labels:
            frames = len(wave) // self.hop + 1
            return np.zeros((0, self.n_fft // 2 + 1, frames), np.float16)
        threads = torch.get_num_threads()
        if self.device == "cpu":
            # a recurrent network is thousands of tiny sequential ops: one thread is as fast on
            # an idle machine and avoids a 100x slowdown from spinning thread barriers on a
            # busy one (measured: 30 s of audio in 0.2 s with 1 thread, 60 s with 2 threads
            # next to another process)
            torch.set_num_threads(INFERENCE_THREADS)
        try:
            return apply.estimate_masks(masks_of, wave, self.n_fft, self.hop, self.rate, chunk_s,
                                        overlap_s,
                                        unordered=self.unordered if labels is None and cue is None else 0,
                                        condition=cue, allocate=allocate, advance=advance)
        finally:
            torch.set_num_threads(threads)

    def render(self, read, n_samples: int, rate: int, masks: np.ndarray, weights: np.ndarray,
               block_s: float = 20.0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Stems at the input rate, block by block (:func:`avsplit.apply.render_blocks` with
        this model's STFT): stem ``g`` gets mask ``sum_s weights[g, s] * masks[s]``."""
        return apply.render_blocks(read, n_samples, rate, masks, weights, self.rate, self.n_fft,
                                   self.hop, block_s)

    def apply(self, mixture: np.ndarray, rate: int, masks: np.ndarray,
              weights: np.ndarray | None = None) -> np.ndarray:
        """All stems of an in-memory mixture: ``[channels, samples]`` -> ``[G, channels, samples]``
        float32 (``weights`` default: one stem per mask row)."""
        weights = np.eye(len(masks), dtype=np.float32) if weights is None else weights
        out = np.zeros((len(weights),) + mixture.shape, np.float32)
        for s0, _, stems in self.render(lambda a, b: mixture[:, a:b], mixture.shape[1], rate,
                                        masks, weights):
            out[:, :, s0:s0 + stems.shape[-1]] = stems
        return out

    def slot_waves(self, wave: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Model-rate waveforms of every slot, ``[slots, samples]`` float32 (short inputs)."""
        return self.apply(wave[None], self.rate, masks)[:, 0]
