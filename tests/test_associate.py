import numpy as np

from avsplit.associate import associate, speech_envelope, sync_score
from avsplit.structures import VisualTrack

RATE = 16000


def _syllables(seed: int, seconds: float = 8.0):
    """A voice-like signal: a harmonic tone gated by random syllables, and its gate."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    gate = np.zeros(n)
    t = 0.1
    while t < seconds - 0.3:
        length = rng.uniform(0.12, 0.35)
        a, b = int(t * RATE), int((t + length) * RATE)
        gate[a:b] = np.hanning(b - a) * rng.uniform(0.5, 1.0)
        t += length + rng.uniform(0.05, 0.4)
    f0 = rng.uniform(100, 220)
    tt = np.arange(n) / RATE
    voice = sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in range(1, 8))
    return (voice * gate).astype(np.float32), gate


def _face(gate: np.ndarray, track_id: int, delay_s: float = 0.0, fps: float = 25.0,
          seed: int = 0) -> VisualTrack:
    rng = np.random.default_rng(seed)
    times = np.arange(0, len(gate) / RATE, 1 / fps)
    idx = np.clip(((times - delay_s) * RATE).astype(int), 0, len(gate) - 1)
    jaw = 0.05 + 0.1 * gate[idx] + 0.01 * rng.standard_normal(len(times))
    boxes = np.tile(np.array([0.3, 0.2, 0.6, 0.7], np.float32), (len(times), 1))
    return VisualTrack(track_id, "face", times, boxes, jaw.astype(np.float32))


def test_envelope_follows_the_gate():
    voice, gate = _syllables(0)
    env, times = speech_envelope(voice, RATE)
    assert len(env) == len(times) and abs(times[1] - times[0] - 0.01) < 1e-9
    g = gate[(times * RATE).astype(int)]
    assert env[g > 0.4].mean() > 5 * env[g == 0].mean() + 1e-6


def test_sync_score_finds_the_lag_and_separates_own_voice_from_impostor():
    voice, gate = _syllables(1)
    impostor, _ = _syllables(2)
    face = _face(gate, 0, delay_s=-0.12)  # mouth moves 0.12 s before the sound
    own = sync_score(voice, RATE, face)
    other = sync_score(impostor, RATE, face)
    assert abs(own.lag_s - 0.12) <= 0.04
    assert own.r > 0.6 and own.z > 3
    assert other.z < own.z - 2


def test_associate_puts_the_voice_on_its_face_and_the_rest_offscreen():
    a, gate_a = _syllables(3)
    b, gate_b = _syllables(4)
    c, _ = _syllables(5)  # a voice without a visible face
    silent = np.zeros_like(a)
    tracks = [_face(gate_a, 0, seed=1), _face(gate_b, 1, seed=2)]
    result = associate(np.stack([c, b, a, silent]), RATE, tracks)
    assert [r.onscreen for r in result] == [False, True, True, False]
    assert result[1].track_id == 1 and result[2].track_id == 0
    assert "empty" in result[3].reason


def test_still_face_matches_nothing():
    a, gate = _syllables(6)
    still = _face(np.zeros_like(gate), 0)
    assert not associate(a[None], RATE, [still])[0].onscreen


def test_no_faces_means_offscreen_with_a_reason():
    a, _ = _syllables(7)
    result = associate(a[None], RATE, [])
    assert not result[0].onscreen and result[0].reason == "no face visible"


def test_two_faces_do_not_fight_over_the_louder_voice():
    """Source 0 is in sync with both faces (more with face 0); source 1 only with face 1: each
    face must get its own source, not face 1 an empty stem."""
    from avsplit.associate import SyncScore, decide

    scores = {0: [SyncScore(0, 0.6, 0.04, 5.0, 100), SyncScore(1, 0.5, 0.04, 4.0, 100)],
              1: [SyncScore(0, 0.0, 0.0, 0.0, 100), SyncScore(1, 0.35, 0.06, 2.5, 100)]}
    out = decide(np.array([0.0, -3.0]), scores, 2)
    assert [(a.onscreen, a.track_id) for a in out] == [(True, 0), (True, 1)]



def _track(track_id: int, jaw: np.ndarray) -> VisualTrack:
    times = np.arange(len(jaw)) / 25.0
    boxes = np.tile(np.array([0.3, 0.2, 0.6, 0.7], np.float32), (len(jaw), 1))
    return VisualTrack(track_id, "face", times, boxes, jaw.astype(np.float32))


def test_mouth_moves_tells_a_talking_face_from_a_still_one():
    from avsplit.associate import mouth_moves

    rng = np.random.default_rng(0)
    _, gate = _syllables(8)
    talking = _face(gate, 0)
    still = _track(1, 0.2 + 0.0003 * rng.standard_normal(200))  # a photo: landmark jitter only
    short = _track(2, 0.2 + 0.05 * rng.standard_normal(5))      # seen on 5 frames
    assert mouth_moves(talking) and not mouth_moves(still) and not mouth_moves(short)


def test_the_only_voice_goes_to_the_talking_face_even_on_weak_sync():
    """A TV head whose jaw follows its voice loosely (z 0.6, r 0.1): below the thresholds, so
    without the lone-voice rule its voice would go off-screen; with it the voice is on-screen.
    A still face, a second voice of comparable level, a voice against the mouth (z < 0) or two
    equally likely talking faces leave it off-screen."""
    from avsplit.associate import SyncScore, decide

    weak = {0: [SyncScore(0, 0.1, 0.04, 0.6, 200)], 1: [SyncScore(0, 0.05, 0.0, 0.2, 200)]}
    lone = decide(np.array([0.0, -15.0]), weak, 1, moving=[True])
    assert [(a.onscreen, a.track_id) for a in lone] == [(True, 0), (False, None)]
    assert lone[0].evidence == "lone voice" and lone[0].confidence < 0.5
    assert not decide(np.array([0.0, -15.0]), weak, 1)[0].onscreen             # rule not asked for
    assert not decide(np.array([0.0, -15.0]), weak, 1, moving=[False])[0].onscreen  # still face
    assert not decide(np.array([0.0, -4.0]), weak, 1, moving=[True])[0].onscreen   # two voices
    against = {0: [SyncScore(0, -0.1, 0.04, -1.2, 200)], 1: weak[1]}
    assert not decide(np.array([0.0, -15.0]), against, 1, moving=[True])[0].onscreen
    two = {0: [SyncScore(0, 0.1, 0.04, 0.6, 200), SyncScore(1, 0.1, 0.04, 0.4, 200)],
           1: [SyncScore(0, 0.0, 0.0, 0.0, 200), SyncScore(1, 0.0, 0.0, 0.0, 200)]}
    assert not decide(np.array([0.0, -15.0]), two, 2, moving=[True, True])[0].onscreen
    lead = {0: [SyncScore(0, 0.1, 0.04, 1.3, 200), SyncScore(1, 0.0, 0.04, 0.1, 200)], 1: two[1]}
    assert decide(np.array([0.0, -15.0]), lead, 2, moving=[True, True])[0].track_id == 0


def test_a_photo_on_screen_does_not_take_the_narrators_voice():
    """End to end through associate(): one voice, one face that does not move."""
    a, _ = _syllables(9)
    rng = np.random.default_rng(1)
    photo = _track(0, 0.2 + 0.0003 * rng.standard_normal(int(8.0 * 25)))
    assert not associate(a[None], RATE, [photo])[0].onscreen


def test_a_loud_voice_joins_the_face_that_the_pairing_gave_a_faint_remnant():
    """One face; the pairing (highest z) picks a -19 dB remnant of its voice (z 2.8), the loud
    slot clears the thresholds (z 2.3) but not the split-voice bar: it joins the face too. A
    loud slot below the thresholds, or a remnant only 3 dB quieter, changes nothing."""
    from avsplit.associate import SyncScore, decide

    scores = {0: [SyncScore(0, 0.41, 0.04, 2.3, 75)], 1: [SyncScore(0, 0.52, 0.04, 2.8, 75)]}
    out = decide(np.array([0.0, -19.0]), scores, 1)
    assert [(a.onscreen, a.track_id) for a in out] == [(True, 0), (True, 0)]
    assert not decide(np.array([0.0, -19.0]), scores, 1, join_db=float("inf"))[0].onscreen
    assert not decide(np.array([0.0, -3.0]), scores, 1)[0].onscreen
    weak = {0: [SyncScore(0, 0.41, 0.04, 1.2, 75)], 1: scores[1]}
    assert not decide(np.array([0.0, -19.0]), weak, 1)[0].onscreen


def test_scene_pairing_keeps_a_second_talkers_weakly_synced_voice():
    """Interview-like: face 0 in clear sync with voice 0 (z 2.6), face 1's mouth moves and
    voice 1 leans to it (z 1.3, below z_best): voice 1 goes to face 1 (the default). Not with
    ``pair_z=inf``, and never for a still face, a voice that leans to the other face, or when
    no face was matched on synchrony."""
    from avsplit.associate import SyncScore, decide

    level = np.array([0.0, -1.2])
    scores = {0: [SyncScore(0, 0.34, 0.04, 2.6, 400), SyncScore(1, 0.15, 0.04, 0.8, 400)],
              1: [SyncScore(0, 0.14, 0.04, 0.9, 400), SyncScore(1, 0.18, 0.04, 1.3, 400)]}
    on = decide(level, scores, 2, moving=[True, True])
    assert [(a.onscreen, a.track_id, a.evidence) for a in on] == [
        (True, 0, "sync"), (True, 1, "pairing")]
    assert on[1].confidence < 0.5
    assert not decide(level, scores, 2, moving=[True, True], pair_z=float("inf"))[1].onscreen
    assert not decide(level, scores, 2)[1].onscreen                    # no mouth information
    assert not decide(level, scores, 2, moving=[True, False], pair_z=1.0)[1].onscreen
    leans = {0: scores[0], 1: [SyncScore(0, 0.14, 0.04, 1.4, 400), scores[1][1]]}
    assert not decide(level, leans, 2, moving=[True, True], pair_z=1.0)[1].onscreen
    weak = {0: [SyncScore(0, 0.1, 0.04, 1.2, 400), scores[0][1]], 1: scores[1]}
    assert not any(a.onscreen for a in decide(level, weak, 2, moving=[True, True], pair_z=1.0,
                                              lone_db=float("inf")))


def test_contrast_gives_a_talking_face_the_voice_its_jaw_clearly_follows():
    """One talking face, two voices taking turns: voice 1 is in weak sync with it (z 1.4, below
    z_best) and voice 0 against it (z -0.3): voice 1 goes on-screen ("contrast", half
    confidence), voice 0 stays off. Not with ``contrast_z=inf``, not for a still face, and not
    when the other voice is nearly as close (z 0.8: a margin under 1)."""
    from avsplit.associate import SyncScore, decide

    level = np.array([0.0, -5.8])
    scores = {0: [SyncScore(0, -0.06, -0.08, -0.3, 135)], 1: [SyncScore(0, 0.38, -0.1, 1.4, 135)]}
    out = decide(level, scores, 1, moving=[True])
    assert [(a.onscreen, a.track_id, a.evidence) for a in out] == [(False, None, ""),
                                                                   (True, 0, "contrast")]
    assert out[1].confidence < 0.5
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[True],
                                              contrast_z=float("inf")))
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[False]))
    close = {0: [SyncScore(0, 0.2, 0.04, 0.8, 135)], 1: scores[1]}
    assert not any(a.onscreen for a in decide(level, close, 1, moving=[True]))
    alone = decide(np.array([-20.0, 0.0]), scores, 1, moving=[True])  # one real voice
    assert [(a.onscreen, a.evidence) for a in alone] == [(False, ""), (True, "lone voice")]


def test_decisions_hold_over_time_where_a_window_dips():
    """Face 1 holds voice 1 in 3 of 5 windows; in window 3 its z dips to 0.8 (kept: "held"), in
    window 4 the voice is against the face (z -0.5: stays off-screen), and in window 5 face 1
    is not seen (stays off). Two windows only: nothing changes."""
    from avsplit.associate import Assignment, SyncScore, WindowDecision, hold_over_time

    def window(i, z1, seen=True, on=False):
        scores = [SyncScore(0, 0.1, 0.04, 0.3, 400)] + ([SyncScore(1, 0.15, 0.04, z1, 400)]
                                                        if seen else [])
        voice0 = Assignment(0, True, 0, 0.9, 0.0, [SyncScore(0, 0.4, 0.04, 3.0, 400)], "", "sync")
        voice1 = Assignment(1, on, 1 if on else None, 0.5, -1.0, scores, "", "sync" if on else "")
        return WindowDecision(10.0 * i, 10.0 * i + 20, [voice0, voice1])

    def onscreen(ws):
        return [ws[i].assignments[1].onscreen for i in range(len(ws))]

    ws = hold_over_time([window(0, 2.0, on=True), window(1, 2.1, on=True), window(2, 0.8),
                         window(3, -0.5), window(4, 0.0, seen=False), window(5, 1.9, on=True)])
    assert onscreen(ws) == [True, True, True, False, False, True]
    assert ws[2].assignments[1].evidence == "held" and ws[2].assignments[1].track_id == 1
    two = hold_over_time([window(0, 2.0, on=True), window(1, 0.8)])
    assert onscreen(two) == [True, False]


def test_lips_cue_is_not_fooled_by_a_voice_talking_in_the_same_stretch():
    """A face that talks only in the middle of a 3 s clip (as GRID talkers do) and an impostor
    voice that fills the same stretch with other syllables: on levels the impostor follows the
    slow on/off of the mouth and scores like sync; on the lips cue it falls well behind the
    face's own voice (means over 7 clips)."""
    from avsplit.associate import band_envelope, lips_score

    own, lips, levels = [], [], []
    for seed in range(6, 20, 2):
        voice, gate = _syllables(seed, seconds=3.0)
        impostor, _ = _syllables(seed + 1, seconds=3.0)
        stretch = np.zeros(len(gate))
        stretch[int(0.6 * RATE):int(2.4 * RATE)] = 1.0
        face = _face(gate * stretch, 0, seed=3)
        own.append(lips_score(band_envelope(voice * stretch, RATE), face).z)
        lips.append(lips_score(band_envelope(impostor * stretch, RATE), face).z)
        levels.append(sync_score(impostor * stretch, RATE, face).z)
    assert np.mean(levels) > np.mean(lips) + 1.5
    assert np.mean(own) > np.mean(lips) + 2.0
    assert lips_score(band_envelope(impostor * stretch, RATE), face).cue == "lips"


