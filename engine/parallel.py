"""Work split over the process's compute threads: the calling thread and a pool of workers.

The compiled loops (``engine.distribution_kernels``, ``engine.unembed_kernel``) and NumPy's
``exp``/``log`` release the GIL, so the parts run at once. The thread count is the one BLAS gets:
``OPENBLAS_NUM_THREADS`` when set (``engine.blas`` sets it per rank under ``mlx.launch``, so ranks
sharing a host do not oversubscribe it), else the cores this process may run on, at most
``MAX_THREADS``. OpenBLAS's own threads are idle between products (``OPENBLAS_THREAD_TIMEOUT``), so
they do not compete. One pool for the process; calls from several threads queue behind each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

MAX_THREADS = 16

_POOL: list[tuple[ThreadPoolExecutor, int]] = []  # the pool and its worker count


def thread_count() -> int:
    """Threads a split uses (the caller's included)."""
    env = os.environ.get("OPENBLAS_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        n = int(env)
    else:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, MAX_THREADS))


def split(fn: Callable[[int, int], None], n: int, parallel: bool = True, step: int = 1) -> None:
    """``fn(lo, hi)`` over consecutive parts of ``range(n)``, one per thread; the first part runs
    here. ``parallel`` false, one thread, or fewer than two ``step``s of work: all of it here.
    ``step``: every split point is a multiple of it (a kernel's block size)."""
    threads = min(thread_count(), n // step) if parallel else 1
    if threads < 2:
        fn(0, n)
        return
    if not _POOL or _POOL[0][1] < threads - 1:
        if _POOL:
            _POOL.pop()[0].shutdown(wait=False)
        _POOL.append((ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="lazarus-worker"), threads - 1))
    cuts = [n * i // threads // step * step for i in range(threads)] + [n]
    others = [_POOL[0][0].submit(fn, lo, hi) for lo, hi in zip(cuts[1:-1], cuts[2:])]
    try:
        fn(cuts[0], cuts[1])
    finally:  # never leave a worker writing into a caller's buffer after we return, even on an error
        wait(others)
    for f in others:
        f.result()  # a worker's exception reaches the caller
