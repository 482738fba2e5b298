"""Instrument labels: names, synonyms, General-MIDI programs and ImageNet classes.

One vocabulary is shared by the training data synthesis (which General-MIDI programs render a
label), the query-conditioned separator (one embedding per label), the picture recogniser
(which ImageNet-1k classes show a label) and the command line (``--query``, synonyms).

Labels are lowercase snake_case English names. ``normalize_label`` maps the synonyms users
type (``sax``, ``guitar``, ``horn``, ``contrabass``, URMP's ``vn``/``vc``, ...) to a label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Instrument:
    """One instrument the separator knows.

    Attributes:
        label: snake_case name, e.g. ``"acoustic_guitar"``.
        gm_programs: 0-based General-MIDI programs whose sounds render this instrument in the
            synthetic training data (several programs = several timbres of one instrument).
        pitch_range: (lowest, highest) MIDI note numbers the instrument plays; parts are
            transposed by octaves into it before rendering.
        imagenet: ImageNet-1k class indices that show this instrument (empty: it cannot be
            recognised in the picture, only asked for with ``--query``).
    """

    label: str
    gm_programs: tuple[int, ...]
    pitch_range: tuple[int, int]
    imagenet: tuple[int, ...] = ()


#: The instruments the query-conditioned separator is trained on, in embedding order.
#: (Erhu has no General-MIDI program; it is rendered with GM 110 "Fiddle" or 40 "Violin", bowed
#: strings, played with wide vibrato and slides and passed through an erhu body filter, see
#: ``avsplit.train.music.ARTICULATIONS`` and ``body_sos``.)
INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("violin", (40,), (55, 100), (889,)),
    Instrument("viola", (41,), (48, 88)),
    Instrument("cello", (42,), (36, 76), (486,)),
    Instrument("double_bass", (43,), (28, 67)),
    Instrument("flute", (73,), (60, 96), (558,)),
    Instrument("oboe", (68,), (58, 91), (683,)),
    Instrument("clarinet", (71,), (50, 91)),
    Instrument("bassoon", (70,), (34, 75), (432,)),
    Instrument("saxophone", (64, 65, 66), (49, 81), (776,)),
    Instrument("trumpet", (56,), (54, 82), (513,)),
    Instrument("trombone", (57,), (40, 72), (875,)),
    Instrument("french_horn", (60,), (41, 77), (566,)),
    Instrument("tuba", (58,), (28, 58)),
    Instrument("acoustic_guitar", (24, 25), (40, 84), (402,)),
    Instrument("electric_guitar", (26, 27), (40, 86), (546,)),
    Instrument("piano", (0, 1), (33, 96), (579, 881)),
    Instrument("accordion", (21,), (53, 89), (401,)),
    Instrument("harp", (46,), (36, 91), (594,)),
    Instrument("xylophone", (13,), (65, 96)),
    Instrument("marimba", (12,), (45, 84), (642,)),
    Instrument("organ", (19, 16), (36, 84), (687,)),
    Instrument("banjo", (105,), (48, 84), (420,)),
    Instrument("harmonica", (22,), (60, 84), (593,)),
    Instrument("erhu", (110, 40), (62, 93)),
)

#: Sounds mixed into the training data as interferers; the separator is never asked for them.
#: General-MIDI programs (``-1`` = the drum kit on channel 10) and MIDI note ranges.
INTERFERERS: tuple[Instrument, ...] = (
    Instrument("electric_bass", (33, 34), (28, 55)),
    Instrument("drums", (-1,), (35, 81)),
)

LABELS: tuple[str, ...] = tuple(i.label for i in INSTRUMENTS)
BY_LABEL: dict[str, Instrument] = {i.label: i for i in INSTRUMENTS}

SYNONYMS: dict[str, str] = {
    "fiddle": "violin", "vn": "violin",
    "va": "viola",
    "violoncello": "cello", "vc": "cello",
    "contrabass": "double_bass", "upright_bass": "double_bass", "string_bass": "double_bass",
    "bass": "double_bass", "db": "double_bass",
    "transverse_flute": "flute", "fl": "flute",
    "ob": "oboe",
    "cl": "clarinet",
    "bn": "bassoon", "fagott": "bassoon",
    "sax": "saxophone", "alto_sax": "saxophone", "tenor_sax": "saxophone",
    "soprano_sax": "saxophone", "baritone_sax": "saxophone",
    "cornet": "trumpet", "tpt": "trumpet", "tp": "trumpet",
    "tbn": "trombone", "tb": "trombone",
    "horn": "french_horn", "hn": "french_horn",
    "tba": "tuba",
    "guitar": "acoustic_guitar", "classical_guitar": "acoustic_guitar",
    "steel_guitar": "acoustic_guitar", "nylon_guitar": "acoustic_guitar",
    "electric": "electric_guitar",
    "grand_piano": "piano", "upright_piano": "piano", "keyboard": "piano", "keys": "piano",
    "pno": "piano",
    "pipe_organ": "organ", "church_organ": "organ",
    "glockenspiel": "xylophone",
}

#: ImageNet-1k class index -> label (the classes that show a known instrument).
IMAGENET_TO_LABEL: dict[int, str] = {c: i.label for i in INSTRUMENTS for c in i.imagenet}


def normalize_label(name: str) -> str:
    """Map a user's instrument name to a label.

    Case, spaces and hyphens are ignored, a trailing plural ``s`` is dropped, and synonyms are
    resolved (``"Sax"`` -> ``"saxophone"``, ``"acoustic guitar"`` -> ``"acoustic_guitar"``).

    Raises:
        ValueError: the name is not a known instrument; the message lists the labels.
    """
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    for candidate in (key, key[:-1] if key.endswith("s") else key):
        if candidate in BY_LABEL:
            return candidate
        if candidate in SYNONYMS:
            return SYNONYMS[candidate]
    raise ValueError(f"unknown instrument {name!r}; known: {', '.join(LABELS)}")


def parse_query(text: str) -> list[str]:
    """Split a comma-separated ``--query`` into labels (duplicates kept, order kept).

    Raises:
        ValueError: an empty query or an unknown name.
    """
    names = [n for n in (p.strip() for p in text.split(",")) if n]
    if not names:
        raise ValueError("empty --query; give instrument names such as violin,cello")
    return [normalize_label(n) for n in names]
