"""The one KV cache (engine.kv_cache) and the vectors an intervention holds."""

from __future__ import annotations

import copy
import pickle

import mlx.core as mx
import pytest

from engine.hooks import Batch, HookedModel, Intervention, KVState, Site, SiteKind


def _prompt(lm, texts, concat=False):
    hm = HookedModel(lm)
    batch = Batch.from_lists([lm.tokenizer.encode(t) for t in texts])
    kv = KVState(hm.n_layers, batch.pad, concat=concat)
    first = hm.forward(batch, kv=kv).logits
    return hm, batch, kv, first


def _steps(hm, kv, lengths, tokens):
    out = []
    for t in tokens:
        step = Batch(mx.array([[t]] * len(lengths), dtype=mx.int32), kv.pad, lengths)
        out.append(hm.forward(step, kv=kv).logits)
    return mx.concatenate(out, axis=1)


def test_growing_and_buffered_caches_decode_bit_identically(tiny_llama):
    """The two storages hold the same keys/values, so attention sees the same numbers."""
    hm, batch, kv_buf, first_buf = _prompt(tiny_llama, ["The capital of France is", "One two three"])
    _, _, kv_cat, first_cat = _prompt(tiny_llama, ["The capital of France is", "One two three"], concat=True)
    assert any(batch.pad)  # left padding: the masks come from the state's pad
    assert mx.array_equal(first_buf, first_cat)
    steps = [11, 12, 13]
    assert mx.array_equal(_steps(hm, kv_buf, batch.lengths, steps), _steps(hm, kv_cat, batch.lengths, steps))
    assert kv_buf.offset == kv_cat.offset == batch.ids.shape[1] + 3
    for layer in range(hm.n_layers):
        kb, vb = kv_buf.keys_values(layer)
        kc, vc = kv_cat.keys_values(layer)
        assert kb.shape[2] == kv_buf.offset and mx.array_equal(kb, kc) and mx.array_equal(vb, vc)


def test_select_rows_repeats_rows_and_copies_only_the_layers_asked(tiny_llama):
    hm, batch, kv, _ = _prompt(tiny_llama, ["The capital of France is", "One two three four five"])
    n = batch.ids.shape[1]
    both = _steps(hm, kv, batch.lengths, [11])
    _, _, kv2, _ = _prompt(tiny_llama, ["The capital of France is", "One two three four five"])
    picked = kv2.select_rows([1, 1, 0])
    again = _steps(hm, picked, [batch.lengths[i] for i in (1, 1, 0)], [11])
    scale = float(mx.abs(both).max())
    for r, src in enumerate([1, 1, 0]):  # batch-of-3 vs batch-of-2: float32 round-off of the matmuls only
        assert float(mx.abs(again[r] - both[src]).max()) < 1e-5 * scale
    assert kv2.keys_values(0)[0].shape[0] == 2 and picked.keys_values(0)[0].shape[0] == 3  # a copy
    part = kv2.select_rows([0], layers=[1], concat=True)
    with pytest.raises(ValueError, match="no keys"):
        part.keys_values(0)
    k_new, _ = part.keys_values(1, n - 2, n)
    assert mx.array_equal(k_new, kv2.keys_values(1)[0][:1, :, n - 2:n, :])


def test_state_layers_are_refused_by_row_selection():
    from mlx_lm.models.cache import ArraysCache

    kv = KVState(2, [0])
    kv.use_family_caches([None, ArraysCache], lambda: [None, ArraysCache(size=2)])  # as a hybrid family's pass does
    assert isinstance(kv.caches[1], ArraysCache)
    with pytest.raises(ValueError, match="recurrent state"):
        kv.select_rows([0])


def test_an_intervention_holds_its_vector_and_copies_share_it():
    iv = Intervention(site=Site(layer=0, kind=SiteKind.resid_post), op="add", vector=[1.0, 2.0, 3.0])
    arr = iv.array(mx.float32)
    assert iv.array(mx.float32) is arr and iv.array(mx.float16).dtype == mx.float16
    assert iv.model_copy(update={"row": 2}).array(mx.float32) is arr  # same list: no new conversion
    other = iv.model_copy(update={"vector": [4.0, 5.0, 6.0]})  # a replaced vector is converted anew
    assert other.array(mx.float32).tolist() == [4.0, 5.0, 6.0]
    assert iv.array(mx.float32).tolist() == [1.0, 2.0, 3.0]
    fresh = Intervention(site=iv.site, op="add", vector=[1.0, 2.0, 3.0])
    assert fresh == iv and iv == copy.deepcopy(iv) and iv == pickle.loads(pickle.dumps(iv))  # arrays are no part of the value
    with pytest.raises(ValueError, match="no vector"):
        Intervention(site=iv.site, op="zero").array(mx.float32)