def test_one_face_and_two_voices_decide_on_the_lips_cue():
    """Levels favour voice 0, the lips cue voice 1: with one face and two real voices the lips
    decide; without lips scores, or with two faces (sync_matrix computes lips only for one),
    the levels do."""
    from avsplit.associate import SyncScore, decide

    def scored(z_levels, z_lips):
        s = SyncScore(0, 0.4, 0.04, z_levels, 150)
        s.lips = None if z_lips is None else SyncScore(0, 0.4, 0.04, z_lips, 150, "lips")
        return s

    level = np.array([0.0, -2.0])
    out = decide(level, {0: [scored(3.0, 0.2)], 1: [scored(0.5, 3.0)]}, 1, moving=[True])
    assert [a.onscreen for a in out] == [False, True]
    assert "lips cue" in out[1].reason and out[1].scores[0].cue == "lips"
    out = decide(level, {0: [scored(3.0, None)], 1: [scored(0.5, None)]}, 1, moving=[True])
    assert [a.onscreen for a in out] == [True, False]
    # one voice only (the other 8 dB or more below): nothing to tell apart, levels decide
    out = decide(np.array([0.0, -20.0]), {0: [scored(3.0, 0.2)], 1: [scored(0.5, 3.0)]}, 1,
                 moving=[True])
    assert out[0].onscreen and out[0].scores[0].cue == "levels"


