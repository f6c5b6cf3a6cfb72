"""Undoing what llama.cpp's converter did to tensor values (convert_hf_to_gguf.py, LlamaModel).

- ``unpermute``: the inverse of ``LlamaModel.permute``, which reorders Q and K rows for
  ggml's interleaved RoPE; mlx-lm rotates halves, so the rows go back to Hugging Face order.
- ``interleave_qkv``: the inverse of GPTNeoXModel.modify_tensors, which turns GPT-NeoX's
  per-head interleaved ``query_key_value`` rows into [Q; K; V] blocks.
- ``llama3_scaling``: Llama 3.x's ``rope_freqs`` tensor (per-frequency divisors computed
  from the checkpoint's llama3 ``rope_scaling``) back to that ``rope_scaling``, checked
  against the tensor, for mlx-lm's ``Llama3RoPE``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.errors import UnsupportedArchitecture


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's ``LlamaModel.permute`` (rows of Q or K, weight or bias)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def interleave_qkv(w: np.ndarray, n_head: int) -> np.ndarray:
    """[Q; K; V] row blocks (llama.cpp's gptneox) back to GPT-NeoX's per-head [q k v] rows."""
    return w.reshape(3, n_head, w.shape[0] // 3 // n_head, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)


def llama3_factors(base: float, dim: int, factor: float, low: float, high: float, original: float) -> np.ndarray:
    """The ``rope_freqs`` llama.cpp's converter writes for a llama3 rope_scaling (LlamaModel.generate_extra_tensors)."""
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < original / high, 1.0, np.where(wavelen > original / low, factor, mid))


def llama3_scaling(rope_freqs: np.ndarray, base: float, dim: int, source: str) -> dict[str, Any] | None:
    """mlx-lm's llama3 rope_scaling that reproduces a file's ``rope_freqs`` tensor, or a refusal.

    Only the ratios original/low and original/high enter the computation, so the original
    context is fixed at Llama 3's 8192 and the two factors are solved from the tensor.
    """
    rf = np.asarray(rope_freqs, dtype=np.float64).reshape(-1)
    if rf.shape[0] != dim // 2:
        raise UnsupportedArchitecture(f"{source}: rope_freqs has {rf.shape[0]} entries, expected {dim // 2}")
    if np.allclose(rf, 1.0, rtol=0, atol=1e-7):
        return None
    original = 8192.0
    factor = float(rf.max())
    wavelen = 2 * math.pi * base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    tol = 1e-6 * factor
    ones, full = np.abs(rf - 1.0) <= tol, np.abs(rf - factor) <= tol
    mid = ~(ones | full)
    fail = UnsupportedArchitecture(f"{source}: the rope_freqs tensor is not a llama3 RoPE scaling lazarus can reconstruct")
    if factor <= 1.0:
        raise fail
    inv_w = 1.0 / wavelen
    smooth = (1.0 / rf - 1.0 / factor) / (1.0 - 1.0 / factor)
    hi_edge = wavelen[ones].max() if ones.any() else 0.0  # longest wavelength left unscaled
    lo_edge = wavelen[full].min() if full.any() else np.inf  # shortest wavelength fully scaled
    # smooth = (1/w - a) / (b - a) with a = low/original, b = high/original
    if mid.sum() >= 2:
        slope, intercept = np.polyfit(inv_w[mid], smooth[mid], 1)
        a = -intercept / slope
        b = a + 1.0 / slope
    elif mid.sum() == 1:  # one point: put the upper edge between it and the last unscaled wavelength
        w_m, s_m = wavelen[mid][0], smooth[mid][0]
        b = 1.0 / (np.sqrt(hi_edge * w_m) if hi_edge else w_m / 2)
        a = (1.0 / w_m - s_m * b) / (1.0 - s_m)
    else:  # a step: both edges between the last unscaled and the first scaled wavelength
        g = np.sqrt(hi_edge * lo_edge) if hi_edge else lo_edge / 4
        b, a = 1.0 / g, 1.0 / np.sqrt(g * lo_edge)
    if not (0 < a < b):
        raise fail
    low, high = (float(np.round(x * original, 6)) for x in (a, b))  # 0.99999998 -> 1.0 when the check allows
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
               "high_freq_factor": high, "original_max_position_embeddings": int(original)}
    again = llama3_factors(base, dim, factor, low, high, original)
    if not np.allclose(again, rf, rtol=1e-5, atol=0):
        raise fail
    return scaling
