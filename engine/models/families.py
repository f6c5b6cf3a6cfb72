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
from typing import Any, TypedDict

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

    from engine.mx_values import item_float

    return item_float(mx.array(sqrt_hidden(cfg), dtype=mx.bfloat16).astype(mx.float32))


def layer_types_sliding(cfg: dict[str, Any], n_layers: int) -> tuple[int | None, tuple[int, ...]]:
    """Sliding layers from HF's ``layer_types`` list (Mistral-style configs, Qwen3, ...)."""
    types = cfg.get("layer_types") or []
    sliding = tuple(i for i, t in enumerate(types) if t == "sliding_attention")
    window = cfg.get("sliding_window")
    return (int(window), sliding) if sliding and window else (None, ())


def gemma3_sliding(cfg: dict[str, Any], n_layers: int) -> tuple[int | None, tuple[int, ...]]:
    pattern = int(cfg.get("sliding_window_pattern", 6))
    return int(cfg.get("sliding_window", 512)), tuple(i for i in range(n_layers) if (i + 1) % pattern != 0)


def _granite_scale(cfg: dict[str, Any]) -> float:
    return float(cfg["residual_multiplier"])


@dataclass(frozen=True)
class Family:
    family: str | None = None  # display group (defaults to the model_type)
    attn: str | None = None  # attention module name in a block, where not one of ATTN_NAMES
    mlp: str | None = None
    o_proj: str | None = None  # attention output projection inside the attention module
    down: str | None = None  # MLP down projection inside the MLP module
    final_norm: str | None = None
    attn_out_at: str | None = None  # block child (a post-norm) whose output is attn_out; "-": no attn_out site
    mlp_out_at: str | None = None
    residual_scale: Callable[[dict[str, Any]], float] | None = None  # the block adds module output * this
    parallel: bool = False  # attention and MLP read the same input (x + attn(..) + mlp(..))
    recurrent: bool = False  # state-space / linear-attention layers
    grouped_scores: bool = False  # attention by hand on [B, kv_heads, groups, L, K] scores: masks get a group axis
    no_padding: str | None = None  # why prompts of different lengths cannot share a left-padded batch
    embedding_scale: Callable[[dict[str, Any]], float] | None = None  # what lazarus runs with
    native_embedding_scale: Callable[[dict[str, Any]], float] | None = None  # what mlx-lm's code multiplies by,
    # where it differs (lazarus rescales the family's embedding, in the reference too)
    sliding: Callable[[dict[str, Any], int], tuple[int | None, tuple[int, ...]]] = layer_types_sliding
    missing: str = ""  # sites this family lacks (listed in the matrix; hybrids are "partial")
    note: str = ""  # what a site means here
    refused: str | None = None  # one line: why lazarus refuses this family


class _PostNorms(TypedDict):
    attn_out_at: str
    mlp_out_at: str


_GEMMA_POST: _PostNorms = {"attn_out_at": "post_attention_layernorm", "mlp_out_at": "post_feedforward_layernorm"}
_MOE = "moe_router = each token's expert weights (the routing's own, read off the MoE block)"
_MULT = "attn_out/mlp_out = what the block adds (module output times the residual multiplier)"
_PER_EXPERT = "mlp_hidden at expert layers (per expert; not exposed)"
_POSITIONS = "its learned position table would shift under left padding"
_STATE = "its state-space layers would carry the padding's state"
_HYBRID = "hybrid: attention sites at attention layers; residual sites, lens and whole-layer ablation everywhere"
_NO_ATTN = "attention sites at state-space/convolution layers"
_SSM = "state-space: residual sites, lens and whole-layer ablation"
_SSM_ONLY = "attention and MLP sites (there are none)"
_VISION = "multimodal checkpoint: text only, through its language model"

