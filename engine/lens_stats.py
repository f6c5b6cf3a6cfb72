"""Statistics of lens distributions: top-k, entropy, KL/JS between rows, full-vocabulary ranks.

Input is logits [rows, vocab] (one row per layer). Done on the CPU in compiled loops
(``engine.lens_kernels``), not MLX: MLX's CPU element-wise ``exp`` over a vocabulary is slow and
its float32 reductions drift by ~1e-4 relative. What keeps it fast (docs/PERFORMANCE.md, lens
overhead):

- one fused, vectorised pass per statistic and row (max; exp with its sums; top-k; ranks) and one
  per pair of rows (KL and JS together), accumulated in float64;
- the one work buffer (the rows' exponentials) is reused across calls: a fresh 6 MB array costs
  more in page faults than the arithmetic on it;
- the rows (then the pairs) are split between the calling thread and one worker thread (the
  loops release the GIL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

_PARALLEL_FROM = 400_000  # rows x vocab from which the work is split over two threads


@dataclass
class LensStats:
    top_ids: list[list[int]]
    top_probs: list[list[float]]
    entropy: list[float]  # nats
    kl: list[float]  # KL(P_a || P_b) per pair
    js: list[float]
    tracked_probs: list[list[float]]  # [L][T]
    tracked_ranks: list[list[int]]  # [L][T], 1 = top, over the full vocabulary


def lens_stats(logits: np.ndarray, k: int, tracked: Sequence[int], pairs: Sequence[tuple[int, int]]) -> LensStats:
    """Top-k (largest first, ties by lower id), entropy, KL/JS between row pairs and the
    full-vocabulary rank of each tracked id, from logits [rows, vocab]."""
    from engine import lens_kernels as kern  # numba: loaded with the first lens

    x = np.ascontiguousarray(logits, dtype=np.float32)
    R, V = x.shape
    k = max(0, min(k, V))
    t = [int(i) for i in tracked]
    top_logit = np.zeros(R, np.float32)
    z = np.zeros(R)
    es = np.zeros(R)
    top = np.zeros((R, k), dtype=np.int64)
    ranks = np.zeros((R, len(t)), dtype=np.int64)
    kl = np.zeros(len(pairs))
    js = np.zeros(len(pairs))
    with _scratch(R, V) as e:

        def rows(lo: int, hi: int) -> None:
            for r in range(lo, hi):
                top_logit[r] = kern.row_max(x[r])
                z[r], es[r] = kern.row_exp(x[r], top_logit[r], e[r])
                if k:
                    kern.top_k(x[r], k, top[r])
                for j, tid in enumerate(t):
                    ranks[r, j] = kern.count_above(x[r], x[r, tid]) + 1

        _split(rows, R, R * V)
        log_z = np.log(z)
        c = top_logit.astype(np.float64) + log_z  # log-softmax = logit - c
        inv = (1.0 / z).astype(np.float32)

        def pair_range(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                a, b = pairs[i]
                kl[i], js[i] = kern.kl_js(x[a], e[a], inv[a], x[b], e[b], inv[b], np.float32(c[a] - c[b]))

        _split(pair_range, len(pairs), len(pairs) * V)
    top_p = np.exp(np.take_along_axis(x, top, axis=-1).astype(np.float64) - c[:, None])
    t_prob = np.exp(x[:, t].astype(np.float64) - c[:, None]) if t else np.zeros((R, 0))
    return LensStats(top.tolist(), top_p.tolist(), (log_z - es / z).tolist(), kl.tolist(),
                     js.tolist(), t_prob.tolist(), ranks.tolist())


_POOL: list[ThreadPoolExecutor] = []


def _split(fn: Callable[[int, int], None], n: int, size: int) -> None:
    """fn(lo, hi) over range(n): half on a worker thread, half here when the work is big enough."""
    if n < 2 or size < _PARALLEL_FROM:
        fn(0, n)
        return
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="lens-stats"))
    half = n // 2
    other = _POOL[0].submit(fn, half, n)
    try:
        fn(0, half)
    finally:  # never leave the worker writing into the scratch buffer after we return
        other.result()


_SCRATCH_LOCK = threading.Lock()
_SCRATCH: list[np.ndarray] = []  # the rows' exponentials, [rows, vocab] float32


@contextmanager
def _scratch(rows: int, vocab: int) -> Iterator[np.ndarray]:
    """Reuse the last call's buffer when the shape matches (the usual case: the same model's lens
    again). One caller at a time holds it; a concurrent caller gets a fresh one."""
    if not _SCRATCH_LOCK.acquire(blocking=False):
        yield np.empty((rows, vocab), np.float32)
        return
    try:
        if not (_SCRATCH and _SCRATCH[0].shape == (rows, vocab)):
            _SCRATCH[:] = [np.empty((rows, vocab), np.float32)]
        yield _SCRATCH[0]
    finally:
        _SCRATCH_LOCK.release()
