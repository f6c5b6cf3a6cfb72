"""The logit lens: what each layer's residual stream would predict.

For each selected layer: the layer output at one prompt position (through a tuned lens's
translator when ``req.lens`` names one: ``lens_input``), through the model's own final norm,
unembedding (tied when the model ties) and soft-cap, then softmax. All layers are unembedded in
one matmul, at one position only, and read back once; entropy, KL/JS between consecutive layers, top-k and
full-vocabulary ranks are computed from those logits (``engine.distributions``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from engine import blas
from engine.distributions import LensStats, lens_stats, log_normaliser
from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
from engine.layer_lists import evenly_spaced, resolve_layer_list
from engine.models import LoadedModel
from engine.results.analyze import (
    AnalysisResult,
    AnalyzeRequest,
    LayerPredictionResult,
    LayerStrategy,
    LayerTransition,
    TokenEvolutionResult,
)
from engine.results.base import TokenPrediction
from engine.tuned_lens import TunedLens, resolve_lens

CONFIDENT_BELOW = 0.3  # normalised entropy under which a layer counts as confident
KERNEL_ROWS = 256  # rows up to which engine.unembed_kernel beat OpenBLAS (measured to 256; more amortise its packing)


def select_layers(strategy: LayerStrategy, n_layers: int, step: int = 4,
                  custom: Sequence[int] | None = None) -> list[int]:
    if strategy == LayerStrategy.ALL:
        return list(range(n_layers))
    if strategy == LayerStrategy.EVENLY_SPACED:
        return evenly_spaced(n_layers, step)
    if strategy == LayerStrategy.FIRST_LAST:
        return sorted({0, n_layers - 1})
    if not custom:
        raise InputError("custom layer strategy needs --layers")
    return resolve_layer_list(custom, n_layers)


def lens_input(resid: mx.array, layers: Sequence[int] | None, lens: TunedLens | None) -> mx.array:
    """The residual a lens reads: ``resid`` itself (logit lens), or through the tuned lens's translator
    for each row's layer. The one place a tuned lens enters; every lens reader comes through here."""
    if lens is None:
        return resid
    if layers is None:
        raise ValueError("a tuned lens needs each residual row's layer")
    return lens.translate(resid, list(layers))


def lens_distributions(hm: HookedModel, resid: mx.array, layers: Sequence[int] | None = None,
                       lens: TunedLens | None = None) -> tuple[mx.array, mx.array]:
    """(logits, log-probs) in float32 for residual vectors ``resid`` [N, hidden] (row i read as
    layer ``layers[i]``'s, through ``lens`` when given).

    The normaliser is ``engine.distributions.log_normaliser`` (float64)."""
    resid = lens_input(resid, layers, lens)
    logits = hm.adapter.lens_logits(hm.model, resid[None])[0].astype(mx.float32)  # [N, vocab]
    c = log_normaliser(np.array(logits))
    return logits, logits - mx.array(c[:, None].astype(np.float32))


def fast_lens_logits(hm: HookedModel, resid: mx.array, layers: Sequence[int] | None = None,
                     lens: TunedLens | None = None) -> np.ndarray:
    """Lens logits [N, vocab] as NumPy float32 for residuals [N, hidden] (rows' layers and lens as in
    ``lens_distributions``).

    Same maths as ``lens_distributions`` (final norm, unembedding, soft-cap) in one float32 product
    of all rows against the stored [vocab, hidden] matrix, never a transposed copy (that cost 0.6 GB
    on Gemma). On a Linux CPU, up to ``KERNEL_ROWS`` rows go through
    ``engine.unembed_kernel`` (OpenBLAS repacks the whole matrix on every product: SmolLM2's 30
    rows 18.4 -> 12.8 ms); elsewhere MLX's matmul (``x @ W.T``, no copy).
    """
    resid = lens_input(resid, layers, lens)
    lm = hm.lm
    w = lm.extras.get("unembed")
    if w is None:
        w = _plain_head(hm, resid[:1])
        lm.extras["unembed"] = w
    if not isinstance(w, mx.array):  # quantized, biased or scaled head: the family's own
        return np.asarray(lens_distributions(hm, resid)[0])
    h = hm.adapter.final_norm(hm.model)(resid)
    n = h.shape[0]
    cap = hm.adapter.final_logit_softcap
    if w.dtype == mx.float32 and n <= KERNEL_ROWS and _kernel_head():
        from engine.unembed_kernel import unembed  # compiles or loads the loop (prepare() starts that early)

        out = unembed(np.asarray(h.astype(mx.float32)), np.asarray(w))
        if cap:
            np.tanh(out / cap, out=out)
            out *= cap
        return out
    pad = _row_padding(n)
    if pad:
        h = mx.concatenate([h, mx.zeros((pad, h.shape[1]), h.dtype)])
    logits = (h @ w.T)[:n].astype(mx.float32)
    if cap:
        logits = mx.tanh(logits / cap) * cap
    return np.asarray(logits)


def _plain_head(hm: HookedModel, probe: mx.array) -> mx.array | bool:
    """The [vocab, hidden] unembedding matrix when the family's head is exactly final norm, that
    matrix and the soft-cap (checked once on one residual against the family's own head), else False."""
    w = hm.adapter.unembed_weight(hm.model)
    if w is None or w.dtype not in (mx.float32, mx.float16, mx.bfloat16):
        return False
    logits = (hm.adapter.final_norm(hm.model)(probe) @ w.T).astype(mx.float32)
    cap = hm.adapter.final_logit_softcap
    if cap:
        logits = mx.tanh(logits / cap) * cap
    own = hm.adapter.lens_logits(hm.model, probe[None])[0].astype(mx.float32)
    scale = float(np.abs(np.array(own)).max()) or 1.0
    if float(np.abs(np.array(logits - own)).max()) > 1e-3 * scale:
        return False
    return w


