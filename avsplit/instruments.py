"""What instruments a clip holds and their masks: the picture's detections settled by the audio.

Shared by ``avsplit separate --mode instruments`` (:mod:`avsplit.modes.instruments`) and
``avsplit localize`` (one colour per instrument). The picture proposes the instruments
(:class:`avsplit.vision.instruments.InstrumentRecognizer` on a few frames), the audio tagger
(:class:`avsplit.models.tagger.InstrumentTagger`) confirms what the picture is unsure of and
settles near-confusions within a family (DMMAN's matching of visual and audio evidence, Hu et
al. 2021), and the query-conditioned separator gives each label's mask; ``--query`` names the
labels instead of the picture.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avsplit.clip import ANALYSIS_MAX_SIDE, Clip
from avsplit.engine import Engine
from avsplit.errors import AvsplitError
from avsplit.progress import Progress

SILENT_SHARE = 0.01   # a stem with < 1 % of the mixture's energy (-20 dB) is called silent

RECOGNITION_FRAMES = 8
#: The picture proposes labels from this window probability up (:mod:`avsplit.vision.instruments`
#: accepts a label on its own from 0.25); below 0.25 a label stays only if the audio tagger
#: hears that label. Non-music scenes reach at most 0.06 (14 development clips).
CANDIDATE_FROM = 0.05
#: Audio tagger probabilities (:class:`avsplit.models.tagger.InstrumentTagger`): a label is
#: heard from HEARD up, and counts as not heard below NOT_HEARD.
HEARD, NOT_HEARD = 0.5, 0.2
#: Visual confidence under which a heard relative (same family) replaces a label that is not
#: heard; a picture surer than this keeps its label whatever the audio says.
RELABEL_BELOW = 0.5
FAMILIES = (
    ("acoustic_guitar", "electric_guitar", "banjo", "harp"),
    ("piano", "organ", "accordion", "marimba", "xylophone", "harmonica"),
    ("violin", "viola", "cello", "double_bass", "erhu"),
    ("trumpet", "trombone", "french_horn", "tuba"),
    ("flute", "oboe", "clarinet", "saxophone", "bassoon"),
)
#: Instruments the picture cannot name because its ImageNet classifier has no class for them
#: (:attr:`avsplit.labels.Instrument.imagenet` empty), each under the class it is seen as: a
#: xylophone is seen as a marimba, a clarinet as an oboe, a tuba as a French horn or trombone,
#: a viola as a violin, a double bass as a cello. However sure the picture is of the seen
#: label, that is no evidence against the look-alike, so the audio may rename it at any
#: visual confidence (:func:`plan_instrument_stems`).
LOOK_ALIKES: dict[str, tuple[str, ...]] = {
    "marimba": ("xylophone",),
    "oboe": ("clarinet",),
    "french_horn": ("tuba",),
    "trombone": ("tuba",),
    "violin": ("viola",),
    "cello": ("double_bass",),
}


@dataclass
class InstrumentStem:
    """One stem to write in ``--mode instruments``.

    Attributes:
        name: file stem (``violin``, ``violin-2``); label: instrument label.
        mask_index: row of the mask array this stem comes from; share: split of that mask
            between instances of the same label (1 / instances).
        box: ``[x0, y0, x1, y1]`` in pixels of the video frame, or None (``--query``).
        visual_confidence: 0..1 from the picture, None with ``--query``.
        relabelled_from: the picture's label when the audio changed it to a near relative.
        confirmed_by_audio: the picture alone was too unsure to name it; the tagger heard it.
    """

    name: str
    label: str
    mask_index: int
    share: float = 1.0
    box: list[float] | None = None
    visual_confidence: float | None = None
    relabelled_from: str | None = None
    confirmed_by_audio: bool = False


def recognise_instruments(clip: Clip, engine: Engine, progress: Progress):
    """Instruments seen in a video: a few frames spread over the clip through the engine's
    :class:`avsplit.vision.instruments.InstrumentRecognizer`. Uses
    ``clip.cache["recognition_frames"]`` (see :class:`RecognitionFrames`) when a mode already
    decoded the video, so the clip is decoded once.

    Returns ``(detections, model_ids)``; boxes in pixels of the original picture.
    """
    info = clip.info
    advance = progress.stage("recognising instruments", 1)
    duration = info.video.duration or info.duration or 1.0
    picked = clip.cache.get("recognition_frames")
    if picked:
        frames = list(picked)
    else:
        fps = min(2.0, RECOGNITION_FRAMES / max(duration, 0.1))
        frames = [f for _, f in clip.frames(ANALYSIS_MAX_SIDE, fps=fps)][:RECOGNITION_FRAMES]
    recognizer, model_id = engine.instrument_recognizer()
    detections = recognizer.recognize(frames, candidates_from=CANDIDATE_FROM) if frames else []
    if detections and info.video.width:  # boxes in pixels of the original picture
        scale = info.video.width / frames[0].shape[1]
        detections = [dataclasses.replace(d, box=tuple(float(v) * scale for v in d.box))
                      for d in detections]
    advance(1)
    return detections, [model_id]


class RecognitionFrames:
    """Keeps the :data:`RECOGNITION_FRAMES` frames spread over a clip from a stream of frames
    a mode decodes anyway (the first frame at or after each of the evenly spaced times).

    Args:
        duration: the clip's duration in seconds.
    """

    def __init__(self, duration: float):
        n = RECOGNITION_FRAMES
        self.due = list((np.arange(n) + 0.5) * max(duration, 0.1) / n)
        self.frames: list[np.ndarray] = []

    def watch(self, frames):
        """Pass ``(t, frame)`` pairs through, keeping the ones due."""
        for t, frame in frames:
            if self.due and t >= self.due[0] - 1e-6:
                self.frames.append(frame.copy())
                while self.due and t >= self.due[0] - 1e-6:
                    self.due.pop(0)
            yield t, frame


def _energy_share(masks: np.ndarray, power: np.ndarray) -> np.ndarray:
    """Share of the mixture's energy under each mask: ``[Q, F, T]`` masks, ``[F, T]`` power."""
    if not len(masks):
        return np.zeros(0)
    return np.array([float((m.astype(np.float32) ** 2 * power).sum()) for m in masks]
                    ) / max(float(power.sum()), 1e-12)


