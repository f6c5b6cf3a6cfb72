"""Compiled loops behind ``engine.distributions``: one pass per statistic over a vocabulary row.

numba compiles them (``cache=True``: machine code is kept on disk next to this file, or in numba's
user cache when that is read-only, so a fresh process loads it instead of compiling). The explicit
signatures make numba compile (or load) at import, never on a call with other argument types; the
import costs ~0.6 s of CPU the first time in a process, which ``prepare()`` moves to a background
thread while a model loads. ``nogil=True`` lets two threads share the rows.

Every loop reads C-contiguous float32 logits and accumulates in float64. The only fast-math flag
is ``reassoc`` on the accumulating adds (no ``nnan``/``ninf``): NaN and infinity keep their IEEE
meaning, and ``row_max`` reports a NaN it meets (a NaN is never "larger" than anything).
"""

from __future__ import annotations

import numpy as np
from numba import njit

EXP_FLOOR = -87.0  # exp below this is under float32's normal range: counted as 0
# psi(t) = t - 1 + e^-t = sum_{n>=2} (-t)^n / n!, divided by t^2; 12 terms for |t| <= 1/2 (float64)
_PSI = tuple((-1) ** n / float(np.prod(np.arange(1, n + 1, dtype=np.float64))) for n in range(13, 1, -1))
# g(d) = (1+d) log(1+d) + (1-d) log(1-d) = sum_n d^(2n) / (n (2n-1)), in u = d^2; 16 terms for u <= 1/4
_G = tuple(1.0 / (n * (2 * n - 1)) for n in range(16, 0, -1))
_FLAGS = {"reassoc", "contract", "nsz"}
_OPTS = {"cache": True, "nogil": True, "fastmath": _FLAGS, "error_model": "numpy", "boundscheck": False}


@njit("float64(float64)", **_OPTS)
def _psi_t2(t: float) -> float:
    p = 0.0
    for c in _PSI:
        p = p * t + c
    return p


@njit("float64(float64)", **_OPTS)
def _g_u(u: float) -> float:
    p = 0.0
    for c in _G:
        p = p * u + c
    return p * u


@njit("float32(float32[::1])", **_OPTS)
def row_max(x: np.ndarray) -> np.float32:
    """The largest entry; NaN when the row holds a NaN."""
    m = x[0]
    for i in range(x.shape[0]):
        v = x[i]
        if v > m:
            m = v
        elif v != v:
            return v
    return m


@njit("void(float32[:, ::1], int64, int64, int64, int64[::1], float32[::1], float32[:, ::1], float64[:, ::1], "
      "int64[:, ::1], float32[:, ::1], int64[:, ::1])", **_OPTS)
def rows_pass(x, lo, hi, k, tracked, top_logit, e, sums, top, vals, ranks):  # type: ignore[no-untyped-def]
    """For rows lo..hi of logits x: top_logit = the row's max (NaN if it holds a NaN);
    e = exp(x - max) (0 below -87 nats), sums[:, 0] = sum e, sums[:, 1] = sum e (x - max);
    top[:, :k] = ids of the k largest, largest first, ties by lower id (-1 where fewer than k are
    > -inf; vals is scratch); ranks[:, j] = 1 + how many entries exceed x[tracked[j]].
    A row whose max is not finite (NaN or +inf) gets only its max: the caller rejects it."""
    n = x.shape[1]
    for r in range(lo, hi):
        xr = x[r]
        m = row_max(xr)
        top_logit[r] = m
        if not np.isfinite(m):
            continue
        er = e[r]
        z = 0.0
        es = 0.0
        for i in range(n):
            s = xr[i] - m
            if s > EXP_FLOOR:
                v = np.exp(np.float64(s))
                er[i] = v
                z += v
                es += v * s
            else:
                er[i] = 0.0
        sums[r, 0] = z
        sums[r, 1] = es
        if k > 0:
            vr = vals[r]
            tr = top[r]
            for j in range(k):
                vr[j] = -np.inf
                tr[j] = -1
            for i in range(n):
                v = xr[i]
                if v > vr[k - 1]:
                    j = k - 1
                    while j > 0 and vr[j - 1] < v:
                        vr[j] = vr[j - 1]
                        tr[j] = tr[j - 1]
                        j -= 1
                    vr[j] = v
                    tr[j] = i
        for j in range(tracked.shape[0]):
            t = xr[tracked[j]]
            c = 0
            for i in range(n):
                if xr[i] > t:
                    c += 1
            ranks[r, j] = c + 1


@njit("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[::1], int64[::1], int64[::1], int64, int64, "
      "float64[:, ::1])", **_OPTS)
def pairs_pass(x, e, inv, c, pa_rows, pb_rows, lo, hi, out):  # type: ignore[no-untyped-def]
    """out[i] = (KL(P_a || P_b), JS(P_a, P_b)) for the pairs lo..hi (a = pa_rows[i], b = pb_rows[i])
    from logits x, unnormalised probabilities e = exp(x - max), inverse sums inv (p = e inv) and
    c = max + log(sum e) (log p = x - c).

    Every term is >= 0, so no term cancels another and nearly equal rows keep their relative
    precision (the textbook sums subtract large logs): KL = sum pa psi(t), t = log(pa / pb) =
    xa - xb - (ca - cb) exactly from the logits (also where pb underflowed), psi(t) = t - 1 + e^-t
    (a series for |t| <= 1/2); JS = 1/4 sum (pa + pb) g(d), d = (pa - pb) / (pa + pb)."""
    n = x.shape[1]
    for q in range(lo, hi):
        a = pa_rows[q]
        b = pb_rows[q]
        xa, xb, ea, eb = x[a], x[b], e[a], e[b]
        ia, ib = inv[a], inv[b]
        dc = c[a] - c[b]
        kl = 0.0
        js = 0.0
        for i in range(n):
            pa = ea[i] * ia
            pb = eb[i] * ib
            t = np.float64(xa[i]) - np.float64(xb[i]) - dc  # log(pa / pb)
            if pa > 0.0:
                if -0.5 <= t <= 0.5:
                    kl += pa * _psi_t2(t) * t * t
                else:
                    kl += pa * t - pa + pb
            else:
                kl += pb
            s = pa + pb
            if s > 0.0:
                # d = (pa - pb) / (pa + pb) = tanh(t / 2), exact from the logits where both are > 0
                d = np.tanh(0.5 * t) if pa > 0.0 and pb > 0.0 else (1.0 if pa > 0.0 else -1.0)
                u = d * d
                if u <= 0.25:
                    js += s * _g_u(u)
                else:
                    lo_ = 1.0 - d
                    hi_ = 1.0 + d
                    js += s * ((hi_ * np.log(hi_) if hi_ > 0.0 else 0.0) + (lo_ * np.log(lo_) if lo_ > 0.0 else 0.0))
        out[q, 0] = kl
        out[q, 1] = 0.25 * js
