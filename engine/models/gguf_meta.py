"""Reading a GGUF's metadata for a family: which keys were read, and the pieces families share.

``Meta`` records every ``<arch>.`` key a family reads, so ``gguf_loader`` can refuse a file
whose metadata holds a key nobody read (it might change the computation). The helpers
read the hyper-parameters most families share (attention shape, RoPE, norms, experts)
the way llama.cpp reads them, with llama.cpp's defaults where it has them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.errors import ModelLoadError, UnsupportedArchitecture

# Keys under "<arch>." that describe the file or the runtime, not the computation.
_INFORMATIONAL = ("rope.scaling.finetuned",)


class Meta:
    """The file's metadata for one architecture; records which ``<arch>.`` keys were read."""

    def __init__(self, meta: dict[str, Any], arch: str, source: str) -> None:
        self.meta, self.arch, self.source = meta, arch, source
        self.read: set[str] = set()

    def has(self, key: str) -> bool:
        return f"{self.arch}.{key}" in self.meta

    def opt(self, key: str, default: Any = None) -> Any:
        full = f"{self.arch}.{key}"
        self.read.add(full)
        return self.meta.get(full, default)

    def req(self, key: str) -> Any:
        full = f"{self.arch}.{key}"
        self.read.add(full)
        if full not in self.meta:
            raise ModelLoadError(f"{self.source}: GGUF metadata lacks {full} (needed for architecture {self.arch})")
        return self.meta[full]

    def scalar(self, key: str, default: Any = None, kind: type = int) -> Any:
        value = self.req(key) if default is None else self.opt(key, default)
        if isinstance(value, list):
            if len(set(value)) != 1:
                raise UnsupportedArchitecture(f"{self.source}: per-layer {self.arch}.{key} ({value[:4]}…) is not supported")
            value = value[0]
        return kind(value)

    def refuse(self, key: str, why: str) -> None:
        raise UnsupportedArchitecture(f"{self.source}: {self.arch}.{key} = {self.meta.get(f'{self.arch}.{key}')!r}: {why}")

    def unread(self) -> list[str]:
        prefix = f"{self.arch}."
        return sorted(k for k in self.meta if k.startswith(prefix) and k not in self.read
                      and k[len(prefix):] not in _INFORMATIONAL)


@dataclass(frozen=True)
class Tensors:
    """What the config needs from the tensor list: names and (rows, cols…) shapes in NumPy order."""

    shapes: dict[str, tuple[int, ...]]

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def rows(self, name: str) -> int:
        return self.shapes[name][0]


@dataclass(frozen=True)
class Family:
    arch: str
    model_type: str
    config: Callable[[Meta, Tensors], dict[str, Any]]
    permute_qk: bool = False
    norm_shift: float = 0.0
    rope_freqs: bool = False  # llama.cpp's rope_freqs tensor (Llama 3.x) becomes a llama3 rope_scaling
    output_tied_copy: bool = False  # an output.weight equal to token_embd is the tied head, not a separate one
    interleave_qkv: bool = False  # GPTNeoXModel split the per-head [q k v] rows of query_key_value into [Q; K; V]


# -- shared pieces -------------------------------------------------------------------------

