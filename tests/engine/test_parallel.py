"""engine.parallel: the work split every compiled loop uses."""

from __future__ import annotations

import threading

import pytest

from engine import parallel


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("n,step", [(0, 1), (1, 1), (7, 1), (100, 4), (101, 4), (9, 4), (3, 4)])
def test_split_covers_the_range_once_at_step_multiples(n, step, threads, monkeypatch):
    monkeypatch.setattr(parallel, "thread_count", lambda: threads)
    parts: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def fn(lo: int, hi: int) -> None:
        with lock:
            parts.append((lo, hi, threading.current_thread().name))

    parallel.split(fn, n, step=step)
    spans = sorted((lo, hi) for lo, hi, _ in parts)
    covered = [i for lo, hi in spans for i in range(lo, hi)]
    assert covered == list(range(n))  # every index once, in order
    assert all(lo % step == 0 for lo, _ in spans)  # a kernel's blocks are never cut
    assert len(parts) == max(1, min(threads, n // step))
    assert any(name == threading.current_thread().name for _, _, name in parts)  # the caller works too


def test_not_parallel_runs_here_in_one_call(monkeypatch):
    monkeypatch.setattr(parallel, "thread_count", lambda: 4)
    parts = []
    parallel.split(lambda lo, hi: parts.append((lo, hi, threading.current_thread().name)), 50, parallel=False)
    assert parts == [(0, 50, threading.current_thread().name)]


def test_a_worker_error_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(parallel, "thread_count", lambda: 2)

    def fn(lo: int, hi: int) -> None:
        if lo > 0:
            raise RuntimeError("worker part failed")

    with pytest.raises(RuntimeError, match="worker part failed"):
        parallel.split(fn, 10)


def test_thread_count_follows_openblas_num_threads(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # what engine.blas sets per rank under mlx.launch
    assert parallel.thread_count() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert parallel.thread_count() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "999")
    assert parallel.thread_count() == parallel.MAX_THREADS
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    assert 1 <= parallel.thread_count() <= parallel.MAX_THREADS


def test_every_part_has_finished_when_an_error_is_raised(monkeypatch):
    """A failing part must not leave the others running (they write into the caller's buffers)."""
    import time

    monkeypatch.setattr(parallel, "thread_count", lambda: 3)
    done = []

    def fn(lo: int, hi: int) -> None:
        if lo == 3:
            raise ValueError("a worker's part failed")
        time.sleep(0.1 if lo == 6 else 0.0)
        done.append(lo)

    with pytest.raises(ValueError, match="a worker's part failed"):
        parallel.split(fn, 9)
    assert sorted(done) == [0, 6]  # the slow worker had finished too
