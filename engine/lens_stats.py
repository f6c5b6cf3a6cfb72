"""Statistics of lens distributions: top-k, entropy, KL/JS between rows, full-vocabulary ranks.

Input is logits [rows, vocab] (one row per layer). Done in NumPy, not MLX: for these element-wise
passes over a whole vocabulary NumPy is several times faster on the CPU backend, and MLX's float32
reductions over a vocabulary drift by ~1e-4 relative. Three things keep it fast
(docs/PERFORMANCE.md, lens overhead):

- every pass writes into scratch buffers reused across calls: a fresh 6 MB array costs more in
  page faults than the arithmetic on it;
- rows are processed one at a time, so each row's passes run in cache;
- the rows (then the pairs) are split between the calling thread and one worker thread
  (NumPy releases the GIL inside its loops).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

_EXP_FLOOR = np.float32(-87.0)  # exp below this is under float32's normal range
_BLOCK = 512  # block size of the top-k pre-selection
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
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    R, V = logits.shape
    k = min(k, V)
    t = [int(x) for x in tracked]
    entropy = np.zeros(R)
    top = np.zeros((R, k), dtype=np.int64)
    ranks = np.zeros((R, len(t)), dtype=np.int64)
    kl = np.zeros(len(pairs))
    js = np.zeros(len(pairs))
    with _scratch(R, V) as ws:

        def rows(lo: int, hi: int, lane: int) -> None:
            w, flags = ws.w[lane], ws.flags[lane]
            for r in range(lo, hi):
                entropy[r] = _distribution(logits[r], ws.p[r], ws.logp[r], w)
                top[r] = _top_k(logits[r], k, flags)
                for j, tid in enumerate(t):
                    np.greater(logits[r], logits[r, tid], out=flags)
                    ranks[r, j] = np.count_nonzero(flags) + 1

        def pair_range(lo: int, hi: int, lane: int) -> None:
            for i in range(lo, hi):
                kl[i], js[i] = _kl_js(ws, *pairs[i], ws.w[lane], ws.mix[lane])

        _split(rows, R, R * V)
        _split(pair_range, len(pairs), len(pairs) * V)
        top_p = np.take_along_axis(ws.p, top, axis=-1).astype(np.float64)
        t_prob = ws.p[:, t].astype(np.float64) if t else np.zeros((R, 0))
    return LensStats(top.tolist(), top_p.tolist(), entropy.tolist(), kl.tolist(), js.tolist(),
                     t_prob.tolist(), ranks.tolist())


def _distribution(x: np.ndarray, p: np.ndarray, logp: np.ndarray, w: np.ndarray) -> float:
    """Fill p and log p for one row of logits ``x``; returns the entropy in nats."""
    np.subtract(x, x.max(), out=logp)  # shifted, max 0
    # clamp before exp so no denormal (a slow path) is produced; it changes probabilities < 1.2e-38
    np.maximum(logp, _EXP_FLOOR, out=p)
    np.exp(p, out=p)
    z = p.sum(dtype=np.float64)
    np.multiply(p, np.float32(1.0 / z), out=p)
    np.subtract(logp, np.float32(np.log(z)), out=logp)
    np.multiply(p, logp, out=w)
    return float(-w.sum(dtype=np.float64))


def _top_k(x: np.ndarray, k: int, flags: np.ndarray) -> np.ndarray:
    """Ids of the k largest logits of one row, largest first (ties: lower id first).

    Exact without sorting the row: the k-th largest block maximum is a lower bound of the k-th
    largest element (those k maxima are k elements at least that large), so the top k lie in the
    few blocks whose maximum reaches it."""
    V = x.shape[0]
    nb = V // _BLOCK
    if nb < 4 * k:
        cand = np.argpartition(-x, k - 1)[:k]
    else:
        maxima = x[:nb * _BLOCK].reshape(nb, _BLOCK).max(axis=-1)
        if nb * _BLOCK < V:  # the ragged tail is one more block
            maxima = np.append(maxima, x[nb * _BLOCK:].max())
        bound = -np.partition(-maxima, k - 1)[k - 1]
        blocks = np.flatnonzero(maxima >= bound)
        cand = (blocks[:, None] * _BLOCK + np.arange(_BLOCK)).ravel()
        cand = cand[cand < V]
        cand = cand[x[cand] >= bound]
    return cand[np.lexsort((cand, -x[cand]))[:k]]


def _kl_js(ws: _Scratch, a: int, b: int, w: np.ndarray, mix: np.ndarray) -> tuple[float, float]:
    """KL(P_a || P_b) and JS(P_a, P_b) from the filled rows of ws.p / ws.logp."""
    pa, pb, la, lb = ws.p[a], ws.p[b], ws.logp[a], ws.logp[b]
    np.subtract(la, lb, out=w)
    np.multiply(w, pa, out=w)
    kl = max(float(w.sum(dtype=np.float64)), 0.0)
    np.add(pa, pb, out=mix)  # log of the mixture 0.5 (P_a + P_b)
    np.multiply(mix, np.float32(0.5), out=mix)
    np.maximum(mix, np.float32(1e-38), out=mix)
    np.log(mix, out=mix)
    np.subtract(la, mix, out=w)
    np.multiply(w, pa, out=w)
    half_a = w.sum(dtype=np.float64)
    np.subtract(lb, mix, out=w)
    np.multiply(w, pb, out=w)
    return kl, max(float(0.5 * half_a + 0.5 * w.sum(dtype=np.float64)), 0.0)


_POOL: list[ThreadPoolExecutor] = []


def _split(fn: Callable[[int, int, int], None], n: int, size: int) -> None:
    """fn(lo, hi, lane) over range(n): half on a worker thread, half here when the work is big enough."""
    if n < 2 or size < _PARALLEL_FROM:
        fn(0, n, 0)
        return
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="lens-stats"))
    half = n // 2
    other = _POOL[0].submit(fn, half, n, 1)
    try:
        fn(0, half, 0)
    finally:  # never leave the worker writing into the scratch buffers after we return
        other.result()


class _Scratch:
    """Work buffers: the rows' distributions, and per thread (lane) one row of temporaries."""

    def __init__(self, rows: int, vocab: int) -> None:
        self.shape = (rows, vocab)
        self.p = np.empty((rows, vocab), np.float32)
        self.logp = np.empty((rows, vocab), np.float32)
        self.w = np.empty((2, vocab), np.float32)
        self.mix = np.empty((2, vocab), np.float32)
        self.flags = np.empty((2, vocab), np.bool_)


_SCRATCH_LOCK = threading.Lock()
_SCRATCH: list[_Scratch] = []


@contextmanager
def _scratch(rows: int, vocab: int) -> Iterator[_Scratch]:
    """Reuse the last call's buffers when the shape matches (the usual case: the same model's lens
    again). One caller at a time holds them; a concurrent caller gets fresh ones."""
    if not _SCRATCH_LOCK.acquire(blocking=False):
        yield _Scratch(rows, vocab)
        return
    try:
        if not (_SCRATCH and _SCRATCH[0].shape == (rows, vocab)):
            _SCRATCH[:] = [_Scratch(rows, vocab)]
        yield _SCRATCH[0]
    finally:
        _SCRATCH_LOCK.release()