def plan_instrument_stems(detections, heard: dict[str, float] | None,
                          sure_from: float | None = None) -> tuple[list[InstrumentStem], list[str]]:
    """Turn picture detections into stems, the audio settling what the picture is unsure of.

    The picture proposes, the audio tagger confirms (DMMAN's matching of visual and audio
    evidence, Hu et al. 2021). With ``heard[lab]`` the tagger's probability that ``lab`` plays
    and ``F`` the label's family (:data:`FAMILIES`: guitar/banjo, keyboards, bowed strings,
    brass, woodwinds):

    * a sure detection (confidence >= ``sure_from``) keeps its label, unless the label is not
      heard (< :data:`NOT_HEARD`) and a relative is (>= :data:`HEARD`): then it becomes that
      relative. Below :data:`RELABEL_BELOW` any relative in ``F`` counts (a keyboard that
      looks like a marimba and sounds like a piano); at any confidence, a look-alike that the
      picture cannot name (:data:`LOOK_ALIKES`: a marimba that sounds like a xylophone, an
      oboe that sounds like a clarinet);
    * a candidate (confidence < ``sure_from``) is kept only when the tagger hears that very
      label (>= :data:`HEARD`), and only once per label (a stronger detection of it wins): two
      weak guesses, one per sense, must agree. A weak picture is not relabelled to a heard
      relative (on the development clips a theremin, weakly seen as a marimba, was heard as a
      piano).

    Args:
        detections: ``InstrumentDetection`` s from the recogniser (label, box, confidence), sure
            ones and candidates (``candidates_from``).
        heard: ``label -> probability 0..1`` from the tagger, or ``None`` (no audio evidence:
            candidates are dropped, sure detections keep their labels).
        sure_from: the recogniser's own threshold (default
            :data:`avsplit.vision.instruments.DEFAULT_THRESHOLD`).

    Returns:
        ``(stems, labels)``: the stems to write and the distinct labels whose masks they need.
    """
    from avsplit.vision.instruments import DEFAULT_THRESHOLD

    sure_from = DEFAULT_THRESHOLD if sure_from is None else sure_from
    stems: list[InstrumentStem] = []
    labels: list[str] = []
    named: dict[str, int] = {}
    for det in sorted(detections, key=lambda d: -d.confidence):
        label, relabelled, confirmed = det.label, None, False
        if det.confidence >= sure_from:
            if heard and heard.get(label, 0.0) < NOT_HEARD:
                relatives = LOOK_ALIKES.get(label, ())
                if det.confidence < RELABEL_BELOW:
                    relatives += next((f for f in FAMILIES if label in f), ())
                best = max(relatives, key=lambda lab: heard.get(lab, 0.0), default=label)
                if heard.get(best, 0.0) >= HEARD:
                    label, relabelled = best, det.label
        else:
            if not heard or heard.get(label, 0.0) < HEARD or label in named:
                continue
            confirmed = True
        if label not in labels:
            labels.append(label)
        named[label] = named.get(label, 0) + 1
        name = label if named[label] == 1 else f"{label}-{named[label]}"
        stems.append(InstrumentStem(name, label, labels.index(label), 1.0,
                                    [round(float(v), 1) for v in det.box],
                                    round(float(det.confidence), 3), relabelled, confirmed))
    for st in stems:
        st.share = 1.0 / named[st.label]
    stems.sort(key=lambda st: (st.box[0] + st.box[2]) / 2)
    return stems, labels


