"""``avsplit sync``: the offset measured from a fake face's jaw opening on a generated clip, and
``fix_offset`` on a click track.

The measuring clip (5 s, still 320x240 grey picture, 25 fps) has a voice-like buzz shaped by
random syllables; a fake face tracker (passed through ``Engine(face_tracker=...)``) gives one
face whose jaw opening follows the same syllables, leading the sound by a chosen time. A
natural speaker's jaw leads the sound by :data:`avsplit.associate.NATURAL_LAG_S`, which
``measure_offset`` takes off.
"""

from __future__ import annotations

import numpy as np
import pytest

from avsplit import media
from avsplit.associate import NATURAL_LAG_S
from avsplit.engine import Engine
from avsplit.errors import AvsplitError
from avsplit.sync import TOLERANCE_S, fix_offset, measure_offset
from helpers import SyllableFaceTracker, syllable_clip

FPS, W, H, DURATION, RATE = 25, 320, 240, 5.0, 16000
FACE_BOX = (0.3, 0.2, 0.6, 0.7)


def FakeFaceTracker(spans, lead: float = 0.0) -> SyllableFaceTracker:
    return SyllableFaceTracker(spans, lead, FACE_BOX)


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory):
    """``(clip path, syllable spans)`` (see the module docstring); read-only."""
    return syllable_clip(tmp_path_factory.mktemp("sync"), 7, DURATION, RATE, FPS, W, H)


def _measure(path, tracker):
    with Engine("cpu", face_tracker=tracker) as engine:
        return measure_offset(path, engine=engine)


def test_audio_late_is_measured(speech_clip):
    path, spans = speech_clip
    tracker = FakeFaceTracker(spans, lead=NATURAL_LAG_S + 0.2)  # the sound comes 0.2 s late
    result = _measure(path, tracker)
    assert abs(tracker.frames - DURATION * FPS) <= 1  # the tracker saw the whole video
    assert result["offset_s"] == pytest.approx(0.2, abs=0.05)
    assert result["in_sync"] is False
    assert result["track_id"] == 0 and result["faces"] == 1 and result["r"] > 0.6
    assert result["input"] == str(path)


def test_audio_early_is_negative(speech_clip):
    path, spans = speech_clip
    result = _measure(path, FakeFaceTracker(spans, lead=NATURAL_LAG_S - 0.3))
    assert result["offset_s"] == pytest.approx(-0.3, abs=0.05) and not result["in_sync"]


def test_a_natural_speaker_is_in_sync(speech_clip):
    path, spans = speech_clip
    result = _measure(path, FakeFaceTracker(spans, lead=NATURAL_LAG_S))
    assert abs(result["offset_s"]) <= TOLERANCE_S and result["in_sync"] is True
    assert result["r"] > 0.8


def test_no_face_is_an_error(speech_clip):
    path, _ = speech_clip
    with pytest.raises(AvsplitError, match="no face found"):
        _measure(path, FakeFaceTracker(None))


def test_sync_needs_video_and_audio(audio_wav, video_no_audio):
    for path in (audio_wav, video_no_audio):
        with pytest.raises(AvsplitError, match="needs both a video and an audio stream"):
            _measure(path, FakeFaceTracker(None))


def test_cli_sync_without_a_face_fails_in_one_line(video_with_audio):
    from typer.testing import CliRunner

    from avsplit.cli import app

    res = CliRunner().invoke(app, ["sync", str(video_with_audio), "-q"])
    assert res.exit_code == 1
    assert "no face found" in res.output and "Traceback" not in res.output


def test_fix_offset_moves_the_audio_and_keeps_the_video(tmp_path, make_media):
    clip = make_media(tmp_path / "clicks.mp4", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
                      "-f", "lavfi", "-i", "aevalsrc='if(lt(mod(t,1),0.02),sin(2*PI*1000*t),0)':s=44100",
                      "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")
    out = fix_offset(clip, 0.2, tmp_path / "fixed.mp4")  # audio 0.2 s late -> move it 0.2 s earlier
    before, rate = media.load_audio(clip)
    after, _ = media.load_audio(out)
    env_b = np.abs(before[0])
    env_a = np.abs(after[0])
    onset_b = np.flatnonzero(env_b[int(0.5 * rate):] > 0.1)[0] / rate + 0.5
    onset_a = np.flatnonzero(env_a[int(0.5 * rate):] > 0.1)[0] / rate + 0.5
    assert abs((onset_b - onset_a) - 0.2) < 0.03
    assert media.probe(out).video.codec == media.probe(clip).video.codec
    assert not list(tmp_path.glob(".*"))


def test_half_a_second_late_is_measured(speech_clip):
    path, spans = speech_clip
    result = _measure(path, FakeFaceTracker(spans, lead=NATURAL_LAG_S + 0.5))
    assert result["offset_s"] == pytest.approx(0.5, abs=0.05)
