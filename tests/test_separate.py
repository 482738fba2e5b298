"""The real ``separate`` path (clip -> engine -> separator -> association -> writer) driven with
injected face tracks: generated voices, a fake face tracker, no recorded media."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from helpers import RATE, voice_like

from avsplit import media
from avsplit.associate import NATURAL_LAG_S, associate_envelopes, speech_envelope
import torch

from avsplit.audio import resample, si_sdr, stft
from avsplit.models.speech import SpeechSeparatorConfig
from avsplit.separator import Separator
from avsplit.clip import Clip
from avsplit.engine import Engine
from avsplit.errors import MediaError
from avsplit.modes.plan import SeparateOptions
from avsplit.separate import separate_clip
from avsplit.structures import VisualTrack

SECONDS = 5.0
CLIP_RATE = 48000


def _jaw_like(voice: np.ndarray, times: np.ndarray) -> np.ndarray:
    """A jaw-opening signal that leads the voice's envelope by the natural lag."""
    env, env_t = speech_envelope(voice, RATE)
    return np.interp(times + NATURAL_LAG_S, env_t, env).astype(np.float32) / (env.max() + 1e-9)


class FakeFaceTracker:
    """Consumes the clip's frames and returns faces whose mouths follow given voices (or are
    still when the voice is ``None``)."""

    model_ids: list[dict] = []

    def __init__(self, voices: list[np.ndarray | None]):
        self.voices = voices
        self.calls = 0

    def track(self, frames, progress):
        self.calls += 1
        times = np.array([t for t, _ in frames])
        tracks = []
        rng = np.random.default_rng(7)
        for k, voice in enumerate(self.voices):
            activity = (_jaw_like(voice, times) if voice is not None
                        else 0.2 + 0.002 * rng.standard_normal(len(times)).astype(np.float32))
            x0 = 0.05 + 0.5 * k
            boxes = np.tile(np.array([x0, 0.2, x0 + 0.3, 0.7], np.float32), (len(times), 1))
            tracks.append(VisualTrack(k, "face", times, boxes, activity, "face", 0.9))
        return tracks


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory, make_media):
    """A 5 s video (testsrc, 25 fps) whose lossless stereo 48 kHz audio is voice A (low) +
    voice B (high) at 0 dB; returns ``(path, A, B)`` with A, B mono at 48 kHz."""
    folder = tmp_path_factory.mktemp("two_voices")
    a = voice_like(10, SECONDS, f0_range=(95, 110))
    b = voice_like(11, SECONDS, f0_range=(210, 240))
    b *= np.sqrt(np.mean(a ** 2) / np.mean(b ** 2))
    a48, b48 = resample(a, RATE, CLIP_RATE), resample(b, RATE, CLIP_RATE)
    wav = folder / "mix.wav"
    sf.write(wav, np.stack([a48 + b48, a48 + b48]).T, CLIP_RATE, subtype="FLOAT")
    video = make_media(folder / "talk.mkv", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                       "-i", wav, "-t", str(SECONDS), "-c:v", "libx264", "-preset", "veryfast",
                       "-pix_fmt", "yuv420p", "-c:a", "flac")
    return video, a, b, a48, b48


class IdealRatioNetwork(torch.nn.Module):
    """A stand-in speech network that knows the two voices: ideal ratio masks, voice B in slot 0
    and voice A in slot 1 (so the association has to find the right slot), an empty
    background slot. Lets the test check the path (clip, engine, association, writer) apart
    from how well the trained network separates generated pulse-train voices."""

    def __init__(self, a: np.ndarray, b: np.ndarray):
        super().__init__()
        self.config = SpeechSeparatorConfig()
        self.refs = stft(torch.from_numpy(np.stack([b, a])), 512, 256).abs()

    def masks(self, spec: torch.Tensor) -> torch.Tensor:
        refs = self.refs[:, :, :spec.shape[-1]]
        m = refs / (refs.sum(0, keepdim=True) + 1e-8)
        return torch.cat([m, torch.zeros_like(m[:1])])[None]


def _run(clip_path, tracker, tmp_path, mode="onscreen", voices=None, **kw):
    engine = Engine("cpu", face_tracker=tracker)
    if voices is not None:
        # the stand-in serves both speech networks; its name says which one the scene chose
        for name in ("speech-blstm", "speech-blstm-turns"):
            engine.use_separator(name, Separator(IdealRatioNetwork(*voices),
                                                 {"name": f"ideal for {name}", "file": "-",
                                                  "sha256": "-"}))
    with Clip(clip_path) as clip:
        return separate_clip(clip, engine, SeparateOptions(mode=mode, **kw), tmp_path)


