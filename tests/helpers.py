"""Generated signals shared by the tests (no recorded speech or music in tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest

RATE = 16000


def voice_like(seed: int, seconds: float = 4.0, rate: int = RATE, f0_range=(100, 200)) -> np.ndarray:
    """A voice-like signal: a glottal pulse train with a gliding pitch, filtered by moving
    vowel formants and gated into syllables (no recorded speech in tests)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(*f0_range) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = np.cumsum(f0 / rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    out = np.zeros(n)
    for block in range(0, n, rate // 10):  # new vowel every 0.1 s
        f1, f2 = rng.uniform(300, 800), rng.uniform(900, 2300)
        x = pulses[block:block + rate // 10]
        for f, bw in ((f1, 80), (f2, 120)):
            r = np.exp(-np.pi * bw / rate)
            x = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / rate), r * r], x)
        out[block:block + rate // 10] = x
    gate = np.zeros(n)
    pos = 0.1
    while pos < seconds - 0.4:
        length = rng.uniform(0.15, 0.35)
        a, b = int(pos * rate), int((pos + length) * rate)
        gate[a:b] = np.hanning(b - a)
        pos += length + rng.uniform(0.05, 0.25)
    out = out * gate
    return (0.1 * out / (np.abs(out).max() + 1e-9)).astype(np.float32)




def syllable_spans(seed: int, duration: float) -> list[tuple[float, float]]:
    """Random syllable-like spans (seconds): 0.12-0.25 s of sound, 0.08-0.3 s gaps."""
    rng = np.random.default_rng(seed)
    spans, t = [], 0.3
    while t < duration - 0.4:
        d = rng.uniform(0.12, 0.25)
        spans.append((t, t + d))
        t += d + rng.uniform(0.08, 0.3)
    return spans


def syllable_envelope(t: np.ndarray, spans) -> np.ndarray:
    """0..1 amplitude at times ``t`` (seconds): a sine-squared bump per syllable span."""
    env = np.zeros(len(t))
    for a, b in spans:
        m = (t >= a) & (t < b)
        env[m] = np.sin(np.pi * (t[m] - a) / (b - a)) ** 2
    return env


class SyllableFaceTracker:
    """A fake :class:`avsplit.engine.FaceTracker`: one face at ``box`` (normalised x0, y0, x1,
    y1) whose jaw opening is ``0.02 + 0.08 * syllable_envelope(t + lead)`` (it leads the sound by
    ``lead`` seconds), or no face at all with ``spans=None``. Consumes every frame it is given
    and records their shapes."""

    model_ids: list = []

    def __init__(self, spans, lead: float = 0.0, box=(0.3, 0.2, 0.6, 0.7)):
        self.spans, self.lead, self.box = spans, lead, box
        self.shapes: list[tuple[int, ...]] = []

    @property
    def frames(self) -> int:
        """How many frames it was given."""
        return len(self.shapes)

    def track(self, frames, progress):
        from avsplit.structures import VisualTrack

        times = []
        for t, frame in frames:
            times.append(t)
            self.shapes.append(frame.shape)
            progress(1)
        if self.spans is None:
            return []
        times = np.asarray(times, np.float64)
        boxes = np.tile(np.asarray(self.box, np.float32), (len(times), 1))
        act = (0.02 + 0.08 * syllable_envelope(times + self.lead, self.spans)).astype(np.float32)
        return [VisualTrack(0, "face", times, boxes, act)]


def syllable_clip(folder, seed: int, duration: float, rate: int = RATE, fps: int = 25,
                  width: int = 320, height: int = 240):
    """``(mp4 path, syllable spans)``: a still grey picture and a voice-like buzz (120 Hz
    harmonics up to 3.8 kHz, falling 6 dB per octave, so it has the 1-3 kHz energy that
    ``avsplit sync`` listens to) shaped by :func:`syllable_envelope` of
    ``syllable_spans(seed, duration)``."""
    import soundfile as sf

    from avsplit import media

    spans = syllable_spans(seed, duration)
    t = np.arange(int(duration * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 33))
    wav = folder / "voice.wav"
    sf.write(wav, (0.3 * syllable_envelope(t, spans) * buzz).astype(np.float32), rate)
    out = folder / "speech.mp4"
    frame = np.full((height, width, 3), 90, np.uint8)
    with media.VideoWriter(out, width, height, fps, audio_from=wav) as writer:
        for _ in range(int(duration * fps)):
            writer.write(frame)
    return out, spans


def json_lines(stdout: str) -> list[dict]:
    """The ``--json`` output of a batch command: one JSON object per line."""
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _have_fluidsynth() -> bool:
    import shutil

    from avsplit.train import music

    try:
        music.find_soundfont("TimGM6mb.sf2")
    except FileNotFoundError:
        return False
    return shutil.which("fluidsynth") is not None


#: skip a test that renders with fluidsynth where it or the held-out soundfont is missing
needs_fluidsynth = pytest.mark.skipif(
    not _have_fluidsynth(), reason="needs fluidsynth + Debian timgm6mb-soundfont "
    "(training-data machines only)")
