"""The engine thread survives anything a job does or has done to its future, restarts if it dies
anyway, and stops cleanly at exit (no "terminate called without an active exception")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from engine.errors import Cancelled
from engine.session import EngineSession, EngineStopped

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def session():
    s = EngineSession()
    yield s
    assert s.close(cancel=True, timeout=10)


def _blocker(session: EngineSession) -> threading.Event:
    """Occupy the engine thread until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def job(ctx):
        started.set()
        release.wait(10)
        return "blocker"
    session.submit(job, name="blocker")
    assert started.wait(10)
    return release


@pytest.mark.parametrize("also_cancel_job", [True, False])
def test_cancelled_waiter_of_a_queued_job_leaves_the_engine_working(session, also_cancel_job):
    """The TUI's case: a newer request cancels the worker awaiting a queued job, so asyncio.wrap_future
    cancels the job's future before the engine takes it (and run_job calls job.cancel())."""
    release = _blocker(session)
    queued = session.submit(lambda ctx: "never", name="replaced")

    async def waiter_cancelled() -> None:
        task = asyncio.ensure_future(_await(queued))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(waiter_cancelled())
    assert queued.future.cancelled()
    if also_cancel_job:
        queued.cancel()
    release.set()
    assert session.submit(lambda ctx: 6 * 7, name="next").result(timeout=10) == 42
    assert queued.future.cancelled()
    assert session.alive() and session.restarts == 0


async def _await(job):
    return await job


def test_a_finished_job_and_its_result_are_not_held_by_the_session(session):
    """Once a job has finished and its caller drops it, nothing in the session keeps its result
    alive (not the job list, not the engine loop's last queue item) while the engine waits."""
    import gc
    import weakref

    class Big:  # stands in for a large result (activations, a long generation)
        pass

    job = session.submit(lambda ctx: Big(), name="big")
    ref = weakref.ref(job.result(timeout=10))
    del job
    deadline = time.monotonic() + 5
    while ref() is not None and time.monotonic() < deadline:  # the engine thread finishes its step
        gc.collect()
        time.sleep(0.01)
    assert ref() is None
    assert session.run(lambda ctx: 7) == 7  # and the engine still works


def test_a_queued_job_cancelled_by_flag_fails_with_cancelled(session):
    release = _blocker(session)
    queued = session.submit(lambda ctx: "never", name="queued")
    queued.cancel()
    release.set()
    with pytest.raises(Cancelled):
        queued.result(timeout=10)
    assert session.run(lambda ctx: "after") == "after"


def test_a_future_settled_by_someone_else_does_not_stop_the_engine(session):
    release = _blocker(session)
    queued = session.submit(lambda ctx: "never", name="queued")
    queued.future.set_result("from outside")  # a caller that settles the future itself
    release.set()
    assert session.run(lambda ctx: "after") == "after"
    assert queued.result() == "from outside" and session.restarts == 0


def test_an_engine_thread_that_dies_fails_its_job_says_so_and_is_replaced(session, monkeypatch):
    told: list[str] = []
    session.on_thread_death = told.append
    session.run(lambda ctx: None)
    first = session._thread
    real = session._run_one

    def broken(job, fn, on_progress):  # a bug in the loop itself, outside any job's guard
        monkeypatch.setattr(session, "_run_one", real)
        session._running = job
        raise RuntimeError("loop bug")
    monkeypatch.setattr(session, "_run_one", broken)
    victim = session.submit(lambda ctx: "never", name="victim")
    with pytest.raises(EngineStopped, match="victim.*RuntimeError: loop bug"):
        victim.result(timeout=10)
    assert session.run(lambda ctx: "alive again") == "alive again"
    assert session._thread is not first and session.restarts == 1
    assert told == ["RuntimeError: loop bug"] and session.last_death == told[0]


def test_a_thread_found_dead_is_reported_and_replaced_on_submit(session):
    told: list[str] = []
    session.on_thread_death = told.append
    dead = threading.Thread(target=lambda: None, name="lazarus-engine")
    dead.start()
    dead.join()
    session._thread = dead  # ended without passing through the loop's handler
    assert session.run(lambda ctx: 1) == 1
    assert session.restarts == 1 and told == ["lazarus-engine ended unexpectedly"]


def test_close_cancels_the_running_job_and_joins(session):
    started = threading.Event()

    def job(ctx):
        started.set()
        while True:
            ctx.check()
            time.sleep(0.01)
    running = session.submit(job, name="endless")
    assert started.wait(10)
    assert session.close(cancel=True, timeout=10)
    assert not session.alive()
    with pytest.raises(Cancelled):
        running.result(timeout=1)
    assert session.run(lambda ctx: "reopened") == "reopened"  # a later submit starts a new thread


# -- exit: no SIGABRT (exit 134) however the process ends -----------------------------------------
_EXIT_SCRIPT = textwrap.dedent("""
    import sys, threading
    import engine
    from engine.session import EngineSession

    def mlx_work(ctx, steps):
        import mlx.core as mx
        f = mx.compile(lambda x: mx.exp(x) * 2)  # a compiled function and a random key: thread-local
        for i in range(steps):                    # MLX state holding Python objects (mlx-lm's
            mx.eval(f(mx.random.normal((256,))))  # activations are compiled the same way)
            if i == 0:
                started.set()
            ctx.check()
        return "done"

    started = threading.Event()
    session = EngineSession()
    mode = sys.argv[1]
    if mode == "after-job":  # the job finished; the script fails afterwards
        session.run(lambda ctx: mlx_work(ctx, 3))
        raise SystemExit(5)
    if mode == "long-step":  # a step that takes 3 s without looking at the cancel flag
        import time
        def long_step(ctx):
            import mlx.core as mx
            a = mx.random.normal((256, 256))
            started.set()
            t = time.monotonic()
            while time.monotonic() - t < 3:
                mx.eval(a @ a)
            ctx.check()
        session.submit(long_step)
    else:
        session.submit(lambda ctx: mlx_work(ctx, 10**9))  # mid-job: the engine still runs MLX work
    started.wait(30)
    raise RuntimeError("escaped while the engine works")
""")


@pytest.mark.parametrize("mode,code", [("after-job", 5), ("mid-job", 1), ("long-step", 1)])
def test_process_exit_never_aborts(mode, code, tmp_path):
    """Before the engine thread released MLX's thread-local state, 14 of 20 "after-job" runs ended
    in SIGABRT (the thread's C++ destructors took the GIL while the main thread finalised); a
    "mid-job" exit aborted whenever the engine thread was still inside MLX. Six runs each here; a
    step longer than a second is waited for, saying so."""
    script = tmp_path / "exit_script.py"
    script.write_text(_EXIT_SCRIPT)
    for _ in range(6 if mode != "long-step" else 1):
        proc = subprocess.run([sys.executable, str(script), mode], check=False, cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert "terminate called" not in proc.stderr
        assert proc.returncode == code, proc.stderr[-2000:]
        assert ("waiting for the engine to finish its current step" in proc.stderr) == (mode == "long-step")
