"""Token tracking: where in the layer stack a token becomes the prediction.

Used by the TUI's tracking screen and the Python API (the lens screen's rank
heat-strip comes from ``AnalysisResult.final_token_ranks``):

* ``track_generation``: generate N tokens greedily, then run ONE hooked forward over
  prompt + generated tokens, capturing ``resid_post`` at every layer at the positions
  whose outputs chose each generated token, and lens them all in one matmul. For each
  generated token: its rank/probability per layer and the layer where it became top-1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.errors import InputError
from engine.results.tracking import GeneratedPosition, TrackGenerationRequest, TrackGenerationResult

if TYPE_CHECKING:
    from engine.models import LoadedModel

# MLX is imported inside the functions; the request and result models are in engine.results.tracking.


def _first_top1(ranks: list[int]) -> tuple[int | None, int | None]:
    emergence = next((i for i, r in enumerate(ranks) if r == 1), None)
    settled = None
    for i in range(len(ranks) - 1, -1, -1):
        if ranks[i] != 1:
            break
        settled = i
    return emergence, settled


def track_generation(lm: LoadedModel, req: TrackGenerationRequest, cancel: Callable[[], bool] | None = None,
                     on_step: Callable[[str, int, int], None] | None = None) -> TrackGenerationResult:
    """See the module docstring; ``on_step(stage, done, total)`` with stage "token" then "layer"."""
    import mlx.core as mx
    import numpy as np

    from engine.distributions import token_probs_ranks
    from engine.generate import generate_ids
    from engine.hooks import Batch, CaptureSpec, HookedModel, SiteKind
    from engine.lens import fast_lens_logits
    from engine.tuned_lens import resolve_lens

    if not req.prompt:
        raise InputError("empty prompt")
    tok = lm.tokenizer
    hm = HookedModel(lm)
    n_layers = hm.n_layers
    ids = tok.prepare(req.prompt, chat=req.chat)
    lens = resolve_lens(lm, req.lens)
    outs = generate_ids(hm, [ids], req.max_new_tokens, stop_ids=tok.eos_ids, cancel=cancel,
                        on_step=(lambda d, t: on_step("token", d, t)) if on_step else None)
    gen = list(outs[0].ids)
    stopped = outs[0].stopped
    if stopped == "eos" and gen and gen[-1] in tok.eos_ids:
        gen = gen[:-1]
    base: dict[str, Any] = dict(model_id=lm.info.model_id, request=req, prompt_tokens=tok.pieces(ids),
                                num_layers=n_layers, text=tok.decode(gen), stopped=stopped,
                                lens=lens.binding if lens is not None else None)
    if not gen:
        return TrackGenerationResult(**base, positions=[])

    full = ids + gen
    P = len(gen)
    read_at = [len(ids) - 1 + i for i in range(P)]  # the output at read_at[i] chose gen[i]
    cap = CaptureSpec(kinds=(SiteKind.resid_post,), layers=None, positions=read_at)
    out = hm.forward(Batch.from_lists([full[:-1]]), capture=cap, logits="none", cancel=cancel,
                     on_layer=(lambda layer, n: on_step("layer", layer + 1, n)) if on_step else None)
    resid = mx.stack([out.captures[f"blocks.{layer}.resid_post"][0] for layer in range(n_layers)])  # [L, P, hidden]
    row_layers = [layer for layer in range(n_layers) for _ in range(P)]
    logits = fast_lens_logits(hm, resid.reshape(n_layers * P, -1), row_layers, lens)  # [L*P, vocab]
    names = [f"layer {layer} at generated token {p}" for layer in range(n_layers) for p in range(P)]
    probs, ranks = token_probs_ranks(logits, gen * n_layers, names)  # row l*P+p -> gen[p]
    probs_l = probs.reshape(n_layers, P).tolist()
    ranks_l = ranks.reshape(n_layers, P).tolist()
    top1_l = np.argmax(logits, axis=-1).reshape(n_layers, P).tolist()

    positions = []
    for p, tid in enumerate(gen):
        r = [int(ranks_l[layer][p]) for layer in range(n_layers)]
        emergence, settled = _first_top1(r)
        positions.append(GeneratedPosition(
            index=p, position=read_at[p], token=tok.piece(tid), token_id=tid, ranks=r,
            probabilities=[float(probs_l[layer][p]) for layer in range(n_layers)],
            top_tokens=[tok.piece(top1_l[layer][p]) for layer in range(n_layers)],
            emergence_layer=emergence, settled_layer=settled))
    return TrackGenerationResult(**base, positions=positions)
