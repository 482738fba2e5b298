"""Tests of avsplit.media on small generated files (see conftest.py)."""

from __future__ import annotations

import os
import stat

import av
import numpy as np
import pytest
import soundfile as sf

from avsplit import media
from avsplit.errors import MediaError

RATE = 44100  # of video_with_audio
AAC_SLACK = 2048  # one AAC frame (1024 samples) + encoder priming (1024)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def packet_sizes(path, kind: str = "video") -> list[int]:
    with av.open(str(path)) as c:
        s = getattr(c.streams, kind)[0]
        return [p.size for p in c.demux(s) if p.size]


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


# --- probe ---------------------------------------------------------------------------------

def test_probe_video_with_audio(video_with_audio):
    info = media.probe(video_with_audio)
    assert "mp4" in info.format
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.has_audio and info.has_video
    (a,) = info.audio
    assert (a.index, a.sample_rate, a.channels, a.codec) == (0, RATE, 2, "aac")
    assert a.duration == pytest.approx(2.0, abs=0.05)
    v = info.video
    assert (v.width, v.height, v.codec) == (320, 240, "h264")
    assert v.fps == pytest.approx(25.0, abs=0.01)
    assert v.frames == 50
    assert v.duration == pytest.approx(2.0, abs=0.05)


def test_probe_audio_only_and_no_audio(audio_wav, video_no_audio):
    info = media.probe(audio_wav)
    assert info.video is None and not info.has_video
    assert (info.audio[0].sample_rate, info.audio[0].channels) == (48000, 2)
    assert info.duration == pytest.approx(2.0, abs=1e-3)
    info = media.probe(video_no_audio)
    assert info.audio == [] and info.video.width == 320


def test_probe_cover_art_is_not_video(tmp_path, make_media):
    mp3 = make_media(tmp_path / "song.mp3",
                     "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=22050:duration=1",
                     "-f", "lavfi", "-i", "color=c=blue:size=32x32:duration=1",
                     "-map", "0:a", "-map", "1:v", "-frames:v", "1", "-c:a", "libmp3lame",
                     "-c:v", "png", "-disposition:v", "attached_pic", "-id3v2_version", "3")
    with av.open(str(mp3)) as c:  # the file really has the picture as a video stream
        assert len(c.streams.video) == 1
    info = media.probe(mp3)
    assert info.video is None and info.has_audio
    with pytest.raises(MediaError, match="no video stream"):
        media.load_frames(mp3)


@pytest.mark.parametrize("func", [media.probe, media.load_audio, media.load_frames])
def test_bad_inputs_raise_media_error(func, tmp_path, not_media):
    with pytest.raises(MediaError, match="no such file"):
        func(tmp_path / "missing.mp4")
    with pytest.raises(MediaError, match="not a media file"):
        func(not_media)
    with pytest.raises(MediaError, match="not a media file"):
        func(tmp_path)  # a folder


# --- load_audio / write_audio ---------------------------------------------------------------

def test_load_audio_from_video(video_with_audio):
    audio, rate = media.load_audio(video_with_audio)
    assert rate == RATE and audio.dtype == np.float32 and audio.ndim == 2
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] - 2 * RATE) <= AAC_SLACK
    assert dominant_hz(audio[0], rate) == pytest.approx(440, abs=2)
    assert np.allclose(audio[0], audio[1], atol=1e-3)  # -ac 2 duplicated the mono sine
    assert 0.05 < np.abs(audio).max() < 1.0


def test_load_audio_resamples(video_with_audio, audio_wav):
    audio, rate = media.load_audio(video_with_audio, sample_rate=16000)
    assert rate == 16000 and audio.shape[0] == 2
    assert abs(audio.shape[1] - 32000) <= AAC_SLACK * 16000 / RATE + 1
    assert dominant_hz(audio[0], rate) == pytest.approx(440, abs=2)
    audio, rate = media.load_audio(audio_wav, sample_rate=16000)
    assert audio.shape == (2, 32000)
    assert dominant_hz(audio[0], rate) == pytest.approx(330, abs=2)


