"""engine.distributions against plain float64 NumPy references (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import distributions as stats_mod
from engine.distributions import kl_js, lens_stats, log_softmax, token_probs_ranks
from engine.errors import AnalysisError


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


def test_series_terms_match_float64():
    """The loops' series for psi(t) = t - 1 + e^-t (|t| <= 1/2) and g(d) (d^2 <= 1/4) against
    float64 closed forms where those have no cancellation to speak of."""
    from engine.distribution_kernels import _g_u, _psi_t2

    for t in np.linspace(-0.5, 0.5, 1001):
        if abs(t) > 1e-2:
            ref = (t - 1 + np.exp(-t)) / t**2
        else:
            ref = 0.5 - t / 6 + t**2 / 24 - t**3 / 120
        assert abs(_psi_t2(t) - ref) <= 1e-14 + 1e-9 * abs(ref)
    for d in np.linspace(-0.5, 0.5, 1001):
        ref = (1 + d) * np.log1p(d) + (1 - d) * np.log1p(-d)
        assert abs(_g_u(d * d) - ref) <= 1e-15 + 1e-9 * ref


def test_nearly_equal_rows_keep_relative_precision():
    """Consecutive late layers differ very little; KL and JS must stay accurate relative to their own
    (tiny) size, not to the entropies they would be computed from with the textbook formula."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(50_000) * 4
    rows = np.stack([base, base + 1e-3 * rng.standard_normal(50_000)]).astype(np.float32)
    st = lens_stats(rows, 3, [], [(0, 1), (1, 0)])
    x = rows.astype(np.float64)
    logp = x - x.max(axis=-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    p = np.exp(logp)
    kl = (p[0] * (logp[0] - logp[1])).sum()
    # JS in float64 by the same stable series: 1/4 sum (pa+pb) g(d), g(d) ~ d^2 for tiny d
    d = (p[0] - p[1]) / (p[0] + p[1])
    js = 0.25 * ((p[0] + p[1]) * (d**2 + d**4 / 6)).sum()
    assert 1e-8 < js < 1e-6  # the regime where float32 log differences would swamp it
    np.testing.assert_allclose(st.js, [js, js], rtol=1e-3)
    np.testing.assert_allclose(st.kl[0], kl, rtol=1e-4)


def test_minus_infinity_logits_count_as_zero_probability():
    x = np.array([[0.0, 1.0, -np.inf, 2.0], [2.0, -np.inf, 0.5, 0.0]], np.float32)
    st = lens_stats(x, 2, [2], [(0, 1), (1, 0)])
    finite = np.where(np.isfinite(x), x, -1e30).astype(np.float64)
    p = np.exp(finite - finite.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(st.entropy, [-(q[q > 0] * np.log(q[q > 0])).sum() for q in p], rtol=1e-6)
    assert st.top_ids == [[3, 1], [0, 2]]
    assert lens_stats(x, 4, [], []).top_ids == [[3, 1, 0, 2], [0, 2, 3, 1]]  # fewer than k finite: -inf last
    assert st.tracked_probs[0] == [0.0] and st.tracked_ranks[0] == [4]
    # each row puts mass where the other has none: KL is infinite, JS finite and at most ln 2
    assert st.kl == [np.inf, np.inf]
    with np.errstate(divide="ignore", invalid="ignore"):
        js = 0.5 * sum((q * np.log(q / (0.5 * (p[0] + p[1]))))[q > 0].sum() for q in p)
    np.testing.assert_allclose(st.js, [js, js], rtol=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_plus_inf_logits_are_an_error_naming_the_row(bad):
    """A NaN logit is never a token of probability 0: the row has no distribution, and every
    statistic refuses it with one message naming the row."""
    x = np.random.default_rng(1).standard_normal((3, 1000)).astype(np.float32)
    x[1, 500] = bad
    with pytest.raises(AnalysisError, match="layer 7"):
        lens_stats(x, 3, [2], [(0, 1)], row_names=["layer 6", "layer 7", "layer 8"])
    with pytest.raises(AnalysisError, match="row 1"):
        log_softmax(x)
    with pytest.raises(AnalysisError, match="row 1"):
        token_probs_ranks(x, [0, 0, 0])
    with pytest.raises(AnalysisError):
        kl_js(x[:2], x[1:])
    x[1] = -np.inf  # no finite logit at all
    with pytest.raises(AnalysisError, match="row 1"):
        lens_stats(x, 3, [], [])


def test_helpers_match_lens_stats_and_reference():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 5000)) * 6).astype(np.float32)
    ids = [7, 8, 9, 10]
    probs, ranks = token_probs_ranks(x, ids)
    p, _, _, _, _, ref_ranks = reference(x, 1, ids, [])
    np.testing.assert_allclose(probs, p[range(4), ids], rtol=1e-6)
    assert ranks.tolist() == [ref_ranks[r][r] for r in range(4)]
    np.testing.assert_allclose(np.exp(log_softmax(x)), p, rtol=1e-6, atol=1e-15)
    kl, js = kl_js(x[:2], x[2:])
    st = lens_stats(x, 1, [], [(0, 2), (1, 3)])
    assert kl == st.kl and js == st.js and min(kl) > 0
