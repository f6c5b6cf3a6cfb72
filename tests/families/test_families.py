"""Every family the factory builds, run through lazarus: the hooked forward is the model's own.

Per family (a tiny random instance, float32) against its twin (tests/families/oracle.py): the
hooked forward with no intervention equals the model's forward (full prompt, token by token
through the KV cache, a left-padded batch, prompts past every sliding window, a pass started at
a middle layer), the last-layer lens equals the model's logits, and every site the family claims
captures with the right shape and adds up. A family the engine refuses (``UnsupportedArchitecture``)
is an expected failure; anything else (a wrong number, a crash) fails.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, SiteKind
from tests.families.factory import SLIDING, WINDOW, build_tiny, tiny_tokenizer
from tests.families.oracle import (
    CHANGED,
    PROMPT,
    TOL,
    claimed_kinds,
    logits_of,
    maxdiff,
    new_kv,
    refusal_is_xfail,
)

# ---------------------------------------------------------------------------------------------
# the factory itself: the model's own forward is sound (no lazarus involved)


def test_native_forward_and_cache(fam):
    S, vocab = len(fam.ids), fam.tok.vocab_size
    assert fam.native.shape == (1, S, vocab)
    assert bool(mx.all(mx.isfinite(fam.native)).item())
    assert float(fam.native.std().item()) > 1e-3  # not a constant function
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(fam.ref)
    pre = logits_of(fam.ref, [fam.ids[:3]], cache)
    assert maxdiff(pre[0], fam.native[0, :3]) < TOL
    for j in range(3, S):
        step = logits_of(fam.ref, [[fam.ids[j]]], cache)
        assert maxdiff(step[0, 0], fam.native[0, j]) < TOL, f"{fam.name}: mlx-lm's own cache at token {j}"


@pytest.mark.parametrize("name", SLIDING)
def test_the_prompt_runs_past_the_sliding_window(name):
    """The tests' prompt is long enough that the window changes the result (not vacuously 'past' it)."""
    ids = tiny_tokenizer().encode(PROMPT)
    windowed, _ = build_tiny(name)
    unwindowed, _ = build_tiny(name, sliding_window=len(ids) + 1)
    assert maxdiff(logits_of(windowed, [ids]), logits_of(unwindowed, [ids])) > CHANGED


# ---------------------------------------------------------------------------------------------
# the hooked forward equals the model's own


def test_hooked_equals_native_full_prompt(fam):
    hm = fam.hooked()
    with refusal_is_xfail(fam.name):
        plain = hm.forward(Batch.from_lists([fam.ids]), logits="all").logits
        every = CaptureSpec(kinds=claimed_kinds(hm), layers=None, positions="all")
        opened = hm.forward(Batch.from_lists([fam.ids]), logits="all", capture=every).logits
    assert maxdiff(plain, fam.native) < TOL
    assert maxdiff(opened, fam.native) < TOL  # capturing every site computes attention in the open


def test_hooked_kv_cache_token_by_token(fam):
    hm = fam.hooked()
    S = len(fam.ids)
    with refusal_is_xfail(fam.name):
        kv = new_kv(hm, [0])
        hm.forward(Batch.from_lists([fam.ids[:3]]), kv=kv, logits="none")
        for j in range(3, S):  # past every sliding window (S > 3 * WINDOW)
            step = hm.forward(Batch(mx.array([[fam.ids[j]]]), [0], [S]), kv=kv).logits
            assert maxdiff(step[0, 0], fam.native[0, j]) < TOL, f"{fam.name}: token {j} through the KV cache"


def test_hooked_left_padded_batch(fam):
    hm = fam.hooked()
    batch = Batch.from_lists([fam.short, fam.ids], pad_id=fam.tok.pad_id or 0)
    why = getattr(getattr(hm.adapter, "spec", None), "no_padding", None)
    with refusal_is_xfail(fam.name):
        try:
            out = hm.forward(batch, logits="all").logits
        except InputError:
            if not why:
                raise
            # only a family whose table says it cannot pad may refuse, in one clean line
            pytest.xfail(f"{fam.name} refuses left-padded batches: {why}")
    pad = batch.pad[0]
    assert pad > 0
    assert maxdiff(out[0, pad:], fam.native_short[0]) < TOL
    assert maxdiff(out[1], fam.native[0]) < TOL


def test_pass_from_a_middle_layer_equals_the_full_pass(fam):
    """Starting at layer L from the residual entering it (ablation prefix reuse, steering's shared
    prefix), and stopping early, give the full pass's numbers."""
    hm = fam.hooked()
    L = hm.n_layers // 2
    batch = Batch.from_lists([fam.ids])
    with refusal_is_xfail(fam.name):
        first = hm.forward(batch, logits="none", stop_layer=L)
        cap = CaptureSpec(kinds=(SiteKind.resid_pre,), layers=[L])
        resid = hm.forward(batch, logits="none", capture=cap).captures[f"blocks.{L}.resid_pre"]
        rest = hm.forward(batch, logits="all", start_layer=L, h=first.resid).logits
    assert first.resid is not None and maxdiff(first.resid, resid) == 0.0
    assert maxdiff(rest, fam.native) < TOL


