"""Interventions do what they say, per family: each equals the same edit made to the twin's modules.

Zero ablation of attention, of one head, of the MLP and of a whole block; mlp_hidden read and
written at the down projection's input; moe_router marking the experts the router chose; add-
steering on the residual, in one pass and through generation with the KV cache.
"""

from __future__ import annotations

import contextlib

import mlx.core as mx
import numpy as np
import pytest

from engine.hooks import Batch, CaptureSpec, Intervention, Site, SiteKind
from tests.families.factory import EXPERTS
from tests.families.oracle import (
    CHANGED,
    DOWN,
    MLP,
    O_PROJ,
    TOL,
    Recorded,
    Skipped,
    attn_layer,
    claimed_kinds,
    edited,
    edited_input,
    edited_layer,
    greedy,
    hooked_logits,
    layers_of,
    logits_of,
    maxdiff,
    refusal_is_xfail,
)

# ---------------------------------------------------------------------------------------------
# interventions do what they say: the same edit made to the model's own modules


def test_zero_ablation_of_attention_equals_zeroed_module(fam):
    hm = fam.hooked()
    if SiteKind.attn_out not in claimed_kinds(hm):
        pytest.skip(f"{fam.name} claims no attn_out site")
    where = attn_layer(fam)
    if where is None:
        pytest.skip(f"{fam.name}: no single attention module to compare with")
    layer, path = where
    got = hooked_logits(fam, hm, [Intervention(site=Site(layer=layer, kind=SiteKind.attn_out), op="zero")])
    with edited(layers_of(fam.ref)[layer], path, mx.zeros_like):
        want = logits_of(fam.ref, [fam.ids])
    assert maxdiff(want, fam.native) > CHANGED
    assert maxdiff(got, want) < TOL


