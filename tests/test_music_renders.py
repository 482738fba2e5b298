"""Expressive synthetic renders (``avsplit.train.music.perform``): vibrato, swells, slides,
strums, the erhu body filter, and that stems still add up to the ensemble."""

import tempfile
from pathlib import Path

import numpy as np
import pytest

from helpers import needs_fluidsynth
from avsplit.labels import BY_LABEL
from avsplit.train import music

RATE = music.SAMPLE_RATE


def _melody(base: int, seconds: float = 8.0, step: float = 0.5, seed: int = 0) -> list[music.Note]:
    rng = np.random.default_rng(seed)
    t, notes = 0.0, []
    while t < seconds - 0.1:
        d = float(rng.choice([step, 2 * step]))
        notes.append(music.Note(base + int(rng.choice([0, 2, 4, 5, 7, 9])), 80, t, min(t + d, seconds)))
        t += d
    return notes


def _played(label: str, notes, length: float, want, chords=None, max_seed: int = 50) -> music.PartSpec:
    """The first seed whose random performance has ``want(style)`` (e.g. vibrato drawn)."""
    for seed in range(max_seed):
        spec = music.perform(notes, BY_LABEL[label], np.random.default_rng(seed), length, chords)
        if want(spec.style):
            return spec
    raise AssertionError(f"no seed gave the wanted {label} performance")


def _midi_messages(spec: music.PartSpec):
    """(seconds, message) of a part written alone."""
    mido = pytest.importorskip("mido", reason="needs the train extra")
    with tempfile.TemporaryDirectory() as tmp:
        music.write_midi([spec], Path(tmp) / "p.mid")
        mf = mido.MidiFile(str(Path(tmp) / "p.mid"))
    out, t = [], 0.0
    for msg in mf.tracks[0]:
        t += msg.time / mf.ticks_per_beat  # 60 bpm: one beat per second
        out.append((t, msg))
    return out


def test_violin_midi_has_pitch_bend_vibrato_at_the_drawn_rate_and_depth_piano_has_none():
    notes = [music.Note(69, 80, 2.0 * i, 2.0 * i + 1.9) for i in range(4)]
    spec = _played("violin", notes, 8.0, lambda s: "vibrato_hz" in s and not s.get("scoops"))
    msgs = _midi_messages(spec)
    # RPN 0 sets the bend range before any note
    ccs = [(m.control, m.value) for _, m in msgs if m.type == "control_change"]
    i = ccs.index((101, 0))
    assert ccs[i + 1:i + 4] == [(100, 0), (6, spec.bend_range), (38, 0)]
    bends = [(t, m.pitch / 8192 * spec.bend_range * 100) for t, m in msgs if m.type == "pitchwheel"]
    assert len(bends) > 200
    # hold the bend curve on a 100 Hz grid and look at the sustained part of the notes
    t_b, c_b = np.array(bends).T
    grid = np.arange(0.0, 8.0, 0.01)
    cents = c_b[np.maximum(np.searchsorted(t_b, grid, side="right") - 1, 0)]
    sustained = np.concatenate([cents[(grid > 2 * i + 0.7) & (grid < 2 * i + 1.9)] for i in range(4)])
    spec_f = np.abs(np.fft.rfft(sustained - sustained.mean(), 8192))
    rate_hz = np.argmax(spec_f) * 100 / 8192
    assert abs(rate_hz - spec.style["vibrato_hz"]) < 0.35, (rate_hz, spec.style)
    assert 4.5 <= spec.style["vibrato_hz"] <= 7.0 and 10 <= spec.style["vibrato_cents"] <= 50
    assert 0.7 * spec.style["vibrato_cents"] < np.abs(sustained).max() < 1.3 * spec.style["vibrato_cents"]
    # fades in after each onset: little bend in the first 80 ms of a note
    assert np.abs(cents[((grid + 1e-6) % 2.0 > 0.015) & ((grid + 1e-6) % 2.0 < 0.07)]).max() < 3
    # a piano part: no bend other than the reset to 0, no expression curve
    piano = music.perform(notes, BY_LABEL["piano"], np.random.default_rng(0), 8.0)
    msgs = _midi_messages(piano)
    assert [m.pitch for _, m in msgs if m.type == "pitchwheel"] == [0]
    assert [m.value for _, m in msgs if m.type == "control_change" and m.control == 11] == [127]


