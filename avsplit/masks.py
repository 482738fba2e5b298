"""Masks of long inputs kept on disk, so that memory does not grow with the input's length.

An hour of 16 kHz audio has 450,000 STFT frames; its ``[slots, 257, frames]`` float16 masks
take 230 MB per slot, and the speech mode holds two such sets (separator and refined). A
:class:`DiskMasks` keeps them in a raw file, frame-major, and reads or writes whole frame
ranges with plain file I/O (not a memory map, whose touched pages would count as resident),
so the processing steps, which all walk the frames in blocks, see a numpy-like array.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

IN_MEMORY_BYTES = 64 << 20  # masks up to this size stay in memory (a few minutes of audio)


class DiskMasks:
    """A ``[slots, bins, frames]`` array in a temporary file, indexed by frame ranges.

    Supports ``shape``, ``dtype``, ``ndim``, ``len()``, reads ``m[a, b, f0:f1]`` (``a``, ``b``
    any numpy index of the slot and bin axes; returns a ``[.., .., f1 - f0]`` ndarray) and
    writes of whole frame ranges ``m[:, :, f0:f1] = block``. Frames are stored contiguously
    (``[frames, slots, bins]``), so a frame range is one read or write.

    Args:
        shape: ``(slots, bins, frames)``; dtype: stored type (float16).
        folder: where the file goes (deleted with :meth:`close`, or with the folder).
    """

    def __init__(self, shape: tuple[int, int, int], dtype=np.float16, folder: Path | None = None):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        fd, name = tempfile.mkstemp(prefix="masks-", suffix=".raw", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(fd, "r+b")
        slots, bins, frames = self.shape
        self._frame_bytes = slots * bins * self.dtype.itemsize
        self._file.truncate(frames * self._frame_bytes)  # sparse: reads zeros until written

    def __len__(self) -> int:
        return self.shape[0]

    def _frames(self, key) -> tuple[int, int]:
        start, stop, step = key.indices(self.shape[2])
        if step != 1:
            raise IndexError("DiskMasks reads contiguous frame ranges only")
        return start, max(start, stop)

    def _read(self, f0: int, f1: int) -> np.ndarray:
        slots, bins, _ = self.shape
        self._file.seek(f0 * self._frame_bytes)
        data = np.fromfile(self._file, self.dtype, count=(f1 - f0) * slots * bins)
        return data.reshape(f1 - f0, slots, bins).transpose(1, 2, 0)

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        a, b, c = key
        if not isinstance(c, slice):
            raise IndexError("DiskMasks: index the frame axis with a slice")
        f0, f1 = self._frames(c)
        return np.ascontiguousarray(self._read(f0, f1)[a, b])

    def __setitem__(self, key, value) -> None:
        if not (isinstance(key, tuple) and len(key) == 3 and key[0] == slice(None)
                and key[1] == slice(None) and isinstance(key[2], slice)):
            raise IndexError("DiskMasks: write whole frame ranges, m[:, :, f0:f1] = block")
        f0, f1 = self._frames(key[2])
        block = np.broadcast_to(np.asarray(value, self.dtype), self.shape[:2] + (f1 - f0,))
        self._file.seek(f0 * self._frame_bytes)
        self._file.write(np.ascontiguousarray(block.transpose(2, 0, 1)).tobytes())
        self._file.flush()

    def close(self) -> None:
        """Close and delete the file."""
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def new_masks(shape: tuple[int, int, int], dtype=np.float16, folder: Path | None = None):
    """Zeros of ``shape``: an ndarray when small (up to :data:`IN_MEMORY_BYTES`), else a
    :class:`DiskMasks` in ``folder``."""
    if int(np.prod(shape)) * np.dtype(dtype).itemsize <= IN_MEMORY_BYTES:
        return np.zeros(shape, dtype)
    return DiskMasks(shape, dtype, folder)
