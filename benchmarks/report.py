"""Shared by the benchmark scripts: run ``avsplit separate`` as a user would, and write a
result block into ``docs/benchmarks.md``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np


# Development clips of DATA/av/speech (relative paths): used to tune decisions
# (benchmarks/tune_association.py), never scored by onscreen.py or speakers.py. Three GRID
# talkers that no speakers pair uses, three CREMA-D takes of actor 1001 (whose other takes are
# scored), and two TV talking heads whose jaw movement follows their sound only weakly
# (jaw-envelope r 0.2 and 0.05 at the natural lag), the case the first six do not show.
DEV_CLIPS = ["grid/lbbc2a.mpg", "grid/lrwp9a.mpg", "grid/sbwe5n.mpg",
             "crema_d/1001_DFA_ANG_XX.flv", "crema_d/1001_DFA_DIS_XX.flv",
             "crema_d/1001_DFA_FEA_XX.flv", "talking_heads/face2.mp4",
             "talking_heads_2/RD_Radio34_000.mp4"]


def run_separate(input_path: Path, outdir: Path, *options: str
                 ) -> tuple[subprocess.CompletedProcess, float]:
    """``avsplit separate INPUT -o OUTDIR -q OPTIONS...`` in its own process (start-up
    included, as a user's script would see it).

    Returns:
        ``(finished process with captured text output, wall time in seconds)``.
    """
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "avsplit.cli", "separate", str(input_path),
                           "-o", str(outdir), "-q", *options], capture_output=True, text=True)
    return proc, time.perf_counter() - t0


def write_section(path: Path, name: str, command: str, body: str, intro: str = "") -> None:
    """Replace the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` with the
    command and ``body``; append it (after ``intro``) when the file has no such block."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\nCommand: `{command}`\n\n{body}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + (intro + "\n" if intro else "") + block + "\n"
    path.write_text(text)


def held_out_voice(seed: int, length: int, rate: int, data: Path) -> np.ndarray:
    """``length`` samples at ``rate`` Hz of one held-out speaker (``avsplit.train.corpus``):
    several utterances back to back, a random excerpt; float32 mono."""
    from avsplit.train import corpus

    rng = np.random.default_rng(seed)
    speakers = list(corpus.speech_speakers(data, "heldout").values())
    files = speakers[int(rng.integers(len(speakers)))]
    parts, total = [], 0
    while total < length:
        x = corpus.load_mono(files[int(rng.integers(len(files)))], rate)
        parts.append(x)
        total += len(x)
    y = np.concatenate(parts)
    start = int(rng.integers(0, len(y) - length + 1))
    return y[start:start + length].astype(np.float32)


def held_out_noise(seed: int, length: int, rate: int, data: Path) -> np.ndarray:
    """``length`` samples at ``rate`` Hz of one held-out background recording
    (``avsplit.train.corpus``), looped when short, a random excerpt; float32 mono."""
    from avsplit.train import corpus

    rng = np.random.default_rng(seed)
    files = corpus.background_files(data, "heldout")
    y = corpus.load_mono(files[int(rng.integers(len(files)))], rate)
    while len(y) < length:
        y = np.concatenate([y, y])
    start = int(rng.integers(0, len(y) - length + 1))
    return y[start:start + length].astype(np.float32)


def product_masks(engine, separator, mono: np.ndarray) -> np.ndarray:
    """The speech masks ``avsplit separate`` uses for a 16 kHz mono mixture: the separator's,
    refined by the speech enhancer (:func:`avsplit.modes.speech.refine_speech_masks`)."""
    from avsplit.modes.speech import refine_speech_masks

    return refine_speech_masks(separator.masks(mono), mono, engine.speech_enhancer().enhance(mono),
                               separator.n_fft, separator.hop)
