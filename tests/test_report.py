"""``--report``: report.html in the clip folder, self-contained, and loaded by a real headless
browser (Debian ``chromium``; that test skips where none is installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from test_events import _separate_cli, muted_clip  # noqa: F401 (a fixture)
from test_separate import FakeFaceTracker

from avsplit.associate import NATURAL_LAG_S
from helpers import SyllableFaceTracker, syllable_clip

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def report(muted_clip, tmp_path_factory):  # noqa: F811
    """``(report.html path, its text)`` of ``separate --mode speakers --report`` on the muted
    clip (one face in sync with voice A, an off-screen voice B)."""
    video, a, b = muted_clip
    out = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    try:
        res = _separate_cli(mp, FakeFaceTracker([a]), (a, b), video, "-o", out, "-q", "--no-video",
                            "--no-enhance", "--mode", "speakers", "--report", "--json")
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    path = out / "talk" / "report.html"
    (summary,) = [json.loads(x) for x in res.stdout.splitlines() if x.strip()]
    assert str(path) in summary["outputs"]
    assert json.loads((out / "talk" / "manifest.json").read_text())["report"] == "report.html"
    return path, path.read_text()


def test_report_is_one_self_contained_file_with_players_timeline_and_thumbnails(report):
    path, text = report
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "manifest.json", "offscreen.wav", "report.html", "speaker-0.wav"]
    # nothing is fetched at view time: no external src/href (SVG namespaces are not fetched)
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", text)
    assert not re.search(r"""src=["'](?!data:)""", text)
    assert text.count("<audio ") == 2 and text.count("data:audio/ogg;base64,") == 2
    assert "<div id='timeline'><svg" in text
    assert text.count("data:image/jpeg;base64,") == 1  # the one face track, with its box
    assert "audible and visible" in text and "visible, not audible" in text
    assert "audio offset:" in text  # the sync score
    assert "offscreen (voice)" in text  # the off-screen voice has its timeline row


@pytest.mark.subprocess
@pytest.mark.skipif(BROWSER is None, reason="no chromium installed (apt-get install chromium)")
def test_report_loads_in_a_headless_browser(report, tmp_path):
    path, _ = report
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
           "--virtual-time-budget=10000", "--dump-dom", path.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    status = re.search(r'<p id="status">players=(\d+) ready=(\d+) timeline=(\d+)</p>', dom)
    assert status, dom[-2000:]
    players, ready, timeline = map(int, status.groups())
    assert players == 2 and ready == 2 and timeline == 1  # both players decoded their audio


def test_localize_report_next_to_the_input(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import avsplit.engine
    import avsplit.localize as loc
    from avsplit.cli import app
    from avsplit.errors import WeightsUnavailableError

    path, spans = syllable_clip(tmp_path, 3, 4.0)
    monkeypatch.setattr(avsplit.engine, "MediaPipeFaceTracker",
                        lambda: SyllableFaceTracker(spans, NATURAL_LAG_S))

    def unavailable(*args):
        raise WeightsUnavailableError("weights file mobilenet_v2_imagenet.pth is missing")

    monkeypatch.setattr(loc, "analyse_instruments", unavailable)
    res = CliRunner().invoke(app, ["localize", str(path), "--report", "-q"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "speech_report.html").read_text()
    assert text.count("<audio ") == 1 and "<div id='timeline'><svg" in text
    assert "audio offset: audio in sync" in text and "face 0: r=" in text
