"""The lens's unembedding product on the CPU: logits [rows, vocab] = h [rows, hidden] @ W.T, for up
to a few hundred rows against the stored [vocab, hidden] float32 matrix, compiled by numba.

Why not MLX's matmul: on the CPU that is OpenBLAS's SGEMM, which packs all of W into its own
layout on every call, whatever the row count. For SmolLM2's head (49,152 x 576) the packing is
~10 ms of every product (``perf``: 62% of the time in ``sgemm_incopy``), against 3.7 ms to read W
once. This loop reads W in place, four vocabulary rows at a time (they stay in L1 while every
six-row block of ``h`` passes over them), with 24 float32 accumulators that LLVM vectorises along
the hidden axis, and splits the vocabulary over the compute threads (``engine.parallel``).
``bench/unembed_head.py`` on the 2-core host, MLX/OpenBLAS -> this loop: SmolLM2 5 rows 11.8 ->
6.0 ms, 30 rows 19.4 -> 13.5 ms, 256 rows 101 -> 97 ms; Gemma 3 270M (262,144 x 640) 18 rows 97 ->
62 ms (docs/PERFORMANCE.md). ``engine.lens.fast_lens_logits`` decides when it is used.

Accumulation is float32, as in SGEMM; only the order of the sums differs (``reassoc``/``contract``
fast-math only, so NaN and infinity propagate). ``cache=True`` and the explicit signature: compiled
once per machine and loaded at import (``engine.distributions.prepare`` does it in the background).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.parallel import split

ROWS = 6  # rows of h per block (the caller's rows are padded to a multiple)
COLS = 4  # vocabulary rows of W per block
_PARALLEL_FROM = 1 << 22  # multiply-adds from which the vocabulary is split over threads


@njit("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], int64, int64)", cache=True, nogil=True,
      fastmath={"reassoc", "contract"}, error_model="numpy", boundscheck=False)
def _block_rows(h, w, out, v0, v1):  # pragma: no cover - compiled
    """out[:, v0:v1] = h @ w[v0:v1].T for h's rows in blocks of ROWS and v1 - v0 a multiple of COLS."""
    rows, hidden = h.shape
    for v in range(v0, v1, COLS):
        for r in range(0, rows, ROWS):
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = a20 = a21 = a22 = a23 = np.float32(0.0)
            a30 = a31 = a32 = a33 = a40 = a41 = a42 = a43 = a50 = a51 = a52 = a53 = np.float32(0.0)
            for k in range(hidden):
                w0 = w[v + 0, k]; w1 = w[v + 1, k]; w2 = w[v + 2, k]; w3 = w[v + 3, k]
                x = h[r + 0, k]
                a00 += x * w0; a01 += x * w1; a02 += x * w2; a03 += x * w3
                x = h[r + 1, k]
                a10 += x * w0; a11 += x * w1; a12 += x * w2; a13 += x * w3
                x = h[r + 2, k]
                a20 += x * w0; a21 += x * w1; a22 += x * w2; a23 += x * w3
                x = h[r + 3, k]
                a30 += x * w0; a31 += x * w1; a32 += x * w2; a33 += x * w3
                x = h[r + 4, k]
                a40 += x * w0; a41 += x * w1; a42 += x * w2; a43 += x * w3
                x = h[r + 5, k]
                a50 += x * w0; a51 += x * w1; a52 += x * w2; a53 += x * w3
            out[r + 0, v + 0] = a00; out[r + 0, v + 1] = a01; out[r + 0, v + 2] = a02; out[r + 0, v + 3] = a03
            out[r + 1, v + 0] = a10; out[r + 1, v + 1] = a11; out[r + 1, v + 2] = a12; out[r + 1, v + 3] = a13
            out[r + 2, v + 0] = a20; out[r + 2, v + 1] = a21; out[r + 2, v + 2] = a22; out[r + 2, v + 3] = a23
            out[r + 3, v + 0] = a30; out[r + 3, v + 1] = a31; out[r + 3, v + 2] = a32; out[r + 3, v + 3] = a33
            out[r + 4, v + 0] = a40; out[r + 4, v + 1] = a41; out[r + 4, v + 2] = a42; out[r + 4, v + 3] = a43
            out[r + 5, v + 0] = a50; out[r + 5, v + 1] = a51; out[r + 5, v + 2] = a52; out[r + 5, v + 3] = a53


def unembed(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``h @ w.T`` in float32: h [n, hidden], w [vocab, hidden] C-contiguous float32 -> [n, vocab]."""
    n, hidden = h.shape
    vocab = w.shape[0]
    if w.dtype != np.float32 or not w.flags.c_contiguous or w.shape[1] != hidden:
        raise ValueError("unembed needs a C-contiguous float32 [vocab, hidden] matrix")
    rows = -(-n // ROWS) * ROWS
    x = np.zeros((rows, hidden), np.float32)
    x[:n] = h
    out = np.empty((rows, vocab), np.float32)
    blocks = vocab - vocab % COLS
    split(lambda lo, hi: _block_rows(x, w, out, lo, hi), blocks, rows * vocab * hidden >= _PARALLEL_FROM, COLS)
    if blocks < vocab:  # the last vocab % COLS rows of W
        out[:, blocks:] = x @ w[blocks:].T
    return out[:n]
