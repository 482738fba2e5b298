"""``avsplit localize`` and the motion/audio map, on a generated clip.

The clip (4 s, 320x240, 25 fps): a white square in the LEFT half moves exactly while a 440 Hz
tone burst sounds and stands still otherwise; a distractor square in the RIGHT half moves only
in the silences. No face anywhere, so only the motion map can place the sound.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avsplit import media
from avsplit.associate import speech_envelope
from avsplit.errors import AvsplitError
from avsplit.vision.motion import audio_motion_map, motion_energy, sliding_audio_motion_map

BURSTS = [(0.3, 0.7), (1.5, 2.1), (2.7, 3.0), (3.4, 3.8)]
FPS, W, H, DURATION, RATE = 25, 320, 240, 4.0, 16000


def _in_burst(t: float, margin: float = 0.0) -> bool:
    return any(a + margin <= t < b - margin for a, b in BURSTS)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The generated clip (see the module docstring); read-only."""
    folder = tmp_path_factory.mktemp("localize")
    n = int(DURATION * RATE)
    t = np.arange(n) / RATE
    gate = np.array([_in_burst(x) for x in t[::160]], float).repeat(160)[:n]
    ramp = np.hanning(160) / np.hanning(160).sum()
    gate = np.convolve(gate, ramp, "same")
    wav = folder / "tone.wav"
    sf.write(wav, (0.5 * gate * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)
    out = folder / "clip.mp4"
    with media.VideoWriter(out, W, H, FPS, audio_from=wav) as writer:
        for k in range(int(DURATION * FPS)):
            tk = k / FPS
            frame = np.zeros((H, W, 3), np.uint8)
            dx, dy = int(25 * np.sin(2 * np.pi * 4 * tk)), int(25 * np.cos(2 * np.pi * 3 * tk))
            (lx, ly), (rx, ry) = (60, 100), (220, 100)
            if _in_burst(tk):
                lx, ly = lx + dx, ly + dy
            else:
                rx, ry = rx + dx, ry + dy
            frame[ly:ly + 30, lx:lx + 30] = 255
            frame[ry:ry + 30, rx:rx + 30] = 255
            writer.write(frame)
    return out


@pytest.fixture(scope="module")
def localized(clip, tmp_path_factory):
    """``(result dict, overlay path)`` of one ``localize_file`` run with an overlay."""
    from avsplit.localize import localize_file

    overlay = tmp_path_factory.mktemp("localize_out") / "overlay.mp4"
    return localize_file(clip, overlay_path=overlay), overlay


def test_motion_energy_shapes_and_inputs(clip):
    frames, times = media.load_frames(clip, max_side=640)
    energy, t = motion_energy(frames, times)
    assert energy.dtype == np.float32 and energy.ndim == 3
    assert energy.shape[0] == len(frames) == len(t)
    assert energy.shape[1:] == (10, 13)  # 240/24, 320/24 rounded
    assert np.all(energy >= 0)
    energy2, t2 = motion_energy(media.iter_frames(clip, max_side=640))  # (t, frame) pairs
    np.testing.assert_allclose(energy2, energy)
    np.testing.assert_allclose(t2, times)


def test_motion_map_peaks_where_it_moves_with_the_sound(clip):
    frames, times = media.load_frames(clip, max_side=640)
    energy, times = motion_energy(frames, times)
    audio, rate = media.load_audio(clip, sample_rate=RATE)
    env, env_t = speech_envelope(audio.mean(axis=0), rate)
    corr = audio_motion_map(energy, times, env, env_t)
    assert corr.shape == energy.shape[1:] and corr.dtype == np.float32
    assert corr.min() >= 0 and corr.max() <= 1
    gh, gw = corr.shape
    row, col = np.unravel_index(np.argmax(corr), corr.shape)
    assert col < gw / 2, f"peak in column {col} of {gw}"
    left, right = corr[:, : gw // 2].max(), corr[:, (gw + 1) // 2:].max()
    assert left > 0.5 and left > 2 * right


def test_sliding_map_follows_the_source_over_time():
    rng = np.random.default_rng(0)
    times = np.arange(0, 8, 0.04)
    env_t = np.arange(0, 8, 0.01)
    env = rng.uniform(0.05, 1.0, len(env_t))
    env_at = np.interp(times, env_t, env)
    energy = rng.uniform(0, 1, (len(times), 2, 2)).astype(np.float32)
    first = times < 4
    energy[first, 0, 0] = 20 * env_at[first]  # cell (0, 0) moves with the sound for 0-4 s
    energy[~first, 1, 1] = 20 * env_at[~first]  # cell (1, 1) for 4-8 s
    maps, centres = sliding_audio_motion_map(energy, times, env, env_t, window_s=2.0)
    assert maps.shape == (len(centres), 2, 2)
    early, late = maps[centres < 3].mean(axis=0), maps[centres > 5].mean(axis=0)
    assert np.argmax(early) == 0 and np.argmax(late) == 3


def test_localize_result_and_peaks(localized):
    result, _ = localized
    assert result["tracks"] == []
    assert result["fps_analysed"] == pytest.approx(FPS, rel=0.02)
    assert abs(result["duration"] - DURATION) < 0.1
    frames = result["frames"]
    assert abs(len(frames) - DURATION * FPS) <= 1
    json.dumps(result)  # JSON-ready
    during = [f for f in frames if _in_burst(f["t"], margin=0.08)]
    assert len(during) >= 20
    left = [f for f in during if f["peak"] is not None and f["peak"][0] < 0.5]
    assert len(left) >= 0.9 * len(during)
    for f in frames:
        assert 0.0 <= f["score"] <= 1.0 and f["track_id"] is None
        if f["peak"] is not None:
            assert all(0.0 <= v <= 1.0 for v in f["peak"])
    silent = [f for f in frames if not _in_burst(f["t"] - 0.15) and not _in_burst(f["t"] + 0.15)]
    assert silent and all(f["peak"] is None for f in silent)


def test_overlay_video(localized, clip):
    result, overlay = localized
    assert result["overlay"] == str(overlay) and overlay.exists()
    info, src = media.probe(overlay), media.probe(clip)
    assert info.has_audio
    assert (info.video.width, info.video.height) == (src.video.width, src.video.height)
    frames, _ = media.load_frames(overlay, max_side=None)
    assert abs(len(frames) - int(DURATION * FPS)) <= 1
    # the heat is drawn: during a burst the left half is coloured, the right half is not
    k = int(1.8 * FPS)
    colourful = frames[k].astype(int).std(axis=2)  # grey/black/white pixels have std ~0
    assert colourful[:, : W // 2].mean() > 5 * (colourful[60:, W // 2:].mean() + 0.1)


def test_audio_only_input_is_refused(audio_wav):
    from avsplit.localize import localize_file

    with pytest.raises(AvsplitError, match="no video stream"):
        localize_file(audio_wav)


def test_silent_video_is_refused(video_no_audio):
    from avsplit.localize import localize_file

    with pytest.raises(AvsplitError, match="no audio stream"):
        localize_file(video_no_audio)


def test_cli_localize_json_and_overlay(clip, tmp_path):
    from typer.testing import CliRunner

    from avsplit.cli import app

    out = tmp_path / "out.mp4"
    res = CliRunner().invoke(app, ["localize", str(clip), "--overlay", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["overlay"] == str(out) and out.exists()
    assert len(data["frames"]) == len(media.load_frames(clip, max_side=64)[1])


def test_cli_missing_file_is_one_line(tmp_path):
    exe = Path(sys.executable).with_name("avsplit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "avsplit.cli"]
    res = subprocess.run([*cmd, "localize", str(tmp_path / "missing.mp4")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "missing.mp4" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
