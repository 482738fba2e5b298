"""The audio-visual event timeline (``manifest.json`` ``events``, ``separate --events``) on a
generated clip: one face whose mouth follows voice A, A muted in a known interval while an
off-screen voice B talks there. The separate path runs with the ideal-ratio stand-in network
and a fake face tracker (see tests/test_separate.py), so the timeline is checked apart from
how well the trained network separates generated voices."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from helpers import RATE, voice_like
from test_separate import CLIP_RATE, SECONDS, FakeFaceTracker, IdealRatioNetwork

from avsplit.audio import resample
from avsplit.events import (CSV_COLUMNS, OFFSCREEN, active_ranges, mask_to_ranges, segments,
                            seen_ranges)

MUTE = (2.0, 3.5)  # A is silent here, B talks


def _gate(x: np.ndarray, start: float, end: float, inside: bool) -> np.ndarray:
    t = np.arange(len(x)) / RATE
    keep = (t >= start) & (t < end)
    return x * (keep if inside else ~keep)


@pytest.fixture(scope="module")
def muted_clip(tmp_path_factory, make_media):
    """``(video, a, b)``: 5 s testsrc video; audio = voice A outside ``MUTE`` + voice B inside
    it (lossless FLAC, 48 kHz stereo); a, b mono 16 kHz."""
    folder = tmp_path_factory.mktemp("events")
    a = _gate(voice_like(10, SECONDS, f0_range=(95, 110)), *MUTE, inside=False)
    b = _gate(voice_like(11, SECONDS, f0_range=(210, 240)), *MUTE, inside=True)
    b *= 0.1 / (np.abs(b).max() + 1e-9)
    mix = resample(a, RATE, CLIP_RATE) + resample(b, RATE, CLIP_RATE)
    wav = folder / "mix.wav"
    sf.write(wav, np.stack([mix, mix]).T, CLIP_RATE, subtype="FLOAT")
    video = make_media(folder / "talk.mkv", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                       "-i", wav, "-t", str(SECONDS), "-c:v", "libx264", "-preset", "veryfast",
                       "-pix_fmt", "yuv420p", "-c:a", "flac")
    return video, a, b


def _separate_cli(monkeypatch, tracker, voices, *args, network=IdealRatioNetwork):
    """``avsplit separate ARGS`` in-process with ``tracker`` and a stand-in ``network`` made
    from the voices (default: the ideal-ratio one)."""
    from typer.testing import CliRunner

    import avsplit.engine
    from avsplit.cli import app
    from avsplit.separator import Separator

    ideal = Separator(network(*voices), {"name": "stand-in", "file": "-", "sha256": "-"})
    monkeypatch.setattr(avsplit.engine, "MediaPipeFaceTracker", lambda: tracker)
    monkeypatch.setattr(avsplit.engine.Engine, "separator", lambda self, name, weights=None: ideal)
    return CliRunner().invoke(app, ["separate", *map(str, args)])


def _covered(rows, t: float) -> list[dict]:
    return [r for r in rows if float(r["start_s"]) <= t < float(r["end_s"])]


@pytest.mark.parametrize("mode", ["onscreen", "speakers"])
def test_events_csv_has_the_columns_and_the_muted_face_is_visible_not_audible(
        muted_clip, tmp_path, monkeypatch, mode):
    video, a, b = muted_clip
    tracker = FakeFaceTracker([a])  # the face's mouth follows A (still while A is muted)
    out_csv = tmp_path / "events.csv"
    res = _separate_cli(monkeypatch, tracker, (a, b), video, "-o", tmp_path / "out", "-q",
                        "--no-video", "--no-enhance", "--mode", mode, "--events", out_csv, "--json")
    assert res.exit_code == 0, res.output
    assert str(out_csv) in json.loads(res.stdout.splitlines()[0])["outputs"]
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "start_s,end_s,track,label,audible,visible,score"
    rows = list(csv.DictReader(lines))
    assert rows and all(r["audible"] in ("0", "1") and r["visible"] in ("0", "1") for r in rows)
    assert all(float(r["start_s"]) < float(r["end_s"]) and 0 <= float(r["score"]) <= 1 for r in rows)
    face = [r for r in rows if r["track"] == "0"]
    off = [r for r in rows if r["track"] == OFFSCREEN and r["label"] == "voice"]
    # while A talks: the face is audible and visible; while it is muted: visible only
    speaking = [t for t in np.arange(0.3, SECONDS - 0.3, 0.05)
                if not MUTE[0] - 0.3 < t < MUTE[1] + 0.3
                and np.abs(a[int(t * RATE) - 400:int(t * RATE) + 400]).max() > 0.05]
    assert speaking
    both = [t for t in speaking if any(r["audible"] == "1" and r["visible"] == "1"
                                       for r in _covered(face, t))]
    assert len(both) >= 0.9 * len(speaking)
    for t in np.arange(MUTE[0] + 0.3, MUTE[1] - 0.3, 0.1):
        here = _covered(face, t)
        assert len(here) == 1 and here[0]["visible"] == "1" and here[0]["audible"] == "0"
    # the off-screen voice: audible, never visible, heard inside the muted interval only
    assert off and all(r["audible"] == "1" and r["visible"] == "0" for r in off)
    heard = sum(float(r["end_s"]) - float(r["start_s"]) for r in off)
    inside = sum(max(0.0, min(float(r["end_s"]), MUTE[1]) - max(float(r["start_s"]), MUTE[0]))
                 for r in off)
    assert inside >= 0.8 * heard and inside >= 0.5 * (MUTE[1] - MUTE[0])
    # the manifest holds the same rows
    manifest = json.loads((tmp_path / "out" / "talk" / "manifest.json").read_text())
    assert [{k: str(v) for k, v in e.items()} for e in manifest["events"]] == rows
    assert list(manifest["events"][0]) == list(CSV_COLUMNS)


def test_events_of_several_inputs_go_to_one_file_each(muted_clip, tmp_path, monkeypatch):
    video, a, b = muted_clip
    other = tmp_path / "copy" / video.name  # the same name in another folder: clip-2
    other.parent.mkdir()
    shutil.copy(video, other)
    res = _separate_cli(monkeypatch, FakeFaceTracker([a]), (a, b), video, other, "-o",
                        tmp_path / "out", "-q", "--no-video", "--no-enhance", "--events",
                        tmp_path / "ev.csv")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["ev-talk-2.csv", "ev-talk.csv"]


def test_events_to_a_missing_folder_fail_in_one_line_and_leave_nothing(muted_clip, tmp_path,
                                                                       monkeypatch):
    video, a, b = muted_clip
    res = _separate_cli(monkeypatch, FakeFaceTracker([a]), (a, b), video, "-o", tmp_path / "out",
                        "-q", "--no-video", "--no-enhance", "--events", tmp_path / "no" / "ev.csv")
    assert res.exit_code == 1 and "cannot write the events" in res.stderr
    assert not (tmp_path / "out" / "talk").exists()


def test_segments_split_where_audible_or_visible_changes():
    assert segments([[1.0, 2.0]], [[0.0, 3.0]]) == [(0.0, 1.0, False, True), (1.0, 2.0, True, True),
                                                    (2.0, 3.0, False, True)]
    assert segments([[0.0, 1.0]], []) == [(0.0, 1.0, True, False)]
    assert segments([], []) == []


def test_active_ranges_ignore_leakage_and_silence():
    hop = 0.01
    t = np.arange(500) * hop
    voice = np.where((t > 1) & (t < 3), 0.1, 0.0)
    other = np.where((t > 2) & (t < 4), 0.1, 0.0)
    mix = np.sqrt(voice ** 2 + other ** 2)
    (heard,) = active_ranges(voice, mix, hop)
    assert heard == pytest.approx([1.0, 3.0], abs=0.06)
    leak = 0.01 * other  # -40 dB of the other voice: not heard as this source
    assert active_ranges(leak, mix, hop) == []
    assert mask_to_ranges(np.array([1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1], bool), 0.1) == \
        [[0.0, 0.6]]


def test_seen_ranges_bridge_short_gaps():
    t = np.arange(100) * 0.04
    seen = np.ones(100, bool)
    seen[20:25] = False  # 0.2 s: bridged
    seen[50:80] = False  # 1.2 s: a gap
    assert seen_ranges(t, seen) == [[0.0, 2.0], [3.2, 4.0]]


class OneSlotNetwork(IdealRatioNetwork):
    """A stand-in network that leaves both voices in slot 0 (they never overlap, so a real
    separator has no reason to split them): slot 0 = everything, slot 1 and background empty."""

    def masks(self, spec):
        import torch

        ones = torch.ones_like(self.refs[:1, :, :spec.shape[-1]])
        return torch.cat([ones, 0 * ones, 0 * ones])[None]


def test_a_voice_sharing_the_faces_slot_is_offscreen_while_the_mouth_is_still(
        muted_clip, tmp_path, monkeypatch):
    video, a, b = muted_clip
    res = _separate_cli(monkeypatch, FakeFaceTracker([a]), (a, b), video, "-o", tmp_path / "out",
                        "-q", "--no-video", "--no-enhance", "--events", tmp_path / "ev.csv",
                        network=OneSlotNetwork)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "ev.csv").read_text().splitlines()))
    face = [r for r in rows if r["track"] == "0"]
    # B talks, A's mouth is still (a moving mouth covers the sound 0.3 s beyond it)
    for t in np.linspace(MUTE[0] + 0.45, MUTE[1] - 0.5, 8):
        assert [(r["audible"], r["visible"]) for r in _covered(face, t)] == [("0", "1")]
        assert any(r["audible"] == "1" and r["visible"] == "0" for r in _covered(rows, t)
                   if r["track"] == OFFSCREEN)
    assert any(r["audible"] == "1" and r["visible"] == "1" for r in face)
