"""Instrument recognition in the picture: the bundled MobileNetV2, CAM boxes, label vocabulary.

Generated data only (synthetic heatmaps, flat and noise frames); the network is the bundled
ImageNet checkpoint, checked against its sha256.
"""

import numpy as np
import pytest
import torch

from avsplit.errors import AvsplitError
from avsplit.labels import IMAGENET_TO_LABEL, LABELS, normalize_label, parse_query
from avsplit.models.mobilenet import MobileNetV2, fuse_batchnorm, load_mobilenet, preprocess
from avsplit.models.registry import MODELS, sha256_of, weights_path
from avsplit.vision.instruments import (IMAGENET_INSTRUMENTS, InstrumentDetection,
                                        InstrumentRecognizer, _one_label_per_object, box_overlap,
                                        contrastive_cam, heatmap_blobs)


@pytest.fixture(scope="module")
def net():
    return load_mobilenet()


@pytest.fixture(scope="module")
def recognizer():
    return InstrumentRecognizer()


# ----------------------------------------------------------------------------- network
def test_weights_match_their_registry_checksum():
    entry = MODELS["instrument-recognizer"]
    path = weights_path("instrument-recognizer")
    assert path.name == "mobilenet_v2_imagenet.pth"
    assert sha256_of(path) == entry.sha256
    # torchvision names its checkpoints after the first 8 hex digits of their sha256
    assert entry.sha256.startswith("b0353104")


def test_a_swapped_weights_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "mobilenet_v2_imagenet.pth").write_bytes(b"not the weights")
    monkeypatch.setenv("AVSPLIT_WEIGHTS", str(tmp_path))
    with pytest.raises(AvsplitError, match="sha256"):
        load_mobilenet()


def test_network_gives_logits_and_a_7x7_feature_map(net):
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), np.uint8))
    with torch.inference_mode():
        logits, feats = net(preprocess(img))
    assert logits.shape == (1, 1000) and logits.dtype == torch.float32
    assert feats.shape == (1, 1280, 7, 7)
    assert torch.isfinite(logits).all() and (feats >= 0).all() and (feats <= 6).all()  # ReLU6
    # the CAM identity: logits are the classifier applied to the spatial mean of the features
    fc = net.classifier[1]
    with torch.inference_mode():
        cam = torch.einsum("kc,bchw->bkhw", fc.weight, feats)
    assert torch.allclose(cam.mean(dim=(2, 3)) + fc.bias, logits, atol=1e-4)


def test_folding_batchnorm_keeps_the_outputs(net):
    fused = fuse_batchnorm(load_mobilenet())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = preprocess(torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 96, 160, 3),
                                                                      np.uint8)))
    with torch.inference_mode():
        (la, fa), (lb, fb) = net(x), fused(x)
    assert fa.shape == fb.shape == (1, 1280, 3, 5)
    assert torch.allclose(la, lb, atol=1e-3) and torch.allclose(fa, fb, atol=1e-3)


def test_state_dict_keys_are_torchvisions(net):
    keys = set(MobileNetV2().state_dict())
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.2.conv.3.running_var",
            "features.18.1.bias", "classifier.1.weight", "classifier.1.bias"} <= keys
    assert len(keys) == 314  # what torchvision's mobilenet_v2 has, num_batches_tracked included


# ----------------------------------------------------------------------------- CAM -> boxes
def _gauss(h, w, cx, cy, sigma, amp=1.0):
    yy, xx = np.mgrid[0:h, 0:w]
    return amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))


def test_one_blob_gives_one_box_around_it_in_frame_pixels():
    hm = _gauss(40, 80, cx=20, cy=25, sigma=3)
    blobs = heatmap_blobs(hm, frame_size=(640, 320), rel_threshold=0.3)
    assert len(blobs) == 1
    x0, y0, x1, y1 = blobs[0].box
    # above 30 % of the peak = within sigma*sqrt(2 ln(1/0.3)) = 4.65 cells of the centre
    assert (x0, x1) == (16 * 8, 25 * 8) and (y0, y1) == (21 * 8, 30 * 8)
    assert blobs[0].peak_xy == (20, 25) and blobs[0].peak == pytest.approx(1.0)


def test_two_blobs_give_two_boxes_and_a_weak_one_is_dropped():
    hm = (_gauss(30, 90, 15, 15, 3) + _gauss(30, 90, 70, 12, 3, amp=0.8)
          + _gauss(30, 90, 45, 25, 2, amp=0.4))  # the third peaks below half the maximum
    blobs = heatmap_blobs(hm)
    assert len(blobs) == 2
    assert [b.peak_xy for b in blobs] == [(15, 15), (70, 12)]  # strongest first
    left, right = blobs[0].box, blobs[1].box
    assert left[0] < 15 < left[2] and right[0] < 70 < right[2] and left[2] < right[0]
    assert not (blobs[0].mask & blobs[1].mask).any()


