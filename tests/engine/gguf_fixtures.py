"""Tiny GGUF files written the way llama.cpp's convert_hf_to_gguf.py writes them, for round-trip tests.

``tiny_family(model_type)`` builds a tiny random mlx-lm model (hidden 64, 2 layers) and its
Hugging Face-named weights; ``write_gguf`` plays llama.cpp's converter on those weights:
HF names → GGUF names through gguf-py's TensorNameMap, the converter's value transforms
(LlamaModel.permute of Q/K for llama and granite, +1 on Gemma norms, GPT-2's Conv1D
transposes, stacked MoE experts), the metadata keys its ``set_gguf_parameters`` writes,
and a minimal GPT-2-style byte-level vocabulary.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

BASE = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5, "max_position_embeddings": 256,
            "rope_theta": 10000.0, "tie_word_embeddings": False}

# model_type -> (GGUF architecture, extra HF config)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "mixtral": ("llama", {"num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": None}),
    "smollm3": ("smollm3", {"num_hidden_layers": 4, "no_rope_layer_interval": 4}),
    "qwen2": ("qwen2", {}),
    "qwen2_moe": ("qwen2moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                   "shared_expert_intermediate_size": 64}),
    "olmoe": ("olmoe", {"num_experts": 4, "num_experts_per_tok": 2}),
    "granitemoe": ("granitemoe", {"logits_scaling": 2.0, "attention_multiplier": 0.2, "embedding_multiplier": 3.0,
                                      "residual_multiplier": 0.5, "attention_bias": False, "head_dim": None,
                                      "num_local_experts": 4, "num_experts_per_tok": 2}),
    "cohere": ("command-r", {"layer_norm_eps": 1e-5, "logit_scale": 0.5, "use_qk_norm": False, "head_dim": None,
                                 "tie_word_embeddings": True, "rms_norm_eps": None}),
    "qwen3": ("qwen3", {}),
    "qwen3_moe": ("qwen3moe", {"num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [],
                                   "moe_intermediate_size": 32, "norm_topk_prob": True}),
    "gemma": ("gemma", {"tie_word_embeddings": True}),
    "gemma2": ("gemma2", {"tie_word_embeddings": True, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                              "query_pre_attn_scalar": 16.0, "sliding_window": 4096}),
    "gemma3_text": ("gemma3", {"tie_word_embeddings": True, "sliding_window": 4, "sliding_window_pattern": 6,
                                   "query_pre_attn_scalar": 16.0, "rope_local_base_freq": 10000.0, "rope_theta": 1_000_000.0,
                                   "num_hidden_layers": 6}),
    "phi3": ("phi3", {"head_dim": None, "num_key_value_heads": 4, "partial_rotary_factor": 0.5,
                          "original_max_position_embeddings": 256}),
    "phi": ("phi2", {"partial_rotary_factor": 0.5, "layer_norm_eps": 1e-5, "num_key_value_heads": 4, "head_dim": None,
                         "intermediate_size": 256}),
    "gpt_bigcode": ("starcoder", {"n_embd": 64, "n_layer": 2, "n_inner": 256, "n_head": 4, "n_positions": 256,
                                      "layer_norm_epsilon": 1e-5, "multi_query": True, "tie_word_embeddings": True}),
    "stablelm": ("stablelm", {"partial_rotary_factor": 0.25, "layer_norm_eps": 1e-5, "use_qkv_bias": True,
                                  "use_parallel_residual": False, "head_dim": None}),
    "gpt_neox": ("gptneox", {"layer_norm_eps": 1e-5, "rotary_emb_base": 10000, "rotary_pct": 0.25, "use_parallel_residual": True,
                                 "intermediate_size": 256, "num_key_value_heads": None, "head_dim": None}),
    "exaone": ("exaone", {"num_layers": 2, "layer_norm_epsilon": 1e-5, "rms_norm_eps": None}),
    "cohere2": ("cohere2", {"layer_norm_eps": 1e-5, "logit_scale": 0.5, "sliding_window": 4, "sliding_window_pattern": 4,
                                "num_hidden_layers": 4, "tie_word_embeddings": True, "rms_norm_eps": None}),
    "gpt2": ("gpt2", {"n_ctx": 256, "n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 256, "layer_norm_epsilon": 1e-5}),
    "olmo2": ("olmo2", {}),
    "granite": ("granite", {"logits_scaling": 2.0, "attention_multiplier": 0.2, "embedding_multiplier": 3.0,
                                "residual_multiplier": 0.5, "attention_bias": False, "mlp_bias": False, "head_dim": None}),
    "starcoder2": ("starcoder2", {"norm_epsilon": 1e-5, "head_dim": None}),
}
PERMUTED = ("llama", "granite", "granitemoe", "smollm3")  # LlamaModel and its subclasses
GEMMAS = ("gemma", "gemma2", "gemma3")


def _vocab() -> tuple[list[str], list[int], list[str]]:
    from engine.models.tokenizer import _bytes_to_unicode

    tokens = list(_bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at"]
    tokens += ["Ġt", "he", "Ġthe", "Ġc", "at", "Ġcat", "<|endoftext|>"]
    types = [1] * (len(tokens) - 1) + [3]
    return tokens, types, merges


def _spm_vocab() -> tuple[list[str], list[int]]:
    """A llama SentencePiece vocabulary: specials, the 256 byte tokens, a few pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += ["▁", "t", "h", "e", "c", "a", "▁t", "he", "▁the", "▁c", "at", "▁cat"]
    types = [2, 3, 3] + [6] * 256 + [1] * 12
    return tokens, types


