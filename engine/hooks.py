"""The hooked forward: MLX has no forward hooks, so we run the block loop ourselves.

Typed sites per layer (``blocks.{L}.{kind}``):

- ``resid_pre``   the residual stream entering block L            [B, S, hidden]
- ``attn_out``    what attention adds to the residual              [B, S, hidden]
- ``mlp_out``     what the MLP adds to the residual                [B, S, hidden]
- ``resid_post``  the residual stream leaving block L ("layer L output") [B, S, hidden]
- ``attn_pattern`` softmax attention probabilities                 [B, heads, S, K]
- ``mlp_hidden``  the MLP's hidden activation (input of down_proj) [B, S, intermediate]

Interventions are data (``Intervention``): zero, mean, scale, add, replace, on a
site, optionally one head (attention: the head's output before ``o_proj``),
one prompt position, one batch row. They stay on for every generated token.

Masks are built per layer: causal, sliding-window for local layers (Gemma 3),
and left padding for batches. When no site needs a block's internals, the
block's own modules run exactly as mlx-lm runs them, so an unhooked pass equals
the model's forward (``lazarus --batch verify`` checks it per model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.errors import Cancelled, InputError
from engine.limits import check_prompt
from engine.models import LoadedModel


class SiteKind(str, Enum):
    resid_pre = "resid_pre"
    attn_out = "attn_out"
    mlp_out = "mlp_out"
    resid_post = "resid_post"
    attn_pattern = "attn_pattern"
    mlp_hidden = "mlp_hidden"


class Site(BaseModel):
    model_config = ConfigDict(frozen=True)
    layer: int
    kind: SiteKind

    def __str__(self) -> str:
        return f"blocks.{self.layer}.{self.kind.value}"

    @classmethod
    def parse(cls, text: str) -> Site:
        parts = text.split(".")
        if len(parts) != 3 or parts[0] != "blocks" or not parts[1].lstrip("-").isdigit():
            raise InputError(f"bad site {text!r}: expected blocks.<layer>.<kind>")
        try:
            return cls(layer=int(parts[1]), kind=SiteKind(parts[2]))
        except ValueError as exc:
            raise InputError(f"bad site kind in {text!r} (kinds: {', '.join(k.value for k in SiteKind)})") from exc


InterventionOp = Literal["zero", "mean", "scale", "add", "replace"]


class Intervention(BaseModel):
    """One change to one site. ``vector`` is the mean (mean), the added direction (add) or the
    activation written in (replace); its length is the site's width, or head_dim with ``head``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    site: Site
    op: InterventionOp
    head: int | None = None
    position: int | None = None  # prompt position (negative counts from the end of the prompt); None = all
    row: int | None = None  # batch row; None = every row
    factor: float = 1.0  # scale factor, or multiplier of `vector` for add
    vector: list[float] | None = Field(default=None, repr=False)

    @field_validator("vector", mode="before")
    @classmethod
    def _to_list(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, list):
            return [float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]
        return v


PositionSpec = Literal["all", "last"] | list[int]


@dataclass
class CaptureSpec:
    """Which sites to keep: kinds at layers (None = every layer), at positions."""

    kinds: Sequence[SiteKind] = (SiteKind.resid_post,)
    layers: Sequence[int] | None = None
    positions: PositionSpec = "all"


@dataclass
class Batch:
    """Left-padded token ids and each row's padding."""

    ids: mx.array  # [B, S]
    pad: list[int]  # left padding per row
    lengths: list[int]  # real tokens per row

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], pad_id: int = 0) -> Batch:
        if not rows or any(len(r) == 0 for r in rows):
            raise InputError("empty prompt: nothing to run")
        width = max(len(r) for r in rows)
        pads = [width - len(r) for r in rows]
        ids = [[pad_id] * p + list(r) for p, r in zip(pads, rows)]
        return cls(mx.array(ids, dtype=mx.int32), pads, [len(r) for r in rows])


@dataclass
class ForwardOutput:
    logits: mx.array | None  # [B, P, vocab] at the requested positions
    captures: dict[str, mx.array] = field(default_factory=dict)
    resid: mx.array | None = None  # the residual after the last block run (before the final norm)


