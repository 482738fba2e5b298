"""``avsplit localize`` and the motion/audio map, on a generated clip.

The clip (4 s, 320x240, 25 fps): a white square in the LEFT half moves exactly while a 440 Hz
tone burst sounds and stands still otherwise; a distractor square in the RIGHT half moves only
in the silences. No face anywhere, so only the motion map can place the sound.

The instrument layer is tested with synthetic masks and boxes (no separator weights needed):
the loudness and drawing functions directly, and ``localize_file`` with
``analyse_instruments`` replaced by a fake analysis of the generated clip.

The face path runs on a second generated clip (a still picture, syllable-like sound) with a
fake face tracker passed through ``Engine(face_tracker=...)``: its one face's jaw opening
follows the known envelope of the sound.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import soundfile as sf

from avsplit import media
from avsplit.associate import NATURAL_LAG_S, speech_envelope
from avsplit.engine import Engine
from avsplit.errors import AvsplitError, WeightsUnavailableError
from avsplit.vision.motion import audio_motion_map, motion_energy, sliding_audio_motion_map
from helpers import SyllableFaceTracker, syllable_clip, syllable_envelope

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


def _spy_opens(mp: pytest.MonkeyPatch, path: Path) -> list[str]:
    """Record every PyAV open of ``path`` and every process started with it in its arguments
    (ffmpeg runs): the list of what opened it, filled while ``mp`` is active."""
    seen: list[str] = []
    real_open, real_popen = av.open, subprocess.Popen

    def spy_open(file, *args, **kwargs):
        if str(path) in str(file):
            seen.append(f"av.open {file}")
        return real_open(file, *args, **kwargs)

    class SpyPopen(real_popen):
        def __init__(self, args, *a, **k):
            if any(str(path) in str(x) for x in (args if isinstance(args, (list, tuple)) else [args])):
                seen.append(f"process {Path(str(args[0])).name}")
            super().__init__(args, *a, **k)

    mp.setattr(av, "open", spy_open)
    mp.setattr(subprocess, "Popen", SpyPopen)
    return seen


@pytest.fixture(scope="module")
def localized(clip, tmp_path_factory):
    """``(result dict, overlay path, opens)`` of one ``localize_file`` run with an overlay;
    ``opens`` lists what opened the input (see :func:`_spy_opens`)."""
    from avsplit.localize import localize_file

    overlay = tmp_path_factory.mktemp("localize_out") / "overlay.mp4"
    mp = pytest.MonkeyPatch()
    try:
        opens = _spy_opens(mp, clip)
        result = localize_file(clip, overlay_path=overlay)
    finally:
        mp.undo()
    return result, overlay, opens


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
    result, _, _ = localized
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


def test_localize_opens_the_input_once_per_decoder(localized):
    """One PyAV open for the clip (probe, the analysis decode and the overlay's decode, which
    rewinds the same container), one ffmpeg run (the audio); the overlay's sound comes from
    the decoded audio, so the overlay's ffmpeg never reads the input."""
    _, _, opens = localized
    assert sorted(o.split()[0] for o in opens) == ["av.open", "process"], opens


def test_overlay_video(localized, clip):
    result, overlay, _ = localized
    assert result["overlay"] == str(overlay) and overlay.exists()
    info, src = media.probe(overlay), media.probe(clip)
    assert info.has_audio
    assert (info.video.width, info.video.height) == (src.video.width, src.video.height)
    frames, _ = media.load_frames(overlay, max_side=None)
    assert abs(len(frames) - int(DURATION * FPS)) <= 1
    # the sound is the input's: the tone bursts at their times
    sound, rate = media.load_audio(overlay, sample_rate=RATE)
    env, env_t = speech_envelope(sound.mean(axis=0), rate)
    inside = np.array([_in_burst(x, margin=0.05) for x in env_t])
    outside = np.array([not _in_burst(x - 0.1) and not _in_burst(x + 0.1) for x in env_t])
    assert env[inside].mean() > 20 * env[outside].mean()
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


