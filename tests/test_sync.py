import numpy as np

from avsplit import media
from avsplit.sync import fix_offset


def test_fix_offset_moves_the_audio_and_keeps_the_video(tmp_path, make_media):
    clip = make_media(tmp_path / "clicks.mp4", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25",
                      "-f", "lavfi", "-i", "aevalsrc='if(lt(mod(t,1),0.02),sin(2*PI*1000*t),0)':s=44100",
                      "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")
    out = fix_offset(clip, 0.2, tmp_path / "fixed.mp4")  # audio 0.2 s late -> move it 0.2 s earlier
    before, rate = media.load_audio(clip)
    after, _ = media.load_audio(out)
    env_b = np.abs(before[0])
    env_a = np.abs(after[0])
    onset_b = np.flatnonzero(env_b[int(0.5 * rate):] > 0.1)[0] / rate + 0.5
    onset_a = np.flatnonzero(env_a[int(0.5 * rate):] > 0.1)[0] / rate + 0.5
    assert abs((onset_b - onset_a) - 0.2) < 0.03
    assert media.probe(out).video.codec == media.probe(clip).video.codec
    assert not list(tmp_path.glob(".*"))