class KVState:
    """Per-layer KV caches for a batch, plus the padding needed to build masks later."""

    def __init__(self, n_layers: int, pad: list[int]) -> None:
        from mlx_lm.models.cache import KVCache

        self.caches = [KVCache() for _ in range(n_layers)]
        self.pad = list(pad)
        self.offset = 0  # tokens already in the cache (padded width)

    def select_rows(self, rows: Sequence[int]) -> KVState:
        """A copy holding only ``rows`` of the batch (for reusing one prefix across variants)."""
        idx = mx.array(list(rows), dtype=mx.int32)
        new = KVState.__new__(KVState)
        from mlx_lm.models.cache import KVCache

        new.caches = []
        for c in self.caches:
            nc = KVCache()
            if c.keys is not None:
                keys, values, offset = c.state  # preallocated buffers; the first `offset` steps are real
                nc.state = (keys[idx, :, :offset], values[idx, :, :offset], offset)
            new.caches.append(nc)
        new.pad = [self.pad[i] for i in rows]
        new.offset = self.offset
        return new


def _fast_mask(pad: list[int], offset: int, n: int, window: int | None) -> mx.array | str | None:
    """What mlx-lm itself passes when nothing needs an explicit mask (no padding, inside the window):
    "causal" for a prompt, None for one new token after the cache, so SDPA skips materialising it."""
    if not any(pad) and (window is None or offset + n <= window):
        if n == 1:  # one new token sees every cached one
            return None
        if offset == 0:
            return "causal"
    return _mask(pad, offset, n, window)


def _mask(pad: list[int], offset: int, n: int, window: int | None) -> mx.array:
    """Boolean attention mask [B, 1, n, offset+n]: causal, optional window, left padding."""
    q = mx.arange(offset, offset + n)[:, None]  # [n, 1]
    k = mx.arange(offset + n)[None, :]  # [1, K]
    allowed = k <= q
    if window is not None:
        allowed = allowed & (q < k + window)
    p = mx.array(pad, dtype=mx.int32)[:, None, None, None]  # [B,1,1,1]
    # a padding query attends to itself only, so no row is empty (its output is never read)
    allowed = allowed[None, None] & ((k[None, None] >= p) | (k[None, None] == q[None, None]))
    return allowed


