"""Where lazarus attaches to an mlx-lm model: thin wrappers, one interceptor, one cache view.

mlx-lm's own modules compute; lazarus only observes and intervenes. ``install`` gives each
wrapped module instance (every block, its attention and MLP modules or the post-norms the
family table names, the attention output projection, the MLP down projection, the routed
experts) a subclass of its own class whose ``__call__`` hands the call to the active hooked
pass (``engine.hooks``) when that pass belongs to this model, and otherwise is the original
call. Parameter names and module trees stay exactly as mlx-lm made them.

Attention probabilities come from one place: every family module that imports mlx-lm's shared
``scaled_dot_product_attention`` gets a stand-in that, while a pass wants a pattern, computes
the softmax in the open (attention sinks included) and otherwise calls the original.

Masks stay the family's own: the backbone asks its layer caches for masks
(``create_attention_mask`` -> ``cache.make_mask``), and the ``LayerView`` lazarus hands it
adds left padding to the causal/sliding mask the family asked for.
"""

from __future__ import annotations

import sys
from typing import Any

import mlx.core as mx
from mlx import nn

ACTIVE: Any = None  # the hooked pass now running (one engine thread runs MLX), or None

_SUBCLASSES: dict[type, type] = {}


def _hooked_class(cls: type) -> type:
    if getattr(cls, "_lz_hooked", False):
        return cls
    if cls not in _SUBCLASSES:
        base_call = cls.__call__

        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
            p = ACTIVE
            if p is None or p.owner is not self.__dict__.get("_lz_owner"):
                return base_call(self, *args, **kwargs)
            return p.call(self._lz_role, self._lz_layer, self, base_call, args, kwargs)

        _SUBCLASSES[cls] = type(cls.__name__, (cls,), {"__call__": __call__, "_lz_hooked": True,
                                                       "__module__": cls.__module__})
    return _SUBCLASSES[cls]


def wrap(module: Any, role: str, layer: int, owner: object) -> None:
    module.__class__ = _hooked_class(type(module))
    object.__setattr__(module, "_lz_role", role)
    object.__setattr__(module, "_lz_layer", layer)
    object.__setattr__(module, "_lz_owner", owner)


# -- attention probabilities ------------------------------------------------------------------
def _base_sdpa() -> Any:
    from mlx_lm.models import base

    return base.scaled_dot_product_attention


def scaled_dot_product_attention(queries: mx.array, keys: mx.array, values: mx.array, cache: Any,
                                 scale: float, mask: Any, sinks: mx.array | None = None) -> mx.array:
    """mlx-lm's shared attention, observed: the pattern is computed in the open only when wanted."""
    p = ACTIVE
    if p is None or not p.wants_pattern():
        return _base_sdpa()(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)
    out, probs = attention_in_the_open(queries, keys, values, scale, mask, sinks, p.pattern_delta())
    p.keep_pattern(probs)
    return out


def attention_in_the_open(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: Any,
                          sinks: mx.array | None, delta: mx.array | None = None) -> tuple[mx.array, mx.array]:
    """(output [B, H, L, Dv], probabilities [B, H, L, K]) as ``mx.fast.scaled_dot_product_attention``;
    ``delta`` (same shape as the probabilities) is added to them before they weigh the values."""
    H, L, K = q.shape[1], q.shape[2], k.shape[2]
    rep = H // k.shape[1]
    if rep > 1:
        k, v = mx.repeat(k, rep, axis=1), mx.repeat(v, rep, axis=1)
    scores = (q * scale) @ k.swapaxes(-1, -2)  # [B, H, L, K]
    if isinstance(mask, str):  # "causal": the last L of K positions
        mask = mx.arange(K - L, K)[:, None] >= mx.arange(K)[None, :]
    if mask is not None:
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.array(-mx.inf, scores.dtype))
        else:
            scores = scores + mask.astype(scores.dtype)
    scores = scores.astype(mx.float32)
    if sinks is not None:  # one extra logit per head that takes probability but carries no value
        sink = mx.broadcast_to(sinks.astype(mx.float32)[None, :, None, None], (*scores.shape[:3], 1))
        probs = mx.softmax(mx.concatenate([sink, scores], axis=-1), axis=-1)[..., 1:]
    else:
        probs = mx.softmax(scores, axis=-1)
    probs = probs.astype(q.dtype)
    if delta is not None:
        probs = probs + delta
    return probs @ v, probs


