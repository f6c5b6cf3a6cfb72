"""The hooked forward: mlx-lm's own model computes, lazarus observes and intervenes.

A pass calls the family's own ``Model.__call__``; thin wrappers (``engine.hook_points``)
around each block, its attention and MLP modules, the attention output projection, the MLP
down projection and the routed experts report to the pass, which reads and edits the values
there. Masks, positions, sliding/global layers and embedding scales are the family's own.

Typed sites per layer (``blocks.{L}.{kind}``):

- ``resid_pre``   the residual stream entering block L            [B, S, hidden]
- ``attn_out``    what attention adds to the residual              [B, S, hidden]
- ``mlp_out``     what the MLP adds to the residual                [B, S, hidden]
- ``resid_post``  the residual stream leaving block L ("layer L output") [B, S, hidden]
- ``attn_pattern`` softmax attention probabilities                 [B, heads, S, K]
- ``mlp_hidden``  the MLP's hidden activation (input of the down projection) [B, S, intermediate]
- ``attn_heads``  each head's output (input of the output projection) [B, S, heads, head_dim]
- ``moe_router``  each token's expert weights (0 = expert not chosen) [B, S, experts]
- ``block_out``   what block L adds to the residual (resid_post - resid_pre): whole-layer ablation [B, S, hidden]

Which sites a family has, and what attn_out means where a post-norm sits outside attention,
is in ``engine.models.families`` (docs/models.md). Interventions are data
(``Intervention``): zero, mean, scale, add, replace, on a site, optionally one head (the
head's output before the output projection), one prompt position, one batch row. They stay
on for every generated token. With no intervention a pass equals the model's own forward
(``lazarus --batch verify`` checks it per model).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import mlx.core as mx

from engine import hook_points
from engine.errors import InputError
from engine.hook_pass import Pass as _Pass
from engine.hook_pass import Stop as _Stop
from engine.hook_pass import row_by_row
from engine.hook_types import (
    Batch,
    CaptureSpec,
    ForwardOutput,
    Intervention,
    InterventionOp,
    PositionSpec,
    Site,
    SiteKind,
)
from engine.kv_cache import KVState
from engine.layer_lists import check_layer
from engine.limits import check_prompt
from engine.models import LoadedModel
from engine.models.adapter import get_path

__all__ = ["Batch", "CaptureSpec", "ForwardOutput", "HookedModel", "Intervention", "InterventionOp", "KVState",
           "PositionSpec", "Site", "SiteKind"]


class HookedModel:
    """Runs a ``LoadedModel``'s own forward with captures and interventions."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.model = lm.model
        self.adapter = lm.adapter
        self.blocks = lm.adapter.blocks(lm.model)
        self.n_layers = len(self.blocks)
        inst = _install(lm)
        self._owner, self._avail, self._layer_kinds = inst["owner"], inst["avail"], inst["kinds"]
        self._experts: dict[int, int] = inst["experts"]
        self.n_heads = int(lm.adapter.dims.get("num_heads") or lm.info.num_heads)
        self._factors: dict[float | None, float | None] = {}  # embedding scale -> factor on the family's
        dims = lm.adapter.dims
        self._group_axis = lm.adapter.spec.grouped_scores and dims.get("num_heads") != dims.get("num_kv_heads")
        self._takes_embeddings = "input_embeddings" in inspect.signature(type(lm.model).__call__).parameters

    # -- what this family offers ---------------------------------------------------------------
    @property
    def site_kinds(self) -> tuple[SiteKind, ...]:
        """The site kinds this model has at one layer at least."""
        return tuple(k for k in SiteKind if self._avail[k])

    @property
    def state_layers(self) -> bool:
        """Some layers keep a recurrent state (state-space, convolution) instead of keys/values, so
        per-layer key/value reuse (batched ablation and steering sweeps) does not apply."""
        return any(kind is not None for kind in self._layer_kinds)

    def has_site(self, kind: SiteKind, layer: int) -> bool:
        return layer in self._avail[kind]

    def _missing(self, kind: SiteKind, layer: int | None = None) -> InputError:
        where = "" if layer is None else f" at layer {layer}"
        note = self.adapter.spec.note
        return InputError(f"{self.adapter.model_type} has no {kind.value} site{where}" + (f" ({note})" if note else ""))

    # -- validation ------------------------------------------------------------------------
    def check_layer(self, layer: int) -> int:
        """The one layer rule (``engine.layer_lists.check_layer``: -1 = the last layer)."""
        return check_layer(layer, self.n_layers)

    def check_interventions(self, ivs: Iterable[Intervention], batch_size: int) -> list[Intervention]:
        out = []
        info = self.lm.info
        for iv in ivs:
            self.check_layer(iv.site.layer)
            if iv.site.layer < 0:
                iv = iv.model_copy(update={"site": Site(layer=iv.site.layer % self.n_layers, kind=iv.site.kind)})
            kind = iv.site.kind
            if kind in (SiteKind.attn_pattern, SiteKind.moe_router):
                raise InputError(f"interventions on {kind.value} are not supported; intervene on attn_out (per head) "
                                 "or mlp_out")
            if kind == SiteKind.attn_heads:
                raise InputError("intervene on a head through attn_out with a head number")
            if iv.head is not None and kind != SiteKind.attn_out:
                raise InputError("a head can only be chosen for attn_out interventions")
            if iv.head is not None and not 0 <= iv.head < self.n_heads:
                raise InputError(f"head {iv.head} out of range (0-{self.n_heads - 1})")
            need = SiteKind.attn_heads if iv.head is not None else kind
            if not self.has_site(need, iv.site.layer):
                raise self._missing(need, iv.site.layer)
            if iv.row is not None and not 0 <= iv.row < batch_size:
                raise InputError(f"batch row {iv.row} out of range (batch of {batch_size})")
            if iv.op in ("mean", "add", "replace") and iv.vector is None:
                raise InputError(f"intervention {iv.op} on {iv.site} needs a vector")
            if iv.vector is not None:
                width = (info.head_dim if iv.head is not None
                         else info.intermediate_size if kind == SiteKind.mlp_hidden else info.hidden_size)
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
        deltas: dict[str, mx.array] | None = None,
    ) -> ForwardOutput:
        """Run blocks ``start_layer..stop_layer-1`` on ``batch`` (or on residual ``h`` entering ``start_layer``).

        ``kv`` (optional) is extended in place; ``logits`` picks which positions get unembedded.
        ``cancel`` is checked between layers. With ``on_layer(layer, n_layers)`` each layer is
        evaluated as it finishes (live progress; cancellation then takes effect mid-pass).
        ``embedding_scale`` replaces the family's own embedding scale for this pass.
        ``deltas`` maps site names (``blocks.L.kind``; kinds resid_pre, resid_post, block_out, attn_out, mlp_out,
        mlp_hidden, attn_heads [B, S, heads, head_dim], attn_pattern) to arrays added there: zeros
        leave the pass unchanged, and ``mx.grad`` with respect to them is the gradient at each site.
        """
        B, S = batch.ids.shape
        ivs = self.check_interventions(interventions, B)
        why = self.adapter.spec.no_padding
        if why and any(batch.pad):
            if deltas:
                raise InputError(f"{self.adapter.model_type}: gradients need prompts of one length ({why})")
            if kv is not None:
                raise InputError(f"{self.adapter.model_type}: prompts of different lengths cannot share a cached batch "
                                 f"({why}); run them one at a time")
            return row_by_row(self, batch, ivs, capture, logits, start_layer, h, stop_layer, cancel, embedding_scale,
                              on_layer)
        stop = self.n_layers if stop_layer is None else stop_layer
        if start_layer >= stop:
            return ForwardOutput(None, {}, h)
        cap_layers = set(range(self.n_layers) if capture is None or capture.layers is None else
                         (self.check_layer(x) for x in capture.layers)) if capture else set()
        cap_kinds = set(capture.kinds) if capture else set()
        for kind in cap_kinds:
            if not self._avail[kind]:
                raise self._missing(kind)
        offset = kv.offset if kv is not None else 0
        if S > 1 and h is None:  # a prompt (not one decoding step): will it fit?
            check_prompt(self.lm, B, S, offset + S, len(cap_layers) if SiteKind.attn_pattern in cap_kinds else 0)
        factor, extra = self._embedding(batch, embedding_scale) if h is None and start_layer == 0 else (None, {})
        p = _Pass(self, batch, ivs, capture, cap_layers, cap_kinds, start_layer, stop, h, factor, cancel, on_layer,
                  offset, deltas)
        caches = self._caches(kv, batch, offset, start_layer, stop)
        prev, hook_points.ACTIVE = hook_points.ACTIVE, p
        try:
            self.model(batch.ids, cache=caches, **extra)
            raise RuntimeError(f"{self.adapter.model_type}: the model's forward never reached layer {stop - 1}")
        except _Stop as done:
            out_h = done.h
        finally:
            hook_points.ACTIVE = prev
        self._check_reached(p, ivs, cap_kinds, cap_layers, start_layer, stop)
        if kv is not None and stop == self.n_layers:
            kv.offset = offset + S
        out_logits = None
        if logits != "none" and stop == self.n_layers:
            assert out_h is not None, "the last block returns its residual"
            hs = out_h[:, -1:, :] if logits == "last" else out_h
            out_logits = self.adapter.lens_logits(self.model, hs)
        return ForwardOutput(out_logits, p.captures, out_h)

    def _embedding(self, batch: Batch, embedding_scale: float | None) -> tuple[float | None, dict[str, Any]]:
        """(factor the wrappers apply to block 0's input, extra arguments of the family's forward) for
        ``embedding_scale`` in place of the family's own: the scaled embeddings themselves where the
        family takes them, exactly as reference_logits runs the model."""
        factor = self._factors.get(embedding_scale)
        if factor is None and embedding_scale not in self._factors:
            factor = self._factors[embedding_scale] = self.adapter.embedding_factor(self.model, embedding_scale)
        if factor is not None and self._takes_embeddings:
            emb = self.adapter.embed_tokens(self.model)(batch.ids)
            return None, {"input_embeddings": emb * mx.array(factor, dtype=emb.dtype)}
        return factor, {}

    def _check_reached(self, p: _Pass, ivs: list[Intervention], kinds: set[SiteKind], layers: set[int],
                       start: int, stop: int) -> None:
        """Every requested site that the family has must have been reached by its forward: a module
        the table names but the family's code never calls would otherwise drop an intervention silently."""
        want = {(layer, k) for k in kinds for layer in layers if start <= layer < stop and layer in self._avail[k]}
        want |= {(iv.site.layer, SiteKind.attn_heads if iv.head is not None else iv.site.kind) for iv in ivs
                 if start <= iv.site.layer < stop}
        missed = sorted((layer, k.value) for layer, k in want - p.reached)
        if missed:
            layer, kind = missed[0]
            raise RuntimeError(f"{self.adapter.model_type}: blocks.{layer}.{kind} was never reached by the model's "
                               "forward (the module the family table names is not the one its code calls)")

    def _caches(self, kv: KVState | None, batch: Batch, offset: int, start: int, stop: int) -> list[Any] | None:
        """The cache list handed to the family's forward: a view per attention layer (the real
        cache for layers that run, a stand-in at ``offset`` for those that do not), so masks carry
        the padding; the real cache for state-space layers."""
        if kv is None:
            if not any(batch.pad):
                return None  # exactly the model's own path
            return [hook_points.LayerView(None, 0, batch.pad, self._group_axis) if k is None else None
                    for k in self._layer_kinds]
        if any(k is not None for k in self._layer_kinds):
            kv.use_family_caches(self._layer_kinds, self.model.make_cache)
        return [kv.caches[i] if k is not None else
                hook_points.LayerView(kv.caches[i] if start <= i < stop else None, offset, kv.pad, self._group_axis)
                for i, k in enumerate(self._layer_kinds)]

    # -- pieces ----------------------------------------------------------------------------
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
                new = x + iv.array(x.dtype) * iv.factor
            else:  # mean, replace
                new = mx.broadcast_to(iv.array(x.dtype), x.shape)
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

    @staticmethod
    def _row_delta(ivs: list[Intervention], batch: int, dtype: Any) -> mx.array:
        """[B, 1, W]: the sum of row-wise add interventions (factor * vector on its row) in a fixed
        number of ops however many rows (a row with one intervention gets exactly factor * vector)."""
        factors = mx.array([iv.factor for iv in ivs], dtype=dtype)[:, None]  # rounded as ``x * iv.factor`` rounds it
        added = mx.stack([iv.array(dtype) for iv in ivs]) * factors  # [N, W]
        rows = mx.array([iv.row for iv in ivs], dtype=mx.int32)
        return mx.zeros((batch, added.shape[1]), dtype).at[rows].add(added)[:, None, :]

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
            return value[:, -1:]
        idx = _padded_index(capture.positions, batch)
        if all(row == idx[0] for row in idx):  # same positions in every row (no padding): one slice/take
            first = idx[0]
            if len(first) == 1:
                return value[:, first[0]:first[0] + 1]
            return mx.take(value, mx.array(first), axis=1)
        ix = mx.array(idx).reshape(len(idx), -1, *([1] * (value.ndim - 2)))
        return mx.take_along_axis(value, ix, axis=1)


