"""The project's real-audio corpus (``../shared/data/audio``): file lists and the train/held-out split.

The split is by speaker (speech) and by recording (backgrounds), fixed by sorted order so
that training and benchmarks agree without a stored list:

* speech, held out: every 5th LibriSpeech and speechocean762 speaker (sorted by id) and the
  SiSEC 2011 speakers; everything else trains. FSDD (8 kHz digits) only trains.
* backgrounds, held out: the last two ESC-10 clips of each class (sorted), the ``coffee-shop`` and ``city`` ambience
  loops and ``doing_the_dishes``; everything else trains (noise, ambience, MUSIC/URMP solo
  stems, instrumental music). Songs with vocals are never backgrounds.
"""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

import numpy as np
import soundfile as sf

from avsplit.audio import resample

AUDIO_EXTS = {".flac", ".wav", ".ogg", ".opus", ".mp3"}
HELD_OUT_BACKGROUNDS = {"coffee-shop.ogg", "city.ogg", "doing_the_dishes.flac"}
VOCAL_MUSIC = {"karissa_hobbs_lets_go_fishin.ogg"}


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTS)


def speech_speakers(data: Path, split: str) -> dict[str, list[Path]]:
    """Speech files grouped by speaker.

    Args:
        data: the data root (``../shared/data``).
        split: ``"train"`` or ``"heldout"``.

    Returns:
        ``{speaker id: [files]}``, speaker ids prefixed by corpus (``"libri/103"``).
    """
    speech = Path(data) / "audio" / "speech"
    groups: dict[str, list[Path]] = {}
    for corpus in ("librispeech", "speechocean762"):
        speakers = sorted(d for d in (speech / corpus).iterdir() if d.is_dir())
        for i, d in enumerate(speakers):
            held = i % 5 == 4
            if held == (split == "heldout"):
                groups[f"{corpus}/{d.name}"] = _audio_files(d)
    misc = speech / "misc"
    for d in sorted(x for x in misc.iterdir() if x.is_dir()):
        held = d.name == "sisec2011_speech"
        if held != (split == "heldout"):
            continue
        for f in _audio_files(d):
            # one speaker per file stem prefix (cmu_arctic_us_aew_..., dev1_female4_src_1)
            groups.setdefault(f"misc/{d.name}/{f.stem}", []).append(f)
    if split == "train" and (speech / "fsdd").is_dir():
        for d in sorted(x for x in (speech / "fsdd").iterdir() if x.is_dir()):
            groups[f"fsdd/{d.name}"] = _audio_files(d)
    return groups


def background_files(data: Path, split: str) -> list[Path]:
    """Non-speech background recordings (noise, ambience, instrumental music) for ``split``."""
    audio = Path(data) / "audio"
    files: list[Path] = []
    for f in _audio_files(audio / "noise"):
        if "rir" in f.parts or "short" in f.parts:
            continue
        held = f.name in HELD_OUT_BACKGROUNDS
        if "esc10" in f.parts:
            held = f in _audio_files(f.parent)[-2:]
        if held == (split == "heldout"):
            files.append(f)
    if split == "train":
        music = audio / "music"
        files += [f for f in _audio_files(music / "MUSIC") if f.stem.startswith("gt")]
        files += [f for f in _audio_files(music / "URMP") if "AuSep" in f.name]
        files += [f for f in _audio_files(music / "misc") if f.name not in VOCAL_MUSIC]
    return files


def room_impulse_responses(data: Path) -> list[Path]:
    """Measured room impulse responses (``audio/noise/rir``)."""
    return _audio_files(Path(data) / "audio" / "noise" / "rir")


