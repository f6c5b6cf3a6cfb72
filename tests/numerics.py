"""Tolerances from the quantity's scale, not from one machine's rounding.

Two float32 computations of the same activations that sum in different orders (padded
batches vs single prompts, batch sizes, prefix reuse) differ by rounding that compounds
over the layers: about float32 eps x depth, relative to the size of the vector.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def depth_tolerance(depth: int, margin: float = 10.0) -> float:
    """Relative error allowed after ``depth`` layers of float32 work."""
    return margin * EPS32 * (depth + 1)


def assert_vectors_close(actual, expected, depth: int, scale=None) -> None:
    """Each vector (last axis) within ``depth_tolerance`` of ``expected``, relative to the norm of
    ``scale`` (default: ``expected`` itself; give the residual when comparing a difference of two)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    ref = np.linalg.norm(np.asarray(expected if scale is None else scale, np.float64), axis=-1)
    err = np.linalg.norm(actual - expected, axis=-1)
    tol = depth_tolerance(depth)
    bad = err > tol * ref
    assert not bad.any(), f"relative error up to {(err / ref).max():.2e} > {tol:.2e} (depth {depth})"
