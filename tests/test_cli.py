"""The command-line contract of ``avsplit separate`` / ``avsplit models`` on generated media."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from avsplit import media
from helpers import json_lines


pytestmark = pytest.mark.subprocess


def avsplit(*args, cwd=None):
    """Run the CLI in a subprocess (exactly as a user's script would)."""
    return subprocess.run([sys.executable, "-m", "avsplit.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def separated(tmp_path_factory, video_with_audio):
    out = tmp_path_factory.mktemp("sep")
    res = avsplit("separate", video_with_audio, "-o", out, "--json", "-q")
    return res, out / video_with_audio.stem


def test_separate_writes_the_contracted_files(separated, video_with_audio):
    res, folder = separated
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["manifest.json", "offscreen.mp4", "offscreen.wav", "onscreen.mp4", "onscreen.wav"]
    [line] = json_lines(res.stdout)
    assert line["status"] == "done" and line["manifest"] == str(folder / "manifest.json")
    assert line["error"] is None and str(folder / "onscreen.wav") in line["outputs"]


def test_stems_keep_rate_channels_length_and_sample_alignment(separated, video_with_audio):
    """With no face everything is off-screen: the block-written offscreen.wav must be the
    decoded mixture sample for sample (a misplaced or dropped block would show here)."""
    _, folder = separated
    mixture, rate = media.load_audio(video_with_audio)
    on, r1 = sf.read(folder / "onscreen.wav", dtype="float32", always_2d=True)
    off, r2 = sf.read(folder / "offscreen.wav", dtype="float32", always_2d=True)
    assert r1 == r2 == rate
    assert on.shape == off.shape == mixture.T.shape
    assert np.abs(off - mixture.T).max() < 1e-5


def test_no_face_means_everything_offscreen_and_the_manifest_says_why(separated, video_with_audio):
    _, folder = separated
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["mode"] == "onscreen" and manifest["tracks"] == []
    assert any("no face" in n for n in manifest["notes"])
    on, _ = sf.read(folder / "onscreen.wav")
    assert np.abs(on).max() == 0
    assert {m["name"] for m in manifest["models"]} == {"speech-blstm", "dtln-1", "dtln-2",
                                                       "face-detector", "face-mesh"}
    assert all(len(m["sha256"]) == 64 for m in manifest["models"])
    files = {f["file"]: f for f in manifest["files"]}
    assert files["offscreen.wav"]["onscreen"] is False and files["offscreen.wav"]["time_ranges"]
    assert files["onscreen.wav"]["time_ranges"] == []


def test_remuxed_video_keeps_the_input_video_stream(separated, video_with_audio):
    _, folder = separated
    src, out = media.probe(video_with_audio), media.probe(folder / "offscreen.mp4")
    assert out.video.codec == src.video.codec
    assert (out.video.width, out.video.height) == (src.video.width, src.video.height)
    assert abs(out.duration - src.duration) < 0.1
    stem, _ = media.load_audio(folder / "offscreen.mp4")
    assert abs(stem.shape[1] - media.load_audio(video_with_audio)[0].shape[1]) < 2048


def test_no_video_and_flac(tmp_path, video_with_audio):
    res = avsplit("separate", video_with_audio, "-o", tmp_path, "--no-video", "--format", "flac", "-q")
    assert res.returncode == 0, res.stderr
    names = sorted(p.name for p in (tmp_path / video_with_audio.stem).iterdir())
    assert names == ["manifest.json", "offscreen.flac", "onscreen.flac"]


@pytest.mark.parametrize("case", ["missing", "not_media", "no_audio", "audio_only"])
def test_bad_input_gives_one_line_exit_1_and_no_output(tmp_path, case, not_media, video_no_audio, audio_wav):
    path = {"missing": tmp_path / "nope.mp4", "not_media": not_media, "no_audio": video_no_audio,
            "audio_only": audio_wav}[case]
    out = tmp_path / "out"
    res = avsplit("separate", path, "-o", out, "-q")
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("avsplit: error:"), res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists() or not any(out.rglob("*"))


def test_one_bad_input_does_not_stop_the_batch(tmp_path, video_with_audio, not_media):
    res = avsplit("separate", not_media, video_with_audio, "-o", tmp_path, "--no-video", "-q", "--json")
    assert res.returncode == 1
    results = json_lines(res.stdout)
    assert [r["status"] for r in results] == ["failed", "done"]
    assert (tmp_path / video_with_audio.stem / "onscreen.wav").exists()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_usage_errors_exit_2(video_with_audio):
    assert avsplit("separate", video_with_audio, "--mode", "karaoke").returncode == 2
    assert avsplit("separate").returncode == 2


def test_models_lists_the_bundled_weights():
    res = avsplit("models", "--json")
    assert res.returncode == 0
    rows = json.loads(res.stdout)
    assert {"speech-blstm", "face-detector", "face-mesh"} <= {r["name"] for r in rows}
    assert all(r["present"] for r in rows)


def test_sync_needs_a_face_and_fix_needs_an_output(video_with_audio, audio_wav):
    res = avsplit("sync", video_with_audio, "-q")
    assert res.returncode == 1 and "no face" in res.stderr and "Traceback" not in res.stderr
    assert avsplit("sync", audio_wav, "-q").returncode == 1
    assert avsplit("sync", video_with_audio, "--fix").returncode == 2
