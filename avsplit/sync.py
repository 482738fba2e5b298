"""``avsplit sync``: measure (and fix) the audio-to-video offset from lip motion.

The offset is the lag of best synchrony between the speech envelope of the mixture and the
jaw opening of the most synchronous face (Owens & Efros, 2018, Sec. 4's sync task; Chung &
Zisserman, 2016, SyncNet's offset search), searched over ±1 s. Speech sound naturally trails
jaw opening by a few tens of ms (the design doc measured the peak at 0 to +0.1 s on real
clips), so :data:`NATURAL_LAG_S` is subtracted before calling a clip out of sync.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from avsplit import media
from avsplit.associate import NATURAL_LAG_S, speech_envelope, sync_score
from avsplit.clip import Clip
from avsplit.engine import Engine
from avsplit.errors import AvsplitError, MediaError
from avsplit.progress import NullProgress, Progress

SEARCH_LAGS_S = np.round(np.arange(-1.0, 1.0001, 0.02), 3)
TOLERANCE_S = 0.045
ENV_RATE = 16000


def measure_offset(path: Path | str, audio_stream: int = 0, progress: Progress | None = None,
                   engine: Engine | None = None) -> dict:
    """Estimate how late the audio is relative to the picture.

    The input is opened once (:class:`~avsplit.clip.Clip`: one PyAV open for the probe and the
    video decode, one ffmpeg run for the audio). The speech envelope of the mono mixture at
    16 kHz is correlated with each face track's jaw opening over lags of ±1 s in 20 ms steps
    (:func:`avsplit.associate.sync_score`); the face with the best z-score gives the lag, and
    :data:`~avsplit.associate.NATURAL_LAG_S` is subtracted from it.

    Args:
        path: a video file with sound and a visible speaker.
        audio_stream: which audio stream (0 = the first).
        progress: a :class:`~avsplit.progress.Progress` (stage: finding faces).
        engine: the :class:`~avsplit.engine.Engine` whose face tracker reads the lips; by
            default a CPU one, closed after.

    Returns:
        ``{"input", "offset_s", "in_sync", "track_id", "r", "z", "faces"}``: ``offset_s``
        (float seconds, 20 ms resolution) > 0 means the audio comes too late; ``in_sync`` is
        ``|offset_s| <= TOLERANCE_S``; ``track_id``, ``r``, ``z`` of the face used; ``faces``
        the number of face tracks.

    Raises:
        MediaError: the file is missing or not media, or the audio stream does not exist.
        AvsplitError: no video, no audio, or no face to read the lips of.
    """
    progress = progress or NullProgress()
    own = engine is None
    if own:
        engine = Engine("cpu")
    try:
        with Clip(path, audio_stream) as clip:
            return _measure(clip, engine, progress)
    finally:
        if own:
            engine.close()


def _measure(clip: Clip, engine: Engine, progress: Progress) -> dict:
    path = clip.path
    if not clip.has_video or not clip.has_audio:
        raise AvsplitError(f"{path} needs both a video and an audio stream for sync")
    mono = clip.mono(ENV_RATE)  # first: a missing audio stream fails before the video work
    tracks = [t for t in engine.face_tracks(clip, progress) if t.kind == "face"]
    if not tracks:
        raise AvsplitError(f"{path}: no face found; sync reads the lips of a visible speaker")
    env = speech_envelope(mono, ENV_RATE)
    scores = [sync_score(mono, ENV_RATE, t, lags_s=SEARCH_LAGS_S, envelope=env, lag_prior=0.0) for t in tracks]
    best = max(scores, key=lambda s: s.z)
    offset = round(best.lag_s - NATURAL_LAG_S, 3)
    return {"input": str(path), "offset_s": offset, "in_sync": abs(offset) <= TOLERANCE_S,
            "track_id": best.track_id, "r": round(best.r, 3), "z": round(best.z, 2),
            "faces": len(tracks)}


def fix_offset(path: Path, offset_s: float, out_path: Path) -> Path:
    """Write ``out_path``: the video stream copied, the audio shifted by ``-offset_s`` seconds.

    Raises:
        MediaError: ffmpeg failed (nothing is left at ``out_path``).
    """
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix or '.mp4'}")
    cmd = [media.ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-i", f"file:{path}",
           "-itsoffset", f"{-offset_s:.3f}", "-i", f"file:{path}", "-map", "0:v:0", "-map", "1:a:0",
           "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", f"file:{tmp}"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tmp.unlink(missing_ok=True)
        last = (res.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise MediaError(f"could not write {out_path}: {last}")
    tmp.replace(out_path)
    return out_path