@dataclass
class InstrumentAnalysis:
    """What the picture and the separator found in one clip (``--mode instruments``).

    Attributes:
        stems: the stems to write, in order (see :class:`InstrumentStem`).
        labels: the distinct labels; ``masks[i]`` belongs to ``labels[i]``.
        masks: ``[len(labels), bins, frames]`` model-rate masks, scaled so that their sum
            never exceeds one (what no instrument takes is the residual).
        share: ``[len(labels)]`` share of the mixture's energy under each mask (0..1).
        separator: the :class:`avsplit.separator.Separator` the masks come from (its
            ``rate``, ``hop`` and ``n_fft`` give their grid).
        detections: the recogniser's detections (empty with ``--query``).
        model_ids: ``{"name", "file", "sha256"}`` of the models used.
        notes: what the manifest should tell the user.
        heard: the audio tagger's ``label -> probability`` (None when it did not run: with
            ``--query``, or when the picture proposed nothing).
    """

    stems: list[InstrumentStem]
    labels: list[str]
    masks: np.ndarray
    share: np.ndarray
    separator: object
    detections: list
    model_ids: list[dict]
    notes: list[str]
    heard: dict[str, float] | None = None


#: ``--separator`` choices: the network, the NMF separator with the learnt assignment
#: (:mod:`avsplit.nmf`), or both (:data:`COMBINED_RULE`).
SEPARATORS = ("net", "nmf", "combined")
#: How ``--separator combined`` merges the two (:func:`avsplit.nmf.combine_masks`).
COMBINED_RULE = "product_prior"


def instrument_separator(engine: Engine, weights: Path | None = None, kind: str = "net"):
    """The instrument separator of ``--separator kind`` (one of :data:`SEPARATORS`): the
    network (``weights`` or the bundled one), the :class:`avsplit.nmf.NMFSeparator`, or their
    :class:`avsplit.nmf.CombinedSeparator`. Returns ``(separator, model_ids)``.

    Raises:
        AvsplitError: unusable weights, or an unknown ``kind``.
    """
    if kind not in SEPARATORS:
        raise AvsplitError(f"unknown instrument separator {kind!r}; one of {', '.join(SEPARATORS)}")
    if kind == "nmf":
        nmf = engine.nmf_separator()
        return nmf, [nmf.model_id]
    net = engine.separator("instrument-separator", weights)
    if kind == "net":
        return net, [net.model_id]
    from avsplit.nmf import RESEPARATION_POWER, CombinedSeparator

    combined = CombinedSeparator(net, engine.nmf_separator(), COMBINED_RULE, RESEPARATION_POWER)
    return combined, list(combined.model_ids)


