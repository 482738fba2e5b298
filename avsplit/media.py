"""Media I/O: probe files, decode audio and video frames, write audio, mux and encode videos.

Conventions (see :mod:`avsplit.structures`):

* audio is ``[channels, samples]`` float32, nominally in ``[-1, 1]``, with its sample rate in Hz;
* video frames are ``[H, W, 3]`` uint8 RGB with their real presentation time in seconds,
  measured from the container start, so ``t = 0`` is audio sample 0;
* every problem with an input or output file raises :class:`~avsplit.errors.MediaError` with a
  one-sentence message; no raw ffmpeg/PyAV exception escapes for bad input.

Probing and frame decoding use PyAV in-process (there may be no ``ffprobe``); audio decoding,
muxing and encoding run the ``ffmpeg`` binary (:func:`ffmpeg_exe`), like whisper's ``audio.py``.
Files are written atomically: to a hidden temporary file in the same folder, then renamed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
import soundfile as sf

from .errors import MediaError
from .structures import AudioStreamInfo, MediaInfo, VideoStreamInfo

PathLike = str | os.PathLike

AUDIO_FORMATS = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}


@functools.lru_cache(maxsize=None)
def ffmpeg_exe() -> str:
    """Path of the ``ffmpeg`` binary: the one on ``PATH``, else imageio-ffmpeg's static build."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ff(path: PathLike) -> str:
    """A path as an ffmpeg URL that is never read as an option or a protocol (``a:b.mp4``)."""
    return "file:" + os.fspath(path)


def _last_line(stderr: bytes | str) -> str:
    """The last non-empty line of ffmpeg's stderr, without its ``[muxer @ 0x...]`` prefix."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", errors="replace")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return "ffmpeg gave no message"
    line = lines[-1]
    if line.startswith("[") and "] " in line:
        line = line.split("] ", 1)[1]
    return line.rstrip(".")


def _run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *args]
    return subprocess.run(cmd, capture_output=True)


def _open(path: PathLike) -> av.container.InputContainer:
    """``av.open`` with the module's errors: missing file, or not readable media."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file; check the path.")
    if not path.is_file():
        raise MediaError(f"{path} is not a media file ffmpeg can read (it is a folder).")
    try:
        return av.open(_ff(path), mode="r")
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise MediaError(f"{path} is not a media file ffmpeg can read ({e.__class__.__name__}); "
                         "give a video or audio file.") from None