def test_load_audio_errors(video_with_audio, video_no_audio):
    with pytest.raises(MediaError, match="no audio stream"):
        media.load_audio(video_no_audio)
    with pytest.raises(MediaError, match="has 1 audio stream,"):
        media.load_audio(video_with_audio, stream=1)
    with pytest.raises(MediaError, match="has 1 audio stream,"):
        media.load_audio(video_with_audio, stream=-1)


def test_load_audio_picks_stream(tmp_path, make_media):
    mkv = make_media(tmp_path / "two.mkv",
                     "-f", "lavfi", "-i", "sine=frequency=200:sample_rate=16000:duration=0.5",
                     "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=8000:duration=0.5",
                     "-map", "0:a", "-map", "1:a", "-c:a", "pcm_s16le")
    info = media.probe(mkv)
    assert [a.sample_rate for a in info.audio] == [16000, 8000]
    a0, r0 = media.load_audio(mkv, 0, info=info)
    a1, r1 = media.load_audio(mkv, 1, info=info)
    assert (r0, r1, a0.shape, a1.shape) == (16000, 8000, (1, 8000), (1, 4000))
    assert dominant_hz(a0[0], r0) == pytest.approx(200, abs=3)
    assert dominant_hz(a1[0], r1) == pytest.approx(1000, abs=3)
    with pytest.raises(MediaError, match="has 2 audio streams"):
        media.load_audio(mkv, 2, info=info)


def test_load_audio_reports_ffmpeg_failure(tmp_path, audio_wav, monkeypatch):
    fake = tmp_path / "fake-ffmpeg"
    fake.write_text("#!/bin/sh\necho 'some noise' >&2\necho '[aac @ 0x1] boom: decoder died' >&2\n"
                    "exit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(media, "ffmpeg_exe", lambda: str(fake))
    with pytest.raises(MediaError, match="boom: decoder died"):
        media.load_audio(audio_wav)


def test_write_load_roundtrip_wav_exact(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 12345)) * 0.7).astype(np.float32)
    x[0, :10] = [1.5, -2.0, 3.0, 0, 0, 0, 0, 0, 0, 0]  # beyond full scale: wav must not clip
    path = media.write_audio(tmp_path / "out.wav", x, 22050, "wav")
    assert sf.info(str(path)).subtype == "FLOAT"
    y, rate = media.load_audio(path)
    assert rate == 22050 and y.dtype == np.float32
    np.testing.assert_array_equal(y, x)
    assert files_in(tmp_path) == ["out.wav"]


def test_write_load_roundtrip_flac(tmp_path):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 9000)) * 0.4).astype(np.float32)
    x[1, 5] = 1.7  # clipped to 1 in flac
    path = media.write_audio(tmp_path / "out.flac", x, 16000, "flac")
    assert sf.info(str(path)).subtype == "PCM_24"
    y, rate = media.load_audio(path)
    assert rate == 16000 and y.shape == x.shape
    np.testing.assert_allclose(y, np.clip(x, -1, 1), atol=1e-5)
    assert y[1, 5] == pytest.approx(1.0, abs=1e-5)


def test_write_audio_mono_and_overwrite(tmp_path):
    path = tmp_path / "mono.wav"
    path.write_text("old")
    media.write_audio(path, np.full(100, 0.25, np.float32), 8000)
    y, _ = media.load_audio(path)
    assert y.shape == (1, 100) and np.all(y == 0.25)


