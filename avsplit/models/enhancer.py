"""Pretrained speech enhancer: speech vs. background (not voice vs. voice).

DTLN, the dual-signal transformation LSTM network of Westhausen & Meyer, "Dual-Signal
Transformation LSTM Network for Real-Time Noise Suppression", Interspeech 2020
(arXiv:2005.07551), with the authors' pretrained weights (DNS-Challenge 2020 training data),
run as two ONNX files with our own onnxruntime code:

* stage 1 (``dtln-1``): the magnitude of a 512-sample (32 ms) rFFT frame -> 2-layer LSTM 128
  -> sigmoid mask on the 257 bins; the masked spectrum (mixture phase) goes back to a
  512-sample frame by inverse rFFT;
* stage 2 (``dtln-2``): that frame -> learned 256-dim basis (1x1 conv) -> instant layer norm
  -> 2-layer LSTM 128 -> mask -> learned synthesis basis -> a 512-sample output frame.

Frames hop by 128 samples (8 ms, 75 % overlap) and are overlap-added without a window, as in
the authors' ``real_time_processing_onnx.py``. Both LSTMs carry their states from frame to
frame, so one pass over a clip is exactly the causal streaming processing (the 384-sample
streaming delay is removed here, so the output lines up with the input). 16 kHz mono only.

It removes noise, ambience and music from speech; it does **not** separate two voices (both
are speech to it). The weights are registry entries ``dtln-1`` / ``dtln-2`` (sha256-checked,
``weights/README.md``).
"""

from __future__ import annotations

import numpy as np

from avsplit.errors import AvsplitError

RATE = 16000
BLOCK = 512
SHIFT = 128


