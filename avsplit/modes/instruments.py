"""``--mode instruments``: one stem per instrument seen in the picture (or named by ``--query``).

The analysis (:func:`avsplit.instruments.analyse_instruments`) gives the stems and each
label's mask; two instruments of one label share that label's mask evenly (the separator
cannot tell them apart); ``residual`` takes what no instrument took.
"""

from __future__ import annotations

import numpy as np

from avsplit.clip import Clip
from avsplit.engine import Engine
from avsplit.instruments import SILENT_SHARE, analyse_instruments
from avsplit.modes.plan import Plan, SeparateOptions
from avsplit.progress import Progress
from avsplit.results import Stem


def plan(clip: Clip, engine: Engine, options: SeparateOptions, progress: Progress) -> Plan:
    """Plan the instrument stems of ``clip`` (see the module docstring)."""
    a = analyse_instruments(clip, engine, options.query or None, options.weights, progress,
                            options.separator)
    notes = list(a.notes)
    stems: list[Stem] = []
    weights = np.zeros((len(a.stems), len(a.masks)), np.float32)
    for g, st in enumerate(a.stems):
        weights[g, st.mask_index] = st.share
        heard = float(a.share[st.mask_index] * st.share) if len(a.share) else 0.0
        silent = bool(heard < SILENT_SHARE)
        same = [o.name for o in a.stems if o.label == st.label and o is not st]
        stems.append(Stem(st.name, st.label, st.box is not None, [], [], [], {
            "box": st.box, "visual_confidence": st.visual_confidence,
            "audio_confidence": round(min(1.0, heard), 4), "silent": silent,
            "shared_with": same, "relabelled_from": st.relabelled_from,
            "confirmed_by_audio": st.confirmed_by_audio}))
        if silent:
            how = "seen" if st.box is not None else "asked for"
            notes.append(f"{st.name}: {how} but silent (the separator hears almost none of it)")
        if same:
            notes.append(f"{st.name}: the separator cannot tell instruments of one kind apart; "
                         f"the {st.label} sound is split evenly between "
                         f"{', '.join(sorted([st.name, *same]))}")
    rest = Stem("residual", "residual", False)
    extra = {"query": a.labels if options.query else None,
             "instruments": [{"name": st.name, "label": st.label, "box": st.box,
                              "visual_confidence": st.visual_confidence,
                              "audio_confidence": round(float(a.share[st.mask_index] * st.share), 4),
                              "relabelled_from": st.relabelled_from,
                              "confirmed_by_audio": st.confirmed_by_audio}
                             for st in a.stems],
             "heard": ({lab: round(p, 3) for lab, p in a.heard.items()} if a.heard else None)}
    return Plan(a.separator, a.masks, stems, weights, rest, models=a.model_ids, notes=notes,
                extra=extra)
