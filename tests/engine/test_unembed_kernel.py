"""engine.unembed_kernel (the lens's CPU unembedding product) against float64 NumPy, and the lens
reading the same logits through it as through MLX's matmul."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from engine import lens as lens_mod
from engine import parallel
from engine import unembed_kernel as kern
from engine.hooks import HookedModel
from engine.unembed_kernel import unembed


def _bound(h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Higham & Mary's probabilistic bound (lambda = 1) on a float32 dot product of K terms:
    sqrt(K) * u * sum_k |h_k w_k|, per output entry."""
    return np.sqrt(h.shape[1]) * np.finfo(np.float32).eps * (np.abs(h.astype(np.float64)) @ np.abs(w.astype(np.float64)).T)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n,vocab,hidden", [(1, 4, 1), (5, 1001, 64), (6, 8, 5), (7, 4099, 160), (13, 3, 7), (30, 2050, 96)])
def test_matches_float64_product(n, vocab, hidden, threads, monkeypatch):
    monkeypatch.setattr(kern, "_PARALLEL_FROM", 0)  # split whenever there are enough blocks
    monkeypatch.setattr(parallel, "thread_count", lambda: threads)
    rng = np.random.default_rng(n * 1000 + vocab)
    h = (rng.standard_normal((n, hidden)) * 3).astype(np.float32)
    w = rng.standard_normal((vocab, hidden)).astype(np.float32)
    out = unembed(h, w)
    assert out.shape == (n, vocab) and out.dtype == np.float32 and out.flags.c_contiguous
    exact = h.astype(np.float64) @ w.astype(np.float64).T
    assert (np.abs(out - exact) <= _bound(h, w)).all()


def test_non_finite_values_propagate():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((8, 32)).astype(np.float32)
    w = rng.standard_normal((10, 32)).astype(np.float32)
    h[2, 5] = np.nan
    w[7, 0] = np.inf
    out = unembed(h, w)
    assert np.isnan(out[2]).all()  # a NaN in a row poisons the whole row, never a silent 0
    others = [r for r in range(8) if r != 2]
    assert np.isinf(out[others, 7]).all()
    keep = [v for v in range(10) if v != 7]
    exact = h.astype(np.float64) @ w.astype(np.float64).T
    assert (np.abs(out[np.ix_(others, keep)] - exact[np.ix_(others, keep)]) <= _bound(h, w)[np.ix_(others, keep)]).all()


def test_refuses_a_matrix_it_cannot_read_in_place():
    h = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError):
        unembed(h, np.ones((4, 8), np.float32).T)  # not C-contiguous
    with pytest.raises(ValueError):
        unembed(h, np.ones((8, 4), np.float64))
    with pytest.raises(ValueError):
        unembed(h, np.ones((8, 5), np.float32))


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_gemma"])
def test_lens_logits_kernel_equals_mlx_matmul(family, request, monkeypatch):
    """fast_lens_logits through the kernel and through MLX's matmul (KERNEL_ROWS = 0) read the same
    logits: each within float32 rounding of the float64 product (Gemma: through its soft-cap, whose
    tanh has slope <= 1, plus its own rounding)."""
    lm = request.getfixturevalue(family)
    hm = HookedModel(lm)
    rng = np.random.default_rng(1)
    resid = mx.array((rng.standard_normal((7, lm.info.hidden_size)) * 4).astype(np.float32))
    via_kernel = lens_mod.fast_lens_logits(hm, resid)
    monkeypatch.setattr(lens_mod, "KERNEL_ROWS", 0)
    via_mlx = lens_mod.fast_lens_logits(hm, resid)
    assert via_kernel.shape == via_mlx.shape == (7, lm.info.vocab_size)
    hn = np.array(hm.adapter.final_norm(hm.model)(resid), dtype=np.float64)
    w = np.array(hm.adapter.unembed_weight(hm.model), dtype=np.float64)
    exact = hn @ w.T
    cap = hm.adapter.final_logit_softcap
    if cap:
        exact = np.tanh(exact / cap) * cap
    tol = _bound(hn, w) + 4 * np.finfo(np.float32).eps * np.abs(exact)
    for logits in (via_kernel, via_mlx):
        assert (np.abs(logits - exact) <= tol).all()
    assert not np.array_equal(via_kernel, np.zeros_like(via_kernel))


def test_macos_and_gpu_keep_mlx_matmul(tiny_llama, monkeypatch):
    """The loop replaces OpenBLAS's (or the reference) SGEMM on a Linux CPU only: with Accelerate
    (macOS) or on a GPU the head stays MLX's matmul."""
    import dataclasses

    from engine import blas
    from engine import unembed_kernel as uk

    hm = HookedModel(tiny_llama)
    resid = mx.array(np.random.default_rng(2).standard_normal((3, tiny_llama.info.hidden_size)).astype(np.float32))
    calls = []
    real = uk.unembed
    monkeypatch.setattr(uk, "unembed", lambda h, w: calls.append(h.shape) or real(h, w))
    lens_mod.fast_lens_logits(hm, resid)
    assert calls == [(3, tiny_llama.info.hidden_size)]
    monkeypatch.setattr(blas, "state", lambda: dataclasses.replace(blas.preload(), platform="darwin"))
    on_mac = lens_mod.fast_lens_logits(hm, resid)
    assert len(calls) == 1 and on_mac.shape == (3, tiny_llama.info.vocab_size)