def _row_padding(n: int) -> int:
    """Zero rows to add to an n-row unembedding matmul: up to a multiple of 16 when n mod 16 >= 8,
    with OpenBLAS on the CPU only. Its x86 SGEMM kernels run such products far faster at multiples
    of 16 rows (SmolLM2's head against a transposed copy: 30 rows 28.8 ms, 32 rows 21.3 ms, 12 rows
    31 ms, 16 rows 16 ms; against the stored matrix the gain is smaller: 30 rows 17.9 ms, 32 rows
    17.1 ms, 12 rows 14.5 ms, 16 rows 12.5 ms; docs/PERFORMANCE.md). The padded rows are zeros and are dropped."""
    if n % 16 < 8 or not _openblas_cpu():
        return 0
    return -n % 16


def _kernel_head() -> bool:
    """The unembedding goes through ``engine.unembed_kernel``: on the CPU where MLX's BLAS is OpenBLAS
    or the reference BLAS (Linux). Not on a GPU, and not on macOS, whose Accelerate is not the
    repacking SGEMM the loop replaces."""
    return mx.default_device() == mx.cpu and blas.state().platform != "darwin"


def _openblas_cpu() -> bool:
    return blas.state().loaded is not None and mx.default_device() == mx.cpu


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
                 on_rows: Callable[[list[LayerPredictionResult]], None] | None, layers: list[int],
                 pipeline: Any = None, lens: TunedLens | None = None) -> np.ndarray | None:
    """Lens logits [len(read), vocab] at ``pos``. With ``on_rows`` the stack runs in a few segments and each
    segment's requested layers are reported as finished rows (live display), at the price of one small
    unembedding matmul per segment instead of one for all layers."""
    batch = Batch.from_lists([ids])
    if pipeline is not None:  # the layers are split across ranks: one pipelined pass, the lens on rank 0
        from engine.pipeline import compute_dtype, pipelined_forward

        out = pipelined_forward(hm, batch, pipeline, logits="none", embedding_scale=req.embedding_scale,
                                capture=CaptureSpec(kinds=(SiteKind.resid_post,), layers=read, positions=[pos]))
        if out is None:
            return None
        resid = mx.concatenate([out.captures[f"blocks.{layer}.resid_post"][0] for layer in read], axis=0)
        return fast_lens_logits(hm, resid.astype(compute_dtype(hm)), read, lens)
    n = hm.n_layers
    seg = max(1, -(-n // 5))
    segments = [(0, n)] if on_rows is None else [(a, min(n, a + seg)) for a in range(0, n, seg)]
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
        part = fast_lens_logits(hm, resid, seg_read, lens)  # [len(seg_read), vocab]
        parts.append(part)
        shown = [layer for layer in seg_read if layer in layers]
        if on_rows is not None and shown:
            st = lens_stats(part, min(req.top_k, part.shape[-1]), [], [], row_names=[f"layer {x}" for x in seg_read])
            on_rows(_layer_rows(hm.lm.tokenizer, st, shown, {layer: i for i, layer in enumerate(seg_read)},
                                part.shape[-1]))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def analyze(lm: LoadedModel, req: AnalyzeRequest, cancel: Callable[[], bool] | None = None,
            on_layer: Callable[[int, int], None] | None = None,
            on_rows: Callable[[list[LayerPredictionResult]], None] | None = None,
            pipeline: Any = None) -> AnalysisResult | None:
    """The logit lens for ``req`` on ``lm``.

    ``on_layer(layer, n)`` reports progress per block; ``on_rows(rows)`` receives finished layer rows
    while the pass runs (the TUI's live table). ``cancel`` is checked between blocks. ``pipeline``: a
    ``World`` whose ranks each hold one stage of ``lm`` (engine/pipeline.py); rank 0 gets the result,
    the others ``None``.
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
    if pipeline is not None and req.lens != "logit":  # each rank holds one stage: no whole model to bind to
        raise InputError("a tuned lens cannot be read through a pipelined model yet (use one process)")
    lens = resolve_lens(lm, req.lens)

    read = sorted(set(layers) | {n - 1})
    row = {layer: i for i, layer in enumerate(read)}
    logits = _lens_logits(hm, ids, read, pos, req, cancel, on_layer, on_rows, layers, pipeline, lens)  # [L, vocab]
    if logits is None:  # a pipeline stage other than rank 0
        return None
    vocab = logits.shape[-1]
    final_top = int(np.argmax(logits[row[n - 1]]))
    pairs = [(row[a], row[b]) for a, b in itertools.pairwise(layers)] if req.compute_transitions else []
    # tracked tokens, then the final prediction (for its rank at every layer)
    st = lens_stats(logits, min(req.top_k, vocab), [t[1] for t in tracked] + [final_top], pairs,
                    row_names=[f"layer {layer}" for layer in read])
    layer_preds = _layer_rows(tok, st, layers, row, vocab)
    transitions = [
        LayerTransition(from_layer=a, to_layer=b, kl_divergence=kl, js_divergence=js,
                        top_token_changed=st.top_ids[row[a]][0] != st.top_ids[row[b]][0])
        for (a, b), kl, js in zip(itertools.pairwise(layers), st.kl, st.js)
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
        lens=lens.binding if lens is not None else None,
    )