def test_sustained_instruments_get_expression_curves_plucked_do_not():
    notes = _melody(64)
    flute = music.perform(notes, BY_LABEL["flute"], np.random.default_rng(1), 8.0)
    expr = [c.value for c in flute.controls if c.kind == "expression"]
    assert len(expr) > 100 and min(expr) < 110 and max(expr) > 115
    guitar = music.perform(notes, BY_LABEL["acoustic_guitar"], np.random.default_rng(1), 8.0)
    assert not any(c.kind == "expression" for c in guitar.controls)


def test_slides_glide_into_the_next_note_and_end_on_its_pitch():
    notes = [music.Note(p, 80, 0.5 * i, 0.5 * i + 0.5) for i, p in enumerate([67, 69, 71, 69, 67, 65])]
    spec = _played("erhu", notes, 3.5, lambda s: s.get("slides", 0) >= 1 and "vibrato_hz" in s)
    assert len(spec.notes) == len(notes) - spec.style["slides"]  # merged: no re-attack
    merged = [n for n in spec.notes if n.end - n.start > 0.75]
    assert merged
    for n in merged:  # the glide happens in the last 30..120 ms before the second note
        target = next(o.pitch for o in notes if abs(o.start - (n.start + 0.5)) < 1e-6)
        bends = [(c.time, c.value) for c in spec.controls if c.kind == "bend"]
        before = [v for t, v in bends if n.start + 0.25 < t < n.start + 0.5 - 0.121]
        after = [v for t, v in bends if n.start + 0.52 < t < n.end]
        assert max(abs(v) for v in before) < 0.6  # vibrato only
        assert abs(np.mean(after) - (target - n.pitch)) < 0.3
    assert spec.bend_range == 12


def test_guitar_strum_spreads_chord_onsets_by_10_to_40_ms_alternating_down_and_up():
    notes = _melody(64, step=0.5)
    spec = music.perform(notes, BY_LABEL["acoustic_guitar"], np.random.default_rng(3), 8.0, chords=True)
    lo, hi = BY_LABEL["acoustic_guitar"].pitch_range
    assert all(lo <= n.pitch <= hi and 0 <= n.start < n.end <= 8.0 for n in spec.notes)
    assert 0.010 <= spec.style["strum_s"] <= 0.040
    chords = []
    for m in notes:
        group = sorted((n for n in spec.notes if m.start - 1e-6 <= n.start < m.start + 0.045),
                       key=lambda n: n.start)
        if len(group) >= 3:
            chords.append(group)
    assert len(chords) >= len(notes) // 2
    directions = set()
    for g in chords:
        spread = g[-1].start - g[0].start
        assert 0.009 <= spread <= 0.041, spread
        pitches = [n.pitch for n in g]
        assert pitches in (sorted(pitches), sorted(pitches)[::-1])
        directions.add(pitches == sorted(pitches))
    assert directions == {True, False}  # down- and up-strokes
    # accordion block chords: every chord tone starts with its melody note
    acc = music.perform(_melody(70), BY_LABEL["accordion"], np.random.default_rng(3), 8.0, chords=True)
    starts = [n.start for n in acc.notes]
    assert len(acc.notes) > len(_melody(70)) and all(starts.count(s) in (1, 3, 4) for s in starts)


def test_plans_stay_in_range_and_inside_the_excerpt_for_many_seeds():
    parts = [_melody(b, 12.0, 0.25, seed=b) for b in (48, 55, 64, 72)]
    for seed in range(30):
        for s in music.plan_ensemble(parts, np.random.default_rng(seed), {}, length=8.0):
            if s.label in BY_LABEL:
                lo, hi = BY_LABEL[s.label].pitch_range
                assert all(lo <= n.pitch <= hi and 0 <= n.start < n.end <= 8.0 for n in s.notes)
            assert all(abs(c.value) <= s.bend_range for c in s.controls if c.kind == "bend")


