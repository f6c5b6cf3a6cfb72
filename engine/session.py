"""The engine session: one thread owns the models and runs every MLX op.

MLX streams belong to the thread that made them, and Textual's thread workers
come from a pool, so exactly one engine thread loads models and runs jobs taken
from a queue. Callers get a ``Job`` wrapping a ``concurrent.futures.Future``
(``job.result()`` for batch, ``await job`` for the TUI and the async API). Jobs
report typed ``ProgressEvent``s and check a cancel flag between layers, sweep
points and tokens.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import queue
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from engine.errors import Cancelled, LazarusError

T = TypeVar("T")
_ids = itertools.count(1)
_sessions: weakref.WeakSet[EngineSession] = weakref.WeakSet()


class EngineStopped(LazarusError):
    """The engine thread stopped under a job (a bug in lazarus); a new thread was started."""


@atexit.register
def close_all_sessions() -> None:
    """Cancel every job and join every engine thread before the interpreter finalises.

    Runs at exit (atexit), also after an uncaught exception or Ctrl-C. A thread still inside an
    MLX call when finalisation starts is ended by Python as soon as it asks for the GIL again
    (``pthread_exit``), and that forced unwind through MLX's C++ frames aborts the process
    ("terminate called without an active exception", exit 134). So the join waits for the
    running step, however long it takes: the job stops at its next cancel check. A Ctrl-C while
    waiting leaves at once with exit 130, skipping finalisation (the only safe way out while MLX
    still runs).
    """
    for session in list(_sessions):
        session.shutdown()


def leave_now(code: int) -> None:
    """Exit at once without interpreter finalisation (outputs are written atomically, so nothing is
    half-written): for a second Ctrl-C while an engine thread is inside one long MLX step."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _settle(future: Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
    """The one place a job's outcome is delivered. A future its waiter already cancelled (an
    awaited ``Job`` whose asyncio task was cancelled cancels it through ``asyncio.wrap_future``)
    or that is settled already keeps its state: nobody waits for this outcome any more."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _release_mlx_thread_state() -> None:
    """Drop what MLX keeps per thread for this thread (compiled-function cache, random key,
    streams) while it still holds the GIL.

    Those thread-locals hold Python objects (mlx-lm's activations are ``mx.compile``d), so their
    C++ destructors take the GIL when the OS thread ends, *after* ``Thread.join`` has returned.
    If the main thread is finalising by then, taking the GIL ends the thread with a forced
    unwind through a ``noexcept`` destructor: "terminate called without an active exception",
    SIGABRT, exit 134, at random (about one exit in three after a lens). Cleared here, nothing
    is left for those destructors to do.
    """
    mx = sys.modules.get("mlx.core")
    if mx is not None:
        mx.clear_streams()


def trim_malloc() -> None:
    """Give freed heap memory back to the system (glibc): a dropped model's smaller buffers sit in
    malloc's arenas otherwise, and RSS would keep them after every model switch."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to trim
            pass


@dataclass(frozen=True)
class ProgressEvent:
    job_id: int
    stage: str  # e.g. "load", "layer", "token", "sweep"
    done: int
    total: int
    message: str = ""
    payload: Any = None  # an optional partial result for live rendering


class Job(Generic[T]):
    def __init__(self, name: str) -> None:
        self.id = next(_ids)
        self.name = name
        self.future: Future[T] = Future()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check; a job still queued never starts."""
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def result(self, timeout: float | None = None) -> T:
        return self.future.result(timeout)

    def done(self) -> bool:
        return self.future.done()

    def __await__(self) -> Generator[Any, None, T]:
        return asyncio.wrap_future(self.future).__await__()


class JobContext:
    """What a job function sees: the session, cancellation, progress."""

    def __init__(self, session: EngineSession, job: Job[Any],
                 on_progress: Callable[[ProgressEvent], None] | None) -> None:
        self.session = session
        self.job = job
        self._on_progress = on_progress

    def cancelled(self) -> bool:
        return self.job.cancel_requested

    def check(self) -> None:
        if self.job.cancel_requested:
            raise Cancelled("cancelled")

    def progress(self, stage: str, done: int, total: int, message: str = "", payload: Any = None) -> None:
        if self._on_progress is not None:
            self._on_progress(ProgressEvent(self.job.id, stage, done, total, message, payload))

    def counter(self, stage: str, message: str = "") -> Callable[[int, int], None]:
        """``progress`` for one stage as a ``(done, total)`` callback, the form engine functions take."""
        return lambda done, total: self.progress(stage, done, total, message)

    def model(self, spec: str | None = None, dtype: str | None = None, make_current: bool = False) -> Any:
        """A loaded model (the session's current one by default), loading it if needed;
        ``make_current`` makes it the session's current model."""
        return self.session._get_model(spec, dtype, self, make_current)


KEEP_MODELS = 2  # models a session keeps loaded: the current one and the last other one used


class EngineSession:
    """Owns the engine thread, the job queue and the loaded models (the last ``KEEP_MODELS`` used)."""

    def __init__(self, model: str | None = None, dtype: str = "auto") -> None:
        self.default_spec = model
        self.default_dtype = dtype
        # the models this session holds, least recently used first; at most KEEP_MODELS (the current
        # one is never dropped), so switching models back and forth does not pile up weights
        self._models: OrderedDict[tuple[str | None, str], Any] = OrderedDict()
        self.current: Any = None
        self._queue: queue.Queue[tuple[Job[Any], Callable[[JobContext], Any], Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.engine_thread_id: int | None = None
        self._running: Job[Any] | None = None
        self._pending: list[Job[Any]] = []
        self._closing = False
        self._reported: threading.Thread | None = None  # the last thread whose death was recorded
        self.restarts = 0  # engine threads that died and were replaced
        self.last_death: str | None = None  # why the last one died
        # called with a one-line reason when an engine thread died (the TUI notifies; default: stderr)
        self.on_thread_death: Callable[[str], None] | None = None
        _sessions.add(self)

    # -- the thread --------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        """Start the engine thread; one found dead without having said so counts as a death."""
        reason = None
        with self._lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                return
            if thread is not None and not self._closing and thread is not self._reported:
                reason = f"{thread.name} ended unexpectedly"
                self._record_death(thread, reason)
            self._closing = False
            self._start_thread()
        if reason is not None:
            self._tell_death(reason)

    def _start_thread(self) -> None:
        name = "lazarus-engine" if not self.restarts else f"lazarus-engine-{self.restarts + 1}"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _record_death(self, thread: threading.Thread, reason: str) -> None:
        """Count an engine thread's death and fail the job it was running (with the lock held)."""
        self._reported = thread
        self.restarts += 1
        self.last_death = reason
        job, self._running = self._running, None
        if job is not None:
            _settle(job.future, exc=EngineStopped(f"the engine stopped during {job.name!r} ({reason}); "
                                                  "a new engine thread was started: run it again"))

    def _tell_death(self, reason: str) -> None:
        """``on_thread_death`` (the TUI's notification), or one line on stderr (batch, API)."""
        try:
            if self.on_thread_death is not None:
                self.on_thread_death(reason)
            else:
                sys.stderr.write(f"lazarus: the engine thread stopped ({reason}); started a new one\n")
        except Exception:  # noqa: BLE001, S110  (a failing notifier must not stop the engine)
            pass

    def ensure_running(self) -> None:
        """Replace an engine thread that died (saying so) once one has been started and not closed;
        a periodic check, so that jobs queued behind a dead thread do not wait for the next ``submit``."""
        if self._thread is not None and not self._closing:
            self._ensure_thread()

    def alive(self) -> bool:
        """Whether the engine thread runs (False before the first job and after ``close``)."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        try:
            import engine  # noqa: F401  (BLAS before mlx, on this thread's first import)

            self.engine_thread_id = threading.get_ident()
            while True:
                item = self._queue.get()
                if item is None:
                    if self._closing:
                        return
                    continue  # a stale stop request from a close that found no thread
                self._run_one(*item)
                item = None  # the finished job (and its result) is not held while the queue is empty
        except BaseException as exc:  # noqa: BLE001  (a bug in this loop: fail the job, start a new thread)
            reason = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._record_death(threading.current_thread(), reason)
                if not self._closing:
                    self._start_thread()
            self._tell_death(reason)
        finally:
            _release_mlx_thread_state()

    def _run_one(self, job: Job[Any], fn: Callable[[JobContext], Any], on_progress: Any) -> None:
        """Run one job; whatever it does (or its waiter did to its future), its outcome goes to its
        future through ``_settle``."""
        self._running = job
        try:
            runnable = not job.cancel_requested and job.future.set_running_or_notify_cancel()
        except RuntimeError:  # settled by someone else already: nothing to run it for
            runnable = False
        if not runnable:
            _settle(job.future, exc=Cancelled("cancelled before it started"))
        else:
            try:
                result = fn(JobContext(self, job, on_progress))
            except BaseException as exc:  # noqa: BLE001  (delivered to the caller, never lost on this thread)
                _settle(job.future, exc=exc)
            else:
                _settle(job.future, result)
        self._running = None
        with self._lock:  # a finished job's result belongs to its caller: the session lets it go
            self._pending = [j for j in self._pending if j is not job]

    def submit(self, fn: Callable[[JobContext], T], *, name: str = "job",
               on_progress: Callable[[ProgressEvent], None] | None = None) -> Job[T]:
        self._ensure_thread()
        job: Job[T] = Job(name)
        with self._lock:
            self._pending = [j for j in self._pending if not j.done()] + [job]
        self._queue.put((job, fn, on_progress))
        return job

    def run(self, fn: Callable[[JobContext], T], **kw: Any) -> T:
        """Submit and wait (the sync API)."""
        return self.submit(fn, **kw).result()

    def close(self, cancel: bool = False, timeout: float | None = 30.0) -> bool:
        """Stop the engine thread after the queued jobs (or cancel them first with ``cancel``).
        Returns whether the thread has ended; ``timeout=None`` waits as long as the running step
        takes (a job stops at its next cancel check). A later ``submit`` starts a new thread."""
        thread = self._thread
        if thread is None:
            return True
        if cancel:
            for job in [*self._pending, self._running]:
                if job is not None:
                    job.cancel()
        if not self._closing:
            self._closing = True
            self._queue.put(None)
        thread.join(timeout=timeout)
        if thread.is_alive():
            return False
        with self._lock:
            if self._thread is thread:
                self._thread = None
        return True

    def shutdown(self) -> None:
        """Cancel every job and wait for the engine thread to end, saying so on stderr when the running
        step takes over a second; Ctrl-C while waiting leaves at once (exit 130, see ``leave_now``)."""
        try:
            if not self.close(cancel=True, timeout=1.0):
                sys.stderr.write("lazarus: waiting for the engine to finish its current step "
                                 "(Ctrl-C to leave at once)\n")
                sys.stderr.flush()
                self.close(cancel=True, timeout=None)
        except KeyboardInterrupt:
            leave_now(130)

    # -- models ------------------------------------------------------------------------------
    def _get_model(self, spec: str | None, dtype: str | None, ctx: JobContext | None,
                   make_current: bool = False) -> Any:
        from engine.models import load

        if spec is None and dtype is None and self.current is not None:
            return self.current
        spec = spec if spec is not None else self.default_spec
        dtype = dtype or self.default_dtype
        key = (spec, dtype)
        if key not in self._models:
            def progress(desc: str, done: int, total: int) -> None:
                if ctx is not None:
                    ctx.progress("load", done, total, desc)
            # room is made once the source is found, before its weights are read: what it drops is
            # not held next to the new weights, and a bad name drops nothing
            self._models[key] = load(spec, dtype=dtype, progress=progress, found=lambda: self._evict(room=1))
        self._models.move_to_end(key)
        lm = self._models[key]
        if self.current is None or make_current:
            self.current = lm
        self._evict(room=0, spare=key)
        return lm

    def _evict(self, room: int, spare: tuple[str | None, str] | None = None) -> None:
        """Drop the least recently used models (never the current one, nor ``spare``) until ``room``
        more fit in ``KEEP_MODELS``. A dropped model is freed once no screen or caller holds it
        (``engine.models.load`` keeps nothing), and MLX's buffer cache is emptied so that its memory
        goes back to the system."""
        dropped = False
        for old in list(self._models):
            if len(self._models) + room <= KEEP_MODELS:
                break
            if old != spare and self._models[old] is not self.current:
                del self._models[old]
                dropped = True
        if dropped:
            import mlx.core as mx

            mx.clear_cache()
            trim_malloc()

    def load(self, spec: str | None = None, dtype: str | None = None, *,
             on_progress: Callable[[ProgressEvent], None] | None = None, make_current: bool = True) -> Job[Any]:
        def job(ctx: JobContext) -> Any:
            return self._get_model(spec, dtype, ctx, make_current)
        return self.submit(job, name=f"load {spec}", on_progress=on_progress)
