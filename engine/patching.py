"""Activation patching: write the source prompt's layer-L output into the target's run.

Source and target each run once (capturing every requested layer); then every patched
variant runs as one batch of target rows, row i patched at layer i of the sweep ("replace"
interventions in the hooked forward, or a blend (1-a)*target + a*source written the same
way). Ranks are over the full vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from engine.distributions import token_probs_ranks, top_k_probs
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, Site, SiteKind
from engine.models import LoadedModel
from engine.results.base import TokenPrediction
from engine.results.patch import PatchLayer, PatchRequest, PatchResult


def _positions(spec: str, n_src: int, n_tgt: int) -> list[tuple[int, int]]:
    """(source position, target position) pairs to patch."""
    if spec == "last":
        return [(n_src - 1, n_tgt - 1)]
    if spec == "all":
        if n_src != n_tgt:
            raise InputError(f"--position all needs prompts of the same length in tokens (source {n_src}, "
                             f"target {n_tgt})")
        return [(i, i) for i in range(n_src)]
    try:
        p = int(spec)
    except ValueError as exc:
        raise InputError(f"bad --position {spec!r}: expected last, all or a token index") from exc
    for n, what in ((n_src, "source"), (n_tgt, "target")):
        if not -n <= p < n:
            raise InputError(f"position {p} out of range for the {what} prompt ({n} tokens)")
    return [(p % n_src, p % n_tgt)]


def _top(tok, logits: np.ndarray, k: int) -> list[TokenPrediction]:
    ids, probs = top_k_probs(logits, k)
    return [TokenPrediction(token=tok.piece(int(t)), token_id=int(t), probability=float(p), rank=r + 1)
            for r, (t, p) in enumerate(zip(ids[0], probs[0]))]


def patched_rows(hm: HookedModel, ids: list[int], ivs: list[Intervention], rows: int,
                 cancel: Callable[[], bool] | None = None) -> mx.array:
    """The prompt ``ids`` run as ``rows`` batch rows at once, each patched by the interventions that name
    its row: the last position's logits [rows, 1, vocab]. (``patch`` and attribution's verification.)"""
    out = hm.forward(Batch.from_lists([ids] * rows), interventions=ivs, logits="last", cancel=cancel)
    assert out.logits is not None
    return out.logits


def patch(lm: LoadedModel, req: PatchRequest, cancel: Callable[[], bool] | None = None) -> PatchResult:
    if req.source == "" or req.target == "":
        raise InputError("source and target prompts must not be empty")
    hm = HookedModel(lm)
    layers = [hm.check_layer(x) for x in req.layers]
    if not layers:
        raise InputError("no layers to patch")
    tok = lm.tokenizer
    src = tok.prepare(req.source, chat=req.chat)
    tgt = tok.prepare(req.target, chat=req.chat)
    pos = _positions(req.position, len(src), len(tgt))
    cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=sorted(set(layers)), positions="all")
    s_out = hm.forward(Batch.from_lists([src]), capture=cap, logits="last", cancel=cancel)
    t_out = hm.forward(Batch.from_lists([tgt]), capture=cap, logits="last", cancel=cancel)
    a = req.blend
    ivs = []
    for row, layer in enumerate(layers):
        hs = s_out.captures[f"blocks.{layer}.resid_post"][0]  # [S_src, d]
        ht = t_out.captures[f"blocks.{layer}.resid_post"][0]
        for ps, pt in pos:
            vec = hs[ps] if a == 1.0 else (1 - a) * ht[pt] + a * hs[ps]
            ivs.append(Intervention(site=Site(layer=layer, kind=SiteKind.resid_post), op="replace",
                                    vector=np.array(vec.astype(mx.float32)), position=pt, row=row))
    p_out = patched_rows(hm, tgt, ivs, len(layers), cancel)
    assert s_out.logits is not None and t_out.logits is not None  # logits="last"
    s_logits = np.array(s_out.logits[0, -1].astype(mx.float32))
    t_logits = np.array(t_out.logits[0, -1].astype(mx.float32))
    p_logits = np.array(p_out[:, -1].astype(mx.float32))  # [R, V]
    s_ans, t_ans = int(np.argmax(s_logits)), int(np.argmax(t_logits))
    names = [f"layer {layer} patched" for layer in layers]
    s_prob, s_rank = token_probs_ranks(p_logits, [s_ans] * len(layers), names)
    t_prob, t_rank = token_probs_ranks(p_logits, [t_ans] * len(layers), names)
    rows = []
    for i, layer in enumerate(layers):
        lg = p_logits[i]
        rows.append(PatchLayer(layer=layer, top=_top(tok, lg, req.top_k),
                               source_answer_prob=float(s_prob[i]), source_answer_rank=int(s_rank[i]),
                               target_answer_prob=float(t_prob[i]), target_answer_rank=int(t_rank[i]),
                               source_answer_top1=int(np.argmax(lg)) == s_ans))
    return PatchResult(model_id=lm.info.model_id, request=req, source_tokens=tok.pieces(src),
                       target_tokens=tok.pieces(tgt), source_top=_top(tok, s_logits, req.top_k),
                       target_top=_top(tok, t_logits, req.top_k), source_answer=tok.piece(s_ans),
                       target_answer=tok.piece(t_ans), layers=rows)
