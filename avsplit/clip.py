"""One input clip, probed once and decoded once, with what the modes ask of it cached.

A :class:`Clip` opens its file once with PyAV (probe; the same open container later decodes
the frames) and decodes the chosen audio stream once with ffmpeg into a temporary raw float32
file, which is read back in blocks: a long input is never held whole in memory at its own
rate. Derived signals are computed once per clip and cached: the mono downmix at a model's
rate (:meth:`Clip.mono`), its STFT by ``(rate, n_fft, hop)`` (:meth:`Clip.stft`), and anything
a mode stores in :attr:`Clip.cache` (face tracks, analysis frames).

Data flow: media -> **clip** -> models / vision -> association -> outputs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from avsplit import media
from avsplit.errors import MediaError
from avsplit.structures import MediaInfo

ANALYSIS_MAX_SIDE = 640  # longer side (pixels) of the frames the vision models look at


class Clip:
    """An input file and its decoded audio.

    Args:
        path: a video or audio file.
        audio_stream: which audio stream to use (0 = the first).

    Attributes:
        path: the input; info: its :class:`~avsplit.structures.MediaInfo`;
        audio_stream: the stream used; cache: a dict modes use to keep per-clip results
            (face tracks, frames) so that nothing is computed twice.

    Raises:
        MediaError: the file is missing or not media (at construction); the audio stream does
            not exist or cannot be decoded (on first use of the audio).

    Use as a context manager (or call :meth:`close`): it holds an open container and a
    temporary folder.
    """

    def __init__(self, path: Path | str, audio_stream: int = 0):
        self.path = Path(path)
        self.audio_stream = audio_stream
        self._container = media.open_container(self.path)
        try:
            self.info: MediaInfo = media.describe(self._container, self.path)
        except BaseException:
            self._container.close()
            raise
        self._tmp: Path | None = None
        self._raw: Path | None = None
        self._samples = 0
        self._mono: dict[int, np.ndarray] = {}
        self._stft: dict[tuple[int, int, int], object] = {}
        self.cache: dict = {}

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Close the container and delete the decoded audio."""
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "Clip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- audio ---------------------------------------------------------------------------
    @property
    def has_audio(self) -> bool:
        return self.info.has_audio

    @property
    def has_video(self) -> bool:
        return self.info.has_video

    def _decode(self) -> None:
        if self._raw is not None:
            return
        if not self.info.audio:
            raise MediaError(f"{self.path} has no audio stream; give a file with sound.")
        self._tmp = Path(tempfile.mkdtemp(prefix="avsplit-clip-"))
        raw = self._tmp / "audio.f32"
        self._samples = media.decode_audio_file(self.path, self.info, self.audio_stream, raw)
        self._raw = raw

    @property
    def rate(self) -> int:
        """Sample rate of the audio stream (Hz)."""
        if not self.info.audio or not 0 <= self.audio_stream < len(self.info.audio):
            self._decode()  # raises the right MediaError
        return int(self.info.audio[self.audio_stream].sample_rate)

    @property
    def channels(self) -> int:
        """Channel count of the audio stream."""
        self._decode()
        return int(self.info.audio[self.audio_stream].channels or 2)

    @property
    def samples(self) -> int:
        """Decoded length per channel (samples at :attr:`rate`)."""
        self._decode()
        return self._samples

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``start:stop`` of the decoded audio: ``[channels, n]`` float32 (clipped to
        the audio's extent, so ``n`` may be shorter than asked)."""
        self._decode()
        stop = self._samples if stop is None else min(stop, self._samples)
        start = max(0, min(start, stop))
        c = self.channels
        with open(self._raw, "rb") as f:
            f.seek(start * c * 4)
            data = np.fromfile(f, np.float32, count=(stop - start) * c)
        return data.reshape(-1, c).T.copy()

    def mono(self, rate: int) -> np.ndarray:
        """Mono downmix at ``rate`` Hz, ``[round(samples * rate / self.rate)]`` float32
        (resampled in blocks with soxr HQ; cached per rate)."""
        if rate not in self._mono:
            import soxr

            n_out = int(round(self.samples * rate / self.rate))
            y = np.zeros(n_out, np.float32)
            block, pos = 1 << 20, 0
            stream = (None if rate == self.rate else
                      soxr.ResampleStream(self.rate, rate, 1, dtype="float32", quality="HQ"))
            for s in range(0, max(self.samples, 1), block):
                x = self.read(s, s + block).mean(axis=0).astype(np.float32)
                if stream is not None:
                    x = stream.resample_chunk(x, last=s + block >= self.samples)
                x = x[: n_out - pos]
                y[pos:pos + len(x)] = x
                pos += len(x)
            self._mono[rate] = np.ascontiguousarray(y[:n_out])
        return self._mono[rate]

    def stft(self, rate: int, n_fft: int, hop: int):
        """Complex STFT (:func:`avsplit.audio.stft`) of :meth:`mono` at ``rate``:
        ``[n_fft // 2 + 1, frames]`` complex64 torch tensor, cached per ``(rate, n_fft, hop)``."""
        key = (rate, n_fft, hop)
        if key not in self._stft:
            import torch

            from avsplit.audio import stft

            self._stft[key] = stft(torch.from_numpy(self.mono(rate)), n_fft, hop)
        return self._stft[key]

    def new_masks(self, shape: tuple[int, int, int], dtype=np.float16):
        """Zeroed masks for this clip (:func:`avsplit.masks.new_masks`): in memory when small,
        else in a file of the clip's temporary folder (deleted with the clip)."""
        from avsplit.masks import new_masks

        self._decode()
        return new_masks(shape, dtype, self._tmp)

    # -- pictures ------------------------------------------------------------------------
    def frames(self, max_side: int | None = ANALYSIS_MAX_SIDE, fps: float | None = None
               ) -> Iterator[tuple[float, np.ndarray]]:
        """Decode the video from the clip's open container (see :func:`avsplit.media.iter_frames`):
        ``(t seconds, [H, W, 3] uint8 RGB)`` with real timestamps.

        Raises:
            MediaError: no video stream, or it cannot be decoded.
        """
        if self._container is None:
            raise MediaError(f"{self.path}: the clip is closed")
        return media.iter_frames(self.path, max_side=max_side, fps=fps, container=self._container)
