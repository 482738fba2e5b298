"""Run a mask network over a whole recording in overlapping chunks.

Long inputs are cut into chunks of ``chunk_s`` seconds that overlap by ``overlap_s``; the
speech slots of each chunk are permuted to best match the previous chunk on the overlap (the
network's slot order is arbitrary, PIT-trained), and masks are cross-faded linearly there.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from avsplit.audio import apply_masks, istft, resample, stft


def _chunked_masks(masks_of, spec: torch.Tensor, chunk: int, overlap: int, align=None) -> np.ndarray:
    """Overlap-add masks over chunks of frames.

    Args:
        masks_of: ``spec[:, start:end] -> [slots, bins, frames]`` numpy masks of one chunk.
        spec: ``[bins, frames]`` complex STFT.
        chunk, overlap: chunk length and overlap in frames.
        align: optional ``(previous, current, magnitude) -> current`` that reorders the slots of
            a chunk to agree with what is already written on the overlap.

    Returns:
        ``[slots, bins, frames]`` float32, cross-faded linearly on the overlaps.
    """
    n_frames = spec.shape[-1]
    if n_frames <= chunk:
        return masks_of(spec)
    out = None
    start, prev_end = 0, 0
    while start < n_frames:
        end = min(start + chunk, n_frames)
        m = masks_of(spec[:, start:end])
        if out is None:
            out = np.zeros((m.shape[0], spec.shape[0], n_frames), np.float32)
        ov = prev_end - start  # frames shared with what is already written
        if ov > 0:
            if align is not None:
                mag = spec[:, start:prev_end].abs().cpu().numpy()
                m = align(out[:, :, start:prev_end], m[:, :, :ov], mag, m)
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
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)).to(device)
    spec = stft(x[None], cfg.n_fft, cfg.hop)[0]  # [F, T]
    chunk = max(int(chunk_s * cfg.sample_rate / cfg.hop), 1)
    overlap = min(int(overlap_s * cfg.sample_rate / cfg.hop), chunk // 2)
    k = cfg.n_speakers

    def align(prev_masks, cur_masks, mag, m):
        # the speech slots are unordered (PIT): take the permutation that agrees best
        prev = prev_masks[:k] * mag
        cur = cur_masks[:k] * mag
        best = min(itertools.permutations(range(k)),
                   key=lambda p: sum(np.abs(prev[i] - cur[p[i]]).sum() for i in range(k)))
        m[:k] = m[list(best)]
        return m

    return _chunked_masks(lambda s: model.masks(s[None])[0].cpu().numpy(), spec, chunk, overlap,
                          align)


@torch.no_grad()
def query_masks(model, mixture: np.ndarray, rate: int, labels: list[str],
                chunk_s: float = 30.0, overlap_s: float = 3.0, device: str = "cpu") -> np.ndarray:
    """Masks of the asked-for instruments at the model's rate.

    The mixture is downmixed and resampled to the model's rate and each label's mask is
    computed in overlapping chunks (cross-faded).

    Args:
        model: a :class:`avsplit.models.instruments.QuerySeparator` (eval mode).
        mixture: ``[channels, samples]`` float32 at ``rate`` Hz.
        labels: instrument labels (``avsplit.labels``); repeats are allowed.

    Returns:
        ``[len(labels), bins, frames]`` float32 masks in 0..1 (independent per label: they
        need not sum to one), raised to ``model.config.mask_power``.

    Raises:
        ValueError: a label the model does not know.
    """
    cfg = model.config
    query = model.label_index(labels).to(device)
    mono = resample(mixture.mean(axis=0), rate, cfg.sample_rate)
    x = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)).to(device)
    spec = stft(x[None], cfg.n_fft, cfg.hop)[0]
    chunk = max(int(chunk_s * cfg.sample_rate / cfg.hop), 1)
    overlap = min(int(overlap_s * cfg.sample_rate / cfg.hop), chunk // 2)

    def masks_of(s: torch.Tensor) -> np.ndarray:
        batch = s[None].expand(len(labels), -1, -1)
        return model.masks(batch, query).cpu().numpy() ** cfg.mask_power

    return _chunked_masks(masks_of, spec, chunk, overlap)


def limit_total(masks: np.ndarray) -> np.ndarray:
    """Scale independent masks ``[sources, bins, frames]`` so that in no bin they take more than
    the whole mixture (divide by their sum where it exceeds one); what is left is the residual."""
    if not len(masks):
        return masks
    return masks / np.maximum(masks.sum(axis=0, keepdims=True), 1.0)


def separate_queries(model, mixture: np.ndarray, rate: int, labels: list[str],
                     device: str = "cpu", exclusive: bool = True) -> np.ndarray:
    """Separate the stems of the asked-for instruments from a recording.

    :func:`query_masks` on the distinct labels, then (``exclusive``) :func:`limit_total` as
    ``avsplit separate --query`` does, and each mask is applied to every channel of the mixture
    at its own rate (:func:`avsplit.audio.apply_masks`), so stems keep the input's rate,
    channels and length.

    Args:
        model, mixture, rate, labels: as :func:`query_masks`; a repeated label gets the same stem.
        exclusive: limit the masks' sum to one (stems never add up to more than the mixture).

    Returns:
        ``[len(labels), channels, samples]`` float32 stems.

    Raises:
        ValueError: a label the model does not know.
    """
    cfg = model.config
    distinct = list(dict.fromkeys(labels))
    masks = query_masks(model, mixture, rate, distinct, device=device)
    if exclusive:
        masks = limit_total(masks)
    stems = apply_masks(mixture, rate, masks, cfg.sample_rate, cfg.hop,
                        window_s=cfg.n_fft / cfg.sample_rate)
    return stems[[distinct.index(lab) for lab in labels]]


def masks_to_waves(model, wave: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Apply masks at the model's rate: ``[slots, bins, frames]`` -> ``[slots, samples]`` float32."""
    cfg = model.config
    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    spec = stft(x, cfg.n_fft, cfg.hop)
    return istft(spec[None] * torch.from_numpy(masks), cfg.n_fft, cfg.hop, len(wave)).numpy()
