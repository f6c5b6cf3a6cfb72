"""The family-generic hooked forward on families beyond llama/Gemma: MoE routing, a logit scale in
the head, refused padding, a table entry naming a module the forward never calls.

Tiny random instances built here (no tokenizer: ids only); the full per-family matrix is tests/families."""

from __future__ import annotations

import importlib
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest
from mlx import nn

from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, Site, SiteKind
from engine.models import wrap_model

BASE = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "rms_norm_eps": 1e-6, "vocab_size": 50, "tie_word_embeddings": False, "rope_theta": 10000.0}
IDS = [3, 17, 5, 42, 8, 11, 29]


def tiny(model_type: str, **extra):
    cfg = {**BASE, **extra, "model_type": model_type}
    mod = importlib.import_module(f"mlx_lm.models.{model_type}")
    mx.random.seed(3)
    model = mod.Model(mod.ModelArgs.from_dict(cfg))
    mx.eval(model.parameters())
    return wrap_model(model, None, f"tiny-{model_type}")


def maxdiff(a, b):
    return float(mx.abs(a.astype(mx.float32) - b.astype(mx.float32)).max().item())


def test_moe_router_is_the_families_own_routing():
    lm = tiny("mixtral", num_local_experts=4, num_experts_per_tok=2)
    hm = HookedModel(lm)
    assert SiteKind.moe_router in hm.site_kinds and SiteKind.mlp_hidden not in hm.site_kinds
    out = hm.forward(Batch.from_lists([IDS]), logits="all",
                     capture=CaptureSpec(kinds=(SiteKind.resid_pre, SiteKind.attn_out, SiteKind.moe_router)))
    assert maxdiff(out.logits, lm.model(mx.array([IDS]))) < 1e-5
    block = hm.blocks[1]
    x = block.post_attention_layernorm(out.captures["blocks.1.resid_pre"] + out.captures["blocks.1.attn_out"])
    gates = np.array(block.block_sparse_moe.gate(x)[0])  # [S, experts]
    want = np.zeros_like(gates)
    for s, row in enumerate(gates):  # Mixtral: softmax over the top-2 logits
        top = np.argsort(-row)[:2]
        e = np.exp(row[top] - row[top].max())
        want[s, top] = e / e.sum()
    got = np.array(out.captures["blocks.1.moe_router"][0])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert ((got > 0).sum(axis=-1) == 2).all()


def test_a_scaled_head_is_the_models_own_and_interventions_reach_heads():
    lm = tiny("cohere", layer_norm_eps=1e-5, logit_scale=0.125, use_qk_norm=False)
    hm = HookedModel(lm)
    native = lm.model(mx.array([IDS]))
    plain = hm.forward(Batch.from_lists([IDS]), logits="all")
    assert maxdiff(native, plain.logits) < 1e-5
    assert maxdiff(native[:, -1], hm.adapter.lens_logits(lm.model, plain.resid[:, -1:])[:, 0]) < 1e-5
    zero = Intervention(site=Site(layer=1, kind=SiteKind.attn_out), op="zero", head=2)
    changed = hm.forward(Batch.from_lists([IDS]), logits="last", interventions=[zero]).logits
    assert maxdiff(changed, plain.logits[:, -1:]) > 1e-4


def test_learned_positions_run_a_padded_batch_row_by_row():
    lm = tiny("gpt2", n_embd=64, n_head=4, n_layer=2, n_positions=64, n_ctx=64, layer_norm_epsilon=1e-5)
    hm = HookedModel(lm)
    short = IDS[:3]
    batch = Batch.from_lists([IDS, short])
    out = hm.forward(batch, logits="all", capture=CaptureSpec(kinds=(SiteKind.attn_pattern, SiteKind.mlp_out)))
    assert out.logits.shape == (2, len(IDS), 50)
    assert maxdiff(out.logits[1, 4:], lm.model(mx.array([short]))[0]) < 1e-5  # as if alone, not shifted
    assert maxdiff(out.logits[0], lm.model(mx.array([IDS]))[0]) < 1e-5
    pat = out.captures["blocks.1.attn_pattern"]
    assert pat.shape == (2, 4, len(IDS), len(IDS)) and float(pat[1, :, :4].abs().max().item()) == 0.0
    from engine.hooks import KVState

    with pytest.raises(InputError, match="gpt2: prompts of different lengths cannot share a cached batch"):
        hm.forward(batch, kv=KVState(hm.n_layers, batch.pad))


def test_a_named_module_the_forward_never_calls_is_an_error():
    lm = tiny("llama")
    for block in lm.adapter.blocks(lm.model):
        block.unused = nn.Identity()
    parts = tuple(replace(p, attn_out_at="unused") for p in lm.adapter.parts)
    lm = replace(lm, adapter=replace(lm.adapter, parts=parts))
    hm = HookedModel(lm)
    with pytest.raises(RuntimeError, match="never reached"):
        hm.forward(Batch.from_lists([IDS]), capture=CaptureSpec(kinds=(SiteKind.attn_out,)))


MAMBA2 = {"num_heads": 8, "head_dim": 16, "state_size": 16, "layer_norm_epsilon": 1e-5, "conv_kernel": 4, "n_groups": 1,
              "use_bias": False, "use_conv_bias": True, "time_step_limit": (0.0, float("inf")), "time_step_rank": "auto",
              "tie_word_embeddings": True, "expand": 2}


def test_whole_layer_ablation_on_a_state_space_model():
    from engine.ablation import spec_interventions
    from engine.results.ablation import AblationSpec

    lm = tiny("mamba2", **MAMBA2)
    hm = HookedModel(lm)
    assert hm.site_kinds == (SiteKind.resid_pre, SiteKind.resid_post, SiteKind.block_out)
    ivs = spec_interventions(AblationSpec(layers=[1], component="block"), "zero", None)
    assert [(iv.site.kind, iv.site.layer) for iv in ivs] == [(SiteKind.block_out, 1)]
    cap = CaptureSpec(kinds=(SiteKind.resid_pre, SiteKind.resid_post, SiteKind.block_out))
    plain = hm.forward(Batch.from_lists([IDS]), logits="last", capture=cap)
    pre, post = plain.captures["blocks.1.resid_pre"], plain.captures["blocks.1.resid_post"]
    assert maxdiff(pre + plain.captures["blocks.1.block_out"], post) < 1e-5
    gone = hm.forward(Batch.from_lists([IDS]), logits="last", capture=cap, interventions=ivs)
    assert maxdiff(gone.captures["blocks.1.resid_post"], gone.captures["blocks.1.resid_pre"]) == 0.0
    assert maxdiff(gone.logits, plain.logits) > 1e-3
    with pytest.raises(InputError, match="mamba2 has no attn_out site"):
        hm.forward(Batch.from_lists([IDS]), interventions=[Intervention(site=Site(layer=0, kind=SiteKind.attn_out),
                                                                         op="zero")])


def test_ablation_study_on_a_state_space_model_runs_point_by_point():
    from engine.ablation import run_ablation
    from engine.results.ablation import AblationRequest
    from tests.families.factory import tiny_tokenizer

    tok = tiny_tokenizer()
    lm = tiny("mamba2", **{**MAMBA2, "vocab_size": tok.vocab_size})
    lm.tokenizer = tok
    res = run_ablation(lm, AblationRequest(prompt="Hi there", component="block", layers=[0, 1], max_tokens=3,
                                           chat=False))
    assert res.strategy == "sequential" and any("state-space" in n for n in res.notes)
    assert [p.spec.layers for p in res.points] == [[0], [1]]
    assert all(len(p.outputs[0].token_ids) == 3 for p in res.points)