def load_mono(path: Path, rate: int) -> np.ndarray:
    """Read an audio file as mono float32 ``[samples]`` at ``rate`` Hz (soundfile, else ffmpeg)."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
        audio = audio.T
    except Exception:  # formats libsndfile lacks (opus in some builds, mp3)
        from avsplit.media import load_audio

        audio, sr = load_audio(path)
    return resample(audio.mean(axis=0), sr, rate)


# --- URMP chamber music: time-aligned stems of one piece ---------------------------------------

_URMP_STEM = [re.compile(r"^AuSep_(\d+)_([a-z]+)_"), re.compile(r"^\d+_([a-z]+)_orig$")]


def urmp_stem_name(path: Path) -> str | None:
    """``vn1`` for ``AuSep_1_vn_...``, ``vn`` for ``12_vn_orig``; ``None`` for mixes."""
    m = _URMP_STEM[0].match(path.stem)
    if m:
        return f"{m.group(2)}{m.group(1)}"
    m = _URMP_STEM[1].match(path.stem)
    return m.group(1) if m else None


def urmp_pieces(data: Path) -> dict[str, Path]:
    """URMP piece number -> the folder of ``DATA/audio/music/URMP/*/`` its stems are taken from
    (a piece found in several folders: the one with the most stems, then the longest)."""
    best: dict[str, tuple[tuple[int, float], Path]] = {}
    for folder in sorted((Path(data) / "audio" / "music" / "URMP").glob("*/*")):
        stems = [p for p in folder.glob("*.flac") if urmp_stem_name(p)]
        if len(stems) < 2:
            continue
        key = (len(stems), sf.info(stems[0]).duration)
        piece = folder.name.split("_")[0]
        if piece not in best or key > best[piece][0]:
            best[piece] = (key, folder)
    return {piece: folder for piece, (_, folder) in sorted(best.items())}


def loudest_window(stems: np.ndarray, length: int, step: int) -> int:
    """Start (samples) of the ``length``-sample window of ``stems [S, samples]`` where the
    quietest stem is loudest (every source clearly present)."""
    if stems.shape[1] <= length:
        return 0
    c = np.concatenate([np.zeros((len(stems), 1)), np.cumsum(stems.astype(np.float64) ** 2, 1)], 1)
    starts = np.arange(0, stems.shape[1] - length + 1, step)
    energy = c[:, starts + length] - c[:, starts]
    return int(starts[np.argmax(energy.min(axis=0))])