def test_write_audio_failure_leaves_nothing(tmp_path):
    with pytest.raises(MediaError, match="unknown audio format"):
        media.write_audio(tmp_path / "a.ogg", np.zeros((1, 10), np.float32), 8000, "ogg")
    with pytest.raises(MediaError, match="could not write"):  # FLAC holds at most 8 channels
        media.write_audio(tmp_path / "b.flac", np.zeros((9, 100), np.float32), 8000, "flac")
    with pytest.raises(MediaError, match="could not write"):
        media.write_audio(tmp_path / "nodir" / "c.wav", np.zeros((1, 10), np.float32), 8000)
    assert files_in(tmp_path) == []
    # a failed write never damages an existing file
    keep = media.write_audio(tmp_path / "keep.flac", np.zeros((1, 10), np.float32), 8000, "flac")
    before = keep.read_bytes()
    with pytest.raises(MediaError):
        media.write_audio(keep, np.zeros((9, 100), np.float32), 8000, "flac")
    assert keep.read_bytes() == before and files_in(tmp_path) == ["keep.flac"]


# --- frames ---------------------------------------------------------------------------------

def test_iter_frames_times_and_size(video_with_audio):
    items = list(media.iter_frames(video_with_audio, max_side=160))
    assert len(items) == 50
    times = np.array([t for t, _ in items])
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(np.diff(times), 0.04, atol=1e-3)
    for _, f in items:
        assert f.shape == (120, 160, 3) and f.dtype == np.uint8
    frames, ts = media.load_frames(video_with_audio, max_side=None)
    assert frames.shape == (50, 240, 320, 3) and frames.dtype == np.uint8
    assert ts.dtype == np.float64 and ts.shape == (50,)
    np.testing.assert_allclose(ts, times)
    frames, _ = media.load_frames(video_with_audio, max_side=1000)  # never upscales
    assert frames.shape[1:] == (240, 320, 3)


def test_iter_frames_fps_limit(video_with_audio):
    frames, ts = media.load_frames(video_with_audio, max_side=64, fps=5)
    assert 9 <= len(ts) <= 11
    assert frames.shape[1:] == (48, 64, 3)
    np.testing.assert_allclose(np.diff(ts), 0.2, atol=1e-3)
    _, ts = media.load_frames(video_with_audio, max_side=64, fps=100)  # more than there are
    assert len(ts) == 50


def test_iter_frames_rgb_and_variable_frame_rate(tmp_path, make_media):
    # red frames; the first 5 are 0.1 s apart, the rest 0.05 s apart
    vfr = make_media(tmp_path / "vfr.mkv",
                     "-f", "lavfi", "-i", "color=c=red:size=64x48:rate=10:duration=1",
                     "-vf", "settb=1/1000,setpts='if(lt(N,5),N*0.1,0.5+(N-5)*0.05)/TB'",
                     "-fps_mode", "passthrough", "-enc_time_base", "1/1000",
                     "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p")
    frames, ts = media.load_frames(vfr, max_side=None)
    expected = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7]
    np.testing.assert_allclose(ts, expected, atol=2e-3)
    mean = frames.reshape(-1, 3).mean(0)
    assert mean[0] > 200 and mean[1] < 50 and mean[2] < 50  # RGB, not BGR


def test_iter_frames_relative_to_container_start(tmp_path, make_media, video_with_audio):
    ts_file = make_media(tmp_path / "clip.ts", "-i", str(video_with_audio), "-c", "copy")
    with av.open(str(ts_file)) as c:
        assert c.start_time / av.time_base > 1.0  # mpegts starts at ~1.4 s
    _, ts = media.load_frames(ts_file, max_side=32)
    assert len(ts) == 50 and -0.01 <= ts[0] < 0.1
    assert ts[-1] == pytest.approx(ts[0] + 49 * 0.04, abs=2e-3)


def test_frames_no_video(audio_wav):
    with pytest.raises(MediaError, match="no video stream"):
        next(media.iter_frames(audio_wav))


# --- remux ----------------------------------------------------------------------------------

