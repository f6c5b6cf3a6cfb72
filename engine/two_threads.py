"""Work split between the calling thread and one worker thread.

The compiled loops (``engine.distribution_kernels``, ``engine.unembed_kernel``) release the GIL, so
two threads run them at once: the host this was tuned on has 2 cores, and OpenBLAS leaves its own
threads idle between products. One worker for the process; calls queue behind each other.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_POOL: list[ThreadPoolExecutor] = []


def halves(fn: Callable[[int, int], None], n: int, parallel: bool = True, step: int = 1) -> None:
    """``fn(lo, hi)`` over ``range(n)``: the upper half on the worker thread, the lower half here
    (``parallel`` false or ``n < 2 * step``: all of it here). ``step``: the split point is a
    multiple of it (a kernel's block size)."""
    if not parallel or n < 2 * step:
        fn(0, n)
        return
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="lazarus-worker"))
    half = n // 2 // step * step
    other = _POOL[0].submit(fn, half, n)
    try:
        fn(0, half)
    finally:  # never leave the worker writing into a caller's buffer after we return
        other.result()