class SpeechEnhancer:
    """DTLN speech enhancer (CPU, onnxruntime).

    Args:
        threads: onnxruntime intra-op threads per session (default 1; the per-frame models are
            tiny, more threads mostly add overhead).
        level_dbfs: the clip is scaled to this RMS level (dB re full scale) before the network
            and scaled back after, because the pretrained model sees raw magnitudes and was
            trained on speech mixtures near -25 dBFS; ``None`` feeds the samples unchanged.

    Raises:
        AvsplitError / WeightsUnavailableError: missing or corrupt weights files.
    """

    rate = RATE

    def __init__(self, threads: int = 1, level_dbfs: float | None = -25.0) -> None:
        import onnxruntime as ort

        from avsplit.models.registry import MODELS, weights_path

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        self._sessions = []
        for name in ("dtln-1", "dtln-2"):
            path = weights_path(name)
            try:
                sess = ort.InferenceSession(str(path), sess_options=opts,
                                            providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types
                raise AvsplitError(f"weights file {path} is not a model onnxruntime can load "
                                   f"({str(exc).splitlines()[0][:120]})") from None
            inputs = sess.get_inputs()
            outputs = [o.name for o in sess.get_outputs()]
            state_shape = [d if isinstance(d, int) else 1 for d in inputs[1].shape]
            self._sessions.append((sess, inputs[0].name, inputs[1].name, outputs, state_shape))
        self.level_dbfs = level_dbfs
        self.model_id = [{"name": n, "file": MODELS[n].file, "sha256": MODELS[n].sha256}
                         for n in ("dtln-1", "dtln-2")]

    def enhance(self, wave: np.ndarray) -> np.ndarray:
        """The speech in ``wave``, background removed.

        Args:
            wave: ``[samples]`` float32 mono at 16 kHz, any length (linear amplitude, full scale
                1.0).

        Returns:
            ``[samples]`` float32, the same length and time alignment as ``wave``: the speech
            estimate, at the input's level (the level normalisation is undone). One causal pass
            with the LSTM states carried over all frames, the end flushed with zeros.
        """
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim != 1:
            raise AvsplitError(f"SpeechEnhancer.enhance wants a mono [samples] array, got shape {x.shape}")
        n = x.shape[0]
        if n == 0:
            return np.zeros(0, np.float32)
        gain = 1.0
        if self.level_dbfs is not None:
            rms = float(np.sqrt(float(np.dot(x, x)) / n))  # no float64 copy of long inputs
            if rms > 1e-6:
                gain = 10 ** (self.level_dbfs / 20) / rms
        # 384 leading zeros = the zero-initialised streaming buffer; block b covers
        # x[(b - 3) * 128 : (b + 1) * 128]. Enough blocks that every sample of x is complete.
        lead = BLOCK - SHIFT
        blocks = (lead + n - 1) // SHIFT + 1
        out_full = np.zeros((blocks + 3) * SHIFT, np.float32)
        ola = out_full.reshape(-1, SHIFT)  # overlap-add view, no synthesis window
        sess1, in_x1, in_s1, outs1, shape1 = self._sessions[0]
        sess2, in_x2, in_s2, outs2, shape2 = self._sessions[1]
        state1 = np.zeros(shape1, np.float32)
        state2 = np.zeros(shape2, np.float32)
        chunk = 2048  # frames per numpy batch: memory stays flat on long inputs
        for c0 in range(0, blocks, chunk):
            c1 = min(c0 + chunk, blocks)
            # the padded signal (``lead`` zeros, then x * gain, then zeros) over these frames
            p0, p1 = c0 * SHIFT, (c1 - 1) * SHIFT + BLOCK
            seg = np.zeros(p1 - p0, np.float32)
            a, b = max(p0, lead), min(p1, lead + n)
            if b > a:
                seg[a - p0:b - p0] = x[a - lead:b - lead] * gain
            frames = np.lib.stride_tricks.sliding_window_view(seg, BLOCK)[::SHIFT]
            spec = np.fft.rfft(frames, axis=-1)
            mag = np.abs(spec).astype(np.float32)
            mask = np.empty_like(mag)
            for j in range(c1 - c0):
                m, state1 = sess1.run(outs1, {in_x1: mag[j].reshape(1, 1, -1), in_s1: state1})
                mask[j] = m.reshape(-1)
            est = np.fft.irfft(spec * mask, n=BLOCK, axis=-1).astype(np.float32)
            out = np.empty_like(est)
            for j in range(c1 - c0):
                y, state2 = sess2.run(outs2, {in_x2: est[j].reshape(1, 1, -1), in_s2: state2})
                out[j] = y.reshape(-1)
            for k in range(BLOCK // SHIFT):
                ola[c0 + k:c1 + k] += out[:, k * SHIFT:(k + 1) * SHIFT]
        result = out_full[lead:lead + n]
        result /= gain
        return result

    def speech_mask(self, wave: np.ndarray, n_fft: int = 512, hop: int = 256,
                    enhanced: np.ndarray | None = None) -> np.ndarray:
        """A speech mask on our STFT grid: ``|STFT(enhanced)| / |STFT(wave)|`` clipped to [0, 1].

        Args:
            wave: ``[samples]`` float32 mono mixture at 16 kHz.
            n_fft, hop: the STFT grid (:func:`avsplit.audio.stft`: centred, square-root Hann),
                in samples at 16 kHz.
            enhanced: :meth:`enhance` of ``wave`` when already computed (else it is computed).

        Returns:
            ``[n_fft // 2 + 1, samples // hop + 1]`` float32 in 0..1; the background mask is
            ``1 - mask``. Bins where the mixture is silent (below 1e-8) get 0.
        """
        import torch

        from avsplit.audio import stft

        x = np.asarray(wave, dtype=np.float32)
        if enhanced is None:
            enhanced = self.enhance(x)
        if enhanced.shape != x.shape:
            raise AvsplitError(f"enhanced has shape {enhanced.shape}, the mixture {x.shape}")
        both = torch.from_numpy(np.stack([x, np.asarray(enhanced, np.float32)]))
        mags = stft(both, n_fft, hop).abs().numpy()
        mix, est = mags[0], mags[1]
        mask = np.where(mix > 1e-8, est / np.maximum(mix, 1e-8), 0.0)
        return np.clip(mask, 0.0, 1.0).astype(np.float32)
