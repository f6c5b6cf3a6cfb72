"""The `hooks` command's engine side: what the capture API sees, layer by layer."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from engine.distributions import top_k_probs
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.models import LoadedModel
from engine.results.hooks import HeadAttention, HooksRequest, HooksResult, LayerHooks, SiteCapture

DEMO_SITES = (SiteKind.resid_pre, SiteKind.attn_out, SiteKind.mlp_out, SiteKind.resid_post)


def run_hooks(lm: LoadedModel, req: HooksRequest, cancel: Callable[[], bool] | None = None) -> HooksResult:
    if not req.prompt:
        raise InputError("empty prompt")
    hm = HookedModel(lm)
    n = hm.n_layers
    layers = sorted({hm.check_layer(x) for x in req.layers}) if req.layers else sorted({0, n // 2, n - 1})
    ids = lm.tokenizer.prepare(req.prompt, chat=False)
    demo = [k for k in DEMO_SITES if k in hm.site_kinds]  # state-space models have the residual sites only
    kinds = demo + ([SiteKind.attn_pattern] if req.capture_attention else [])
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(kinds=kinds, layers=layers,
                     positions="last" if req.last_only else "all"), logits="none", cancel=cancel)
    pieces = lm.tokenizer.pieces(ids)
    lens = None
    if req.logit_lens:
        resid = mx.stack([out.captures[f"blocks.{layer}.resid_post"][0, -1] for layer in layers])
        logits = lm.adapter.lens_logits(lm.model, resid[None])[0].astype(mx.float32)
        top, top_p = top_k_probs(np.array(logits), 1, [f"layer {layer}" for layer in layers])
        lens = list(zip(top[:, 0].tolist(), top_p[:, 0].tolist()))
    rows = []
    for i, layer in enumerate(layers):
        sites = []
        for kind in demo:
            key = f"blocks.{layer}.{kind.value}"
            if key not in out.captures:  # hybrids: attention sites at attention layers only
                continue
            x = out.captures[key].astype(mx.float32)  # [1, P, hidden]
            norms = mx.linalg.norm(x[0], axis=-1)
            sites.append(SiteCapture(site=f"blocks.{layer}.{kind.value}", shape=list(x.shape),
                                     norm_last=norms[-1].item(), norm_mean=norms.mean().item()))
        heads = []
        if req.capture_attention and f"blocks.{layer}.attn_pattern" in out.captures:
            pat = out.captures[f"blocks.{layer}.attn_pattern"][0, :, -1, :].astype(mx.float32)  # [H, K]
            k = min(req.top_sources, pat.shape[-1])
            order = mx.argsort(-pat, axis=-1)[:, :k].tolist()
            weights = pat.tolist()
            heads = [HeadAttention(head=h, sources=[(j, pieces[j], weights[h][j]) for j in order[h]])
                     for h in range(pat.shape[0])]
        top1 = (lm.tokenizer.piece(lens[i][0]), lens[i][1]) if lens else (None, None)
        rows.append(LayerHooks(layer=layer, sites=sites, lens_top1=top1[0], lens_top1_probability=top1[1],
                               attention=heads))
    return HooksResult(model_id=lm.info.model_id, request=req, tokens=pieces, layers=rows)
