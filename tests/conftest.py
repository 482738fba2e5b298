"""Shared fixtures: small generated media files (never downloaded, never from a dataset).

Media is made with the ffmpeg binary (the one on PATH, else imageio-ffmpeg's) from lavfi
sources, or with numpy + soundfile. Fixtures that encode video are session-scoped; treat the
files they return as read-only.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def _ffmpeg_exe() -> str:
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="session")
def make_media():
    """A function ``make_media(out_path, *ffmpeg_args) -> Path`` running
    ``ffmpeg -y -loglevel error <args> out_path`` (fails the test with ffmpeg's message)."""

    def run(out: Path, *args: str) -> Path:
        cmd = [_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", *map(str, args), str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            pytest.fail(f"could not make {out}: {res.stderr.strip()}")
        return Path(out)

    return run


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """A session-wide folder for the generated media."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def video_with_audio(media_dir, make_media) -> Path:
    """mp4, 2 s: H.264 320x240 at 25 fps (testsrc2, 50 frames) + stereo 44.1 kHz AAC 440 Hz sine."""
    return make_media(media_dir / "video_with_audio.mp4",
                      "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                      "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
                      "-ac", "2", "-t", "2", "-c:v", "libx264", "-preset", "veryfast",
                      "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k")


@pytest.fixture(scope="session")
def video_no_audio(media_dir, make_media) -> Path:
    """mp4, 2 s: H.264 320x240 at 25 fps, no audio stream."""
    return make_media(media_dir / "video_no_audio.mp4",
                      "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "2",
                      "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")


AUDIO_WAV_RATE = 48000


@pytest.fixture(scope="session")
def audio_wav(media_dir) -> Path:
    """WAV, float32, stereo, 2 s at 48 kHz (96000 samples): left 330 Hz sine at 0.5,
    right seeded white noise at 0.1. Read it back with ``soundfile`` for the samples."""
    n = 2 * AUDIO_WAV_RATE
    t = np.arange(n) / AUDIO_WAV_RATE
    left = 0.5 * np.sin(2 * np.pi * 330 * t)
    right = 0.1 * np.random.default_rng(0).standard_normal(n)
    audio = np.stack([left, right]).astype(np.float32)
    path = media_dir / "audio.wav"
    sf.write(path, audio.T, AUDIO_WAV_RATE, subtype="FLOAT")
    return path


@pytest.fixture(scope="session")
def not_media(media_dir) -> Path:
    """A text file named ``clip.mp4``."""
    path = media_dir / "clip.mp4"
    path.write_text("this is not a video\n" * 10)
    return path
