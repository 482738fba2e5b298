"""The audio instrument tagger: network shapes and invariances, its training targets, and the
bundled weights on generated sounds."""

import numpy as np
import pytest
import torch

from avsplit.labels import LABELS
from avsplit.models.tagger import InstrumentTagger
from avsplit.train.instruments import Example
from avsplit.train.tagger import non_music_score, ranking_precision, targets, with_non_music

RATE = 11025


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return InstrumentTagger().eval()


def test_tagger_scores_every_label_whatever_the_gain_and_length(untrained):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2 * RATE)).astype(np.float32) * 0.1
    with torch.no_grad():
        a = untrained(torch.from_numpy(x))
        b = untrained(torch.from_numpy(x * 20))
    assert a.shape == (2, len(LABELS))
    assert torch.allclose(a, b, atol=1e-3)  # log magnitude minus its mean: gain invariant
    long = np.concatenate([x[0]] * 14)  # 28 s: scored in 10 s chunks, the maximum kept
    p = untrained.predict(long)
    assert set(p) == set(LABELS) and all(0 <= v <= 1 for v in p.values())
    chunks = [untrained.predict(long[s:s + 10 * RATE]) for s in (0, 10 * RATE, 20 * RATE)]
    assert p["violin"] == pytest.approx(max(c["violin"] for c in chunks), abs=1e-6)
    with pytest.raises(ValueError):
        untrained.predict(x)  # 2-D
    with pytest.raises(ValueError):
        untrained.predict(x[0, :100])


def test_training_targets_and_scores():
    model = InstrumentTagger()
    n = RATE
    ex = Example(np.ones(n, np.float32), np.zeros((2, n), np.float32), ["cello", "flute"],
                 np.zeros(n, np.float32))
    y = targets(model, [ex])
    assert y.sum() == 2 and y[0, LABELS.index("cello")] == 1 and y[0, LABELS.index("flute")] == 1
    logits = torch.full((2, len(LABELS)), -5.0)
    logits[0, LABELS.index("cello")] = logits[0, LABELS.index("flute")] = 3.0
    logits[1, LABELS.index("cello")] = 3.0
    logits[1, LABELS.index("tuba")] = 4.0  # outranks the second true label
    assert ranking_precision(logits, torch.cat([y, y])) == pytest.approx(0.75)
    # non-music sounds: alone they carry no label; added, the labels stay and the sums hold
    rng = np.random.default_rng(0)
    sound = rng.standard_normal(3 * n).astype(np.float32)
    alone = with_non_music(ex, [sound], rng, only=True)
    assert alone.labels == [] and alone.stems.shape == (0, n)
    assert np.sqrt(np.mean(alone.mixture ** 2)) == pytest.approx(1.0, rel=1e-3)
    added = with_non_music(ex, [sound], rng, only=False)
    assert added.labels == ex.labels
    np.testing.assert_allclose(added.mixture, ex.stems.sum(0) + added.residual + 1.0, atol=1e-5)
    model.eval()
    assert 0.0 <= non_music_score(model, [alone, alone]) <= 1.0
