"""Two-model diffs: weights (relative Frobenius norm per matrix) and activations (cosine per
prompt and layer). Pairs are checked first: a different architecture (or, for activations, a
different tokenizer) is refused with one line (InputError)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import cast

import mlx.core as mx
import numpy as np

from engine.distributed import World
from engine.errors import InputError
from engine.models import LoadedModel
from engine.representations import Progress, encode_prompts, last_hidden, resolve_layers
from engine.results.diff import (
    ActivationDiffRequest,
    ActivationDiffResult,
    MatrixDiff,
    PromptActivationDiff,
    WeightDiffRequest,
    WeightDiffResult,
)

_SHORT = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
    "down_proj": "down", "input_layernorm": "attn_norm", "post_attention_layernorm": "post_attn_norm",
    "pre_feedforward_layernorm": "pre_ff_norm", "post_feedforward_layernorm": "post_ff_norm",
    "q_norm": "q_norm", "k_norm": "k_norm",
}
_GLOBAL = {"model.embed_tokens": "embedding", "model.norm": "final_norm", "lm_head": "unembedding"}
_ORDER = ["q", "k", "v", "o", "q_norm", "k_norm", "gate", "up", "down", "attn_norm", "post_attn_norm",
          "pre_ff_norm", "post_ff_norm"]


def _arch(lm: LoadedModel) -> tuple:
    i = lm.info
    return (i.model_type, i.num_layers, i.hidden_size, i.intermediate_size, i.num_heads, i.num_kv_heads,
            i.head_dim, i.tied_embeddings, i.vocab_size)


def check_same_architecture(a: LoadedModel, b: LoadedModel, what: str) -> None:
    names = ("type", "layers", "hidden", "intermediate", "heads", "kv heads", "head dim", "tied", "vocab")
    diffs = [f"{n} {x} vs {y}" for n, x, y in zip(names, _arch(a), _arch(b)) if x != y]
    if diffs:
        raise InputError(f"{what} needs two models of the same architecture: {a.info.model_id} and "
                         f"{b.info.model_id} differ ({', '.join(diffs)})")


def same_tokenizer(a: LoadedModel, b: LoadedModel) -> bool:
    ta, tb = a.tokenizer, b.tokenizer
    if ta is tb:
        return True
    if ta.vocab_size != tb.vocab_size or ta.bos_id != tb.bos_id or ta.add_bos != tb.add_bos:
        return False
    return ta.backend.get_vocab(with_added_tokens=True) == tb.backend.get_vocab(with_added_tokens=True)


def check_same_tokenizer(a: LoadedModel, b: LoadedModel, what: str) -> None:
    if not same_tokenizer(a, b):
        raise InputError(f"{what} needs models with the same tokenizer: {a.info.model_id} "
                         f"(vocab {a.tokenizer.vocab_size}) and {b.info.model_id} (vocab {b.tokenizer.vocab_size}) "
                         "tokenize differently")


def _float_weight(module) -> mx.array:
    w = module.weight
    if "scales" in module:  # MLX-quantized (q4/q8): compare the weights it actually computes with
        w = mx.dequantize(w, module.scales, module.get("biases"), module.group_size, module.bits,
                          mode=getattr(module, "mode", "affine"))
    return w.astype(mx.float32)


def named_matrices(lm: LoadedModel) -> Iterator[tuple[int | None, str, object]]:
    """(layer or None, short name, module) for every weight-bearing module."""
    for name, module in lm.model.named_modules():
        if "weight" not in module or not isinstance(module.get("weight"), mx.array):
            continue
        if name in _GLOBAL:
            yield None, _GLOBAL[name], module
            continue
        m = re.match(r"model\.layers\.(\d+)\.(?:self_attn\.|mlp\.)?(\w+)$", name)
        if m and m.group(2) in _SHORT:
            yield int(m.group(1)), _SHORT[m.group(2)], module
        else:
            yield None, name, module


def weight_diff(base: LoadedModel, ft: LoadedModel, req: WeightDiffRequest,
                cancel: Callable[[], bool] | None = None) -> WeightDiffResult:
    """Per layer and matrix: ||W_b - W_a||_F / ||W_a||_F (quantized weights are dequantized first)."""
    check_same_architecture(base, ft, "weight-diff")
    mats_a = {(layer, n): mod for layer, n, mod in named_matrices(base)}
    mats_b = {(layer, n): mod for layer, n, mod in named_matrices(ft)}
    if set(mats_a) != set(mats_b):
        missing = sorted(str(k) for k in set(mats_a) ^ set(mats_b))[:3]
        raise InputError(f"weight-diff: the models have different weight sets (e.g. {', '.join(missing)})")
    keys = sorted(mats_a, key=lambda k: (-1 if k[0] is None and k[1] == "embedding" else
                                         10**6 if k[0] is None else k[0],
                                         _ORDER.index(k[1]) if k[1] in _ORDER else 99, k[1]))
    rows = []
    for start in range(0, len(keys), 32):
        if cancel is not None and cancel():
            from engine.errors import Cancelled

            raise Cancelled("cancelled")
        part = keys[start:start + 32]
        norms, shapes = [], []
        for key in part:
            wa, wb = _float_weight(mats_a[key]), _float_weight(mats_b[key])
            if wa.shape != wb.shape:
                raise InputError(f"weight-diff: {key[1]} at layer {key[0]} has shape {wa.shape} vs {wb.shape}")
            norms.append(mx.stack([mx.sqrt((wa * wa).sum()), mx.sqrt(((wb - wa) ** 2).sum())]))
            shapes.append(list(wa.shape))
        vals = cast(list[list[float]], mx.stack(norms).tolist())  # [[base norm, diff norm], ...]
        for key, shape, (na, nd) in zip(part, shapes, vals):
            rel = nd / na if na > 0 else (0.0 if nd == 0 else float("inf"))
            rows.append(MatrixDiff(layer=key[0], matrix=key[1], shape=shape, base_norm=na, diff_norm=nd,
                                   relative=rel, flagged=rel > req.flag_above))
    notes = []
    if base.info.tied_embeddings:
        notes.append("the unembedding is tied to the embedding (one matrix, reported as 'embedding')")
    if "q" in base.info.dtype or "q" in ft.info.dtype:
        notes.append("quantized weights were dequantized before comparing")
    return WeightDiffResult(base_model_id=base.info.model_id, finetuned_model_id=ft.info.model_id,
                            base_dtype=base.info.dtype, finetuned_dtype=ft.info.dtype, request=req, matrices=rows,
                            notes=notes)


def activation_diff(base: LoadedModel, ft: LoadedModel, req: ActivationDiffRequest,
                    cancel: Callable[[], bool] | None = None, progress: Progress | None = None,
                    world: World | None = None) -> ActivationDiffResult | None:
    """Per prompt and layer: cosine (and relative L2) between the two models' last-position outputs.
    ``world``: each model's forward batches are shared among the ranks; rank 0 returns the result, the
    other ranks None."""
    check_same_tokenizer(base, ft, "activation-diff")
    check_same_architecture(base, ft, "activation-diff")
    layers = resolve_layers(req.layers, base.num_layers, 1) if req.layers else list(range(base.num_layers))
    rows = encode_prompts(base, req.prompts, req.chat)
    rows_b = encode_prompts(ft, req.prompts, req.chat)
    if rows != rows_b:
        raise InputError("activation-diff: the two models tokenize the prompts differently")
    def model_pass(lm: LoadedModel, k: int) -> np.ndarray | None:  # progress counts both models' passes
        step = None if progress is None else (lambda done, n: progress(done + k * n, 2 * n))
        h = last_hidden(lm, req.prompts, layers, rows=rows, cancel=cancel, progress=step, world=world)
        return None if h is None else h.astype(np.float64)

    ha, hb = model_pass(base, 0), model_pass(ft, 1)  # [L, N, d]
    if ha is None or hb is None:
        return None
    na, nb = np.linalg.norm(ha, axis=-1), np.linalg.norm(hb, axis=-1)
    cos = np.clip((ha * hb).sum(-1) / np.maximum(na * nb, 1e-30), -1.0, 1.0)  # [L, N]
    rel = np.linalg.norm(hb - ha, axis=-1) / np.maximum(na, 1e-30)
    prompts = [PromptActivationDiff(prompt=p, cosine_by_layer={layer: float(cos[li, i]) for li, layer in enumerate(layers)},
                                    relative_l2_by_layer={layer: float(rel[li, i]) for li, layer in enumerate(layers)})
               for i, p in enumerate(req.prompts)]
    return ActivationDiffResult(base_model_id=base.info.model_id, finetuned_model_id=ft.info.model_id,
                                base_dtype=base.info.dtype, finetuned_dtype=ft.info.dtype, request=req,
                                layers=layers, prompts=prompts,
                                mean_cosine_by_layer={layer: float(cos[li].mean()) for li, layer in enumerate(layers)})
