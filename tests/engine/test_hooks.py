"""The hooked forward equals the model's forward, and interventions do exactly what they say."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, KVState, Site, SiteKind

DENSE_SITES = tuple(k for k in SiteKind if k != SiteKind.moe_router)  # every site of a dense (non-MoE) model
EVERY_SITE = CaptureSpec(kinds=DENSE_SITES, layers=None, positions="all")


def ids_of(lm, text):
    return lm.tokenizer.encode(text)


def maxdiff(a, b):
    return float(mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max().item())


@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def tiny(request):
    return request.getfixturevalue(request.param)


def test_unhooked_and_fully_captured_forward_equal_native(tiny):
    # 11 tokens: longer than the tiny Gemma's sliding window of 4, so local layers really are windowed
    ids = ids_of(tiny, "one two three four five six seven eight nine ten eleven")
    assert len(ids) > 8
    native = tiny.model(mx.array([ids]))
    hm = HookedModel(tiny)
    plain = hm.forward(Batch.from_lists([ids]), logits="all").logits
    opened = hm.forward(Batch.from_lists([ids]), logits="all", capture=EVERY_SITE)
    assert maxdiff(native, plain) < 1e-5
    assert maxdiff(native, opened.logits) < 1e-5
    assert hm.site_kinds == DENSE_SITES
    assert len(opened.captures) == len(DENSE_SITES) * tiny.num_layers


def test_sliding_window_pattern_is_respected(tiny_gemma):
    ids = ids_of(tiny_gemma, "one two three four five six seven eight nine ten")
    hm = HookedModel(tiny_gemma)
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(kinds=(SiteKind.attn_pattern,)))
    window = tiny_gemma.adapter.sliding_window
    for layer in range(tiny_gemma.num_layers):
        pat = np.array(out.captures[f"blocks.{layer}.attn_pattern"][0])  # [H, S, K]
        np.testing.assert_allclose(pat.sum(-1), 1.0, atol=1e-5)
        q = np.arange(len(ids))[:, None]
        k = np.arange(len(ids))[None, :]
        future = k > q
        assert np.abs(pat[:, future]).max() == 0.0
        outside = q - k >= window
        if layer in tiny_gemma.adapter.sliding_layers:
            assert np.abs(pat[:, outside]).max() == 0.0
        else:  # global layers see the whole prefix
            assert pat[:, outside].max() > 0.0


def test_left_padded_batch_equals_each_prompt_alone(tiny):
    a, b = ids_of(tiny, "The capital of France is"), ids_of(tiny, "Hi")
    hm = HookedModel(tiny)
    both = hm.forward(Batch.from_lists([a, b]), logits="last").logits
    for row, ids in enumerate([a, b]):
        alone = tiny.model(mx.array([ids]))[:, -1]
        assert maxdiff(both[row], alone) < 1e-4


def test_kv_cache_token_by_token_equals_full_pass(tiny):
    ids = ids_of(tiny, "one two three four five six seven")
    native = tiny.model(mx.array([ids]))
    hm = HookedModel(tiny)
    kv = KVState(hm.n_layers, [0])
    hm.forward(Batch.from_lists([ids[:3]]), kv=kv, logits="none")
    for j in range(3, len(ids)):
        step = hm.forward(Batch(mx.array([[ids[j]]]), [0], [len(ids)]), kv=kv).logits
        assert maxdiff(step[0, 0], native[0, j]) < 1e-4


def test_neutral_interventions_change_nothing(tiny):
    ids = ids_of(tiny, "The capital of France is")
    hm = HookedModel(tiny)
    base = hm.forward(Batch.from_lists([ids])).logits
    zero_vec = [0.0] * tiny.info.hidden_size
    same = hm.forward(Batch.from_lists([ids]), interventions=[
        Intervention(site=Site(layer=1, kind=SiteKind.mlp_out), op="scale", factor=1.0),
        Intervention(site=Site(layer=0, kind=SiteKind.resid_post), op="add", vector=zero_vec),
    ]).logits
    assert maxdiff(base, same) == 0.0
    changed = hm.forward(Batch.from_lists([ids]), interventions=[
        Intervention(site=Site(layer=1, kind=SiteKind.mlp_out), op="zero")]).logits
    assert maxdiff(base, changed) > 1e-3


def test_zeroing_every_head_equals_zeroing_attention(tiny_llama):
    ids = ids_of(tiny_llama, "The capital of France is")
    hm = HookedModel(tiny_llama)
    site = Site(layer=1, kind=SiteKind.attn_out)
    whole = hm.forward(Batch.from_lists([ids]), interventions=[Intervention(site=site, op="zero")]).logits
    heads = [Intervention(site=site, op="zero", head=h) for h in range(tiny_llama.info.num_heads)]
    per_head = hm.forward(Batch.from_lists([ids]), interventions=heads).logits
    assert maxdiff(whole, per_head) < 1e-5
    one = hm.forward(Batch.from_lists([ids]), interventions=heads[:1]).logits
    assert maxdiff(whole, one) > 1e-4  # one head is not all of them


def test_row_and_position_restrict_an_intervention(tiny):
    a = ids_of(tiny, "The capital of France is")
    hm = HookedModel(tiny)
    base = hm.forward(Batch.from_lists([a, a]), logits="all").logits
    iv = Intervention(site=Site(layer=0, kind=SiteKind.resid_post), op="zero", row=1, position=2)
    out = hm.forward(Batch.from_lists([a, a]), logits="all", interventions=[iv]).logits
    assert maxdiff(out[0], base[0]) == 0.0  # the other row is untouched
    assert maxdiff(out[1, :2], base[1, :2]) == 0.0  # earlier positions cannot see a later change
    assert maxdiff(out[1, 2:], base[1, 2:]) > 1e-4


def test_row_wise_adds_of_a_sweep_equal_each_row_alone(tiny):
    """Several add-interventions each on its own batch row (a steering sweep) are applied as one
    scattered delta; every row must equal that row run alone with its intervention."""
    a = ids_of(tiny, "The capital of France is")
    hm = HookedModel(tiny)
    width = tiny.info.hidden_size
    vec = list(np.random.default_rng(0).standard_normal(width).astype(np.float32))
    site = Site(layer=1, kind=SiteKind.resid_post)
    ivs = [Intervention(site=site, op="add", vector=vec, factor=f, row=r) for r, f in [(0, -2.0), (2, 3.0)]]
    out = hm.forward(Batch.from_lists([a, a, a]), logits="all", interventions=ivs).logits
    again = hm.forward(Batch.from_lists([a, a, a]), logits="all", interventions=ivs).logits  # the held vectors
    assert maxdiff(out, again) == 0.0
    for row, factor in [(0, -2.0), (1, None), (2, 3.0)]:
        alone = [Intervention(site=site, op="add", vector=vec, factor=factor)] if factor is not None else []
        ref = hm.forward(Batch.from_lists([a]), logits="all", interventions=alone).logits
        assert maxdiff(out[row], ref[0]) < 1e-4  # batch-of-3 vs batch-of-1 matmul round-off only
    assert maxdiff(out[0], out[1]) > 1e-3 and maxdiff(out[2], out[1]) > 1e-3


def test_replace_patches_one_prompt_into_another(tiny):
    src, tgt = ids_of(tiny, "The capital of France is"), ids_of(tiny, "The capital of Spain is")
    hm = HookedModel(tiny)
    last = tiny.num_layers - 1
    cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=[last], positions="last")
    s = hm.forward(Batch.from_lists([src]), capture=cap)
    vec = s.captures[f"blocks.{last}.resid_post"][0, 0]
    patched = hm.forward(Batch.from_lists([tgt]), interventions=[
        Intervention(site=Site(layer=last, kind=SiteKind.resid_post), op="replace", vector=vec, position=-1)])
    assert maxdiff(patched.logits[0, -1], s.logits[0, -1]) < 1e-5


def test_bad_interventions_are_input_errors(tiny_llama):
    hm = HookedModel(tiny_llama)
    batch = Batch.from_lists([[1, 2, 3]])
    with pytest.raises(InputError, match="out of range"):
        hm.forward(batch, interventions=[Intervention(site=Site(layer=99, kind=SiteKind.mlp_out), op="zero")])
    with pytest.raises(InputError, match="needs a vector"):
        hm.forward(batch, interventions=[Intervention(site=Site(layer=0, kind=SiteKind.mlp_out), op="add")])
    with pytest.raises(InputError, match="expected 64"):
        hm.forward(batch, interventions=[Intervention(site=Site(layer=0, kind=SiteKind.mlp_out), op="add",
                                                      vector=[1.0] * 3)])
    with pytest.raises(InputError, match="empty prompt"):
        Batch.from_lists([[]])
    assert str(Site.parse("blocks.3.mlp_out")) == "blocks.3.mlp_out"
    with pytest.raises(InputError):
        Site.parse("blocks.x.mlp")

# The real-model verify (SmolLM2 and Gemma 3, >600-token prompt) runs as a CLI test in tests/batch.


def test_vectors_follow_their_intervention_even_when_ids_are_reused(tiny_llama):
    """A freed intervention's id can be reused by a new one: its vector must not be served stale."""
    ids = ids_of(tiny_llama, "The capital of France is")
    hm = HookedModel(tiny_llama)
    site = Site(layer=1, kind=SiteKind.resid_post)
    outs = []
    for value in (0.0, 3.0, -3.0):  # each Intervention is garbage after its forward
        iv = Intervention(site=site, op="add", vector=[value] * tiny_llama.info.hidden_size)
        outs.append(hm.forward(Batch.from_lists([ids]), interventions=[iv]).logits)
        del iv
    assert maxdiff(outs[0], outs[1]) > 1e-3 and maxdiff(outs[1], outs[2]) > 1e-3
    fresh = HookedModel(tiny_llama).forward(Batch.from_lists([ids]), interventions=[
        Intervention(site=site, op="add", vector=[-3.0] * tiny_llama.info.hidden_size)]).logits
    assert maxdiff(outs[2], fresh) == 0.0


def test_kv_select_rows_continues_like_the_full_batch(tiny):
    a, b = ids_of(tiny, "The capital of France is"), ids_of(tiny, "One two three four five")
    hm = HookedModel(tiny)
    kv = KVState(hm.n_layers, [0, 0])
    hm.forward(Batch.from_lists([a, b]), kv=kv, logits="none")
    nxt = mx.array([[11], [12]])
    both = hm.forward(Batch(nxt, [0, 0], [5, 5]), kv=kv).logits
    kv2 = KVState(hm.n_layers, [0, 0])
    hm.forward(Batch.from_lists([a, b]), kv=kv2, logits="none")
    only_b = hm.forward(Batch(nxt[1:], [0], [5]), kv=kv2.select_rows([1])).logits
    assert maxdiff(only_b[0], both[1]) < 1e-5
