"""Running a command over many inputs: find them, name their outputs, resume, run in workers.

Every command (``separate``, ``localize``, ``sync``) is a :class:`Task`: run-level checks
(:meth:`Task.prepare`, before any model loads), where an input's outputs go
(:meth:`Task.output_of`) and the work on one input (:meth:`Task.run`). :func:`run_batch`
finds the inputs (files, folders, globs; media found by probing), decides per input whether
it is to be done, skipped (``--skip-existing``) or refused (outputs already there), runs them
in this process, in ``--jobs N`` worker processes or as Ray tasks (``--executor ray``), each
worker holding one :class:`~avsplit.engine.Engine` whose models load once, and reports one
:class:`dict` per input (the ``--json`` line: ``path``, ``status`` done|skipped|failed,
``outputs``, ``error``, ``seconds``).

An input that fails never stops the others. Ctrl-C and SIGTERM stop the run: the clip being
written is removed (its writer's temporary folder), worker processes are stopped, and
:class:`Interrupted` reaches the caller.
"""

from __future__ import annotations

import glob
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from avsplit.errors import AvsplitError, MediaError
from avsplit.progress import NullProgress, Progress

# Containers that are meant to be media: such a file that does not probe is a failed input,
# any other file that does not probe is skipped as "not media".
MEDIA_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .flv .wmv .mpg .mpeg .ts .mts .m2ts .3gp .ogv .mxf .dv "
    ".wav .flac .mp3 .m4a .aac .ogg .oga .opus .wma .aif .aiff .caf .ac3 .amr".split())
GLOB_CHARS = frozenset("*?[")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run (``signum``: the signal)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_sigterm() -> None:
    """Make SIGTERM (``timeout``, job schedulers) raise :class:`Interrupted` like Ctrl-C, so that
    the same clean-up runs (temporary outputs removed, child processes stopped)."""
    def handler(signum, frame):
        raise Interrupted(signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use): leave it
        pass


@dataclass
class Input:
    """One input of a batch: ``path`` and ``parent``, its folder below the folder argument
    it was found in (``""`` for a file named directly)."""

    path: Path
    parent: str = ""


@dataclass
class Job:
    """One input to run: its index in the batch and where its outputs go (task-specific)."""

    index: int
    input: Input
    output: object = None


@dataclass
class Found:
    """What :func:`find_inputs` made of the arguments: ``inputs`` to run, ``skipped`` files
    that are not media (``(path, reason)``) and ``missing``: failed before running
    (``(path, reason)``)."""

    inputs: list[Input] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    missing: list[tuple[Path, str]] = field(default_factory=list)


def probe_error(path: Path) -> str | None:
    """Why ffmpeg cannot read ``path`` as media with an audio or video stream (a probe), or
    ``None`` when it can."""
    from avsplit import media

    try:
        info = media.probe(path)
    except MediaError as e:
        return str(e)
    if not (info.has_audio or info.has_video):
        return f"{path} has neither audio nor video; give a video or audio file"
    return None