def test_a_voice_split_over_two_slots_goes_to_the_face_whose_lips_follow_their_sum():
    """One face, two real voices, neither clearing the thresholds on the lips cue (z 1.3 and
    1.0), but their sum does (z 2.2): both go on-screen ("split voice", half confidence). Not
    when the sum is weak too, and not for a still face. Once one voice matched alone, the
    other joins only where the sum's z leads that voice's by ``split_gain``."""
    from avsplit.associate import SyncScore, decide

    def scored(z_lips):
        s = SyncScore(0, 0.1, 0.04, 0.5, 150)
        s.lips = SyncScore(0, 0.2, 0.04, z_lips, 150, "lips")
        return s

    level = np.array([-3.0, 0.0])
    scores = {0: [scored(1.3)], 1: [scored(1.0)]}
    split = ((0, 1), SyncScore(0, 0.29, 0.04, 2.2, 150, "lips"))
    out = decide(level, scores, 1, moving=[True], split=split)
    assert [(a.onscreen, a.track_id, a.evidence) for a in out] == [(True, 0, "split voice")] * 2
    assert all(a.confidence < 0.5 for a in out)
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[True]))
    weak = ((0, 1), SyncScore(0, 0.1, 0.04, 0.8, 150, "lips"))
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[True], split=weak))
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[False], split=split))
    clear = {0: [scored(3.0)], 1: [scored(-0.5)]}
    out = decide(level, clear, 1, moving=[True], split=split)
    assert [(a.onscreen, a.evidence) for a in out] == [(True, "sync"), (False, "")]
    # the face took voice 0 alone (z 3.0); the sum leads it by split_gain or more: voice 1 joins
    better = ((0, 1), SyncScore(0, 0.5, 0.04, 3.4, 150, "lips"))
    out = decide(level, clear, 1, moving=[True], split=better, split_gain=0.3)
    assert [(a.onscreen, a.evidence) for a in out] == [(True, "sync"), (True, "split voice")]
    for gain in (0.5, float("inf")):
        out = decide(level, clear, 1, moving=[True], split=better, split_gain=gain)
        assert [a.onscreen for a in out] == [True, False]


