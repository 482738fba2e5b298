"""``--mode instruments``: training-data synthesis, the query path, the output contract."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from helpers import json_lines, needs_fluidsynth
from avsplit.labels import BY_LABEL, LABELS, normalize_label, parse_query
from avsplit.train import music
from avsplit.train.instruments import StemPool, make_example

RATE = 22050


def avsplit(*args):
    return subprocess.run([sys.executable, "-m", "avsplit.cli", *map(str, args)],
                          capture_output=True, text=True)


def _tone(freq: float, seconds: float, rate: int, harmonics: int, decay: float,
          onsets: float) -> np.ndarray:
    """A repeated harmonic note: ``harmonics`` partials with amplitude ``decay ** k``."""
    t = np.arange(int(seconds * rate)) / rate
    env = np.exp(-3 * (t % onsets))
    wave = sum(decay ** k * np.sin(2 * np.pi * freq * (k + 1) * t) for k in range(harmonics))
    return (env * wave).astype(np.float32)


# --- data synthesis ------------------------------------------------------------------------

def _parts():
    rng = np.random.default_rng(0)
    parts = []
    for base in (48, 55, 64, 72):
        t, notes = 0.0, []
        while t < 12:
            d = float(rng.choice([0.25, 0.5, 1.0]))
            notes.append(music.Note(base + int(rng.integers(-5, 6)), 80, t, t + d))
            t += d
        parts.append(notes)
    return parts


def test_ensemble_plan_fits_each_part_into_its_instruments_range():
    counts: dict[str, int] = {}
    specs = music.plan_ensemble(_parts(), np.random.default_rng(1), counts, length=8.0)
    instruments = [s for s in specs if s.label in LABELS]
    assert len(instruments) == 4 and len({s.label for s in instruments}) == 4
    assert {s.label for s in specs} - set(LABELS) == {"drums", "electric_bass"}
    for s in instruments:
        lo, hi = BY_LABEL[s.label].pitch_range
        assert all(lo <= n.pitch <= hi for n in s.notes), s.label
        assert s.program in BY_LABEL[s.label].gm_programs
        assert all(0 <= n.start < n.end <= 8.0 for n in s.notes)
    assert sum(counts.values()) == 4  # the class balance counter saw every choice


@needs_fluidsynth
def test_rendered_stems_add_up_to_the_rendered_ensemble():
    pytest.importorskip("mido", reason="needs the train extra (pip install -e '.[train]')")
    specs = music.plan_ensemble(_parts(), np.random.default_rng(2), {}, length=6.0)
    font = music.find_soundfont("TimGM6mb.sf2")
    stems = music.render_parts(specs, font, length_s=6.0)
    with tempfile.TemporaryDirectory() as tmp:
        music.write_midi(specs, Path(tmp) / "all.mid")
        ensemble = music.render_midi(Path(tmp) / "all.mid", font)
    n = len(stems[0])
    assert all(len(s) == n for s in stems) and all(np.abs(s).max() > 1e-3 for s in stems)
    total = np.sum(stems, axis=0)
    ensemble = np.pad(ensemble, (0, max(0, n - len(ensemble))))[:n]
    snr = 10 * np.log10((ensemble ** 2).sum() / ((ensemble - total) ** 2).sum())
    assert snr > 30, snr


def _sine_pool() -> StemPool:
    """Three ensembles of sine 'instruments' (one frequency per label) + a drum-like click."""
    rate, n = 11025, 11025 * 3
    t = np.arange(n) / rate
    labels, stems = [], []
    for e in range(3):
        labs = [LABELS[(3 * e + k) % len(LABELS)] for k in range(3)] + ["drums"]
        sig = [np.sin(2 * np.pi * (200 + 100 * LABELS.index(lab)) * t) for lab in labs[:3]]
        sig.append((np.arange(n) % 2756 < 50).astype(float))
        labels.append(labs)
        stems.append(np.stack(sig).astype(np.float16))
    return StemPool(labels, stems, rate)


def test_training_example_asks_only_for_playing_instruments_and_adds_up_to_the_mixture():
    pool = _sine_pool()
    rng = np.random.default_rng(0)
    subsets = 0
    for _ in range(40):
        ex = make_example(pool, 8000, rng)
        assert ex.mixture.shape == ex.residual.shape == (8000,) and ex.stems.shape == (len(ex.labels), 8000)
        assert len(set(ex.labels)) == len(ex.labels) >= 1
        np.testing.assert_allclose(ex.stems.sum(axis=0) + ex.residual, ex.mixture, atol=1e-5)
        for label, stem in zip(ex.labels, ex.stems):
            assert stem.std() > 1e-4  # never a silent target
            freq = 200 + 100 * LABELS.index(label)
            peak_hz = np.argmax(np.abs(np.fft.rfft(stem))) * 11025 / 8000
            assert abs(peak_hz - freq) < 3  # the stem is that label's sine
        # a residual with a sine in it is an instrument left out of the query
        peaks = np.abs(np.fft.rfft(ex.residual))
        subsets += peaks.max() > 10 * np.median(peaks) + 1e-3 and len(ex.labels) < 4
    assert subsets > 0  # some examples ask for a subset only


def test_real_solo_examples_mix_different_labelled_solos_that_add_up_to_the_mixture():
    pool = _sine_pool()
    rng = np.random.default_rng(1)
    # "real" solos: noise bands, one per label, so a stem can be told apart from the pool's sines
    bands = {"violin": (2000, 2600), "cello": (3000, 3600), "flute": (4000, 4600)}
    solos = []
    for label, (lo, hi) in bands.items():
        spec = np.zeros(5 * 11025 // 2 + 1, complex)
        spec[lo * 5:hi * 5] = np.exp(2j * np.pi * rng.random(600 * 5))
        solos.append((label, np.fft.irfft(spec, 5 * 11025).astype(np.float32)))
    real = rendered = 0
    for _ in range(30):
        ex = make_example(pool, 8000, rng, augment=True, solos=solos, p_real=1.0)
        np.testing.assert_allclose(ex.stems.sum(axis=0) + ex.residual, ex.mixture, atol=1e-5)
        assert len(set(ex.labels)) == len(ex.labels)
        for label, stem in zip(ex.labels, ex.stems):
            spec = np.abs(np.fft.rfft(stem)) ** 2
            hz = np.fft.rfftfreq(len(stem), 1 / 11025)
            if label in bands:
                lo, hi = bands[label]
                inside = spec[(hz > lo - 300) & (hz < hi + 300)].sum()
                assert inside > 0.9 * spec.sum()  # the stem is that label's solo
                real += 1
            else:
                rendered += 1
    assert real >= 60  # two or three real solos per example
    assert rendered > 0  # now and then a rendered instrument joins them


def test_music_folds_keep_a_shared_solo_recording_in_one_fold(tmp_path):
    from avsplit.train.corpus import music_pair_folds, music_solos

    rng = np.random.default_rng(0)
    rate = 11025
    recording = {k: rng.standard_normal(6 * rate).astype(np.float32) for k in "abcdefgh"}
    pairs = {"violin-cello": "ab", "cello-flute": "bc",  # share recording b
             "flute-tuba": "de", "tuba-violin": "fg", "violin-flute": "hd"}  # d shared
    for name, (x, y) in pairs.items():
        folder = tmp_path / "audio" / "music" / "MUSIC" / name
        folder.mkdir(parents=True)
        sf.write(folder / "gt1.flac", recording[x], rate)
        # the shared recording appears shifted by 0.3 s, as overlapping cuts do
        sf.write(folder / "gt2.flac", np.roll(recording[y], int(0.3 * rate)), rate)
        sf.write(folder / "mix.flac", recording[x] + recording[y], rate)
    folds = music_pair_folds(tmp_path)
    assert set(folds) == set(pairs)
    assert folds["violin-cello"] == folds["cello-flute"]
    assert folds["flute-tuba"] == folds["violin-flute"]
    assert len(set(folds.values())) == 2  # both folds used
    assert folds["tuba-violin"] != folds["flute-tuba"]  # the smaller fold takes the lone pair
    solos = music_solos(tmp_path, {folds["flute-tuba"]}, rate)
    assert [lab for lab, _ in solos] == ["flute", "tuba", "violin", "flute"]
    assert all(len(x) == 6 * rate for _, x in solos)


def test_separation_loss_rewards_the_true_stems_and_masks_compete():
    import torch

    from avsplit.audio import stft
    from avsplit.models.instruments import EnsembleSeparator, EnsembleSeparatorConfig
    from avsplit.train.instruments import batch_tensors, separation_loss, thresholded_sdr

    ref = torch.randn(2, 4000)
    assert float(thresholded_sdr(ref, ref).min()) == pytest.approx(30.0, abs=0.01)  # capped
    assert float(thresholded_sdr(0.5 * ref, ref).max()) < 7.0  # a too-quiet stem is penalised
    torch.manual_seed(0)
    model = EnsembleSeparator(EnsembleSeparatorConfig(channels=[4, 4, 4, 4], bottleneck=16,
                                                      hidden=8, layers=1, features=4))
    rng = np.random.default_rng(3)
    examples = [make_example(_sine_pool(), 8000, rng, n_sources=k) for k in (1, 2, 3)]
    mix, stems, query, residual = batch_tensors(model, examples)
    assert query.shape == (3, max(len(e.labels) for e in examples)) and (query[0, 1:] == -1).all()
    spec = stft(mix, 1024, 256)
    masks = model.masks(spec, query, residual=True)
    torch.testing.assert_close(masks.sum(dim=1), torch.ones_like(masks[:, 0]))
    assert float(masks[0, 1:-1].detach().abs().max()) == 0.0  # padding takes nothing
    loss = separation_loss(model, mix, stems, query, residual)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0
                                        for p in model.parameters())
    with pytest.raises(ValueError, match="once"):
        model.label_index(["violin", "violin"])


def test_log_frequency_maps_round_trip_a_smooth_spectrum():
    import torch

    from avsplit.models.instruments import log_frequency_maps

    to_log, to_linear = log_frequency_maps(1024, 11025, 256, 25.0)
    assert to_log.shape == (256, 513) and to_linear.shape == (513, 256)
    np.testing.assert_allclose(to_log.sum(1).numpy(), 1, atol=1e-5)
    f = np.arange(513) * 11025 / 1024
    smooth = np.exp(-((np.log(np.maximum(f, 25)) - np.log(800)) ** 2)).astype(np.float32)
    back = (to_linear @ (to_log @ torch.from_numpy(smooth))).numpy()
    assert np.abs(back - smooth)[5:].max() < 0.05


def test_timbre_augmentation_keeps_length_and_pitch_region_and_adds_a_decaying_room():
    from avsplit.train.instruments import augment_timbre, synthetic_room_response

    rng = np.random.default_rng(1)
    rir = synthetic_room_response(rng, 11025)
    assert rir[0] == 1.0 and np.abs(rir[1:]).max() < 1.0
    quarter = len(rir) // 4
    assert np.sum(rir[1:quarter] ** 2) > np.sum(rir[-quarter:] ** 2)  # the tail decays
    t = np.arange(11025) / 11025
    x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    for _ in range(5):
        y = augment_timbre(x, rng, 11025, p_reverb=1.0)
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 11025 / len(y)
        assert 440 * 0.93 < peak_hz < 440 * 1.07  # speed change of at most 6 %


# --- labels --------------------------------------------------------------------------------

def test_labels_and_synonyms():
    assert normalize_label("Sax") == "saxophone"
    assert normalize_label("acoustic guitar") == "acoustic_guitar"
    assert normalize_label("contrabass") == "double_bass"
    assert normalize_label("Violins") == "violin"
    assert parse_query("violin, cello,horn") == ["violin", "cello", "french_horn"]
    with pytest.raises(ValueError, match="unknown instrument"):
        normalize_label("kazoo")
    with pytest.raises(ValueError):
        parse_query(" , ")


# --- the query path ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def separator():
    from avsplit.engine import Engine

    return Engine("cpu").separator("instrument-separator")


def test_query_path_keeps_rate_channels_and_length(separator):
    from avsplit.instruments import separate_queries

    mix = np.stack([_tone(220, 2.0, RATE, 8, 0.7, 0.5), _tone(220, 2.0, RATE, 8, 0.7, 0.5) * 0.5])
    stems = separate_queries(separator, mix, RATE, ["cello", "flute", "cello"])
    assert stems.shape == (3, 2, mix.shape[1]) and stems.dtype == np.float32
    np.testing.assert_allclose(stems[0], stems[2], atol=1e-6)  # same label, same stem
    masks = separator.masks(separator.mono(mix, RATE), ["violin"])
    assert masks.min() >= 0 and masks.max() <= 1
    with pytest.raises(ValueError, match="does not know"):
        separator.model.label_index(["kazoo"])


def test_query_separates_a_low_brass_note_from_a_high_flute_note(separator):
    """A stem asked for is closer to its source than the mixture is (SI-SDR), both ways."""
    from avsplit.audio import si_sdr
    from avsplit.instruments import separate_queries

    low = _tone(98.0, 4.0, RATE, 12, 0.8, 1.0)         # rich low tone (tuba register)
    high = 0.6 * _tone(1046.5, 4.0, RATE, 2, 0.2, 0.5)  # nearly pure high tone (flute register)
    mix = (low + high)[None]
    stems = separate_queries(separator, mix, RATE, ["tuba", "flute"])
    for stem, ref in zip(stems, (low, high)):
        assert si_sdr(stem[0], ref) > si_sdr(mix[0], ref) + 1.0


# --- command line --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def duet_wav(tmp_path_factory) -> Path:
    low = _tone(98.0, 3.0, RATE, 12, 0.8, 1.0)
    high = 0.6 * _tone(1046.5, 3.0, RATE, 2, 0.2, 0.5)
    path = tmp_path_factory.mktemp("duet") / "duet.wav"
    sf.write(path, np.stack([low + high, 0.8 * (low + high)]).T, RATE, subtype="FLOAT")
    return path


@pytest.mark.subprocess
def test_query_on_audio_only_input_writes_labelled_stems_and_residual(duet_wav, tmp_path):
    res = avsplit("separate", duet_wav, "--query", "cello,Flute", "-o", tmp_path, "--json", "-q")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "duet"
    assert sorted(p.name for p in folder.iterdir()) == ["cello.wav", "flute.wav", "manifest.json",
                                                        "residual.wav"]
    mix, rate = sf.read(duet_wav, dtype="float32", always_2d=True)
    parts = [sf.read(folder / f, dtype="float32", always_2d=True) for f in
             ("cello.wav", "flute.wav", "residual.wav")]
    assert all(r == rate and a.shape == mix.shape for a, r in parts)
    np.testing.assert_allclose(sum(a for a, _ in parts), mix, atol=1e-3)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["mode"] == "instruments" and manifest["query"] == ["cello", "flute"]
    # the default separator is the mean of the network's masks and the NMF's
    assert {m["name"] for m in manifest["models"]} == {"instrument-separator", "instrument-nmf"}
    entries = {f["file"]: f for f in manifest["files"]}
    assert entries["cello.wav"]["label"] == "cello" and "audio_confidence" in entries["cello.wav"]
    assert [x["status"] for x in json_lines(res.stdout)] == ["done"]


@pytest.mark.subprocess
def test_query_on_video_remuxes_each_stem(video_with_audio, tmp_path):
    from avsplit import media

    res = avsplit("separate", video_with_audio, "--mode", "instruments", "--query", "sax",
                  "-o", tmp_path, "-q")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / video_with_audio.stem
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["manifest.json", "residual.mp4", "residual.wav", "saxophone.mp4",
                     "saxophone.wav"]
    src, out = media.probe(video_with_audio), media.probe(folder / "saxophone.mp4")
    assert out.video.codec == src.video.codec and abs(out.duration - src.duration) < 0.1


@pytest.mark.subprocess
def test_instruments_mode_without_a_recognisable_instrument_puts_everything_in_the_residual(
        video_with_audio, tmp_path):
    res = avsplit("separate", video_with_audio, "--mode", "instruments", "--no-video", "-o",
                  tmp_path, "-q")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / video_with_audio.stem
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["file"] for f in manifest["files"]] == ["residual.wav"]
    assert any("no instrument" in n for n in manifest["notes"])
    assert {m["name"] for m in manifest["models"]} >= {"instrument-separator",
                                                       "instrument-recognizer"}


@pytest.mark.subprocess
def test_instrument_mode_errors(duet_wav, video_with_audio, tmp_path):
    res = avsplit("separate", duet_wav, "--mode", "instruments", "-o", tmp_path)
    assert res.returncode == 1 and "--query" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "duet").exists()
    res = avsplit("separate", duet_wav, "--query", "kazoo", "-o", tmp_path)
    assert res.returncode == 2 and "kazoo" in res.stderr
    res = avsplit("separate", video_with_audio, "--mode", "onscreen", "--query", "violin")
    assert res.returncode == 2


def _det(label, x, confidence):
    from avsplit.vision.instruments import InstrumentDetection

    return InstrumentDetection(label, (x, 0, x + 10, 10), confidence, np.zeros((2, 2), np.float32))


def test_same_label_twice_is_split_between_the_instances():
    from avsplit.instruments import plan_instrument_stems

    dets = [_det("violin", 0, 0.9), _det("banjo", 20, 0.3), _det("violin", 40, 0.8)]
    heard = {"violin": 0.9, "banjo": 0.05, "acoustic_guitar": 0.8}
    stems, labels = plan_instrument_stems(dets, heard)
    assert [s.name for s in stems] == ["violin", "acoustic_guitar", "violin-2"]
    assert sorted(labels) == ["acoustic_guitar", "violin"]
    assert stems[1].relabelled_from == "banjo"
    assert stems[0].share == stems[2].share == 0.5 and stems[0].mask_index == stems[2].mask_index
    assert labels[stems[1].mask_index] == "acoustic_guitar"
    # a confident picture keeps its label even when the tagger does not hear it
    stems, labels = plan_instrument_stems([_det("banjo", 20, 0.9)], heard)
    assert labels == ["banjo"] and stems[0].relabelled_from is None


def test_unsure_picture_candidates_are_kept_only_when_heard():
    from avsplit.instruments import plan_instrument_stems

    # a guitar seen as weak guitars of two kinds, a piano seen as a weak accordion, a weak oboe
    # that nobody plays: only the guitar that is heard stays, once, and weak guesses are not
    # renamed to a heard relative (the piano)
    dets = [_det("accordion", 0, 0.15), _det("electric_guitar", 30, 0.05),
            _det("acoustic_guitar", 32, 0.07), _det("acoustic_guitar", 36, 0.06),
            _det("oboe", 60, 0.07)]
    heard = {"piano": 0.9, "accordion": 0.1, "acoustic_guitar": 0.7, "electric_guitar": 0.3,
             "oboe": 0.1, "flute": 0.2}
    stems, labels = plan_instrument_stems(dets, heard)
    assert [(s.name, s.relabelled_from, s.visual_confidence) for s in stems] == [
        ("acoustic_guitar", None, 0.07)]
    assert stems[0].confirmed_by_audio and labels == ["acoustic_guitar"]
    # without audio evidence, or when nothing is heard, candidates are dropped
    assert plan_instrument_stems(dets, None) == ([], [])
    assert plan_instrument_stems(dets, {lab: 0.1 for lab in heard}) == ([], [])
    # a sure but not very sure label that is not heard becomes its heard relative
    stems, _ = plan_instrument_stems([_det("marimba", 0, 0.32)], {"marimba": 0.05, "piano": 0.8})
    assert stems[0].label == "piano" and stems[0].relabelled_from == "marimba"
    stems, _ = plan_instrument_stems([_det("marimba", 0, 0.6)], {"marimba": 0.05, "piano": 0.8})
    assert stems[0].label == "marimba"


def test_a_look_alike_the_picture_cannot_name_is_settled_by_the_audio_at_any_confidence():
    from avsplit.instruments import FAMILIES, LOOK_ALIKES, plan_instrument_stems
    from avsplit.labels import BY_LABEL

    # a xylophone, which ImageNet can only call a marimba, seen surely and heard clearly
    stems, labels = plan_instrument_stems([_det("marimba", 0, 0.9)],
                                          {"marimba": 0.05, "xylophone": 0.8, "piano": 0.9})
    assert labels == ["xylophone"] and stems[0].relabelled_from == "marimba"
    # no rename when the seen label is heard too, or the look-alike is not heard enough
    assert plan_instrument_stems([_det("violin", 0, 0.9)], {"violin": 0.3, "viola": 0.9}
                                 )[1] == ["violin"]
    assert plan_instrument_stems([_det("oboe", 0, 0.9)], {"oboe": 0.05, "clarinet": 0.4}
                                 )[1] == ["oboe"]
    # the table: each look-alike has no ImageNet class, the seen label has one, same family
    for seen, alikes in LOOK_ALIKES.items():
        assert BY_LABEL[seen].imagenet
        for lab in alikes:
            assert not BY_LABEL[lab].imagenet
            assert any(seen in f and lab in f for f in FAMILIES)
