"""``compare``: the logit lens on two models with the same prompt, side by side.

Each model runs once (all layers captured at the last position, all unembedded in one
matmul). Rows align layers by index when the models have the same depth, else by relative
depth: model 1's layer l is paired with model 2's layer round((l+1)/n1 * n2) - 1. KL between
the two lens distributions is given only when the tokenizers match (same vocabulary). Each
model is read through its own lens (``lens1``/``lens2``: logit, or a tuned lens bound to it).
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from engine.diff import same_tokenizer
from engine.distributions import kl_js, log_softmax, token_probs_ranks, top_k_probs
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.lens import fast_lens_logits
from engine.models import LoadedModel
from engine.results.base import TokenPrediction
from engine.results.compare import CompareRequest, CompareResult, CompareRow, CompareTracked
from engine.tuned_lens import resolve_lens


def _lens_all_layers(lm: LoadedModel, ids: list[int], cancel: Callable[[], bool] | None, lens_spec: str = "logit"):
    lens = resolve_lens(lm, lens_spec)
    hm = HookedModel(lm)
    layers = list(range(hm.n_layers))
    out = hm.forward(Batch.from_lists([ids]), capture=CaptureSpec(kinds=(SiteKind.resid_post,), layers=layers,
                                                                 positions="last"), logits="none", cancel=cancel)
    resid = mx.concatenate([out.captures[f"blocks.{layer}.resid_post"][0] for layer in layers], axis=0)
    return fast_lens_logits(hm, resid, layers, lens)  # [layers, vocab] float32


def _ranks(logits: np.ndarray, tid: int) -> list[int]:
    return token_probs_ranks(logits, [tid] * logits.shape[0])[1].tolist()


def compare(m1: LoadedModel, m2: LoadedModel, req: CompareRequest,
            cancel: Callable[[], bool] | None = None) -> CompareResult:
    if req.prompt == "":
        raise InputError("empty prompt")
    ids1 = m1.tokenizer.prepare(req.prompt, chat=req.chat)
    ids2 = m2.tokenizer.prepare(req.prompt, chat=req.chat)
    lg1 = _lens_all_layers(m1, ids1, cancel, req.lens1)
    lg2 = _lens_all_layers(m2, ids2, cancel, req.lens2)
    names1 = [f"model 1 layer {i}" for i in range(lg1.shape[0])]
    names2 = [f"model 2 layer {i}" for i in range(lg2.shape[0])]
    lp1, lp2 = log_softmax(lg1, names1), log_softmax(lg2, names2)  # float64, float64 normaliser
    n1, n2 = lg1.shape[0], lg2.shape[0]
    same_tok = same_tokenizer(m1, m2) and lg1.shape[-1] == lg2.shape[-1]
    if n1 == n2:
        pairs, alignment = [(i, i) for i in range(n1)], "by layer index"
    else:
        pairs = [(i, min(n2 - 1, max(0, round((i + 1) / n1 * n2) - 1))) for i in range(n1)]
        alignment = "by relative depth (model 1's layers; model 2's layer round((l+1)/n1*n2)-1)"
    top1_1, top1_2 = np.argmax(lg1, axis=-1), np.argmax(lg2, axis=-1)
    kl = None
    if same_tok:  # non-negative terms (engine.distributions), no clamping needed
        kl = kl_js(lg1[[a for a, _ in pairs]], lg2[[b for _, b in pairs]])[0]
    t1, t2 = top1_1.tolist(), top1_2.tolist()
    q1 = np.exp(np.take_along_axis(lp1, top1_1[:, None], axis=-1)[:, 0]).tolist()
    q2 = np.exp(np.take_along_axis(lp2, top1_2[:, None], axis=-1)[:, 0]).tolist()
    tok1, tok2 = m1.tokenizer, m2.tokenizer
    rows = []
    for j, (a, b) in enumerate(pairs):
        pa = TokenPrediction(token=tok1.piece(t1[a]), token_id=t1[a], probability=q1[a], rank=1)
        pb = TokenPrediction(token=tok2.piece(t2[b]), token_id=t2[b], probability=q2[b], rank=1)
        rows.append(CompareRow(depth=(a + 1) / n1, layer1=a, layer2=b, top1_model1=pa, top1_model2=pb,
                               same_top1=(t1[a] == t2[b]) if same_tok else None,
                               kl_1_2=kl[j] if kl is not None else None))

    def final(lg: np.ndarray, tok) -> list[TokenPrediction]:
        ids, pr = top_k_probs(lg[-1], req.top_k)
        return [TokenPrediction(token=tok.piece(int(t)), token_id=int(t), probability=float(p), rank=r + 1)
                for r, (t, p) in enumerate(zip(ids[0], pr[0]))]

    tracked = []
    for text in req.track:
        if text == "":
            raise InputError("tracked token is empty")
        id1, _ = tok1.lookup(text)
        id2, _ = tok2.lookup(text)
        r1, r2 = _ranks(lg1, id1), _ranks(lg2, id2)
        tracked.append(CompareTracked(token=text, emergence_model1=next((i for i, r in enumerate(r1) if r == 1), None),
                                      emergence_model2=next((i for i, r in enumerate(r2) if r == 1), None),
                                      rank_final_model1=r1[-1], rank_final_model2=r2[-1],
                                      prob_final_model1=float(np.exp(lp1[-1, id1])),
                                      prob_final_model2=float(np.exp(lp2[-1, id2]))))
    final_kl = kl_js(lg1[-1:], lg2[-1:])[0][0] if same_tok else None
    return CompareResult(model1_id=m1.info.model_id, model2_id=m2.info.model_id, request=req, num_layers1=n1,
                         num_layers2=n2, alignment=alignment, same_tokenizer=same_tok, tokens1=tok1.pieces(ids1),
                         tokens2=tok2.pieces(ids2), final1=final(lg1, tok1), final2=final(lg2, tok2),
                         rows=rows, tracked=tracked, final_kl=final_kl)