def test_two_slots_of_one_talker_by_voice_identity_go_to_the_moving_face_together():
    """One face, two real voices, neither nor their sum clearing the lips thresholds (z 0.4,
    0.1, sum 0.6): with d-vectors that say one talker (similarity 0.85 >= SAME_TALKER_SIM) both
    go to the moving face ("same talker", half confidence); not for two talkers (0.5), not
    for a still face, not with a third real voice, not when the lips are against the sum
    (z < 0). When the face took one of them on sync, the other joins it. A similarity given as
    a function is asked for only where the rule could decide."""
    from avsplit.associate import SAME_TALKER_SIM, SyncScore, decide

    def scored(z_lips, r_lips=0.1):
        s = SyncScore(0, 0.1, 0.04, 0.5, 150)
        s.lips = SyncScore(0, r_lips, 0.04, z_lips, 150, "lips")
        return s

    level = np.array([-2.0, 0.0])
    scores = {0: [scored(0.4)], 1: [scored(0.1)]}
    split = ((0, 1), SyncScore(0, 0.1, 0.04, 0.6, 150, "lips"))
    assert 0.5 < SAME_TALKER_SIM < 0.85
    out = decide(level, scores, 1, moving=[True], split=split, same_talker=0.85)
    assert [(a.onscreen, a.track_id, a.evidence) for a in out] == [(True, 0, "same talker")] * 2
    assert all(a.confidence < 0.5 for a in out) and "similarity 0.85" in out[0].reason
    for same in (None, 0.5):
        out = decide(level, scores, 1, moving=[True], split=split, same_talker=same)
        assert not any(a.onscreen for a in out)
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[False], split=split,
                                              same_talker=0.85))
    against = ((0, 1), SyncScore(0, -0.1, 0.04, -0.6, 150, "lips"))
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[True], split=against,
                                              same_talker=0.85))
    three = decide(np.array([-2.0, 0.0, -3.0]), {**scores, 2: [scored(0.2)]}, 1, moving=[True],
                   split=split, same_talker=0.85)
    assert not any(a.onscreen for a in three)
    # voice 0 matched on its own lips (z 3.0); its other half joins by identity
    took = {0: [scored(3.0, 0.3)], 1: [scored(0.1)]}
    out = decide(level, took, 1, moving=[True], split=split, same_talker=0.85)
    assert [(a.onscreen, a.evidence) for a in out] == [(True, "sync"), (True, "same talker")]
    out = decide(level, took, 1, moving=[True], split=split, same_talker=0.5)
    assert [a.onscreen for a in out] == [True, False]
    # given as a function, the similarity is asked only where the rule could decide
    asked = []

    def similarity():
        asked.append(1)
        return 0.85

    out = decide(level, scores, 1, moving=[True], split=split, same_talker=similarity)
    assert [a.evidence for a in out] == ["same talker"] * 2 and len(asked) == 1
    both = {0: [scored(3.0, 0.3)], 1: [scored(3.0, 0.3)]}
    decide(level, both, 1, moving=[True], split=split, same_talker=similarity)
    decide(np.array([-2.0, 0.0, -3.0]), {**scores, 2: [scored(0.2)]}, 1, moving=[True],
           split=split, same_talker=similarity)
    assert len(asked) == 1


