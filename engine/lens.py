"""The logit lens: what each layer's residual stream would predict.

For each selected layer: the layer output at one prompt position, through the
model's own final norm, unembedding (tied when the model ties) and soft-cap,
then softmax. All layers are unembedded in one matmul, at one position only;
entropy, KL/JS between consecutive layers and full-vocabulary ranks are
computed in the same MLX graph and read back once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import mlx.core as mx

from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.models import LoadedModel
from engine.results import (
    AnalysisResult,
    AnalyzeRequest,
    LayerPredictionResult,
    LayerStrategy,
    LayerTransition,
    TokenEvolutionResult,
    TokenPrediction,
)

CONFIDENT_BELOW = 0.3  # normalised entropy under which a layer counts as confident


def select_layers(strategy: LayerStrategy, n_layers: int, step: int = 4,
                  custom: Sequence[int] | None = None) -> list[int]:
    if strategy == LayerStrategy.ALL:
        return list(range(n_layers))
    if strategy == LayerStrategy.EVENLY_SPACED:
        if step < 1:
            raise InputError("--layer-step must be at least 1")
        return sorted(set(range(0, n_layers, step)) | {n_layers - 1})
    if strategy == LayerStrategy.FIRST_LAST:
        return sorted({0, n_layers - 1})
    if not custom:
        raise InputError("custom layer strategy needs --layers")
    out = []
    for layer in custom:
        if not -n_layers <= layer < n_layers:
            raise InputError(f"layer {layer} out of range (model has {n_layers} layers: 0-{n_layers - 1})")
        out.append(layer % n_layers)
    return sorted(set(out))


def lens_distributions(hm: HookedModel, resid: mx.array) -> tuple[mx.array, mx.array]:
    """(logits, log-probs) in float32 for residual vectors ``resid`` [N, hidden]."""
    logits = hm.adapter.lens_logits(hm.model, resid[None])[0].astype(mx.float32)  # [N, vocab]
    return logits, logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def analyze(lm: LoadedModel, req: AnalyzeRequest, cancel: Callable[[], bool] | None = None,
            on_layer: Callable[[int, int], None] | None = None) -> AnalysisResult:
    """The logit lens for ``req`` on ``lm``; ``on_layer(layer, n)`` reports progress per layer."""
    if not req.prompt:
        raise InputError("empty prompt")
    tok = lm.tokenizer
    hm = HookedModel(lm)
    n = hm.n_layers
    layers = select_layers(req.layer_strategy, n, req.layer_step, req.custom_layers)
    ids = tok.prepare(req.prompt, chat=req.chat)
    pos = req.position
    if not -len(ids) <= pos < len(ids):
        raise InputError(f"position {pos} out of range for a prompt of {len(ids)} tokens")
    pos %= len(ids)
    tracked = [(t, *tok.lookup(t)) for t in req.track_tokens]  # (text, id, all ids)

    read = sorted(set(layers) | {n - 1})
    cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=read, positions=[pos])

    out = hm.forward(Batch.from_lists([ids]), capture=cap, logits="none", cancel=cancel,
                     embedding_scale=req.embedding_scale, on_layer=on_layer)
    resid = mx.concatenate([out.captures[f"blocks.{layer}.resid_post"][0] for layer in read], axis=0)  # [L, hidden]
    logits, logp = lens_distributions(hm, resid)  # [L, vocab]
    probs = mx.exp(logp)
    k = min(req.top_k, logits.shape[-1])
    top_idx = mx.argsort(-logits, axis=-1)[:, :k] if k > 64 else mx.argpartition(-logits, k - 1, axis=-1)[:, :k]
    top_p = mx.take_along_axis(probs, top_idx, axis=-1)
    order = mx.argsort(-top_p, axis=-1)
    top_idx = mx.take_along_axis(top_idx, order, axis=-1)
    top_p = mx.take_along_axis(top_p, order, axis=-1)
    entropy = -(probs * logp).sum(axis=-1)  # nats, [L]
    kl = (probs[:-1] * (logp[:-1] - logp[1:])).sum(axis=-1) if len(read) > 1 else mx.zeros((0,))
    mix = 0.5 * (probs[:-1] + probs[1:]) if len(read) > 1 else None
    if mix is not None:
        logm = mx.log(mx.maximum(mix, 1e-38))
        js = 0.5 * (probs[:-1] * (logp[:-1] - logm)).sum(-1) + 0.5 * (probs[1:] * (logp[1:] - logm)).sum(-1)
    else:
        js = mx.zeros((0,))
    if tracked:
        tid = mx.array([t[1] for t in tracked], dtype=mx.int32)
        t_logit = logits[:, tid]  # [L, T]
        t_prob = probs[:, tid]
        t_rank = (logits[:, None, :] > t_logit[:, :, None]).sum(axis=-1) + 1  # [L, T], full vocabulary
    else:
        t_prob = t_rank = mx.zeros((len(read), 0))
    mx.eval(top_idx, top_p, entropy, kl, js, t_prob, t_rank)

    top_idx_l, top_p_l = top_idx.tolist(), top_p.tolist()
    ent_l, kl_l, js_l = entropy.tolist(), kl.tolist(), js.tolist()
    t_prob_l, t_rank_l = t_prob.tolist(), t_rank.tolist()
    log_v = math.log(logits.shape[-1])
    row = {layer: i for i, layer in enumerate(read)}

    def preds(i: int) -> list[TokenPrediction]:
        return [TokenPrediction(token=tok.piece(t), token_id=t, probability=p, rank=r + 1)
                for r, (t, p) in enumerate(zip(top_idx_l[i], top_p_l[i]))]

    layer_preds = []
    for layer in layers:
        i = row[layer]
        en = ent_l[i] / log_v
        layer_preds.append(LayerPredictionResult(layer_idx=layer, predictions=preds(i), entropy=ent_l[i],
                                                 entropy_normalized=en, is_confident=en < CONFIDENT_BELOW))
    transitions = []
    if req.compute_transitions:
        for a, b in zip(layers, layers[1:]):
            ia, ib = row[a], row[b]
            if ib == ia + 1:
                kl_v, js_v = kl_l[ia], js_l[ia]
            else:  # not adjacent in `read` (only when the last layer was added): compute directly
                kl_v = float((probs[ia] * (logp[ia] - logp[ib])).sum().item())
                m = mx.log(mx.maximum(0.5 * (probs[ia] + probs[ib]), 1e-38))
                js_v = float((0.5 * (probs[ia] * (logp[ia] - m)).sum() + 0.5 * (probs[ib] * (logp[ib] - m)).sum()).item())
            transitions.append(LayerTransition(from_layer=a, to_layer=b, kl_divergence=max(kl_v, 0.0),
                                               js_divergence=max(js_v, 0.0),
                                               top_token_changed=top_idx_l[ia][0] != top_idx_l[ib][0]))
    final = preds(row[n - 1])
    final_top = final[0].token_id
    decision = next((lp.layer_idx for lp in layer_preds
                     if lp.predictions[0].token_id == final_top and lp.is_confident), None)
    evolutions = []
    for j, (text, tid, all_ids) in enumerate(tracked):
        probs_by_layer = {layer: t_prob_l[row[layer]][j] for layer in layers}
        ranks_by_layer = {layer: int(t_rank_l[row[layer]][j]) for layer in layers}
        emergence = next((layer for layer in layers if ranks_by_layer[layer] == 1), None)
        note = None
        if len(all_ids) > 1:
            note = (f"{text!r} is {len(all_ids)} tokens {tok.pieces(all_ids)}; tracking the first, "
                    f"{tok.piece(all_ids[0])!r}")
        evolutions.append(TokenEvolutionResult(token=text, token_id=tid, layer_probabilities=probs_by_layer,
                                               layer_ranks=ranks_by_layer, emergence_layer=emergence,
                                               pieces=tok.pieces(all_ids), note=note))
    return AnalysisResult(
        model_id=lm.info.model_id, request=req, prompt=req.prompt, tokens=tok.pieces(ids), token_ids=ids,
        position=pos, num_layers=n, captured_layers=layers, final_prediction=final,
        layer_predictions=layer_preds, layer_transitions=transitions, token_evolutions=evolutions,
        decision_layer=decision, predicted_token=final[0].token, predicted_probability=final[0].probability,
        final_entropy=ent_l[row[n - 1]], vocab_size=int(logits.shape[-1]),
    )
