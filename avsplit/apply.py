"""Run a mask network over a whole recording in overlapping chunks.

Long inputs are cut into chunks of ``chunk_s`` seconds that overlap by ``overlap_s``; the
speech slots of each chunk are permuted to best match the previous chunk on the overlap (the
network's slot order is arbitrary, PIT-trained), and masks are cross-faded linearly there.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from avsplit.audio import istft, stft


@torch.no_grad()
def separate_masks(model, wave: np.ndarray, chunk_s: float = 30.0, overlap_s: float = 3.0,
                   device: str = "cpu") -> np.ndarray:
    """Masks of a mono recording at the model's rate.

    Args:
        model: a :class:`avsplit.models.speech.SpeechSeparator` (eval mode).
        wave: ``[samples]`` float32 at ``model.config.sample_rate``.
        chunk_s, overlap_s: chunk length and overlap in seconds.

    Returns:
        ``[slots, bins, frames]`` float32 masks summing to one over slots (speech slots first,
        background last); ``frames = samples // hop + 1``.
    """
    cfg = model.config
    hop = cfg.hop
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(device)
    spec = stft(x[None], cfg.n_fft, hop)[0]  # [F, T]
    n_frames = spec.shape[-1]
    chunk = max(int(chunk_s * cfg.sample_rate / hop), 1)
    overlap = min(int(overlap_s * cfg.sample_rate / hop), chunk // 2)
    if n_frames <= chunk:
        return model.masks(spec[None])[0].cpu().numpy()
    k = cfg.n_speakers
    out = np.zeros((k + 1, spec.shape[0], n_frames), np.float32)
    start, prev_end = 0, 0
    while start < n_frames:
        end = min(start + chunk, n_frames)
        m = model.masks(spec[None, :, start:end])[0].cpu().numpy()
        ov = prev_end - start  # frames shared with what is already written
        if ov > 0:
            # choose the slot permutation that agrees best with the previous chunk
            mag = spec[:, start:prev_end].abs().cpu().numpy()
            prev = out[:k, :, start:prev_end] * mag
            cur = m[:k, :, :ov] * mag
            best = min(itertools.permutations(range(k)),
                       key=lambda p: sum(np.abs(prev[i] - cur[p[i]]).sum() for i in range(k)))
            m[:k] = m[list(best)]
            fade = np.linspace(0, 1, ov, dtype=np.float32)
            out[:, :, start:prev_end] = out[:, :, start:prev_end] * (1 - fade) + m[:, :, :ov] * fade
            out[:, :, prev_end:end] = m[:, :, ov:]
        else:
            out[:, :, start:end] = m
        if end == n_frames:
            break
        prev_end = end
        start = end - overlap
    return out


def masks_to_waves(model, wave: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Apply masks at the model's rate: ``[slots, bins, frames]`` -> ``[slots, samples]`` float32."""
    cfg = model.config
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    spec = stft(x, cfg.n_fft, cfg.hop)
    return istft(spec[None] * torch.from_numpy(masks), cfg.n_fft, cfg.hop, len(wave)).numpy()
