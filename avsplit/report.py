"""``--report``: one self-contained HTML page that shows a run instead of its JSON.

The page holds, all inline (no network and no other file is needed to view it): the
audio-visual event timeline (tracks x time, bands where each is audible and visible,
:mod:`avsplit.events`), one waveform and an audio player per stem (Opus in Ogg, base64), a
thumbnail of each face or instrument track with its box drawn on the frame, the sync score
(the lips offset of :mod:`avsplit.sync`, and the association's per-face r and z), and the
manifest's notes. Plots are drawn with matplotlib (Agg) into inline SVG; thumbnails are JPEG.
A small inline script writes what loaded into ``#status`` (players, players whose audio
decoded, timeline), so a headless browser can check the page.
"""

from __future__ import annotations

import base64
import html
import io
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avsplit import media
from avsplit.errors import AvsplitError

COLOURS = {(1, 1): "#2e7d32", (0, 1): "#90caf9", (1, 0): "#ef6c00"}
LEGEND = {(1, 1): "audible and visible", (0, 1): "visible, not audible",
          (1, 0): "audible, not visible"}
WAVE_COLUMNS = 1200
THUMB_SIDE = 240
OPUS_KBPS = 64


@dataclass
class Player:
    """One audio player: ``name`` (file or stem name), ``label``, ``path`` of the audio file,
    ``info`` (a short line under it)."""

    name: str
    label: str
    path: Path
    info: str = ""


@dataclass
class Thumb:
    """One track thumbnail: ``track`` id, ``label``, ``t`` seconds of the frame to show,
    ``box`` ``[x0, y0, x1, y1]`` normalised 0..1, ``info`` line."""

    track: str
    label: str
    t: float
    box: list[float]
    info: str = ""


