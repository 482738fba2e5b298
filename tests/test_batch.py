"""Batch runs: folders and globs, output templates, resume, workers, and the bad-input matrix.

Every input is made here (ffmpeg lavfi sources, numpy); each case checks the exit code, one
stderr line per failed input, and that nothing half-written is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from avsplit.batch import find_inputs
from avsplit.outputs import OutputLayout, check_template, safe_component
from helpers import json_lines

FAST = ["--no-video", "-q"]


def avsplit(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "avsplit.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def leftovers(folder: Path) -> list[Path]:
    """Hidden temporaries left in an output folder."""
    return [p for p in Path(folder).rglob(".*")] if Path(folder).exists() else []


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (children left behind)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("avsplit: error:")]


@pytest.fixture(scope="session")
def clip(media_dir, make_media) -> Path:
    """1.5 s, 160x120 at 25 fps, stereo 44.1 kHz tone (no face: all sound is off-screen)."""
    return make_media(media_dir / "small.mp4", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
                      "-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100", "-ac", "2",
                      "-t", "1.5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                      "-c:a", "aac")


@pytest.fixture()
def mixed_folder(tmp_path, clip) -> Path:
    """Two good clips, a zero-byte and a text ``.mp4``, a text note, a hidden clip and a
    sub-folder clip."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", ".hidden.mp4", "sub/c.mp4"):
        shutil.copy(clip, folder / name)
    (folder / "broken.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("not a video\n")
    (folder / "notes.txt").write_text("a note\n")
    return folder


# -- names and templates (no subprocess) --------------------------------------------------
@pytest.mark.parametrize("name,expected", [("..", "clip"), (".", "clip"), ("a/b", "a_b"),
                                           (".hidden", "hidden"), ("-x", "-x"),
                                           ("über clip", "über clip"), ("a\\b\x00", "a_b_")])
def test_safe_component_neutralises_climbing_and_separators(name, expected):
    assert safe_component(name) == expected


@pytest.mark.parametrize("template", ["../{source}.{ext}", "/tmp/{source}.{ext}", "{stem}.{ext}",
                                      "{stem}/{source}", "{stem}/{nope}/{source}.{ext}",
                                      "{stem!r}/{source}.{ext}", "{stem/{source}.{ext}",
                                      "a/../../{source}.{ext}"])
def test_bad_templates_are_refused(template):
    with pytest.raises(ValueError):
        check_template(template)


@pytest.mark.parametrize("stem", ["..", "../../etc", "/abs/path", "a/../..", "...", "\\..\\x"])
def test_no_input_name_writes_outside_the_output_folder(tmp_path, stem):
    for template in ("{stem}/{source}.{ext}", "{stem}_{source}.{ext}", "{parent}/{stem}/{source}.{ext}"):
        layout = OutputLayout(tmp_path / "out", stem, template, parent="../..")
        for p in (layout.manifest, layout.path("onscreen", "wav"), layout.path("..", "..")):
            assert p.resolve().is_relative_to((tmp_path / "out").resolve()), (stem, template, p)


def test_find_inputs_probes_folders_and_reports_what_it_skips(mixed_folder):
    found = find_inputs([mixed_folder])
    assert [x.path.name for x in found.inputs] == ["a.mp4", "b.mp4"]
    assert [(p.name, why) for p, why in found.skipped] == [("notes.txt", "not a media file")]
    assert [p.name for p, _ in found.missing] == ["broken.mp4", "text.mp4"]
    assert all("not a media file" in why for _, why in found.missing)
    deep = find_inputs([mixed_folder], recursive=True)
    assert "c.mp4" in [x.path.name for x in deep.inputs]
    assert [x.parent for x in deep.inputs if x.path.name == "c.mp4"] == ["sub"]
    globbed = find_inputs([str(mixed_folder / "*.mp4"), mixed_folder / "a.mp4"])
    assert [x.path.name for x in globbed.inputs] == ["a.mp4", "b.mp4"]
    assert len(globbed.missing) == 2
    nothing = find_inputs([str(mixed_folder / "*.mov"), mixed_folder / "sub" / "none.mp4"])
    assert not nothing.inputs and len(nothing.missing) == 2
    excluded = find_inputs([mixed_folder], recursive=True, exclude=[mixed_folder / "sub"])
    assert "c.mp4" not in [x.path.name for x in excluded.inputs]


# -- the CLI over folders --------------------------------------------------------------
@pytest.mark.subprocess
def test_folder_batch_interrupted_then_resumed_does_each_clip_once(tmp_path, mixed_folder):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "avsplit.cli", "separate", mixed_folder,
                             "-o", out, *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = out / "a" / "manifest.json"
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), proc.communicate()[1]
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if still_running:
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "interrupted by SIGTERM" in err and "--skip-existing" in err
    assert not leftovers(out), leftovers(out)
    assert not processes_mentioning(str(out))  # no ffmpeg child still writing
    stamp = first.stat().st_mtime_ns

    res = avsplit("separate", mixed_folder, "-o", out, "--no-video", "--json", "--skip-existing")
    assert res.returncode == 1, res.stderr
    lines = {Path(x["path"]).name: x for x in json_lines(res.stdout)}
    assert set(lines) == {"a.mp4", "b.mp4", "broken.mp4", "text.mp4", "notes.txt"}
    assert lines["a.mp4"]["status"] == "skipped" and first.stat().st_mtime_ns == stamp
    assert lines["b.mp4"]["status"] in ("done", "skipped")
    assert (out / "b" / "manifest.json").exists()
    assert lines["notes.txt"]["status"] == "skipped"
    for bad in ("broken.mp4", "text.mp4"):
        assert lines[bad]["status"] == "failed" and lines[bad]["error"]
        assert sum(bad in x for x in error_lines(res.stderr)) == 1, res.stderr
    assert ("1 done" in res.stderr or "0 done" in res.stderr) and "2 failed" in res.stderr
    assert not leftovers(out)