def test_body_filter_is_linear_and_shapes_the_erhu_band():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 4000)).astype(np.float32)
    np.testing.assert_allclose(music.body_filter(a + b, "erhu"), music.body_filter(a, "erhu")
                               + music.body_filter(b, "erhu"), atol=1e-5)
    np.testing.assert_array_equal(music.body_filter(a, ""), a)
    from scipy.signal import sosfreqz

    w, h = sosfreqz(music.body_sos("erhu"), [100, 1500, 5000], fs=RATE)
    db = 20 * np.log10(np.abs(h))
    assert db[1] > db[0] + 15 and db[1] > db[2] + 3


def _band_share(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return spec[(f >= lo) & (f < hi)].sum() / spec.sum()


@needs_fluidsynth
def test_rendered_violin_pitch_oscillates_and_erhu_differs_from_violin_in_the_body_band():
    pytest.importorskip("mido", reason="needs the train extra")
    from scipy.signal import butter, hilbert, sosfiltfilt

    font = music.find_soundfont("TimGM6mb.sf2")
    notes = [music.Note(69, 90, 0.0, 3.0)]
    spec = _played("violin", notes, 3.0, lambda s: "vibrato_hz" in s)
    spec.program = 40
    erhu = music.PartSpec(spec.notes, 40, "erhu", spec.controls, spec.bend_range, spec.style)
    violin, er = music.render_parts([spec, erhu], font, length_s=3.5)
    # instantaneous frequency of the fundamental (440 Hz) from the analytic signal
    band = sosfiltfilt(butter(4, [380, 500], "bandpass", fs=RATE, output="sos"), violin)
    inst = np.diff(np.unwrap(np.angle(hilbert(band)))) * RATE / (2 * np.pi)
    k = int(0.02 * RATE)
    inst = np.convolve(inst, np.ones(k) / k, mode="same")[int(1.0 * RATE):int(2.8 * RATE)]
    cents = 1200 * np.log2(inst / 440.0)
    mod = np.abs(np.fft.rfft(cents - cents.mean(), 1 << 16))
    rate_hz = np.argmax(mod) * RATE / (1 << 16)
    assert abs(rate_hz - spec.style["vibrato_hz"]) < 0.4, (rate_hz, spec.style)
    swing = (np.percentile(cents, 98) - np.percentile(cents, 2)) / 2
    assert 0.5 * spec.style["vibrato_cents"] < swing < 1.6 * spec.style["vibrato_cents"]
    # same MIDI, erhu body: less energy below 300 Hz, more around 1-2 kHz
    assert _band_share(er, 0, 300) < 0.5 * _band_share(violin, 0, 300) + 1e-4
    assert _band_share(er, 1000, 2000) > 1.5 * _band_share(violin, 1000, 2000)


@needs_fluidsynth
def test_expressive_stems_add_up_to_the_rendered_ensemble_within_20_db():
    """Parts with dense pitch bends rendered one after another in one fluidsynth call match the
    ensemble rendering to about 20 dB SNR only (not the > 30 dB of plain parts); training
    mixtures are sums of stems, so this costs realism of the ensemble, not correctness of the
    targets."""
    pytest.importorskip("mido", reason="needs the train extra")
    font = music.find_soundfont("TimGM6mb.sf2")
    specs = [
        _played("violin", _melody(72, 6.0), 6.0, lambda s: "vibrato_hz" in s),
        _played("erhu", _melody(67, 6.0, seed=1), 6.0, lambda s: "vibrato_hz" in s),
        music.perform(_melody(60, 6.0, seed=2), BY_LABEL["acoustic_guitar"], np.random.default_rng(0), 6.0, True),
        music.perform(_melody(65, 6.0, seed=3), BY_LABEL["accordion"], np.random.default_rng(0), 6.0, True),
        _played("trombone", _melody(55, 6.0, seed=4), 6.0, lambda s: s.get("slides", 0) > 0),
    ]
    stems = music.render_parts(specs, font, length_s=6.0)
    ensemble = music.render_ensemble(specs, font, length_s=6.0)
    assert all(len(s) == len(ensemble) for s in stems) and all(np.abs(s).max() > 1e-3 for s in stems)
    total = np.sum(stems, axis=0)
    snr = 10 * np.log10((ensemble ** 2).sum() / ((ensemble - total) ** 2).sum())
    assert snr > 15, snr