FAMILIES: dict[str, Family] = {
    "llama": Family(), "mistral": Family(), "qwen2": Family(), "qwen3": Family(), "smollm3": Family(),
    "gemma": Family(embedding_scale=sqrt_hidden),
    "gemma2": Family(embedding_scale=sqrt_hidden, **_GEMMA_POST,
                     grouped_scores=True,
                     missing="attn_pattern (scores are soft-capped by hand, outside scaled_dot_product_attention)",
                     note="attn_out/mlp_out = after the post-norms (what the block adds); mlx-lm runs every layer global"),
    "gemma3_text": Family(family="gemma3", embedding_scale=sqrt_hidden, native_embedding_scale=sqrt_hidden_bf16,
                          sliding=gemma3_sliding, **_GEMMA_POST,
                          note="attn_out/mlp_out = after the post-norms (what the block adds)"),
    "gemma3": Family(family="gemma3", embedding_scale=sqrt_hidden, native_embedding_scale=sqrt_hidden_bf16,
                     sliding=gemma3_sliding, **_GEMMA_POST,
                     note=_VISION),
    "olmo2": Family(**_GEMMA_POST, note="attn_out/mlp_out = after the post-norms (what the block adds)"),
    "olmo3": Family(**_GEMMA_POST, note="attn_out/mlp_out = after the post-norms (what the block adds)"),
    "gpt2": Family(no_padding=_POSITIONS, note="attn/c_proj, mlp/c_proj"),
    "gpt_bigcode": Family(no_padding=_POSITIONS),
    "gpt_neox": Family(parallel=True, note="attention/dense, mlp/dense_4h_to_h; parallel residual"),
    "cohere": Family(parallel=True, note="parallel residual: attention and MLP read one norm"),
    "cohere2": Family(parallel=True, note="parallel residual: attention and MLP read one norm"),
    "phi": Family(parallel=True, note="parallel residual; self_attn/dense, mlp/fc2"),
    "mixtral": Family(missing=_PER_EXPERT, note=_MOE), "qwen2_moe": Family(missing=_PER_EXPERT, note=_MOE),
    "qwen3_moe": Family(missing=_PER_EXPERT, note=_MOE),
    "granitemoe": Family(residual_scale=_granite_scale, missing=_PER_EXPERT, note=_MOE + "; " + _MULT),
    "olmoe": Family(missing=_PER_EXPERT, note=_MOE),
    "phimoe": Family(missing=_PER_EXPERT, note=_MOE + "; sparsemixer weights need not sum to 1"),
    "gpt_oss": Family(missing=_PER_EXPERT, note=_MOE + "; attention sinks take part in attn_pattern's softmax "
                                                      "(rows sum below 1)"),
    "deepseek_v2": Family(missing=_PER_EXPERT, note="MLA attention (attn_heads = value heads); " + _MOE),
    "deepseek_v3": Family(missing=_PER_EXPERT, note="MLA attention (attn_heads = value heads); " + _MOE),
    "granite": Family(residual_scale=_granite_scale, note=_MULT),
    "minicpm": Family(residual_scale=lambda c: float(c["scale_depth"]) / math.sqrt(int(c["num_hidden_layers"])),
                      note=_MULT),
    "glm4": Family(attn_out_at="post_self_attn_layernorm", mlp_out_at="post_mlp_layernorm",
                   note="attn_out/mlp_out = after the post-norms (what the block adds)"),
    "exaone": Family(attn="attn.attention", note="attention at attn.attention/out_proj, MLP down c_proj"),
    "qwen3_next": Family(recurrent=True, no_padding=_STATE, missing=_NO_ATTN + "; " + _PER_EXPERT, note=_HYBRID),
    "lfm2": Family(recurrent=True, no_padding=_STATE, missing=_NO_ATTN, note=_HYBRID),
    "granitemoehybrid": Family(recurrent=True, no_padding=_STATE, residual_scale=_granite_scale, mlp_out_at="-",
                               missing=_NO_ATTN + "; mlp_out (a mixture of experts plus a shared MLP: two modules)",
                               note=_HYBRID + "; " + _MULT),
    "falcon_h1": Family(recurrent=True, no_padding=_STATE, attn_out_at="-",
                        missing="attn_out (attention and a state-space mixer add to the residual side by side)",
                        note="attn_pattern and attn_heads are the attention mixer's"),
    "mamba": Family(recurrent=True, no_padding=_STATE, missing=_SSM_ONLY, note=_SSM),
    "mamba2": Family(recurrent=True, no_padding=_STATE, missing=_SSM_ONLY, note=_SSM),
}

# Families the test suite proves: tests/families builds a tiny instance of each (a test keeps this set inside
# the factory's) and checks hooked == native (full, KV cache, padded batch), lens, sites, ablation, steering, q4.
VERIFIED: frozenset[str] = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "gemma3", "phi", "phi3", "gpt2",
    "gpt_neox", "gpt_bigcode", "starcoder2", "olmo2", "granite", "granitemoe", "mixtral", "gpt_oss", "smollm3", "cohere",
    "cohere2", "stablelm", "internlm2", "exaone", "glm4", "helium", "minicpm", "deepseek_v2", "deepseek_v3",
    "qwen3_next", "lfm2", "falcon_h1", "mamba2", "granitemoehybrid", "mamba", "olmo3", "olmoe", "phimoe", "qwen2_moe",
})

NOT_TEXT_MODELS = {"__init__", "base", "cache", "activations", "switch_layers", "rope_utils", "pipeline",
                   "bitlinear_layers", "gated_delta", "ssm", "mla"}


def family_of(model_type: str) -> Family:
    return FAMILIES.get(model_type, Family())