def test_remux_copies_video_and_replaces_audio(tmp_path, video_with_audio, audio_wav):
    out = media.remux(video_with_audio, audio_wav, tmp_path / "out.mp4")
    assert files_in(tmp_path) == ["out.mp4"]
    src, res = media.probe(video_with_audio), media.probe(out)
    assert (res.video.codec, res.video.width, res.video.height) == ("h264", 320, 240)
    assert abs((res.video.frames or 0) - src.video.frames) <= 1
    assert packet_sizes(out) == packet_sizes(video_with_audio)  # stream copied, not re-encoded
    (a,) = res.audio
    assert (a.codec, a.sample_rate, a.channels) == ("aac", 48000, 2)
    written, _ = sf.read(str(audio_wav), dtype="float32", always_2d=True)
    written = written.T
    got, rate = media.load_audio(out)
    assert rate == 48000 and abs(got.shape[1] - written.shape[1]) <= AAC_SLACK
    n = min(got.shape[1], written.shape[1])
    assert np.corrcoef(got[0, :n], written[0, :n])[0, 1] > 0.99  # the sine
    # the noise channel correlates only at lag 0: no priming offset, samples aligned
    r = [np.corrcoef(got[1, 2 + lag:n - 2 + lag], written[1, 2:n - 2])[0, 1] for lag in (-1, 0, 1)]
    assert r[1] > 0.4 and abs(r[0]) < 0.2 and abs(r[2]) < 0.2, r
    head = out.read_bytes()[:200_000]  # +faststart: moov before mdat
    assert head.find(b"moov") < head.find(b"mdat")


@pytest.mark.parametrize("codec,ext,expect", [("mpeg4", "mp4", "mpeg4"),  # copied
                                              ("flv1", "flv", "h264")])   # re-encoded
def test_remux_other_video_codecs(tmp_path, make_media, audio_wav, codec, ext, expect):
    src = make_media(tmp_path / f"in.{ext}",
                     "-f", "lavfi", "-i", "testsrc2=size=176x144:rate=25", "-t", "1",
                     "-c:v", codec)
    out = media.remux(src, audio_wav, tmp_path / "out.mp4")
    info = media.probe(out)
    assert (info.video.codec, info.video.width, info.video.height) == (expect, 176, 144)
    frames, _ = media.load_frames(out, max_side=32)
    assert abs(len(frames) - 25) <= 1
    assert info.duration == pytest.approx(2.0, abs=0.1)  # no -shortest: audio is 2 s
    assert sorted(files_in(tmp_path)) == sorted([f"in.{ext}", "out.mp4"])


def test_remux_errors(tmp_path, video_with_audio, video_no_audio, audio_wav, not_media):
    with pytest.raises(MediaError, match="no audio stream"):
        media.remux(video_with_audio, video_no_audio, tmp_path / "a.mp4")
    with pytest.raises(MediaError, match="no video stream"):
        media.remux(audio_wav, audio_wav, tmp_path / "b.mp4")
    with pytest.raises(MediaError, match="not a media file"):
        media.remux(not_media, audio_wav, tmp_path / "c.mp4")
    with pytest.raises(MediaError, match="no such file"):
        media.remux(video_with_audio, tmp_path / "missing.wav", tmp_path / "d.mp4")
    with pytest.raises(MediaError):
        media.remux(video_with_audio, audio_wav, tmp_path / "nodir" / "e.mp4")
    assert files_in(tmp_path) == []


# --- VideoWriter ----------------------------------------------------------------------------

def test_video_writer_frames_and_audio(tmp_path, video_with_audio):
    out = tmp_path / "overlay.mp4"
    red = np.zeros((47, 63, 3), np.uint8)
    red[..., 0] = 255
    with media.VideoWriter(out, 63, 47, 10, audio_from=video_with_audio) as w:
        assert w.size == (64, 48)
        for _ in range(20):
            w.write(red)
    assert files_in(tmp_path) == ["overlay.mp4"]
    info = media.probe(out)
    assert (info.video.codec, info.video.width, info.video.height) == ("h264", 64, 48)
    assert info.video.fps == pytest.approx(10)
    frames, ts = media.load_frames(out, max_side=None)
    assert len(frames) == 20
    np.testing.assert_allclose(np.diff(ts), 0.1, atol=1e-3)
    mean = frames[:, :47, :63].reshape(-1, 3).mean(0)
    assert mean[0] > 200 and mean[1] < 50 and mean[2] < 50
    (a,) = info.audio
    assert (a.codec, a.sample_rate, a.channels) == ("aac", RATE, 2)
    audio, rate = media.load_audio(out)
    assert abs(audio.shape[1] - 2 * RATE) <= AAC_SLACK
    assert dominant_hz(audio[0], rate) == pytest.approx(440, abs=2)


