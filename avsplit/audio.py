"""Signal processing: resampling, STFT/iSTFT, masks and the SI-SDR measure.

Everything here works on float32 arrays shaped ``[channels, samples]`` (numpy) or
``[batch, samples]`` (torch). No file I/O (that is :mod:`avsplit.media`).
"""

from __future__ import annotations

import numpy as np
import soxr
import torch


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample ``audio`` (``[channels, samples]`` or ``[samples]`` float32) with soxr (HQ).

    Returns float32 of the same layout; the length is ``round(samples * rate_out / rate_in)``.
    """
    if rate_in == rate_out:
        return np.asarray(audio, dtype=np.float32)
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)
    return soxr.resample(x.T, rate_in, rate_out, quality="HQ").T.astype(np.float32).copy()


def stft(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """Complex STFT with a periodic square-root Hann window, centred frames.

    Args:
        wave: ``[..., samples]`` float tensor.
        n_fft: window and FFT length in samples; ``hop``: frame hop in samples.

    Returns:
        ``[..., n_fft // 2 + 1, frames]`` complex64, ``frames = samples // hop + 1``.
    """
    shape = wave.shape
    window = torch.hann_window(n_fft, device=wave.device).sqrt()
    spec = torch.stft(wave.reshape(-1, shape[-1]), n_fft, hop, window=window, center=True,
                      return_complex=True)
    return spec.reshape(*shape[:-1], *spec.shape[-2:])


def stft_frame_times(samples: int, hop: int, rate: int) -> np.ndarray:
    """``[samples // hop + 1]`` float seconds of the centred :func:`stft` frames."""
    return np.arange(samples // hop + 1) * hop / rate


def istft(spec: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """Inverse of :func:`stft`: ``[..., bins, frames]`` complex -> ``[..., length]`` float."""
    shape = spec.shape
    window = torch.hann_window(n_fft, device=spec.device).sqrt()
    wave = torch.istft(spec.reshape(-1, *shape[-2:]), n_fft, hop, window=window, center=True,
                       length=length)
    return wave.reshape(*shape[:-2], length)


def si_sdr(estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor,
           eps: float = 1e-8) -> np.ndarray | torch.Tensor:
    """Scale-invariant SDR in dB (Le Roux et al., 2019, "SDR - half-baked or well done?").

    Args:
        estimate, reference: ``[..., samples]``; the mean is removed from both.

    Returns:
        ``[...]`` SI-SDR in dB, same array type as the inputs.
    """
    lib = torch if isinstance(estimate, torch.Tensor) else np
    est = estimate - estimate.mean(-1, keepdims=True) if lib is np else estimate - estimate.mean(-1, keepdim=True)
    ref = reference - reference.mean(-1, keepdims=True) if lib is np else reference - reference.mean(-1, keepdim=True)
    dot = (est * ref).sum(-1)[..., None]
    scale = dot / ((ref * ref).sum(-1)[..., None] + eps)
    target = scale * ref
    noise = est - target
    ratio = ((target * target).sum(-1) + eps) / ((noise * noise).sum(-1) + eps)
    return 10 * lib.log10(ratio)


def transfer_masks(masks: np.ndarray, rate_model: int, hop_model: int, rate_out: int,
                   n_fft_out: int, hop_out: int, frames_out: int, first_frame_out: int = 0,
                   first_frame_model: int = 0) -> np.ndarray:
    """Map time-frequency masks computed at the model's rate onto another STFT grid.

    The model separates at a low rate (16 kHz); stems are written at the input's rate. The
    masks are interpolated linearly in time (frame centres in seconds) and frequency (Hz);
    above the model's Nyquist frequency each frame's mask is the mean of the model's top
    octave, so a source keeps its share of the high band (fricatives follow the 4-8 kHz band).

    Args:
        masks: ``[sources, bins_model, frames_model]`` float32 in 0..1.
        rate_model, hop_model: sample rate (Hz) and hop (samples) of the masks.
        rate_out, n_fft_out, hop_out, frames_out: the target STFT grid.
        first_frame_out, first_frame_model: absolute index of the first output frame and of
            the first mask frame given (a block of a longer recording; 0 for the whole).

    Returns:
        ``[sources, n_fft_out // 2 + 1, frames_out]`` float32.
    """
    n_src, bins_m, frames_m = masks.shape
    t_model = (first_frame_model + np.arange(frames_m)) * hop_model / rate_model
    t_out = (first_frame_out + np.arange(frames_out)) * hop_out / rate_out
    f_model = np.linspace(0, rate_model / 2, bins_m)
    f_out = np.linspace(0, rate_out / 2, n_fft_out // 2 + 1)
    # time first: [sources, bins_model, frames_out]
    idx = np.interp(t_out, t_model, np.arange(frames_m))
    lo = np.floor(idx).astype(int)
    hi = np.minimum(lo + 1, frames_m - 1)
    w = (idx - lo).astype(np.float32)
    in_time = masks[:, :, lo] * (1 - w) + masks[:, :, hi] * w
    # then frequency
    fidx = np.interp(np.minimum(f_out, f_model[-1]), f_model, np.arange(bins_m))
    flo = np.floor(fidx).astype(int)
    fhi = np.minimum(flo + 1, bins_m - 1)
    fw = (fidx - flo).astype(np.float32)[None, :, None]
    out = in_time[:, flo, :] * (1 - fw) + in_time[:, fhi, :] * fw
    above = f_out > f_model[-1]
    if above.any():
        top = in_time[:, bins_m // 2:, :].mean(axis=1, keepdims=True)
        out[:, above, :] = top
    return out.astype(np.float32)


def apply_masks(mixture: np.ndarray, rate: int, masks: np.ndarray, rate_model: int,
                hop_model: int, n_fft_model: int) -> np.ndarray:
    """Apply model-rate masks to a multichannel mixture at its own rate, in one pass.

    The STFT at ``rate`` has the model's window (``n_fft_model / rate_model`` seconds) and hop
    durations, both rounded to samples. The product applies masks block by block
    (:func:`avsplit.apply.render_blocks`, same result); this one-pass form is the reference
    for tests and benchmarks.

    Args:
        mixture: ``[channels, samples]`` float32 at ``rate`` Hz.
        masks: ``[sources, bins, frames]`` float32 from the model (see :func:`transfer_masks`).

    Returns:
        ``[sources, channels, samples]`` float32; if the masks sum to one over sources, the
        outputs sum to the mixture (up to float error).
    """
    n_fft = int(2 * round(n_fft_model / rate_model / 2 * rate))
    hop = max(1, int(round(hop_model * rate / rate_model)))
    x = torch.from_numpy(np.ascontiguousarray(mixture, dtype=np.float32))
    spec = stft(x, n_fft, hop)  # [C, F, T]
    m = transfer_masks(masks, rate_model, hop_model, rate, n_fft, hop, spec.shape[-1])
    out = istft(spec[None] * torch.from_numpy(m)[:, None], n_fft, hop, mixture.shape[-1])
    return out.numpy().astype(np.float32)