def _mono(path):
    x, _ = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1)


def test_a_face_in_sync_with_one_voice_gets_that_voice_onscreen(two_voices, tmp_path):
    """The association picks the slot in sync with the face (the pretrained enhancer is off:
    it takes these generated pulse-train voices for noise; tests/test_enhancer.py covers it)."""
    video, a, b, a48, b48 = two_voices
    tracker = FakeFaceTracker([voice_like(10, SECONDS, f0_range=(95, 110))])
    result = _run(video, tracker, tmp_path, video=False, enhance=False, voices=(a, b))
    assert tracker.calls == 1
    folder = tmp_path / "talk"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["schema_version"] == 3 and manifest["folder"] == "talk"
    assert manifest == json.loads(json.dumps(result.manifest()))
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "offscreen.wav", "onscreen.wav"]
    on, off = _mono(folder / "onscreen.wav"), _mono(folder / "offscreen.wav")
    mix = a48 + b48
    assert len(on) == len(off) == len(mix)
    assert si_sdr(on, a48) > si_sdr(mix, a48) + 6.0
    assert si_sdr(off, b48) > si_sdr(mix, b48) + 6.0
    assert [s["onscreen"] for s in manifest["sources"]].count(True) >= 1
    assert all(f["track_ids"] == [0] for f in manifest["files"] if f["stem"] == "onscreen")
    # one face on screen: the network trained on turn-taking voices separated it
    assert manifest["models"][0]["name"] == "ideal for speech-blstm-turns"


def test_speakers_mode_gives_each_face_its_voice_and_flags_a_silent_face(two_voices, tmp_path):
    video, a, b, a48, b48 = two_voices
    tracker = FakeFaceTracker([voice_like(10, SECONDS, f0_range=(95, 110)), None])
    _run(video, tracker, tmp_path, mode="speakers", enhance=False, voices=(a, b))
    folder = tmp_path / "talk"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["manifest.json", "offscreen.mp4", "offscreen.wav", "speaker-0.mp4",
                     "speaker-0.wav", "speaker-1.mp4", "speaker-1.wav"]
    mix = a48 + b48
    speaker0 = _mono(folder / "speaker-0.wav")
    assert si_sdr(speaker0, a48) > si_sdr(mix, a48) + 6.0
    speaker1 = _mono(folder / "speaker-1.wav")
    assert np.mean(speaker1 ** 2) < 0.01 * np.mean(mix ** 2)
    manifest = json.loads((folder / "manifest.json").read_text())
    stems = {s["name"]: s for s in manifest["stems"]}
    assert stems["speaker-1"]["silent"] is True and stems["speaker-0"]["silent"] is False
    assert manifest["models"][0]["name"] == "ideal for speech-blstm"  # two faces
    info = media.probe(folder / "speaker-0.mp4")
    assert info.has_video and abs(info.duration - SECONDS) < 0.1


def test_a_voice_split_over_two_slots_joins_its_face():
    """Associate's second branch: a slot that is only part of a voice still goes on-screen on
    strong evidence, an unrelated slot does not."""
    voice = voice_like(20, 6.0)
    other = voice_like(21, 6.0, f0_range=(200, 240))
    times = np.arange(0, 6.0, 0.04)
    face = VisualTrack(0, "face", times, np.tile([0.1, 0.1, 0.5, 0.6], (len(times), 1)),
                       _jaw_like(voice, times))
    envs = [speech_envelope(x, RATE) for x in (0.8 * voice, 0.4 * voice, other)]
    out = associate_envelopes(np.stack([e for e, _ in envs]), envs[0][1], [face])
    assert [a.onscreen for a in out] == [True, True, False]
    assert out[0].track_id == out[1].track_id == 0