def urmp_items(data: Path, n_sources: int, max_s: float = 10.0, rate: int | None = None
               ) -> list[dict]:
    """Every combination of ``n_sources`` time-aligned URMP stems of a piece with different
    labels (violin 1 + violin 2 is skipped: a label cannot tell them apart), cut to the window of
    at most ``max_s`` seconds where the quietest stem is loudest.

    Args:
        rate: resample to this rate (Hz); ``None`` keeps the stems' own (11,025 or 48,000).

    Returns:
        ``{"set", "item", "labels", "refs" [n_sources, samples] float32, "rate"}`` per item.
    """
    from avsplit.labels import normalize_label

    items = []
    for _, folder in urmp_pieces(data).items():
        paths = sorted(p for p in folder.glob("*.flac") if urmp_stem_name(p))
        waves = [sf.read(str(p), dtype="float32", always_2d=True) for p in paths]
        sr = waves[0][1]
        mono = [w.mean(axis=1) for w, _ in waves]
        if rate is not None:
            mono, sr = [resample(w, sr, rate) for w in mono], rate
        n = min(len(w) for w in mono)
        names = [urmp_stem_name(p) for p in paths]
        labels = [normalize_label(re.sub(r"\d+$", "", s)) for s in names]
        for combo in itertools.combinations(range(len(paths)), n_sources):
            if len({labels[i] for i in combo}) < n_sources:
                continue
            stems = np.stack([mono[i][:n] for i in combo])
            length = min(n, int(max_s * sr))
            start = loudest_window(stems, length, sr // 2)
            items.append({"set": f"URMP {'pairs' if n_sources == 2 else 'trios'}",
                          "item": f"{folder.parent.name}/{folder.name}:"
                                  + "+".join(names[i] for i in combo) + f"@{start / sr:.1f}s",
                          "labels": [labels[i] for i in combo],
                          "refs": stems[:, start:start + length], "rate": sr})
    return items


# --- MUSIC solos: the real solo recordings of the MUSIC pairs, split in two folds ---------------

#: Two gt solos whose best normalised cross-correlation (first 5 s) reaches this are one recording.
SAME_RECORDING_CORR = 0.3


def music_pair_labels(name: str) -> list[str]:
    """The two labels of a MUSIC pair folder (``cello-erhu-2`` -> ``["cello", "erhu"]``)."""
    from avsplit.labels import normalize_label

    return [normalize_label(n) for n in name.split("-") if not n.isdigit()][:2]


def music_pair_folds(data: Path) -> dict[str, int]:
    """MUSIC pair folder name -> fold 0 or 1, so that no solo recording is in both folds.

    The MUSIC evaluation pairs reuse solos: the same recording (the same 5.9 s cut or an
    overlapping one) is ``gt`` of up to five pairs. Two solos are one recording when their best
    normalised cross-correlation over the first 5 s is at least :data:`SAME_RECORDING_CORR`;
    pairs that share a recording are grouped (union-find), and the groups are dealt to the two
    folds largest first, each to the fold with fewer pairs so far (ties: fold 0; groups in name
    order). Training on one fold's solos and scoring on the other fold's pairs is then a real
    held-out test. Computed once per folder (about 8 s: every gt decoded, all pairs
    correlated). Raises ``FileNotFoundError`` without ``DATA/audio/music/MUSIC``."""
    return dict(_music_pair_folds(str(Path(data).resolve())))


@functools.lru_cache(maxsize=4)
def _music_pair_folds(data: str) -> dict[str, int]:
    root = Path(data) / "audio" / "music" / "MUSIC"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found")
    pairs = sorted(p.name for p in root.iterdir() if (p / "gt1.flac").exists())
    keys, spectra, norms = [], [], []
    n = 5 * 11025
    for pair in pairs:
        for gt in ("gt1", "gt2"):
            x = load_mono(root / pair / f"{gt}.flac", 11025)[:n]
            x = np.pad(x, (0, n - len(x))).astype(np.float64)
            keys.append(pair)
            spectra.append(np.fft.rfft(x, 2 * n))
            norms.append(np.linalg.norm(x) + 1e-9)
    parent = {p: p for p in pairs}

    def find(p: str) -> str:
        while parent[p] != p:
            p = parent[p]
        return p

    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if keys[i] == keys[j]:
                continue
            corr = np.abs(np.fft.irfft(spectra[i] * np.conj(spectra[j]))).max() / (norms[i] * norms[j])
            if corr >= SAME_RECORDING_CORR:
                parent[find(keys[i])] = find(keys[j])
    groups: dict[str, list[str]] = {}
    for p in pairs:
        groups.setdefault(find(p), []).append(p)
    folds, sizes = {}, [0, 0]
    for group in sorted(groups.values(), key=lambda g: (-len(g), g[0])):
        k = int(sizes[1] < sizes[0])
        sizes[k] += len(group)
        folds.update({p: k for p in group})
    return folds


def music_solos(data: Path, folds: set[int], rate: int) -> list[tuple[str, np.ndarray]]:
    """The real solo recordings (``gt1``/``gt2``) of the MUSIC pairs in ``folds`` of
    :func:`music_pair_folds`: ``[(label, [samples] float32 at rate Hz)]``, in pair-name order.
    A recording shared by several pairs (they are all in one fold) comes once per pair."""
    root = Path(data) / "audio" / "music" / "MUSIC"
    solos = []
    for pair, fold in sorted(music_pair_folds(data).items()):
        if fold in folds:
            for gt, label in zip(("gt1", "gt2"), music_pair_labels(pair)):
                solos.append((label, load_mono(root / pair / f"{gt}.flac", rate).astype(np.float32)))
    return solos
