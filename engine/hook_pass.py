"""One hooked pass: what the wrappers of ``engine.hook_points`` report to while it runs.

Each wrapped call lands in ``_Pass.call`` with its role: ``block`` (residual sites, layer
range, cancellation, progress), ``attn_out`` / ``mlp_out`` (what the module adds), ``heads``
(the output projection's input: per-head sites and interventions), ``mlp_hidden`` (the down
projection's input), ``experts`` (the routed experts: which experts each token chose).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import mlx.core as mx

from engine.errors import Cancelled
from engine.hook_types import Batch, CaptureSpec, Intervention, SiteKind

if TYPE_CHECKING:
    from engine.hooks import HookedModel


class Stop(Exception):
    def __init__(self, h: mx.array | None) -> None:
        self.h = h


class Pass:
    def __init__(self, hm: HookedModel, batch: Batch, ivs: list[Intervention], capture: CaptureSpec | None,
                 cap_layers: set[int], cap_kinds: set[SiteKind], start: int, stop: int, h_in: mx.array | None,
                 factor: float | None, cancel: Callable[[], bool] | None,
                 on_layer: Callable[[int, int], None] | None, offset: int,
                 deltas: dict[str, mx.array] | None = None) -> None:
        self.hm, self.batch, self.capture = hm, batch, capture
        self.owner = hm._owner
        self.cap_layers, self.cap_kinds = cap_layers, cap_kinds
        self.start, self.stop, self.h_in, self.factor = start, stop, h_in, factor
        self.cancel, self.on_layer = cancel, on_layer
        self.by_layer: dict[tuple[int, SiteKind], list[Intervention]] = {}
        self.heads: dict[int, list[Intervention]] = {}
        for iv in ivs:
            if iv.head is not None:
                self.heads.setdefault(iv.site.layer, []).append(iv)
            else:
                self.by_layer.setdefault((iv.site.layer, iv.site.kind), []).append(iv)
        S = batch.ids.shape[1]
        # absolute prompt position of every token in this chunk, per row: [B, S]
        self.positions = mx.arange(offset, offset + S)[None, :] - mx.array(batch.pad, dtype=mx.int32)[:, None]
        self.lengths = mx.array(batch.lengths, dtype=mx.int32)[:, None]
        self.captures: dict[str, mx.array] = {}
        self.layer = -1  # the block now running
        self.fake: str | None = None  # routing probe: the experts return zeros / one-hot rows
        self.route: mx.array | None = None
        self.reached: set[tuple[int, SiteKind]] = set()  # the sites the family's forward went through
        self.deltas: dict[str, mx.array] = dict(deltas or {})  # site name -> array added there (engine.attribution)
        self.idle = self._idle_roles()

    def _idle_roles(self) -> frozenset[str]:
        """The inner roles this pass neither reads nor edits anywhere: their wrapped calls go straight
        to the family's code (SmolLM2's 5-token lens: graph building 3.84 -> 3.68 ms; mlx-lm's own 3.0)."""
        used = (self.cap_kinds | {kind for _, kind in self.by_layer}
                | {SiteKind(name.rsplit(".", 1)[1]) for name in self.deltas})
        if self.heads:
            used.add(SiteKind.attn_heads)
        roles = {"attn_out": {SiteKind.attn_out}, "mlp_out": {SiteKind.mlp_out, SiteKind.moe_router},
                 "heads": {SiteKind.attn_heads}, "mlp_hidden": {SiteKind.mlp_hidden}, "experts": {SiteKind.moe_router}}
        return frozenset(role for role, need in roles.items() if not need & used)

    def wants(self, kind: SiteKind, layer: int) -> bool:
        return kind in self.cap_kinds and layer in self.cap_layers

    def keep(self, kind: SiteKind, layer: int, value: mx.array) -> None:
        self.reached.add((layer, kind))
        if self.wants(kind, layer):
            self.captures[f"blocks.{layer}.{kind.value}"] = self.hm._select_positions(value, self.capture,
                                                                                      self.batch, kind)

    def edit(self, kind: SiteKind, layer: int, x: mx.array) -> mx.array:
        ivs = self.by_layer.get((layer, kind))
        if ivs:
            x = self.hm._apply(x, ivs, self.positions, self.lengths)
        d = self.deltas.get(f"blocks.{layer}.{kind.value}")
        if d is not None:
            x = x + d
        self.keep(kind, layer, x)
        return x

    def wants_pattern(self) -> bool:
        return self.layer >= 0 and self.fake is None and (self.wants(SiteKind.attn_pattern, self.layer)
                                                          or self.pattern_delta() is not None)

    def pattern_delta(self) -> mx.array | None:
        return self.deltas.get(f"blocks.{self.layer}.attn_pattern") if self.deltas else None

    def keep_pattern(self, probs: mx.array) -> None:
        self.keep(SiteKind.attn_pattern, self.layer, probs)

    def call(self, role: str, layer: int, module: Any, base: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if role in self.idle:
            return base(module, *args, **kwargs)
        return getattr(self, "_" + role)(layer, module, base, args, kwargs)

    # -- roles -----------------------------------------------------------------------------
    def _block(self, layer: int, module: Any, base: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        args, kwargs, x = _first(args, kwargs)
        if layer < self.start:
            return x
        if layer >= self.stop:
            raise Stop(None)
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")
        if layer == self.start and self.h_in is not None:
            x = self.h_in
        elif layer == 0 and self.factor is not None:
            x = x * mx.array(self.factor, dtype=x.dtype)
        x = self.edit(SiteKind.resid_pre, layer, x)
        self.layer = layer
        try:
            out = base(module, x, *args, **kwargs)
        finally:
            self.layer = -1
        self.route = None
        tup = isinstance(out, tuple)
        h = out[0] if tup else out
        edited = bool(self.by_layer.get((layer, SiteKind.block_out))) or f"blocks.{layer}.block_out" in self.deltas
        if edited or self.wants(SiteKind.block_out, layer):
            added = self.edit(SiteKind.block_out, layer, h - x)
            if edited:  # only an edit goes back: x + (h - x) != h in floats
                h = x + added
        h = self.edit(SiteKind.resid_post, layer, h)
        if self.on_layer is not None:
            mx.eval(h, *self.captures.values())
            self.on_layer(layer, self.hm.n_layers)
        if layer == self.stop - 1:
            raise Stop(h)
        return (h, *out[1:]) if tup else h

    def _out(self, kind: SiteKind, layer: int, module: Any, base: Callable[..., Any], args: tuple,
             kwargs: dict) -> Any:
        out = base(module, *args, **kwargs)
        if self.fake is not None:
            return out
        tup = isinstance(out, tuple)
        y = out[0] if tup else out
        if kind == SiteKind.mlp_out and layer in self.hm._experts and self.wants(SiteKind.moe_router, layer):
            self._routing(layer, module, base, args, kwargs)
        if self.hm.adapter.residual_scale is None:
            y = self.edit(kind, layer, y)
        else:  # the block adds y * scale: the site is that, and an edit goes back through the division
            scale = self.hm.adapter.residual_scale
            added = self.edit(kind, layer, y * scale)
            if self.by_layer.get((layer, kind)) or f"blocks.{layer}.{kind.value}" in self.deltas:
                y = added / mx.array(scale, dtype=added.dtype)
        return (y, *out[1:]) if tup else y

    def _attn_out(self, *a: Any) -> Any:
        return self._out(SiteKind.attn_out, *a)

    def _mlp_out(self, *a: Any) -> Any:
        return self._out(SiteKind.mlp_out, *a)

    def _heads(self, layer: int, module: Any, base: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        args, kwargs, z = _first(args, kwargs)
        ivs = self.heads.get(layer)
        d = self.deltas.get(f"blocks.{layer}.attn_heads") if self.deltas else None
        if ivs or d is not None or self.wants(SiteKind.attn_heads, layer):
            B, S, W = z.shape
            zz = z.reshape(B, S, self.hm.n_heads, W // self.hm.n_heads)
            for iv in ivs or ():
                head = self.hm._apply(zz[:, :, iv.head, :], [iv], self.positions, self.lengths)
                sel = (mx.arange(zz.shape[2]) == iv.head)[None, None, :, None]
                zz = mx.where(sel, head[:, :, None, :], zz)
            if d is not None:
                zz = zz + d
            self.keep(SiteKind.attn_heads, layer, zz)
            z = zz.reshape(B, S, W)
        return base(module, z, *args, **kwargs)

    def _mlp_hidden(self, layer: int, module: Any, base: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        args, kwargs, x = _first(args, kwargs)
        if self.fake is None:
            x = self.edit(SiteKind.mlp_hidden, layer, x)
        return base(module, x, *args, **kwargs)

    def _experts(self, layer: int, module: Any, base: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        x, inds = args[0], args[1]
        if self.fake is None:
            self.route = inds
            return base(module, *args, **kwargs)
        k, d = inds.shape[-1], x.shape[-1]
        if self.fake == "zero":
            return mx.zeros((*inds.shape, d), x.dtype)
        return mx.broadcast_to(mx.eye(k, d, dtype=x.dtype), (*inds.shape, d))

    def _routing(self, layer: int, module: Any, base: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        """Each token's expert weights, read off the family's own routing code: run the MoE block
        again with the experts answering zeros, then one-hot rows (expert slot j -> unit vector j).
        The block sums weight_j * expert_j, so the difference is each chosen expert's weight."""
        inds = self.route
        assert inds is not None
        try:
            self.fake = "zero"
            y0 = base(module, *args, **kwargs)
            self.fake = "onehot"
            y1 = base(module, *args, **kwargs)
        finally:
            self.fake = None
        y0, y1 = (y[0] if isinstance(y, tuple) else y for y in (y0, y1))
        k = inds.shape[-1]
        w = (y1 - y0)[..., :k].astype(mx.float32)
        dense = mx.zeros((*w.shape[:-1], self.hm._experts[layer]), mx.float32)
        inds = inds.reshape(w.shape).astype(mx.int32)  # some blocks route flattened tokens [B*S, k]
        self.keep(SiteKind.moe_router, layer, mx.put_along_axis(dense, inds, w, axis=-1))


def _first(args: tuple, kwargs: dict) -> tuple[tuple, dict, mx.array]:
    """(the other positional args, the keyword args, the first argument) of a wrapped call."""
    if args:
        return args[1:], kwargs, args[0]
    key = next(iter(kwargs))
    rest = dict(kwargs)
    return (), rest, rest.pop(key)


def _every(parts: list[mx.array | None]) -> list[mx.array]:
    """Every row's output (the rows ran alike: one has it, all have it)."""
    assert all(x is not None for x in parts), "rows of one batch returned different outputs"
    return [x for x in parts if x is not None]


def row_by_row(hm: HookedModel, batch: Batch, ivs: list[Intervention], capture: CaptureSpec | None,
               logits: Literal["all", "last", "none"],
               start: int, h: mx.array | None, stop: int | None, cancel: Callable[[], bool] | None,
               embedding_scale: float | None, on_layer: Callable[[int, int], None] | None) -> Any:
    """A left-padded batch for a family that cannot take one (learned positions, state-space
    layers): each row runs alone, unpadded, and the outputs are put back left-padded (the padding
    positions hold zeros; nothing reads them)."""
    from engine.hook_types import ForwardOutput

    S = batch.ids.shape[1]
    outs = []
    for b, (pad, n) in enumerate(zip(batch.pad, batch.lengths)):
        row = Batch(batch.ids[b:b + 1, pad:], [0], [n])
        mine = [iv.model_copy(update={"row": None}) if iv.row == b else iv for iv in ivs if iv.row in (None, b)]
        outs.append(hm.forward(row, capture=capture, interventions=mine, logits=logits, start_layer=start,
                               h=None if h is None else h[b:b + 1, pad:], stop_layer=stop, cancel=cancel,
                               embedding_scale=embedding_scale, on_layer=on_layer))

    def stitch(parts: list[mx.array], axes: tuple[int, ...]) -> mx.array:
        rows = []
        for part in parts:
            widths = [(0, 0)] * part.ndim
            for ax in axes:
                if part.shape[ax] != S:  # a full-length axis (not a selection of positions)
                    widths[ax] = (S - part.shape[ax], 0)
            rows.append(mx.pad(part, widths) if any(w != (0, 0) for w in widths) else part)
        return mx.concatenate(rows, axis=0)

    full = capture is None or capture.positions == "all"
    caps = {}
    for key in outs[0].captures:
        pattern = key.endswith(SiteKind.attn_pattern.value)
        axes = ((2, 3) if full else (3,)) if pattern else ((1,) if full else ())
        caps[key] = stitch([o.captures[key] for o in outs], axes)
    lg = None if outs[0].logits is None else stitch(_every([o.logits for o in outs]), (1,) if logits == "all" else ())
    resid = None if outs[0].resid is None else stitch(_every([o.resid for o in outs]), (1,))
    return ForwardOutput(lg, caps, resid)
