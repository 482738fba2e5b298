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

Parts are played, not just written (:func:`perform`, :data:`ARTICULATIONS`): pitch-bend
vibrato, slides and scoops, CC11 swells, guitar/banjo strums, accordion block chords and harp
rolls, each on the part's own MIDI channel; erhu is a bowed-string program with wide vibrato and
slides passed through a fixed body filter (:func:`body_sos`) after rendering.

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
from dataclasses import dataclass, field
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
class Control:
    """A controller event of one part, written on the part's own MIDI channel.

    Attributes:
        time: seconds (same clock as the part's notes).
        kind: ``"bend"`` (``value`` in semitones, within the part's ``bend_range``) or
            ``"expression"`` (CC11, ``value`` 0..127).
        value: see ``kind``.
    """

    time: float
    kind: str
    value: float


@dataclass
class PartSpec:
    """A part to render: its notes and the General-MIDI program (-1 = drum kit).

    Attributes:
        controls: pitch-bend / expression curves (:func:`perform`), sorted by time; empty =
            dead MIDI (bend 0, expression 127).
        bend_range: pitch-bend range in semitones, set with RPN 0 at the part's start.
        style: the random performance parameters chosen by :func:`perform` (``vibrato_hz``,
            ``vibrato_cents``, ``slides``, ``chords``, ``strum_s``, ...), for tests and logs.
    """

    notes: list[Note]
    program: int
    label: str
    controls: list[Control] = field(default_factory=list)
    bend_range: int = 2
    style: dict = field(default_factory=dict)


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

    Every melodic part starts (at its first event) with a controller reset on its channel:
    pitch bend 0, expression (CC11) 127 and its pitch-bend range (RPN 0 = ``bend_range``
    semitones, then RPN null), so a part never inherits the bend/expression state of the part
    that used its channel before it in the same file, and bends mean the same on every
    soundfont. Its :class:`Control` events follow (bends as 14-bit pitch wheel, repeated values
    dropped); at a shared tick the order is note-off, controllers, note-on.

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
    events: list[tuple[int, float, mido.Message]] = []  # (tick, order, message); sort is stable
    k = 0

    def tick(t: float) -> int:
        return int(round(t * rate))

    for i, part in enumerate(parts):
        off = 0.0 if offsets is None else offsets[i]
        if part.program < 0:
            ch = 9
        else:
            ch = melodic[k % len(melodic)]
            k += 1
            first = min([n.start for n in part.notes] + [c.time for c in part.controls],
                        default=0.0) + off
            t0 = tick(first)
            reset = [mido.Message("program_change", channel=ch, program=part.program),
                     mido.Message("pitchwheel", channel=ch, pitch=0),
                     mido.Message("control_change", channel=ch, control=11, value=127)]
            for cc, v in ((101, 0), (100, 0), (6, int(part.bend_range)), (38, 0), (101, 127),
                          (100, 127)):  # RPN 0 (pitch-bend sensitivity), then RPN null
                reset.append(mido.Message("control_change", channel=ch, control=cc, value=v))
            events.extend((t0, 0, m) for m in reset)
            last = {"bend": 0, "expression": 127}
            for c in part.controls:
                if c.kind == "bend":
                    v = int(np.clip(round(c.value / part.bend_range * 8192), -8192, 8191))
                    msg = mido.Message("pitchwheel", channel=ch, pitch=v)
                elif c.kind == "expression":
                    v = int(np.clip(round(c.value), 0, 127))
                    msg = mido.Message("control_change", channel=ch, control=11, value=v)
                else:
                    raise ValueError(f"unknown control kind {c.kind!r}")
                if v != last[c.kind]:
                    last[c.kind] = v
                    events.append((max(tick(c.time + off), t0), 1.5, msg))
        for n in part.notes:
            events.append((tick(n.start + off), 2,
                           mido.Message("note_on", channel=ch, note=n.pitch, velocity=n.velocity)))
            events.append((max(tick(n.end + off), tick(n.start + off) + 1), 1,
                           mido.Message("note_off", channel=ch, note=n.pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
    now = 0
    for t, _, msg in events:
        track.append(msg.copy(time=t - now))
        now = t
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
        for part, off in zip(batch, offsets):
            a = int(round(off * rate))
            seg = np.pad(audio[a:a + n], (0, max(0, n - len(audio[a:a + n]))))
            stems.append(body_filter(seg, _body(part), rate))
    return stems


def render_ensemble(parts: list[PartSpec], soundfont: Path, rate: int = SAMPLE_RATE,
                    length_s: float | None = None) -> np.ndarray:
    """Render parts *together* (the reference that :func:`render_parts`' stems must add up to).

    The parts without a body filter are written to one MIDI file and rendered in one go (at
    most 15 melodic parts); the parts of each body filter (erhu) are rendered together in their
    own file and that rendering is filtered once. A body filter models the resonator of one
    instrument, which only its own strings excite, so the real ensemble is the unfiltered
    ensemble plus the filtered erhu section; as the filter is linear and time-invariant (zero
    initial state, same cut), filtering the section equals summing the filtered stems.

    Returns:
        ``[samples]`` float32, ``length_s`` long (default: the longest part + 1 s).
    """
    if length_s is None:
        length_s = max((n.end for p in parts for n in p.notes), default=0.0) + 1.0
    n = int(round(length_s * rate))
    total = np.zeros(n, np.float32)
    for body in sorted({_body(p) for p in parts}):
        group = [p for p in parts if _body(p) == body]
        with tempfile.TemporaryDirectory() as tmp:
            write_midi(group, Path(tmp) / "ensemble.mid", rate=rate)
            audio = render_midi(Path(tmp) / "ensemble.mid", soundfont, rate)[:n]
        total += body_filter(np.pad(audio, (0, n - len(audio))), body, rate)
    return total


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


# --- expressive performance ---------------------------------------------------------------

CONTROL_RATE = 100.0  # Hz: bend/expression curves are sampled this often while notes sound


@dataclass(frozen=True)
class Articulation:
    """How a family of instruments is played beyond its notes (:func:`perform`).

    Attributes:
        vibrato_hz: (low, high) vibrato rate in Hz, drawn once per part.
        vibrato_cents: (low, high) peak pitch deviation in cents (0 = no vibrato).
        p_vibrato: probability that a part uses vibrato at all.
        swell: depth of the CC11 expression curves as a fraction of full scale (0 = none).
        p_slide: probability that an eligible legato pair (step of 1..4 semitones, locally
            monophonic) is played as one note gliding into the next.
        p_scoop: probability that a note onset starts slightly flat and bends up.
        chords: ``"strum"`` (guitars, banjo), ``"block"`` (accordion), ``"roll"`` (harp) or
            ``""``.
        p_chords: probability that a part is played with added chord tones.
        body: post-rendering body filter (:func:`body_filter`), ``""`` = none.
    """

    vibrato_hz: tuple[float, float] = (5.0, 6.5)
    vibrato_cents: tuple[float, float] = (0.0, 0.0)
    p_vibrato: float = 0.0
    swell: float = 0.0
    p_slide: float = 0.0
    p_scoop: float = 0.0
    chords: str = ""
    p_chords: float = 0.0
    body: str = ""


_BOWED = Articulation((5.0, 7.0), (15.0, 40.0), 0.9, 0.4, 0.15, 0.05)
_WIND = Articulation((4.5, 6.0), (10.0, 25.0), 0.8, 0.4, 0.0, 0.05)
_BRASS = Articulation((4.5, 6.0), (8.0, 18.0), 0.5, 0.35, 0.0, 0.05)
_STRUM = Articulation(chords="strum", p_chords=0.5)
#: Articulation per label (missing labels, piano, xylophone, marimba and the interferers: none).
#: Vibrato rates/depths follow the usual ranges of measured string/wind vibrato (about
#: 5-7 Hz, 10-50 cents; winds and brass lighter and slower, erhu wide).
ARTICULATIONS: dict[str, Articulation] = {
    "violin": _BOWED, "viola": _BOWED, "cello": _BOWED,
    "double_bass": Articulation((4.5, 6.0), (10.0, 30.0), 0.7, 0.4, 0.1, 0.05),
    "erhu": Articulation((5.0, 7.0), (30.0, 50.0), 1.0, 0.4, 0.4, 0.15, body="erhu"),
    "flute": _WIND, "oboe": _WIND, "bassoon": _WIND, "saxophone": _WIND,
    "clarinet": Articulation((4.5, 6.0), (8.0, 20.0), 0.3, 0.4, 0.0, 0.03),
    "trumpet": _BRASS, "french_horn": _BRASS, "tuba": _BRASS,
    "trombone": Articulation((4.5, 6.0), (8.0, 18.0), 0.5, 0.35, 0.25, 0.05),
    "accordion": Articulation(swell=0.3, chords="block", p_chords=0.5),
    "organ": Articulation(swell=0.25),
    "harmonica": Articulation(swell=0.35, p_scoop=0.05),
    "acoustic_guitar": _STRUM, "electric_guitar": _STRUM, "banjo": _STRUM,
    "harp": Articulation(chords="roll", p_chords=0.3),
}

# chord tones below a melody note (semitones): the note as fifth, root or third of a
# major/minor triad in close position; power chords (root + fifth, octave doubled)
_TRIADS = ((-7, -3), (-7, -4), (-5, -8), (-5, -9), (-4, -9), (-3, -8))
_POWER = ((-5, -12), (-7, -12))


def add_chords(notes: list[Note], instrument: Instrument, style: str, rng: np.random.Generator,
               length: float) -> tuple[list[Note], float]:
    """Add chord tones under the melody notes of a part.

    Each melody note (the highest note at its onset, at least 0.15 s long) gets, with
    probability 0.8, a triad below it whose tones lie in the part's own scale (its 7 most
    frequent pitch classes; a power chord when no triad fits, and half of the time on electric
    guitar), plus for strums the root an octave lower; tones below the instrument's range or
    on a pitch already sounding are dropped. ``"strum"`` spreads the chord's onsets over
    10-40 ms, low to high (down-stroke) and high to low (up-stroke) alternately;
    ``"roll"`` spreads them upwards over 40-120 ms (harp); ``"block"`` keeps them together
    (accordion). Chord tones end with the melody note and are played a little softer.

    Returns:
        The new notes (sorted by start) and the strum spread in seconds (0 for block chords).
    """
    lo, _ = instrument.pitch_range
    hist = np.bincount([n.pitch % 12 for n in notes], minlength=12)
    scale = set(np.argsort(-hist, kind="stable")[:7].tolist())
    spread = {"strum": rng.uniform(0.010, 0.040), "roll": rng.uniform(0.040, 0.120)}.get(style, 0.0)
    power = instrument.label == "electric_guitar" and rng.random() < 0.5
    onsets: dict[float, Note] = {}
    for n in notes:  # the top note at each onset is the melody note
        key = round(n.start, 3)
        if key not in onsets or n.pitch > onsets[key].pitch:
            onsets[key] = n
    out = list(notes)
    down = True
    for key in sorted(onsets):
        m = onsets[key]
        if m.end - m.start < 0.15 or rng.random() > 0.8:
            continue
        shapes = [c for c in _TRIADS if all((m.pitch + d) % 12 in scale for d in c)]
        shape = _POWER[int(rng.integers(2))] if power or not shapes else shapes[int(rng.integers(len(shapes)))]
        tones = [m.pitch + d for d in shape]
        if style == "strum" and not power:
            tones.append(m.pitch + min(shape) - 12)
        busy = {n.pitch for n in out if n.start < m.end and n.end > m.start}
        tones = sorted({t for t in tones if t >= lo and t not in busy})
        if not tones:
            continue
        chord = sorted(tones + [m.pitch])
        if style == "strum" and not down:
            chord = chord[::-1]
        down = not down if rng.random() < 0.9 else down
        out.remove(m)
        for j, p in enumerate(chord):
            t = m.start + (spread * j / (len(chord) - 1) if spread else 0.0)
            if t >= min(m.end, length) - 0.05:
                continue
            vel = m.velocity if p == m.pitch else int(np.clip(m.velocity * rng.uniform(0.7, 0.9), 20, 127))
            out.append(Note(p, vel, t, min(m.end, length)))
    return sorted(out, key=lambda n: (n.start, n.pitch)), spread


def _ramp(u: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 step (raised cosine) of ``u`` clipped to [0, 1]."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(u, 0.0, 1.0))


def perform(notes: list[Note], instrument: Instrument, rng: np.random.Generator,
            length: float = 20.0, chords: bool | None = None) -> PartSpec:
    """Turn a part's notes into a played part: chords/strums, slides, scoops, vibrato, swells.

    Chosen by the instrument's :data:`ARTICULATIONS` entry, with random parameters per part
    (recorded in ``PartSpec.style``):

    * chords (:func:`add_chords`) for guitars/banjo (strums), accordion (block), harp (rolls);
    * slides: a legato pair A->B (B starts within 30 ms of A's end, 1..4 semitones apart, no
      other note of the part sounding) becomes one note on A's pitch that glides to B's pitch
      in the last 30-120 ms before B's onset (raised-cosine pitch bend) and holds it until B's
      end: no re-attack, as a finger or slide shift on one bow/breath;
    * scoops: a note starting 30-80 cents flat and bending up within 40-100 ms;
    * vibrato: a sinusoidal pitch-bend LFO (rate and peak depth drawn from the family's range,
      +-4 % rate and +-20 % depth drift) that fades in 0.08-0.25 s after each onset over
      0.15-0.4 s;
    * swells: CC11 expression = 1 - swell * (slow phrase curve of period 3-8 s + a per-note
      shape: swell in the middle, decay or crescendo, for notes of 0.4 s and longer).

    Bends and expression are sampled at :data:`CONTROL_RATE` Hz while notes sound (and 0.2 s
    into their release) and at every onset. The pitch-bend range is 2 semitones, 12 when
    slides need more.

    Args:
        notes: the part, already in the instrument's range; times in seconds within
            ``[0, length]``.
        instrument: what plays it (its label chooses the articulation, its range bounds the
            chord tones).
        length: excerpt length in seconds (no note ends later).
        chords: force chords on/off (default: random with the articulation's ``p_chords``).

    Returns:
        A :class:`PartSpec` with a program drawn from ``instrument.gm_programs``.
    """
    art = ARTICULATIONS.get(instrument.label, Articulation())
    program = int(rng.choice(instrument.gm_programs))
    style: dict = {}
    notes = sorted(notes, key=lambda n: (n.start, n.pitch))
    if art.chords and (rng.random() < art.p_chords if chords is None else chords):
        notes, spread = add_chords(notes, instrument, art.chords, rng, length)
        style.update(chords=art.chords, strum_s=spread)
    if not notes:
        return PartSpec(notes, program, instrument.label, style=style)
    onsets = np.array(sorted({n.start for n in notes}))  # vibrato restarts at every onset
    # slides: merge legato pairs
    segments: list[tuple[float, float, float, float]] = []  # (t0, t1, semitones, hold_end)
    if art.p_slide > 0:
        merged: list[Note] = []
        i = 0
        while i < len(notes):
            a = notes[i]
            b = notes[i + 1] if i + 1 < len(notes) else None
            if (b is not None and 0 <= b.start - a.end <= 0.03 and 1 <= abs(b.pitch - a.pitch) <= 4
                    and a.end - a.start >= 0.15 and b.end - b.start >= 0.1
                    and not any(n.start < b.end and n.end > a.start
                                for j, n in enumerate(notes) if j not in (i, i + 1))
                    and rng.random() < art.p_slide):
                glide = min(rng.uniform(0.03, 0.12), 0.5 * (a.end - a.start))
                later = onsets[onsets > b.start + 1e-6]
                hold = float(later[0]) if len(later) else np.inf
                segments.append((b.start - glide, b.start, float(b.pitch - a.pitch), hold))
                merged.append(Note(a.pitch, a.velocity, a.start, b.end))
                i += 2
            else:
                merged.append(a)
                i += 1
        notes = merged
        style["slides"] = len(segments)
    # scoops at onsets where nothing else sounds
    scoops: list[tuple[float, float, float]] = []  # (start, duration, semitones below)
    if art.p_scoop > 0:
        for n in notes:
            alone = not any(m is not n and m.start < n.start + 1e-6 and m.end > n.start for m in notes)
            if alone and n.end - n.start > 0.2 and rng.random() < art.p_scoop:
                scoops.append((n.start, rng.uniform(0.04, 0.10), rng.uniform(0.3, 0.8)))
        style["scoops"] = len(scoops)
    vibrato = art.vibrato_cents[1] > 0 and rng.random() < art.p_vibrato
    # control times: a grid while notes sound (+0.2 s of release) plus every onset
    grid = np.arange(0.0, length + 0.2, 1.0 / CONTROL_RATE)
    on = np.zeros(len(grid), bool)
    for n in notes:
        on[(grid >= n.start) & (grid <= n.end + 0.2)] = True
    times = np.union1d(grid[on], onsets)
    controls: list[Control] = []
    if vibrato or segments or scoops:
        bend = np.zeros(len(times))
        if vibrato:
            hz = rng.uniform(*art.vibrato_hz)
            cents = rng.uniform(*art.vibrato_cents)
            delay, fade = rng.uniform(0.08, 0.25), rng.uniform(0.15, 0.4)
            t_rate, t_depth = rng.uniform(2.0, 5.0), rng.uniform(1.5, 4.0)
            ph = rng.uniform(0, 2 * np.pi, 3)
            # phase of a rate f(t) = hz * (1 + 0.04 sin(2 pi t / t_rate + ph1)), integrated
            phase = 2 * np.pi * hz * (times - 0.04 * t_rate / (2 * np.pi)
                                      * np.cos(2 * np.pi * times / t_rate + ph[1])) + ph[0]
            depth = cents / 100 * (1 + 0.2 * np.sin(2 * np.pi * times / t_depth + ph[2]))
            last = onsets[np.maximum(np.searchsorted(onsets, times, side="right") - 1, 0)]
            env = np.clip((times - last - delay) / fade, 0.0, 1.0)
            bend += env * depth * np.sin(phase)
            style.update(vibrato_hz=hz, vibrato_cents=cents)
        for t0, t1, semis, hold in segments:
            bend += np.where((times >= t0) & (times < hold), semis * _ramp((times - t0) / (t1 - t0)), 0.0)
        for t0, dur, semis in scoops:
            bend -= np.where((times >= t0) & (times < t0 + dur), semis * (1 - _ramp((times - t0) / dur)), 0.0)
        bend_range = 2 if np.abs(bend).max() < 1.9 else 12
        controls += [Control(float(t), "bend", float(b)) for t, b in zip(times, bend)]
    else:
        bend_range = 2
    if art.swell > 0:
        period, ph = rng.uniform(3.0, 8.0), rng.uniform(0, 2 * np.pi)
        phrase = 0.5 + 0.5 * np.sin(2 * np.pi * times / period + ph)
        shape = np.zeros(len(times))
        by_onset: dict[float, float] = {}
        for n in notes:
            by_onset[n.start] = max(by_onset.get(n.start, 0.0), n.end)
        for s0, e0 in by_onset.items():
            if e0 - s0 < 0.4:
                continue
            kind = int(rng.integers(4))  # swell, decay, crescendo, flat
            sel = (times >= s0) & (times <= e0)
            u = (times[sel] - s0) / (e0 - s0)
            shape[sel] = (1 - np.sin(np.pi * u), u, 1 - u, 0 * u)[kind]
        expr = 127 * (1 - art.swell * (0.5 * phrase + 0.5 * shape))
        controls += [Control(float(t), "expression", float(np.clip(e, 1, 127))) for t, e in zip(times, expr)]
        style["swell"] = art.swell
    controls.sort(key=lambda c: c.time)
    return PartSpec(notes, program, instrument.label, controls, bend_range, style)


# --- erhu body -------------------------------------------------------------------------------

def _peak_sos(f0: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking biquad as one second-order section."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * f0 / rate
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None]


def body_sos(body: str, rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """Second-order sections of a body filter, ``None`` for ``""``.

    ``"erhu"``: the erhu's small python-skin resonator makes a bowed string narrow and nasal:
    a 2nd-order Butterworth high-pass at 300 Hz (little body below the open D4 string), peaks
    of +9 dB at 1.5 kHz (Q 1.2) and +4 dB at 3 kHz (Q 2), and -4 dB overall. This is a fixed,
    hand-set approximation of published erhu spectra (strong partials around 1-3 kHz, weak
    fundamental), not a measured body response.
    """
    if not body:
        return None
    if body != "erhu":
        raise ValueError(f"unknown body filter {body!r}")
    from scipy.signal import butter

    hp = butter(2, 300.0, "highpass", fs=rate, output="sos")
    sos = np.concatenate([hp, _peak_sos(1500.0, 9.0, 1.2, rate), _peak_sos(3000.0, 4.0, 2.0, rate)])
    sos[0, :3] *= 10 ** (-4 / 20)
    return sos


def body_filter(audio: np.ndarray, body: str, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Apply a body filter (:func:`body_sos`) to ``[samples]`` audio, causal, zero initial
    state (so it is linear and time-invariant: filtering a sum equals summing the filtered
    parts, sample for sample up to float rounding). Returns float32 of the same length."""
    sos = body_sos(body, rate)
    if sos is None:
        return np.asarray(audio, np.float32)
    from scipy.signal import sosfilt

    return sosfilt(sos, np.asarray(audio, np.float64)).astype(np.float32)


def _body(part: PartSpec) -> str:
    return ARTICULATIONS.get(part.label, Articulation()).body if part.program >= 0 else ""


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
        specs.append(perform(humanize(fit_range(cut[idx], inst), rng), inst, rng, length))
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
