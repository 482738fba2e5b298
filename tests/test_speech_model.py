"""The bundled speech separator really separates, the apply path is exact, and training's
pieces behave."""

import itertools

import numpy as np
import pytest
import torch
from helpers import RATE, voice_like

from avsplit import apply
from avsplit.audio import apply_masks, si_sdr
from avsplit.engine import Engine
from avsplit.models.registry import MODELS, sha256_of, weights_path
from avsplit.cue import mouth_cue
from avsplit.models.speech import SpeechSeparator, SpeechSeparatorConfig
from avsplit.train.speech import Pools, make_batch, separation_loss


def test_bundled_weights_match_their_registered_sha256():
    for entry in MODELS.values():
        assert sha256_of(weights_path(entry.name, verify=False)) == entry.sha256


@pytest.mark.parametrize("name", ["speech-blstm", "speech-blstm-turns"])
def test_separator_output_is_closer_to_the_voice_than_the_mixture_is(name):
    separator = Engine("cpu").separator(name)
    assert separator.model_id["sha256"] == MODELS[name].sha256
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


def test_chunked_estimation_cuts_the_condition_with_the_chunks():
    mixture = voice_like(4, 5.0)
    frames = len(mixture) // 256 + 1
    condition = np.stack([np.sin(np.arange(frames) / 7.0), np.ones(frames)]).astype(np.float32)

    def masks_of(spec, part):  # a mask that follows the condition, frame by frame
        assert part.shape == (2, spec.shape[-1])
        m = 1 / (1 + np.exp(-part[0]))
        return np.stack([np.broadcast_to(m, spec.shape), np.broadcast_to(1 - m, spec.shape)])

    chunked = apply.estimate_masks(masks_of, mixture, 512, 256, RATE, chunk_s=1.5, overlap_s=0.5,
                                   dtype=np.float32, condition=condition)
    expected = 1 / (1 + np.exp(-condition[0]))
    np.testing.assert_allclose(chunked[0], np.broadcast_to(expected, chunked[0].shape), atol=1e-5)

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


def test_rendering_a_stretch_of_some_slots_matches_the_whole_render():
    """render_slots gives the same samples as the whole separated waveform over any stretch
    (edges included), for the slots asked, in their order."""
    rng = np.random.default_rng(5)
    wave = (0.1 * rng.standard_normal(RATE * 4)).astype(np.float32)
    frames = len(wave) // 256 + 1
    masks = rng.uniform(0, 1, (3, 257, frames)).astype(np.float16)
    whole = np.stack([apply_masks(wave[None], RATE, masks[[k]].astype(np.float32), RATE, 256, 512)[0, 0]
                      for k in range(3)])
    for start, end in ((0, RATE), (12345, 40000), (3 * RATE, 4 * RATE + 99)):
        part = apply.render_slots(wave, masks, [2, 0], 512, 256, start, end)
        stop = min(end, len(wave))
        assert part.shape == (2, stop - start)
        assert np.abs(part - whole[[2, 0], start:stop]).max() < 2e-3 * np.abs(whole).max()


def test_training_batches_are_exact_mixtures_and_pit_ignores_slot_order():
    rng = np.random.default_rng(0)
    pools = Pools(speakers=[[voice_like(i, 2.0)] for i in range(4)],
                  backgrounds=[0.01 * rng.standard_normal(RATE * 2).astype(np.float32)], rirs=[])
    mix, speech, background, has_bg = make_batch(pools, 8, RATE, rng)
    assert speech.shape == (8, 2, RATE) and has_bg.dtype == torch.bool
    assert torch.allclose(mix, speech.sum(1) + background, atol=1e-6)
    ideal = torch.cat([speech, background[:, None]], dim=1)
    loss_a = separation_loss(ideal + 1e-4 * torch.randn_like(ideal), mix, speech, background, has_bg)
    swapped = torch.cat([ideal[:, :2].flip(1), ideal[:, 2:]], dim=1)
    loss_b = separation_loss(swapped + 1e-4 * torch.randn_like(ideal), mix, speech, background, has_bg)
    assert abs(float(loss_a - loss_b)) < 1.0
    everything_in_background = torch.zeros_like(ideal)
    everything_in_background[:, 2] = mix
    everything_in_background[:, :2] = 1e-3 * torch.randn_like(ideal[:, :2])
    assert separation_loss(everything_in_background, mix, speech, background, has_bg) > loss_a + 20