def test_split_voice_score_reads_the_sum_of_the_two_loudest_voices():
    """A voice cut into two slots at random 0.3-1 s turns (smooth 50 ms crossfades), with a
    jaw that follows it loosely: the sum's lips score is the whole voice's, above either half's,
    and the association puts both halves on screen; a third candidate 40 dB down is left out;
    one real voice gives None."""
    from avsplit.associate import (associate_envelopes, band_envelope, decide, lips_score,
                                   split_voice_score, sync_matrix)

    voice, gate = _syllables(8, 8.0)
    rng = np.random.default_rng(1)
    times = np.arange(0, len(gate) / RATE, 1 / 25)
    jaw = 0.05 + 0.1 * gate[(times * RATE).astype(int)] + 0.07 * rng.standard_normal(len(times))
    face = VisualTrack(0, "face", times, np.tile(np.array([0.3, 0.2, 0.6, 0.7], np.float32),
                                                 (len(times), 1)), jaw.astype(np.float32))
    turn = np.zeros(len(voice))
    t, on = 0, 1.0
    while t < len(voice):
        n = int(rng.uniform(0.3, 1.0) * RATE)
        turn[t:t + n], on, t = on, 1.0 - on, t + n
    ramp = np.hanning(int(0.05 * RATE))
    turn = np.convolve(turn, ramp / ramp.sum(), "same")
    parts = [voice * turn, voice * (1 - turn), 0.01 * voice]
    lips = np.stack([band_envelope(p.astype(np.float32), RATE)[0] for p in parts])
    env_t = band_envelope(voice, RATE)[1]
    levels = np.stack([speech_envelope(p.astype(np.float32), RATE)[0] for p in parts])
    level, scores = sync_matrix(levels, env_t, [face], lips_envelopes=lips)
    pair, summed = split_voice_score(level, scores, lips, env_t, face)
    whole = lips_score(band_envelope(voice, RATE), face)
    assert pair == (0, 1) and summed.cue == "lips"
    assert abs(summed.z - whole.z) < 0.5
    assert summed.z > max(scores[k][0].lips.z for k in pair) + 0.8
    # neither half clears the thresholds alone, so the rule is what puts the voice on screen
    out = associate_envelopes(levels, env_t, [face], lips_envelopes=lips)
    assert [(a.onscreen, a.evidence) for a in out] == [(True, "split voice")] * 2 + [(False, "")]
    assert not any(a.onscreen for a in decide(level, scores, 1, moving=[True]))
    alone = sync_matrix(levels[[0, 2]], env_t, [face], lips_envelopes=lips[[0, 2]])
    assert split_voice_score(*alone, lips[[0, 2]], env_t, face) is None