@pytest.mark.subprocess
def test_ctrl_c_during_a_remux_says_so_and_leaves_nothing(tmp_path, media_dir, make_media):
    long = make_media(media_dir / "remux-long.mp4", "-f", "lavfi", "-i",
                      "testsrc2=size=640x360:rate=25", "-f", "lavfi", "-i",
                      "sine=frequency=300:sample_rate=44100", "-t", "20", "-c:v", "libx264",
                      "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
    out = tmp_path / "out"
    # SIGINT at its default in the child: an earlier test may leave it ignored in this process,
    # and an ignored SIGINT is inherited (Python then installs no Ctrl-C handler)
    proc = subprocess.Popen([sys.executable, "-m", "avsplit.cli", "separate", long, "-o", out,
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:  # wait for the first stem file
        if any(out.glob(".*/*.wav")) if out.exists() else False:
            proc.send_signal(signal.SIGSTOP)  # frozen in the write phase until interrupted
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "Traceback" not in err
    assert not leftovers(out) and not (out / "remux-long").exists()
    assert not processes_mentioning(str(out))


@pytest.mark.subprocess
def test_existing_outputs_fail_unless_overwrite_or_skip_existing(tmp_path, clip):
    out = tmp_path / "out"
    assert avsplit("separate", clip, "-o", out, *FAST).returncode == 0
    again = avsplit("separate", clip, "-o", out, *FAST)
    assert again.returncode == 1
    assert len(error_lines(again.stderr)) == 1 and "--overwrite" in again.stderr
    stale = out / "small" / "stale.wav"
    stale.write_bytes(b"x")
    assert avsplit("separate", clip, "-o", out, *FAST, "--overwrite").returncode == 0
    assert not stale.exists()
    skipped = avsplit("separate", clip, "-o", out, *FAST, "--skip-existing", "--json")
    assert skipped.returncode == 0 and [x["status"] for x in json_lines(skipped.stdout)] == ["skipped"]
    both = avsplit("separate", clip, "-o", out, "--skip-existing", "--overwrite")
    assert both.returncode == 2


@pytest.mark.subprocess
def test_filename_template_keeps_odd_names_inside_the_output_folder(tmp_path, clip):
    src = tmp_path / "in"
    src.mkdir()
    names = ["...mp4", "-lead.mp4", "with space ü.mp4"]
    for n in names:
        shutil.copy(clip, src / n)
    out = tmp_path / "out"
    res = avsplit("separate", *[src / n for n in names], "-o", out, *FAST, "--json",
                  "--filename", "{stem}_{source}.{ext}")
    assert res.returncode == 0, res.stderr
    lines = json_lines(res.stdout)
    assert [x["status"] for x in lines] == ["done"] * 3
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(f"{s}_{k}" for s in ("clip", "-lead", "with space ü")
                             for k in ("manifest.json", "offscreen.wav", "onscreen.wav"))
    for line in lines:
        for p in line["outputs"]:
            assert Path(p).resolve().is_relative_to(out.resolve()) and Path(p).exists()
    manifest = json.loads((out / "clip_manifest.json").read_text())
    assert {f["file"] for f in manifest["files"]} == {"clip_onscreen.wav", "clip_offscreen.wav"}
    assert not (tmp_path / "onscreen.wav").exists()
    bad = avsplit("separate", src / names[1], "-o", out, "--filename", "../{source}.{ext}")
    assert bad.returncode == 2 and "--filename" in bad.stderr


@pytest.mark.subprocess
def test_jobs_run_in_worker_processes_with_the_same_outputs(tmp_path, clip):
    for n in ("one.mp4", "two.mp4", "three.mp4"):
        shutil.copy(clip, tmp_path / n)
    out = tmp_path / "out"
    res = avsplit("separate", tmp_path / "one.mp4", tmp_path / "two.mp4", tmp_path / "three.mp4",
                  tmp_path / "missing.mp4", "-o", out, *FAST, "--json", "--jobs", "2")
    assert res.returncode == 1, res.stderr
    status = {Path(x["path"]).name: x["status"] for x in json_lines(res.stdout)}
    assert status == {"one.mp4": "done", "two.mp4": "done", "three.mp4": "done",
                      "missing.mp4": "failed"}
    first, _ = sf.read(out / "one" / "offscreen.wav", always_2d=True)
    assert first.shape[1] == 2 and np.sqrt(np.mean(first ** 2)) > 0.01
    for n in ("two", "three"):  # the same input gives the same stems in every worker
        other, _ = sf.read(out / n / "offscreen.wav", always_2d=True)
        np.testing.assert_allclose(other, first, atol=1e-5)
    assert not leftovers(out)


# -- bad inputs ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def bad_inputs(media_dir, make_media, clip) -> dict[str, Path]:
    """The input matrix of the batch issue, each made here."""
    d = media_dir / "matrix"
    d.mkdir()
    v = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"]
    enc = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    tone = ["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100"]
    m = {}
    m["zero-byte"] = d / "zero.mp4"
    m["zero-byte"].write_bytes(b"")
    m["text-as-mp4"] = d / "text.mp4"
    m["text-as-mp4"].write_text("hello\n" * 100)
    full = make_media(d / "full.mp4", *v, *tone, "-t", "6", *enc, "-c:a", "aac",
                      "-movflags", "+faststart")
    data = full.read_bytes()
    m["truncated"] = d / "truncated.mp4"
    m["truncated"].write_bytes(data[: int(len(data) * 0.4)])
    m["no-audio"] = make_media(d / "noaudio.mp4", *v, "-t", "1", *enc)
    wav = d / "audio-only.wav"
    sf.write(wav, 0.3 * np.sin(np.arange(22050) * 0.05).astype(np.float32), 22050)
    m["no-video"] = wav
    m["silent"] = make_media(d / "silent.mp4", *v, "-f", "lavfi", "-i",
                             "anullsrc=r=44100:cl=stereo", "-t", "1.5", *enc, "-c:a", "aac")
    m["5.1"] = make_media(d / "six.mp4", *v, "-f", "lavfi", "-i",
                          "sine=frequency=300:sample_rate=48000", "-t", "1.5", *enc,
                          "-ac", "6", "-c:a", "aac")
    m["two-audio-streams"] = make_media(d / "two.mkv", *v, *tone, "-f", "lavfi", "-i",
                                        "sine=frequency=500:sample_rate=44100", "-t", "1.5",
                                        "-map", "0:v", "-map", "1:a", "-map", "2:a", *enc,
                                        "-c:a", "aac")
    m["vfr"] = make_media(d / "vfr.mp4", *v, *tone, "-t", "2", "-vf", "select='not(mod(n\\,3))'",
                          "-fps_mode", "vfr", *enc, "-c:a", "aac")
    m["4k"] = make_media(d / "uhd.mp4", "-f", "lavfi", "-i", "testsrc2=size=3840x2160:rate=25",
                         *tone, "-t", "1", *enc, "-c:a", "aac")
    m["8k-mono"] = make_media(d / "mono8k.mp4", *v, "-f", "lavfi", "-i",
                              "sine=frequency=300:sample_rate=8000", "-t", "1.5", *enc,
                              "-ac", "1", "-ar", "8000", "-c:a", "aac")
    m["under-1s"] = make_media(d / "short.mp4", *v, *tone, "-t", "0.4", *enc, "-c:a", "aac")
    return m


FAILS = {"zero-byte": "not a media file", "text-as-mp4": "not a media file",
         "no-audio": "no audio stream", "no-video": "no video stream"}
DONE = {"truncated": "truncated", "silent": "silent", "5.1": None,
        "two-audio-streams": "2 audio streams", "vfr": None, "4k": None, "8k-mono": None,
        "under-1s": None}


@pytest.mark.subprocess
def test_bad_input_matrix(tmp_path, bad_inputs):
    out = tmp_path / "out"
    res = avsplit("separate", *bad_inputs.values(), "-o", out, "--json")
    assert res.returncode == 1
    lines = {x["path"]: x for x in json_lines(res.stdout)}
    errors = error_lines(res.stderr)
    assert "Traceback" not in res.stderr
    for case, path in bad_inputs.items():
        line = lines[str(path)]
        if case in FAILS:
            assert line["status"] == "failed" and FAILS[case] in line["error"], (case, line)
            mine = [e for e in errors if str(path) in e]
            assert len(mine) == 1, (case, errors)
            assert not (out / path.stem).exists()
        else:
            assert line["status"] == "done", (case, line)
            if DONE[case]:
                assert any(DONE[case] in n for n in line["notes"]), (case, line["notes"])
            folder = out / path.stem
            info = sf.info(folder / "onscreen.wav")
            a, _ = sf.read(folder / "onscreen.wav", always_2d=True)
            b, _ = sf.read(folder / "offscreen.wav", always_2d=True)
            assert a.shape == b.shape and (folder / "onscreen.mp4").exists()
            if case == "5.1":
                assert info.channels == 6
            if case == "8k-mono":
                assert info.samplerate == 8000 and info.channels == 1
            if case == "truncated":
                assert 0.5 < info.duration < 5.0
    assert len(errors) == len(FAILS)
    assert not leftovers(out)


@pytest.mark.subprocess
def test_output_folder_that_is_a_file_or_read_only(tmp_path, clip):
    target = tmp_path / "file"
    target.write_text("x")
    res = avsplit("separate", clip, "-o", target, "-q")
    assert res.returncode == 1 and len(error_lines(res.stderr)) == 1
    assert "is a file" in res.stderr and target.read_text() == "x"
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:  # root writes through chmod: use a read-only mount instead
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro],
                                 capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("root without mount: cannot make a read-only folder")
    else:
        ro.chmod(0o555)
    try:
        res = avsplit("separate", clip, "-o", ro / "out", "-q")
        assert res.returncode == 1 and len(error_lines(res.stderr)) == 1, res.stderr
        assert "cannot write" in res.stderr and "Traceback" not in res.stderr
    finally:
        if mounted:
            subprocess.run(["umount", ro])
        else:
            ro.chmod(0o755)


@pytest.mark.subprocess
def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, media_dir, make_media):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs as a full disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", disk],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        long = make_media(media_dir / "long.mp4", "-f", "lavfi", "-i",
                          "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i",
                          "sine=frequency=300:sample_rate=44100", "-t", "4", "-c:v", "libx264",
                          "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
        res = avsplit("separate", long, "-o", disk, "-q")
        assert res.returncode == 1, res.stderr
        assert len(error_lines(res.stderr)) == 1 and "no space left" in res.stderr, res.stderr
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", disk])


@pytest.mark.subprocess
def test_weights_missing_wrong_or_not_a_checkpoint(tmp_path, clip):
    from avsplit.models.registry import weights_path

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    wrong = weights_path("instrument-separator")
    for weights, says in ((tmp_path / "no.pt", "does not exist"), (text, "not a checkpoint"),
                          (wrong, "give a checkpoint")):
        out = tmp_path / f"out-{says[:3]}"
        res = avsplit("separate", clip, "-o", out, "-q", "--weights", weights)
        assert res.returncode == 1, (weights, res.stderr)
        assert len(error_lines(res.stderr)) == 1 and says in res.stderr, res.stderr
        assert not any(out.rglob("*")) if out.exists() else True


@pytest.mark.subprocess
def test_ray_executor_gives_the_same_outputs_and_exit_codes(tmp_path, clip):
    pytest.importorskip("ray")
    for n in ("one.mp4", "two.mp4"):
        shutil.copy(clip, tmp_path / n)
    out = tmp_path / "out"
    res = avsplit("separate", tmp_path / "one.mp4", tmp_path / "two.mp4", tmp_path / "gone.mp4",
                  "-o", out, *FAST, "--json", "--executor", "ray", "--jobs", "2")
    assert res.returncode == 1, res.stderr
    status = {Path(x["path"]).name: x["status"] for x in json_lines(res.stdout)}
    assert status == {"one.mp4": "done", "two.mp4": "done", "gone.mp4": "failed"}
    a, _ = sf.read(out / "one" / "offscreen.wav", always_2d=True)
    b, _ = sf.read(out / "two" / "offscreen.wav", always_2d=True)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not leftovers(out)


@pytest.mark.subprocess
def test_localize_creates_its_output_folder_and_says_when_it_shrinks_the_picture(tmp_path, media_dir,
                                                                                  make_media):
    big = make_media(media_dir / "big.mp4", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=25",
                     "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100", "-t", "1",
                     "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
    target = tmp_path / "new" / "deeper" / "overlay.mp4"
    res = avsplit("localize", big, "-o", target, "--json", "-q")
    assert res.returncode == 0, res.stderr
    [line] = json_lines(res.stdout)
    assert line["status"] == "done" and line["outputs"] == [str(target)] and target.exists()
    from avsplit import media

    v = media.probe(target).video
    assert max(v.width, v.height) < 1920
    assert any(f"{v.width}x{v.height}" in n and "1920x1080" in n for n in line["notes"])
