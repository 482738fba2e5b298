"""Writing a clip's results: stems, remuxed videos and ``manifest.json``, all or nothing.

The clip folder is written whole into a hidden temporary folder next to it and swapped in
only when every file is done: a failed input leaves nothing behind, and an existing folder is
replaced as a whole (no stale stems from an earlier run survive). Stems are written block by
block as :mod:`avsplit.apply` renders them, so memory does not grow with the duration.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf

from avsplit import media
from avsplit.errors import AvsplitError, MediaError
from avsplit.results import Result, Stem


class LevelMeter:
    """Frame levels of a signal fed block by block, for :func:`ranges_from_levels`.

    Args:
        rate: Hz; hop_s: frame length in seconds (50 ms).
    """

    def __init__(self, rate: int, hop_s: float = 0.05):
        self.hop = max(1, int(hop_s * rate))
        self.hop_s = hop_s
        self._rest = np.zeros(0, np.float64)
        self._db: list[np.ndarray] = []
        self.energy = 0.0

    def add(self, audio: np.ndarray) -> None:
        """Feed ``[channels, n]`` (or ``[n]``) float32."""
        mono = audio.mean(axis=0) if audio.ndim == 2 else audio
        self.energy += float((audio.astype(np.float64) ** 2).sum())
        x = np.concatenate([self._rest, mono.astype(np.float64)])
        n = len(x) // self.hop
        if n:
            frames = x[: n * self.hop].reshape(n, self.hop)
            self._db.append(10 * np.log10((frames ** 2).mean(axis=1) + 1e-12))
        self._rest = x[n * self.hop:]

    def levels(self) -> np.ndarray:
        """``[frames]`` dB of each complete frame."""
        return np.concatenate(self._db) if self._db else np.zeros(0)


def ranges_from_levels(db: np.ndarray, hop_s: float = 0.05, floor_db: float = -40.0,
                       min_gap_s: float = 0.3, min_len_s: float = 0.2) -> list[list[float]]:
    """Time ranges where frames are active (within ``floor_db`` of the loudest frame and above
    -70 dBFS); gaps shorter than ``min_gap_s`` merged, ranges shorter than ``min_len_s``
    dropped; ``[[start_s, end_s], ...]`` rounded to milliseconds."""
    if len(db) == 0:
        return []
    active = (db > db.max() + floor_db) & (db > -70)
    ranges: list[list[float]] = []
    for i in np.flatnonzero(active):
        start, end = i * hop_s, (i + 1) * hop_s
        if ranges and start - ranges[-1][1] < min_gap_s:
            ranges[-1][1] = end
        else:
            ranges.append([start, end])
    return [[round(s, 3), round(e, 3)] for s, e in ranges if e - s >= min_len_s]


DEFAULT_TEMPLATE = "{stem}/{source}.{ext}"
TEMPLATE_FIELDS = ("stem", "source", "ext", "mode", "parent")


def safe_component(name: str, fallback: str = "clip") -> str:
    """``name`` made safe as one path component inside the output folder.

    Path separators (``/``, ``\\``) and control characters become ``_``; leading dots are
    dropped, so ``..``, ``.`` and hidden names cannot climb out of ``-o`` or hide; an empty
    result becomes ``fallback``. Spaces, unicode and a leading ``-`` are kept (the outputs
    are always written under ``-o``, never passed bare to a program).
    """
    s = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in str(name))
    s = s.lstrip(".").strip()
    return s or fallback


def check_template(template: str) -> None:
    """Check a ``--filename`` template.

    Fields: ``{stem}`` (the input's name without extension, made safe), ``{source}`` (the
    stem: ``onscreen``, ``speaker-0``, ``violin``, and ``manifest``), ``{ext}`` (``wav``,
    ``flac``, ``mp4``, ``json``), ``{mode}``, ``{parent}`` (the input's folder below the
    folder given on the command line, for ``--recursive``). ``{source}`` and ``{ext}`` are
    required so that no two outputs share a name.

    Raises:
        ValueError: an unknown field, a format spec, no ``{source}``/``{ext}``, an absolute
            path or a ``..`` component (one line, for a usage error).
    """
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"--filename {template!r} is not a valid template ({e})") from None
    names = set()
    for _, fname, spec, conv in parsed:
        if fname is None:
            continue
        if fname not in TEMPLATE_FIELDS or spec or conv:
            raise ValueError(f"--filename {template!r}: unknown field {{{fname}}}; use "
                             + ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS))
        names.add(fname)
    if not {"source", "ext"} <= names:
        raise ValueError(f"--filename {template!r} must contain {{source}} and {{ext}} "
                         "(e.g. {stem}/{source}.{ext}), or outputs would overwrite each other")
    literal = template.replace("\\", "/")
    parts = [p for p in literal.split("/")]
    if literal.startswith("/") or re.match(r"^[A-Za-z]:", literal) or ".." in parts:
        raise ValueError(f"--filename {template!r} must be a relative path inside -o "
                         "(no leading /, no ..)")


class OutputLayout:
    """Where one clip's outputs go: ``OUTDIR`` / the ``--filename`` template rendered.

    Args:
        outdir: the run's output folder (``-o``).
        stem: the clip's name (made safe with :func:`safe_component`).
        template: a checked ``--filename`` template (:func:`check_template`).
        mode: the separation mode; parent: the input's sub-folder (``a/b``) for ``{parent}``.

    Every path it gives lies inside ``outdir``: each rendered component is made safe, so no
    input name can write outside it.
    """

    def __init__(self, outdir: Path, stem: str, template: str = DEFAULT_TEMPLATE,
                 mode: str = "", parent: str = ""):
        self.outdir = Path(outdir)
        self.stem = safe_component(stem)
        self.template = template
        self.mode = mode
        self.parent = "/".join(safe_component(p, "_") for p in Path(parent).parts
                               if p not in ("", "."))

    def path(self, source: str, ext: str) -> Path:
        """The output path of stem ``source`` with extension ``ext``."""
        rel = self.template.format(stem=self.stem, source=safe_component(source, "stem"),
                                   ext=ext, mode=self.mode, parent=self.parent)
        parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
        parts = [safe_component(p, "_") for p in parts]  # a field value of ".." cannot climb
        return self.outdir.joinpath(*parts) if parts else self.outdir / "clip"

    @property
    def manifest(self) -> Path:
        """``manifest.json``'s path (the template with ``source=manifest``, ``ext=json``)."""
        return self.path("manifest", "json")

    @property
    def folder(self) -> Path:
        """The folder that holds the manifest (the clip folder in the default layout)."""
        return self.manifest.parent

    @property
    def own_folder(self) -> bool:
        """Whether the clip's outputs are exactly the files of a folder of its own
        (``.../{stem}.../{source}.{ext}``, as the default), which is then swapped in whole."""
        head, _, tail = self.template.replace("\\", "/").rpartition("/")
        return tail == "{source}.{ext}" and "{stem}" in head