def patch_attention_modules(model: Any) -> set[str]:
    """Point every family module of ``model`` that uses mlx-lm's shared attention at ours.
    Returns the names of the modules now observed."""
    base = _base_sdpa()
    seen = set()
    for _, m in model.named_modules():
        name = type(m).__module__
        mod = sys.modules.get(name)
        if mod is None:
            continue
        current = getattr(mod, "scaled_dot_product_attention", None)
        if current is base:
            vars(mod)["scaled_dot_product_attention"] = scaled_dot_product_attention
        if getattr(mod, "scaled_dot_product_attention", None) is scaled_dot_product_attention:
            seen.add(name)
    return seen


# -- caches and masks -------------------------------------------------------------------------
def pass_mask(pad: list[int], offset: int, n: int, window: int | None, return_array: bool = False,
              group_axis: bool = False) -> Any:
    """The mask a family asked for (causal, optional window) with left padding ANDed in.

    Without padding and inside the window it is what mlx-lm returns ("causal", or None for one
    token after the cache), so attention keeps its fast path."""
    if not any(pad) and (window is None or offset + n <= window) and not return_array:
        if n == 1:
            return None
        if offset == 0:
            return "causal"
    q = mx.arange(offset, offset + n)[:, None]
    k = mx.arange(offset + n)[None, :]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (q < k + window)
    if not any(pad):
        return allowed
    p = mx.array(pad, dtype=mx.int32)[:, None, None, None]
    # a padding query attends to itself only, so no row is empty (its output is never read)
    mask = allowed[None, None] & ((k[None, None] >= p) | (k[None, None] == q[None, None]))
    return mask[:, :, None] if group_axis else mask  # [B, 1, 1, n, K] for [B, kv_heads, groups, n, K] scores


class LayerView:
    """What a family's layer sees as its cache during a hooked pass: the real cache (or none:
    keys pass straight through), at ``offset``, with masks that know the batch's left padding."""

    __slots__ = ("_c", "_group", "_offset", "_pad")

    def __init__(self, cache: Any, offset: int, pad: list[int], group_axis: bool = False) -> None:
        self._c, self._offset, self._pad, self._group = cache, offset, pad, group_axis

    @property
    def offset(self) -> int:
        return self._c.offset if self._c is not None else self._offset

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        return (keys, values) if self._c is None else self._c.update_and_fetch(keys, values)

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None) -> Any:
        return pass_mask(self._pad, self.offset, n, window_size, return_array, self._group)

    def __getattr__(self, name: str) -> Any:
        c = object.__getattribute__(self, "_c")
        if c is None:
            raise AttributeError(name)
        return getattr(c, name)


def attention_layers(model: Any, n_layers: int) -> list[type | None]:
    """Per layer: None for a key/value (attention) layer, else the cache class the family uses
    (state-space and linear-attention layers)."""
    from mlx_lm.models.cache import KVCache, RotatingKVCache

    make = getattr(model, "make_cache", None)
    if make is None:
        return [None] * n_layers
    protos = make()
    if len(protos) != n_layers:
        return [None] * n_layers
    return [None if isinstance(c, (KVCache, RotatingKVCache)) else type(c) for c in protos]


def n_experts(module: Any) -> int:
    for _, m in module.named_modules():
        n = getattr(type(m), "num_experts", None)
        if isinstance(n, property):
            return int(m.num_experts)
        w = m.get("weight") if isinstance(m, nn.Module) else None
        if w is not None and w.ndim == 3:
            return int(w.shape[0])
    raise ValueError("no expert weights found")