class HookedModel:
    """Runs a ``LoadedModel`` block by block with captures and interventions."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.model = lm.model
        self.adapter = lm.adapter
        self.blocks = lm.adapter.blocks(lm.model)
        self.n_layers = len(self.blocks)
        self._sliding = set(lm.adapter.sliding_layers)
        self._vec_cache: dict[int, tuple[Intervention, mx.array]] = {}
        self._delta_cache: dict[tuple[int, ...], tuple[tuple[Intervention, ...], mx.array]] = {}

    # -- validation ------------------------------------------------------------------------
    def check_layer(self, layer: int) -> int:
        if not -self.n_layers <= layer < self.n_layers:
            raise InputError(f"layer {layer} out of range (model has {self.n_layers} layers: 0-{self.n_layers - 1})")
        return layer % self.n_layers

    def check_interventions(self, ivs: Iterable[Intervention], batch_size: int) -> list[Intervention]:
        out = []
        info = self.lm.info
        for iv in ivs:
            self.check_layer(iv.site.layer)
            if iv.site.layer < 0:
                iv = iv.model_copy(update={"site": Site(layer=iv.site.layer % self.n_layers, kind=iv.site.kind)})
            if iv.site.kind == SiteKind.attn_pattern:
                raise InputError("interventions on attn_pattern are not supported; intervene on attn_out (per head)")
            if iv.head is not None and iv.site.kind != SiteKind.attn_out:
                raise InputError("a head can only be chosen for attn_out interventions")
            if iv.head is not None and not 0 <= iv.head < info.num_heads:
                raise InputError(f"head {iv.head} out of range (0-{info.num_heads - 1})")
            if iv.row is not None and not 0 <= iv.row < batch_size:
                raise InputError(f"batch row {iv.row} out of range (batch of {batch_size})")
            if iv.op in ("mean", "add", "replace") and iv.vector is None:
                raise InputError(f"intervention {iv.op} on {iv.site} needs a vector")
            if iv.vector is not None:
                width = (info.head_dim if iv.head is not None
                         else info.intermediate_size if iv.site.kind == SiteKind.mlp_hidden else info.hidden_size)
                if len(iv.vector) != width:
                    raise InputError(f"vector for {iv.site} has {len(iv.vector)} values, expected {width}")
            out.append(iv)
        return out

    # -- the forward -----------------------------------------------------------------------
    def forward(
        self,
        batch: Batch,
        *,
        capture: CaptureSpec | None = None,
        interventions: Sequence[Intervention] = (),
        kv: KVState | None = None,
        logits: Literal["all", "last", "none"] = "last",
        start_layer: int = 0,
        h: mx.array | None = None,
        stop_layer: int | None = None,
        cancel: Callable[[], bool] | None = None,
        embedding_scale: float | None = None,
        on_layer: Callable[[int, int], None] | None = None,
    ) -> ForwardOutput:
        """Run blocks ``start_layer..stop_layer-1`` on ``batch`` (or on residual ``h`` entering ``start_layer``).

        ``kv`` (optional) is extended in place; ``logits`` picks which positions get unembedded.
        ``cancel`` is checked between layers. With ``on_layer(layer, n_layers)`` each layer is
        evaluated as it finishes (live progress; cancellation then takes effect mid-pass).
        """
        ids = batch.ids
        B, S = ids.shape
        ivs = self.check_interventions(interventions, B)
        offset = kv.offset if kv is not None else 0
        pad = batch.pad
        stop = self.n_layers if stop_layer is None else stop_layer
        by_layer: dict[int, list[Intervention]] = {}
        for iv in ivs:
            by_layer.setdefault(iv.site.layer, []).append(iv)
        cap_layers = set(range(self.n_layers) if capture is None or capture.layers is None else
                         (self.check_layer(x) for x in capture.layers)) if capture else set()
        cap_kinds = set(capture.kinds) if capture else set()
        if S > 1 and h is None:  # a prompt (not one decoding step): will it fit?
            check_prompt(self.lm, B, S, offset + S, len(cap_layers) if SiteKind.attn_pattern in cap_kinds else 0)
        captures: dict[str, mx.array] = {}
        # absolute prompt position of every token in this chunk, per row: [B, S]
        positions = mx.arange(offset, offset + S)[None, :] - mx.array(pad, dtype=mx.int32)[:, None]
        lengths = mx.array(batch.lengths, dtype=mx.int32)[:, None]

        if h is None:
            h = self.adapter.embed(self.model, ids, embedding_scale)
        masks: dict[int | None, mx.array] = {}

        def keep(kind: SiteKind, layer: int, value: mx.array) -> None:
            if kind in cap_kinds and layer in cap_layers:
                captures[f"blocks.{layer}.{kind.value}"] = self._select_positions(value, capture, batch, kind)

        for layer in range(start_layer, stop):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            block = self.blocks[layer]
            window = self.adapter.sliding_window if layer in self._sliding else None
            if window not in masks:
                masks[window] = _fast_mask(pad, offset, S, window)
            mask = masks[window]
            lay_ivs = by_layer.get(layer, [])
            site_ivs = {k: [iv for iv in lay_ivs if iv.site.kind == k] for k in SiteKind}
            c = kv.caches[layer] if kv is not None else None

            h = self._apply(h, site_ivs[SiteKind.resid_pre], positions, lengths)
            keep(SiteKind.resid_pre, layer, h)
            need_pattern = SiteKind.attn_pattern in cap_kinds and layer in cap_layers
            head_ivs = [iv for iv in site_ivs[SiteKind.attn_out] if iv.head is not None]
            whole_attn_ivs = [iv for iv in site_ivs[SiteKind.attn_out] if iv.head is None]
            attn_in = block.input_layernorm(h)
            if need_pattern or head_ivs:
                attn, pattern = self._attention(block.self_attn, attn_in, mask, c, need_pattern, head_ivs,
                                                positions, lengths)
                if pattern is not None:
                    keep(SiteKind.attn_pattern, layer, pattern)
            else:
                attn = block.self_attn(attn_in, mask, c)
            if self.adapter.block_style == "sandwich":
                attn = block.post_attention_layernorm(attn)
            attn = self._apply(attn, whole_attn_ivs, positions, lengths)
            keep(SiteKind.attn_out, layer, attn)
            h = self._residual_add(h, attn)

            mlp_in = (block.pre_feedforward_layernorm(h) if self.adapter.block_style == "sandwich"
                      else block.post_attention_layernorm(h))
            need_hidden = site_ivs[SiteKind.mlp_hidden] or (SiteKind.mlp_hidden in cap_kinds and layer in cap_layers)
            if need_hidden:
                mlp = block.mlp
                hidden = self._activation(mlp.gate_proj(mlp_in), mlp.up_proj(mlp_in))
                hidden = self._apply(hidden, site_ivs[SiteKind.mlp_hidden], positions, lengths)
                keep(SiteKind.mlp_hidden, layer, hidden)
                mlp_out = mlp.down_proj(hidden)
            else:
                mlp_out = block.mlp(mlp_in)
            if self.adapter.block_style == "sandwich":
                mlp_out = block.post_feedforward_layernorm(mlp_out)
            mlp_out = self._apply(mlp_out, site_ivs[SiteKind.mlp_out], positions, lengths)
            keep(SiteKind.mlp_out, layer, mlp_out)
            h = self._residual_add(h, mlp_out)
            h = self._apply(h, site_ivs[SiteKind.resid_post], positions, lengths)
            keep(SiteKind.resid_post, layer, h)
            if on_layer is not None:
                mx.eval(h, *captures.values())
                on_layer(layer, self.n_layers)

        if kv is not None and stop == self.n_layers:
            kv.offset = offset + S
        out_logits = None
        if logits != "none" and stop == self.n_layers:
            hs = h[:, -1:, :] if logits == "last" else h
            out_logits = self.adapter.lens_logits(self.model, hs)
        return ForwardOutput(out_logits, captures, h)

    # -- pieces ----------------------------------------------------------------------------
    def _residual_add(self, x: mx.array, y: mx.array) -> mx.array:
        if self.adapter.block_style == "sandwich" and x.dtype == mx.float16:
            from mlx_lm.models.gemma3_text import clip_residual

            return clip_residual(x, y)
        return x + y

    def _activation(self, gate: mx.array, up: mx.array) -> mx.array:
        if self.adapter.mlp_activation == "gelu_approx":
            return nn.gelu_approx(gate) * up
        from mlx_lm.models.activations import swiglu

        return swiglu(gate, up)

    def _attention(self, attn: Any, x: mx.array, mask: mx.array, cache: Any, need_pattern: bool,
                   head_ivs: list[Intervention], positions: mx.array, lengths: mx.array
                   ) -> tuple[mx.array, mx.array | None]:
        """Attention computed in the open, for patterns and per-head interventions."""
        B, S, _ = x.shape
        q = attn.q_proj(x).reshape(B, S, attn.n_heads, -1).transpose(0, 2, 1, 3)  # [B, H, S, D]
        k = attn.k_proj(x).reshape(B, S, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)  # [B, Hkv, S, D]
        v = attn.v_proj(x).reshape(B, S, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if self.adapter.qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        off = cache.offset if cache is not None else 0
        q, k = attn.rope(q, offset=off), attn.rope(k, offset=off)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        pattern = None
        if need_pattern:
            if not isinstance(mask, mx.array):  # "causal"/None: build the explicit mask for the open path
                mask = _mask([0] * B, off, S, None)
            rep = attn.n_heads // attn.n_kv_heads
            kk = mx.repeat(k, rep, axis=1) if rep > 1 else k
            vv = mx.repeat(v, rep, axis=1) if rep > 1 else v
            scores = (q * attn.scale) @ kk.transpose(0, 1, 3, 2)  # [B, H, S, K]
            scores = mx.where(mask, scores, mx.array(-mx.inf, scores.dtype))
            pattern = mx.softmax(scores.astype(mx.float32), axis=-1).astype(q.dtype)
            out = pattern @ vv  # [B, H, S, D]
        else:
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=attn.scale, mask=mask)
        z = out.transpose(0, 2, 1, 3)  # [B, S, H, D]
        for iv in head_ivs:
            head = z[:, :, iv.head, :]
            z = _set_head(z, iv.head, self._apply(head, [iv], positions, lengths))
        return attn.o_proj(z.reshape(B, S, -1)), pattern

    def _vector(self, iv: Intervention, dtype: Any) -> mx.array:
        """``iv.vector`` as an array, converted once per intervention object (generation reuses it
        every step). The cache holds the intervention itself, so its id cannot be reused while cached."""
        hit = self._vec_cache.get(id(iv))
        if hit is not None and hit[0] is iv and hit[1].dtype == dtype:
            return hit[1]
        if len(self._vec_cache) > 512:
            self._vec_cache.clear()
        vec = mx.array(iv.vector, dtype=dtype)
        self._vec_cache[id(iv)] = (iv, vec)
        return vec

    def _apply(self, x: mx.array, ivs: list[Intervention], positions: mx.array, lengths: mx.array) -> mx.array:
        """Apply interventions to ``x`` [B, S, W]."""
        if len(ivs) > 1 and all(iv.op == "add" and iv.row is not None and iv.position is None for iv in ivs):
            return x + self._row_delta(ivs, x.shape[0], x.dtype)  # a sweep: one vector per batch row
        for iv in ivs:
            if iv.op == "zero":
                new = mx.zeros_like(x)
            elif iv.op == "scale":
                new = x * iv.factor
            elif iv.op == "add":
                new = x + self._vector(iv, x.dtype) * iv.factor
            else:  # mean, replace
                new = mx.broadcast_to(self._vector(iv, x.dtype), x.shape)
            if iv.row is None and iv.position is None:
                x = new
                continue
            B = x.shape[0]
            sel = mx.ones(positions.shape, dtype=mx.bool_)  # [B, S]
            if iv.row is not None:
                sel = sel & (mx.arange(B)[:, None] == iv.row)
            if iv.position is not None:
                target = iv.position if iv.position >= 0 else lengths + iv.position  # [B,1] or int
                sel = sel & (positions == target)
            x = mx.where(sel[:, :, None], new, x)
        return x

    def _row_delta(self, ivs: list[Intervention], batch: int, dtype: Any) -> mx.array:
        """[B, 1, W]: the sum of row-wise add interventions (factor * vector on its row), built once per
        set of intervention objects (generation applies the same set every step) and added in one op."""
        key = tuple(id(iv) for iv in ivs) + (batch,)
        hit = self._delta_cache.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], ivs)) and hit[1].dtype == dtype:
            return hit[1]
        if len(self._delta_cache) > 64:
            self._delta_cache.clear()
        rows = mx.arange(batch)[:, None, None]
        delta = sum((mx.where(rows == iv.row, self._vector(iv, dtype) * iv.factor, mx.array(0, dtype))
                     for iv in ivs), mx.zeros((batch, 1, 1), dtype))
        mx.eval(delta)
        self._delta_cache[key] = (tuple(ivs), delta)
        return delta

    def _select_positions(self, value: mx.array, capture: CaptureSpec | None, batch: Batch,
                          kind: SiteKind) -> mx.array:
        if capture is None or capture.positions == "all":
            return value
        if kind == SiteKind.attn_pattern:  # [B, H, S, K]: select query positions
            if capture.positions == "last":
                return value[:, :, -1:, :]
            idx = _padded_index(capture.positions, batch)
            return mx.stack([value[b, :, idx[b], :] for b in range(value.shape[0])])
        if capture.positions == "last":
            return value[:, -1:, :]
        idx = _padded_index(capture.positions, batch)
        if all(row == idx[0] for row in idx):  # same positions in every row (no padding): one slice/take
            first = idx[0]
            if len(first) == 1:
                return value[:, first[0]:first[0] + 1, :]
            return mx.take(value, mx.array(first), axis=1)
        return mx.take_along_axis(value, mx.array(idx)[:, :, None], axis=1)


def _padded_index(positions: Sequence[int], batch: Batch) -> list[list[int]]:
    out = []
    for p, n in zip(batch.pad, batch.lengths):
        row = []
        for pos in positions:
            if not -n <= pos < n:
                raise InputError(f"position {pos} out of range for a prompt of {n} tokens")
            row.append(p + (pos % n))
        out.append(row)
    return out


def _set_head(z: mx.array, head: int, value: mx.array) -> mx.array:
    """z [B, S, H, D] with head ``head`` replaced by ``value`` [B, S, D]."""
    sel = (mx.arange(z.shape[2]) == head)[None, None, :, None]
    return mx.where(sel, value[:, :, None, :], z)
