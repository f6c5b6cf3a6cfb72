"""What each GGUF architecture means as an mlx-lm model: its config, and what llama.cpp did to its tensors.

One ``Family`` per ``general.architecture`` that lazarus opens. Each family turns the
file's metadata into the config.json mlx-lm's ``ModelArgs`` of that ``model_type``
expects, reading every hyper-parameter from the metadata and, where llama.cpp itself falls back
to a built-in value when a key is absent (Gemma 3's local RoPE base and sliding pattern, Gemma's
query scale), the same value llama.cpp uses. Every metadata key under ``<arch>.`` must be read by
the family (``Meta`` records which were); a key nobody read might change the computation, so the
file is refused rather than loaded without it.

Tensor names are not renamed here: ``gguf_loader`` maps each parameter of the mlx-lm
model onto llama.cpp's name with gguf-py's ``TensorNameMap`` (the table llama.cpp's
converters use). What stays per family is what the converter did to the values:
- ``permute_qk``: LlamaModel.permute, applied by llama.cpp's converters for
  ``llama``, ``smollm3``, ``granite`` and ``granitemoe`` (its subclasses), reordered Q and K rows (and biases) for
  ggml's interleaved RoPE; mlx-lm rotates halves, so the rows are put back.
- ``norm_shift``: Gemma's converters store RMSNorm weights with +1 folded in
  (``name.endswith("norm.weight")``); mlx-lm's Gemma norms add 1 themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import ModelLoadError, UnsupportedArchitecture
from engine.models.gguf_meta import (
    Family,
    Meta,
    Tensors,
    attention,
    gemma_query_scalar,
    no_experts,
    rope,
    routing,
    swa_period,
    vocab_size_check,
)

# -- the families ---------------------------------------------------------------------------

def _llama_like(model_type: str, default_base: float = 10000.0) -> Callable[[Meta, Tensors], dict[str, Any]]:
    def build(m: Meta, t: Tensors) -> dict[str, Any]:
        cfg = attention(m, t)
        vocab_size_check(m, t)
        no_experts(m)
        cfg.update(model_type=model_type, intermediate_size=m.scalar("feed_forward_length"),
                   rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float), **rope(m, default_base=default_base))
        if model_type in ("llama", "granite", "olmo2", "smollm3"):
            cfg["attention_bias"] = "blk.0.attn_q.bias" in t
            cfg["mlp_bias"] = "blk.0.ffn_up.bias" in t
        return cfg
    return build


def _llama(m: Meta, t: Tensors) -> dict[str, Any]:
    """Llama 1-3.x, Mistral, SmolLM; with experts (``llama.expert_count``, merged ``ffn_*_exps``) Mixtral."""
    experts = m.scalar("expert_count", 0)
    if not experts:
        return _llama_like("llama")(m, t)
    cfg = attention(m, t)
    vocab_size_check(m, t)
    if "blk.0.attn_q.bias" in t:
        raise UnsupportedArchitecture(f"{m.source}: attention biases are not part of mlx-lm's mixtral")
    weights_scale = m.opt("expert_weights_scale")
    if weights_scale not in (None, 1.0) or m.opt("expert_gating_func") not in (None, 1):
        m.refuse("expert_gating_func", "only Mixtral's softmax top-k routing is supported")
    ff = m.scalar("feed_forward_length")
    if m.scalar("expert_feed_forward_length", ff) != ff:
        m.refuse("expert_feed_forward_length", "mlx-lm's mixtral experts are feed_forward_length wide")
    cfg.update(model_type="mixtral", intermediate_size=ff, num_local_experts=experts,
               num_experts_per_tok=m.scalar("expert_used_count"),
               rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float), **rope(m))
    return cfg


def _smollm3(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = _llama_like("smollm3")(m, t)
    # llama.cpp hard-codes n_no_rope_layer_step = 4 (no GGUF key): every 4th layer attends without RoPE
    cfg["no_rope_layer_interval"] = 4
    return cfg


def _exaone(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t)
    vocab_size_check(m, t)
    no_experts(m)
    # EXAONE's RMSNorm epsilon is `layer_norm_epsilon`: converters wrote it under either key
    rms, plain = m.opt("attention.layer_norm_rms_epsilon"), m.opt("attention.layer_norm_epsilon")
    if rms is None and plain is None:
        raise ModelLoadError(f"{m.source}: GGUF metadata lacks exaone.attention.layer_norm_rms_epsilon")
    if rms is not None and plain is not None and float(rms) != float(plain):
        m.refuse("attention.layer_norm_epsilon", f"disagrees with attention.layer_norm_rms_epsilon {rms}")
    cfg.update(model_type="exaone", num_layers=cfg["num_hidden_layers"], intermediate_size=m.scalar("feed_forward_length"),
               layer_norm_epsilon=float(rms if rms is not None else plain), attention_bias="blk.0.attn_q.bias" in t,
               mlp_bias="blk.0.ffn_up.bias" in t, **rope(m))
    return cfg


def _cohere2(m: Meta, t: Tensors) -> dict[str, Any]:
    """Command R7B: sliding-window layers with RoPE, every 4th layer global without RoPE (llama.cpp's pattern)."""
    cfg = attention(m, t)
    vocab_size_check(m, t)
    no_experts(m)
    rope_cfg = rope(m)
    if "rope_scaling" in rope_cfg:
        m.refuse("rope.scaling.type", "mlx-lm's cohere2 has no RoPE scaling")
    cfg.update(model_type="cohere2", intermediate_size=m.scalar("feed_forward_length"),
               layer_norm_eps=m.scalar("attention.layer_norm_epsilon", kind=float),
               logit_scale=m.scalar("logit_scale", kind=float), sliding_window=m.scalar("attention.sliding_window"),
               sliding_window_pattern=swa_period(m, cfg["num_hidden_layers"], default=4),
               rope_theta=rope_cfg["rope_theta"])
    return cfg


def _granite_scales(m: Meta, cfg: dict[str, Any]) -> None:
    if cfg.pop("head_dim") != cfg["hidden_size"] // cfg["num_attention_heads"]:  # mlx-lm derives hidden/heads
        m.refuse("attention.key_length", "granite head size must be hidden/heads")
    cfg.update(attention_multiplier=m.scalar("attention.scale", kind=float),
               embedding_multiplier=m.scalar("embedding_scale", kind=float),
               residual_multiplier=m.scalar("residual_scale", kind=float),
               logits_scaling=m.scalar("logit_scale", kind=float))


def _granite(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = _llama_like("granite")(m, t)
    _granite_scales(m, cfg)
    return cfg


def _moe_same_width(m: Meta, t: Tensors, family: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Attention config, routing and the MLP width of a MoE family whose mlx-lm experts are
    feed_forward_length wide (refused where the file says otherwise)."""
    cfg = attention(m, t)
    vocab_size_check(m, t)
    r = routing(m)
    ff = m.scalar("feed_forward_length")
    if m.scalar("expert_feed_forward_length", ff) != ff:
        m.refuse("expert_feed_forward_length", f"mlx-lm's {family} experts are feed_forward_length wide")
    return cfg, r, ff


def _granitemoe(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg, r, ff = _moe_same_width(m, t, "granitemoe")
    cfg.update(model_type="granitemoe", intermediate_size=ff, num_local_experts=r["experts"],
               num_experts_per_tok=r["used"], attention_bias="blk.0.attn_q.bias" in t,
               rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float), **rope(m))
    _granite_scales(m, cfg)
    return cfg


def _olmo2(m: Meta, t: Tensors) -> dict[str, Any]:
    if m.opt("attention.sliding_window") is not None or m.opt("attention.sliding_window_pattern") is not None:
        m.refuse("attention.sliding_window", "sliding-window OLMo (OLMo 3) is not supported from GGUF")
    return _llama_like("olmo2")(m, t)


def _qwen3moe(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t)
    vocab_size_check(m, t)
    r = routing(m)
    cfg.update(
        model_type="qwen3_moe", rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float),
        intermediate_size=m.scalar("feed_forward_length", 0), num_experts=r["experts"], num_experts_per_tok=r["used"],
        moe_intermediate_size=m.scalar("expert_feed_forward_length"),
        norm_topk_prob=bool(m.opt("expert_weights_norm", True)),  # llama.cpp's qwen3moe always normalises
        decoder_sparse_step=1,
        mlp_only_layers=[i for i in range(cfg["num_hidden_layers"]) if f"blk.{i}.ffn_gate_inp.weight" not in t],
        **rope(m, default_base=10000.0),
    )
    return cfg


def _qwen2moe(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t)
    vocab_size_check(m, t)
    r = routing(m, shared=True)
    if m.opt("expert_weights_norm", False):
        m.refuse("expert_weights_norm", "mlx-lm's qwen2_moe does not renormalise the top-k weights")
    m.scalar("expert_shared_count", 1)
    cfg.update(model_type="qwen2_moe", rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float),
               intermediate_size=m.scalar("feed_forward_length", 0), num_experts=r["experts"],
               num_experts_per_tok=r["used"], moe_intermediate_size=m.scalar("expert_feed_forward_length"),
               shared_expert_intermediate_size=m.scalar("expert_shared_feed_forward_length"),
               **rope(m, default_base=10000.0))
    return cfg


def _olmoe(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg, r, ff = _moe_same_width(m, t, "olmoe")
    cfg.update(model_type="olmoe", rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float),
               intermediate_size=ff, num_experts=r["experts"], num_experts_per_tok=r["used"],
               norm_topk_prob=bool(m.opt("expert_weights_norm", False)), **rope(m))  # llama.cpp: no renormalising
    return cfg


def _cohere(m: Meta, t: Tensors) -> dict[str, Any]:
    """Command R: parallel attention and MLP on one LayerNorm, interleaved RoPE (no permutation), scaled logits."""
    cfg = attention(m, t)
    vocab_size_check(m, t)
    no_experts(m)
    cfg.update(model_type="cohere", intermediate_size=m.scalar("feed_forward_length"),
               layer_norm_eps=m.scalar("attention.layer_norm_epsilon", kind=float),
               logit_scale=m.scalar("logit_scale", kind=float), use_qk_norm="blk.0.attn_q_norm.weight" in t,
               layer_norm_bias="blk.0.attn_norm.bias" in t, attention_bias="blk.0.attn_q.bias" in t, **rope(m))
    if "rope_scaling" in cfg:
        m.refuse("rope.scaling.type", "mlx-lm's cohere has no RoPE scaling")
    return cfg


def _gemma(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = _llama_like("gemma")(m, t)
    if "rope_scaling" in cfg:
        m.refuse("rope.scaling.type", "mlx-lm's gemma and gemma2 have no RoPE scaling")
    return cfg


def _gemma2(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = _gemma(m, t)
    cfg.update(model_type="gemma2",
               attn_logit_softcapping=m.scalar("attn_logit_softcapping", 50.0, float),  # llama.cpp's defaults
               final_logit_softcapping=m.scalar("final_logit_softcapping", 30.0, float),
               query_pre_attn_scalar=gemma_query_scalar(m, cfg, big_layers=46),
               # mlx-lm's gemma2 attends globally: identical up to the window, as for HF checkpoints
               sliding_window=m.scalar("attention.sliding_window", 4096))
    return cfg


def _gemma3(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t)
    vocab_size_check(m, t)
    no_experts(m)
    if m.opt("attn_logit_softcapping") is not None:
        m.refuse("attn_logit_softcapping", "Gemma 3 has no attention soft-capping in mlx-lm")
    window = m.opt("attention.sliding_window")
    # no window key: every layer global (llama.cpp); else five local layers then a global one unless the file says
    pattern = swa_period(m, cfg["num_hidden_layers"], default=6) if window is not None else 1
    rope_cfg = rope(m, default_base=1_000_000.0)
    if "rope_scaling" in rope_cfg:
        rope_cfg["rope_scaling"] = {"rope_type": "linear", "factor": rope_cfg["rope_scaling"]["factor"]}
    cfg.update(model_type="gemma3_text", intermediate_size=m.scalar("feed_forward_length"),
               rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float),
               rope_local_base_freq=m.scalar("rope.freq_base_swa", 10_000.0, float),  # llama.cpp's default
               query_pre_attn_scalar=gemma_query_scalar(m, cfg, big_layers=62),
               sliding_window=int(window) if window is not None else cfg["max_position_embeddings"],
               sliding_window_pattern=pattern, **rope_cfg)
    softcap = m.opt("final_logit_softcapping")
    if softcap is not None:
        cfg["final_logit_softcapping"] = float(softcap)
    return cfg


def _phi3(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t, rotary_may_be_partial=True)
    vocab_size_check(m, t)
    no_experts(m)
    if "rope_factors_long.weight" in t or "rope_factors_short.weight" in t:
        raise UnsupportedArchitecture(f"{m.source}: LongRoPE factors (rope_factors_long/short, Phi-3 128k) are not supported")
    rope_dim = m.scalar("rope.dimension_count", cfg["head_dim"])
    original = m.scalar("rope.scaling.original_context_length", cfg["max_position_embeddings"])
    cfg.update(model_type="phi3", intermediate_size=m.scalar("feed_forward_length"),
               rms_norm_eps=m.scalar("attention.layer_norm_rms_epsilon", kind=float),
               partial_rotary_factor=rope_dim / cfg["head_dim"], original_max_position_embeddings=original,
               # mlx-lm's phi3 attends globally: identical up to the window, as for HF checkpoints
               sliding_window=m.scalar("attention.sliding_window", 0) or None, **rope(m))
    return cfg


def _gpt2(m: Meta, t: Tensors) -> dict[str, Any]:
    hidden = m.scalar("embedding_length")
    n_head = m.scalar("attention.head_count")
    if m.scalar("attention.head_count_kv", n_head) != n_head:
        m.refuse("attention.head_count_kv", "GPT-2 has no grouped-query attention")
    if m.scalar("feed_forward_length", 4 * hidden) != 4 * hidden:
        m.refuse("feed_forward_length", "mlx-lm's gpt2 MLP is 4 x embedding_length")
    if "position_embd.weight" not in t:
        raise ModelLoadError(f"{m.source}: GGUF lacks tensor position_embd.weight (needed for gpt2)")
    no_experts(m)
    m.opt("vocab_size")
    return _hf_aliases({"model_type": "gpt2", "n_embd": hidden, "n_head": n_head, "n_layer": m.scalar("block_count"),
            "n_ctx": m.scalar("context_length", t.rows("position_embd.weight")),
            "n_positions": t.rows("position_embd.weight"),
            "layer_norm_epsilon": m.scalar("attention.layer_norm_epsilon", kind=float),
            "vocab_size": t.rows("token_embd.weight"), "num_key_value_heads": n_head, "n_inner": 4 * hidden})


def _phi2(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t, rotary_may_be_partial=True)
    vocab_size_check(m, t)
    no_experts(m)
    rope_dim = m.scalar("rope.dimension_count", cfg["head_dim"])
    cfg.update(model_type="phi", intermediate_size=m.scalar("feed_forward_length"), tie_word_embeddings=False,
               layer_norm_eps=m.scalar("attention.layer_norm_epsilon", kind=float),
               partial_rotary_factor=rope_dim / cfg["head_dim"], **rope(m))
    if "rope_scaling" in cfg:
        m.refuse("rope.scaling.type", "mlx-lm's phi has no RoPE scaling")
    return cfg


def _stablelm(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t, rotary_may_be_partial=True)
    vocab_size_check(m, t)
    no_experts(m)
    rope_dim = m.scalar("rope.dimension_count", cfg["head_dim"])
    # llama.cpp runs attention and MLP in parallel exactly when a block has no ffn_norm
    parallel = bool(m.opt("use_parallel_residual", "blk.0.ffn_norm.weight" not in t))
    if parallel != ("blk.0.ffn_norm.weight" not in t):
        m.refuse("use_parallel_residual", "disagrees with the blocks' ffn_norm tensors")
    cfg.update(model_type="stablelm", intermediate_size=m.scalar("feed_forward_length"), tie_word_embeddings=False,
               layer_norm_eps=m.scalar("attention.layer_norm_epsilon", kind=float),
               partial_rotary_factor=rope_dim / cfg["head_dim"], use_qkv_bias="blk.0.attn_q.bias" in t,
               use_parallel_residual=parallel, **rope(m))
    if "rope_scaling" in cfg:
        m.refuse("rope.scaling.type", "mlx-lm's stablelm has no RoPE scaling")
    return cfg


def _gptneox(m: Meta, t: Tensors) -> dict[str, Any]:
    """GPT-NeoX / Pythia: parallel residual (unless the file says otherwise), partial rotary, fused qkv."""
    cfg = attention(m, t, rotary_may_be_partial=True)
    vocab_size_check(m, t)
    no_experts(m)
    if cfg["num_key_value_heads"] != cfg["num_attention_heads"]:
        m.refuse("attention.head_count_kv", "GPT-NeoX has no grouped-query attention")
    if m.scalar("feed_forward_length", 4 * cfg["hidden_size"]) != 4 * cfg["hidden_size"]:
        m.refuse("feed_forward_length", "mlx-lm's gpt_neox MLP is 4 x embedding_length")
    rope_cfg = rope(m)
    if "rope_scaling" in rope_cfg:
        m.refuse("rope.scaling.type", "mlx-lm's gpt_neox has no RoPE scaling")
    cfg.update(model_type="gpt_neox", layer_norm_eps=m.scalar("attention.layer_norm_epsilon", kind=float),
               rotary_emb_base=rope_cfg["rope_theta"], intermediate_size=4 * cfg["hidden_size"],
               rotary_pct=m.scalar("rope.dimension_count", cfg["head_dim"]) / cfg["head_dim"],
               use_parallel_residual=bool(m.opt("use_parallel_residual", True)), tie_word_embeddings=False)
    return cfg


def _starcoder(m: Meta, t: Tensors) -> dict[str, Any]:
    """StarCoder 1 / SantaCoder (GPTBigCode): multi-query attention, learned positions."""
    hidden = m.scalar("embedding_length")
    n_head = m.scalar("attention.head_count")
    n_kv = m.scalar("attention.head_count_kv", n_head)
    if n_kv not in (1, n_head):
        m.refuse("attention.head_count_kv", "GPTBigCode is multi-query (1) or multi-head")
    if "position_embd.weight" not in t:
        raise ModelLoadError(f"{m.source}: GGUF lacks tensor position_embd.weight (needed for starcoder)")
    vocab_size_check(m, t)
    no_experts(m)
    m.opt("context_length")
    return _hf_aliases({"model_type": "gpt_bigcode", "n_embd": hidden, "n_layer": m.scalar("block_count"), "n_head": n_head,
            "n_inner": m.scalar("feed_forward_length", 4 * hidden), "n_positions": t.rows("position_embd.weight"),
            "layer_norm_epsilon": m.scalar("attention.layer_norm_epsilon", kind=float),
            "vocab_size": t.rows("token_embd.weight"), "multi_query": n_kv == 1, "num_key_value_heads": n_kv,
            "tie_word_embeddings": "output.weight" not in t,
            "attention_bias": "blk.0.attn_qkv.bias" in t, "mlp_bias": "blk.0.ffn_up.bias" in t})


def _hf_aliases(cfg: dict[str, Any]) -> dict[str, Any]:
    """GPT-2-style configs also under the common names (as transformers' attribute_map gives them)."""
    return {**cfg, "num_hidden_layers": cfg["n_layer"], "hidden_size": cfg["n_embd"],
            "num_attention_heads": cfg["n_head"], "intermediate_size": cfg["n_inner"]}


def _starcoder2(m: Meta, t: Tensors) -> dict[str, Any]:
    cfg = attention(m, t)
    vocab_size_check(m, t)
    no_experts(m)
    if cfg.pop("head_dim") != cfg["hidden_size"] // cfg["num_attention_heads"]:
        m.refuse("attention.key_length", "starcoder2 head size must be hidden/heads")
    cfg.update(model_type="starcoder2", intermediate_size=m.scalar("feed_forward_length"),
               norm_epsilon=m.scalar("attention.layer_norm_epsilon", kind=float), **rope(m))
    if "rope_scaling" in cfg:
        m.refuse("rope.scaling.type", "mlx-lm's starcoder2 has no RoPE scaling")
    return cfg


FAMILIES: dict[str, Family] = {f.arch: f for f in (
    Family("llama", "llama", _llama, permute_qk=True, rope_freqs=True),  # model_type mixtral with experts
    Family("smollm3", "smollm3", _smollm3, permute_qk=True),  # SmolLM3Model is a LlamaModel
    Family("granite", "granite", _granite, permute_qk=True),
    Family("granitemoe", "granitemoe", _granitemoe, permute_qk=True),  # GraniteMoeModel is a LlamaModel too
    Family("qwen2", "qwen2", _llama_like("qwen2", 1_000_000.0)),
    Family("qwen3", "qwen3", _llama_like("qwen3", 1_000_000.0)),
    Family("qwen3moe", "qwen3_moe", _qwen3moe),
    Family("qwen2moe", "qwen2_moe", _qwen2moe),
    Family("olmoe", "olmoe", _olmoe),
    Family("command-r", "cohere", _cohere),
    Family("cohere2", "cohere2", _cohere2),
    Family("olmo2", "olmo2", _olmo2),
    Family("gemma", "gemma", _gemma, norm_shift=1.0),
    Family("gemma2", "gemma2", _gemma2, norm_shift=1.0),
    Family("gemma3", "gemma3_text", _gemma3, norm_shift=1.0),
    Family("phi3", "phi3", _phi3),
    Family("gpt2", "gpt2", _gpt2, output_tied_copy=True),
    Family("starcoder2", "starcoder2", _starcoder2),
    Family("starcoder", "gpt_bigcode", _starcoder),
    Family("phi2", "phi", _phi2),
    Family("stablelm", "stablelm", _stablelm),
    Family("gptneox", "gpt_neox", _gptneox, interleave_qkv=True),
    Family("exaone", "exaone", _exaone, rope_freqs=True),  # ExaoneModel writes llama3 rope_freqs too
)}
