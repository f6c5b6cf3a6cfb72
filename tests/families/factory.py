"""Tiny random mlx-lm models of every family lazarus opens, and a tiny tokenizer, made offline.

``tiny_tokenizer()`` trains a byte-level BPE (vocab ``VOCAB``) on a few sentences with
the ``tokenizers`` library and wraps it as lazarus's ``Tokenizer``: no download.
``tiny_config(model_type)`` is the smallest config each mlx-lm family accepts (hidden 64,
``N_LAYERS`` layers, sliding windows of ``WINDOW`` tokens, 4 experts top-2, small MLA
dims); ``build_tiny`` builds the model from it with every parameter random (constant
initialisations such as norm weights of ones are perturbed, so a hooked forward that used
the wrong norm, or skipped a bias, cannot agree with the model by accident).
``save_tiny_dir`` writes the model as mlx-lm writes a checkpoint (config.json,
model.safetensors, tokenizer.json, tokenizer_config.json), loadable by
``lazarus --batch verify -m DIR``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import engine  # noqa: F401  (loads the BLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

HIDDEN = 64
N_LAYERS = 4
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16
INTERMEDIATE = 128
WINDOW = 4  # every sliding window: tests run prompts longer than this
EXPERTS, TOP_K = 4, 2
VOCAB = 384
SPECIALS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2

_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome. The capital of Japan is Tokyo.",
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen",
    "Line 1: the quick brown fox jumps over 3 lazy dogs near the river.",
    "the red sly old fox jumps over the lazy dogs near the river bank",
    "Hi! How are you today? I am fine, thank you. What is your name?",
    "In mechanistic interpretability we read the residual stream of a language model layer by layer.",
    "Résumé: 12 + 30 = 42 naïve café 東京 unicode",
]

# ---------------------------------------------------------------------------------------------
# tokenizer


@lru_cache(maxsize=1)
def _backend_json() -> str:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = HFTokenizer(models.BPE(fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


def tiny_tokenizer():
    """A fresh byte-level BPE tokenizer (<pad>=0, <bos>=1, <eos>=2) as lazarus's Tokenizer. Like
    SmolLM2's, it adds no BOS (so the engine tests written against SmolLM2's tokenizer still hold)."""
    from tokenizers import Tokenizer as HFTokenizer

    from engine.models.tokenizer import Tokenizer

    backend = HFTokenizer.from_str(_backend_json())
    return Tokenizer(backend, kind="byte_level", bos_id=1, eos_ids=[2], pad_id=0, add_bos=False,
                     chat_template=None)


def _tokenizer_config() -> dict[str, Any]:
    return {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "add_bos_token": False,
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 4096}


# ---------------------------------------------------------------------------------------------
# configs

def _llama_like(model_type: str, **extra: Any) -> dict[str, Any]:
    cfg = {
        "model_type": model_type, "hidden_size": HIDDEN, "num_hidden_layers": N_LAYERS,
        "intermediate_size": INTERMEDIATE, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM, "rms_norm_eps": 1e-6, "vocab_size": VOCAB, "max_position_embeddings": 4096,
        "rope_theta": 10000.0, "tie_word_embeddings": False,
    }
    cfg.update(extra)
    return cfg


_ALTERNATE = ["sliding_attention", "full_attention"] * (N_LAYERS // 2)
_YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024, "beta_fast": 32, "beta_slow": 1,
         "mscale": 0.707, "mscale_all_dim": 0.707}  # DeepSeek-V2-Lite's rope scaling, with a smaller factor
_MAMBA = {"mamba_n_heads": 4, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_n_groups": 1,
          "mamba_conv_bias": True, "mamba_proj_bias": False}

CONFIGS: dict[str, dict[str, Any]] = {
    "llama": _llama_like("llama"),
    "mistral": _llama_like("mistral", tie_word_embeddings=True, sliding_window=WINDOW,
                           layer_types=_ALTERNATE),
    "qwen2": _llama_like("qwen2"),
    "qwen3": _llama_like("qwen3"),
    "qwen3_moe": _llama_like("qwen3_moe", num_experts=EXPERTS, num_experts_per_tok=TOP_K, decoder_sparse_step=1,
                             mlp_only_layers=[0], moe_intermediate_size=32, norm_topk_prob=True),
    "gemma": _llama_like("gemma"),
    "gemma2": _llama_like("gemma2", sliding_window=WINDOW, query_pre_attn_scalar=HEAD_DIM,
                          attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    "gemma3_text": _llama_like("gemma3_text", sliding_window=WINDOW, sliding_window_pattern=2,
                               query_pre_attn_scalar=HEAD_DIM, rope_local_base_freq=10000.0),
    "gemma3": {"model_type": "gemma3", "vocab_size": VOCAB,
               "text_config": _llama_like("gemma3_text", sliding_window=WINDOW, sliding_window_pattern=2,
                                          query_pre_attn_scalar=HEAD_DIM)},
    "phi": {"model_type": "phi", "vocab_size": VOCAB, "hidden_size": HIDDEN, "num_attention_heads": HEADS,
            "num_hidden_layers": N_LAYERS, "num_key_value_heads": HEADS, "partial_rotary_factor": 0.5,
            "intermediate_size": INTERMEDIATE, "layer_norm_eps": 1e-5, "max_position_embeddings": 4096},
    "phi3": _llama_like("phi3"),
    "gpt2": {"model_type": "gpt2", "n_ctx": 4096, "n_embd": HIDDEN, "n_head": HEADS, "n_layer": N_LAYERS,
             "n_positions": 4096, "layer_norm_epsilon": 1e-5, "vocab_size": VOCAB},
    "gpt_neox": {"model_type": "gpt_neox", "max_position_embeddings": 4096, "hidden_size": HIDDEN,
                 "num_attention_heads": HEADS, "num_hidden_layers": N_LAYERS, "layer_norm_eps": 1e-5,
                 "vocab_size": VOCAB, "rotary_emb_base": 10000, "rotary_pct": 0.25, "use_parallel_residual": True},
    "gpt_bigcode": {"model_type": "gpt_bigcode", "n_embd": HIDDEN, "n_layer": N_LAYERS, "n_inner": INTERMEDIATE,
                    "n_head": HEADS, "n_positions": 4096, "layer_norm_epsilon": 1e-5, "vocab_size": VOCAB,
                    "multi_query": True},
    "starcoder2": _llama_like("starcoder2", norm_epsilon=1e-5),
    "olmo2": _llama_like("olmo2"),
    "granite": _llama_like("granite", logits_scaling=4.0, attention_multiplier=0.25, embedding_multiplier=6.0,
                           residual_multiplier=0.5, attention_bias=False, mlp_bias=False),
    "granitemoe": _llama_like("granitemoe", logits_scaling=4.0, attention_multiplier=0.25, embedding_multiplier=6.0,
                              residual_multiplier=0.5, attention_bias=False, num_local_experts=EXPERTS,
                              num_experts_per_tok=TOP_K),
    "mixtral": _llama_like("mixtral", num_local_experts=EXPERTS, num_experts_per_tok=TOP_K),
    "gpt_oss": _llama_like("gpt_oss", num_local_experts=EXPERTS, num_experts_per_tok=TOP_K, sliding_window=WINDOW,
                           layer_types=_ALTERNATE, intermediate_size=32),
    "smollm3": _llama_like("smollm3", no_rope_layer_interval=2),
    "cohere": _llama_like("cohere", layer_norm_eps=1e-5, logit_scale=0.5, use_qk_norm=False),
    "cohere2": _llama_like("cohere2", layer_norm_eps=1e-5, logit_scale=0.5, sliding_window=WINDOW,
                           sliding_window_pattern=2),
    "stablelm": _llama_like("stablelm", use_qkv_bias=True, partial_rotary_factor=0.25, layer_norm_eps=1e-5),
    "internlm2": _llama_like("internlm2", bias=False),
    "exaone": {**_llama_like("exaone", layer_norm_epsilon=1e-5), "num_layers": N_LAYERS},
    "glm4": _llama_like("glm4", attention_bias=True, partial_rotary_factor=0.5),
    "helium": _llama_like("helium", attention_bias=False, mlp_bias=False),
    "minicpm": _llama_like("minicpm", dim_model_base=32, scale_depth=1.4, scale_emb=2.0),
    "deepseek_v2": _llama_like("deepseek_v2", num_key_value_heads=HEADS, moe_intermediate_size=32,
                               n_shared_experts=1, n_routed_experts=EXPERTS, num_experts_per_tok=TOP_K,
                               kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, v_head_dim=16,
                               qk_nope_head_dim=16, topk_method="greedy", first_k_dense_replace=1,
                               rope_scaling=_YARN),
    "deepseek_v3": _llama_like("deepseek_v3", num_key_value_heads=HEADS, moe_intermediate_size=32,
                               n_shared_experts=1, n_routed_experts=EXPERTS, num_experts_per_tok=TOP_K,
                               kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, v_head_dim=16,
                               qk_nope_head_dim=16, n_group=1, topk_group=1, first_k_dense_replace=1,
                               rope_scaling=_YARN),
    "olmo3": _llama_like("olmo3", sliding_window=WINDOW, layer_types=_ALTERNATE),
    "olmoe": _llama_like("olmoe", num_experts=EXPERTS, num_experts_per_tok=TOP_K, intermediate_size=64,
                         norm_topk_prob=False),
    "phimoe": _llama_like("phimoe", num_local_experts=EXPERTS, num_experts_per_tok=TOP_K,
                          original_max_position_embeddings=4096),
    "qwen2_moe": _llama_like("qwen2_moe", num_experts=EXPERTS, num_experts_per_tok=TOP_K, moe_intermediate_size=64,
                             shared_expert_intermediate_size=INTERMEDIATE),
    # hybrid and state-space families
    "qwen3_next": _llama_like("qwen3_next", linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
                              linear_value_head_dim=16, linear_conv_kernel_dim=4, num_experts=EXPERTS,
                              num_experts_per_tok=TOP_K, decoder_sparse_step=1, shared_expert_intermediate_size=32,
                              mlp_only_layers=[], moe_intermediate_size=32, partial_rotary_factor=0.25,
                              full_attention_interval=2),
    "lfm2": {"model_type": "lfm2", "vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": N_LAYERS,
             "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "max_position_embeddings": 4096,
             "norm_eps": 1e-5, "conv_bias": False, "conv_L_cache": 3, "block_dim": HIDDEN, "block_ff_dim": INTERMEDIATE,
             "block_multiple_of": 16, "block_ffn_dim_multiplier": 1.0, "block_auto_adjust_ff_dim": False,
             "full_attn_idxs": [1, 3]},
    "falcon_h1": {"model_type": "falcon_h1", "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
                  "num_hidden_layers": N_LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
                  "head_dim": HEAD_DIM, "vocab_size": VOCAB, "mamba_d_conv": 4, "mamba_d_head": 16,
                  "mamba_d_ssm": 64, "mamba_d_state": 16, "mamba_expand": 1, "mamba_n_groups": 1,
                  "mamba_n_heads": 4, "mamba_chunk_size": 16, "rope_theta": 10000.0,
                  "mlp_multipliers": [1.0, 1.0], "ssm_multipliers": [1.0, 1.0, 1.0, 1.0, 1.0]},
    "mamba2": {"model_type": "mamba2", "num_heads": 4, "head_dim": 16, "vocab_size": VOCAB, "hidden_size": HIDDEN,
               "intermediate_size": 64, "state_size": 16, "num_hidden_layers": N_LAYERS, "layer_norm_epsilon": 1e-5,
               "conv_kernel": 4, "n_groups": 1, "use_bias": False, "use_conv_bias": True, "tie_word_embeddings": True,
               "time_step_limit": [0.0, float("inf")], "time_step_rank": "auto"},
    "mamba": {"model_type": "mamba", "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
              "state_size": 16, "num_hidden_layers": N_LAYERS, "conv_kernel": 4, "use_bias": False,
              "use_conv_bias": True, "time_step_rank": 4, "tie_word_embeddings": True},
    "granitemoehybrid": {"model_type": "granitemoehybrid", "vocab_size": VOCAB, "hidden_size": HIDDEN,
                         "intermediate_size": INTERMEDIATE, "num_hidden_layers": N_LAYERS,
                         "max_position_embeddings": 4096, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
                         "attention_bias": False, "embedding_multiplier": 6.0, "attention_multiplier": 0.25,
                         "logits_scaling": 4.0, "residual_multiplier": 0.5, "rms_norm_eps": 1e-6,
                         "layer_types": ["mamba", "attention"] * (N_LAYERS // 2), "num_local_experts": EXPERTS,
                         "num_experts_per_tok": TOP_K, "shared_intermediate_size": INTERMEDIATE, **_MAMBA},
}

FAMILIES: tuple[str, ...] = tuple(CONFIGS)
SLIDING = ("mistral", "gemma3_text", "gemma3", "cohere2", "gpt_oss", "olmo3")  # windowed layers (mlx-lm's gemma2 has none)
HYBRID = ("qwen3_next", "lfm2", "falcon_h1", "mamba", "mamba2", "granitemoehybrid")


def tiny_config(model_type: str) -> dict[str, Any]:
    """The config.json of the tiny ``model_type`` (a fresh copy)."""
    if model_type not in CONFIGS:
        raise KeyError(f"no tiny config for {model_type!r} (have: {', '.join(FAMILIES)})")
    return json.loads(json.dumps(CONFIGS[model_type]))


def _model_classes(config: dict[str, Any]) -> tuple[Any, Any]:
    from mlx_lm.utils import _get_classes

    return _get_classes(config)


def _randomize(model: nn.Module, key: mx.array) -> None:
    """Perturb every constant parameter (norm weights of ones, zero biases, zero sinks...)."""
    params = dict(tree_flatten(model.parameters()))
    keys = mx.random.split(key, max(len(params), 2))
    fresh = {}
    for i, (name, p) in enumerate(sorted(params.items())):
        if not mx.issubdtype(p.dtype, mx.floating) or p.size == 0:
            continue
        if p.size == 1 or float(mx.max(p) - mx.min(p)) == 0.0:
            fresh[name] = p + 0.2 * mx.random.normal(p.shape, dtype=p.dtype, key=keys[i])
    if fresh:
        model.load_weights(list(fresh.items()), strict=False)


def build_tiny(model_type: str, seed: int = 0, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """(model, config): a tiny random float32 mlx-lm model of ``model_type``, evaluated.
    ``overrides`` replace config keys (of ``text_config`` where the family nests one)."""
    config = tiny_config(model_type)
    (config.get("text_config") or config).update(overrides)
    model_cls, args_cls = _model_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    model.set_dtype(mx.float32)
    _randomize(model, mx.random.key(seed + 1))
    mx.eval(model.parameters())
    return model, config


def save_tiny_dir(model_type: str, path: Path | str, seed: int = 0) -> Path:
    """Write the tiny ``model_type`` as an HF-style directory the way mlx-lm saves one; returns the path."""
    from mlx_lm.utils import save_config, save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model, config = build_tiny(model_type, seed)
    save_model(path, model)
    save_config(dict(config), path / "config.json")
    tok = tiny_tokenizer()
    tok.backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=2))
    return path


def native_logits(model: Any, ids: list[int] | list[list[int]], cache: Any = None) -> mx.array:
    """The model's own forward on token ids: [B, S, vocab] float32."""
    arr = mx.array(ids if isinstance(ids[0], list) else [ids], dtype=mx.int32)
    out = model(arr, cache=cache) if cache is not None else model(arr)
    return out.astype(mx.float32)


__all__ = ["FAMILIES", "HYBRID", "SLIDING", "CONFIGS", "tiny_tokenizer", "tiny_config", "build_tiny", "save_tiny_dir",
           "native_logits"]
