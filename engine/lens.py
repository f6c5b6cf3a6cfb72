"""The logit lens: what each layer's residual stream would predict.

For each selected layer: the layer output at one prompt position, through the
model's own final norm, unembedding (tied when the model ties) and soft-cap,
then softmax. All layers are unembedded in one matmul, at one position only;
entropy, KL/JS between consecutive layers and full-vocabulary ranks are
computed in the same MLX graph and read back once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

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
    """(logits, log-probs) in float32 for residual vectors ``resid`` [N, hidden].

    The normaliser is summed in float64: MLX's float32 reduction over a whole vocabulary drifts
    by ~1e-4 relative (SmolLM2's p(' Paris') reads 0.77264 instead of 0.77253)."""
    logits = hm.adapter.lens_logits(hm.model, resid[None])[0].astype(mx.float32)  # [N, vocab]
    return logits, logits - logsumexp_exact(logits)


def logsumexp_exact(logits: mx.array) -> mx.array:
    """``logsumexp`` over the last axis, accumulated in float64 (on the CPU stream), as float32."""
    return mx.logsumexp(logits.astype(mx.float64), axis=-1, keepdims=True, stream=mx.cpu).astype(mx.float32)


def fast_lens_logits(hm: HookedModel, resid: mx.array) -> mx.array:
    """Lens logits [N, vocab] in float32 for residuals [N, hidden].

    Same maths as ``lens_distributions`` (final norm, unembedding, soft-cap), but the
    unembedding matrix is kept transposed and contiguous (a cached copy): on the CPU
    backend ``x @ W.T`` on the stored [vocab, hidden] matrix is ~1.6x slower.
    """
    lm = hm.lm
    wt = lm.extras.get("unembed_t")
    if wt is None:
        w = lm.model.model.embed_tokens.weight if hm.adapter.tied_embeddings else lm.model.lm_head.weight
        if w.dtype not in (mx.float32, mx.float16, mx.bfloat16):  # quantized: use the model's own head
            return lens_distributions(hm, resid)[0]
        wt = mx.contiguous(w.T)
        mx.eval(wt)
        lm.extras["unembed_t"] = wt
    h = hm.model.model.norm(resid)
    logits = (h @ wt).astype(mx.float32)
    cap = hm.adapter.final_logit_softcap
    if cap:
        logits = mx.tanh(logits / cap) * cap
    return logits


@dataclass
class LensStats:
    top_ids: list[list[int]]
    top_probs: list[list[float]]
    entropy: list[float]  # nats
    kl: list[float]  # KL(P_a || P_b) per pair
    js: list[float]
    tracked_probs: list[list[float]]  # [L][T]
    tracked_ranks: list[list[int]]  # [L][T], 1 = top, over the full vocabulary


def lens_stats(logits: np.ndarray, k: int, tracked: Sequence[int], pairs: Sequence[tuple[int, int]]) -> LensStats:
    """Top-k, entropy, KL/JS between row pairs and full-vocabulary ranks, from logits [L, vocab].

    Done in NumPy: for these [L, vocab] element-wise passes it is several times faster than
    MLX's CPU backend. Every pass writes into reused scratch buffers: a fresh 6 MB array costs
    more in page faults than the arithmetic on it (docs/PERFORMANCE.md, lens overhead).
    """
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    R, V = logits.shape
    with _scratch(R, V) as ws:
        logp, p, tmp = ws.logp, ws.p, ws.tmp
        np.subtract(logits, logits.max(axis=-1, keepdims=True), out=logp)  # shifted, max 0
        # exp of anything under -87 is below float32's normal range: clamp first so no denormal
        # (slow path) is produced; the probabilities it changes are < 1.2e-38.
        np.maximum(logp, _EXP_FLOOR, out=p)
        np.exp(p, out=p)
        z = p.sum(axis=-1, keepdims=True, dtype=np.float64)
        np.divide(p, z.astype(np.float32), out=p)
        np.subtract(logp, np.log(z).astype(np.float32), out=logp)
        np.multiply(p, logp, out=tmp)
        entropy = -tmp.sum(axis=-1, dtype=np.float64)
        top = _top_k(logits, k)
        top_p = np.take_along_axis(p, top, axis=-1)
        kl, js = _kl_js(ws, pairs)
        t = np.asarray(list(tracked), dtype=np.int64)
        t_prob = p[:, t].astype(np.float64) if len(t) else np.zeros((R, 0))
        t_rank = np.zeros((R, len(t)), dtype=np.int64)
        for j, tid in enumerate(t):
            np.greater(logits, logits[:, tid:tid + 1], out=ws.flags)
            t_rank[:, j] = np.count_nonzero(ws.flags, axis=-1) + 1
    return LensStats(top.tolist(), top_p.astype(float).tolist(), entropy.tolist(), kl, js,
                     t_prob.tolist(), t_rank.tolist())


_EXP_FLOOR = np.float32(-87.0)


def _top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices [R, k] of each row's k largest logits, largest first (ties: lower id first).

    Exact without a pass over the whole row: the k-th largest of the block maxima is a lower bound
    of the k-th largest element (those k maxima are k elements at least that large), so the top k
    lie in the few blocks whose maximum reaches it."""
    R, V = logits.shape
    k = min(k, V)
    nb = V // _BLOCK
    if nb < 4 * k:
        top = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
        order = np.lexsort((top, -np.take_along_axis(logits, top, axis=-1)), axis=-1)
        return np.take_along_axis(top, order, axis=-1)
    maxima = logits[:, :nb * _BLOCK].reshape(R, nb, _BLOCK).max(axis=-1)
    if nb * _BLOCK < V:  # the ragged tail is one more block
        maxima = np.concatenate([maxima, logits[:, nb * _BLOCK:].max(axis=-1, keepdims=True)], axis=-1)
    bound = -np.partition(-maxima, k - 1, axis=-1)[:, k - 1]  # [R]
    top = np.empty((R, k), dtype=np.int64)
    offsets = np.arange(_BLOCK)
    for r in range(R):
        blocks = np.flatnonzero(maxima[r] >= bound[r])
        cols = (blocks[:, None] * _BLOCK + offsets).ravel()
        cols = cols[cols < V]
        vals = logits[r, cols]
        keep = vals >= bound[r]
        cols, vals = cols[keep], vals[keep]
        top[r] = cols[np.lexsort((cols, -vals))[:k]]
    return top


_BLOCK = 512


def _kl_js(ws: _Scratch, pairs: Sequence[tuple[int, int]]) -> tuple[list[float], list[float]]:
    """KL(P_a || P_b) and JS(P_a, P_b) for row pairs, from ws.p / ws.logp, a chunk of pairs per pass.
    Consecutive pairs (a, a+1), ... (the lens's case) are read in place; others are gathered first."""
    kl: list[float] = []
    js: list[float] = []
    for c in range(0, len(pairs), _PAIR_CHUNK):
        chunk = pairs[c:c + _PAIR_CHUNK]
        n = len(chunk)
        a = np.array([x for x, _ in chunk])
        b = np.array([y for _, y in chunk])
        if np.all(np.diff(a) == 1) and np.all(np.diff(b) == 1):
            pa, pb = ws.p[a[0]:a[-1] + 1], ws.p[b[0]:b[-1] + 1]
            la, lb = ws.logp[a[0]:a[-1] + 1], ws.logp[b[0]:b[-1] + 1]
        else:
            pa, pb, la, lb = (np.take(src, idx, axis=0, out=buf[:n]) for src, idx, buf in
                              ((ws.p, a, ws.pa), (ws.p, b, ws.pb), (ws.logp, a, ws.la), (ws.logp, b, ws.lb)))
        w, mix = ws.w[:n], ws.mix[:n]
        np.subtract(la, lb, out=w)
        np.multiply(w, pa, out=w)
        kl += np.maximum(w.sum(axis=-1, dtype=np.float64), 0.0).tolist()
        np.add(pa, pb, out=mix)  # log of the mixture 0.5 (P_a + P_b)
        np.multiply(mix, np.float32(0.5), out=mix)
        np.maximum(mix, np.float32(1e-38), out=mix)
        np.log(mix, out=mix)
        np.subtract(la, mix, out=w)
        np.multiply(w, pa, out=w)
        half_a = w.sum(axis=-1, dtype=np.float64)
        np.subtract(lb, mix, out=w)
        np.multiply(w, pb, out=w)
        js += np.maximum(0.5 * half_a + 0.5 * w.sum(axis=-1, dtype=np.float64), 0.0).tolist()
    return kl, js


_PAIR_CHUNK = 8


class _Scratch:
    """Work buffers for ``lens_stats``: rows x vocab for the distributions, a chunk of pairs x vocab for KL/JS."""

    def __init__(self, rows: int, vocab: int) -> None:
        self.shape = (rows, vocab)
        self.logp, self.p, self.tmp = (np.empty((rows, vocab), np.float32) for _ in range(3))
        self.flags = np.empty((rows, vocab), np.bool_)
        self.pa, self.pb, self.la, self.lb, self.w, self.mix = (
            np.empty((_PAIR_CHUNK, vocab), np.float32) for _ in range(6))


_SCRATCH_LOCK = threading.Lock()
_SCRATCH: list[_Scratch] = []


@contextmanager
def _scratch(rows: int, vocab: int) -> Iterator[_Scratch]:
    """Reuse the last call's buffers when the shape matches (the usual case: the same model's lens again).
    Only one caller at a time holds them; a concurrent caller gets fresh ones."""
    if not _SCRATCH_LOCK.acquire(blocking=False):
        yield _Scratch(rows, vocab)
        return
    try:
        if not (_SCRATCH and _SCRATCH[0].shape == (rows, vocab)):
            _SCRATCH[:] = [_Scratch(rows, vocab)]
        yield _SCRATCH[0]
    finally:
        _SCRATCH_LOCK.release()


def _layer_rows(tok: Any, st: LensStats, layers: Sequence[int], row: dict[int, int], vocab: int
                ) -> list[LayerPredictionResult]:
    log_v = math.log(vocab)
    out = []
    for layer in layers:
        i = row[layer]
        en = st.entropy[i] / log_v
        preds = [TokenPrediction(token=tok.piece(t), token_id=t, probability=p, rank=r + 1)
                 for r, (t, p) in enumerate(zip(st.top_ids[i], st.top_probs[i]))]
        out.append(LayerPredictionResult(layer_idx=layer, predictions=preds, entropy=st.entropy[i],
                                         entropy_normalized=en, is_confident=en < CONFIDENT_BELOW))
    return out


def _lens_logits(hm: HookedModel, ids: list[int], read: list[int], pos: int, req: AnalyzeRequest,
                 cancel: Callable[[], bool] | None, on_layer: Callable[[int, int], None] | None,
                 on_rows: Callable[[list[LayerPredictionResult]], None] | None, layers: list[int]) -> np.ndarray:
    """Lens logits [len(read), vocab] at ``pos``. With ``on_rows`` the stack runs in a few segments and each
    segment's requested layers are reported as finished rows (live display), at the price of one small
    unembedding matmul per segment instead of one for all layers."""
    batch = Batch.from_lists([ids])
    n = hm.n_layers
    segments = [(0, n)] if on_rows is None else [(a, min(n, a + max(1, -(-n // 5)))) for a in range(0, n, max(1, -(-n // 5)))]
    h = None
    parts = []
    for start, stop in segments:
        seg_read = [layer for layer in read if start <= layer < stop]
        cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=seg_read, positions=[pos])
        out = hm.forward(batch, capture=cap, logits="none", cancel=cancel, embedding_scale=req.embedding_scale,
                         on_layer=on_layer, start_layer=start, stop_layer=stop, h=h)
        h = out.resid
        if not seg_read:
            continue
        resid = mx.concatenate([out.captures[f"blocks.{layer}.resid_post"][0] for layer in seg_read], axis=0)
        part = np.asarray(fast_lens_logits(hm, resid))  # [len(seg_read), vocab], a view of MLX's buffer
        parts.append(part)
        shown = [layer for layer in seg_read if layer in layers]
        if on_rows is not None and shown:
            st = lens_stats(part, min(req.top_k, part.shape[-1]), [], [])
            on_rows(_layer_rows(hm.lm.tokenizer, st, shown, {layer: i for i, layer in enumerate(seg_read)},
                                part.shape[-1]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def analyze(lm: LoadedModel, req: AnalyzeRequest, cancel: Callable[[], bool] | None = None,
            on_layer: Callable[[int, int], None] | None = None,
            on_rows: Callable[[list[LayerPredictionResult]], None] | None = None) -> AnalysisResult:
    """The logit lens for ``req`` on ``lm``.

    ``on_layer(layer, n)`` reports progress per block; ``on_rows(rows)`` receives finished layer rows
    while the pass runs (the TUI's live table). ``cancel`` is checked between blocks.
    """
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
    row = {layer: i for i, layer in enumerate(read)}
    logits = _lens_logits(hm, ids, read, pos, req, cancel, on_layer, on_rows, layers)  # [L, vocab]
    vocab = logits.shape[-1]
    final_top = int(np.argmax(logits[row[n - 1]]))
    pairs = [(row[a], row[b]) for a, b in zip(layers, layers[1:])] if req.compute_transitions else []
    # tracked tokens, then the final prediction (for its rank at every layer)
    st = lens_stats(logits, min(req.top_k, vocab), [t[1] for t in tracked] + [final_top], pairs)
    layer_preds = _layer_rows(tok, st, layers, row, vocab)
    transitions = [
        LayerTransition(from_layer=a, to_layer=b, kl_divergence=kl, js_divergence=js,
                        top_token_changed=st.top_ids[row[a]][0] != st.top_ids[row[b]][0])
        for (a, b), kl, js in zip(zip(layers, layers[1:]), st.kl, st.js)
    ] if req.compute_transitions else []
    final = _layer_rows(tok, st, [n - 1], row, vocab)[0].predictions
    decision = next((lp.layer_idx for lp in layer_preds
                     if lp.predictions[0].token_id == final_top and lp.is_confident), None)
    evolutions = []
    for j, (text, tid, all_ids) in enumerate(tracked):
        probs_by_layer = {layer: st.tracked_probs[row[layer]][j] for layer in layers}
        ranks_by_layer = {layer: int(st.tracked_ranks[row[layer]][j]) for layer in layers}
        emergence = next((layer for layer in layers if ranks_by_layer[layer] == 1), None)
        note = None
        if len(all_ids) > 1:
            note = (f"{text!r} is {len(all_ids)} tokens {tok.pieces(all_ids)}; tracking the first, "
                    f"{tok.piece(all_ids[0])!r}")
        evolutions.append(TokenEvolutionResult(token=text, token_id=tid, layer_probabilities=probs_by_layer,
                                               layer_ranks=ranks_by_layer, emergence_layer=emergence,
                                               pieces=tok.pieces(all_ids), note=note))
    final_ranks = {layer: int(st.tracked_ranks[row[layer]][len(tracked)]) for layer in layers}
    return AnalysisResult(
        model_id=lm.info.model_id, request=req, prompt=req.prompt, tokens=tok.pieces(ids), token_ids=ids,
        position=pos, num_layers=n, captured_layers=layers, final_prediction=final,
        layer_predictions=layer_preds, layer_transitions=transitions, token_evolutions=evolutions,
        decision_layer=decision, predicted_token=final[0].token, predicted_probability=final[0].probability,
        final_entropy=st.entropy[row[n - 1]], vocab_size=int(vocab), final_token_ranks=final_ranks,
    )