def analyse_instruments(clip: Clip, engine: Engine, query: list[str] | None,
                        weights: Path | None, progress: Progress, kind: str = "net"
                        ) -> InstrumentAnalysis:
    """Find the instruments of a clip (picture + audio, or ``query``) and their masks, with
    the separator ``kind`` (:func:`instrument_separator`).

    Raises:
        AvsplitError: an unknown ``query`` label, or unusable separator weights.
    """
    from avsplit.apply import limit_total
    from avsplit.labels import normalize_label

    separator, ids = instrument_separator(engine, weights, kind)
    rate = separator.rate
    model_ids = list(ids)
    notes: list[str] = []
    detections: list = []
    heard = None
    mono = clip.mono(rate)
    power = (clip.stft(rate, separator.n_fft, separator.hop).abs() ** 2).numpy()
    if query:
        try:
            labels = list(dict.fromkeys(normalize_label(q) for q in query))
        except ValueError as exc:
            raise AvsplitError(str(exc)) from None
        stems = [InstrumentStem(lab, lab, i) for i, lab in enumerate(labels)]
        step = progress.stage("separating instruments", 1)
        masks = separator.masks(mono, labels)
        step(1)
    else:
        detections, ids = recognise_instruments(clip, engine, progress)
        model_ids += ids
        if detections:
            tagger, tagger_id = engine.instrument_tagger()
            model_ids.append(tagger_id)
            heard = tagger.predict(clip.mono(tagger.config.sample_rate))
        stems, labels = plan_instrument_stems(detections, heard)
        step = progress.stage("separating instruments", 1)
        masks = separator.masks(mono, labels) if labels else np.zeros((0,) + power.shape, np.float32)
        step(1)
        if not stems:
            notes.append("no instrument recognised in the picture: all sound is in the residual "
                         "(name the instruments with --query to separate them)")
        for st in stems:
            if st.relabelled_from:
                notes.append(f"{st.name}: seen as {st.relabelled_from}, heard as {st.label}")
            elif st.confirmed_by_audio:
                notes.append(f"{st.name}: the picture was unsure ({st.visual_confidence:.2f}); "
                             "kept because it is heard")
    # masks of different labels may overlap; scale them so that they never take more than the
    # whole mixture, and the residual is what no instrument took
    masks = limit_total(masks)
    share = _energy_share(masks, power) if len(masks) else np.zeros(0)
    return InstrumentAnalysis(stems, labels, masks, share, separator, detections, model_ids, notes,
                              heard)


def separate_queries(separator, mixture: np.ndarray, rate: int, labels: list[str],
                     exclusive: bool = True) -> np.ndarray:
    """Stems of the asked-for instruments from an in-memory recording, as ``--query`` makes them.

    Masks of the distinct labels (:meth:`avsplit.separator.Separator.masks`), limited to a sum
    of one (``exclusive``: stems never add up to more than the mixture), applied to every
    channel at the input rate.

    Args:
        separator: the instrument :class:`avsplit.separator.Separator`.
        mixture: ``[channels, samples]`` float32 at ``rate`` Hz.
        labels: instrument labels; a repeated label gets the same stem.

    Returns:
        ``[len(labels), channels, samples]`` float32.

    Raises:
        ValueError: a label the network does not know.
    """
    from avsplit.apply import limit_total

    distinct = list(dict.fromkeys(labels))
    masks = separator.masks(separator.mono(mixture, rate), distinct)
    if exclusive:
        masks = limit_total(masks)
    stems = separator.apply(mixture, rate, masks)
    return stems[[distinct.index(lab) for lab in labels]]
