"""``avsplit sync``: the offset measured from a fake face's jaw opening on a generated clip,
refusal when it cannot tell, the motion cue without a face, and ``--fix``.

The measuring clip (5 s, still 320x240 grey picture, 25 fps) has a voice-like buzz shaped by
random syllables; a fake face tracker (passed through ``Engine(face_tracker=...)``, or put in
place of MediaPipe's for the CLI) gives one face whose jaw opening follows the same
syllables, leading the sound by a chosen time. A natural speaker's jaw leads the sound by
:data:`avsplit.synchrony.LIPS_BAND_LAG_S`, which ``measure_offset`` takes off.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from avsplit import media
from avsplit.engine import Engine
from avsplit.errors import AvsplitError
from avsplit.sync import (MIN_CONFIDENCE, MIN_EVIDENCE_S, TOLERANCE_S, SyncRefused, fix_offset,
                          measure_offset)
from avsplit.synchrony import LIPS_BAND_LAG_S
from helpers import SyllableFaceTracker, syllable_clip, syllable_envelope, syllable_spans

FPS, W, H, DURATION, RATE = 25, 320, 240, 5.0, 16000
FRAME_S = 1.0 / FPS
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


@pytest.mark.parametrize("late", [-0.5, -0.32, -0.16, 0.12, 0.28, 0.5])
def test_a_known_offset_is_found_within_one_frame(speech_clip, late):
    path, spans = speech_clip
    tracker = FakeFaceTracker(spans, lead=LIPS_BAND_LAG_S + late)  # the sound comes `late` s late
    result = _measure(path, tracker)
    assert abs(tracker.frames - DURATION * FPS) <= 1  # the tracker saw the whole video
    assert abs(result["offset_s"] - late) <= FRAME_S
    assert result["in_sync"] is False and result["cue"] == "lips"
    assert result["confidence"] >= MIN_CONFIDENCE
    assert result["track_id"] == 0 and result["face"]["track_id"] == 0
    assert result["face"]["mean_box"] == pytest.approx(list(FACE_BOX), abs=1e-4)
    assert result["input"] == str(path)


def test_a_natural_speaker_is_in_sync(speech_clip):
    path, spans = speech_clip
    result = _measure(path, FakeFaceTracker(spans, lead=LIPS_BAND_LAG_S))
    assert abs(result["offset_s"]) <= TOLERANCE_S and result["in_sync"] is True
    assert result["r"] > 0.8 and result["confidence"] > 0.9


class StillMouthTracker(SyllableFaceTracker):
    """One face whose mouth stays still while the voice talks (its opening jitters by 4 % of
    its mean, measurement noise): there is nothing to read an offset from."""

    def __init__(self, seed: int = 0):
        super().__init__([], 0.0, FACE_BOX)
        self.seed = seed

    def track(self, frames, progress):
        (track,) = super().track(frames, progress)
        rng = np.random.default_rng(self.seed)
        track.activity = (0.05 + 0.002 * rng.standard_normal(len(track.activity))).astype(np.float32)
        return [track]


def test_a_still_mouth_is_refused(speech_clip):
    path, _ = speech_clip
    with pytest.raises(SyncRefused, match="will not guess") as info:
        _measure(path, StillMouthTracker())
    assert info.value.result["confidence"] < MIN_CONFIDENCE
    assert "\n" not in str(info.value)


def test_a_faceless_motionless_clip_is_refused(speech_clip):
    path, _ = speech_clip  # a still grey picture: no face, nothing moves
    with pytest.raises(SyncRefused) as info:
        _measure(path, FakeFaceTracker(None))
    assert info.value.result["cue"] == "motion" and info.value.result["face"] is None


def test_a_too_short_clip_is_refused(tmp_path):
    path, spans = syllable_clip(tmp_path, 3, 0.8 * MIN_EVIDENCE_S, RATE, FPS, W, H)
    with pytest.raises(SyncRefused, match="too short"):
        _measure(path, FakeFaceTracker(spans, lead=LIPS_BAND_LAG_S))


def test_sync_needs_video_and_audio(audio_wav, video_no_audio):
    for path in (audio_wav, video_no_audio):
        with pytest.raises(AvsplitError, match="needs both a video and an audio stream"):
            _measure(path, FakeFaceTracker(None))


def _flash_clip(folder, make_media, late: float):
    """A clip without a face: a white square flashes on for 2 frames at random times, and a
    click sounds ``late`` seconds after each flash (the motion cue's case)."""
    rng = np.random.default_rng(5)
    times = np.sort(rng.choice(np.arange(0.4, DURATION - 0.8, 0.2), 12, replace=False))
    times = times + rng.uniform(0, 0.1, len(times))
    audio = np.zeros(int(DURATION * RATE), np.float32)
    for t in times:
        a = int((t + late) * RATE)
        n = int(0.03 * RATE)
        audio[a:a + n] += 0.5 * np.sin(2 * np.pi * 800 * np.arange(n) / RATE) * np.hanning(n)
    wav = folder / "clicks.wav"
    sf.write(wav, audio, RATE)
    out = folder / "flash.mp4"
    with media.VideoWriter(out, W, H, FPS, audio_from=wav) as writer:
        for k in range(int(DURATION * FPS)):
            frame = np.full((H, W, 3), 40, np.uint8)
            if np.any((k / FPS >= times) & (k / FPS < times + 2 * FRAME_S)):
                frame[80:160, 120:200] = 255
            writer.write(frame)
    return out


def test_without_a_face_motion_onsets_give_the_offset(tmp_path, make_media):
    path = _flash_clip(tmp_path, make_media, late=0.2)
    result = _measure(path, FakeFaceTracker(None))
    assert result["cue"] == "motion" and result["face"] is None
    assert abs(result["offset_s"] - 0.2) <= FRAME_S


def _cli(monkeypatch, tracker, *args):
    """``avsplit sync ARGS`` in-process, with ``tracker`` as the engine's face tracker."""
    from typer.testing import CliRunner

    import avsplit.engine
    from avsplit.cli import app

    monkeypatch.setattr(avsplit.engine, "MediaPipeFaceTracker", lambda: tracker)
    return CliRunner().invoke(app, ["sync", *map(str, args)])


def test_cli_json_gives_offset_confidence_and_face(speech_clip, monkeypatch):
    path, spans = speech_clip
    res = _cli(monkeypatch, FakeFaceTracker(spans, lead=LIPS_BAND_LAG_S + 0.2), path, "--json", "-q")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert abs(out["offset_s"] - 0.2) <= FRAME_S and out["status"] == "done"
    assert out["confidence"] >= MIN_CONFIDENCE and out["face"]["track_id"] == 0
    assert out["cue"] == "lips"


def test_cli_refusal_is_exit_1_and_one_line(speech_clip, monkeypatch):
    path, _ = speech_clip
    res = _cli(monkeypatch, StillMouthTracker(), path, "-q")
    assert res.exit_code == 1
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "will not guess" in lines[0] and "Traceback" not in res.output
    assert res.stdout == ""
    res = _cli(monkeypatch, FakeFaceTracker(None), path, "-q", "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert out["status"] == "failed" and out["cue"] == "motion" and out["error"]


def _video_md5(path) -> str:
    cmd = [media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
           "-c", "copy", "-f", "md5", "-"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def _onsets(audio: np.ndarray, rate: int, spans) -> float:
    """Lag (s) of ``audio`` against the syllable envelope of ``spans`` (cross-correlation of
    its 10 ms RMS envelope, ±1 s)."""
    hop = rate // 100
    env = np.sqrt((audio[: len(audio) // hop * hop].reshape(-1, hop) ** 2).mean(axis=1))
    ref = syllable_envelope(np.arange(len(env)) / 100, spans)
    lags = np.arange(-100, 101)
    r = [np.dot(ref[max(0, -k):len(ref) - max(0, k)], env[max(0, k):len(env) - max(0, -k)])
         for k in lags]
    return lags[int(np.argmax(r))] / 100


@pytest.mark.parametrize("late", [0.28, -0.32])
def test_cli_fix_copies_the_video_and_shifts_the_audio_by_the_measured_offset(
        speech_clip, tmp_path, monkeypatch, late):
    path, spans = speech_clip
    # a clip whose audio is `late` s late: the fake face leads the sound by natural + late
    out = tmp_path / "fixed.mp4"
    res = _cli(monkeypatch, FakeFaceTracker(spans, lead=LIPS_BAND_LAG_S + late), path, "--fix",
               "-o", out, "--json", "-q")
    assert res.exit_code == 0, res.output
    measured = json.loads(res.stdout)["offset_s"]
    assert json.loads(res.stdout)["fixed"] == str(out)
    assert _video_md5(out) == _video_md5(path)  # the video packets are copied untouched
    before, rate = media.load_audio(path)
    after, _ = media.load_audio(out)
    shift = _onsets(before[0], rate, spans) - _onsets(after[0], rate, spans)
    assert abs(shift - measured) <= 0.011  # moved earlier by exactly the measured offset
    assert abs(after.shape[1] - before.shape[1]) <= 0.03 * rate  # same length
    assert not list(tmp_path.glob(".*"))


def test_fix_needs_an_output(speech_clip, monkeypatch):
    path, spans = speech_clip
    res = _cli(monkeypatch, FakeFaceTracker(spans), path, "--fix")
    assert res.exit_code == 2 and "--fix needs -o" in res.stderr


def test_fix_offset_moves_a_click_track(tmp_path, make_media):
    clip = make_media(tmp_path / "clicks.mp4", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
                      "-f", "lavfi", "-i", "aevalsrc='if(lt(mod(t,1),0.02),sin(2*PI*1000*t),0)':s=44100",
                      "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")
    out = fix_offset(clip, 0.2, tmp_path / "fixed.mp4")  # audio 0.2 s late -> move it 0.2 s earlier
    before, rate = media.load_audio(clip)
    after, _ = media.load_audio(out)
    onset_b = np.flatnonzero(np.abs(before[0][int(0.5 * rate):]) > 0.1)[0] / rate + 0.5
    onset_a = np.flatnonzero(np.abs(after[0][int(0.5 * rate):]) > 0.1)[0] / rate + 0.5
    assert abs((onset_b - onset_a) - 0.2) < 0.01
    assert media.probe(out).video.codec == media.probe(clip).video.codec
    assert not list(tmp_path.glob(".*"))


def test_the_band_envelope_hears_only_its_band():
    from avsplit.synchrony import band_envelope, speech_envelope

    rate = 16000
    t = np.arange(rate) / rate
    on = (t >= 0.25) & (t < 0.75)
    in_band = np.where(on, np.sin(2 * np.pi * 2000 * t), 0.0).astype(np.float32)
    below = np.sin(2 * np.pi * 300 * t).astype(np.float32)  # loud, steady, outside 1-3 kHz
    env, times = band_envelope(in_band + below, rate)
    ref_env, ref_times = speech_envelope(in_band + below, rate)
    assert np.allclose(times, ref_times)  # one time axis with the RMS envelope
    inside = env[(times > 0.3) & (times < 0.7)]
    outside = env[((times > 0.05) & (times < 0.2)) | ((times > 0.8) & (times < 0.95))]  # not the padded ends
    assert outside.max() < 0.01 * inside.min()  # the 300 Hz tone is not heard
    broadband_in = ref_env[(ref_times > 0.3) & (ref_times < 0.7)]
    broadband_out = ref_env[(ref_times < 0.2) | (ref_times > 0.8)]
    assert broadband_out.min() > 0.5 * broadband_in.max()  # while the RMS envelope hears it


def test_the_lips_of_a_talker_whose_jaw_hardly_moves_are_read_from_the_mouth_darkness():
    """A tight-lipped talker, audio 0.2 s late: the jaw track is noise, the inside of the mouth
    darkens with each syllable. With the darkness the lips curve peaks at the offset; on the jaw
    alone there is nothing there."""
    from avsplit.structures import VisualTrack
    from avsplit.synchrony import band_envelope, grid_times, heard_signal, lip_curve

    rate, seconds, late = 16000, 8.0, 0.2
    rng = np.random.default_rng(5)
    spans = syllable_spans(5, seconds)
    tt = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 220 * h * tt) / h for h in range(1, 13)) * syllable_envelope(tt - late, spans)
    times = np.arange(0, seconds, FRAME_S)
    seen_gate = syllable_envelope(times, spans)
    boxes = np.tile(np.array(FACE_BOX, np.float32), (len(times), 1))
    jaw = (0.2 + 0.01 * rng.standard_normal(len(times))).astype(np.float32)
    dark = (-150 + 60 * seen_gate + 3 * rng.standard_normal(len(times))).astype(np.float32)
    grid = grid_times(seconds)
    heard = heard_signal(band_envelope(voice.astype(np.float32), rate), grid, False)
    talking = lip_curve(VisualTrack(0, "face", times, boxes, jaw, "face", 0.9, dark), heard, grid)
    jaw_only = lip_curve(VisualTrack(0, "face", times, boxes, jaw, "face", 0.9), heard, grid)
    best = int(np.argmax(talking.r))
    assert abs(talking.lags_s[best] - late) <= 2 * FRAME_S
    assert talking.r[best] > 0.25
    assert talking.r[best] > jaw_only.r.max() + 0.1  # the jaw alone has no such peak anywhere