def test_empty_or_negative_heatmap_gives_no_box():
    assert heatmap_blobs(np.zeros((7, 7))) == []
    assert heatmap_blobs(-np.ones((7, 7))) == []


def test_contrastive_cam_keeps_only_where_the_label_beats_other_instruments():
    rows = {c: r for r, c in enumerate(IMAGENET_INSTRUMENTS)}
    cams = np.zeros((len(IMAGENET_INSTRUMENTS), 4, 8), np.float32)
    cams[rows[889], :, :4] = 10  # violin on the left ...
    cams[rows[889], :, 4:] = 6  # ... and, weaker, on the guitar at the right
    cams[rows[402], :, 4:] = 9  # acoustic guitar on the right
    violin = contrastive_cam(cams, LABELS.index("violin"))
    guitar = contrastive_cam(cams, LABELS.index("acoustic_guitar"))
    assert (violin[:, :4] == 10).all() and (violin[:, 4:] == 0).all()
    assert (guitar[:, :4] == 0).all() and (guitar[:, 4:] == 3).all()


def test_a_weaker_close_class_on_the_same_object_is_merged_into_the_stronger():
    hm = np.zeros((4, 4), np.float32)
    guitar = InstrumentDetection("acoustic_guitar", (100, 50, 200, 150), 0.5, hm)
    banjo = InstrumentDetection("banjo", (120, 40, 260, 140), 0.3, hm)
    violin = InstrumentDetection("violin", (300, 50, 400, 150), 0.4, hm)
    assert box_overlap(guitar.box, banjo.box) > 0.5 and box_overlap(guitar.box, violin.box) == 0
    out = _one_label_per_object([banjo, violin, guitar])
    assert [d.label for d in out] == ["acoustic_guitar", "violin"]
    assert out[0].box == (100, 40, 260, 150)  # union of the two boxes


# ----------------------------------------------------------------------------- recogniser
@pytest.mark.slow
def test_flat_and_noise_frames_show_no_instrument(recognizer):
    rng = np.random.default_rng(1)
    grey = [np.full((360, 640, 3), 128, np.uint8)] * 4
    noise = [rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(4)]
    assert recognizer.recognize(grey) == []
    assert recognizer.recognize(noise) == []
    # asked for candidates, the picture offers its weak guesses, each once and below the threshold
    weak = recognizer.recognize(noise, candidates_from=1e-4)
    assert weak and all(d.confidence < recognizer.threshold for d in weak)
    assert len({d.label for d in weak}) == len(weak)


def test_recognize_rejects_bad_frames(recognizer):
    with pytest.raises(ValueError):
        recognizer.recognize([])
    with pytest.raises(ValueError):
        recognizer.recognize([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 80, 3), np.uint8)])
    with pytest.raises(ValueError):
        recognizer.recognize([np.zeros((64, 64), np.uint8)])


# ----------------------------------------------------------------------------- labels
def test_imagenet_indices_are_the_instrument_classes():
    # ImageNet-1k indices (torchvision's category list): 401 accordion, 402 acoustic guitar,
    # 579 grand piano, 776 sax, 881 upright (piano), 889 violin
    assert IMAGENET_TO_LABEL[401] == "accordion" and IMAGENET_TO_LABEL[402] == "acoustic_guitar"
    assert IMAGENET_TO_LABEL[579] == IMAGENET_TO_LABEL[881] == "piano"
    assert IMAGENET_TO_LABEL[776] == "saxophone" and IMAGENET_TO_LABEL[889] == "violin"
    assert set(IMAGENET_TO_LABEL) <= set(IMAGENET_INSTRUMENTS)
    assert set(IMAGENET_TO_LABEL.values()) <= set(LABELS)


@pytest.mark.parametrize("name, label", [
    ("sax", "saxophone"), ("guitar", "acoustic_guitar"), ("horn", "french_horn"),
    ("contrabass", "double_bass"), ("Acoustic Guitar", "acoustic_guitar"),
    ("acoustic-guitar", "acoustic_guitar"), ("Violins", "violin"), ("  CELLO ", "cello"),
])
def test_normalize_label_resolves_synonyms(name, label):
    assert normalize_label(name) == label


def test_unknown_instrument_raises_and_lists_the_labels():
    with pytest.raises(ValueError, match="violin"):
        normalize_label("kazoo")


def test_parse_query_keeps_order_and_repeats():
    assert parse_query("violin, Sax ,violin") == ["violin", "saxophone", "violin"]
    assert parse_query("contrabass,,horn") == ["double_bass", "french_horn"]
    with pytest.raises(ValueError):
        parse_query(" , ")
    with pytest.raises(ValueError):
        parse_query("violin,theremin")
