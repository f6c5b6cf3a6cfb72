"""Compiled loops behind ``engine.distributions``: fused passes over vocabulary rows.

numba compiles them (``cache=True``: machine code is kept on disk next to this file, or in numba's
user cache when that is read-only, so a fresh process loads it instead of compiling). The explicit
signatures make numba compile (or load) at import, never on a call with other argument types; the
import costs ~0.6 s of CPU the first time in a process, which ``prepare()`` moves to a background
thread while a model loads. ``nogil=True`` lets threads share the rows (``engine.parallel``).

The loops hold no transcendental function: numba (without Intel's SVML) calls the scalar libm for
those, ~20 ns an element, so ``exp`` and ``log`` are NumPy's (SIMD) over whole arrays between the
passes, and the loops left are polynomials and selects that LLVM vectorises. Every loop reads
C-contiguous float32 logits and accumulates in float64. Fast-math flags allow reassociation and
fused multiply-add only (no ``nnan``/``ninf``): NaN and infinity keep their IEEE meaning.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

EXP_FLOOR = -87.0  # exp below this is under float32's normal range: counted as 0
TINY = 1e-37  # the floor of the pair sums whose log NumPy takes (their terms are below 1e-40 there)
LOG2 = math.log(2.0)
# psi(t) = t - 1 + e^-t = sum_{n>=2} (-t)^n / n!, divided by t^2; 13 terms for |t| <= 1/2 (float64)
_PSI = tuple((-1) ** n / math.factorial(n) for n in range(14, 1, -1))
# g(d) = (1+d) log(1+d) + (1-d) log(1-d) = sum_n d^(2n) / (n (2n-1)), in u = d^2; 14 terms for u <= 1/4
_G = tuple(1.0 / (n * (2 * n - 1)) for n in range(14, 0, -1))
_FLAGS = {"reassoc", "contract"}
_OPTS: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": _FLAGS, "error_model": "numpy", "boundscheck": False}


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


@njit("void(float32[:, ::1], float32[::1], int64, int64, float32[:, ::1], float64[:, ::1])", **_OPTS)
def rows_sums(x, top, lo, hi, e, sums):
    """Rows lo..hi: e holds exp(x - top) (NumPy's); entries below -87 nats are set to 0 (no
    subnormals downstream); sums[r] = (sum e, sum e (x - top))."""
    n = x.shape[1]
    for r in range(lo, hi):
        xr, er, m = x[r], e[r], top[r]
        z = 0.0
        es = 0.0
        for i in range(n):
            s = xr[i] - m
            keep = s > EXP_FLOOR
            v = er[i] if keep else np.float32(0.0)
            er[i] = v
            z += np.float64(v)
            es += np.float64(v) * np.float64(s if keep else np.float32(0.0))  # 0, not 0 * -inf
        sums[r, 0] = z
        sums[r, 1] = es


@njit("void(float32[:, ::1], int64, int64, int64, int64[::1], int64[:, ::1], float32[:, ::1], int64[:, ::1])",
      **_OPTS)
def rows_top_ranks(x, lo, hi, k, tracked, top, vals, ranks):
    """Rows lo..hi: top[:, :k] = ids of the k largest, largest first, ties by lower id (-1 where
    fewer than k are > -inf; vals is scratch); ranks[:, j] = 1 + how many exceed x[tracked[j]]."""
    n = x.shape[1]
    for r in range(lo, hi):
        xr = x[r]
        if k > 0:
            vr, tr = vals[r], top[r]
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
                c += 1 if xr[i] > t else 0
            ranks[r, j] = c + 1


@njit("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[::1], int64[::1], int64[::1], int64, int64, "
      "float32[:, ::1], float64[:, ::1])", **_OPTS)
def pairs_near(x, e, inv, c, pa_rows, pb_rows, lo, hi, sbuf, out):
    """Pairs lo..hi (a = pa_rows[q], b = pb_rows[q]) of rows with logits x, unnormalised
    probabilities e = exp(x - max), inverse sums inv (p = e inv), c = max + log(sum e) (log p = x - c):
    out[q, 0] = KL(P_a || P_b); out[q, 1] = the part of 2 JS from entries with |d| <= 1/2;
    sbuf[q] = max(pa + pb, TINY), for ``pairs_far`` once NumPy has taken its log.

    Every term is >= 0, so no term cancels another and nearly equal rows keep their relative
    precision (the textbook sums subtract large logs): KL = sum pa psi(t), t = log(pa / pb) =
    xa - xb - (ca - cb) exactly from the logits (also where pb underflowed), psi(t) = t - 1 + e^-t
    (its series for |t| <= 1/2, else pa t - pa + pb); 2 JS = 1/2 sum s g(d), s = pa + pb,
    d = (pa - pb) / s, g(d) = (1+d) log(1+d) + (1-d) log(1-d) (its series for |d| <= 1/2)."""
    n = x.shape[1]
    for q in range(lo, hi):
        a, b = pa_rows[q], pb_rows[q]
        xa, xb, ea, eb, sq = x[a], x[b], e[a], e[b], sbuf[q]
        ia, ib = inv[a], inv[b]
        dc = c[a] - c[b]
        kl = 0.0
        js = 0.0
        for i in range(n):
            pa = ea[i] * ia
            pb = eb[i] * ib
            t = np.float64(xa[i]) - np.float64(xb[i]) - dc
            near_t = t * t <= 0.25
            tt = t if near_t else 0.0
            kl += (pa * _psi_t2(tt) * tt * tt if near_t else pa * t - pa + pb) if pa > 0.0 else pb
            s = pa + pb
            d = (pa - pb) / s if s > 0.0 else 0.0
            u = d * d
            js += s * _g_u(u) if u <= 0.25 else 0.0
            sq[i] = np.float32(s) if s > TINY else np.float32(TINY)
        out[q, 0] = kl
        out[q, 1] = 0.5 * js


@njit("void(float32[:, ::1], float32[:, ::1], float64[::1], float64[::1], int64[::1], int64[::1], int64, int64, "
      "float32[:, ::1], float64[:, ::1])", **_OPTS)
def pairs_far(x, e, inv, c, pa_rows, pb_rows, lo, hi, log_s, out):
    """Adds the entries with |d| > 1/2 to out[q, 1] (2 JS), with log_s = log(sbuf) of ``pairs_near``:
    pa log(pa / m) + pb log(pb / m), m = s / 2, log pa = xa - ca. These terms are >= 0.13 s each
    (g(1/2) / 2), so float32 logs lose nothing to cancellation; out[q, 1] becomes JS."""
    n = x.shape[1]
    for q in range(lo, hi):
        a, b = pa_rows[q], pb_rows[q]
        xa, xb, ea, eb, ls = x[a], x[b], e[a], e[b], log_s[q]
        ia, ib, ca, cb = inv[a], inv[b], c[a], c[b]
        js = 0.0
        for i in range(n):
            pa = ea[i] * ia
            pb = eb[i] * ib
            s = pa + pb
            d = (pa - pb) / s if s > 0.0 else 0.0
            if d * d > 0.25:
                lm = np.float64(ls[i]) - LOG2
                ta = pa * (np.float64(xa[i]) - ca - lm) if pa > 0.0 else 0.0
                tb = pb * (np.float64(xb[i]) - cb - lm) if pb > 0.0 else 0.0
                js += ta + tb
        out[q, 1] = 0.5 * (out[q, 1] + js)
