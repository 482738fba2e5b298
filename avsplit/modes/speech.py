"""``--mode onscreen`` and ``--mode speakers``: voices matched to visible faces.

Flow for one clip: the clip's face tracks from the engine, whose number picks the speech
network (:func:`speech_network`), that separator's masks over the clip's 16 kHz mono
(:meth:`avsplit.separator.Separator.masks`), refined by the pretrained speech enhancer (DTLN)
for speech vs background (:func:`refine_speech_masks`), the RMS envelope of every separated
voice (rendered block by block, never held whole; with one face also its 1-3 kHz envelope for
the lips cue, from the same render), and the audio-visual association
(:func:`avsplit.associate.associate_envelopes`; with one face and two voices also whether
they are one talker, by the d-vectors of :mod:`avsplit.models.speaker` over each decision
window, rendered window by window). The plan says which slots make which stem;
:mod:`avsplit.separate` renders and writes it.

Decisions are taken per sliding window (:func:`avsplit.associate.associate_windows`, 20 s
windows every 10 s; one window for clips up to 30 s) and the stem weights follow them frame by
frame, so speakers who come and go in a long video are followed.

* ``onscreen``: ``onscreen`` = the voices in sync with a visible face, ``offscreen`` = the rest
  of the mixture (off-screen voices, the background slot, everything the masks left).
* ``speakers``: ``speaker-<track id>`` per face track = the voices matched to that face (a face
  with none gets a silent stem, flagged ``silent``), ``offscreen`` = the rest.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from avsplit.apply import chunk_stft, render_slots, slot_envelopes
from avsplit.audio import stft_frame_times
from avsplit.associate import (ENV_HOP_S, Assignment, associate_envelopes, associate_windows,
                               frame_weights, reads_lips, speech_envelope)
from avsplit.clip import Clip
from avsplit.engine import Engine
from avsplit.events import speech_events
from avsplit.models.enhancer import SpeechEnhancer
from avsplit.models.speaker import RATE as SPEAKER_RATE
from avsplit.models.speaker import talker_similarity
from avsplit.modes.plan import Plan, SeparateOptions, track_entry
from avsplit.progress import Progress
from avsplit.results import Stem
from avsplit.synchrony import voice_envelopes

# manifest notes of the weak-evidence rules of avsplit.associate (an Assignment's evidence other
# than "sync"), in the order they are listed; {face}, {n} windows of {windows}
WEAK_EVIDENCE_NOTES = {
    "lone voice": "face {face} was given the only voice in the clip on weak synchrony evidence "
                  "(its mouth moves, but its jaw follows the sound only loosely)",
    "pairing": "face {face} was given the voice paired with it on weak synchrony evidence (its "
               "mouth moves and the voice follows it more than any other face, but loosely)",
    "contrast": "face {face} was given the voice its jaw follows clearly more than any other "
                "voice's, on weak synchrony evidence",
    "split voice": "face {face} was given two separated voices together: its lips follow them "
                   "together but neither alone (one voice the separator split in two)",
    "same talker": "face {face} was given two separated voices that are one talker by voice "
                   "identity (one voice the separator split in two; its mouth moves, its lips "
                   "follow the voice only loosely)",
    "held": "face {face} kept its voice in {n} of {windows} windows where the evidence dipped, "
            "because it holds it in most of the clip",
}


def _assignment_entry(a: Assignment) -> dict:
    return {"source": a.source_index, "onscreen": a.onscreen, "track_id": a.track_id,
            "confidence": round(a.confidence, 3), "energy_db": round(a.energy_db, 1),
            "reason": a.reason, "evidence": a.evidence,
            "sync": [{"track_id": s.track_id, "r": round(s.r, 3), "lag_s": s.lag_s,
                      "z": round(s.z, 2), "frames": s.frames, "cue": s.cue} for s in a.scores]}


def refine_speech_masks(masks: np.ndarray, mono: np.ndarray, enhanced: np.ndarray,
                        n_fft: int, hop: int, block: int = 4096, allocate=None) -> np.ndarray:
    """Let a speech enhancer decide speech vs background and our separator voice vs voice.

    With ``E = clip(|STFT(enhanced)| / |STFT(mono)|, 0, 1)`` per bin, every slot of the
    separator (its speech slots *and* its background slot, which may still hold speech the
    separator did not give a speech slot) becomes a voice candidate ``E * m_s``, and a new last row ``1 - E`` is the background. The masks still
    sum to one. Computed block by block over frames.

    Args:
        masks: ``[slots, bins, frames]`` (speech slots, background last) on the STFT grid
            ``(n_fft, hop)`` of ``mono``; mono, enhanced: ``[samples]`` float32 at that rate.

        allocate: ``allocate(shape, dtype)`` for the output (default ``np.zeros``; see
            :func:`avsplit.masks.new_masks`).

    Returns:
        ``[slots + 1, bins, frames]`` float16: ``slots`` voice candidates, background last.
    """
    slots, bins, frames = masks.shape
    out = (allocate or np.zeros)((slots + 1, bins, frames), np.float16)
    for f0 in range(0, frames, block):
        f1 = min(frames, f0 + block)
        mix = chunk_stft(mono, f0, f1, n_fft, hop).abs().numpy()
        est = chunk_stft(enhanced, f0, f1, n_fft, hop).abs().numpy()
        speech = np.where(mix > 1e-8, np.clip(est / np.maximum(mix, 1e-8), 0.0, 1.0), 0.0)
        part = np.empty((slots + 1, bins, f1 - f0), np.float32)
        part[:slots] = speech[None] * masks[:, :, f0:f1].astype(np.float32)
        part[slots] = 1.0 - speech
        out[:, :, f0:f1] = part
    return out


def speech_network(faces: int) -> str:
    """Registry name of the speech separator for a scene with ``faces`` face tracks.

    One face: ``speech-blstm-turns``, trained on voices that take turns as well, which keeps
    the face's own voice and an off-screen voice talking between its sentences in two slots
    (the case of the event timeline and of ``onscreen`` with an off-screen talker). Otherwise
    ``speech-blstm``, which tells two visible talkers apart better (``docs/benchmarks.md``,
    speakers and events sections; the model cards in ``weights/README.md``).
    """
    return "speech-blstm-turns" if faces == 1 else "speech-blstm"


def plan(clip: Clip, engine: Engine, options: SeparateOptions, progress: Progress) -> Plan:
    """Separate the voices of ``clip``, match them to its faces and plan the stems.

    The faces are tracked first: their number picks the speech network
    (:func:`speech_network`) unless ``options.weights`` names one.
    """
    tracks = engine.face_tracks(clip, progress)
    separator = engine.separator(speech_network(len(tracks)), options.weights)
    rate = separator.rate
    mono = clip.mono(rate)
    allocate = clip.new_masks  # long inputs' masks go to disk: memory flat in the length
    step = progress.stage("separating voices", round(len(mono) / rate, 1))
    masks = separator.masks(mono, allocate=allocate, advance=step)
    models = [separator.model_id]
    if options.enhance and rate == SpeechEnhancer.rate:
        # speech vs background: the enhancer; voice vs voice: ours (every slot a candidate)
        enhancer = engine.speech_enhancer()
        step = progress.stage("enhancing speech", 1)
        refined = refine_speech_masks(masks, mono, enhancer.enhance(mono), separator.n_fft,
                                      separator.hop, allocate=allocate)
        getattr(masks, "close", lambda: None)()
        masks = refined
        step(1)
        models += enhancer.model_id
    k = masks.shape[0] - 1  # voice candidates; the last row is the background
    # one face and two or more voices: the one-face rule of avsplit.associate.decide also needs
    # the lips cue's envelopes, taken from the same render of each voice
    with_lips = reads_lips(len(tracks)) and k >= 2
    envs, env_t = slot_envelopes(mono, masks, list(range(k + 1)), separator.n_fft, separator.hop,
                                 rate, voice_envelopes if with_lips else speech_envelope,
                                 int(round(ENV_HOP_S * rate)))
    if with_lips:
        envs, lips = envs[:, 0], envs[:k, 1]
    else:
        lips = None
    envs, background = envs[:k], envs[k]  # the background slot only goes on the timeline
    step = progress.stage("matching voices to faces", 1)
    similarity = None
    if with_lips and rate == SPEAKER_RATE:
        encoder = engine.speaker_encoder()

        @lru_cache(maxsize=None)  # the whole clip and a one-window clip's window: one stretch
        def voices_alike(pair: tuple[int, int], start: int, end: int) -> float | None:
            def read(a: int, b: int) -> np.ndarray:  # the two voices, block by block
                return render_slots(mono, masks, list(pair), separator.n_fft, separator.hop, a, b)

            return talker_similarity(encoder, read, start, end)

        def similarity(pair: tuple[int, int], start_s: float, end_s: float) -> float | None:
            return voices_alike(pair, int(round(start_s * rate)),
                                min(len(mono), int(round(end_s * rate))))

    # the whole clip, for the manifest
    whole = None if similarity is None else lambda pair: similarity(pair, 0.0, len(mono) / rate)
    assignments = associate_envelopes(envs, env_t, tracks, lips_envelopes=lips,
                                      talker_similarity=whole)
    windows = associate_windows(envs, env_t, tracks, lips_envelopes=lips,
                                talker_similarity=similarity)
    step(1)
    notes = []
    anywhere = {a.source_index for w in windows for a in w.assignments if a.onscreen}
    if not tracks:
        notes.append("no face visible: all sound is off-screen")
    elif not anywhere:
        notes.append("no separated voice is in sync with a visible face: all sound is off-screen")
    weak = {}  # (face, evidence) of the weak-evidence rules -> windows in which they decided
    for w in windows:
        for key in {(a.track_id, a.evidence) for a in w.assignments
                    if a.onscreen and a.evidence != "sync"}:
            weak[key] = weak.get(key, 0) + 1
    order = list(WEAK_EVIDENCE_NOTES)
    for (face, why), n in sorted(weak.items(), key=lambda x: (order.index(x[0][1]), x[0][0])):
        notes.append(WEAK_EVIDENCE_NOTES[why].format(face=face, n=n, windows=len(windows)))

    def matched(track_id=None):
        def pick(asg: list[Assignment]) -> list[int]:
            return [a.source_index for a in asg
                    if a.onscreen and (track_id is None or a.track_id == track_id)]
        return pick

    def used(pick) -> list[int]:
        return sorted({i for w in windows for i in pick(w.assignments)})

    def scores(idx: list[int]) -> list[dict]:
        return [_assignment_entry(assignments[i]) for i in idx]

    stems: list[Stem] = []
    picks = []
    if options.mode == "onscreen":
        idx = used(matched())
        faces = sorted({a.track_id for w in windows for a in w.assignments if a.onscreen})
        stems.append(Stem("onscreen", "onscreen", True, faces, idx, scores(idx)))
        picks.append(matched())
    else:
        for tr in tracks:
            idx = used(matched(tr.track_id))
            name = f"speaker-{tr.track_id}"
            stems.append(Stem(name, name, True, [tr.track_id], idx, scores(idx),
                              {"silent": not idx}))
            picks.append(matched(tr.track_id))
            if not idx:
                notes.append(f"{name}: face seen but no separated voice is in sync with it "
                              "(silent stem)")
    frame_times = stft_frame_times(len(mono), separator.hop, rate)
    weights = frame_weights(windows, picks, masks.shape[0], frame_times)
    off_idx = [a.source_index for a in assignments if not a.onscreen]
    rest = Stem("offscreen", "offscreen", False, [], off_idx + [masks.shape[0] - 1], scores(off_idx))
    extra = {}
    if len(windows) > 1:
        extra["windows"] = [{"start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3),
                             "sources": [{"source": a.source_index, "onscreen": a.onscreen,
                                          "track_id": a.track_id,
                                          "confidence": round(a.confidence, 3),
                                          "evidence": a.evidence}
                                         for a in w.assignments]} for w in windows]
    mixture = speech_envelope(mono, rate)[0][: envs.shape[1]]
    return Plan(separator, masks, stems, weights, rest,
                models=[*models, *engine.face_model_ids()],
                tracks=[track_entry(t) for t in tracks],
                sources=[_assignment_entry(a) for a in assignments], notes=notes, extra=extra,
                events=speech_events(tracks, windows, envs, env_t, mixture, background))