VOCAB = len(_vocab()[0])
SPM_VOCAB = len(_spm_vocab()[0])


@dataclass
class Tiny:
    model_type: str
    arch: str
    config: dict[str, Any]
    model: Any  # the mlx-lm model built from the original weights
    hf: dict[str, np.ndarray]  # the same weights under Hugging Face names and layouts


def tiny_family(model_type: str, seed: int = 0, **overrides: Any) -> Tiny:
    arch, extra = FAMILIES[model_type]
    config = {**BASE, "vocab_size": VOCAB, **extra, **overrides, "model_type": model_type}
    config = {k: v for k, v in config.items() if v is not None}
    mod = importlib.import_module(f"mlx_lm.models.{model_type}")
    model = mod.Model(mod.ModelArgs.from_dict(config))
    rng = np.random.default_rng(seed)
    weights = {}
    for name, p in tree_flatten(model.parameters()):
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue
        if name.endswith("norm.weight") and arch not in GEMMAS:
            value = 1.0 + 0.1 * rng.standard_normal(p.shape)
        else:
            value = 0.3 * rng.standard_normal(p.shape)
        weights[name] = value.astype(np.float32)
    model.load_weights(list(_sanitize(model, {k: mx.array(v) for k, v in weights.items()}).items()), strict=True)
    mx.eval(model.parameters())
    return Tiny(model_type, arch, config, model, _to_hf(model_type, config, weights))


def _sanitize(model: Any, weights: dict[str, Any]) -> dict[str, Any]:
    return model.sanitize(weights) if hasattr(model, "sanitize") else weights


