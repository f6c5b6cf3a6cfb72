"""Per-family facts that cannot be discovered from an mlx-lm module tree.

A llama-like family needs no entry: its blocks, attention (``self_attn``/``attn``/...),
MLP, output and down projections, final norm and head are found by name in
``engine.models.adapter``. An entry says only what differs: module names outside the
usual lists, a post-norm outside the attention/MLP module (then ``attn_out`` and
``mlp_out`` are that norm's output, i.e. exactly what the block adds to the residual),
the embedding scale the family's own code applies, which layers are sliding-window,
and refusals. ``lazarus --batch models families`` and docs/models.md print this table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention", "attn_block")
MLP_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "ffn", "moe", "mlp_block")
O_NAMES = ("o_proj", "c_proj", "dense", "out_proj", "wo", "o")
DOWN_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "down")
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f", "final_norm", "ln_final")


def sqrt_hidden(cfg: dict[str, Any]) -> float:
    return math.sqrt(float(cfg["hidden_size"]))


def sqrt_hidden_bf16(cfg: dict[str, Any]) -> float:
    """sqrt(hidden) rounded to bfloat16, the factor mlx-lm's gemma3_text multiplies embeddings by."""
    import mlx.core as mx

    return float(mx.array(sqrt_hidden(cfg), dtype=mx.bfloat16).astype(mx.float32).item())


def layer_types_sliding(cfg: dict[str, Any], n_layers: int) -> tuple[int | None, tuple[int, ...]]:
    """Sliding layers from HF's ``layer_types`` list (Mistral-style configs, Qwen3, ...)."""
    types = cfg.get("layer_types") or []
    sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    window = cfg.get("sliding_window")
    return (int(window), sliding) if sliding and window else (None, ())


def gemma3_sliding(cfg: dict[str, Any], n_layers: int) -> tuple[int | None, tuple[int, ...]]:
    pattern = int(cfg.get("sliding_window_pattern", 6))
    return int(cfg.get("sliding_window", 512)), tuple(i for i in range(n_layers) if (i + 1) % pattern != 0)


@dataclass(frozen=True)
class Family:
    family: str | None = None  # display group (defaults to the model_type)
    attn: str | None = None  # attention module name in a block, where not one of ATTN_NAMES
    mlp: str | None = None
    o_proj: str | None = None  # attention output projection inside the attention module
    down: str | None = None  # MLP down projection inside the MLP module
    final_norm: str | None = None
    attn_out_at: str | None = None  # block child (a post-norm) whose output is attn_out
    mlp_out_at: str | None = None
    parallel: bool = False  # attention and MLP read the same input (x + attn(..) + mlp(..))
    recurrent: bool = False  # state-space / linear-attention layers
    no_padding: str | None = None  # why prompts of different lengths cannot share a left-padded batch
    embedding_scale: Callable[[dict[str, Any]], float] | None = None
    sliding: Callable[[dict[str, Any], int], tuple[int | None, tuple[int, ...]]] = layer_types_sliding
    note: str = ""  # what a site means here, or what is missing
    refused: str | None = None  # one line: why lazarus refuses this family


_GEMMA_POST = dict(attn_out_at="post_attention_layernorm", mlp_out_at="post_feedforward_layernorm")
_MOE = "mixture of experts: moe_router = each token's expert weights; mlp_hidden is per expert, not exposed"
_POSITIONS = "its learned position table would shift under left padding"
_STATE = "its state-space layers would carry the padding's state"
_HYBRID = "hybrid attention/state-space: residual sites, lens and whole-layer ablation; one prompt per batch"
_VISION = "multimodal checkpoint: text only, through its language model"

FAMILIES: dict[str, Family] = {
    "llama": Family(), "mistral": Family(), "qwen2": Family(), "qwen3": Family(), "smollm3": Family(),
    "gemma": Family(embedding_scale=sqrt_hidden),
    "gemma2": Family(embedding_scale=sqrt_hidden, **_GEMMA_POST,
                     no_padding="its attention reshapes grouped heads by hand, so a per-row padding mask cannot reach it",
                     note="attn_out/mlp_out = after the post-norms; no attn_pattern (scores computed by hand, "
                          "soft-capped, outside scaled_dot_product_attention)"),
    "gemma3_text": Family(family="gemma3", embedding_scale=sqrt_hidden_bf16, sliding=gemma3_sliding, **_GEMMA_POST,
                          note="attn_out/mlp_out = after the post-norms (what the block adds)"),
    "gemma3": Family(family="gemma3", embedding_scale=sqrt_hidden_bf16, sliding=gemma3_sliding, **_GEMMA_POST,
                     note=_VISION),
    "olmo2": Family(**_GEMMA_POST, note="attn_out/mlp_out = after the post-norms (what the block adds)"),
    "olmo3": Family(**_GEMMA_POST, note="attn_out/mlp_out = after the post-norms (what the block adds)"),
    "gpt2": Family(no_padding=_POSITIONS, note="attn/c_proj, mlp/c_proj; learned positions: prompts run one per batch"),
    "gpt_bigcode": Family(no_padding=_POSITIONS, note="learned positions: prompts run one per batch"),
    "gpt_neox": Family(parallel=True, note="attention/dense, mlp/dense_4h_to_h; parallel residual"),
    "cohere": Family(parallel=True, note="parallel residual: attention and MLP read one norm"),
    "cohere2": Family(parallel=True, note="parallel residual: attention and MLP read one norm"),
    "phi": Family(parallel=True, note="parallel residual; self_attn/dense, mlp/fc2"),
    "mixtral": Family(note=_MOE), "qwen2_moe": Family(note=_MOE), "qwen3_moe": Family(note=_MOE),
    "granitemoe": Family(note=_MOE), "olmoe": Family(note=_MOE), "phimoe": Family(note=_MOE),
    "gpt_oss": Family(note=_MOE + "; attention sinks are in attn_pattern's softmax (rows sum below 1)"),
    "deepseek_v2": Family(note="MLA attention; " + _MOE), "deepseek_v3": Family(note="MLA attention; " + _MOE),
    "qwen3_next": Family(recurrent=True, no_padding=_STATE, note=_HYBRID), "lfm2": Family(recurrent=True, no_padding=_STATE, note=_HYBRID),
    "falcon_h1": Family(recurrent=True, no_padding=_STATE, note=_HYBRID), "granitemoehybrid": Family(recurrent=True, no_padding=_STATE, note=_HYBRID),
    "mamba": Family(recurrent=True, no_padding=_STATE, note="state-space: residual sites, lens and whole-layer ablation; one prompt per batch"),
    "mamba2": Family(recurrent=True, no_padding=_STATE, note="state-space: residual sites, lens and whole-layer ablation; one prompt per batch"),
    "rwkv7": Family(recurrent=True, no_padding=_STATE, note="linear attention: residual sites and lens; one prompt per batch"),
}

# Families the test suite proves (tests/families): hooked forward == native, lens, sites, ablation, steering, q4.
VERIFIED: frozenset[str] = frozenset({"llama", "gemma3_text"})

NOT_TEXT_MODELS = {"__init__", "base", "cache", "activations", "switch_layers", "rope_utils", "pipeline",
                   "bitlinear_layers", "gated_delta", "ssm", "mla"}


def family_of(model_type: str) -> Family:
    return FAMILIES.get(model_type, Family())
