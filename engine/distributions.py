"""Statistics of next-token distributions, for every analysis: top-k, entropy, KL/JS between rows,
probabilities and full-vocabulary ranks of given tokens.

Input is logits [rows, vocab] as NumPy float32 (one row per layer, position or run). Rules that
hold everywhere:

- the normaliser ``c = max + log(sum exp(x - max))`` is accumulated in float64 (a float32 sum over
  a whole vocabulary drifts by ~1e-4 relative: SmolLM2's p(' Paris') reads 0.77264, not 0.77253);
- KL and JS are sums of non-negative terms (``engine.distribution_kernels.pairs_pass``), so two
  nearly equal rows keep their relative precision and KL is never negative;
- ``-inf`` logits are tokens with probability 0; a row holding a NaN or ``+inf`` logit (or only
  ``-inf``) has no distribution: every function here raises ``AnalysisError`` naming the row,
  never a probability of 0 for the NaN or numbers computed from it.

The heavy loops are compiled by numba (``engine.distribution_kernels``); ``prepare()`` loads them
on a background thread while a model loads. What keeps ``lens_stats`` fast (docs/PERFORMANCE.md):
one fused pass per statistic and row, one per pair; the rows' exponentials go into a reused
buffer (a fresh 6 MB array costs more in page faults than the arithmetic); rows and pairs are
split over the compute threads (`engine.parallel`; the loops release the GIL).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import AnalysisError
from engine.parallel import split

_PARALLEL_FROM = 400_000  # rows x vocab from which the work is split over threads


@dataclass
class LensStats:
    top_ids: list[list[int]]
    top_probs: list[list[float]]
    entropy: list[float]  # nats
    kl: list[float]  # KL(P_a || P_b) per pair
    js: list[float]
    tracked_probs: list[list[float]]  # [L][T]
    tracked_ranks: list[list[int]]  # [L][T], 1 = top, over the full vocabulary


def prepare() -> None:
    """Load the compiled loops (these statistics' and the lens's unembedding product,
    ``engine.unembed_kernel``) on a background thread, e.g. while a model loads; a call that needs
    them before they are ready waits for the import."""
    threading.Thread(target=_load_all, name="distribution-kernels", daemon=True).start()


def _load_all() -> None:
    _kernels()
    import engine.unembed_kernel  # noqa: F401  (the import compiles or loads the loop)


def _kernels():
    from engine import distribution_kernels  # the import compiles or loads the loops

    return distribution_kernels


def check_finite(logits: np.ndarray, row_names: Sequence[str] | None = None) -> None:
    """Raise ``AnalysisError`` if a row holds a NaN or +inf logit, or no finite logit at all."""
    top = np.max(logits, axis=-1)  # NaN when the row holds one
    _reject(np.atleast_1d(top), row_names)


def _reject(top: np.ndarray, row_names: Sequence[str] | None) -> None:
    bad = np.flatnonzero(~np.isfinite(top))
    if bad.size:
        names = [row_names[i] if row_names is not None else f"row {i}" for i in bad[:5]]
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise AnalysisError(f"non-finite logits (NaN, +inf or all -inf) at {', '.join(names)}{more}: "
                            "the model's activations overflowed or are NaN; no distribution to report")


def log_normaliser(logits: np.ndarray, row_names: Sequence[str] | None = None) -> np.ndarray:
    """``c = log(sum exp(x))`` per row in float64 (``log p = x - c``), from logits [..., vocab]."""
    x = np.asarray(logits, dtype=np.float32)
    m = np.max(x, axis=-1, keepdims=True)
    _reject(m.reshape(-1), row_names)
    s = np.exp(x - m, dtype=np.float32).sum(axis=-1, keepdims=True, dtype=np.float64)
    return (m.astype(np.float64) + np.log(s))[..., 0]


def logsumexp_exact(logits: Any) -> Any:
    """MLX ``logsumexp`` over the last axis accumulated in float64 (CPU stream), as float32 [..., 1]: the
    normaliser of a metric kept inside an MLX graph (attribution's reported values; MLX's float32 sum
    drifts ~1e-4 over a 49k vocabulary)."""
    import mlx.core as mx

    return mx.logsumexp(logits.astype(mx.float64), axis=-1, keepdims=True, stream=mx.cpu).astype(mx.float32)


def log_softmax(logits: np.ndarray, row_names: Sequence[str] | None = None) -> np.ndarray:
    """Log-probabilities in float64 with the float64 normaliser, for logits [..., vocab]."""
    return np.asarray(logits, dtype=np.float64) - log_normaliser(logits, row_names)[..., None]


def token_probs_ranks(logits: np.ndarray, ids: Sequence[int] | np.ndarray,
                      row_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability, rank) of token ``ids[r]`` in row r of logits [rows, vocab]; rank 1 = top over the
    full vocabulary (ties counted in the token's favour: 1 + how many logits are strictly larger)."""
    x = np.asarray(logits, dtype=np.float32)
    idx = np.asarray(ids, dtype=np.int64)
    own = np.take_along_axis(x, idx[:, None], axis=-1)
    c = log_normaliser(x, row_names)
    probs = np.exp(own[:, 0].astype(np.float64) - c)
    ranks = (x > own).sum(axis=-1) + 1
    return probs, ranks