@dataclass
class Page:
    """What a report shows (see the module docstring); ``facts``: ``(name, value)`` rows."""

    title: str
    video: Path | None
    duration: float
    facts: list[tuple[str, str]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    players: list[Player] = field(default_factory=list)
    thumbs: list[Thumb] = field(default_factory=list)
    sync: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def timeline_svg(events: list[dict], duration: float) -> str:
    """Inline SVG of the event timeline: one row per ``(track, label)``, a band per segment
    coloured by audible/visible (:data:`COLOURS`), time in seconds along x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = list(dict.fromkeys((e["track"], e["label"]) for e in events))
    fig, ax = plt.subplots(figsize=(10, 0.8 + 0.45 * max(1, len(rows))))
    for i, (track, label) in enumerate(rows):
        for e in events:
            if (e["track"], e["label"]) == (track, label):
                ax.broken_barh([(e["start_s"], e["end_s"] - e["start_s"])], (i - 0.35, 0.7),
                               color=COLOURS[(int(e["audible"]), int(e["visible"]))])
    ax.set_yticks(range(len(rows)), [f"{t} ({lab})" if t != lab else t for t, lab in rows])
    ax.set_ylim(-0.6, max(1, len(rows)) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, max(duration, 1e-3))
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(handles=[Patch(color=COLOURS[k], label=v) for k, v in LEGEND.items()],
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    if not rows:
        ax.text(0.5, 0.5, "no events", transform=ax.transAxes, ha="center", va="center")
    return _svg(fig)


def waveform(path: Path, columns: int = WAVE_COLUMNS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stem's waveform (mono mix of its channels) for plotting: ``(times [K] s, min [K],
    max [K])`` over ``columns`` time slices, read block by block (a long stem is never held
    whole)."""
    import soundfile as sf

    with sf.SoundFile(path) as f:
        per = max(1, int(np.ceil(f.frames / columns)))
        lo, hi = [], []
        for block in f.blocks(blocksize=per * 64, dtype="float32", always_2d=True):
            mono = block.mean(axis=1)
            m = np.pad(mono, (0, (-len(mono)) % per)).reshape(-1, per)
            lo.append(m.min(axis=1))
            hi.append(m.max(axis=1))
        rate = f.samplerate
    lo = np.concatenate(lo) if lo else np.zeros(1)
    hi = np.concatenate(hi) if hi else np.zeros(1)
    return np.arange(len(lo)) * per / rate, lo, hi


def waveform_svg(wave: tuple[np.ndarray, np.ndarray, np.ndarray], duration: float,
                 peak: float) -> str:
    """Inline SVG of a :func:`waveform`, on a ``±peak`` scale (one scale for all stems of a
    page, so a quiet stem looks quiet)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, lo, hi = wave
    fig, ax = plt.subplots(figsize=(10, 1.3))
    ax.fill_between(t, lo, hi, color="#37474f", linewidth=0)
    peak = max(peak, 1e-3)
    ax.set_ylim(-peak * 1.05, peak * 1.05)
    ax.set_xlim(0, max(duration, 1e-3))
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    return _svg(fig)


def opus_data_uri(path: Path) -> str:
    """``data:audio/ogg;base64,...`` of ``path`` encoded as Opus (``OPUS_KBPS`` kb/s).

    Raises:
        AvsplitError: ffmpeg cannot encode it.
    """
    cmd = [media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", f"file:{path}",
           "-map", "0:a:0", "-c:a", "libopus", "-b:a", f"{OPUS_KBPS}k", "-f", "ogg", "pipe:1"]
    res = subprocess.run(cmd, capture_output=True)
    if res.returncode != 0 or not res.stdout:
        last = (res.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise AvsplitError(f"could not encode {path.name} for the report ({last})")
    return "data:audio/ogg;base64," + base64.b64encode(res.stdout).decode()


def thumbnails(video: Path, thumbs: list[Thumb], side: int = THUMB_SIDE) -> list[str]:
    """``data:image/jpeg;base64,...`` per thumb: the frame nearest ``thumb.t`` (one decode of
    the video at analysis size) with the box drawn, scaled to ``side`` px on the longer side;
    an empty string when no frame could be decoded."""
    import cv2

    if not thumbs:
        return []
    want = [th.t for th in thumbs]
    best: list[tuple[float, np.ndarray | None]] = [(np.inf, None) for _ in thumbs]
    for t, frame in media.iter_frames(video, max_side=640):
        for i, w in enumerate(want):
            if abs(t - w) < best[i][0]:
                best[i] = (abs(t - w), frame)
        if t > max(want) + 1.0:
            break
    out = []
    for th, (_, frame) in zip(thumbs, best):
        if frame is None:
            out.append("")
            continue
        h, w = frame.shape[:2]
        scale = side / max(h, w)
        w, h = max(1, int(w * scale)), max(1, int(h * scale))
        img = np.ascontiguousarray(cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1])
        x0, y0, x1, y1 = (np.clip(np.nan_to_num(th.box, nan=0.0), 0, 1) * [w, h, w, h]).astype(int)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), (0, 255, 0), 2)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        out.append("data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode() if ok else "")
    return out


_STYLE = """body{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:2px 10px 2px 0;text-align:left;vertical-align:top}
.stem{margin:10px 0 18px}.thumbs{display:flex;flex-wrap:wrap;gap:14px}
.thumb{font-size:.9em}.thumb img{display:block;border:1px solid #999}svg{max-width:100%;height:auto}
#status{color:#888;font-size:.8em}"""

_SCRIPT = """(function(){var a=document.querySelectorAll('audio'),n=0;
function show(){var t=document.querySelectorAll('#timeline svg').length;
document.getElementById('status').textContent='players='+a.length+' ready='+n+' timeline='+t;}
a.forEach(function(p){if(p.readyState>=1){n++;}else{p.addEventListener('loadedmetadata',
function(){n++;show();});}});show();})();"""


def render(page: Page) -> str:
    """The HTML of a :class:`Page` (plots, audio and thumbnails inlined)."""
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(page.title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{esc(page.title)}</h1>"]
    parts.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                                     for k, v in page.facts) + "</table>")
    parts.append("<h2>Sync</h2>" + "".join(f"<p>{esc(s)}</p>" for s in page.sync or ["not measured"]))
    parts.append(f"<h2>Timeline</h2><div id='timeline'>{timeline_svg(page.events, page.duration)}</div>")
    if page.thumbs and page.video is not None:
        parts.append("<h2>Tracks</h2><div class='thumbs'>")
        for th, uri in zip(page.thumbs, thumbnails(page.video, page.thumbs)):
            img = f"<img src='{uri}' alt='track {esc(th.track)}'>" if uri else "<p>(no frame)</p>"
            parts.append(f"<div class='thumb'>{img}<b>{esc(th.track)}</b> {esc(th.label)}"
                         f"<br>{esc(th.info)}</div>")
        parts.append("</div>")
    parts.append("<h2>Audio</h2><p><small>waveforms on one scale</small></p>")
    waves = [waveform(p.path) for p in page.players]
    peak = max([float(max(np.abs(lo).max(), np.abs(hi).max())) for _, lo, hi in waves] or [1.0])
    for p, wave in zip(page.players, waves):
        parts.append(f"<div class='stem'><b>{esc(p.name)}</b> {esc(p.label)} <small>{esc(p.info)}"
                     f"</small><br><audio controls preload='metadata' src='{opus_data_uri(p.path)}'>"
                     f"</audio>{waveform_svg(wave, page.duration, peak)}</div>")
    parts.append("<h2>Notes</h2>" + ("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in page.notes)
                                     + "</ul>" if page.notes else "<p>none</p>"))
    parts.append(f"<p id='status'></p><script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_page(page: Page, path: Path) -> Path:
    """Render ``page`` to ``path`` atomically.

    Raises:
        AvsplitError: it cannot be written (nothing is left behind).
    """
    from avsplit.outputs import write_text_atomic

    return write_text_atomic(path, render(page), "the report", "check the folder")


def _longest_seen(ranges: list[list[float]], fallback: float) -> float:
    if not ranges:
        return fallback
    a, b = max(ranges, key=lambda r: r[1] - r[0])
    return (a + b) / 2


def _lips_offset(clip, tracks) -> list[str]:
    """The sync line of a clip with face tracks: :func:`avsplit.sync.offset_from` on the
    clip's cached mono audio and face tracks (no extra decode), judged as ``avsplit sync``."""
    from avsplit.sync import ENV_RATE, SyncRefused, describe, judge, offset_from

    if not tracks:
        return ["audio offset: not measured (no face visible; `avsplit sync` can try motion)"]
    found = offset_from(clip.mono(ENV_RATE), ENV_RATE, tracks, np.zeros((0, 2, 2)), np.zeros(0))
    try:
        return ["audio offset: " + describe({**judge(found, clip.path), "fixed": None})]
    except SyncRefused as exc:
        return [f"audio offset: {exc.args[0].split(': ', 1)[-1]}"]


def separate_page(result, folder: Path, clip) -> Page:
    """The :class:`Page` of an ``avsplit separate`` result whose files are in ``folder``."""
    info = clip.info
    duration = clip.samples / clip.rate
    page = Page(f"avsplit separate: {clip.path.name}", clip.path if clip.has_video else None,
                duration, events=list(result.events), notes=list(dict.fromkeys(result.notes)))
    page.facts = [("input", str(clip.path)), ("mode", result.mode),
                  ("duration", f"{duration:.2f} s"),
                  ("audio", f"{clip.rate} Hz, {clip.channels} ch"),
                  ("models", ", ".join(m.get("name", "?") for m in result.models))]
    if info.video is not None:
        page.facts.append(("video", f"{info.video.width}x{info.video.height} @ {info.video.fps:.2f} fps"))
    for st in result.stems:
        audio = [f for f in st.files if not f.endswith(".mp4")]
        if audio:
            where = "on-screen" if st.onscreen else "off-screen"
            extra = " (silent)" if st.fields.get("silent") else ""
            page.players.append(Player(audio[0], st.label, folder / audio[0],
                                       f"{where}, {100 * st.energy_share:.1f} % of the mixture's energy{extra}"))
    faces = clip.cache.get("faces", [])
    page.sync = _lips_offset(clip, [t for t in faces if t.kind == "face"])
    for src in result.sources:
        for s in src.get("sync", []):
            page.sync.append(f"source {src['source']} vs face {s['track_id']}: r={s['r']:.2f}, "
                             f"z={s['z']:.1f}, lag {s['lag_s']:+.2f} s"
                             + (" (matched)" if src.get("track_id") == s["track_id"] else ""))
    for tr in result.tracks:
        page.thumbs.append(Thumb(str(tr["track_id"]), tr["label"], _longest_seen(tr["seen_ranges"], 0.0),
                                 tr["mean_box"], f"seen {100 * tr['seen_fraction']:.0f} % of frames"))
    w = float(info.video.width) if info.video else 1.0
    h = float(info.video.height) if info.video else 1.0
    for st in result.stems:
        box = st.fields.get("box")
        if box is not None:
            page.thumbs.append(Thumb(st.name, st.label, duration / 2,
                                     [box[0] / w, box[1] / h, box[2] / w, box[3] / h],
                                     f"visual confidence {st.fields.get('visual_confidence') or 0:.2f}"))
    return page


def write_report(result, folder: Path, clip) -> Path:
    """Write ``folder/report.html`` for an ``avsplit separate`` result (``folder`` holds its
    written stems). Raises :class:`AvsplitError` when it cannot."""
    return write_page(separate_page(result, Path(folder), clip), Path(folder) / "report.html")


def write_localize_report(result: dict, clip, path: Path) -> Path:
    """Write the report of an ``avsplit localize`` result to ``path``: the timeline, the
    mixture's player and waveform, face and instrument thumbnails, the lips offset, each
    face's sync r/z, and the notes. Raises :class:`AvsplitError` when it cannot."""
    import tempfile

    import soundfile as sf

    duration = float(result["duration"])
    page = Page(f"avsplit localize: {clip.path.name}", clip.path, duration,
                events=result.get("events", []), notes=list(result.get("notes", [])))
    page.facts = [("input", str(clip.path)), ("duration", f"{duration:.2f} s"),
                  ("frames analysed", f"{len(result['frames'])} ({result['fps_analysed']:.1f} fps)")]
    if result.get("overlay"):
        page.facts.append(("overlay", result["overlay"]))
    faces = clip.cache.get("faces", [])
    page.sync = _lips_offset(clip, [t for t in faces if t.kind == "face"])
    for tr in result["tracks"]:
        page.sync.append(f"face {tr['track_id']}: r={tr['sync_r']:.2f}, z={tr['sync_z']:.1f}, "
                         f"lag {tr['lag_s']:+.2f} s")
        seen = [e for e in page.events if e["track"] == str(tr["track_id"]) and e["visible"]]
        t = _longest_seen([[e["start_s"], e["end_s"]] for e in seen], duration / 2)
        page.thumbs.append(Thumb(str(tr["track_id"]), "face", t, tr["mean_box"],
                                 f"sync r {tr['sync_r']:.2f}"))
    for ins in result.get("instruments", []):
        page.thumbs.append(Thumb(ins["name"], ins["label"], duration / 2, ins["box"],
                                 "silent" if ins["silent"] else f"{100 * ins['audio_share']:.0f} % of the sound"))
    with tempfile.TemporaryDirectory(prefix="avsplit-report-") as tmp:
        wav = Path(tmp) / "mixture.wav"
        with sf.SoundFile(wav, "w", clip.rate, clip.channels, subtype="FLOAT") as f:
            block = 1 << 20
            for s in range(0, clip.samples, block):
                f.write(clip.read(s, s + block).T)
        page.players.append(Player("mixture", "the input's audio", wav))
        return write_page(page, Path(path))
