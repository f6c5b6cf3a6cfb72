"""The adapter table: the one place that knows each model family's layout.

Every analysis reaches the embedding, the blocks, the final norm and the
unembedding through an ``Adapter``; nothing else probes model attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import mlx.core as mx

from engine.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Adapter:
    model_type: str
    family: str
    block_style: Literal["prenorm", "sandwich"]  # llama: x + attn(norm x); gemma: x + norm(attn(norm x))
    mlp_activation: Literal["silu", "gelu_approx"]
    qk_norm: bool  # per-head RMSNorm on queries and keys before RoPE
    embedding_scale: float | None  # multiply embeddings by this (Gemma: sqrt(hidden), rounded to bf16)
    final_logit_softcap: float | None
    sliding_window: int | None
    sliding_layers: tuple[int, ...]  # layers whose attention sees only the last `sliding_window` tokens
    tied_embeddings: bool

    # -- where things are ------------------------------------------------------------------
    @staticmethod
    def embed_tokens(model: Any) -> Any:
        return model.model.embed_tokens

    @staticmethod
    def blocks(model: Any) -> list[Any]:
        return model.model.layers

    @staticmethod
    def final_norm(model: Any) -> Any:
        return model.model.norm

    def embed(self, model: Any, ids: mx.array, scale: float | None = None) -> mx.array:
        h = model.model.embed_tokens(ids)  # [batch, seq, hidden]
        s = self.embedding_scale if scale is None else scale
        if s is not None:
            h = h * mx.array(s, dtype=h.dtype)
        return h

    def unembed(self, model: Any, h: mx.array) -> mx.array:
        """Logits from a residual already passed through the final norm."""
        if self.tied_embeddings:
            logits = model.model.embed_tokens.as_linear(h)
        else:
            logits = model.lm_head(h)
        if self.final_logit_softcap:
            c = self.final_logit_softcap
            logits = mx.tanh(logits / c) * c
        return logits

    def lens_logits(self, model: Any, h: mx.array) -> mx.array:
        """The logit lens: final norm, unembedding, soft-cap, exactly as the model's own head."""
        return self.unembed(model, model.model.norm(h))


def _bf16(x: float) -> float:
    return float(mx.array(x, dtype=mx.bfloat16).astype(mx.float32).item())


def adapter_for(model: Any, config: dict[str, Any]) -> Adapter:
    model_type = config.get("model_type")
    n_layers = int(config["num_hidden_layers"])
    tied = getattr(model, "lm_head", None) is None
    if model_type in ("llama", "mistral", "qwen2"):
        window = config.get("sliding_window") if config.get("layer_types") else None
        sliding = tuple(i for i, t in enumerate(config.get("layer_types") or []) if t == "sliding_attention")
        return Adapter(model_type, model_type, "prenorm", "silu", False, None,
                       None, window if sliding else None, sliding, tied)
    if model_type == "gemma3_text":
        pattern = int(config.get("sliding_window_pattern", 6))
        sliding = tuple(i for i in range(n_layers) if (i + 1) % pattern != 0)
        return Adapter("gemma3_text", "gemma3", "sandwich", "gelu_approx", True,
                       _bf16(float(config["hidden_size"]) ** 0.5), config.get("final_logit_softcapping"),
                       int(config.get("sliding_window", 512)), sliding, tied)
    raise UnsupportedArchitecture(
        f"unsupported architecture {model_type!r} (supported: llama, mistral, qwen2, gemma3_text)"
    )