def test_last_layer_lens_equals_logits(fam):
    from engine.lens import fast_lens_logits, lens_distributions

    hm = fam.hooked()
    with refusal_is_xfail(fam.name):
        cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=[hm.n_layers - 1], positions="all")
        resid = hm.forward(Batch.from_lists([fam.ids]), capture=cap, logits="none").captures[
            f"blocks.{hm.n_layers - 1}.resid_post"][0]
        exact, logp = lens_distributions(hm, resid)
        fast = fast_lens_logits(hm, resid)
    assert maxdiff(exact, fam.native[0]) < TOL
    assert maxdiff(mx.array(fast), fam.native[0]) < TOL
    np.testing.assert_allclose(np.exp(np.array(logp)).sum(-1), 1.0, atol=1e-5)


def test_every_claimed_site_captures(fam):
    hm = fam.hooked()
    kinds = claimed_kinds(hm)
    assert {SiteKind.resid_pre, SiteKind.resid_post} <= set(kinds), "every family has the residual sites"
    S, info = len(fam.ids), fam.lm.info
    sinks = any(k.endswith(".sinks") for k, _ in tree_flatten(fam.ref.parameters()))  # gpt_oss
    with refusal_is_xfail(fam.name):
        caps = hm.forward(Batch.from_lists([fam.ids]), logits="none",
                          capture=CaptureSpec(kinds=kinds, layers=None, positions="all")).captures
    widths = {SiteKind.resid_pre: info.hidden_size, SiteKind.resid_post: info.hidden_size,
              SiteKind.attn_out: info.hidden_size, SiteKind.mlp_out: info.hidden_size}
    for layer in range(hm.n_layers):
        for kind in kinds:
            key = f"blocks.{layer}.{kind.value}"
            if key not in caps:  # a kind may exist on some layers only (hybrids); the residual on all
                assert kind not in (SiteKind.resid_pre, SiteKind.resid_post), f"{fam.name}: {key} missing"
                continue
            value = caps[key]
            assert bool(mx.all(mx.isfinite(value)).item()), key
            if kind in widths:
                assert value.shape == (1, S, widths[kind]), (key, value.shape)
            elif kind == SiteKind.attn_pattern:
                assert value.shape[0] == 1 and value.shape[2:] == (S, S), (key, value.shape)
                rows = np.array(value).sum(-1)
                if sinks:  # a sink takes its share of the softmax: rows sum to at most 1
                    assert (rows > 0).all() and (rows <= 1 + 1e-5).all(), key
                else:
                    np.testing.assert_allclose(rows, 1.0, atol=1e-5)
            else:  # mlp_hidden (dense width or per expert), moe_router, ...: one row per token
                assert value.shape[:2] == (1, S), (key, value.shape)
        pre, post = caps[f"blocks.{layer}.resid_pre"], caps[f"blocks.{layer}.resid_post"]
        scale = max(1.0, float(mx.abs(post).max().item()))
        if layer + 1 < hm.n_layers:
            assert maxdiff(post, caps[f"blocks.{layer + 1}.resid_pre"]) == 0.0
        block = caps.get(f"blocks.{layer}.block_out")  # what the whole block adds, where the engine has it
        if block is not None:
            assert block.shape == pre.shape and maxdiff(pre + block, post) < 1e-5 * scale, f"{fam.name} {layer}"
        a, m = caps.get(f"blocks.{layer}.attn_out"), caps.get(f"blocks.{layer}.mlp_out")
        if a is not None and m is not None:  # each is "what it adds to the residual"
            assert maxdiff(pre + a + m, post) < 1e-5 * scale, f"{fam.name} layer {layer}: pre + attn + mlp != post"




def test_attention_patterns_are_causal_and_windowed(fam):
    """attn_pattern zero on the future, and beyond the window exactly where the family's own cache
    is a rotating one (the twin's ``make_cache`` says which layers slide, independent of lazarus)."""
    from mlx_lm.models.cache import RotatingKVCache, make_prompt_cache

    hm = fam.hooked()
    if SiteKind.attn_pattern not in claimed_kinds(hm):
        pytest.skip(f"{fam.name} claims no attn_pattern site")
    windows = [c.max_size if isinstance(c, RotatingKVCache) else None for c in make_prompt_cache(fam.ref)]
    with refusal_is_xfail(fam.name):
        caps = hm.forward(Batch.from_lists([fam.ids]), logits="none",
                          capture=CaptureSpec(kinds=(SiteKind.attn_pattern,), layers=None)).captures
    S = len(fam.ids)
    q, k = np.arange(S)[:, None], np.arange(S)[None, :]
    seen = 0
    for layer in range(hm.n_layers):
        key = f"blocks.{layer}.attn_pattern"
        if key not in caps:
            continue
        seen += 1
        pat = np.array(caps[key][0])  # [heads, S, S]
        assert np.abs(pat[:, k > q]).max() == 0.0, f"{fam.name} layer {layer} attends to the future"
        window = windows[layer] if layer < len(windows) else None
        outside = q - k >= (window or S + 1)
        if window is not None:
            assert np.abs(pat[:, outside]).max() == 0.0, f"{fam.name} layer {layer} sees past its window"
        else:
            assert pat[:, q - k >= WINDOW].max() > 0.0, f"{fam.name} global layer {layer} is windowed"
    assert seen > 0