def test_a_rerun_replaces_the_folder_and_a_failed_write_leaves_the_old_one(two_voices, tmp_path,
                                                                            monkeypatch):
    video = two_voices[0]
    tracker = FakeFaceTracker([None])
    _run(video, tracker, tmp_path, video=False)
    folder = tmp_path / "talk"
    (folder / "stale.wav").write_bytes(b"old")
    _run(video, tracker, tmp_path, video=False)
    assert not (folder / "stale.wav").exists()
    before = sorted(p.name for p in folder.iterdir())

    calls = []

    def failing_remux(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise MediaError("disk full")
        return real_remux(*args, **kwargs)

    real_remux = media.remux
    monkeypatch.setattr(media, "remux", failing_remux)
    with pytest.raises(MediaError, match="disk full"):
        _run(video, tracker, tmp_path)
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk"]  # no partial folder left
    assert sorted(p.name for p in folder.iterdir()) == before      # the old result is intact


def test_two_inputs_with_the_same_name_get_distinct_folders(two_voices, tmp_path):
    from avsplit.outputs import folder_name

    taken: set[str] = set()
    first = tmp_path / "a" / "clip.mp4"
    second = tmp_path / "b" / "clip.mp4"
    assert [folder_name(first, taken), folder_name(second, taken), folder_name(first, set())] == \
        ["clip", "clip-2", "clip"]


def test_windowed_decisions_follow_a_voice_that_changes_slot_halfway():
    """Over a long input the separator may swap slots between chunks: the windowed decisions
    follow the face's voice into the other slot, which one whole-clip correlation cannot."""
    from avsplit.associate import associate_windows, frame_weights

    seconds = 60.0
    voice = voice_like(30, seconds)
    other = voice_like(31, seconds, f0_range=(200, 240))
    half = int(len(voice) / 2)
    slot0 = np.concatenate([voice[:half], other[half:]])
    slot1 = np.concatenate([other[:half], voice[half:]])
    times = np.arange(0, seconds, 0.04)
    face = VisualTrack(0, "face", times, np.tile([0.1, 0.1, 0.5, 0.6], (len(times), 1)),
                       _jaw_like(voice, times))
    envs = [speech_envelope(x, RATE) for x in (slot0, slot1)]
    windows = associate_windows(np.stack([e for e, _ in envs]), envs[0][1], [face])
    assert len(windows) >= 4 and windows[0].start_s == 0 and abs(windows[-1].end_s - seconds) < 0.1
    frames = np.arange(0, seconds, 0.016)
    weights = frame_weights(windows, [lambda asg: [a.source_index for a in asg if a.onscreen]], 2,
                            frames)
    assert weights.shape == (1, 2, len(frames))
    early, late = frames < 20, frames > 40
    assert weights[0, 0, early].mean() > 0.9 and weights[0, 1, early].mean() < 0.1
    assert weights[0, 1, late].mean() > 0.9 and weights[0, 0, late].mean() < 0.1


def test_disk_masks_read_and_write_like_an_array(tmp_path):
    from avsplit.masks import DiskMasks

    rng = np.random.default_rng(0)
    ref = rng.random((3, 5, 40)).astype(np.float16)
    disk = DiskMasks(ref.shape, folder=tmp_path)
    disk[:, :, 0:25] = ref[:, :, 0:25]
    disk[:, :, 25:40] = ref[:, :, 25:40]
    np.testing.assert_array_equal(disk[:, :, 3:31], ref[:, :, 3:31])
    np.testing.assert_array_equal(disk[1, :, 10:12], ref[1, :, 10:12])
    np.testing.assert_array_equal(disk[[0, 2], 1:4, 5:9], ref[[0, 2], 1:4, 5:9])
    assert disk.shape == ref.shape and len(disk) == 3
    with pytest.raises(IndexError):
        disk[0, :, 0:3] = 1.0
    path = disk.path
    disk.close()
    assert not path.exists()


def test_long_input_masks_on_disk_give_the_same_stems(two_voices, tmp_path, monkeypatch):
    """The speech mode keeps long inputs' masks in files (memory flat in the length); forcing
    that path on a short clip changes no sample of the stems."""
    import avsplit.masks

    video, a, b, a48, b48 = two_voices
    tracker = FakeFaceTracker([voice_like(10, SECONDS, f0_range=(95, 110))])
    _run(video, tracker, tmp_path / "memory", video=False)
    monkeypatch.setattr(avsplit.masks, "IN_MEMORY_BYTES", 0)
    made = []
    real = avsplit.masks.DiskMasks.__init__

    def spy(self, *args, **kwargs):
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(avsplit.masks.DiskMasks, "__init__", spy)
    _run(video, tracker, tmp_path / "disk", video=False)
    assert len(made) == 2  # the separator's masks and the refined ones
    for name in ("onscreen.wav", "offscreen.wav"):
        x, _ = sf.read(tmp_path / "memory" / "talk" / name, dtype="float32")
        y, _ = sf.read(tmp_path / "disk" / "talk" / name, dtype="float32")
        np.testing.assert_allclose(y, x, atol=1e-6)
