"""The hooked forward's key/value cache: one cache per layer for a batch, plus the batch's padding.

Every operation lazarus does on cached keys/values is here: extend a layer, read (a slice of) its
real entries, copy some batch rows (all layers or some, the others empty). Each layer normally holds mlx-lm's own
``KVCache`` (what mlx-lm's generation uses: a 256-step buffer written in place, cheap per decoded
token). It is read through ``keys``, ``values`` and ``offset`` only, never through its ``state``
tuple, whose shape changed across mlx-lm versions. A cache whose rows are copied out at every
step (the batched ablation sweep: ``KVState(..., concat=True)``), and a copy made for one pass and
read back (``select_rows(..., concat=True)``), hold a ``GrowingCache`` instead, which grows by
concatenation: a ``KVCache`` buffer read and written in one step is copied whole, and a copy would
first go into a fresh 256-step buffer.

Masks are not here: ``engine.hook_points.LayerView`` wraps a layer's cache during a pass and adds
the padding (``pad``) to the mask the family asks for. Layers that keep a recurrent state
(state-space, convolution) get the family's own cache (``use_family_caches``); they have no keys or
values, so row selection refuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import mlx.core as mx


class GrowingCache:
    """One layer's keys/values [B, kv_heads, T, head_dim] grown by concatenation (no spare buffer)."""

    def __init__(self, keys: mx.array | None = None, values: mx.array | None = None) -> None:
        self.keys, self.values = keys, values
        self.offset = 0 if keys is None else keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None or self.values is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        self.offset += keys.shape[2]
        return self.keys, self.values


class KVState:
    """Per-layer key/value caches for a batch, its left padding, and ``offset``: the tokens (padded
    width) every layer holds once a pass has run the whole stack. ``concat``: the layers grow by
    concatenation (a cache whose rows are also copied out at every step, as the batched ablation
    sweep does: a 256-step buffer read and written in one step is copied whole)."""

    def __init__(self, n_layers: int, pad: Sequence[int], *, concat: bool = False) -> None:
        self.caches: list[Any] = [GrowingCache() if concat else _kv_cache() for _ in range(n_layers)]
        self.pad = list(pad)
        self.offset = 0

    def keys_values(self, layer: int, start: int = 0, stop: int | None = None) -> tuple[mx.array, mx.array]:
        """Layer ``layer``'s real entries at positions ``start:stop`` (default: all of them)."""
        c = self._kv_layer(layer)
        if c.keys is None or c.values is None:
            raise ValueError(f"layer {layer} holds no keys yet")
        end = c.offset if stop is None else min(stop, c.offset)
        if start == 0 and end == c.keys.shape[2]:
            return c.keys, c.values
        return c.keys[..., start:end, :], c.values[..., start:end, :]

    def extend(self, layer: int, keys: mx.array, values: mx.array) -> None:
        """Append ``keys``/``values`` [B, kv_heads, T, head_dim] to layer ``layer``."""
        self._kv_layer(layer).update_and_fetch(keys, values)

    def select_rows(self, rows: Sequence[int], layers: Iterable[int] | None = None, *,
                    concat: bool = False) -> KVState:
        """A copy holding only batch rows ``rows`` (a row may repeat; prefix reuse across variants).
        ``layers``: copy only these layers, the others empty. ``concat``: the copies grow by
        concatenation (a copy made for one pass whose new entries are read back)."""
        rows = list(rows)
        new = KVState(len(self.caches), [self.pad[i] for i in rows])
        new.offset = self.offset
        same = rows == list(range(len(self.pad)))
        idx = None if same else mx.array(rows, dtype=mx.int32)
        for i in range(len(self.caches)) if layers is None else layers:
            c = self._kv_layer(i)
            if c.keys is None:
                if concat:
                    new.caches[i] = GrowingCache()
                continue
            k, v = self.keys_values(i)
            if idx is not None:
                k, v = k[idx], v[idx]
            if concat:
                new.caches[i] = GrowingCache(k, v)
            else:
                new.caches[i].keys, new.caches[i].values, new.caches[i].offset = k, v, c.offset
        return new

    def use_family_caches(self, kinds: Sequence[type | None], make_cache: Callable[[], list[Any]]) -> None:
        """Give each state layer (``kinds[i]``: the family's cache class, None for attention) the
        family's own cache while it still holds an empty key/value one."""
        fresh = None
        for i, kind in enumerate(kinds):
            c = self.caches[i]
            if kind is not None and not isinstance(c, kind) and getattr(c, "keys", 1) is None:
                fresh = fresh or make_cache()
                self.caches[i] = fresh[i]

    def _kv_layer(self, layer: int) -> Any:
        c = self.caches[layer]
        if not hasattr(c, "keys"):
            raise ValueError(f"layer {layer} keeps a recurrent state ({type(c).__name__}), not keys and values")
        return c


def _kv_cache() -> Any:
    """mlx-lm's ``KVCache`` (imported on first use: ``import engine`` stays light)."""
    from mlx_lm.models.cache import KVCache

    return KVCache()