def top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest logits per row [..., vocab], largest first (ties: lower id first)."""
    x = np.asarray(logits)
    k = max(0, min(k, x.shape[-1]))
    if x.ndim == 1:
        return np.lexsort((np.arange(x.shape[0]), -x))[:k]
    return np.stack([top_k(row, k) for row in x]) if x.shape[0] else np.zeros((0, k), np.int64)


def top_k_probs(logits: np.ndarray, k: int, row_names: Sequence[str] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(ids, probabilities) of the k most likely tokens per row of logits [rows, vocab]."""
    x = np.atleast_2d(np.asarray(logits, dtype=np.float32))
    ids = top_k(x, k)
    c = log_normaliser(x, row_names)
    return ids, np.exp(np.take_along_axis(x, ids, axis=-1).astype(np.float64) - c[:, None])


def kl_js(a: np.ndarray, b: np.ndarray, a_names: Sequence[str] | None = None,
          b_names: Sequence[str] | None = None) -> tuple[list[float], list[float]]:
    """KL(P_a || P_b) and JS(P_a, P_b) for each row pair of logits a, b [rows, vocab] (same vocab)."""
    n = a.shape[0]
    names = None if a_names is None and b_names is None else [
        *(a_names or [f"row {i} of the first" for i in range(n)]),
        *(b_names or [f"row {i} of the second" for i in range(b.shape[0])])]
    st = lens_stats(np.concatenate([a, b]).astype(np.float32), 0, [], [(i, n + i) for i in range(n)], names)
    return st.kl, st.js


def lens_stats(logits: np.ndarray, k: int, tracked: Sequence[int], pairs: Sequence[tuple[int, int]],
               row_names: Sequence[str] | None = None) -> LensStats:
    """Top-k (largest first, ties by lower id), entropy, KL/JS between row pairs and the
    full-vocabulary rank of each tracked id, from logits [rows, vocab]."""
    kern = _kernels()
    x = np.ascontiguousarray(logits, dtype=np.float32)
    R, V = x.shape
    k = max(0, min(k, V))
    t = np.array([int(i) for i in tracked], dtype=np.int64)
    top_logit = np.max(x, axis=-1)  # NaN where a row holds one
    _reject(top_logit, row_names)
    sums = np.zeros((R, 2))  # per row: sum e, sum e (x - max)
    top = np.zeros((R, k), dtype=np.int64)
    vals = np.empty((R, k), np.float32)  # the top-k loop's scratch
    ranks = np.zeros((R, len(t)), dtype=np.int64)
    div = np.zeros((len(pairs), 2))  # per pair: KL, JS
    pa = np.array([p[0] for p in pairs], dtype=np.int64)
    pb = np.array([p[1] for p in pairs], dtype=np.int64)
    with _scratch("exp", R, V) as e, _scratch("pairs", len(pairs), V) as sbuf:
        def rows(lo: int, hi: int) -> None:
            np.subtract(x[lo:hi], top_logit[lo:hi, None], out=e[lo:hi])
            np.exp(e[lo:hi], out=e[lo:hi])  # NumPy's SIMD exp; it releases the GIL, so the parts overlap
            kern.rows_sums(x, top_logit, lo, hi, e, sums)
            kern.rows_top_ranks(x, lo, hi, k, t, top, vals, ranks)

        split(rows, R, R * V >= _PARALLEL_FROM)
        for r in range(R):
            if k and top[r, -1] < 0:  # fewer than k entries above -inf
                top[r] = top_k(x[r], k)
        z = sums[:, 0]
        log_z = np.log(z)
        c = top_logit.astype(np.float64) + log_z  # log-softmax = logit - c
        inv = 1.0 / z
        def pair_rows(lo: int, hi: int) -> None:
            kern.pairs_near(x, e, inv, c, pa, pb, lo, hi, sbuf, div)
            np.log(sbuf[lo:hi], out=sbuf[lo:hi])  # NumPy's SIMD log, for the far entries
            kern.pairs_far(x, e, inv, c, pa, pb, lo, hi, sbuf, div)

        split(pair_rows, len(pairs), len(pairs) * V >= _PARALLEL_FROM)
    top_p = np.exp(np.take_along_axis(x, top, axis=-1).astype(np.float64) - c[:, None])
    t_prob = np.exp(x[:, t].astype(np.float64) - c[:, None]) if t.size else np.zeros((R, 0))
    return LensStats(top.tolist(), top_p.tolist(), (log_z - sums[:, 1] / z).tolist(), div[:, 0].tolist(),
                     div[:, 1].tolist(), t_prob.tolist(), ranks.tolist())


_SCRATCH: dict[str, tuple[threading.Lock, list[np.ndarray]]] = {
    "exp": (threading.Lock(), []),  # the rows' exponentials, [rows, vocab] float32
    "pairs": (threading.Lock(), []),  # the pairs' sums pa + pb, then their logs, [pairs, vocab] float32
}


@contextmanager
def _scratch(name: str, rows: int, vocab: int) -> Iterator[np.ndarray]:
    """Reuse the last call's buffer when the shape matches (the usual case: the same model's lens
    again). One caller at a time holds it; a concurrent caller gets a fresh one."""
    lock, held = _SCRATCH[name]
    if not lock.acquire(blocking=False):
        yield np.empty((rows, vocab), np.float32)
        return
    try:
        if not (held and held[0].shape == (rows, vocab)):
            held[:] = [np.empty((rows, vocab), np.float32)]
        yield held[0]
    finally:
        lock.release()