def assign_layouts(paths: list[Path], outdir: Path, template: str = DEFAULT_TEMPLATE,
                   mode: str = "", parents: list[str] | None = None) -> list[OutputLayout]:
    """One :class:`OutputLayout` per input; a second input whose manifest would land on an
    earlier one's gets the stem ``clip-2`` (then ``clip-3``, ...)."""
    taken: set[Path] = set()
    out = []
    for i, p in enumerate(paths):
        stem = safe_component(Path(p).stem)
        parent = parents[i] if parents else ""
        layout, k = OutputLayout(outdir, stem, template, mode, parent), 1
        while layout.manifest in taken:
            k += 1
            layout = OutputLayout(outdir, f"{stem}-{k}", template, mode, parent)
        taken.add(layout.manifest)
        out.append(layout)
    return out

def write_text_atomic(path: Path | str, text: str, what: str, hint: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a hidden temporary file renamed into place.

    Raises:
        AvsplitError: it cannot be written (``cannot write <what> to <path> (<reason>); <hint>``;
            nothing is left behind).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:
        raise AvsplitError(f"cannot write {what} to {path} ({e.strerror}); {hint}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path



def folder_name(path: Path, taken: set[str]) -> str:
    """The clip folder name of ``path`` in a run: its stem made safe, or ``stem-2``,
    ``stem-3``, ... when an earlier input of the same run already took it (``taken`` is
    updated)."""
    stem = safe_component(Path(path).stem)
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


def manifest_complete(manifest: Path) -> bool:
    """Whether ``manifest`` is a finished run's: it parses and every file it lists exists."""
    try:
        data = json.loads(Path(manifest).read_text())
        files = [Path(manifest).parent / f["file"] for f in data["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(f.is_file() for f in files)


def remove_stale_partials(outdir: Path) -> None:
    """Remove temporary folders (``.NAME.partial-PID``) that a killed run left in ``outdir``
    (their process is gone), so that a rerun does not trip over them."""
    try:
        entries = list(Path(outdir).iterdir())
    except OSError:
        return
    for e in entries:
        m = re.fullmatch(r"\..*\.(?:partial|old)-(\d+)", e.name)
        if not m or not e.is_dir():
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue  # still running (another avsplit writing there)
        except ProcessLookupError:
            shutil.rmtree(e, ignore_errors=True)
        except OSError:
            continue


def write_error(exc: BaseException, where: Path) -> MediaError:
    """A one-line :class:`MediaError` for a failed write (full disk, read-only folder, ...)."""
    text = str(exc)
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "no space left" in text.lower():
        return MediaError(f"cannot write {where}: no space left on device; free some space "
                          "or choose another -o")
    if _nearly_full(where):  # libsndfile says only "System error" when the disk fills
        return MediaError(f"cannot write {where}: no space left on device; free some space "
                          "or choose another -o")
    if isinstance(exc, MediaError):
        return exc
    reason = getattr(exc, "strerror", None) or (text.strip().splitlines() or [type(exc).__name__])[-1]
    if code in (errno.EACCES, errno.EROFS, errno.EPERM):
        reason = f"{reason}; choose a folder you can write to with -o"
    return MediaError(f"cannot write {where}: {reason}")


def _nearly_full(where: Path, margin: int = 1 << 20) -> bool:
    """Whether the file system of ``where`` (or of its nearest existing parent) has less than
    ``margin`` bytes free."""
    p = Path(where)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < margin
    except OSError:
        return False


class ClipWriter:
    """Writes one clip's outputs and puts them in place only when all are done.

    Use as a context manager around the writing: files go to the hidden temporary folder
    ``OUTDIR/.<stem>.partial-<pid>/``; :meth:`commit` moves each file to its place in the
    :class:`OutputLayout` and writes ``manifest.json`` last (a clip counts as done only when
    its manifest is there); leaving the block without a commit (an exception, Ctrl-C,
    SIGTERM) removes the temporary folder and leaves any earlier outputs untouched. On commit
    the files of an earlier manifest at the same place are removed first (``--overwrite``),
    so no stale stem survives.

    Args:
        layout: where the clip's outputs go (:class:`OutputLayout`).
        fmt: ``"wav"`` (32-bit float) or ``"flac"`` (24-bit, clipped to [-1, 1]).

    Raises:
        MediaError: the output folder cannot be created or written (one line).
    """

    def __init__(self, layout: OutputLayout, fmt: str = "wav"):
        if fmt not in media.AUDIO_FORMATS:
            raise MediaError(f"unknown audio format {fmt!r}; use 'wav' or 'flac'.")
        self.layout = layout
        self.outdir = self.layout.outdir
        self.tmp = self.outdir / f".{self.layout.stem}.partial-{os.getpid()}"
        self.fmt = fmt
        self.committed = False

    def __enter__(self) -> "ClipWriter":
        try:
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir(parents=True)
        except OSError as e:
            raise write_error(e, self.outdir) from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def write_stems(self, stems: list[Stem], blocks: Iterable[tuple[int, np.ndarray, np.ndarray]],
                    rate: int, channels: int) -> None:
        """Write the stems' audio files from rendered blocks.

        Args:
            stems: ``G + 1`` stems; the first ``G`` get the rendered blocks, the last one the
                rest of the mixture (mixture minus the others, so the stems add up to it).
            blocks: ``(start, mixture [C, n], stems [G, C, n])`` as
                :func:`avsplit.apply.render_blocks` yields.

        Sets each stem's ``time_ranges``, ``energy_share`` and audio file name.
        """
        major, subtype = media.AUDIO_FORMATS[self.fmt]
        files: list[sf.SoundFile] = []
        meters = [LevelMeter(rate) for _ in stems]
        mix_meter = LevelMeter(rate)
        try:
            for st in stems:
                files.append(sf.SoundFile(self.tmp / f"{st.name}.{self.fmt}", "w", rate, channels,
                                          subtype=subtype, format=major))
            for _, mix, rendered in blocks:
                rest = mix - rendered.sum(axis=0)
                for f, m, x in zip(files, meters, [*rendered, rest]):
                    f.write((np.clip(x, -1, 1) if self.fmt == "flac" else x).T.astype(np.float32))
                    m.add(x)
                mix_meter.add(mix)
            for f in files:
                f.close()
        except (OSError, RuntimeError) as e:  # soundfile: LibsndfileError is a RuntimeError
            raise write_error(e, self.layout.folder) from None
        finally:
            for f in files:
                if not f.closed:
                    try:
                        f.close()
                    except (OSError, RuntimeError):
                        pass
        for st, m in zip(stems, meters):
            st.files = [f"{st.name}.{self.fmt}"]
            st.time_ranges = ranges_from_levels(m.levels())
            st.energy_share = m.energy / max(mix_meter.energy, 1e-12)

    def remux(self, stems: list[Stem], video_from: Path, video_stream_index: int) -> None:
        """Add ``<stem>.mp4`` per stem: ``video_from``'s video stream with the stem's audio."""
        for st in stems:
            video = self.tmp / f"{st.name}.mp4"
            try:
                media.remux(video_from, self.tmp / st.files[0], video, video_stream_index)
            except (OSError, MediaError) as e:
                raise write_error(e, self.layout.folder) from None
            st.files.append(video.name)

    def commit(self, result: Result) -> Path:
        """Move the files into place, write ``manifest.json`` last; returns its path.

        The files an earlier manifest at the same place lists are removed first (never a
        path outside ``-o``). ``result``'s stems get their final file names (relative to the
        manifest's folder) and ``result.layout`` is set.

        Raises:
            MediaError: a file could not be moved or written (one line); whatever this
                commit had already moved is removed again.
        """
        layout = self.layout
        manifest = layout.manifest
        if layout.own_folder:
            return self._swap_folder(result)
        moved: list[Path] = []
        try:
            _remove_listed(manifest, self.outdir)
            for st in result.stems:
                final_names = []
                for name in st.files:
                    source, _, ext = name.rpartition(".")
                    target = layout.path(source, ext)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(self.tmp / name, target)
                    moved.append(target)
                    final_names.append(os.path.relpath(target, manifest.parent))
                st.files = final_names
            for extra in sorted(self.tmp.iterdir()):  # e.g. a report the mode added
                if extra.is_file():
                    source, _, ext = extra.name.rpartition(".")
                    target = layout.path(source, ext)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(extra, target)
                    moved.append(target)
            result.layout = layout
            text = json.dumps(result.manifest(), indent=2, default=_jsonable) + "\n"
            partial = manifest.with_name(f".{manifest.name}.partial-{os.getpid()}")
            partial.write_text(text)
            os.replace(partial, manifest)
        except OSError as e:
            for m in moved:
                m.unlink(missing_ok=True)
            raise write_error(e, layout.folder) from None
        self.committed = True
        shutil.rmtree(self.tmp, ignore_errors=True)
        return manifest


    def _swap_folder(self, result: Result) -> Path:
        """Commit for a folder of its own: the temporary folder replaces it whole."""
        final = self.layout.folder
        old = None
        try:
            result.layout = self.layout
            (self.tmp / "manifest.json").write_text(
                json.dumps(result.manifest(), indent=2, default=_jsonable) + "\n")
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                old = final.parent / f".{final.name}.old-{os.getpid()}"
                if old.exists():
                    shutil.rmtree(old)
                os.replace(final, old)
            os.replace(self.tmp, final)
        except OSError as e:
            if old is not None and not final.exists():
                os.replace(old, final)
            raise write_error(e, final) from None
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return final / "manifest.json"


def _remove_listed(manifest: Path, outdir: Path) -> None:
    """Remove ``manifest`` and the files it lists (only those inside ``outdir``)."""
    try:
        data = json.loads(manifest.read_text())
        listed = [manifest.parent / f["file"] for f in data.get("files", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = []
    root = Path(outdir).resolve()
    if manifest.exists():
        manifest.unlink()
    for f in listed:
        try:
            inside = f.resolve().is_relative_to(root)
        except OSError:
            continue
        if inside and f.is_file():
            f.unlink()


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
