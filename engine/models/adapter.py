"""The adapter: where a loaded mlx-lm model keeps what lazarus observes.

Most of it is discovered from the module tree (the block list mlx-lm itself uses,
each block's attention and MLP modules, their output/down projections, the final
norm, the embedding and the unembedding); ``engine.models.families`` holds, per
``model_type``, only what cannot be discovered (odd module names, a post-norm that
sits outside attention, the embedding scale the family applies, refusals).
Nothing else probes model attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx import nn

from engine.errors import UnsupportedArchitecture
from engine.models.families import (
    ATTN_NAMES,
    DOWN_NAMES,
    FINAL_NORM_NAMES,
    MLP_NAMES,
    O_NAMES,
    Family,
    family_of,
)
from engine.mx_values import item_float


def get_path(module: Any, path: str) -> Any:
    """The submodule at a dotted path ("attn.attention"), or None."""
    for part in path.split("."):
        module = module.get(part) if isinstance(module, dict) else None
    return module if isinstance(module, nn.Module) else None


def _child(module: Any, names: tuple[str, ...]) -> tuple[str | None, Any]:
    for name in names:
        sub = get_path(module, name)
        if sub is not None:
            return name, sub
    return None, None


def _is_switch(module: Any) -> bool:
    return type(module).__module__.endswith("switch_layers")


@dataclass(frozen=True)
class BlockParts:
    """The submodules of one block that lazarus wraps (names relative to the block)."""

    attn: str | None  # attention module (its output = attn_out unless attn_out_at names a post-norm)
    o_proj: str | None  # inside attn: the output projection, whose input is every head's output
    mlp: str | None  # MLP or mixture-of-experts module
    down: str | None  # inside mlp: the down projection, whose input is mlp_hidden
    experts: str | None  # inside mlp: the routed experts (mixture of experts)
    attn_out_at: str | None  # block child whose output is attn_out (a post-norm outside attention)
    mlp_out_at: str | None


@dataclass(frozen=True)
class Adapter:
    model_type: str
    family: str
    spec: Family
    text_path: tuple[str, ...]  # from the Model to the text Model (gemma3: ("language_model",))
    backbone_name: str  # the text Model's child holding the blocks
    layers_name: str
    norm_name: str | None
    embed_name: str | None
    head_name: str | None  # untied unembedding Linear (on the text Model or its backbone); None when tied
    parts: tuple[BlockParts, ...]
    embedding_scale: float | None  # the scale lazarus runs with (the family's own unless overridden)
    native_embedding_scale: float | None  # the scale the family's own code multiplies embeddings by
    final_logit_softcap: float | None
    sliding_window: int | None
    sliding_layers: tuple[int, ...]
    residual_scale: float | None = None  # the block adds attn_out/mlp_out module outputs times this
    dims: dict[str, int] = field(default_factory=dict)

    @property
    def tied_embeddings(self) -> bool:
        return self.head_name is None

    # -- where things are ------------------------------------------------------------------
    def text_model(self, model: Any) -> Any:
        for name in self.text_path:
            model = model[name]
        return model

    def backbone(self, model: Any) -> Any:
        return self.text_model(model)[self.backbone_name]

    def blocks(self, model: Any) -> list[Any]:
        blocks: list[Any] = self.backbone(model)[self.layers_name]
        return blocks

    def final_norm(self, model: Any) -> Any:
        return self.backbone(model)[self.norm_name] if self.norm_name else (lambda h: h)

    def embed_tokens(self, model: Any) -> Any:
        return self.backbone(model)[self.embed_name]

    def unembed_weight(self, model: Any) -> mx.array | None:
        """The [vocab, hidden] unembedding matrix, or None when the head is not a plain float matrix."""
        if self.head_name is None:
            mod = self.embed_tokens(model)
        else:
            text = self.text_model(model)
            mod = text.get(self.head_name) or self.backbone(model)[self.head_name]
        if not isinstance(mod, (nn.Linear, nn.Embedding)) or "bias" in mod:
            return None
        return mod.weight

    def embedding_factor(self, model: Any, scale: float | None = None) -> float | None:
        """What to multiply the family's own scaled embedding by so that it carries ``scale``
        (default: the adapter's) taken in the computation dtype, or None when they agree. Gemma 3:
        mlx-lm multiplies by sqrt(hidden) rounded to bfloat16; in float32 lazarus uses the exact
        value, as HF transformers does; in bfloat16 the two are the same number."""
        scale = self.embedding_scale if scale is None else scale
        if scale == self.native_embedding_scale:
            return None
        emb = self.embed_tokens(model)
        dtype = (emb.get("scales") if "scales" in emb else emb.weight).dtype
        want = item_float(mx.array(1.0 if scale is None else scale, dtype=dtype))
        native = self.native_embedding_scale or 1.0
        return None if want == native else want / native

    def reference_logits(self, model: Any, ids: mx.array) -> mx.array:
        """The model's own forward (what ``verify`` compares the hooked forward with), run with the
        embedding scale lazarus uses: where it differs from the family code's, through the model's
        ``input_embeddings`` (pre-multiplied by the factor the family's scaling then completes)."""
        factor = self.embedding_factor(model)
        if factor is None:
            logits: mx.array = model(ids)
            return logits
        emb = self.embed_tokens(model)(ids)
        logits = model(ids, input_embeddings=emb * mx.array(factor, dtype=emb.dtype))
        return logits

    def lens_logits(self, model: Any, h: mx.array) -> mx.array:
        """The logit lens: the family's own head (final norm, unembedding, any logit scale or
        soft-cap) on residual ``h`` [B, S, hidden]. Runs the model's own ``__call__`` with every
        block standing in as "return h", so what follows the last block is exactly the family's."""
        backbone = self.backbone(model)
        real = backbone[self.layers_name]
        backbone[self.layers_name] = [_Returns(b, h) for b in real]
        try:
            logits: mx.array = model(mx.zeros(h.shape[:2], dtype=mx.int32))
            return logits
        finally:
            backbone[self.layers_name] = real


class _Returns:
    """Stands in for a block during a head-only call: returns the given residual and lends every
    other attribute (a layer's kind, its index) from the real block."""

    def __init__(self, real: Any, h: mx.array) -> None:
        self._real, self._h = real, h

    def __call__(self, *args: Any, **kwargs: Any) -> mx.array:
        return self._h

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _text_path(model: Any) -> tuple[str, ...]:
    if isinstance(model.get("language_model"), nn.Module):
        return ("language_model",)
    return ()


def _backbone(text: Any) -> tuple[str, str]:
    layers = getattr(text, "layers", None)  # mlx-lm's own view of the blocks (may be a slice)
    first = layers[0] if layers else None
    for name, sub in text.items():
        if isinstance(sub, nn.Module):
            for lname, val in sub.items():
                if isinstance(val, list) and val and (first is None or val[0] is first):
                    return name, lname
    raise UnsupportedArchitecture(f"{type(text).__module__.rsplit('.', 1)[-1]}: no block list found")


def _block_parts(block: Any, fam: Family) -> BlockParts:
    attn_name, attn = _child(block, (fam.attn,) if fam.attn else ATTN_NAMES)
    mlp_name, mlp = _child(block, (fam.mlp,) if fam.mlp else MLP_NAMES)
    o_name = _child(attn, (fam.o_proj,) if fam.o_proj else O_NAMES)[0] if attn is not None else None
    down_name = experts = None
    if mlp is not None:
        experts = next((n for n, s in mlp.items() if isinstance(s, nn.Module) and _is_switch(s)), None)
        down_name, down = _child(mlp, (fam.down,) if fam.down else DOWN_NAMES)
        if down is not None and _is_switch(down):
            down_name = None
    return BlockParts(attn_name, o_name, mlp_name, down_name, experts, fam.attn_out_at, fam.mlp_out_at)


def _config_int(config: dict[str, Any], *names: str) -> int | None:
    for n in names:
        v = config.get(n)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return int(v)
    return None


def _in_width(linear: Any) -> int:
    w = linear.weight
    if isinstance(linear, nn.QuantizedLinear):
        return int(w.shape[-1]) * 32 // int(linear.bits)
    return int(w.shape[-1])


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("text_config")
    return {**config, **inner} if isinstance(inner, dict) else config


def adapter_for(model: Any, config: dict[str, Any]) -> Adapter:
    model_type = str(config.get("model_type"))
    fam = family_of(model_type)
    if fam.refused:
        raise UnsupportedArchitecture(f"{model_type}: {fam.refused}")
    cfg = text_config(config)
    path = _text_path(model)
    text = model
    for name in path:
        text = text[name]
    bb_name, layers_name = _backbone(text)
    backbone = text[bb_name]
    blocks = backbone[layers_name]
    parts = tuple(_block_parts(b, fam) for b in blocks)
    norm_name = _child(backbone, (fam.final_norm,) if fam.final_norm else FINAL_NORM_NAMES)[0]
    embed_name = next((n for n, s in backbone.items() if isinstance(s, (nn.Embedding, nn.QuantizedEmbedding))), None)
    head_name = next((n for n in ("lm_head", "embed_out", "output") for m in (text, backbone)
                      if isinstance(m.get(n), nn.Module)), None)
    hidden = _config_int(cfg, "hidden_size", "n_embd", "d_model", "dim") or 0
    heads = _config_int(cfg, "num_attention_heads", "n_head", "num_heads", "n_heads") or 1
    kv_heads = _config_int(cfg, "num_key_value_heads", "n_kv_heads", "num_kv_heads", "n_head_kv")
    if kv_heads is None:
        kv_heads = 1 if cfg.get("multi_query") else heads
    head_dim = _config_int(cfg, "head_dim") or (hidden // heads if heads else 0)
    inter = _config_int(cfg, "intermediate_size", "n_inner", "ffn_dim", "moe_intermediate_size") or 4 * hidden
    # the widths the hooks really see: the output projection's input per head, the down projection's
    o_proj = next((get_path(get_path(b, p.attn), p.o_proj) for b, p in zip(blocks, parts, strict=True)
                   if p.attn and p.o_proj), None)
    if o_proj is not None:
        head_dim = _in_width(o_proj) // heads
    down = next((get_path(get_path(b, p.mlp), p.down) for b, p in zip(blocks, parts, strict=True)
                 if p.mlp and p.down), None)
    if down is not None:
        inter = _in_width(down)
    dims = {"num_layers": len(blocks), "hidden_size": hidden, "num_heads": heads, "num_kv_heads": kv_heads,
            "head_dim": head_dim, "intermediate_size": inter,
            "vocab_size": _config_int(cfg, "vocab_size", "n_vocab", "padded_vocab_size") or 0}
    window, sliding = fam.sliding(cfg, len(blocks))
    softcap = cfg.get("final_logit_softcapping")
    scale = fam.embedding_scale(cfg) if fam.embedding_scale else None
    native = fam.native_embedding_scale(cfg) if fam.native_embedding_scale else scale
    return Adapter(
        model_type=model_type, family=fam.family or model_type, spec=fam, text_path=path,
        backbone_name=bb_name, layers_name=layers_name, norm_name=norm_name, embed_name=embed_name,
        head_name=head_name, parts=parts,
        embedding_scale=scale, native_embedding_scale=native,
        final_logit_softcap=float(softcap) if softcap else None,
        sliding_window=window, sliding_layers=sliding, dims=dims,
        residual_scale=fam.residual_scale(cfg) if fam.residual_scale else None,
    )

