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


#: options added to every :func:`run_separate` (``--separate-options``, see
#: :func:`parse_args`; e.g. ``--weights runs/x/best.pt`` to score a candidate network)
SEPARATE_OPTIONS: list[str] = []


def parse_args(parser):
    """``parser.parse_args()`` with ``--separate-options`` added: more ``avsplit separate``
    options for every :func:`run_separate` of this run (put into :data:`SEPARATE_OPTIONS`)."""
    parser.add_argument("--separate-options", default="",
                        help="more `avsplit separate` options, e.g. '--weights runs/x/best.pt' "
                             "or '--no-enhance'")
    args = parser.parse_args()
    SEPARATE_OPTIONS[:] = args.separate_options.split()
    return args


def run_separate(input_path: Path, outdir: Path, *options: str
                 ) -> tuple[subprocess.CompletedProcess, float]:
    """``avsplit separate INPUT -o OUTDIR -q OPTIONS... SEPARATE_OPTIONS...`` in its own
    process (start-up included, as a user's script would see it).

    Returns:
        ``(finished process with captured text output, wall time in seconds)``.
    """
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "avsplit.cli", "separate", str(input_path),
                           "-o", str(outdir), "-q", *options, *SEPARATE_OPTIONS],
                          capture_output=True, text=True)
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


def bench_main(doc: str, script: str, section: str, title: str, run, table,
               extra=None) -> None:
    """The command line every benchmark shares: ``--data``, ``--json-out``, ``--write`` (and
    ``--json-in``: score the rows of an earlier ``--json-out`` instead of running).

    Args:
        doc: the script's docstring (its ``--help``); script: its path for the command line
            written to the doc; section/title: the markdown block name and its heading.
        run: ``(data, work folder) -> rows``; table: ``rows -> markdown``.
    """
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--json-in", type=Path, default=None, help="score an earlier run's rows")
    parser.add_argument("--write", type=Path, default=None,
                        help=f"replace the {section} section of this markdown file")
    args = parse_args(parser)
    if args.json_in:
        rows = json.loads(args.json_in.read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows = run(args.data, Path(tmp))
    text = f"{table(rows)}\n\nDate: {time.strftime('%Y-%m-%d')}."
    print()
    print(text)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    if args.write:
        write_section(args.write, section, " ".join([f"python {script}", *sys.argv[1:]]), text,
                      f"## {title}\n")