def _install(lm: LoadedModel) -> dict[str, Any]:
    """Wrap the model's modules once (shared by every HookedModel of this model)."""
    model = lm.model
    done = model.__dict__.get("_lz_install")
    if done is not None:
        return done
    ad = lm.adapter
    owner = object()
    avail: dict[SiteKind, set[int]] = {k: set() for k in SiteKind}
    observed = hook_points.patch_attention_modules(model)
    experts: dict[int, int] = {}
    for i, (block, parts) in enumerate(zip(ad.blocks(model), ad.parts)):
        hook_points.wrap(block, "block", i, owner)
        avail[SiteKind.resid_pre].add(i)
        avail[SiteKind.resid_post].add(i)
        avail[SiteKind.block_out].add(i)
        attn = get_path(block, parts.attn) if parts.attn else None
        mlp = get_path(block, parts.mlp) if parts.mlp else None
        at = None if parts.attn_out_at == "-" else get_path(block, parts.attn_out_at) if parts.attn_out_at else attn
        if at is not None:
            hook_points.wrap(at, "attn_out", i, owner)
            avail[SiteKind.attn_out].add(i)
        if attn is not None and type(attn).__module__ in observed:
            avail[SiteKind.attn_pattern].add(i)
        if attn is not None and parts.o_proj:
            hook_points.wrap(attn[parts.o_proj], "heads", i, owner)
            avail[SiteKind.attn_heads].add(i)
        mt = None if parts.mlp_out_at == "-" else get_path(block, parts.mlp_out_at) if parts.mlp_out_at else mlp
        if mt is not None:
            hook_points.wrap(mt, "mlp_out", i, owner)
            avail[SiteKind.mlp_out].add(i)
        if mlp is not None and parts.down:
            hook_points.wrap(mlp[parts.down], "mlp_hidden", i, owner)
            avail[SiteKind.mlp_hidden].add(i)
        if parts.experts and mt is mlp and mlp is not None:
            hook_points.wrap(mlp[parts.experts], "experts", i, owner)
            experts[i] = hook_points.n_experts(mlp[parts.experts])
            avail[SiteKind.moe_router].add(i)
    done = {"owner": owner, "avail": avail, "experts": experts,
            "kinds": hook_points.attention_layers(model, len(ad.parts))}
    object.__setattr__(model, "_lz_install", done)
    return done


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
