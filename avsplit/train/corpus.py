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
