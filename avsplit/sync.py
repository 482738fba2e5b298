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
from avsplit.associate import speech_envelope, sync_score
from avsplit.audio import resample
from avsplit.errors import AvsplitError, MediaError
from avsplit.pipelines import NullProgress, Progress, face_tracks

NATURAL_LAG_S = 0.04
SEARCH_LAGS_S = np.round(np.arange(-1.0, 1.0001, 0.02), 3)
TOLERANCE_S = 0.045


def measure_offset(path: Path, audio_stream: int = 0, progress: Progress | None = None) -> dict:
    """Estimate how late the audio is relative to the picture.

    Returns:
        ``{"input", "offset_s", "in_sync", "track_id", "r", "z", "faces"}``; ``offset_s`` > 0
        means the audio comes too late (seconds, 20 ms resolution).

    Raises:
        AvsplitError: no video, no audio, or no face to read the lips of.
    """
    progress = progress or NullProgress()
    path = Path(path)
    info = media.probe(path)
    if not info.has_video or not info.has_audio:
        raise AvsplitError(f"{path} needs both a video and an audio stream for sync")
    audio, rate = media.load_audio(path, stream=audio_stream, info=info)
    tracks, _ = face_tracks(path, info, progress)
    if not tracks:
        raise AvsplitError(f"{path}: no face found; sync reads the lips of a visible speaker")
    mono = resample(audio.mean(axis=0), rate, 16000)
    env = speech_envelope(mono, 16000)
    scores = [sync_score(mono, 16000, t, lags_s=SEARCH_LAGS_S, envelope=env) for t in tracks]
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
