"""The bundled speech separator really separates, the apply path is exact, and training's
pieces behave."""

import itertools

import numpy as np
import torch
from helpers import RATE, voice_like

from avsplit import apply
from avsplit.audio import apply_masks, si_sdr
from avsplit.engine import Engine
from avsplit.models.registry import MODELS, sha256_of, weights_path
from avsplit.train.speech import Pools, make_batch, sisdr_pit_loss


def test_bundled_weights_match_their_registered_sha256():
    for entry in MODELS.values():
        assert sha256_of(weights_path(entry.name, verify=False)) == entry.sha256


def test_separator_output_is_closer_to_the_voice_than_the_mixture_is():
    separator = Engine("cpu").separator("speech-blstm")
    assert separator.model_id["sha256"] == MODELS["speech-blstm"].sha256
    voice = voice_like(0)
    noise = np.random.default_rng(1).standard_normal(len(voice)).astype(np.float32)
    noise *= np.sqrt(np.mean(voice ** 2) / np.mean(noise ** 2))  # 0 dB
    mixture = voice + noise
    masks = separator.masks(mixture)
    assert masks.shape[0] == separator.config.n_speakers + 1
    assert np.allclose(masks.astype(np.float32).sum(0), 1, atol=2e-3)
    sources = separator.slot_waves(mixture, masks)
    best = max(float(si_sdr(s, voice)) for s in sources[:-1])
    assert best > float(si_sdr(mixture, voice)) + 3.0


def _pointwise_masks(seed: int):
    """A context-free stand-in network: masks from each bin's own magnitude, slot order
    shuffled at every call (as a PIT network's is from chunk to chunk)."""
    rng = np.random.default_rng(seed)

    def masks_of(spec: torch.Tensor) -> np.ndarray:
        mag = spec.abs().numpy()
        a = 1 / (1 + np.exp(-(np.log(mag + 1e-6) + 4)))
        b = (1 - a) * 0.7
        m = np.stack([a, b, 1 - a - b]).astype(np.float32)
        order = list(rng.permutation(2))
        return m[order + [2]]

    return masks_of


def test_chunked_mask_estimation_matches_one_pass_on_the_overlap():
    mixture = voice_like(2, 6.0) + 0.3 * voice_like(3, 6.0)
    whole = apply.estimate_masks(_pointwise_masks(0), mixture, 512, 256, RATE, chunk_s=60,
                                 unordered=2, dtype=np.float32)
    chunked = apply.estimate_masks(_pointwise_masks(1), mixture, 512, 256, RATE, chunk_s=2.5,
                                   overlap_s=0.5, unordered=2, dtype=np.float32)
    assert chunked.shape == whole.shape == (3, 257, len(mixture) // 256 + 1)
    # the slot permutation of each chunk is undone and the cross-fades blend equal masks
    best = min(np.abs(chunked[list(p) + [2]] - whole).max() for p in itertools.permutations(range(2)))
    assert best < 1e-4


def test_chunked_mask_application_at_the_input_rate_matches_one_pass():
    rate = 44100
    rng = np.random.default_rng(4)
    mixture = (0.1 * rng.standard_normal((2, rate * 5))).astype(np.float32)
    frames = int(5 * RATE) // 256 + 1
    masks = rng.uniform(0, 1, (3, 257, frames)).astype(np.float32)
    masks /= masks.sum(0, keepdims=True)
    one_pass = apply_masks(mixture, rate, masks, RATE, 256, 512)
    weights = np.eye(3, dtype=np.float32)
    blocks = list(apply.render_blocks(lambda a, b: mixture[:, a:b], mixture.shape[1], rate,
                                      masks.astype(np.float16), weights, RATE, 512, 256,
                                      block_s=1.3))
    assert len(blocks) > 3
    chunked = np.concatenate([b[2] for b in blocks], axis=-1)
    assert chunked.shape == one_pass.shape
    assert np.abs(chunked - one_pass).max() < 2e-3 * np.abs(one_pass).max()
    assert np.abs(chunked.sum(0) - mixture).max() < 2e-3


def test_training_batches_are_exact_mixtures_and_pit_ignores_slot_order():
    rng = np.random.default_rng(0)
    pools = Pools(speakers=[[voice_like(i, 2.0)] for i in range(4)],
                  backgrounds=[0.01 * rng.standard_normal(RATE * 2).astype(np.float32)], rirs=[])
    mix, speech, background, has_bg = make_batch(pools, 8, RATE, rng)
    assert speech.shape == (8, 2, RATE) and has_bg.dtype == torch.bool
    assert torch.allclose(mix, speech.sum(1) + background, atol=1e-6)
    ideal = torch.cat([speech, background[:, None]], dim=1)
    loss_a = sisdr_pit_loss(ideal + 1e-4 * torch.randn_like(ideal), mix, speech, background, has_bg)
    swapped = torch.cat([ideal[:, :2].flip(1), ideal[:, 2:]], dim=1)
    loss_b = sisdr_pit_loss(swapped + 1e-4 * torch.randn_like(ideal), mix, speech, background, has_bg)
    assert abs(float(loss_a - loss_b)) < 1.0
    everything_in_background = torch.zeros_like(ideal)
    everything_in_background[:, 2] = mix
    everything_in_background[:, :2] = 1e-3 * torch.randn_like(ideal[:, :2])
    assert sisdr_pit_loss(everything_in_background, mix, speech, background, has_bg) > loss_a + 20
