"""The ``avsplit localize`` overlay: the heat, the instruments and the faces drawn on the video.

Rendering only: :mod:`avsplit.localize` computes what is drawn (the per-frame heat, the face
tracks and their sync scores, the instruments and their loudness) and hands it here; this
module never imports it (data flows one way: analysis -> overlay).

Drawn on each frame: the heat in TURBO colours (opacity up to ``ALPHA``; ``HEAT_WEIGHT_WITH_
INSTRUMENTS`` of that while an instrument is heard), one blob per instrument in its own colour
(``INSTRUMENT_PALETTE``, distinct from the face colours ``PALETTE``) whose opacity follows its
loudness (:func:`instrument_footprint` gives its shape), a thin box and name tag per
instrument, face boxes labelled with id and sync r, and a legend in the corner that covers the
fewest faces, instruments and heat.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import soundfile as sf

from avsplit import media
from avsplit.associate import SyncScore
from avsplit.clip import ANALYSIS_MAX_SIDE, Clip
from avsplit.errors import AvsplitError
from avsplit.progress import Progress
from avsplit.structures import VisualTrack

OVERLAY_MAX_SIDE = 1280   # longer side (px) above which the overlay is drawn at analysis size
ALPHA = 0.45              # opacity of the heat at full scale
HEAT_VISIBLE = 0.03       # heat under this is not drawn
LEGEND_FACES = 5          # face lines in the legend at most

# RGB colours for face boxes, by track id
PALETTE = [(255, 255, 255), (255, 80, 200), (80, 255, 120), (255, 220, 60), (90, 200, 255),
           (255, 140, 60), (180, 120, 255)]
# RGB colours of the instruments, in the order of the stems (saturated hues not in PALETTE)
INSTRUMENT_PALETTE = [(0, 230, 230), (170, 240, 0), (30, 80, 255), (240, 30, 30), (170, 0, 255),
                      (0, 140, 70)]
INSTRUMENT_ALPHA = 0.8          # opacity of an instrument blob at loudness 1 and footprint peak
INSTRUMENT_BOX_GROW = 0.1       # the blob may reach this fraction of the box size beyond it
INSTRUMENT_SIGMA = 0.4          # standard deviation of the blob, fraction of the box's sides
HEAT_WEIGHT_WITH_INSTRUMENTS = 0.5  # opacity of the face/motion heat while an instrument is heard
LEGEND_INSTRUMENTS = 6


@dataclass
class Instrument:
    """One instrument stem as drawn (and as :mod:`avsplit.localize` reports it).

    Attributes:
        name: stem name (``violin``, ``violin-2``); label: instrument label.
        colour: RGB of its blob, legend swatch and box.
        box: ``[x0, y0, x1, y1]`` 0..1 of the frame; box_px: the same in pixels of the
            original frame (as in the ``separate`` manifest).
        visual_confidence: 0..1 from the recogniser; heard: share of the mixture's energy in
            this stem (0..1, its mask's share times its split between same-label instances).
        silent: heard < :data:`avsplit.instruments.SILENT_SHARE`.
        loud: ``[T]`` float32 0..1 loudness at the analysed frame times (0 when silent).
        relabelled_from: the picture's label when the audio changed it.
    """

    name: str
    label: str
    colour: tuple[int, int, int]
    box: np.ndarray
    box_px: list[float]
    visual_confidence: float | None
    heard: float
    silent: bool
    loud: np.ndarray
    relabelled_from: str | None = None


def instrument_footprint(box: np.ndarray, height: int, width: int
                         ) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Where an instrument's blob shows, at an image size, peak 1.

    Args:
        box: ``[x0, y0, x1, y1]`` 0..1 of the frame.
        height, width: pixels of the image the blob is drawn on.

    Returns:
        ``((r0, r1, c0, c1), patch)``: the pixel rows/columns the blob covers (the box grown by
        ``INSTRUMENT_BOX_GROW`` of its size on each side, clipped to the image) and
        ``[r1 - r0, c1 - c0]`` float32 0..1 weights there: a Gaussian centred on the box
        (standard deviations ``INSTRUMENT_SIGMA`` of its sides) times a window that is 1 in
        the box and falls linearly to 0 at the grown edge, normalised to peak 1.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    gx, gy = INSTRUMENT_BOX_GROW * (x1 - x0), INSTRUMENT_BOX_GROW * (y1 - y0)
    c0, c1 = int(np.floor(max(0.0, x0 - gx) * width)), int(np.ceil(min(1.0, x1 + gx) * width))
    r0, r1 = int(np.floor(max(0.0, y0 - gy) * height)), int(np.ceil(min(1.0, y1 + gy) * height))
    c0, r0 = min(c0, width - 1), min(r0, height - 1)
    c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)
    xs = (np.arange(c0, c1) + 0.5) / width
    ys = (np.arange(r0, r1) + 0.5) / height

    def ramp(v, lo, hi, grow):  # 1 inside [lo, hi], linear to 0 at ``grow`` outside
        return np.clip(1.0 - np.maximum(lo - v, v - hi) / max(grow, 1e-6), 0.0, 1.0)

    sx, sy = max(INSTRUMENT_SIGMA * (x1 - x0), 0.5 / width), max(INSTRUMENT_SIGMA * (y1 - y0),
                                                                 0.5 / height)
    gauss_x = np.exp(-0.5 * ((xs - (x0 + x1) / 2) / sx) ** 2) * ramp(xs, x0, x1, gx)
    gauss_y = np.exp(-0.5 * ((ys - (y0 + y1) / 2) / sy) ** 2) * ramp(ys, y0, y1, gy)
    patch = np.outer(gauss_y, gauss_x).astype(np.float32)
    peak = float(patch.max())
    return (r0, r1, c0, c1), (patch / peak if peak > 0 else patch)


def _font_scale(height: int) -> float:
    return float(np.clip(height / 720 * 0.6, 0.35, 1.2))


def _instrument_text(ins: Instrument) -> str:
    """Legend line of an instrument: ``violin (seen 0.82, heard 35%)``, or ``silent``."""
    parts = [] if ins.visual_confidence is None else [f"seen {ins.visual_confidence:.2f}"]
    parts.append("silent" if ins.silent else f"heard {max(1, round(100 * ins.heard))}%")
    return f"{ins.name} ({', '.join(parts)})"


def _legend(tracks: list[VisualTrack], scores: list[SyncScore], height: int,
            instruments: list[Instrument] | tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """The legend patch: ``(rgb [h, w, 3] uint8, alpha [h, w, 1] float32)``: a colour scale
    labelled "sound source heat", one line per instrument with a round swatch in its colour
    (:func:`_instrument_text`, at most ``LEGEND_INSTRUMENTS``) and one line per face
    ("face N r=0.52", square swatch), best synced first, at most ``LEGEND_FACES`` of them."""
    fs = _font_scale(height)
    th = max(1, int(round(fs * 1.6)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    pad = int(round(8 * fs / 0.6))
    (tw, tht), base = cv2.getTextSize("sound source heat", font, fs, th)
    line = tht + base + pad // 2
    bar_w, bar_h = max(tw, int(160 * fs / 0.6)), max(6, int(round(12 * fs / 0.6)))
    ranked = sorted(zip(tracks, scores), key=lambda ts: -ts[1].r)
    lines = [(_instrument_text(ins), ins.colour, "round")
             for ins in instruments[:LEGEND_INSTRUMENTS]]
    if len(instruments) > LEGEND_INSTRUMENTS:
        lines.append((f"+{len(instruments) - LEGEND_INSTRUMENTS} more instruments", (0, 0, 0), ""))
    lines += [(f"face {tr.track_id} r={s.r:.2f}", PALETTE[tr.track_id % len(PALETTE)], "square")
              for tr, s in ranked[:LEGEND_FACES]] or [("no face: motion only", (200, 200, 200),
                                                       "square")]
    if len(ranked) > LEGEND_FACES:
        lines.append((f"+{len(ranked) - LEGEND_FACES} more faces", (0, 0, 0), "square"))
    small = fs * 0.8
    (lw, _), _ = cv2.getTextSize("low", font, small, 1)
    width = pad * 2 + max(bar_w, *(cv2.getTextSize(t, font, fs, th)[0][0] + line
                                   for t, _, _ in lines))
    hgt = pad + line + bar_h + line + len(lines) * line + pad // 2
    img = np.zeros((hgt, width, 3), np.uint8)
    y = pad + tht
    cv2.putText(img, "sound source heat", (pad, y), font, fs, (255, 255, 255), th, cv2.LINE_AA)
    y += base + pad // 2
    ramp = np.linspace(0, 255, bar_w).astype(np.uint8)[None].repeat(bar_h, 0)
    img[y:y + bar_h, pad:pad + bar_w] = cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[..., ::-1]
    y += bar_h + line - base
    cv2.putText(img, "low", (pad, y), font, small, (220, 220, 220), 1, cv2.LINE_AA)
    (hw_, _), _ = cv2.getTextSize("high", font, small, 1)
    cv2.putText(img, "high", (pad + bar_w - hw_, y), font, small, (220, 220, 220), 1, cv2.LINE_AA)
    for text, colour, swatch in lines:
        y += line
        sw = tht
        if swatch == "round":
            cv2.circle(img, (pad + sw // 2, y - sw // 2), max(2, sw // 2 + 1), colour, -1,
                       cv2.LINE_AA)
        else:
            cv2.rectangle(img, (pad, y - sw), (pad + sw, y), colour, -1)
        cv2.putText(img, text, (pad + sw + pad // 2, y), font, fs, (255, 255, 255), th, cv2.LINE_AA)
    alpha = np.full((hgt, width, 1), 0.7, np.float32)
    alpha[img.max(axis=2) > 0] = 1.0
    return img, alpha


def _draw(frame: np.ndarray, heat: np.ndarray, tracks: list[VisualTrack], scores: list[SyncScore],
          k: int, legend: tuple[np.ndarray, np.ndarray], corner: tuple[int, int],
          instruments: list[tuple[Instrument, tuple[int, int, int, int], np.ndarray]] | tuple = (),
          heat_weight: float = 1.0) -> np.ndarray:
    """One overlay frame: the heat blended in (TURBO colours, alpha up to ``ALPHA`` times
    ``heat_weight``), then each instrument's blob (its colour, alpha ``INSTRUMENT_ALPHA`` x
    its loudness at frame ``k`` x its footprint; ``instruments`` holds
    ``(instrument, (r0, r1, c0, c1), footprint patch)`` from :func:`instrument_footprint` at
    this frame's size) with a thin box and name tag, face boxes with id and sync r, and the
    legend with its top-left pixel at ``corner`` (y, x)."""
    h, w = frame.shape[:2]
    out = np.ascontiguousarray(frame).copy()
    rows, cols = np.nonzero(heat > HEAT_VISIBLE)
    if len(rows):  # blend only the box where some heat shows
        hh, hw = heat.shape
        r0, r1 = max(0, (rows.min() - 1) * h // hh), min(h, (rows.max() + 2) * h // hh)
        c0, c1 = max(0, (cols.min() - 1) * w // hw), min(w, (cols.max() + 2) * w // hw)
        full = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)[r0:r1, c0:c1]
        colour = cv2.applyColorMap((np.clip(full, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
        cv2.cvtColor(colour, cv2.COLOR_BGR2RGB, dst=colour)
        alpha = np.clip((full - HEAT_VISIBLE) * (ALPHA / 0.22), 0.0, ALPHA).astype(np.float32)
        if heat_weight != 1.0:
            alpha *= heat_weight
        out[r0:r1, c0:c1] = cv2.blendLinear(np.ascontiguousarray(out[r0:r1, c0:c1]), colour,
                                            1.0 - alpha, alpha)
    fs = _font_scale(h)
    th = max(1, int(round(fs * 1.6)))
    for ins, (r0, r1, c0, c1), patch in instruments:
        level = float(ins.loud[k]) if k < len(ins.loud) else 0.0
        if level > 0:
            alpha = (INSTRUMENT_ALPHA * level) * patch[..., None]
            region = out[r0:r1, c0:c1].astype(np.float32)
            out[r0:r1, c0:c1] = (region + alpha * (np.asarray(ins.colour, np.float32) - region)
                                 + 0.5).astype(np.uint8)
    for ins, _, _ in instruments:
        x0, y0, x1, y1 = (int(round(float(v) * d)) for v, d in zip(ins.box, (w, h, w, h)))
        cv2.rectangle(out, (x0, y0), (min(x1, w - 1), min(y1, h - 1)), ins.colour, 1, cv2.LINE_AA)
        small = fs * 0.8
        (tw, tht), base = cv2.getTextSize(ins.name, cv2.FONT_HERSHEY_SIMPLEX, small, 1)
        tx, ty = min(max(x0, 0), max(0, w - tw - 4)), min(max(y0, 0) + tht + 3, h - base)
        ink = (0, 0, 0) if np.dot(ins.colour, (0.299, 0.587, 0.114)) > 110 else (255, 255, 255)
        cv2.rectangle(out, (tx, ty - tht - 3), (tx + tw + 4, ty + base), ins.colour, -1)
        cv2.putText(out, ins.name, (tx + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, small, ink, 1,
                    cv2.LINE_AA)
    for tr, s in zip(tracks, scores):
        box = tr.boxes[k]
        if np.isnan(box[0]):
            continue
        x0, y0, x1, y1 = (int(round(float(v) * d)) for v, d in zip(box, (w, h, w, h)))
        c = PALETTE[tr.track_id % len(PALETTE)]
        cv2.rectangle(out, (x0, y0), (x1, y1), c, th, cv2.LINE_AA)
        label = f"face {tr.track_id} r={s.r:.2f}"
        (tw, tht), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, fs, th)
        ty = y0 - base - 2 if y0 - tht - base - 2 >= 0 else min(h - base, y1 + tht + 2)
        cv2.rectangle(out, (x0, ty - tht - 2), (x0 + tw + 4, ty + base), (0, 0, 0), -1)
        cv2.putText(out, label, (x0 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, fs, c, th, cv2.LINE_AA)
    img, a = legend
    y, x = corner
    lh, lw = min(img.shape[0], h - y), min(img.shape[1], w - x)
    if lh > 0 and lw > 0:
        region = out[y:y + lh, x:x + lw].astype(np.float32)
        aa = a[:lh, :lw]
        out[y:y + lh, x:x + lw] = (region * (1 - aa) + img[:lh, :lw] * aa).astype(np.uint8)
    return out


def _legend_corner(heat: np.ndarray, tracks: Sequence[VisualTrack], size: tuple[int, int],
                   h: int, w: int, instruments: Sequence[Instrument] = ()) -> tuple[int, int]:
    """Top-left pixel ``(y, x)`` for a legend of ``size`` ``(height, width)`` on ``h x w``
    frames: the frame corner where it covers the least face and instrument box area and heat
    (``[T, hh, hw]``) over the clip (top-left on a tie)."""
    m = int(round(6 * _font_scale(h) / 0.6))
    lh, lw = size
    corners = [(m, m), (m, max(0, w - lw - m)), (max(0, h - lh - m), m),
               (max(0, h - lh - m), max(0, w - lw - m))]
    T, hh, hw = heat.shape
    mean_heat = heat.mean(axis=0)
    costs = []
    for y, x in corners:
        x0, y0, x1, y1 = x / w, y / h, (x + lw) / w, (y + lh) / h
        cost = 0.0
        for tr in tracks:
            b = tr.boxes[tr.seen]
            if len(b):
                iw = np.clip(np.minimum(b[:, 2], x1) - np.maximum(b[:, 0], x0), 0, None)
                ih = np.clip(np.minimum(b[:, 3], y1) - np.maximum(b[:, 1], y0), 0, None)
                cost += float((iw * ih).sum()) / T * 10
        for ins in instruments:
            iw = max(0.0, min(float(ins.box[2]), x1) - max(float(ins.box[0]), x0))
            ih = max(0.0, min(float(ins.box[3]), y1) - max(float(ins.box[1]), y0))
            cost += iw * ih * 10
        r = slice(int(y0 * hh), int(np.ceil(y1 * hh)))
        c = slice(int(x0 * hw), int(np.ceil(x1 * hw)))
        cost += float(mean_heat[r, c].sum()) / (hh * hw)
        costs.append(cost)
    return corners[int(np.argmin(np.asarray(costs) - 1e-9 * np.arange(4)[::-1]))]


def _audio_wav(clip: Clip, folder: Path) -> Path:
    """The clip's decoded audio (its chosen stream, native rate and channels) as a float WAV in
    ``folder`` (RF64 past 4 GB), written in blocks: the overlay's sound comes from the clip,
    so ffmpeg does not open the input again."""
    path = folder / "audio.wav"
    size = clip.samples * clip.channels * 4
    fmt = "RF64" if size > 0xFFFF0000 else "WAV"
    block = 1 << 20
    with sf.SoundFile(path, "w", clip.rate, clip.channels, "FLOAT", format=fmt) as f:
        for s in range(0, clip.samples, block):
            f.write(clip.read(s, s + block).T)
    return path


def write_overlay(clip: Clip, overlay_path: Path, times: np.ndarray, heat: np.ndarray,
                  tracks: Sequence[VisualTrack], scores: Sequence[SyncScore], progress: Progress,
                  instruments: Sequence[Instrument] = ()) -> Path:
    """Write the overlay video of an analysed clip.

    The video is decoded once more (one open of the input) at its own size, or at
    :data:`avsplit.clip.ANALYSIS_MAX_SIDE` when its longer side exceeds
    :data:`OVERLAY_MAX_SIDE`; every frame is drawn (:func:`_draw`) with the heat, face boxes
    and instrument loudness of the nearest analysed frame, and encoded (H.264, the input's
    frame rate) with the clip's decoded audio (AAC; written to a temporary WAV, so ffmpeg does
    not open the input again).

    Args:
        clip: the analysed clip (open).
        overlay_path: the ``.mp4`` to write (its folder exists); it appears only when complete.
        times: ``[T]`` float64 seconds of the analysed frames, increasing.
        heat: ``[T, hh, hw]`` float32 0..1 normalised heat of those frames.
        tracks: face tracks aligned with ``times`` (boxes ``[T, 4]`` normalised 0..1).
        scores: one :class:`~avsplit.associate.SyncScore` per track.
        progress: reports the stage "writing overlay" (one step per frame).
        instruments: the instruments to draw (loudness ``[T]`` each).

    Returns:
        ``overlay_path``.

    Raises:
        AvsplitError: no video frame can be decoded.
        MediaError: the video cannot be decoded or ffmpeg cannot write the output.
    """
    info = clip.info
    v = info.video
    max_side = None if max(v.width, v.height) <= OVERLAY_MAX_SIDE else ANALYSIS_MAX_SIDE
    fps = v.fps if v.fps and v.fps > 0 else 25.0
    total = v.frames or ((v.duration or info.duration) * fps or None)
    advance = progress.stage("writing overlay", total)
    # a fresh open of the input for this second decode (the clip's container has decoded the
    # analysis frames already and its codec cannot be set up again)
    frames: Iterator = clip.frames(max_side=max_side)  # the clip's open container: no new open
    first = next(frames, None)
    if first is None:
        raise AvsplitError(f"{clip.path}: no video frame could be decoded; re-encode the file "
                           "or give another video")
    h, w = first[1].shape[:2]
    legend = _legend(tracks, scores, h, instruments)
    corner = _legend_corner(heat, tracks, legend[0].shape[:2], h, w, instruments)
    drawn = [(ins, *instrument_footprint(ins.box, h, w)) for ins in instruments]
    heat_weight = HEAT_WEIGHT_WITH_INSTRUMENTS if any(not i.silent for i in instruments) else 1.0

    def nearest(t: float) -> int:
        i = int(np.clip(np.searchsorted(times, t), 0, len(times) - 1))
        if i > 0 and abs(times[i - 1] - t) <= abs(times[i] - t):
            i -= 1
        return i

    folder = Path(tempfile.mkdtemp(prefix="avsplit-overlay-"))
    try:
        audio = _audio_wav(clip, folder)
        with media.VideoWriter(overlay_path, w, h, fps, audio_from=audio) as writer:
            for t, frame in _chain(first, frames):
                if frame.shape[:2] != (h, w):
                    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                k = nearest(t)
                writer.write(_draw(frame, heat[k], tracks, scores, k, legend, corner, drawn,
                                   heat_weight))
                advance(1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Path(overlay_path)


def _chain(first, rest):
    yield first
    yield from rest