def _is_picture(stream: av.stream.Stream) -> bool:
    """Whether a video stream is an attached picture (cover art), not real video."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    for s in container.streams.video:
        if not _is_picture(s):
            return s
    return None


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def probe(path: PathLike) -> MediaInfo:
    """Describe a media file (container, audio streams, first real video stream).

    Args:
        path: a file any ffmpeg demuxer reads.

    Returns:
        :class:`MediaInfo`; ``duration`` in seconds from the container, else the longest stream,
        else 0.0. Attached pictures (cover art) are not reported as video.

    Raises:
        MediaError: the file does not exist, or is not media ffmpeg can read (no audio or
            video stream).
    """
    with open_container(path) as c:
        return describe(c, Path(path))


def open_container(path: PathLike) -> av.container.InputContainer:
    """Open a media file with PyAV (one open of the file; close it, or use ``with``).

    Raises:
        MediaError: the file does not exist or is not media.
    """
    return _open(path)


def describe(c: av.container.InputContainer, path: Path) -> MediaInfo:
    """:class:`MediaInfo` of an open container (see :func:`probe`; same errors)."""
    path = Path(path)
    audio = []
    for i, s in enumerate(c.streams.audio):
        cc = s.codec_context
        audio.append(AudioStreamInfo(index=i, sample_rate=int(cc.sample_rate or 0),
                                     channels=int(cc.channels or 0), codec=cc.name,
                                     duration=_seconds(s.duration, s.time_base)))
    video = None
    vs = _video_stream(c)
    if vs is not None:
        cc = vs.codec_context
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        video = VideoStreamInfo(width=int(cc.width), height=int(cc.height),
                                fps=float(rate) if rate else 0.0, codec=cc.name,
                                duration=_seconds(vs.duration, vs.time_base),
                                frames=int(vs.frames) or None, index=int(vs.index))
    if not audio and video is None:
        raise MediaError(f"{path} is not a media file ffmpeg can read (no audio or video "
                         "stream); give a video or audio file.")
    duration = c.duration / av.time_base if c.duration else None
    if not duration:
        streams = [a.duration for a in audio] + [video.duration if video else None]
        duration = max((d for d in streams if d), default=0.0)
    return MediaInfo(path=path, duration=float(duration), format=c.format.name,
                     audio=audio, video=video)


def _audio_stream(path: PathLike, info: MediaInfo, stream: int) -> tuple[int, int]:
    """``(channels, native rate)`` of audio stream ``stream``; MediaError when there is none."""
    if not info.audio:
        raise MediaError(f"{path} has no audio stream; give a file with sound.")
    if not 0 <= stream < len(info.audio):
        n = len(info.audio)
        raise MediaError(f"{path} has {n} audio stream{'s' if n != 1 else ''}, so audio stream "
                         f"{stream} does not exist; pick one from 0 to {n - 1}.")
    a = info.audio[stream]
    return a.channels or 2, int(a.sample_rate)


def _decode_f32(path: PathLike, stream: int, channels: int, rate: int, target: str
                ) -> subprocess.CompletedProcess:
    """Decode audio stream ``stream`` to raw interleaved float32 at ``rate`` into ``target``
    (``"-"``: stdout). Raises MediaError with ffmpeg's last line when it fails."""
    out = _run_ffmpeg(["-y", "-i", _ff(path), "-map", f"0:a:{stream}", "-vn", "-sn", "-dn",
                       "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels),
                       "-ar", str(rate), target])
    if out.returncode != 0:
        raise MediaError(f"ffmpeg could not decode the audio of {path}: {_last_line(out.stderr)}.")
    return out


