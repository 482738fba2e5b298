"""``--mode onscreen`` and ``--mode speakers``: voices matched to visible faces.

Flow for one clip: the speech separator's masks over the clip's 16 kHz mono
(:meth:`avsplit.separator.Separator.masks`), the RMS envelope of every separated voice
(rendered block by block, never held whole), the clip's face tracks from the engine, and the
audio-visual association (:func:`avsplit.associate.associate_envelopes`). The plan says which
slots make which stem; :mod:`avsplit.separate` renders and writes it.

* ``onscreen``: ``onscreen`` = the voices in sync with a visible face, ``offscreen`` = the rest
  of the mixture (off-screen voices, the background slot, everything the masks left).
* ``speakers``: ``speaker-<track id>`` per face track = the voices matched to that face (a face
  with none gets a silent stem, flagged ``silent``), ``offscreen`` = the rest.
"""

from __future__ import annotations

import numpy as np

from avsplit.apply import slot_envelopes
from avsplit.associate import ENV_HOP_S, Assignment, associate_envelopes, speech_envelope
from avsplit.clip import Clip
from avsplit.engine import Engine
from avsplit.modes.plan import Plan, SeparateOptions, track_entry
from avsplit.progress import Progress
from avsplit.results import Stem


def _assignment_entry(a: Assignment) -> dict:
    return {"source": a.source_index, "onscreen": a.onscreen, "track_id": a.track_id,
            "confidence": round(a.confidence, 3), "energy_db": round(a.energy_db, 1),
            "reason": a.reason,
            "sync": [{"track_id": s.track_id, "r": round(s.r, 3), "lag_s": s.lag_s,
                      "z": round(s.z, 2), "frames": s.frames} for s in a.scores]}


def plan(clip: Clip, engine: Engine, options: SeparateOptions, progress: Progress) -> Plan:
    """Separate the voices of ``clip``, match them to its faces and plan the stems."""
    separator = engine.separator("speech-blstm", options.weights)
    rate = separator.rate
    mono = clip.mono(rate)
    step = progress.stage("separating voices", 1)
    masks = separator.masks(mono)
    k = separator.unordered or masks.shape[0] - 1
    env_hop = int(round(ENV_HOP_S * rate))
    envs, env_t = slot_envelopes(mono, masks, list(range(k)), separator.n_fft, separator.hop,
                                 rate, speech_envelope, env_hop)
    step(1)
    tracks = engine.face_tracks(clip, progress)
    step = progress.stage("matching voices to faces", 1)
    assignments = associate_envelopes(envs, env_t, tracks)
    step(1)
    notes = []
    if not tracks:
        notes.append("no face visible: all sound is off-screen")
    elif not any(a.onscreen for a in assignments):
        notes.append("no separated voice is in sync with a visible face: all sound is off-screen")

    groups: list[tuple[Stem, list[int]]] = []
    if options.mode == "onscreen":
        idx = [a.source_index for a in assignments if a.onscreen]
        groups.append((Stem("onscreen", "onscreen", True,
                            sorted({assignments[i].track_id for i in idx}), idx,
                            [_assignment_entry(assignments[i]) for i in idx]), idx))
    else:
        for tr in tracks:
            idx = [a.source_index for a in assignments if a.onscreen and a.track_id == tr.track_id]
            name = f"speaker-{tr.track_id}"
            fields = {"silent": not idx}
            groups.append((Stem(name, name, True, [tr.track_id], idx,
                                [_assignment_entry(assignments[i]) for i in idx], fields), idx))
            if not idx:
                notes.append(f"{name}: face seen but no separated voice is in sync with it "
                              "(silent stem)")
    weights = np.zeros((len(groups), masks.shape[0]), np.float32)
    for g, (_, idx) in enumerate(groups):
        weights[g, idx] = 1.0
    off_idx = [a.source_index for a in assignments if not a.onscreen]
    rest = Stem("offscreen", "offscreen", False, [], off_idx + [masks.shape[0] - 1],
                [_assignment_entry(assignments[i]) for i in off_idx])
    return Plan(separator, masks, [st for st, _ in groups], weights, rest,
                models=[separator.model_id, *engine.face_model_ids()],
                tracks=[track_entry(t) for t in tracks],
                sources=[_assignment_entry(a) for a in assignments], notes=notes)
