"""The one apply path of every mask network: chunked mask estimation and chunked mask application.

* **Estimation** (:func:`estimate_masks`): the model-rate STFT is computed and fed to the
  network in chunks of ``chunk_s`` seconds overlapping by ``overlap_s``; for networks with
  unordered (PIT-trained) slots each chunk's slots are permuted to agree with the previous
  chunk on the overlap, and masks are cross-faded linearly there.
* **Application** (:func:`render_blocks`): masks computed at the model's rate are applied to
  every channel of the mixture at the input's own rate, block by block (``block_s`` seconds
  plus a margin of whole STFT frames on each side, kept only in the interior), with the STFT
  window and hop durations of the model's own config. Because block starts fall on the frame
  grid and the margins cover a whole window, the result equals a one-pass application up to
  float error, and memory does not grow with the input's duration.

Signals: mixture ``[channels, samples]`` float32 at the input rate, masks
``[slots, bins, frames]`` at the model rate (``frames = samples // hop + 1``).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Iterator

import numpy as np
import torch

from avsplit.audio import istft, stft, transfer_masks


def chunk_stft(wave: np.ndarray, f0: int, f1: int, n_fft: int, hop: int) -> torch.Tensor:
    """Frames ``f0:f1`` of the centred STFT (:func:`avsplit.audio.stft`) of ``wave``, computed from
    only the samples they need.

    Args:
        wave: ``[samples]`` float32.
        f0, f1: frame range (``0 <= f0 < f1 <= samples // hop + 1``).

    Returns:
        ``[n_fft // 2 + 1, f1 - f0]`` complex64, equal to ``stft(wave)[:, f0:f1]``.
    """
    margin = hop * math.ceil(n_fft / hop)
    r0 = max(0, f0 * hop - margin)
    r1 = min(len(wave), (f1 - 1) * hop + margin)
    spec = stft(torch.from_numpy(np.ascontiguousarray(wave[r0:r1], dtype=np.float32)), n_fft, hop)
    j = (f0 * hop - r0) // hop
    return spec[:, j:j + (f1 - f0)]


def estimate_masks(masks_of: Callable[..., np.ndarray], wave: np.ndarray, n_fft: int,
                   hop: int, rate: int, chunk_s: float = 30.0, overlap_s: float = 3.0,
                   unordered: int = 0, dtype=np.float16,
                   condition: np.ndarray | None = None,
                   allocate: Callable[[tuple, type], object] | None = None,
                   advance: Callable[[float], None] | None = None) -> np.ndarray:
    """Masks of a whole recording, estimated in overlapping chunks.

    Args:
        masks_of: ``[bins, frames]`` complex STFT chunk -> ``[slots, bins, frames]`` numpy masks;
            with ``condition``, called as ``masks_of(spec, condition[:, chunk frames])``.
        condition: optional ``[channels, frames]`` per-frame conditioning on the model's frame
            grid (a face's mouth-motion cue), cut into the same chunks.
        wave: ``[samples]`` float32 mono at ``rate`` Hz (the model's rate).
        n_fft, hop: the model's STFT (samples).
        chunk_s, overlap_s: chunk length and overlap in seconds.
        unordered: the first ``unordered`` slots are exchangeable (PIT): each chunk takes the
            permutation of them that agrees best with what is already written on the overlap.
        dtype: of the returned masks (float16 halves the memory of long inputs).
        allocate: ``allocate(shape, dtype)`` gives the zeroed output (default ``np.zeros``;
            :func:`avsplit.masks.new_masks` keeps long inputs' masks on disk).
        advance: called with the seconds of audio each chunk adds (progress).

    Returns:
        ``[slots, bins, frames]`` masks, cross-faded linearly on the overlaps.
    """
    n_frames = len(wave) // hop + 1
    chunk = max(int(chunk_s * rate / hop), 1)
    overlap = min(int(overlap_s * rate / hop), chunk // 2)
    out = None
    start, prev_end = 0, 0
    while start < n_frames:
        end = min(start + chunk, n_frames)
        spec = chunk_stft(wave, start, end, n_fft, hop)
        m = masks_of(spec) if condition is None else masks_of(spec, condition[:, start:end])
        if out is None:
            out = (allocate or np.zeros)((m.shape[0], m.shape[1], n_frames), dtype)
        ov = prev_end - start  # frames shared with what is already written
        if advance is not None:
            advance((end - max(start, prev_end)) * hop / rate)
        if ov > 0:
            prev = out[:, :, start:prev_end].astype(np.float32)
            if unordered > 1:
                mag = spec[:, :ov].abs().numpy()
                k = unordered
                best = min(itertools.permutations(range(k)),
                           key=lambda p: sum(np.abs((prev[i] - m[p[i], :, :ov]) * mag).sum()
                                             for i in range(k)))
                m[:k] = m[list(best)]
            fade = np.linspace(0, 1, ov, dtype=np.float32)
            m[:, :, :ov] = prev * (1 - fade) + m[:, :, :ov] * fade
            out[:, :, start:end] = m
        else:
            out[:, :, start:end] = m
        if end == n_frames:
            break
        prev_end = end
        start = end - overlap
    return out


def combine(masks: np.ndarray, weights: np.ndarray, f0: int = 0, f1: int | None = None) -> np.ndarray:
    """Weighted sums of mask slots over frames ``f0:f1``.

    ``weights`` is ``[G, slots]`` (the same for every frame) or ``[G, slots, frames]`` (per
    mask frame: decisions that change over time); returns ``[G, bins, f1 - f0]`` float32.
    """
    part = masks[:, :, f0:f1].astype(np.float32)
    w = np.asarray(weights, np.float32)
    if w.ndim == 3:
        return np.einsum("gst,sft->gft", w[:, :, f0:f1], part)
    return np.einsum("gs,sft->gft", w, part)


def output_stft(rate: int, model_rate: int, model_n_fft: int, model_hop: int) -> tuple[int, int]:
    """``(n_fft, hop)`` at ``rate`` with the model's window and hop durations (samples, even
    window)."""
    n_fft = int(2 * round(model_n_fft / model_rate / 2 * rate))
    hop = max(1, int(round(model_hop * rate / model_rate)))
    return n_fft, hop


def render_blocks(read: Callable[[int, int], np.ndarray], n_samples: int, rate: int,
                  masks: np.ndarray, weights: np.ndarray, model_rate: int, model_n_fft: int,
                  model_hop: int, block_s: float = 20.0
                  ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Apply weighted sums of model-rate masks to a mixture at its own rate, block by block.

    Args:
        read: ``(start, stop) -> [channels, n]`` float32 samples of the mixture at ``rate``.
        n_samples: the mixture's length.
        masks: ``[slots, bins, frames]`` at ``model_rate`` (hop ``model_hop`` samples).
        weights: ``[G, slots]`` or ``[G, slots, frames]`` (per mask frame): stem ``g`` gets mask
            ``sum_s weights[g, s] * masks[s]``.
        model_n_fft, model_hop: the model's STFT; the output STFT has the same durations.
        block_s: seconds of output per block (rounded to whole hops).

    Yields:
        ``(start, mixture block [channels, n], stems [G, channels, n])`` float32, consecutive
        blocks covering ``0..n_samples``; equal to a one-pass application up to float error.
    """
    n_fft, hop = output_stft(rate, model_rate, model_n_fft, model_hop)
    block = hop * max(1, int(block_s * rate / hop))
    margin = hop * (math.ceil(n_fft / hop) + 1)
    t_model = masks.shape[-1]
    for s0 in range(0, max(n_samples, 1), block):
        s1 = min(s0 + block, n_samples)
        r0, r1 = max(0, s0 - margin), min(n_samples, s1 + margin)
        x = read(r0, r1)
        if len(weights) == 0:  # nothing but the rest of the mixture
            yield s0, x[:, s0 - r0:s1 - r0], np.zeros((0, x.shape[0], s1 - s0), np.float32)
            continue
        spec = stft(torch.from_numpy(np.ascontiguousarray(x)), n_fft, hop)  # [C, F, Tb]
        first = r0 // hop
        # model frames spanning this block's output frames (times in seconds)
        t_lo = first * hop / rate
        t_hi = (first + spec.shape[-1]) * hop / rate
        m0 = max(0, int(math.floor(t_lo * model_rate / model_hop)) - 1)
        m1 = min(t_model, int(math.ceil(t_hi * model_rate / model_hop)) + 2)
        part = combine(masks, weights, m0, m1)
        m = transfer_masks(part, model_rate, model_hop, rate, n_fft, hop, spec.shape[-1],
                           first_frame_out=first, first_frame_model=m0)
        out = istft(spec[None] * torch.from_numpy(m)[:, None], n_fft, hop, r1 - r0).numpy()
        yield s0, x[:, s0 - r0:s1 - r0], out[:, :, s0 - r0:s1 - r0]


def render_slots(wave: np.ndarray, masks: np.ndarray, slots: list[int], n_fft: int, hop: int,
                 start: int, end: int) -> np.ndarray:
    """Separated waveforms of some slots over one stretch of the recording, at the model's rate.

    Args:
        wave: ``[samples]`` float32 mono at the model's rate; masks: its masks.
        slots: which mask rows to render.
        start, end: the stretch in samples (clipped to the recording).

    Returns:
        ``[len(slots), end - start]`` float32, equal to the same stretch of each whole
        separated waveform up to float error (a margin of whole STFT frames is rendered on
        each side and dropped); memory grows with the stretch, not with the recording.
    """
    n = len(wave)
    start, end = max(0, int(start)), min(n, int(end))
    if end <= start:
        return np.zeros((len(slots), 0), np.float32)
    margin = hop * math.ceil(n_fft / hop + 1)
    r0 = max(0, (start - margin) // hop * hop)
    r1 = min(n, end + margin)
    f0 = r0 // hop
    spec = stft(torch.from_numpy(np.ascontiguousarray(wave[r0:r1], dtype=np.float32)), n_fft, hop)
    f1 = min(masks.shape[-1], f0 + spec.shape[-1])
    m = combine(masks, np.eye(masks.shape[0], dtype=np.float32)[slots], f0, f1)
    waves = istft(spec[None, :, :f1 - f0] * torch.from_numpy(m), n_fft, hop, r1 - r0).numpy()
    return np.ascontiguousarray(waves[:, start - r0:end - r0], dtype=np.float32)


def slot_envelopes(wave: np.ndarray, masks: np.ndarray, slots: list[int], n_fft: int, hop: int,
                   rate: int, envelope: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                   env_hop: int, block_s: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """Envelopes of separated slots at the model's rate without holding their waveforms.

    Args:
        wave: ``[samples]`` float32 mono at ``rate`` (the model's rate); masks: its masks.
        slots: which mask rows to render.
        envelope: ``(wave, rate) -> (env [..., N], times [N])`` with one value per ``env_hop``
            samples starting at sample 0 (:func:`avsplit.synchrony.speech_envelope`, or
            :func:`avsplit.synchrony.voice_envelopes` for two envelopes from one render).

    Returns:
        ``(envelopes [len(slots), ..., N] float64, times [N] seconds)`` as the envelope of each
        whole separated waveform would give (up to float error).
    """
    step = hop * env_hop // math.gcd(hop, env_hop)
    block = step * max(1, int(block_s * rate / step))
    margin = step * math.ceil((n_fft + 4 * env_hop) / step + 1)
    n = len(wave)
    envs, times = [], []
    for s0 in range(0, max(n, 1), block):
        s1 = min(s0 + block, n)
        r0, r1 = max(0, s0 - margin), min(n, s1 + margin)
        rows = [envelope(w, rate) for w in render_slots(wave, masks, slots, n_fft, hop, r0, r1)]
        t = rows[0][1] + r0 / rate
        keep = (t >= s0 / rate - 1e-9) & (t < s1 / rate - 1e-9)
        envs.append(np.stack([r[0][..., keep] for r in rows]))
        times.append(t[keep])
    return np.concatenate(envs, axis=-1), np.concatenate(times)


def limit_total(masks: np.ndarray) -> np.ndarray:
    """Scale independent masks ``[sources, bins, frames]`` so that in no bin they take more than
    the whole mixture (divide by their sum where it exceeds one); what is left is the residual."""
    if not len(masks):
        return masks
    return (masks / np.maximum(masks.sum(axis=0, keepdims=True), 1.0)).astype(masks.dtype)
