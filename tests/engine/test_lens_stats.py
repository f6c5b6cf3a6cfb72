"""engine.lens.lens_stats against a plain float64 NumPy reference (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import lens_stats as stats_mod
from engine.lens_stats import lens_stats


def reference(logits: np.ndarray, k: int, tracked: list[int], pairs: list[tuple[int, int]]):
    x = logits.astype(np.float64)
    logp = x - x.max(axis=-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    p = np.exp(logp)
    entropy = -(p * logp).sum(axis=-1)
    # largest first, ties broken by the lower token id
    top = [sorted(range(x.shape[1]), key=lambda i, row=row: (-row[i], i))[:k] for row in logits]
    kl = [float((p[a] * (logp[a] - logp[b])).sum()) for a, b in pairs]
    js = []
    for a, b in pairs:
        m = 0.5 * (p[a] + p[b])
        js.append(float(0.5 * (p[a] * (logp[a] - np.log(m))).sum() + 0.5 * (p[b] * (logp[b] - np.log(m))).sum()))
    ranks = [[int((row > row[t]).sum()) + 1 for t in tracked] for row in logits]
    return p, entropy, top, kl, js, ranks


@pytest.mark.parametrize("threads", ["one", "two"])
@pytest.mark.parametrize("vocab,k", [(50_000, 5), (50_000, 40), (3_000, 10), (700, 3)])
def test_matches_float64_reference(vocab, k, threads, monkeypatch):
    if threads == "two":  # rows and pairs split between this thread and the worker
        monkeypatch.setattr(stats_mod, "_PARALLEL_FROM", 0)
    rng = np.random.default_rng(vocab + k)
    rows = 12
    # spreads from flat to very peaked (logit ranges past 87 nats, where float32 exp underflows)
    logits = (rng.standard_normal((rows, vocab)) * np.linspace(0.5, 25, rows)[:, None]).astype(np.float32)
    logits[3, [10, 20, 30]] = logits[3].max() + 1.0  # a three-way tie at the top
    pairs = [(i, i + 1) for i in range(rows - 1)] + [(0, 11), (7, 2), (5, 5)]  # consecutive and gathered
    tracked = [10, 20, vocab - 1]
    st = lens_stats(logits, k, tracked, pairs)
    p, entropy, top, kl, js, ranks = reference(logits, k, tracked, pairs)
    assert st.top_ids == top
    assert st.top_ids[3][:3] == [10, 20, 30]
    np.testing.assert_allclose(st.top_probs, np.take_along_axis(p, np.array(top), axis=-1), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(st.entropy, entropy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.kl, kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(st.js, js, rtol=1e-4, atol=1e-6)
    assert st.kl[-1] == 0.0 and st.js[-1] < 1e-6  # a row against itself (float32 rounding of the mixture)
    np.testing.assert_allclose(st.tracked_probs, p[:, tracked], rtol=1e-5, atol=1e-12)
    assert st.tracked_ranks == ranks


def test_repeated_calls_reuse_buffers_without_leaking_values():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 2048)).astype(np.float32)
    b = (rng.standard_normal((4, 2048)) * 9).astype(np.float32)
    first = lens_stats(a, 3, [1], [(0, 1)])
    lens_stats(b, 3, [1], [(0, 1), (2, 3)])
    assert lens_stats(a, 3, [1], [(0, 1)]) == first