@pytest.mark.slow
def test_cli_localize_json_and_overlay(clip, tmp_path):
    from typer.testing import CliRunner

    from avsplit.cli import app

    out = tmp_path / "out.mp4"
    res = CliRunner().invoke(app, ["localize", str(clip), "--overlay", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["overlay"] == str(out) and out.exists()
    assert len(data["frames"]) == len(media.load_frames(clip, max_side=64)[1])


@pytest.mark.subprocess
def test_cli_missing_file_is_one_line(tmp_path):
    exe = Path(sys.executable).with_name("avsplit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "avsplit.cli"]
    res = subprocess.run([*cmd, "localize", str(tmp_path / "missing.mp4")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "missing.mp4" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


# ---------------------------------------------------------------- instrument layer

SEP_RATE, SEP_HOP, SEP_FFT = 11025, 256, 1024


def _flat_power(seconds: float, level: float = 1.0) -> np.ndarray:
    """``[bins, frames]`` STFT power of steady white-ish noise at the separator's rate."""
    frames = int(seconds * SEP_RATE) // SEP_HOP + 1
    return np.full((SEP_FFT // 2 + 1, frames), level, np.float32)


def test_stem_loudness_follows_its_mask():
    from avsplit.localize import LOUD_RANGE_DB, stem_loudness

    power = _flat_power(4.0, level=100.0)
    frames = power.shape[1]
    second_half = np.zeros_like(power)
    second_half[:, frames // 2:] = 1.0  # all of the sound, only in the second half
    tenth = np.full_like(power, 0.1)     # -20 dB of the sound, all the time
    times = np.arange(0, 4.0, 0.04)
    loud = stem_loudness(np.stack([second_half, tenth]), power, SEP_RATE, SEP_HOP, times)
    assert loud.shape == (2, len(times)) and loud.dtype == np.float32
    early, late = times < 1.8, times > 2.2
    assert np.all(loud[0, early] == 0) and np.all(loud[0, late] > 0.95)
    np.testing.assert_allclose(loud[1], 1 - 20 / LOUD_RANGE_DB, atol=0.02)
    # a split between two instances of one label: half the amplitude, 6 dB less
    halved = stem_loudness([tenth], power, SEP_RATE, SEP_HOP, times, gains=[0.5])
    np.testing.assert_allclose(halved[0], loud[1] - 6.02 / LOUD_RANGE_DB, atol=0.01)
    # digital silence: nothing is loud
    quiet = stem_loudness(np.stack([second_half]), power * 1e-14, SEP_RATE, SEP_HOP, times)
    assert np.all(quiet == 0)


def _instrument(name, colour, box, loud, heard=0.5, silent=False):
    from avsplit.overlay import Instrument

    return Instrument(name, name, colour, np.asarray(box, np.float64),
                       [float(v) * 100 for v in box], 0.82, heard, silent,
                       np.asarray(loud, np.float32))


def test_instrument_blob_follows_loudness_in_its_own_colour():
    from avsplit.overlay import INSTRUMENT_PALETTE, PALETTE, _draw, instrument_footprint

    assert not set(INSTRUMENT_PALETTE) & set(PALETTE)
    h, w, T = 120, 160, 10
    loud = np.r_[np.zeros(T // 2), np.ones(T // 2)].astype(np.float32)  # heard in the 2nd half
    colour = INSTRUMENT_PALETTE[0]
    heard = _instrument("violin", colour, [0.1, 0.2, 0.45, 0.8], loud)
    mute = _instrument("cello", INSTRUMENT_PALETTE[1], [0.6, 0.2, 0.9, 0.8], np.zeros(T),
                       heard=0.001, silent=True)
    drawn = [(ins, *instrument_footprint(ins.box, h, w)) for ins in (heard, mute)]
    (r0, r1, c0, c1), patch = drawn[0][1], drawn[0][2]
    assert patch.shape == (r1 - r0, c1 - c0) and patch.max() == pytest.approx(1.0)
    frame = np.full((h, w, 3), 100, np.uint8)
    heat = np.zeros((12, 16), np.float32)
    legend = (np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1, 1), np.float32))
    early = _draw(frame, heat, [], [], 1, legend, (h - 1, w - 1), drawn).astype(int)
    late = _draw(frame, heat, [], [], T - 1, legend, (h - 1, w - 1), drawn).astype(int)
    cy, cx = int(0.5 * h), int(0.275 * w)  # the violin box's centre
    centre = np.s_[cy - 3:cy + 3, cx - 3:cx + 3]
    assert np.all(early[centre] == 100)  # silent frame: no blob
    shift = late[centre].reshape(-1, 3).mean(axis=0) - 100
    want = np.asarray(colour, float) - 100
    assert np.linalg.norm(shift) > 0.5 * np.linalg.norm(want)  # a strong blob ...
    cos = shift @ want / (np.linalg.norm(shift) * np.linalg.norm(want))
    assert cos > 0.99  # ... in its own colour
    # the silent cello never gets a blob inside its box (only its outline and name tag)
    inner = np.s_[int(0.45 * h):int(0.75 * h), int(0.65 * w):int(0.85 * w)]
    assert np.all(late[inner] == 100)
    # far from both boxes nothing changes
    assert np.all(late[int(0.9 * h):, :] == 100)


def test_instrument_legend_lines():
    from avsplit.overlay import _instrument_text, _legend

    loud = np.zeros(3, np.float32)
    assert _instrument_text(_instrument("violin", (0, 0, 0), [0, 0, 1, 1], loud, heard=0.35)) == \
        "violin (seen 0.82, heard 35%)"
    assert _instrument_text(_instrument("cello", (0, 0, 0), [0, 0, 1, 1], loud, heard=0.001,
                                        silent=True)) == "cello (seen 0.82, silent)"
    plain, _ = _legend([], [], 240)
    both, _ = _legend([], [], 240, [_instrument("violin", (0, 230, 230), [0, 0, 1, 1], loud)])
    assert both.shape[0] > plain.shape[0]  # one more line
    assert (np.abs(both.astype(int) - (0, 230, 230)).sum(axis=2) < 30).any()  # its swatch


def test_localize_names_stay_importable():
    import avsplit.localize as loc
    import avsplit.overlay as ov

    for name in ("stem_loudness", "instrument_footprint", "Instrument", "PALETTE",
                 "INSTRUMENT_PALETTE", "LOUD_RANGE_DB", "OVERLAY_MAX_SIDE", "localize_file"):
        assert hasattr(loc, name), name
    assert loc.instrument_footprint is ov.instrument_footprint
    # data flows one way: the overlay never imports the analysis
    tree = ast.parse(Path(ov.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "avsplit.localize" not in imported


def test_other_instrument_errors_are_real_errors(video_with_audio, monkeypatch):
    """Only a missing/corrupt bundled weights file skips the instruments; any other error of
    the analysis (here an unreadable checkpoint) reaches the user."""
    import avsplit.localize as loc

    def broken(clip, engine, query, weights, progress):
        raise AvsplitError("weights file runs/x.pt is not an avsplit separator checkpoint")

    monkeypatch.setattr(loc, "analyse_instruments", broken)
    with pytest.raises(AvsplitError, match="not an avsplit separator checkpoint"):
        loc.localize_file(video_with_audio, device="cpu")


def test_missing_weights_file_is_an_error_before_any_work(clip, tmp_path):
    from avsplit.localize import localize_file

    with pytest.raises(AvsplitError, match="does not exist"):
        localize_file(clip, weights=tmp_path / "nope.pt")


def test_no_instrument_in_the_clip(localized):
    result, _, _ = localized
    assert result["instruments"] == []
    assert isinstance(result["notes"], list) and result["notes"]


@pytest.fixture(scope="module")
def with_fake_instruments(clip, tmp_path_factory):
    """``(result, overlay)`` of ``localize_file`` on the clip with ``analyse_instruments``
    replaced: a "violin" boxed in the empty bottom-left corner whose mask takes the whole sound
    (so it follows the tone bursts) and a silent "cello" over the RIGHT square."""
    import avsplit.localize as loc
    from avsplit.instruments import InstrumentAnalysis, InstrumentStem

    calls = []

    def fake(clip, engine, query, weights, progress):
        calls.append((query, weights, engine.device))
        frames = len(clip.mono(SEP_RATE)) // SEP_HOP + 1
        masks = np.zeros((2, SEP_FFT // 2 + 1, frames), np.float16)
        masks[0] = 1.0
        stems = [InstrumentStem("violin", "violin", 0, 1.0, [20.0, 170.0, 120.0, 235.0], 0.8),
                 InstrumentStem("cello", "cello", 1, 1.0, [200.0, 80.0, 270.0, 150.0], 0.6)]
        separator = SimpleNamespace(rate=SEP_RATE, hop=SEP_HOP, n_fft=SEP_FFT)
        return InstrumentAnalysis(stems, ["violin", "cello"], masks, np.array([1.0, 0.0]),
                                  separator, [], [], [])

    mp = pytest.MonkeyPatch()
    mp.setattr(loc, "analyse_instruments", fake)
    try:
        overlay = tmp_path_factory.mktemp("localize_inst") / "overlay.mp4"
        result = loc.localize_file(clip, overlay_path=overlay, device="cpu")
    finally:
        mp.undo()
    assert calls == [(None, None, "cpu")]
    return result, overlay


def test_instruments_in_json(with_fake_instruments):
    result, _ = with_fake_instruments
    json.dumps(result)
    violin, cello = result["instruments"]
    assert violin["name"] == "violin" and violin["label"] == "violin"
    assert violin["box"] == pytest.approx([20 / W, 170 / H, 120 / W, 235 / H], abs=1e-3)
    assert violin["box_px"] == [20.0, 170.0, 120.0, 235.0]
    assert violin["visual_confidence"] == 0.8 and violin["audio_share"] == 1.0
    assert not violin["silent"] and cello["silent"]
    assert any("cello" in n and "silent" in n for n in result["notes"])
    loud = np.array(violin["loudness"])
    assert len(loud) == len(result["frames"])
    t = np.array([f["t"] for f in result["frames"]])
    during = np.array([_in_burst(x, margin=0.1) for x in t])
    gap = np.array([all(x < a - 0.25 or x >= b + 0.25 for a, b in BURSTS) for x in t])
    assert during.sum() >= 15 and gap.sum() >= 10
    assert loud[during].min() > 0.8 and loud[gap].max() < 0.3
    assert np.all(np.array(cello["loudness"]) == 0)
    # the face/motion part of the result is unchanged by the instruments
    assert result["frames"][int(1.8 * FPS)]["peak"] is not None


def test_instrument_overlay_colour_follows_the_sound(with_fake_instruments):
    from avsplit.localize import INSTRUMENT_PALETTE

    result, overlay = with_fake_instruments
    frames, _ = media.load_frames(overlay, max_side=None)
    colour = np.asarray(INSTRUMENT_PALETTE[0], float)

    def tint(k):  # mean colour in the middle of the violin box (black background there)
        patch = frames[k][195:215, 55:85].reshape(-1, 3).astype(float)
        return patch.mean(axis=0)

    loud_k, quiet_k = int(1.8 * FPS), int(1.3 * FPS)  # in a burst / in a silence
    assert np.linalg.norm(tint(quiet_k)) < 40  # black background, no blob
    shift = tint(loud_k) - tint(quiet_k)
    assert shift @ colour / (np.linalg.norm(shift) * np.linalg.norm(colour)) > 0.9
    assert np.linalg.norm(shift) > 60


def test_cli_localize_weights_option(clip, tmp_path):
    from typer.testing import CliRunner

    from avsplit.cli import app

    res = CliRunner().invoke(app, ["localize", "--help"])
    assert "--weights" in res.output
    res = CliRunner().invoke(app, ["localize", str(clip), "--weights", str(tmp_path / "no.pt")])
    assert res.exit_code == 1
    assert "no.pt does not exist" in res.output and "Traceback" not in res.output


# ---------------------------------------------------------------- face path (fake tracker)

FACE_BOX = (0.55, 0.15, 0.85, 0.65)  # normalised x0, y0, x1, y1 of the fake face
SPEECH_DURATION = 5.0


def FakeFaceTracker(spans, lead: float) -> SyllableFaceTracker:
    return SyllableFaceTracker(spans, lead, FACE_BOX)


@pytest.fixture(scope="module")
def speech_clip(tmp_path_factory):
    """``(clip path, syllable spans)``: 5 s, 320x240 still grey picture at 25 fps, a voice-like
    buzz (120 Hz harmonics) shaped by the syllable envelope."""
    return syllable_clip(tmp_path_factory.mktemp("speechlike"), 3, SPEECH_DURATION, RATE, FPS,
                         W, H)


def test_localize_face_path_with_a_fake_tracker(speech_clip, tmp_path, monkeypatch):
    import avsplit.localize as loc

    path, spans = speech_clip
    tracker = FakeFaceTracker(spans, lead=NATURAL_LAG_S)

    def unavailable(clip, engine, query, weights, progress):
        raise WeightsUnavailableError("weights file /w/mobilenet_v2_imagenet.pth is missing")

    monkeypatch.setattr(loc, "analyse_instruments", unavailable)
    overlay = tmp_path / "faces.mp4"
    with Engine("cpu", face_tracker=tracker) as engine:
        result = loc.localize_file(path, overlay_path=overlay, engine=engine)
    # the tracker got the one analysis decode: every frame, at analysis size
    assert abs(len(tracker.shapes) - SPEECH_DURATION * FPS) <= 1
    assert set(tracker.shapes) == {(H, W, 3)}
    (face,) = result["tracks"]
    assert face["track_id"] == 0 and face["kind"] == "face"
    assert face["sync_r"] > 0.7 and face["sync_z"] > 2
    assert face["mean_box"] == pytest.approx(list(FACE_BOX), abs=1e-3)
    # a missing bundled model skips the instruments with a note; nothing else changes
    assert result["instruments"] == []
    assert any(n.startswith("instruments not shown") for n in result["notes"])
    frames = result["frames"]
    t = np.array([f["t"] for f in frames])
    loud = syllable_envelope(t, spans) > 0.5
    assert loud.sum() >= 20
    x0, y0, x1, y1 = FACE_BOX
    on_face = [f["peak"] is not None and x0 <= f["peak"][0] <= x1 and y0 <= f["peak"][1] <= y1
               and f["track_id"] == 0 for f, is_loud in zip(frames, loud) if is_loud]
    assert np.mean(on_face) >= 0.9
    quiet = [f for f in frames if syllable_envelope(np.array([f["t"] - 0.1, f["t"], f["t"] + 0.1]),
                                            spans).max() == 0]
    assert quiet and all(f["peak"] is None for f in quiet)
    assert result["overlay"] == str(overlay) and overlay.exists()
    # the event timeline: the face is heard and seen while it talks, only seen before
    events = result["events"]
    assert all(set(e) == {"start_s", "end_s", "track", "label", "audible", "visible", "score"}
               for e in events)

    def at(t):
        return [(e["audible"], e["visible"]) for e in events
                if e["track"] == "0" and e["start_s"] <= t < e["end_s"]]

    talking = [tt for tt, is_loud in zip(t, loud) if is_loud]
    assert np.mean([at(tt) == [(1, 1)] for tt in talking]) >= 0.9
    assert at(0.1) == [(0, 1)]  # before the first syllable (0.3 s)
    offscreen = sum(e["end_s"] - e["start_s"] for e in events if e["track"] == "offscreen")
    assert offscreen < 0.5  # the face explains the sound