def test_zero_ablation_of_one_head_equals_zeroed_projection_input(fam):
    hm = fam.hooked()
    kinds = claimed_kinds(hm)
    heads_kind = getattr(SiteKind, "attn_heads", None)
    if SiteKind.attn_out not in kinds or (heads_kind is not None and heads_kind not in kinds):
        pytest.skip(f"{fam.name} claims no per-head attn_out")
    where = attn_layer(fam)
    if where is None:
        pytest.skip(f"{fam.name}: no single attention module to compare with")
    layer, path = where
    if heads_kind is not None and hasattr(hm, "has_site") and not hm.has_site(heads_kind, layer):
        pytest.skip(f"{fam.name}: no heads at layer {layer}")
    head = 1
    got = hooked_logits(fam, hm, [Intervention(site=Site(layer=layer, kind=SiteKind.attn_out), op="zero",
                                                head=head)])
    attn = layers_of(fam.ref)[layer]
    for part in path.split("."):
        attn = getattr(attn, part)
    n_heads = int(getattr(hm, "n_heads", fam.lm.info.num_heads))

    def drop_head(z: mx.array) -> mx.array:  # z [B, S, heads * head_dim], the output projection's input
        d = z.shape[-1] // n_heads
        keep = (mx.arange(z.shape[-1]) // d != head).astype(z.dtype)
        return z * keep

    with edited_input(attn, O_PROJ.get(fam.name, "o_proj"), drop_head):
        want = logits_of(fam.ref, [fam.ids])
    assert maxdiff(want, fam.native) > CHANGED
    assert maxdiff(got, want) < TOL


def test_zero_ablation_of_mlp_equals_zeroed_module(fam):
    hm = fam.hooked()
    paths = MLP.get(fam.name, ("mlp",))
    if SiteKind.mlp_out not in claimed_kinds(hm) or not paths:
        pytest.skip(f"{fam.name} claims no mlp_out site")
    layer = hm.n_layers // 2
    got = hooked_logits(fam, hm, [Intervention(site=Site(layer=layer, kind=SiteKind.mlp_out), op="zero")])
    with contextlib.ExitStack() as stack:
        for path in paths:
            stack.enter_context(edited(layers_of(fam.ref)[layer], path, mx.zeros_like))
        want = logits_of(fam.ref, [fam.ids])
    assert maxdiff(want, fam.native) > CHANGED
    assert maxdiff(got, want) < TOL


def test_mlp_hidden_is_the_down_projections_input(fam):
    """Captured mlp_hidden = what the twin's down projection reads; adding to it = adding there."""
    hm = fam.hooked()
    paths = MLP.get(fam.name, ("mlp",))
    if SiteKind.mlp_hidden not in claimed_kinds(hm) or len(paths) != 1:
        pytest.skip(f"{fam.name} claims no mlp_hidden site")
    layer = 0
    mlp = getattr(layers_of(fam.ref)[layer], paths[0])
    down = DOWN.get(fam.name, "down_proj")
    if not hasattr(mlp, down):
        pytest.fail(f"{fam.name} claims mlp_hidden but layer {layer}'s MLP has no {down} (mixture of experts?)")
    seen: list[mx.array] = []
    with edited_input(mlp, down, lambda z: seen.append(z) or z):
        logits_of(fam.ref, [fam.ids])
    vec = mx.random.normal((seen[0].shape[-1],), key=mx.random.key(3))
    with edited_input(mlp, down, lambda z: z + 0.5 * vec):  # not a rescale: post-norms would undo that
        want = logits_of(fam.ref, [fam.ids])
    site = Site(layer=layer, kind=SiteKind.mlp_hidden)
    with refusal_is_xfail(fam.name):
        caps = hm.forward(Batch.from_lists([fam.ids]), logits="none",
                          capture=CaptureSpec(kinds=(SiteKind.mlp_hidden,), layers=[layer])).captures
    got = hooked_logits(fam, hm, [Intervention(site=site, op="add", vector=vec, factor=0.5)])
    assert maxdiff(caps[str(site)], seen[0]) < TOL
    assert maxdiff(want, fam.native) > CHANGED
    assert maxdiff(got, want) < TOL


def test_zero_block_out_equals_skipping_the_block(fam):
    """Whole-layer ablation (every family, state-space ones included) = the twin without that block."""
    hm = fam.hooked()
    kind = getattr(SiteKind, "block_out", None)
    if kind is None or kind not in claimed_kinds(hm):
        pytest.skip(f"{fam.name} claims no block_out site")
    layer = 1
    got = hooked_logits(fam, hm, [Intervention(site=Site(layer=layer, kind=kind), op="zero")])
    layers = layers_of(fam.ref)
    orig = layers[layer]
    layers[layer] = Skipped(orig, lambda out: out)
    try:
        want = logits_of(fam.ref, [fam.ids])
    finally:
        layers[layer] = orig
    assert maxdiff(want, fam.native) > CHANGED
    assert maxdiff(got, want) < TOL


def test_moe_router_marks_the_experts_each_token_chose(fam):
    hm = fam.hooked()
    kind = getattr(SiteKind, "moe_router", None)
    if kind is None or kind not in claimed_kinds(hm):
        pytest.skip(f"{fam.name} claims no moe_router site")
    layer = max(i for i in range(hm.n_layers) if hm.has_site(kind, i))
    block = layers_of(fam.ref)[layer]
    moe, name = next((m, n) for m in (getattr(block, p, None) for p in (*MLP.get(fam.name, ()), "mlp"))
                     for n in ("switch_mlp", "experts") if hasattr(m, n))  # the routed experts, called (x, ids)
    calls: list[tuple] = []
    orig = getattr(moe, name)
    setattr(moe, name, Recorded(orig, calls.append))
    try:
        logits_of(fam.ref, [fam.ids])
    finally:
        setattr(moe, name, orig)
    chosen = np.array(calls[0][1]).reshape(len(fam.ids), -1)  # [S, top_k] expert ids per token
    with refusal_is_xfail(fam.name):
        caps = hm.forward(Batch.from_lists([fam.ids]), logits="none",
                          capture=CaptureSpec(kinds=(kind,), layers=[layer])).captures
    weights = np.array(caps[f"blocks.{layer}.{kind.value}"][0])  # [S, experts]
    assert weights.shape == (len(fam.ids), EXPERTS)
    want = np.zeros(weights.shape, bool)
    np.put_along_axis(want, chosen, True, axis=-1)
    assert ((weights != 0) == want).all(), f"{fam.name}: moe_router marks other experts than the router chose"
    assert (weights[want] > 0).all()


def test_add_steering_equals_edited_block_output(fam):
    hm = fam.hooked()
    layer = 1
    vec = mx.random.normal((fam.lm.info.hidden_size,), key=mx.random.key(7))
    iv = Intervention(site=Site(layer=layer, kind=SiteKind.resid_post), op="add", vector=vec, factor=0.5)
    got = hooked_logits(fam, hm, [iv])
    with edited_layer(fam.ref, layer, lambda out: out + 0.5 * vec):
        want = logits_of(fam.ref, [fam.ids])
    assert maxdiff(want, fam.native) > CHANGED
    assert maxdiff(got, want) < TOL


def test_steered_generation_equals_the_edited_twin(fam):
    """An intervention stays on for every generated token, through the KV cache."""
    from engine.generate import generate_ids

    hm = fam.hooked()
    vec = 4.0 * mx.random.normal((fam.lm.info.hidden_size,), key=mx.random.key(11))
    iv = Intervention(site=Site(layer=1, kind=SiteKind.resid_post), op="add", vector=vec)
    with refusal_is_xfail(fam.name):
        got = generate_ids(hm, [fam.short], 5, interventions=[iv])[0].ids
    with edited_layer(fam.ref, 1, lambda out: out + vec):
        want = greedy(fam.ref, fam.short, 5)
    assert want != greedy(fam.ref, fam.short, 5)
    assert list(got) == want


