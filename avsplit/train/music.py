"""Synthetic multi-instrument training data: music21 scores rendered part by part with fluidsynth.

Each score with several parts (Bach chorales, Renaissance polyphony, string quartets, ... from
the music21 corpus) gives an excerpt whose parts are each assigned an instrument
(:mod:`avsplit.labels`), transposed by octaves into that instrument's range, and rendered
*alone* with a General-MIDI soundfont, reverb and chorus off (``fluidsynth -R 0 -C 0``). With
the effects off the synthesiser is linear in its voices, so the separately rendered stems add up
to the rendered ensemble exactly (see ``tests/test_instruments.py``) and a mixture built as the
sum of stems is a real ensemble rendering. A drum pattern and an electric-bass line (the
score's lowest part) are rendered as interferers that are mixed in but never asked for.

Timbres: ``FluidR3_GM.sf2``, ``MuseScore_General.sf3`` and ``sf_GMbank.sf2`` (Debian
``fluid-soundfont-gm``, ``musescore-general-soundfont`` (MIT), ``csound-soundfont`` (public
domain)) are used for training; ``TimGM6mb.sf2`` (Debian
``timgm6mb-soundfont``) is kept out of training for validation, as are every tenth score.

Rendering loads a soundfont once per fluidsynth call, so many parts are placed one after the
other in one MIDI file (with silent gaps long enough for every release tail to end) and the
rendered file is cut back into stems.

    python -m avsplit.train music-data --out runs/music          # renders the pools
    python -m avsplit.train instruments --pools runs/music --out runs/instruments

Needs the ``train`` extra (``music21``, ``pretty_midi``) and the ``fluidsynth`` binary
(Debian ``fluidsynth``).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsplit.labels import BY_LABEL, INSTRUMENTS, INTERFERERS, Instrument

SAMPLE_RATE = 11025
SOUNDFONT_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3"))
TRAIN_SOUNDFONTS = ("FluidR3_GM.sf2", "MuseScore_General.sf3", "sf_GMbank.sf2")
VALID_SOUNDFONTS = ("TimGM6mb.sf2",)
GAP_S = 3.0  # silence between parts rendered in one call (release tails end well before)


@dataclass
class Note:
    """One note: MIDI pitch, velocity 1..127, start and end in seconds."""

    pitch: int
    velocity: int
    start: float
    end: float


@dataclass
class PartSpec:
    """A part to render: its notes and the General-MIDI program (-1 = drum kit)."""

    notes: list[Note]
    program: int
    label: str


def find_soundfont(name: str) -> Path:
    """Path of a Debian soundfont by file name.

    Raises:
        FileNotFoundError: not installed (``apt install fluid-soundfont-gm
            musescore-general-soundfont csound-soundfont timgm6mb-soundfont``).
    """
    for d in SOUNDFONT_DIRS:
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(f"soundfont {name} not found in {', '.join(map(str, SOUNDFONT_DIRS))}; "
                            "install the Debian soundfont packages")


def fluidsynth_exe() -> str:
    """The ``fluidsynth`` binary.

    Raises:
        FileNotFoundError: not on PATH (``apt install fluidsynth``).
    """
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise FileNotFoundError("fluidsynth not found on PATH; apt install fluidsynth")
    return exe


def write_midi(parts: list[PartSpec], path: Path, offsets: list[float] | None = None,
               rate: int = SAMPLE_RATE) -> None:
    """Write parts to a one-track MIDI file.

    Melodic parts cycle through the 15 melodic channels, each preceded by its program change at
    its own offset, so any number of parts that do not overlap in time can share one file;
    parts that do overlap (an ensemble) must number at most 15. Drums go to channel 10.

    Args:
        parts: what to write.
        path: the ``.mid`` file.
        offsets: seconds added to each part's note times (default 0).
        rate: ticks per second (one tick per sample of the rendering, so that event times and
            fluidsynth's 64-sample blocks line up the same way in every rendering).
    """
    import mido

    tpb = rate  # a quarter note lasts one second (tempo 60 bpm): one tick per sample
    melodic = [c for c in range(16) if c != 9]
    events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)
    k = 0
    for i, part in enumerate(parts):
        off = 0.0 if offsets is None else offsets[i]
        if part.program < 0:
            ch = 9
        else:
            ch = melodic[k % len(melodic)]
            k += 1
            first = min((n.start for n in part.notes), default=0.0) + off
            events.append((int(round(first * rate)), 0, mido.Message("program_change", channel=ch,
                                                             program=part.program)))
        for n in part.notes:
            events.append((int(round((n.start + off) * rate)), 2,
                           mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity)))
            events.append((max(int(round((n.end + off) * rate)), int(round((n.start + off) * rate)) + 1), 1,
                           mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    mf = mido.MidiFile(ticks_per_beat=tpb)
    mf.tracks.append(track)
    mf.save(str(path))


def render_midi(midi: Path, soundfont: Path, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Render a MIDI file with fluidsynth, reverb and chorus off.

    Returns:
        ``[samples]`` float32 mono (mean of fluidsynth's stereo output) at ``rate`` Hz.

    Raises:
        RuntimeError: fluidsynth failed.
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = [fluidsynth_exe(), "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.5", "-r", str(rate),
               "-F", str(wav), str(soundfont), str(midi)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.exists():
            raise RuntimeError(f"fluidsynth failed: {proc.stderr.strip()[-300:]}")
        audio, _ = sf.read(str(wav), dtype="float32", always_2d=True)
    return audio.mean(axis=1)


def render_parts(parts: list[PartSpec], soundfont: Path, rate: int = SAMPLE_RATE,
                 length_s: float | None = None) -> list[np.ndarray]:
    """Render each part alone (parts one after another in one fluidsynth call per 100 parts).

    Args:
        parts: what to render; note times start near 0.
        length_s: length of every stem in seconds (default: the longest part + 1 s).

    Returns:
        One ``[samples]`` float32 stem per part, all of the same length.
    """
    if length_s is None:
        length_s = max((n.end for p in parts for n in p.notes), default=0.0) + 1.0
    n = int(round(length_s * rate))
    stems: list[np.ndarray] = []
    for first in range(0, len(parts), 100):
        batch = parts[first:first + 100]
        # fluidsynth's MIDI player times events in whole milliseconds and applies them once
        # per 64-sample block: offsets on a common grid of both give every part the same
        # timing as when it is rendered alone (and as in the ensemble)
        grid = math.lcm(64, rate // math.gcd(rate, 1000))
        step = int(np.ceil((length_s + GAP_S) * rate / grid)) * grid / rate
        offsets = [i * step for i in range(len(batch))]
        with tempfile.TemporaryDirectory() as tmp:
            mid = Path(tmp) / "parts.mid"
            write_midi(batch, mid, offsets, rate)
            audio = render_midi(mid, soundfont, rate)
        for off in offsets:
            a = int(round(off * rate))
            seg = audio[a:a + n]
            stems.append(np.pad(seg, (0, n - len(seg))).astype(np.float32))
    return stems


# --- scores -> parts ------------------------------------------------------------------------

def corpus_scores(min_parts: int = 2) -> list[str]:
    """Paths of music21 corpus scores (MusicXML/MIDI/…, not the single-line folk collections),
    sorted; parts are counted when a score is parsed (:func:`score_notes`)."""
    import music21

    paths = sorted(str(p) for p in music21.corpus.getPaths())
    skip = ("essenFolksong", "ryansMammoth", "miscFolk", "nottingham", "oneills", "theoryExercises")
    return [p for p in paths if not any(s in p for s in skip)]


def score_notes(path: str) -> list[list[Note]]:
    """Parse a score and return the notes of each part (times in seconds at the score's tempo,
    120 quarter notes per minute when it gives none)."""
    import music21
    import pretty_midi

    score = music21.corpus.parse(path)
    if isinstance(score, music21.stream.Opus):
        score = score.scores[0]
    with tempfile.TemporaryDirectory() as tmp:
        mid = Path(tmp) / "score.mid"
        mf = music21.midi.translate.music21ObjectToMidiFile(score)
        mf.open(str(mid), "wb")
        mf.write()
        mf.close()
        pm = pretty_midi.PrettyMIDI(str(mid))
    parts = []
    for inst in pm.instruments:
        if inst.is_drum or len(inst.notes) < 4:
            continue
        parts.append([Note(n.pitch, n.velocity, n.start, n.end) for n in inst.notes])
    return parts


def fit_range(notes: list[Note], instrument: Instrument) -> list[Note]:
    """Transpose a part by whole octaves so its median pitch sits in the middle of the
    instrument's range, then fold single notes that still fall outside it back by octaves."""
    lo, hi = instrument.pitch_range
    median = float(np.median([n.pitch for n in notes]))
    shift = 12 * int(round(((lo + hi) / 2 - median) / 12))
    out = []
    for n in notes:
        p = n.pitch + shift
        while p < lo:
            p += 12
        while p > hi:
            p -= 12
        out.append(Note(p, n.velocity, n.start, n.end))
    return out


def excerpt(parts: list[list[Note]], start: float, length: float, stretch: float
            ) -> list[list[Note]]:
    """Notes of ``[start, start + length)`` seconds (after a tempo change by ``stretch``),
    shifted to begin at 0 and cut at ``length``."""
    out = []
    for notes in parts:
        sel = []
        for n in notes:
            s, e = n.start * stretch - start, n.end * stretch - start
            if e <= 0 or s >= length:
                continue
            sel.append(Note(n.pitch, n.velocity, max(s, 0.0), min(e, length)))
        out.append(sel)
    return out


def drum_pattern(length: float, beat: float, rng: np.random.Generator) -> list[Note]:
    """A random rock/pop drum groove: kick, snare, hi-hat/ride, the odd crash and tom fill."""
    notes = []
    hat = int(rng.choice([42, 42, 46, 51]))
    t, i = 0.0, 0
    while t < length:
        vel = lambda base: int(np.clip(base + rng.normal(0, 8), 30, 127))  # noqa: E731
        if i % 8 == 0 and rng.random() < 0.15:
            notes.append(Note(49, vel(100), t, t + 0.5))
        if i % 4 == 0 or (i % 4 == 3 and rng.random() < 0.3):
            notes.append(Note(36, vel(100), t, t + 0.1))
        if i % 4 == 2:
            notes.append(Note(38, vel(95), t, t + 0.1))
        if i % 8 == 7 and rng.random() < 0.3:
            notes.append(Note(int(rng.choice([45, 47, 50])), vel(90), t, t + 0.1))
        notes.append(Note(hat, vel(70), t, t + 0.1))
        if rng.random() < 0.5:
            notes.append(Note(hat, vel(55), t + beat / 2, t + beat / 2 + 0.1))
        t += beat
        i += 1
    return [n for n in notes if n.start < length]


def humanize(notes: list[Note], rng: np.random.Generator) -> list[Note]:
    """Random overall dynamic and small per-note velocity changes."""
    base = rng.uniform(-25, 20)
    return [Note(n.pitch, int(np.clip(n.velocity + base + rng.normal(0, 8), 20, 127)), n.start, n.end)
            for n in notes]


@dataclass
class Ensemble:
    """One rendered excerpt: the stems of its parts (instruments + interferers)."""

    labels: list[str]            # a label of avsplit.labels, or "drums" / "electric_bass"
    stems: list[np.ndarray]      # [samples] float32 at SAMPLE_RATE, same length
    score: str
    soundfont: str


def plan_ensemble(parts: list[list[Note]], rng: np.random.Generator, counts: dict[str, int],
                  length: float = 20.0, max_parts: int = 4,
                  instruments: tuple[Instrument, ...] = INSTRUMENTS) -> list[PartSpec]:
    """Choose an excerpt, instruments (the least used so far first) and programs for a score's
    parts, plus a drum and a bass interferer.

    Args:
        parts: notes per part (:func:`score_notes`).
        counts: how often each label was used so far; updated in place (keeps classes balanced).
    """
    stretch = float(rng.uniform(0.7, 1.3))
    end = max(n.end for p in parts for n in p) * stretch
    start = float(rng.uniform(0, max(end - length, 0.0)))
    cut = excerpt(parts, start, length, stretch)
    cut = [p for p in cut if len(p) >= 3]
    if len(cut) < 1:
        return []
    order = rng.permutation(len(cut))[:max_parts]
    # least used first, random among ties
    labels = sorted((i.label for i in instruments), key=lambda lab: (counts.get(lab, 0), rng.random()))
    specs = []
    for k, idx in enumerate(order):
        inst = BY_LABEL[labels[k]]
        counts[inst.label] = counts.get(inst.label, 0) + 1
        notes = humanize(fit_range(cut[idx], inst), rng)
        specs.append(PartSpec(notes, int(rng.choice(inst.gm_programs)), inst.label))
    bass, drums = INTERFERERS
    lowest = min(range(len(cut)), key=lambda i: np.median([n.pitch for n in cut[i]]))
    specs.append(PartSpec(humanize(fit_range(cut[lowest], bass), rng),
                          int(rng.choice(bass.gm_programs)), bass.label))
    beat = 0.5 * stretch
    specs.append(PartSpec(drum_pattern(length, beat, rng), -1, drums.label))
    return specs


def render_pool(scores: list[str], soundfonts: tuple[str, ...], seed: int, length: float = 20.0,
                progress=None) -> list[Ensemble]:
    """Render one ensemble per score (soundfont chosen at random from ``soundfonts``).

    Scores that fail to parse are skipped. ``progress(i, n)`` is called after each score.
    """
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    plans: list[tuple[str, str, list[PartSpec]]] = []
    for i, path in enumerate(scores):
        try:
            parts = score_notes(path)
        except Exception:  # noqa: BLE001 - a corpus file music21 cannot read: skip it
            parts = []
        if len(parts) >= 2:
            specs = plan_ensemble(parts, rng, counts, length)
            if specs:
                plans.append((path, str(rng.choice(soundfonts)), specs))
        if progress:
            progress(i + 1, 2 * len(scores))
    ensembles: list[Ensemble] = []
    for font in soundfonts:
        mine = [p for p in plans if p[1] == font]
        flat = [s for _, _, specs in mine for s in specs]
        stems = render_parts(flat, find_soundfont(font), SAMPLE_RATE, length) if flat else []
        k = 0
        for path, _, specs in mine:
            ensembles.append(Ensemble([s.label for s in specs], stems[k:k + len(specs)],
                                      Path(path).name, font))
            k += len(specs)
            if progress:
                progress(len(scores) + len(ensembles), 2 * len(scores))
    return ensembles


def split_scores(scores: list[str]) -> tuple[list[str], list[str]]:
    """Every tenth score (sorted order) is held out for validation."""
    return ([s for i, s in enumerate(scores) if i % 10 != 9],
            [s for i, s in enumerate(scores) if i % 10 == 9])