def _to_hf(model_type: str, config: dict[str, Any], weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """mlx-lm's parameter names and layouts back to the checkpoint's (undoing mlx-lm's sanitize)."""
    hf: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if model_type == "gpt_neox":
            name = _neox_hf(name)
        if model_type == "gpt2":
            name = name.removeprefix("model.")
            if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
                w = w.T.copy()  # Conv1D stores (in, out)
        if model_type == "granitemoe" and ".switch_mlp." in name:
            if name.endswith("gate_proj.weight"):
                up = weights[name.replace("gate_proj", "up_proj")]
                hf[name.replace("switch_mlp.gate_proj", "input_linear")] = np.concatenate([w, up], axis=1)
            elif name.endswith("down_proj.weight"):
                hf[name.replace("switch_mlp.down_proj", "output_linear")] = w
            continue
        if ".switch_mlp." in name:
            for e in range(w.shape[0]):
                expert = name.replace(".switch_mlp.", f".experts.{e}.")
                if ".block_sparse_moe." in name:  # Mixtral's checkpoint names its experts w1 (gate), w2 (down), w3 (up)
                    expert = expert.replace("gate_proj", "w1").replace("down_proj", "w2").replace("up_proj", "w3")
                hf[expert] = w[e]
            continue
        hf[name] = w
    return hf


def _neox_hf(name: str) -> str:
    """mlx-lm's gpt_neox parameter name → the checkpoint's (undoing its sanitize)."""
    bare = name.removeprefix("model.")
    if bare.startswith("embed_out"):
        return bare
    return "gpt_neox." + (f"layers.{bare[2:]}" if bare.startswith("h.") else bare)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _converter_tensors(t: Tiny) -> dict[str, np.ndarray]:
    """HF tensors → GGUF tensors as convert_hf_to_gguf.py's modify_tensors does for this family."""
    cfg, arch = t.config, t.arch
    n_layers = cfg.get("num_hidden_layers") or cfg["n_layer"]
    table = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), n_layers)
    hf = dict(t.hf)
    experts: dict[str, list[tuple[int, np.ndarray]]] = {}
    for name in list(hf):  # stack experts: Qwen2MoeModel into model.layers.{bid}.mlp.experts.{w}.weight,
        for part in (".mlp.experts.", ".block_sparse_moe.experts."):  # LlamaModel into layers.{bid}.feed_forward.experts.{w}.weight
            if part in name:
                head, rest = name.split(part)
                e, wname = rest.split(".", 1)
                merged = f"{head}{part}{wname}" if part == ".mlp.experts." else \
                    f"{head.removeprefix('model.')}.feed_forward.experts.{wname}"
                experts.setdefault(merged, []).append((int(e), hf.pop(name)))
    for name, parts in experts.items():
        hf[name] = np.stack([w for _, w in sorted(parts, key=lambda p: p[0])])
    out = {}
    for name in list(hf):  # GraniteMoeModel.modify_tensors: input_linear split into gate and up experts
        if name.endswith("block_sparse_moe.input_linear.weight"):
            bid = int(name.split(".")[2])
            gate, up = np.split(hf.pop(name), 2, axis=-2)
            out[f"blk.{bid}.ffn_gate_exps.weight"], out[f"blk.{bid}.ffn_up_exps.weight"] = gate, up
    for name, w in hf.items():
        if arch == "gptneox" and ".attention.query_key_value." in name:  # GPTNeoXModel: per-head qkv to [Q; K; V]
            n_head, n_embd = cfg["num_attention_heads"], cfg["hidden_size"]
            w = w.reshape(n_head, 3, n_embd // n_head, *w.shape[1:]).swapaxes(0, 1).reshape(w.shape)
        if arch == "gpt2" and name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
            w = w.T.copy()
        if arch in PERMUTED and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = permute(w, cfg["num_attention_heads"])
        if arch in PERMUTED and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = permute(w, cfg["num_key_value_heads"])
        if arch in GEMMAS and name.endswith("norm.weight"):
            w = w + 1
        if arch in GEMMAS and name == "lm_head.weight":
            continue
        gname = table.get_name(name, try_suffixes=(".weight", ".bias"))
        assert gname is not None, name
        out[gname] = w.astype(np.float32)
    return out


def _metadata(w: gguf.GGUFWriter, t: Tiny) -> None:
    c, arch = t.config, t.arch
    if arch == "gpt2":  # GPT2Model.set_gguf_parameters
        w.add_block_count(c["n_layer"]); w.add_context_length(c["n_ctx"]); w.add_embedding_length(c["n_embd"])
        w.add_feed_forward_length(4 * c["n_embd"]); w.add_head_count(c["n_head"])
        w.add_layer_norm_eps(c["layer_norm_epsilon"])
        return
    if arch == "gptneox":  # GPTNeoXModel.set_gguf_parameters
        w.add_context_length(c["max_position_embeddings"]); w.add_embedding_length(c["hidden_size"])
        w.add_block_count(c["num_hidden_layers"]); w.add_feed_forward_length(c["intermediate_size"])
        w.add_rope_dimension_count(int(c["rotary_pct"] * (c["hidden_size"] // c["num_attention_heads"])))
        w.add_head_count(c["num_attention_heads"]); w.add_parallel_residual(c["use_parallel_residual"])
        w.add_layer_norm_eps(c["layer_norm_eps"])
        return
    if arch == "starcoder":  # StarCoderModel.set_gguf_parameters
        w.add_context_length(c["n_positions"]); w.add_embedding_length(c["n_embd"])
        w.add_feed_forward_length(4 * c["n_embd"]); w.add_block_count(c["n_layer"]); w.add_head_count(c["n_head"])
        w.add_head_count_kv(1); w.add_layer_norm_eps(c["layer_norm_epsilon"])
        return
    if arch == "phi2":  # Phi2Model.set_gguf_parameters
        w.add_context_length(c["max_position_embeddings"]); w.add_embedding_length(c["hidden_size"])
        w.add_feed_forward_length(4 * c["hidden_size"]); w.add_block_count(c["num_hidden_layers"])
        w.add_head_count(c["num_attention_heads"]); w.add_head_count_kv(c["num_attention_heads"])
        w.add_layer_norm_eps(c["layer_norm_eps"])
        w.add_rope_dimension_count(int(c["partial_rotary_factor"] * c["hidden_size"]) // c["num_attention_heads"])
        w.add_add_bos_token(False)
        return
    # TextModel.set_gguf_parameters
    w.add_block_count(c.get("num_layers") or c["num_hidden_layers"]); w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"]); w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"]); w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    if (c.get("rope_scaling") or {}).get("type") == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR); w.add_rope_scaling_factor(c["rope_scaling"]["factor"])
    if arch == "starcoder2":
        w.add_layer_norm_eps(c["norm_epsilon"])
    elif arch == "exaone":  # ExaoneModel: TextModel writes layer_norm_epsilon as the plain LayerNorm key
        w.add_layer_norm_eps(c["layer_norm_epsilon"]); w.add_rope_dimension_count(c["head_dim"])
    elif arch == "command-r":
        w.add_layer_norm_eps(c["layer_norm_eps"])
    elif arch == "cohere2":  # Cohere2Model.set_gguf_parameters (its zero biases are dropped: it has none here)
        w.add_layer_norm_eps(c["layer_norm_eps"]); w.add_logit_scale(c["logit_scale"])
        w.add_sliding_window(c["sliding_window"]); w.add_vocab_size(c["vocab_size"])
        w.add_rope_dimension_count(c["head_dim"]); w.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    elif arch == "stablelm":  # StableLMModel.set_gguf_parameters
        w.add_layer_norm_eps(c["layer_norm_eps"]); w.add_parallel_residual(c["use_parallel_residual"])
        w.add_rope_dimension_count(int(c["partial_rotary_factor"] * 16))
    else:
        w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if "head_dim" in c and arch not in ("granite", "granitemoe"):
        w.add_key_length(c["head_dim"]); w.add_value_length(c["head_dim"])
    if arch in PERMUTED:  # LlamaModel
        w.add_vocab_size(c["vocab_size"])
        w.add_rope_dimension_count(c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"])
    if arch in ("granite", "granitemoe"):
        w.add_attention_scale(c["attention_multiplier"]); w.add_embedding_scale(c["embedding_multiplier"])
        w.add_residual_scale(c["residual_multiplier"]); w.add_logit_scale(c["logits_scaling"])
    if t.model_type == "mixtral":
        w.add_expert_count(c["num_local_experts"]); w.add_expert_used_count(c["num_experts_per_tok"])
    if arch in ("olmoe", "granitemoe"):
        w.add_expert_count(c.get("num_experts") or c["num_local_experts"]); w.add_expert_used_count(c["num_experts_per_tok"])
    if arch == "qwen2moe":
        w.add_expert_count(c["num_experts"]); w.add_expert_used_count(c["num_experts_per_tok"])
        w.add_expert_feed_forward_length(c["moe_intermediate_size"])
        w.add_expert_shared_feed_forward_length(c["shared_expert_intermediate_size"])
    if arch == "command-r":
        w.add_logit_scale(c["logit_scale"]); w.add_rope_scaling_type(gguf.RopeScalingType.NONE)
    if arch == "qwen3moe":
        w.add_expert_count(c["num_experts"]); w.add_expert_used_count(c["num_experts_per_tok"])
        w.add_expert_feed_forward_length(c["moe_intermediate_size"])
    if arch == "gemma2":
        w.add_attn_logit_softcapping(c["attn_logit_softcapping"])
        w.add_final_logit_softcapping(c["final_logit_softcapping"]); w.add_sliding_window(c["sliding_window"])
    if arch == "gemma3":
        w.add_sliding_window(c["sliding_window"]); w.add_rope_freq_base_swa(c["rope_local_base_freq"])
    if arch == "phi3":  # Phi3MiniModel
        head_dim = c["hidden_size"] // c["num_attention_heads"]
        w.add_rope_scaling_orig_ctx_len(c["original_max_position_embeddings"])
        w.add_rope_dimension_count(int(c["partial_rotary_factor"] * c["hidden_size"]) // c["num_attention_heads"])
        w.add_sliding_window(0)
        assert head_dim == 16


def write_gguf(t: Tiny, path: Path, qtype: gguf.GGMLQuantizationType | None = None,
               extra_tensors: dict[str, np.ndarray] | None = None, skip_keys: tuple[str, ...] = (),
               extra_keys: dict[str, Any] | None = None, tokenizer: str = "gpt2") -> dict[str, np.ndarray]:
    """Write ``t`` as llama.cpp would; returns the GGUF tensors as a reader will dequantize them."""
    tensors = {**_converter_tensors(t), **(extra_tensors or {})}
    w = gguf.GGUFWriter(str(path), t.arch)
    _metadata(w, t)
    if tokenizer == "spm":  # as _set_vocab_sentencepiece writes it (no add_space_prefix: llama.cpp's default)
        tokens, types = _spm_vocab()
        w.add_tokenizer_model("llama"); w.add_tokenizer_pre("default")
        w.add_token_list(tokens); w.add_token_types(types)
        w.add_token_scores([-float(i) for i in range(len(tokens))])
        w.add_unk_token_id(0); w.add_bos_token_id(1); w.add_eos_token_id(2)
    else:
        tokens, types, merges = _vocab()
        w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens); w.add_token_types(types); w.add_token_merges(merges)
        w.add_eos_token_id(len(tokens) - 1); w.add_bos_token_id(len(tokens) - 1)
    for key, value in (extra_keys or {}).items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_string(key, value)
    for key in skip_keys:
        w.kv_data[0].pop(key, None)
    stored = {}
    for name, arr in tensors.items():
        if qtype is not None and arr.ndim >= 2 and arr.shape[-1] % 32 == 0:
            q = gguf.quants.quantize(arr, qtype)
            w.add_tensor(name, q, raw_dtype=qtype)
            stored[name] = gguf.quants.dequantize(q, qtype)
        else:
            w.add_tensor(name, arr)
            stored[name] = arr
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return stored


def reference_from_stored(t: Tiny, stored: dict[str, np.ndarray]) -> Any:
    """The mlx-lm model of ``t`` with the weights a quantized GGUF really holds (converter transforms undone)."""
    cfg = t.config
    inv = {}
    for name, w in tiny_weights_gguf_names(t).items():
        g = stored[w]
        if t.arch in PERMUTED and ".attn_q." in w:
            g = _unpermute(g, cfg["num_attention_heads"])
        if t.arch in PERMUTED and ".attn_k." in w:
            g = _unpermute(g, cfg["num_key_value_heads"])
        if t.arch in GEMMAS and name.endswith("norm.weight"):
            g = g - 1
        if t.arch == "gptneox" and ".attn_qkv." in w:
            n_head = cfg["num_attention_heads"]
            g = g.reshape(3, n_head, g.shape[0] // 3 // n_head, *g.shape[1:]).swapaxes(0, 1).reshape(g.shape)
        inv[name] = mx.array(np.ascontiguousarray(g, dtype=np.float32))
    mod = importlib.import_module(f"mlx_lm.models.{t.model_type}")
    model = mod.Model(mod.ModelArgs.from_dict(cfg))
    model.load_weights(list(_sanitize(model, inv).items()), strict=True)
    mx.eval(model.parameters())
    return model


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_weights_gguf_names(t: Tiny) -> dict[str, str]:
    """mlx-lm parameter → GGUF tensor, by the same HF names the converter maps (for the reference model)."""
    cfg, arch = t.config, t.arch
    n_layers = cfg.get("num_hidden_layers") or cfg["n_layer"]
    table = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch), n_layers)
    out = {}
    for name, _ in tree_flatten(t.model.parameters()):
        hf = name.removeprefix("model.") if t.model_type == "gpt2" else name.replace(".switch_mlp.", ".experts.")
        if t.model_type == "gpt_neox":
            hf = _neox_hf(name)
        if t.model_type == "granitemoe" and ".switch_mlp." in name:
            bid = name.split(".")[2]
            part = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps"}
            out[name] = f"blk.{bid}.{part[name.split('.')[-2]]}.weight"
            continue
        if ".block_sparse_moe.experts." in hf:  # the merged name Mixtral's converter maps
            hf = hf.replace("model.", "", 1).replace("block_sparse_moe", "feed_forward")
            hf = hf.replace("gate_proj", "w1").replace("down_proj", "w2").replace("up_proj", "w3")
        out[name] = table.get_name(hf, try_suffixes=(".weight", ".bias"))
    return out
