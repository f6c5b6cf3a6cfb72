"""Statistics of lens distributions: top-k, entropy, KL/JS between rows, full-vocabulary ranks.

Input is logits [rows, vocab] (one row per layer). Done on the CPU in compiled loops
(``engine.lens_kernels``), not MLX: MLX's CPU element-wise ``exp`` over a vocabulary is slow and
its float32 reductions drift by ~1e-4 relative. What keeps it fast (docs/PERFORMANCE.md, lens
overhead):

- one fused pass per statistic and row (max; exp with its sums; top-k; ranks) and one per pair
  of rows (KL and JS together), accumulated in float64;
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

from engine.lens_kernels import kernels

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
    kern = kernels()
    x = np.ascontiguousarray(logits, dtype=np.float32)
    R, V = x.shape
    k = max(0, min(k, V))
    t = [int(i) for i in tracked]
    top_logit = np.zeros(R, np.float32)
    sums = np.zeros((R, 2))  # per row: sum e, sum e (x - max)
    top = np.zeros((R, k), dtype=np.int64)
    ranks = np.zeros((R, len(t)), dtype=np.int64)
    div = np.zeros((len(pairs), 2))  # per pair: KL, JS
    with _scratch(R, V) as e:
        # raw addresses: row r of x (or e) starts at base + r * row; outputs are float64 pairs
        xp, ep, row, sp, dp = x.ctypes.data, e.ctypes.data, 4 * V, sums.ctypes.data, div.ctypes.data
        top_vals = np.empty((R, k), np.float32)  # the top-k kernel's scratch
        tp, vp = top.ctypes.data, top_vals.ctypes.data

        def rows(lo: int, hi: int) -> None:
            for r in range(lo, hi):
                top_logit[r] = kern.row_max(xp + r * row, V)
                kern.row_exp(xp + r * row, V, top_logit[r], ep + r * row, sp + 16 * r)
                if k:
                    kern.top_k(xp + r * row, V, k, tp + 8 * k * r, vp + 4 * k * r)
                    if top[r, -1] < 0:  # fewer than k entries above -inf
                        top[r] = _top_k(x[r], k)
                for j, tid in enumerate(t):
                    ranks[r, j] = kern.count_above(xp + r * row, V, x[r, tid]) + 1

        _split(rows, R, R * V)
        z = sums[:, 0]
        log_z = np.log(z)
        c = top_logit.astype(np.float64) + log_z  # log-softmax = logit - c
        inv = 1.0 / z

        def pair_range(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                a, b = pairs[i]
                kern.kl_js(xp + a * row, ep + a * row, inv[a], xp + b * row, ep + b * row, inv[b], c[a] - c[b], V,
                           dp + 16 * i)

        _split(pair_range, len(pairs), len(pairs) * V)
    top_p = np.exp(np.take_along_axis(x, top, axis=-1).astype(np.float64) - c[:, None])
    t_prob = np.exp(x[:, t].astype(np.float64) - c[:, None]) if t else np.zeros((R, 0))
    return LensStats(top.tolist(), top_p.tolist(), (log_z - sums[:, 1] / z).tolist(), div[:, 0].tolist(),
                     div[:, 1].tolist(), t_prob.tolist(), ranks.tolist())


def _top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits of one row, largest first (ties: lower id first), by a full
    sort: the fallback for rows the compiled pass cannot fill (fewer than k entries above -inf)."""
    return np.lexsort((np.arange(x.shape[0]), -x))[:k]


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
