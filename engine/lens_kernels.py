"""Compiled (numba) loops behind ``engine.lens_stats``: one pass per statistic over a vocabulary row.

NumPy needs ~10 passes per row and its float32 ``exp``/``log`` run at ~2.5-3 ns per element on a
plain AVX2 machine; these loops fuse the passes and vectorise (8 float32 or 4 float64 lanes) with
branch-free ``exp``/``log`` (range reduction on the exponent bits plus a polynomial, relative error
~1e-7, like the float32 libm). Sums are accumulated in float64.

Kept separate from ``lens_stats`` so numba (import ~0.3 s, first compile ~2 s, then cached on
disk) is loaded only when a lens is computed.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# reassociation lets LLVM vectorise the reductions; no nnan/ninf, so -inf logits stay safe
_FM = {"reassoc", "contract", "arcp", "nsz"}
# error_model="numpy": no ZeroDivisionError check on float division (it blocks vectorisation)
_JIT = dict(nogil=True, fastmath=_FM, error_model="numpy", cache=True)
_INLINE = dict(inline="always", fastmath=_FM, error_model="numpy")

_I32 = ir.IntType(32)
_F32 = ir.FloatType()
_SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of sqrt(1/2)

EXP_FLOOR = np.float32(-87.0)  # exp below this is under float32's normal range: counted as 0
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split so n * _LN2_HI is exact
_LN2_LO = np.float32(-2.12194440e-4)
_TINY = np.float32(1e-38)


@intrinsic
def _pow2(typingctx, n):  # noqa: ARG001
    """2**n for an integral float32 n in [-126, 127], built from the exponent bits."""

    def codegen(context, builder, sig, args):  # noqa: ARG001
        i = builder.fptosi(args[0], _I32)
        bits = builder.shl(builder.add(i, ir.Constant(_I32, 127)), ir.Constant(_I32, 23))
        return builder.bitcast(bits, _F32)

    return types.float32(types.float32), codegen


@intrinsic
def _exponent(typingctx, m):  # noqa: ARG001
    """k of m = 2**k * f with f in [sqrt(1/2), sqrt(2)), as float32 (m positive and normal)."""

    def codegen(context, builder, sig, args):  # noqa: ARG001
        ix = builder.sub(builder.bitcast(args[0], _I32), ir.Constant(_I32, _SQRT_HALF_BITS))
        return builder.sitofp(builder.ashr(ix, ir.Constant(_I32, 23)), _F32)

    return types.float32(types.float32), codegen


@intrinsic
def _mantissa(typingctx, m):  # noqa: ARG001
    """f of m = 2**k * f with f in [sqrt(1/2), sqrt(2))."""

    def codegen(context, builder, sig, args):  # noqa: ARG001
        ix = builder.sub(builder.bitcast(args[0], _I32), ir.Constant(_I32, _SQRT_HALF_BITS))
        bits = builder.add(builder.and_(ix, ir.Constant(_I32, 0x7FFFFF)), ir.Constant(_I32, _SQRT_HALF_BITS))
        return builder.bitcast(bits, _F32)

    return types.float32(types.float32), codegen


@njit(**_INLINE)
def exp_neg(s):
    """exp(s) for float32 s in [-87, 0]: s = n ln2 + r, |r| <= ln2/2, e^r by its Taylor series."""
    n = np.float32(np.int32(s * _LOG2E - np.float32(0.5)))  # round(s log2 e); truncation rounds up here
    r = s - n * _LN2_HI - n * _LN2_LO
    p = np.float32(1.0 / 5040)
    p = p * r + np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * _pow2(n)


_LOG_P = tuple(np.float32(c) for c in (  # Cephes logf: log(1+x) = x - x^2/2 + x^3 P(x), x in [sqrt(1/2)-1, sqrt(2)-1]
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1))


@njit(**_INLINE)
def log_pos(m):
    """log(m) for a positive normal float32 m: m = 2^k f, f in [sqrt(1/2), sqrt(2)), log f by Cephes'
    polynomial (no division)."""
    k = _exponent(m)
    x = _mantissa(m) - np.float32(1.0)
    z = x * x
    p = _LOG_P[0]
    p = p * x + _LOG_P[1]
    p = p * x + _LOG_P[2]
    p = p * x + _LOG_P[3]
    p = p * x + _LOG_P[4]
    p = p * x + _LOG_P[5]
    p = p * x + _LOG_P[6]
    p = p * x + _LOG_P[7]
    p = p * x + _LOG_P[8]
    y = p * x * z + k * _LN2_LO - np.float32(0.5) * z
    return x + y + k * _LN2_HI


@njit(**_JIT)
def row_max(x):
    m = x[0]
    for i in range(x.shape[0]):
        v = x[i]
        m = v if v > m else m
    return m


@njit(**_JIT)
def row_exp(x, top, e):
    """e[i] = exp(x[i] - top) (0 below -87 nats); returns (Z, sum e * (x - top)) in float64."""
    z = 0.0
    es = 0.0
    for i in range(x.shape[0]):
        s = x[i] - top
        ok = s > EXP_FLOOR
        sc = s if ok else EXP_FLOOR
        v = exp_neg(sc)
        v = v if ok else np.float32(0.0)
        e[i] = v
        z += v
        es += np.float64(v) * np.float64(sc)
    return z, es


@njit(**_JIT)
def count_above(x, t):
    """How many entries of x are greater than t."""
    n = 0
    for i in range(x.shape[0]):
        n += 1 if x[i] > t else 0
    return n


@njit(**_JIT)
def top_k(x, k, out):
    """Ids of the k largest entries of x into out[:k], largest first, ties by the lower id."""
    vals = np.empty(k, np.float32)
    n = 0
    for i in range(x.shape[0]):
        v = x[i]
        if n == k and not v > vals[k - 1]:
            continue
        j = n if n < k else k - 1  # insert after every entry >= v (keeps the lower id first on ties)
        while j > 0 and vals[j - 1] < v:
            vals[j] = vals[j - 1]
            out[j] = out[j - 1]
            j -= 1
        vals[j] = v
        out[j] = i
        if n < k:
            n += 1


# g(d) = (1+d) log(1+d) + (1-d) log(1-d) = sum_n d^(2n) / (n (2n-1)); 10 terms: 2e-8 relative for |d| <= 1/2
_G = tuple(np.float32(1.0 / (n * (2 * n - 1))) for n in range(10, 0, -1))


@njit(**_INLINE)
def _g(d):
    """g(d) for d in [-1, 1]: the series near 0 (no cancellation), the logs beyond |d| = 1/2."""
    u = d * d
    p = _G[0]
    p = p * u + _G[1]
    p = p * u + _G[2]
    p = p * u + _G[3]
    p = p * u + _G[4]
    p = p * u + _G[5]
    p = p * u + _G[6]
    p = p * u + _G[7]
    p = p * u + _G[8]
    p = p * u + _G[9]
    hi = np.float32(1.0) + d
    lo = np.float32(1.0) - d  # exact for |d| >= 1/2
    lo_safe = lo if lo > _TINY else _TINY
    by_logs = hi * log_pos(hi) + lo * log_pos(lo_safe)
    return p * u if u <= np.float32(0.25) else by_logs


# psi(t) = t - 1 + e^-t = sum_{n>=2} (-t)^n / n!; 9 terms: 3e-9 relative for |t| <= 1/2
_PSI = tuple(np.float32((-1) ** n / math.factorial(n)) for n in range(10, 1, -1))


@njit(**_INLINE)
def _psi_series(t):
    p = _PSI[0]
    p = p * t + _PSI[1]
    p = p * t + _PSI[2]
    p = p * t + _PSI[3]
    p = p * t + _PSI[4]
    p = p * t + _PSI[5]
    p = p * t + _PSI[6]
    p = p * t + _PSI[7]
    p = p * t + _PSI[8]
    return p * t * t


_CHUNK = 256  # terms are summed in float32 within a chunk (8 lanes), the chunks in float64


@njit(**_JIT)
def kl_js(xa, ea, ia, xb, eb, ib, dc):
    """(KL(P_a || P_b), JS(P_a, P_b)) for rows with logits x, unnormalised probabilities
    e = exp(x - max) and inverse sums i (p = e i); dc = c_a - c_b, c = max + log(sum e).

    Every term is >= 0 and computed to float32 precision, so no term cancels another and nearly
    equal rows keep their relative precision (the textbook sums subtract large logs):
    KL = sum pa psi(t), t = log(pa / pb) = xa - xb - dc exactly from the logits (also where pb
    underflowed), psi(t) = t - 1 + e^-t; JS = 1/4 sum (pa + pb) g(d), d = (pa - pb) / (pa + pb)."""
    n = xa.shape[0]
    kl = 0.0
    js = 0.0
    for start in range(0, n, _CHUNK):
        kl_part = np.float32(0.0)
        js_part = np.float32(0.0)
        for i in range(start, min(start + _CHUNK, n)):
            pa = ea[i] * ia
            pb = eb[i] * ib
            t = (xa[i] - xb[i]) - dc
            small = t <= np.float32(0.5) and t >= np.float32(-0.5)
            term = pa * _psi_series(t) if small else pa * t - pa + pb
            kl_part += term if pa > np.float32(0.0) else pb
            s = pa + pb
            d = (pa - pb) / s if s > np.float32(0.0) else np.float32(0.0)
            js_part += s * _g(d)
        kl += np.float64(kl_part)
        js += np.float64(js_part)
    return kl, 0.25 * js
