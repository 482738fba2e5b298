"""Which instruments are in the picture, and where: ImageNet MobileNetV2 + class-activation maps.

Method:

1. **Classification at two scales, dense windows.** Each frame is run through torchvision's
   ImageNet MobileNetV2 (Sandler et al., 2018; :mod:`avsplit.models.mobilenet`) fully
   convolutionally: once with its short side at 224 px (the whole frame, and full-height square
   windows sliding across a wide frame) and, when the frame has the detail for it, once at 448 px
   (windows half the frame's height, which find small players and the players of a duet or trio
   side by side). The classifier is a linear layer on the mean of the last feature map, so the
   ImageNet probabilities of any 7x7-cell window (a 224x224 view at that scale) are
   ``softmax(W . mean_window(features) + b)``: a sliding-window classifier at the price of one
   forward pass per scale ("dense evaluation", Sermanet et al., 2014, OverFeat). Each label's
   probability is the sum over its ImageNet classes (:data:`avsplit.labels.IMAGENET_TO_LABEL`);
   the instrument classes without a label (drum, gong, maraca, panpipe, ...) and the 974 other
   classes stay in the softmax, so a tabla is "drum", not a weak "banjo". Frames too small for
   the fine scale get 5x5-cell windows (71 % views) at the coarse scale instead.
2. **Aggregation over frames.** Window probabilities are averaged over the frames; each window
   then counts only for its most probable label (one class per window), and a label is present
   when some window reaches :data:`DEFAULT_THRESHOLD` (its confidence is that maximum).
3. **Where: class-activation maps** (Zhou et al., 2016, "Learning Deep Features for
   Discriminative Localization", CVPR): ``CAM_c(x, y) = W_c . features(x, y)``, averaged over
   frames. Close classes share features (a guitar raises the violin CAM too), so a label's map
   is its margin over the best other instrument class, clipped at 0
   (:func:`contrastive_cam`). The two scales are blended on the fine grid and upsampled; the
   box is the connected component above :data:`CAM_REL_THRESHOLD` of the map's maximum
   (Zhou et al. use 20 %).
   A second component of the same label is a second instance (two violins) when it peaks at
   half the maximum or more *and* a window that holds its peak but not the first one's also
   reaches the threshold.
4. **One label per object.** Visually close classes fire on the same object (acoustic guitar /
   banjo, upright piano / accordion); a detection whose box lies mostly on a stronger one of
   another label is dropped (non-maximum suppression across labels, :data:`NMS_OVERLAP`).

Frames are RGB ``uint8`` ``[H, W, 3]``; boxes are ``(x0, y0, x1, y1)`` float pixels of the
frames as given; heatmaps are float32 0..1 on a grid over the whole frame (any size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np
import torch
from scipy import ndimage

from avsplit.labels import IMAGENET_TO_LABEL, LABELS

#: A label is present when its probability (summed over its ImageNet classes, 1000-way softmax)
#: averaged over frames reaches this in some window. A quarter of the probability mass on one
#: label is well above what any label gets on scenes without instruments (at most 0.06 on the 14
#: non-music clips of the development set) and below what a clearly visible instrument gets
#: (0.4-1.0). Small or oddly seen instruments (an upright piano from the side) stay below it.
DEFAULT_THRESHOLD = 0.25
#: Short side (px) of the two analysis scales; windows are 224x224 px at each scale.
COARSE_SIDE, FINE_SIDE = 224, 448
#: The fine scale is used when it upsamples the frame by at most this much (no invented detail).
MAX_UPSAMPLE = 1.5
#: At most this many frames (evenly spread over the ones given) are analysed at each scale.
MAX_COARSE_FRAMES, MAX_FINE_FRAMES = 8, 4
#: Frames more elongated than this are analysed with their long side at this many short sides.
MAX_ASPECT = 4
#: Window size in feature cells (7 cells of 32 px = the network's 224 px input).
WINDOW_CELLS = 7
#: Window sizes (cells) at the coarse scale when the fine scale runs, and when it does not (small
#: frames: 5-cell windows, 71 % of the short side, are then the closest views of each player).
COARSE_WINDOWS, SMALL_FRAME_WINDOWS = (7,), (7, 5)
#: CAM segmentation: a component is the region above this fraction of the map's maximum.
CAM_REL_THRESHOLD = 0.3
#: A second component of a label counts only if it peaks at this fraction of the maximum or more.
SECOND_PEAK_REL = 0.5
#: Detections of different labels overlapping more than this (fraction of the smaller box)
#: are the same object.
NMS_OVERLAP = 0.5
#: Heatmaps are upsampled this many times from the fine feature grid before segmentation.
HEATMAP_UPSAMPLE = 4

#: ImageNet classes of each label, in :data:`avsplit.labels.LABELS` order (empty: not visible).
_LABEL_CLASSES: list[list[int]] = [[c for c, lab in IMAGENET_TO_LABEL.items() if lab == label]
                                   for label in LABELS]
_VISIBLE = [i for i, cls in enumerate(_LABEL_CLASSES) if cls]
#: The 26 ImageNet-1k classes that show a musical instrument, with or without a label
#: (checked against torchvision's ImageNet category list): accordion, acoustic guitar, banjo,
#: bassoon, cello, chime, cornet, drum, electric guitar, flute, French horn, gong, grand piano,
#: harmonica, harp, maraca, marimba, oboe, ocarina, organ, panpipe, sax, steel drum, trombone,
#: upright piano, violin.
IMAGENET_INSTRUMENTS: tuple[int, ...] = (401, 402, 420, 432, 486, 494, 513, 541, 546, 558, 566,
                                         577, 579, 593, 594, 641, 642, 683, 684, 687, 699, 776,
                                         822, 875, 881, 889)
_ROW = {c: r for r, c in enumerate(IMAGENET_INSTRUMENTS)}


@dataclass
class InstrumentDetection:
    """One instrument seen in the picture.

    Attributes:
        label: instrument label from :mod:`avsplit.labels`, e.g. ``"violin"``.
        box: ``(x0, y0, x1, y1)`` in pixels of the original frame (floats, x0 < x1, y0 < y1).
        confidence: visual confidence 0..1: the label's ImageNet probability (summed over its
            classes, averaged over frames) in the best window on this instance.
        heatmap: ``[H', W']`` float32 0..1 class-activation map of this instance over the whole
            frame (other instances of the same label are masked out); resize it to the frame.
    """

    label: str
    box: tuple[float, float, float, float]
    confidence: float
    heatmap: np.ndarray = field(repr=False)


@dataclass
class Blob:
    """One connected region of a heatmap (see :func:`heatmap_blobs`).

    Attributes:
        box: ``(x0, y0, x1, y1)`` in output pixels (heatmap cells times the scale given).
        peak: value of the heatmap at the blob's maximum (0..1 of the map's maximum).
        peak_xy: ``(x, y)`` heatmap cell of the maximum.
        mask: ``[H', W']`` bool, the blob's cells.
    """

    box: tuple[float, float, float, float]
    peak: float
    peak_xy: tuple[int, int]
    mask: np.ndarray = field(repr=False)


def heatmap_blobs(heatmap: np.ndarray, frame_size: tuple[int, int] | None = None,
                  rel_threshold: float = CAM_REL_THRESHOLD,
                  min_peak: float = SECOND_PEAK_REL) -> list[Blob]:
    """Boxes of the separate regions of a class-activation map (Zhou et al., 2016).

    The map is divided by its maximum; cells above ``rel_threshold`` form 8-connected
    components; components whose maximum is below ``min_peak`` are dropped.

    Args:
        heatmap: ``[H', W']`` float map (any units; only values relative to its max matter).
        frame_size: ``(width, height)`` of the frame the map covers, in pixels; boxes are scaled
            to it (cell ``(i, j)`` covers ``[j*W/W', (j+1)*W/W']``). ``None``: heatmap cells.
        rel_threshold: fraction of the maximum that segments the map (0..1).
        min_peak: fraction of the maximum a component's own peak must reach (0..1).

    Returns:
        Blobs sorted by peak, strongest first; empty when the map has no positive value.
    """
    hm = np.asarray(heatmap, np.float32)
    top = float(hm.max()) if hm.size else 0.0
    if not np.isfinite(top) or top <= 0:
        return []
    norm = hm / top
    labels, n = ndimage.label(norm >= rel_threshold, structure=np.ones((3, 3), bool))
    h, w = hm.shape
    sx, sy = (frame_size[0] / w, frame_size[1] / h) if frame_size else (1.0, 1.0)
    blobs = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels == k
        peak = float(norm[mask].max())
        if peak < min_peak:
            continue
        y, x = np.unravel_index(np.argmax(np.where(mask, norm, -1.0)), norm.shape)
        ys, xs = sl
        blobs.append(Blob((xs.start * sx, ys.start * sy, xs.stop * sx, ys.stop * sy), peak,
                          (int(x), int(y)), mask))
    return sorted(blobs, key=lambda b: -b.peak)


def box_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection of two ``(x0, y0, x1, y1)`` boxes over the area of the smaller one (0..1)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


@dataclass
class _ScaleResult:
    """Frame-averaged outputs of one scale.

    probs: ``[n_windows, n_labels]`` label probabilities per window; windows: ``[n_windows, 4]``
    window boxes in 0..1 frame coordinates (x0, y0, x1, y1); cams: ``[26, h, w]``
    frame-averaged class-activation maps of :data:`IMAGENET_INSTRUMENTS` (logit units).
    """

    probs: np.ndarray
    windows: np.ndarray
    cams: np.ndarray


class InstrumentRecognizer:
    """Recognise and locate instruments in a few frames of a clip (see the module docstring).

    Args:
        device: torch device for the network (``"cpu"`` is fast enough: about 0.6 s for 16
            frames of 640x360 on one core, 0.06 s for three 224x224 frames).
        threshold: probability (0..1) a label needs in some window, averaged over frames.

    Raises:
        AvsplitError: the bundled weights file is missing or fails its sha256 check.
    """

    def __init__(self, device: str = "cpu", threshold: float = DEFAULT_THRESHOLD):
        from avsplit.models.mobilenet import load_mobilenet

        self.device = device
        self.threshold = float(threshold)
        # BatchNorm folded and channels-last: same outputs, ~2x faster on CPU
        self.model = load_mobilenet(device, fuse=True).to(memory_format=torch.channels_last)
        weight = self.model.classifier[1].weight.detach()
        bias = self.model.classifier[1].bias.detach()
        self._weight, self._bias = weight, bias
        self._cam_weight = weight[list(IMAGENET_INSTRUMENTS)]

    # ----------------------------------------------------------------------------- network
    def _features(self, frame: np.ndarray, short_side: int) -> torch.Tensor:
        """``[1280, h, w]`` last feature map of ``frame`` resized to ``short_side`` (aspect kept;
        the long side is capped at :data:`MAX_ASPECT` times ``short_side``)."""
        from avsplit.models.mobilenet import preprocess

        h, w = frame.shape[:2]
        s = min(short_side / min(h, w), MAX_ASPECT * short_side / max(h, w))
        size = (max(32, round(w * s)), max(32, round(h * s)))
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        img = cv2.resize(np.ascontiguousarray(frame), size, interpolation=interp)
        x = preprocess(torch.from_numpy(img[None]).to(self.device))
        return self.model(x.contiguous(memory_format=torch.channels_last))[1][0]

    @torch.inference_mode()
    def _scale(self, frames: Sequence[np.ndarray], short_side: int,
               window_cells: Sequence[int] = (WINDOW_CELLS,)) -> _ScaleResult:
        """Window probabilities and CAMs of one scale, averaged over ``frames``.

        Windows are every ``k x k``-cell square (stride 1 cell) for each ``k`` in
        ``window_cells`` (capped at the map's size), plus the whole frame.
        """
        probs = cams = windows = None
        for frame in frames:
            f = self._features(frame, short_side)  # [C, h, w]
            _, h, w = f.shape
            feats, boxes = [f.mean(dim=(1, 2))[None]], [np.array([[0.0, 0.0, 1.0, 1.0]])]
            for k in sorted({min(k, h, w) for k in window_cells}, reverse=True):
                if (k, k) == (h, w):
                    continue  # the whole frame, already there
                pooled = torch.nn.functional.avg_pool2d(f[None], k, stride=1)[0]  # [C, h', w']
                feats.append(pooled.flatten(1).T)
                yy, xx = np.mgrid[0:pooled.shape[1], 0:pooled.shape[2]]
                boxes.append(np.stack([xx.ravel() / w, yy.ravel() / h, (xx.ravel() + k) / w,
                                       (yy.ravel() + k) / h], 1))
            p = torch.softmax(torch.cat(feats) @ self._weight.T + self._bias, dim=1)
            lp = torch.zeros(p.shape[0], len(LABELS), device=p.device)
            for i in _VISIBLE:
                lp[:, i] = p[:, _LABEL_CLASSES[i]].sum(1)
            lp = lp.cpu().numpy()
            cam = torch.einsum("kc,chw->khw", self._cam_weight, f).cpu().numpy()
            if probs is None:
                probs, cams, windows = lp, cam, np.concatenate(boxes).astype(np.float32)
            else:
                probs, cams = probs + lp, cams + cam
        return _ScaleResult(probs / len(frames), windows, cams / len(frames))

    # ----------------------------------------------------------------------------- public
    @torch.inference_mode()
    def recognize(self, frames: Sequence[np.ndarray], candidates_from: float | None = None
                  ) -> list[InstrumentDetection]:
        """Find the instruments in frames sampled over one clip.

        Args:
            frames: RGB ``uint8`` ``[H, W, 3]`` frames of one clip (all the same size), e.g.
                8-16 spread over it. At most :data:`MAX_COARSE_FRAMES` (coarse scale) and
                :data:`MAX_FINE_FRAMES` (fine scale), evenly spread, are analysed.
            candidates_from: also return labels the picture is unsure of, whose best window
                reaches this probability but not the threshold (one detection each, with its
                confidence below the threshold), for the audio to confirm or reject
                (:func:`avsplit.instruments.plan_instrument_stems`). ``None``: only labels that
                reach the threshold.

        Returns:
            Detections sorted left to right by box centre (x); empty when no instrument
            with a label reaches the threshold. Two instances of one label give two detections
            when their activation maps are clearly separate and each is classified on its own.

        Raises:
            ValueError: no frames, frames not ``[H, W, 3]`` uint8, or of different sizes.
        """
        frames = list(frames)
        if not frames:
            raise ValueError("recognize() needs at least one frame")
        shape = frames[0].shape
        if len(shape) != 3 or shape[2] != 3 or any(f.shape != shape for f in frames):
            raise ValueError("frames must all be [H, W, 3] RGB of the same size; got "
                             f"{sorted({tuple(f.shape) for f in frames})}")
        if any(f.dtype != np.uint8 for f in frames):
            raise ValueError("frames must be uint8 RGB")
        height, width = shape[:2]
        fine = FINE_SIDE / min(height, width) <= MAX_UPSAMPLE
        scales = [self._scale(_spread(frames, MAX_COARSE_FRAMES), COARSE_SIDE,
                              COARSE_WINDOWS if fine else SMALL_FRAME_WINDOWS)]
        if fine:
            scales.append(self._scale(_spread(frames, MAX_FINE_FRAMES), FINE_SIDE))
        return self._detect(scales, width, height, candidates_from)

    # ----------------------------------------------------------------------------- decision
    def _detect(self, scales: list[_ScaleResult], width: int, height: int,
                candidates_from: float | None = None) -> list[InstrumentDetection]:
        """Decide which labels are present (or, from ``candidates_from`` up, candidates) and give
        each instance a box and a heatmap; a second instance of a label needs the threshold."""
        probs = np.concatenate([s.probs for s in scales])  # [n_windows, n_labels]
        windows = np.concatenate([s.windows for s in scales])  # [n_windows, 4], 0..1
        # one class per window: a window is evidence only for its most probable label
        probs = np.where(probs == probs.max(1, keepdims=True), probs, 0.0)
        best = probs.max(0)
        fine = scales[-1].cams
        gh, gw = fine.shape[1] * HEATMAP_UPSAMPLE, fine.shape[2] * HEATMAP_UPSAMPLE
        dets: list[InstrumentDetection] = []
        floor = self.threshold if candidates_from is None else min(candidates_from, self.threshold)
        for li in _VISIBLE:
            if best[li] < floor:
                continue
            heat = _blend([contrastive_cam(s.cams, li) for s in scales], (gw, gh))
            if heat.max() <= 0:  # never ahead of every other instrument: use the plain CAM
                heat = _blend([_label_cam(s.cams, li) for s in scales], (gw, gh))
            blobs = heatmap_blobs(heat, (width, height))
            kept: list[tuple[Blob, float]] = []
            for blob in blobs:
                # windows holding this blob's peak and none of the stronger kept ones' peaks
                sel = _holds(windows, *_centre(blob.peak_xy, gw, gh))
                for other, _ in kept:
                    sel &= ~_holds(windows, *_centre(other.peak_xy, gw, gh))
                conf = float(probs[sel, li].max()) if sel.any() else 0.0
                if not kept:
                    kept.append((blob, max(conf, float(best[li]))))
                elif conf >= self.threshold:
                    kept.append((blob, conf))
            owner = _nearest_blob([b for b, _ in kept]) if len(kept) > 1 else None
            for bi, (blob, conf) in enumerate(kept):
                hm = heat if owner is None else np.where(owner == bi, heat, 0.0)
                dets.append(InstrumentDetection(LABELS[li], tuple(float(v) for v in blob.box),
                                                min(conf, 1.0),
                                                (hm / max(hm.max(), 1e-12)).astype(np.float32)))
        return sorted(_one_label_per_object(dets), key=lambda d: (d.box[0] + d.box[2]) / 2)


def _one_label_per_object(dets: list[InstrumentDetection]) -> list[InstrumentDetection]:
    """Non-maximum suppression across labels, strongest first.

    A detection whose box lies mostly (:data:`NMS_OVERLAP` of the smaller box) on a stronger
    detection of another label is the same object seen as a close class (banjo for a guitar);
    it is dropped and the stronger one takes the union of both boxes and the maximum of both
    heatmaps (the two contrastive maps split the object between them).
    """
    out: list[InstrumentDetection] = []
    for d in sorted(dets, key=lambda d: -d.confidence):
        for o in out:
            if o.label != d.label and box_overlap(o.box, d.box) > NMS_OVERLAP:
                o.box = (min(o.box[0], d.box[0]), min(o.box[1], d.box[1]),
                         max(o.box[2], d.box[2]), max(o.box[3], d.box[3]))
                if o.heatmap.shape == d.heatmap.shape:
                    o.heatmap = np.maximum(o.heatmap, d.heatmap)
                break
        else:
            out.append(d)
    return out


def _spread(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    """At most ``n`` of ``frames``, evenly spread (first and last included)."""
    if len(frames) <= n:
        return frames
    return [frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)]


def contrastive_cam(cams: np.ndarray, label_index: int) -> np.ndarray:
    """Where a label is more evident than any other instrument.

    ``CAM_label - max(CAM of every other instrument class)``, clipped at 0, with a label's CAM
    the maximum over its ImageNet classes. Visually close classes share features (a guitar also
    raises the violin and banjo CAMs), so the plain CAM of "violin" in a violin + guitar duet
    lights up both players; the contrast keeps the violinist only.

    Args:
        cams: ``[26, h, w]`` CAMs (logit units) of :data:`IMAGENET_INSTRUMENTS`, in that order.
        label_index: index of the label in :data:`avsplit.labels.LABELS` (it must have classes).

    Returns:
        ``[h, w]`` float32 >= 0 (logit units).
    """
    rows = [_ROW[c] for c in _LABEL_CLASSES[label_index]]
    others = [r for r in range(len(IMAGENET_INSTRUMENTS)) if r not in rows]
    return np.maximum(_label_cam(cams, label_index) - cams[others].max(0), 0).astype(np.float32)


def _blend(cams: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Mean of the positive parts of CAMs (each scaled to max 1), resized to ``size`` (w, h)."""
    out = np.zeros((size[1], size[0]), np.float32)
    for cam in cams:
        c = cv2.resize(np.maximum(cam, 0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
        top = c.max()
        if top > 0:
            out += c / top
    return out / len(cams)


def _centre(xy: tuple[int, int], gw: int, gh: int) -> tuple[float, float]:
    """0..1 frame coordinates of the centre of heatmap cell ``xy`` on a ``gw x gh`` grid."""
    return (xy[0] + 0.5) / gw, (xy[1] + 0.5) / gh


def _label_cam(cams: np.ndarray, label_index: int) -> np.ndarray:
    """Plain CAM of a label: the maximum over its classes (``[h, w]``, logit units)."""
    return cams[[_ROW[c] for c in _LABEL_CLASSES[label_index]]].max(0)


def _nearest_blob(blobs: list[Blob]) -> np.ndarray:
    """``[H', W']`` int: index of the blob whose cells are nearest to each cell."""
    dist = np.stack([ndimage.distance_transform_edt(~b.mask) for b in blobs])
    return dist.argmin(0)


def _holds(windows: np.ndarray, x: float, y: float) -> np.ndarray:
    """Which windows (``[n, 4]`` 0..1 boxes) contain the point ``(x, y)``."""
    return ((windows[:, 0] <= x) & (x <= windows[:, 2]) &
            (windows[:, 1] <= y) & (y <= windows[:, 3]))