def attention(m: Meta, t: Tensors, *, rotary_may_be_partial: bool = False) -> dict[str, Any]:
    hidden = m.scalar("embedding_length")
    n_head = m.scalar("attention.head_count")
    n_kv = m.scalar("attention.head_count_kv", n_head)
    head_dim = m.scalar("attention.key_length", hidden // n_head)
    if m.scalar("attention.value_length", head_dim) != head_dim:
        m.refuse("attention.value_length", f"differs from the key length {head_dim}")
    rope_dim = m.scalar("rope.dimension_count", head_dim)
    if rope_dim != head_dim and not rotary_may_be_partial:
        m.refuse("rope.dimension_count", f"partial rotary ({rope_dim} of {head_dim}) is not supported for {m.arch}")
    if not m.opt("attention.causal", True):
        m.refuse("attention.causal", "non-causal attention is not a language model")
    return {
        "hidden_size": hidden,
        "num_hidden_layers": m.scalar("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "vocab_size": t.rows("token_embd.weight"),
        "max_position_embeddings": m.scalar("context_length", 4096),
        "tie_word_embeddings": "output.weight" not in t,
    }


def vocab_size_check(m: Meta, t: Tensors) -> None:
    if m.has("vocab_size") and m.scalar("vocab_size") != t.rows("token_embd.weight"):
        m.refuse("vocab_size", f"differs from token_embd's {t.rows('token_embd.weight')} rows")
    m.opt("vocab_size")


def rope(m: Meta, *, default_base: float = 10000.0) -> dict[str, Any]:
    """rope_theta and rope_scaling as llama.cpp reads them (a factor without a type means linear)."""
    out: dict[str, Any] = {"rope_theta": m.scalar("rope.freq_base", default_base, float)}
    factor = float(m.opt("rope.scaling.factor") or 0.0)
    legacy = float(m.opt("rope.scale_linear") or 0.0)  # the key older llama.cpp files use
    if legacy and factor and legacy != factor:
        m.refuse("rope.scale_linear", f"disagrees with rope.scaling.factor {factor}")
    factor = factor or legacy
    kind = m.opt("rope.scaling.type", "linear" if factor else "none")
    m.opt("rope.scaling.original_context_length")  # only meaningful for yarn/longrope, refused below
    if kind == "none" or (kind == "linear" and factor in (0.0, 1.0)):
        pass
    elif kind == "linear":
        out["rope_scaling"] = {"type": "linear", "rope_type": "linear", "factor": factor}
    else:
        m.refuse("rope.scaling.type", "only linear RoPE scaling is supported from GGUF")
    attn_factor = m.opt("rope.scaling.attn_factor")
    if attn_factor not in (None, 1.0):
        m.refuse("rope.scaling.attn_factor", "RoPE attention scaling is not supported")
    return out


def no_experts(m: Meta) -> None:
    for key in ("expert_count", "expert_used_count"):
        if m.scalar(key, 0) != 0:
            m.refuse(key, f"mixture-of-experts {m.arch} GGUFs are not supported")


def gemma_query_scalar(m: Meta, cfg: dict[str, Any], big_layers: int) -> float:
    """query_pre_attn_scalar: the file's attention.scale, else llama.cpp's rule (27B scales by hidden/heads)."""
    scale = m.opt("attention.scale")
    if scale is not None:
        return 1.0 / float(scale) ** 2
    if cfg["num_hidden_layers"] == big_layers:
        return float(cfg["hidden_size"] // cfg["num_attention_heads"])
    return float(cfg["head_dim"])


def routing(m: Meta, *, shared: bool = False) -> dict[str, Any]:
    """Expert counts; refuses routing mlx-lm's softmax top-k of these families cannot reproduce."""
    if m.opt("expert_gating_func") not in (None, 1):  # llama.cpp's LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX
        m.refuse("expert_gating_func", "only softmax expert gating is supported")
    if m.opt("expert_weights_scale") not in (None, 1.0):
        m.refuse("expert_weights_scale", f"scaled expert weights are not part of mlx-lm's {m.arch}")
    if not shared and (m.scalar("expert_shared_count", 0) or m.scalar("expert_shared_feed_forward_length", 0)):
        m.refuse("expert_shared_feed_forward_length", f"shared experts are not part of mlx-lm's {m.arch}")
    return {"experts": m.scalar("expert_count"), "used": m.scalar("expert_used_count")}


def swa_period(m: Meta, n_layers: int, default: int) -> int:
    """The local/global period p (layer i is global when (i + 1) % p == 0) of ``attention.sliding_window_pattern``.

    llama.cpp stores it as a per-layer bool array (true = sliding) or an int, and has a
    built-in ``default`` per architecture when the key is absent.
    """
    value = m.opt("attention.sliding_window_pattern")
    if value is None:
        return default
    if not isinstance(value, list):
        return int(value)
    periods = [p for p in range(1, n_layers + 1)
               if [bool(v) for v in value] == [(i + 1) % p != 0 for i in range(n_layers)]]
    if not periods:
        m.refuse("attention.sliding_window_pattern", "only periodic patterns (p-1 local, 1 global) are supported")
    return periods[0]