def _walk(folder: Path, recursive: bool, exclude: list[Path]) -> Iterator[Path]:
    """Files of ``folder`` (sorted; hidden ones and the ``exclude`` trees left out)."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise MediaError(f"cannot list {folder}: {e.strerror}") from None
    for e in entries:
        if e.name.startswith(".") or any(_inside(e, x) for x in exclude):
            continue
        if e.is_dir():
            if recursive and not e.is_symlink():
                yield from _walk(e, recursive, exclude)
        elif e.is_file():
            yield e


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def find_inputs(args: Iterable[Path | str], recursive: bool = False,
                exclude: Iterable[Path] = ()) -> Found:
    """Expand the command line's INPUT arguments.

    Every file is probed first (before any model loads). A file named directly that does not
    probe fails with the reason; a folder gives its media files, found by probing
    (``--recursive``: also in sub-folders; hidden files and ``exclude``, the output folder,
    are left out): a file there that does not probe is skipped as not media, unless its
    extension says it should be media, in which case it fails; a glob (``*``, ``?``, ``[``; ``**`` with ``--recursive``) gives the files it
    matches, picked the same way. The same file given twice runs once.

    Returns:
        :class:`Found`; ``missing`` holds what the batch reports as failed: arguments that
        name nothing, folders without media, files that should be media but do not probe.
    """
    found = Found()
    seen: set[Path] = set()
    exclude = [Path(x) for x in exclude]

    def add(path: Path, parent: str, picked: bool) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        why = probe_error(path)  # before any model loads
        if why is None:
            found.inputs.append(Input(path, parent))
        elif picked and path.suffix.lower() not in MEDIA_SUFFIXES:
            found.skipped.append((path, "not a media file"))
        else:
            found.missing.append((path, why))

    for arg in args:
        path = Path(arg)
        text = str(arg)
        if path.is_dir():
            before = len(found.inputs)
            for f in _walk(path, recursive, exclude):
                add(f, str(f.parent.relative_to(path)), True)
            if len(found.inputs) == before:
                hint = "" if recursive else " (add --recursive to look in sub-folders)"
                found.missing.append((path, f"{path} is a folder without media files{hint}"))
        elif path.exists() or path.is_symlink():
            add(path, "", False)
        elif GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=recursive))
            files = [Path(m) for m in matches if Path(m).is_file()
                     and not any(_inside(Path(m), x) for x in exclude)]
            if not files:
                found.missing.append((path, f"no file matches {text}"))
            for f in files:
                add(f, "", True)
        else:  # checked now, before any model loads
            found.missing.append((path, f"{path}: no such file; check the path"))
    return found


class Task:
    """One command applied to one input at a time (picklable: it travels to workers).

    Subclasses set ``command`` and ``device`` and implement :meth:`run`; they may override
    :meth:`prepare` (run-level checks before any model loads), :meth:`assign` (where each
    input's outputs go) and :meth:`existing` (the finished outputs of a job, if any).
    """

    command = "task"
    device = "cpu"

    def prepare(self) -> None:
        """Run-level checks (output folder, weights file) before any input runs.

        Raises:
            AvsplitError: every input would fail the same way (one line).
        """

    def assign(self, inputs: list[Input]) -> list[Job]:
        """One :class:`Job` per input, with its output place."""
        return [Job(i, x) for i, x in enumerate(inputs)]

    def existing(self, job: Job) -> tuple[Path | None, bool]:
        """``(path, complete)`` of the job's outputs when some are already there, else
        ``(None, False)``."""
        return None, False

    def run(self, engine, job: Job, progress: Progress) -> dict:
        """Do the work on one input; returns the fields of its result line (``outputs``:
        the files written, plus command-specific fields).

        Raises:
            AvsplitError: the input cannot be done (one line).
        """
        raise NotImplementedError


def error_message(exc: BaseException, path: Path | str) -> str:
    """The one line a failed input reports: the error's own message for our errors (they say
    what to do), otherwise an internal error with the exception type; prefixed with the path
    unless the message already starts with it."""
    if isinstance(exc, AvsplitError):
        message = str(exc)
    elif isinstance(exc, MemoryError):
        message = "ran out of memory; close other programs or split the input"
    else:
        message = f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it"
    message = " ".join(message.split())
    return message if str(path) in message else f"{path}: {message}"


_LINE_KEYS = ("path", "input", "status", "ok", "outputs", "error", "seconds")


def _line(path: Path, status: str, seconds: float = 0.0, outputs: list[str] | None = None,
          error: str | None = None, **extra) -> dict:
    """The result line of one input (the ``--json`` object)."""
    return {"path": str(path), "input": str(path), "status": status, "ok": status != "failed",
            "outputs": list(outputs or []), "error": error, "seconds": round(seconds, 3),
            **extra}


def run_one(task: Task, engine, job: Job, progress: Progress, debug: bool = False) -> dict:
    """Run ``job`` and turn any error into a failed line (:class:`Interrupted` passes)."""
    t0 = time.perf_counter()
    try:
        fields = task.run(engine, job, progress)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # one input never stops the batch
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        partial = getattr(exc, "result", None)  # e.g. sync's refused measurement
        partial = {k: v for k, v in partial.items() if k not in _LINE_KEYS} \
            if isinstance(partial, dict) else {}
        return _line(job.input.path, "failed", time.perf_counter() - t0,
                     error=error_message(exc, job.input.path), **partial)
    outputs = fields.pop("outputs", [])
    return _line(job.input.path, "done", time.perf_counter() - t0, outputs, None, **fields)


# -- workers ------------------------------------------------------------------------------
_WORKER_ENGINE = None


def _worker_init(device: str) -> None:
    """A worker process: SIGTERM raises like Ctrl-C; the engine is made on first use."""
    raise_on_sigterm()
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _worker_engine(device: str):
    global _WORKER_ENGINE
    if _WORKER_ENGINE is None:
        from avsplit.engine import Engine

        _WORKER_ENGINE = Engine(device)
    return _WORKER_ENGINE


def worker_run(task: Task, job: Job, debug: bool = False) -> dict:
    """Run one job in a worker (process pool or Ray), with the worker's one engine."""
    t0 = time.perf_counter()
    try:
        engine = _worker_engine(task.device)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return _line(job.input.path, "failed", time.perf_counter() - t0,
                     error=error_message(exc, job.input.path))
    return run_one(task, engine, job, NullProgress(), debug)


def _run_local(task: Task, jobs: list[Job], emit: Callable[[Job, dict], None],
               progress_for: Callable[[Job], Progress], debug: bool) -> None:
    engine = None
    try:
        for job in jobs:
            if engine is None:
                from avsplit.engine import Engine

                t0 = time.perf_counter()
                try:
                    engine = Engine(task.device)
                except AvsplitError as exc:  # the device cannot be used: every input fails
                    message = " ".join(str(exc).split())
                    for j in jobs[jobs.index(job):]:
                        emit(j, _line(j.input.path, "failed", time.perf_counter() - t0,
                                      error=f"{j.input.path}: {message}"))
                    return
            emit(job, run_one(task, engine, job, progress_for(job), debug))
    finally:
        if engine is not None:
            engine.close()


def _run_pool(task: Task, jobs: list[Job], workers: int, emit: Callable[[Job, dict], None],
              tick: Callable[[], None], debug: bool) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # no fork of loaded models or native threads
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(task.device,))
    try:
        futures = {pool.submit(worker_run, task, job, debug): job for job in jobs}
        for fut in as_completed(futures):
            job = futures[fut]
            try:
                line = fut.result()
            except BrokenProcessPool:
                line = _line(job.input.path, "failed", error=f"{job.input.path}: its worker "
                             "process died (out of memory?); rerun it alone")
            emit(job, line)
            tick()
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _stop_pool(pool) -> None:
    """Cancel what has not started and stop the workers (SIGTERM: they clean up)."""
    procs = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGTERM)
            except OSError:
                pass
    deadline = time.monotonic() + 10
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def _run_ray(task: Task, jobs: list[Job], workers: int, address: str | None,
             emit: Callable[[Job, dict], None], tick: Callable[[], None], debug: bool) -> None:
    try:
        import ray
    except ImportError:
        raise AvsplitError("--executor ray needs Ray: pip install 'avsplit[ray]'") from None
    started = not ray.is_initialized()
    if started:
        import logging

        local = {} if address else {"object_store_memory": 256 << 20}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, ignore_reinit_error=True, **local)
        except Exception as exc:  # ConnectionError and Ray's own errors
            raise AvsplitError(f"cannot start or reach Ray{f' at {address}' if address else ''}"
                               f" ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    try:
        @ray.remote(num_cpus=1)
        class Worker:  # one actor per worker: its engine loads the models once
            def __init__(self):
                _worker_init(task.device)

            def run(self, job: Job) -> dict:
                return worker_run(task, job, debug)

        cpus = int(ray.cluster_resources().get("CPU", 1))  # more actors than CPUs would wait
        actors = [Worker.remote() for _ in range(max(1, min(workers, len(jobs), cpus)))]
        pending = {}
        queue = list(jobs)
        for a in actors:
            if queue:
                job = queue.pop(0)
                pending[a.run.remote(job)] = (a, job)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, job = pending.pop(done[0])
            try:
                line = ray.get(done[0])
            except Exception as exc:  # the actor died
                line = _line(job.input.path, "failed",
                             error=f"{job.input.path}: its Ray worker failed ({type(exc).__name__})")
            emit(job, line)
            tick()
            if queue:
                nxt = queue.pop(0)
                pending[actor.run.remote(nxt)] = (actor, nxt)
    finally:
        if started:
            ray.shutdown()


@dataclass
class BatchReport:
    """What a batch did: one line per input, in input order."""

    lines: list[dict]

    @property
    def counts(self) -> dict[str, int]:
        out = {"done": 0, "skipped": 0, "failed": 0}
        for line in self.lines:
            out[line["status"]] += 1
        return out

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.counts["failed"] else 0


def run_batch(task: Task, args: Iterable[Path | str], recursive: bool = False, jobs: int = 1,
              executor: str = "local", ray_address: str | None = None,
              skip_existing: bool = False, overwrite: bool = False, debug: bool = False,
              exclude: Iterable[Path] = (), on_line: Callable[[dict], None] = lambda line: None,
              progress_for: Callable[[Job], Progress] = lambda job: NullProgress(),
              overall: Callable[[int], Callable[[], None]] | None = None) -> BatchReport:
    """Run ``task`` over the inputs named by ``args``.

    Args:
        args: files, folders and globs (:func:`find_inputs`).
        jobs: worker processes (1: in this process, with per-stage progress).
        executor: ``"local"`` or ``"ray"`` (``ray_address``: an existing cluster; default a
            local one).
        skip_existing: an input whose outputs are complete is skipped (its manifest lists
            files that all exist); incomplete ones are redone. ``overwrite``: outputs that are
            there are replaced. Neither: an input whose outputs are there fails.
        on_line: called with each input's result line as soon as it is known.
        progress_for: the per-stage progress of a job run in this process.
        overall: ``overall(total)`` gives a tick called once per input finished in workers.

    Returns:
        :class:`BatchReport`: the skipped files and those that failed before running first,
        then the inputs in the order given.

    Raises:
        Interrupted: Ctrl-C or SIGTERM (the input in progress leaves nothing behind).
    """
    found = find_inputs(args, recursive, exclude)
    lines: dict[int, dict] = {}
    order: list[int] = []
    n = 0

    def emit(key: int, line: dict) -> None:
        lines[key] = line
        on_line(line)

    for path, reason in found.skipped:
        order.append(n)
        emit(n, _line(path, "skipped", error=reason))
        n += 1
    for path, reason in found.missing:
        order.append(n)
        emit(n, _line(path, "failed", error=reason))
        n += 1
    try:
        if found.inputs:
            task.prepare()
        assigned = task.assign(found.inputs)
    except AvsplitError as exc:  # every input would fail the same way
        message = " ".join(str(exc).split())
        for x in found.inputs:
            order.append(n)
            emit(n, _line(x.path, "failed", error=f"{x.path}: {message}"))
            n += 1
        return BatchReport([lines[k] for k in order])
    todo: list[Job] = []
    base = n
    for job in assigned:
        key = base + job.index
        order.append(key)
        where, complete = task.existing(job)
        if where is not None and skip_existing and complete:
            emit(key, _line(job.input.path, "skipped", error=None, reason="already done",
                            outputs=[str(where)]))
        elif where is not None and not (overwrite or skip_existing):
            emit(key, _line(job.input.path, "failed", error=(
                f"{job.input.path}: {where} already exists; pass --overwrite to replace it "
                "or --skip-existing to keep it")))
        else:
            todo.append(job)

    def emit_job(job: Job, line: dict) -> None:
        emit(base + job.index, line)

    if todo:
        pooled = executor == "ray" or (jobs > 1 and len(todo) > 1)
        tick = overall(len(todo)) if overall and pooled else (lambda: None)
        if executor == "ray":
            try:
                _run_ray(task, todo, jobs, ray_address, emit_job, tick, debug)
            except AvsplitError as exc:  # Ray missing or unreachable: nothing ran
                message = " ".join(str(exc).split())
                for job in todo:
                    if base + job.index not in lines:
                        emit_job(job, _line(job.input.path, "failed",
                                            error=f"{job.input.path}: {message}"))
        elif jobs > 1 and len(todo) > 1:
            _run_pool(task, todo, min(jobs, len(todo)), emit_job, tick, debug)
        else:
            _run_local(task, todo, emit_job, progress_for, debug)
    return BatchReport([lines[k] for k in order])