def test_turn_taking_examples_give_each_voice_its_own_stretches():
    """A turn-taking example (make_mixture(turns=True)) is still an exact mixture of two voices,
    but each voice talks mostly where the other does not; turn_gates alternate 2-4 turns and
    overlap at most around the changes."""
    from avsplit.train.speech import make_mixture, turn_gates

    rng = np.random.default_rng(3)
    for _ in range(20):
        g = turn_gates(3 * RATE, rng)
        assert g.shape == (2, 3 * RATE) and g.min() >= 0 and g.max() <= 1
        assert (g.max(0) > 0.5).mean() > 0.95  # someone talks nearly all the time
        assert ((g > 0.5).all(0)).mean() < 0.35  # both only around the turn changes
        assert (g[0] > 0.5).mean() > 0.1 and (g[1] > 0.5).mean() > 0.1
    pools = Pools(speakers=[[voice_like(i, 3.0)] for i in range(4)], backgrounds=[], rirs=[])
    mix, speech, bg, _ = make_mixture(pools, 3 * RATE, rng, n_speakers=2, turns=True,
                                      augment=False, reverb_prob=0.0)
    assert np.allclose(mix, speech.sum(0) + bg, atol=1e-6)
    frames = speech.reshape(2, -1, RATE // 50) ** 2
    active = frames.mean(-1) > 1e-3 * frames.mean(-1).max()
    assert (active[0] & active[1]).mean() < 0.5 * min(active[0].mean(), active[1].mean())


def test_fixed_examples_are_scored_without_permuting_the_slots():
    rng = np.random.default_rng(1)
    pools = Pools(speakers=[[voice_like(i, 2.0)] for i in range(4)], backgrounds=[], rirs=[])
    mix, speech, background, has_bg = make_batch(pools, 4, RATE, rng)
    two = speech.pow(2).sum(-1).gt(0).all(1)
    assert two.any()
    ideal = torch.cat([speech, background[:, None]], dim=1) + 1e-4 * torch.randn(4, 3, RATE)
    swapped = torch.cat([ideal[:, :2].flip(1), ideal[:, 2:]], dim=1)
    fixed = torch.ones(4, dtype=torch.bool)
    right = separation_loss(ideal, mix, speech, background, has_bg, fixed=fixed)
    wrong = separation_loss(swapped, mix, speech, background, has_bg, fixed=fixed)
    assert wrong > right + 10  # the cued voice must be in slot 0
    assert abs(float(separation_loss(swapped, mix, speech, background, has_bg) - right)) < 1.0


def test_mouth_cue_is_normalised_and_flags_unseen_frames():
    t = np.arange(50) / 25.0
    jaw = 0.1 + 0.02 * np.sin(2 * np.pi * 3 * t)
    jaw[20:30] = np.nan  # the face is lost for 0.4 s
    frames = np.arange(0, 2.0, 0.016)
    cue = mouth_cue(t, jaw, frames)
    assert cue.shape == (2, len(frames)) and cue.dtype == np.float32
    gap = (frames > 0.8 + 0.13) & (frames < 1.16 - 0.13)
    assert cue[1, gap].sum() == 0 and np.all(cue[0, gap] == 0)
    seen = cue[1] == 1
    assert seen.sum() > 0.7 * len(frames)
    assert abs(cue[0, seen].std() - 1.0) < 0.2  # z-scale, whatever the face's size
    np.testing.assert_allclose(mouth_cue(t, 5 * jaw, frames), cue, atol=1e-5)
    assert not mouth_cue(t, np.full(50, np.nan), frames).any()


def test_extractor_warm_started_from_the_blind_separator_starts_as_it():
    torch.manual_seed(0)
    blind = SpeechSeparator(SpeechSeparatorConfig(hidden=16, proj=16, layers=1)).eval()
    cued = SpeechSeparator(SpeechSeparatorConfig(hidden=16, proj=16, layers=1, cue_channels=2)).eval()
    cued.load_warm_start(blind.state_dict())
    spec = torch.randn(1, 257, 40, dtype=torch.complex64)
    cue = torch.randn(1, 2, 40)
    with torch.no_grad():
        torch.testing.assert_close(cued.masks(spec, cue), blind.masks(spec))
        cued.cue[-1].weight.normal_()
        assert not torch.allclose(cued.masks(spec, cue), blind.masks(spec))
    restored = SpeechSeparator.from_checkpoint(cued.to_checkpoint())
    assert restored.config.cue_channels == 2


def test_a_widened_separator_starts_as_the_one_it_grew_from_and_can_then_change():
    torch.manual_seed(1)
    small = SpeechSeparator(SpeechSeparatorConfig(hidden=16, proj=16, layers=1)).eval()
    wide = SpeechSeparator(SpeechSeparatorConfig(hidden=16, proj=16, layers=1, residual_layers=2,
                                                 residual_hidden=8)).eval()
    wide.load_warm_start(small.state_dict())
    spec = torch.randn(1, 257, 30, dtype=torch.complex64)
    with torch.no_grad():
        torch.testing.assert_close(wide.masks(spec), small.masks(spec))
        wide.refine[1].proj.weight.normal_()
        assert not torch.allclose(wide.masks(spec), small.masks(spec))
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in small.parameters())
    restored = SpeechSeparator.from_checkpoint(wide.to_checkpoint())
    assert restored.config.residual_layers == 2
    with pytest.raises(ValueError):  # a network of another shape is not a warm start
        SpeechSeparator(SpeechSeparatorConfig(hidden=8, proj=16, layers=1)).load_warm_start(
            small.state_dict())


def test_a_voice_parked_in_the_background_slot_is_penalised():
    """The flaw of the SI-SDR recipe: voice 2 in the background slot, slot 1 a -45 dB copy."""
    rng = np.random.default_rng(2)
    pools = Pools(speakers=[[voice_like(i, 2.0)] for i in range(4)], backgrounds=[], rirs=[])
    mix, speech, background, has_bg = make_batch(pools, 6, RATE, rng)
    two = speech.pow(2).sum(-1).gt(0).all(1)
    mix, speech, background, has_bg = mix[two], speech[two], background[two], has_bg[two]
    ideal = torch.cat([speech, background[:, None]], dim=1) + 1e-4 * torch.randn(len(mix), 3, RATE)
    parked = torch.stack([speech[:, 0], 10 ** (-45 / 20) * speech[:, 1], speech[:, 1]], dim=1)
    assert separation_loss(parked, mix, speech, background, has_bg) > \
        separation_loss(ideal, mix, speech, background, has_bg) + 10
