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
import weakref
import queue
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from engine.errors import Cancelled

T = TypeVar("T")
_ids = itertools.count(1)
_sessions: weakref.WeakSet[EngineSession] = weakref.WeakSet()


@atexit.register
def _close_all_sessions() -> None:
    """Stop engine threads before the interpreter finalises: MLX aborts the process
    ("terminate called without an active exception") if a thread is killed mid-op."""
    for session in list(_sessions):
        session.close(cancel=True)


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

    def model(self, spec: str | None = None, dtype: str | None = None) -> Any:
        """A loaded model (the session's current one by default), loading it if needed."""
        return self.session._get_model(spec, dtype, self)


class EngineSession:
    """Owns the engine thread, the job queue and the loaded models."""

    def __init__(self, model: str | None = None, dtype: str = "auto") -> None:
        self.default_spec = model
        self.default_dtype = dtype
        self._models: dict[tuple[str | None, str], Any] = {}
        self.current: Any = None
        self._queue: queue.Queue[tuple[Job[Any], Callable[[JobContext], Any], Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.engine_thread_id: int | None = None
        self._running: Job[Any] | None = None
        self._pending: list[Job[Any]] = []
        _sessions.add(self)

    # -- the thread --------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lazarus-engine", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        import engine  # noqa: F401  (BLAS before mlx, on this thread's first import)

        self.engine_thread_id = threading.get_ident()
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, fn, on_progress = item
            self._running = job
            if job.cancel_requested:
                job.future.set_exception(Cancelled("cancelled before it started"))
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(JobContext(self, job, on_progress))
            except BaseException as exc:  # delivered to the caller, never lost on this thread
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                self._running = None

    def submit(self, fn: Callable[[JobContext], T], *, name: str = "job",
               on_progress: Callable[[ProgressEvent], None] | None = None) -> Job[T]:
        self._ensure_thread()
        job: Job[T] = Job(name)
        self._pending = [j for j in self._pending if not j.done()] + [job]
        self._queue.put((job, fn, on_progress))
        return job

    def run(self, fn: Callable[[JobContext], T], **kw: Any) -> T:
        """Submit and wait (the sync API)."""
        return self.submit(fn, **kw).result()

    def close(self, cancel: bool = False, timeout: float = 30.0) -> None:
        """Stop the engine thread after the queued jobs (or cancel them first with ``cancel``)."""
        if self._thread is None:
            return
        if cancel:
            for job in self._pending:
                job.cancel()
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        self._thread = None

    # -- models ------------------------------------------------------------------------------
    def _get_model(self, spec: str | None, dtype: str | None, ctx: JobContext | None) -> Any:
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
            self._models[key] = load(spec, dtype=dtype, progress=progress)
        lm = self._models[key]
        if self.current is None:
            self.current = lm
        return lm

    def load(self, spec: str | None = None, dtype: str | None = None, *,
             on_progress: Callable[[ProgressEvent], None] | None = None, make_current: bool = True) -> Job[Any]:
        def job(ctx: JobContext) -> Any:
            lm = self._get_model(spec, dtype, ctx)
            if make_current:
                self.current = lm
            return lm
        return self.submit(job, name=f"load {spec}", on_progress=on_progress)