def load_audio(path: PathLike, stream: int = 0, sample_rate: int | None = None,
               info: MediaInfo | None = None) -> tuple[np.ndarray, int]:
    """Decode one audio stream with ffmpeg (whisper-style, raw float32 on stdout).

    Args:
        path: any media file with audio.
        stream: which audio stream, 0 = the first audio stream.
        sample_rate: resample to this rate (Hz) in ffmpeg; ``None`` keeps the native rate.
        info: the file's :func:`probe` result, if already known (saves a probe).

    Returns:
        ``(audio, rate)``: ``[channels, samples]`` float32 at the stream's native channel count,
        and the rate in Hz. AAC priming is removed by ffmpeg (mp4 edit lists), so the length is
        close to ``duration * rate``.

    Raises:
        MediaError: missing file, not media, no audio stream, ``stream`` out of range, or
            ffmpeg failed (its last stderr line is in the message).
    """
    info = info if info is not None else probe(path)
    channels, native = _audio_stream(path, info, stream)
    rate = int(sample_rate or native)
    if rate <= 0:
        raise MediaError(f"{path}: audio stream {stream} has no known sample rate; "
                         "give a sample rate to resample to.")
    out = _decode_f32(path, stream, channels, rate, "-")
    samples = np.frombuffer(out.stdout, np.float32)
    samples = samples[: len(samples) // channels * channels]
    return samples.reshape(-1, channels).T.copy(), rate


def decode_audio_file(path: PathLike, info: MediaInfo, stream: int, out_file: Path) -> int:
    """Decode one audio stream to a raw interleaved float32 file (one ffmpeg run, one open of
    ``path``), so that long inputs can be read back in blocks instead of held in memory.

    Returns:
        The number of samples per channel written (native rate and channel count of the
        stream, as :func:`load_audio`).

    Raises:
        MediaError: as :func:`load_audio`.
    """
    channels, rate = _audio_stream(path, info, stream)
    if rate <= 0:
        raise MediaError(f"{path}: audio stream {stream} has no known sample rate.")
    _decode_f32(path, stream, channels, rate, _ff(out_file))
    return Path(out_file).stat().st_size // (4 * channels)


def _resize(img: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = img.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def iter_frames(path: PathLike, max_side: int | None = 640,
                fps: float | None = None,
                container: av.container.InputContainer | None = None
                ) -> Iterator[tuple[float, np.ndarray]]:
    """Decode the first video stream frame by frame.

    Args:
        path: a video file.
        max_side: downscale (INTER_AREA, aspect kept) so the longer side is at most this many
            pixels; ``None`` keeps the full size. Never upscales.
        fps: if given, yield at most this many frames per second: a frame is kept when its time
            is at or after the next due time, which then moves on by ``1 / fps``.
        container: an already open container of ``path`` to decode from (it is rewound to the
            start and left open), so that a clip is opened once. Where the rewind lands after
            the first frame (MPEG program streams seek to a later key frame), the file is
            opened afresh and decoded from its first packet.

    Yields:
        ``(t, frame)``: ``t`` the frame's real presentation time in seconds (float) minus the
        container start time, so audio sample 0 is ``t = 0`` (variable frame rate is honoured;
        the nominal fps is never assumed); ``frame`` ``[H, W, 3]`` uint8 RGB.

    Raises:
        MediaError: missing file, not media, no video stream, or the video cannot be decoded.
    """
    if container is not None:
        try:
            container.seek(0)
        except (av.FFmpegError, OSError):
            # cannot rewind (e.g. an FLV without a seek index): decoding on from where the
            # probe stopped would start without a key frame, so open the file afresh
            container = None
    if container is not None:
        frames = _decode_frames(container, path, max_side, fps, own=False)
        first = next(frames, None)
        if first is not None and first[0] <= 1.5 / _nominal_rate(_video_stream(container)):
            yield first
            yield from frames
            return
        # the rewind landed after the start (an MPEG program stream seeks to a later key
        # frame: the first 0.48 s of a GRID .mpg were lost), or the video starts late: decode
        # a fresh open from the first packet, which needs no seek
        frames.close()
    with _open(path) as fresh:
        yield from _decode_frames(fresh, path, max_side, fps, own=True)


def _nominal_rate(vs) -> float:
    """A video stream's nominal frame rate (frames per second; 25 when it gives none)."""
    return float(vs.average_rate or vs.guessed_rate or 25)


def _decode_frames(container: av.container.InputContainer, path: PathLike,
                   max_side: int | None, fps: float | None, own: bool
                   ) -> Iterator[tuple[float, np.ndarray]]:
    """The frames of :func:`iter_frames` from ``container`` as it stands (no rewind)."""
    vs = _video_stream(container)
    if vs is None:
        raise MediaError(f"{path} has no video stream; give a video file.")
    if own:  # a reused container's codec may already be open (its threading is set)
        vs.thread_type = "AUTO"
    start = container.start_time / av.time_base if container.start_time is not None else 0.0
    rate = _nominal_rate(vs)
    step = 1.0 / fps if fps else 0.0
    due = None
    last = None
    try:
        for frame in container.decode(vs):
            t = frame.time
            if t is None:  # no timestamp: one nominal frame after the previous one
                t = (last + 1.0 / rate) if last is not None else 0.0
            else:
                t -= start
            last = t
            if step:
                if due is not None and t < due - 1e-6:
                    continue
                due = (due if due is not None else t) + step
                if due <= t:  # after a gap, restart the schedule at this frame
                    due = t + step
            yield float(t), _resize(frame.to_ndarray(format="rgb24"), max_side)
    except av.FFmpegError as e:
        if last is not None and isinstance(e, (av.InvalidDataError, av.EOFError)):
            return  # a truncated or damaged tail: the frames up to it are the video
        raise MediaError(f"the video of {path} cannot be decoded ({e}); "
                         "re-encode the file or give another.") from None


def load_frames(path: PathLike, max_side: int | None = 640,
                fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All frames of :func:`iter_frames` at once.

    Returns:
        ``(frames, timestamps)``: ``[T, H, W, 3]`` uint8 RGB and ``[T]`` float64 seconds
        (``[0, 0, 0, 3]`` and ``[0]`` when the stream has no frames).

    Raises:
        MediaError: as :func:`iter_frames`.
    """
    times, frames = [], []
    for t, f in iter_frames(path, max_side=max_side, fps=fps):
        times.append(t)
        frames.append(f)
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.float64)
    return np.stack(frames), np.asarray(times, np.float64)


def _temp_name(path: Path) -> Path:
    """A hidden, unique name beside ``path`` that keeps its extension (ffmpeg picks the muxer)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


@contextlib.contextmanager
def _atomic(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, else delete it."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_audio(path: PathLike, audio: np.ndarray, sample_rate: int,
                format: str = "wav") -> Path:
    """Write audio atomically (no partial file is ever left at ``path``).

    Args:
        path: output file (its folder must exist).
        audio: ``[channels, samples]`` float (``[samples]`` is taken as mono).
        sample_rate: Hz.
        format: ``"wav"`` (32-bit float: nothing clips) or ``"flac"`` (24-bit PCM, clipped to
            ``[-1, 1]``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        MediaError: unknown format, or the file cannot be written.
    """
    path = Path(path)
    if format not in AUDIO_FORMATS:
        raise MediaError(f"unknown audio format {format!r}; use 'wav' or 'flac'.")
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"audio must be [channels, samples], got shape {x.shape}")
    if format == "flac":
        x = np.clip(x, -1.0, 1.0)
    major, subtype = AUDIO_FORMATS[format]
    try:
        with _atomic(path) as tmp:
            sf.write(tmp, x.T, int(sample_rate), format=major, subtype=subtype)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        reason = getattr(e, "error_string", None) or getattr(e, "strerror", None) or str(e)
        raise MediaError(f"could not write {path} ({reason.rstrip('.')}); "
                         "check the folder, the channel count and the sample rate.") from None
    return path


def remux(video_path: PathLike, audio_path: PathLike, out_path: PathLike,
          video_stream_index: int | None = None) -> Path:
    """Write a copy of a video with new audio (atomically).

    The output has the original video stream copied untouched and the first audio stream of
    ``audio_path`` as its only audio track (AAC 192 kb/s), ``+faststart``, no ``-shortest``
    (the longer of the two sets the duration). If the video codec cannot go into the output
    container (e.g. FLV/Sorenson or VP6 into mp4), the video is re-encoded with libx264
    (veryfast, CRF 20, yuv420p). ``video_stream_index``: the video stream's container index
    when a probe already found it (then neither input is opened again before ffmpeg runs).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        MediaError: an input is missing or lacks video/audio, or ffmpeg failed both ways.
    """
    out_path = Path(out_path)
    vinfo_stream = video_stream_index
    if vinfo_stream is None:  # not known from an earlier probe: look (and check the audio)
        with _open(video_path) as c:
            vs = _video_stream(c)
            if vs is not None:
                vinfo_stream = vs.index
        if vinfo_stream is None:
            raise MediaError(f"{video_path} has no video stream; give a video file.")
        if not probe(audio_path).audio:
            raise MediaError(f"{audio_path} has no audio stream; give a file with sound.")
    head = ["-y", "-i", _ff(video_path), "-i", _ff(audio_path),
            "-map", f"0:{vinfo_stream}", "-map", "1:a:0"]
    tail = ["-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart"]
    reencode = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
                "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
    try:
        with _atomic(out_path) as tmp:
            out = _run_ffmpeg([*head, "-c:v", "copy", *tail, _ff(tmp)])
            if out.returncode != 0:
                out = _run_ffmpeg([*head, *reencode, *tail, _ff(tmp)])
            if out.returncode != 0:
                raise MediaError(f"ffmpeg could not write {out_path}: {_last_line(out.stderr)}.")
    except OSError as e:
        raise MediaError(f"could not write {out_path}: {e}; check the folder.") from None
    return out_path


class VideoWriter:
    """Encode RGB frames to an H.264 video (e.g. an overlay), optionally with another file's audio.

    Usage::

        with VideoWriter("overlay.mp4", width, height, fps, audio_from="clip.mp4") as w:
            for frame in frames:
                w.write(frame)

    Frames are piped raw to ffmpeg (libx264, veryfast, yuv420p); odd sizes are padded by one
    black pixel to even ones (:attr:`size` is the output size). The first audio stream of
    ``audio_from`` is mapped in as AAC. The output appears at ``out_path`` only when
    encoding succeeds (written to a temporary file, then renamed); on an exception inside the
    ``with`` block ffmpeg is killed and the partial file removed.

    Raises:
        MediaError: ``audio_from`` is missing or has no audio, or ffmpeg fails.
        ValueError: a frame of the wrong shape or dtype.
    """

    def __init__(self, out_path: PathLike, width: int, height: int, fps: float,
                 audio_from: PathLike | None = None):
        self.path = Path(out_path)
        self.width, self.height = int(width), int(height)
        self.size = (self.width + self.width % 2, self.height + self.height % 2)
        self.frames = 0
        if self.width <= 0 or self.height <= 0 or not fps or fps <= 0:
            raise ValueError(f"bad video size {width}x{height} or fps {fps}")
        rate = Fraction(fps).limit_denominator(1001)
        audio = []
        if audio_from is not None:
            if not probe(audio_from).audio:
                raise MediaError(f"{audio_from} has no audio stream; give a file with sound.")
            audio = ["-i", _ff(audio_from)]
        self._tmp = _temp_name(self.path)
        cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
               "-r", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0", *audio,
               "-map", "0:v:0",
               *(["-map", "1:a:0", "-c:a", "aac", "-b:a", "192k"] if audio else []),
               "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", _ff(self._tmp)]
        self._err = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._err)
        except OSError as e:
            self._err.close()
            raise MediaError(f"could not start ffmpeg to write {self.path}: {e}.") from None

    def _stderr(self) -> str:
        self._err.seek(0)
        return _last_line(self._err.read())

    def write(self, frame: np.ndarray) -> None:
        """Append one ``[height, width, 3]`` uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be [{self.height}, {self.width}, 3] uint8, "
                             f"got {frame.shape} {frame.dtype}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, OSError, ValueError):
            self.abort()
            raise MediaError(f"ffmpeg stopped while writing {self.path}: "
                             f"{self._stderr()}.") from None
        self.frames += 1

    def close(self) -> Path:
        """Finish encoding and move the file into place; returns the output path."""
        if self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        rc = self._proc.wait()
        try:
            if rc != 0:
                msg = self._stderr()
                self._remove_tmp()
                raise MediaError(f"ffmpeg could not write {self.path}: {msg}.")
            if self.frames == 0:
                self._remove_tmp()
                raise MediaError(f"no frames were written to {self.path}.")
            try:
                os.replace(self._tmp, self.path)
            except OSError as e:
                self._remove_tmp()
                raise MediaError(f"could not write {self.path}: {e}.") from None
        finally:
            self._err.close()
        return self.path

    def abort(self) -> None:
        """Kill ffmpeg and delete the partial output."""
        if self._proc.poll() is None:
            self._proc.kill()
        if self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        self._proc.wait()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        with contextlib.suppress(OSError):
            self._tmp.unlink()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            with contextlib.suppress(OSError, ValueError):
                self._err.close()
            return
        self.close()