def test_video_writer_without_audio(tmp_path):
    out = tmp_path / "silent.mp4"
    with media.VideoWriter(out, 32, 24, 25) as w:
        for i in range(5):
            w.write(np.full((24, 32, 3), i * 40, np.uint8))
    info = media.probe(out)
    assert info.audio == [] and info.video.frames == 5


def test_video_writer_cleans_up_on_error(tmp_path, video_with_audio, video_no_audio):
    out = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError, match="stop"):
        with media.VideoWriter(out, 32, 24, 25, audio_from=video_with_audio) as w:
            w.write(np.zeros((24, 32, 3), np.uint8))
            raise RuntimeError("stop")
    with pytest.raises(ValueError):
        with media.VideoWriter(out, 32, 24, 25) as w:
            w.write(np.zeros((32, 24, 3), np.uint8))  # wrong shape
    with pytest.raises(MediaError, match="no audio stream"):
        media.VideoWriter(out, 32, 24, 25, audio_from=video_no_audio)
    with pytest.raises(MediaError):
        with media.VideoWriter(out, 32, 24, 25):
            pass  # no frames
    assert files_in(tmp_path) == []


def test_clip_frames_twice_from_a_file_that_cannot_rewind(tmp_path, make_media):
    """FLV without a seek index: PyAV cannot seek back after the probe; the frames still come
    (a real CREMA-D clip failed with 'Invalid data' before the file was reopened)."""
    from avsplit.clip import Clip

    flv = make_media(tmp_path / "clip.flv",
                     "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=2",
                     "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=22050:duration=2",
                     "-c:v", "flv", "-c:a", "libmp3lame", "-shortest")
    with av.open(str(flv)) as c:  # the premise: this container refuses to rewind
        with pytest.raises((av.FFmpegError, OSError)):
            c.seek(0)
    with Clip(flv) as clip:
        first = [t for t, _ in clip.frames(max_side=64)]
        again = [t for t, _ in clip.frames(max_side=64)]
    assert len(first) == 50 and again == first



class _SeeksLate:
    """An open container whose rewind lands 0.5 s after the start, as PyAV's seek(0) does on
    GRID's MPEG program streams (start_time 0, first key frame found at 0.48 s)."""

    def __init__(self, container):
        self._c = container

    def seek(self, offset, **kw):
        self._c.seek(offset + av.time_base // 2, **kw)

    def __getattr__(self, name):
        return getattr(self._c, name)


def test_iter_frames_reopens_when_the_rewind_lands_late(tmp_path, make_media):
    """A rewind that skips the first frames (the first 0.48 s of the GRID clips were lost)
    falls back to a fresh open, which decodes from the first packet."""
    clip = make_media(tmp_path / "clip.mp4",
                      "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=2",
                      "-c:v", "libx264", "-g", "5", "-pix_fmt", "yuv420p")
    fresh = [t for t, _ in media.iter_frames(clip, max_side=64)]
    with av.open(str(clip)) as c:
        late = _SeeksLate(c)
        late.seek(0)  # the premise: this rewind does land late
        assert next(iter(c.decode(c.streams.video[0]))).time > 0.3
        first = [t for t, _ in media.iter_frames(clip, max_side=64, container=late)]
        again = [t for t, _ in media.iter_frames(clip, max_side=64, container=late)]
    assert len(fresh) == 50 and fresh[0] == 0.0 and first == fresh and again == fresh
