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


def _elementwise(op: str):
    """out[i] = op(x[i]) compiled from the kernels' own IR helpers (exp_neg, log_pos, js_g)."""
    import ctypes

    from llvmlite import ir

    from engine.lens_kernels import I64, PF32, _Fn, compile_module

    module = ir.Module()
    fn = _Fn(module, "f", ir.VoidType(), [PF32, PF32, I64])
    x, out, n = fn.args

    def body(i, carried):
        fn.b.store(getattr(fn, op)(fn.load(x, i)), fn.b.gep(out, [i]))
        return []

    fn.loop(ir.Constant(I64, 0), n, [], body)
    fn.b.ret_void()
    engine, _ = compile_module(module)
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(engine.get_function_address("f"))

    def apply(a: np.ndarray) -> np.ndarray:
        a = np.ascontiguousarray(a, np.float32)
        res = np.empty_like(a)
        f(a.ctypes.data, res.ctypes.data, a.shape[0])
        return res.astype(np.float64)

    apply.engine = engine  # keep the code alive
    return apply


def test_kernel_exp_log_and_js_term_match_float64():
    """The compiled loops' own exp, log and JS term g(d) against float64 NumPy over their whole ranges."""
    s = np.linspace(-87, 0, 200_001).astype(np.float32)
    ref = np.exp(s.astype(np.float64))
    assert np.max(np.abs(_elementwise("exp_neg")(s) - ref) / ref) < 2e-7
    m = np.exp(np.linspace(np.log(1.2e-38), np.log(3e38), 200_001)).astype(np.float32)
    ref = np.log(m.astype(np.float64))
    assert np.max(np.abs(_elementwise("log_pos")(m) - ref) / np.maximum(np.abs(ref), 1e-3)) < 2e-7
    d = np.linspace(-1, 1, 200_001).astype(np.float32)[1:-1]
    x = d.astype(np.float64)
    ref = (1 + x) * np.log1p(x) + (1 - x) * np.log1p(-x)
    assert np.max(np.abs(_elementwise("js_g")(d) - ref) / np.maximum(ref, 1e-300)) < 1e-6  # relative, to d ~ 1e-5


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
