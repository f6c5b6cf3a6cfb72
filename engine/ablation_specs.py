"""An ablation study's sweep points: validation, expansion of a request, their sites and
interventions, and the reference mean activations ``--method mean`` writes in (engine.ablation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import mlx.core as mx

from engine.errors import InputError
from engine.hooks import Batch, CaptureSpec, HookedModel, Intervention, Site, SiteKind
from engine.layer_lists import check_layer
from engine.results.ablation import AblationRequest, AblationSpec, ComponentType

SiteKey = tuple[int, str, "int | None"]  # (layer, "attn_out"|"mlp_out"|"block_out", head)


def check_spec(spec: AblationSpec, n_layers: int, n_heads: int) -> AblationSpec:
    """``spec`` validated against the model, its layers resolved by the one layer rule (-1 = last)."""
    layers = [check_layer(layer, n_layers) for layer in spec.layers]
    if spec.components is not None:
        if len(spec.components) != len(spec.layers):
            raise InputError("components: one per layer")
        if spec.heads is not None:
            raise InputError("a mixed-component set does not take heads")
    if spec.heads is not None:
        if spec.component != ComponentType.ATTENTION:
            raise InputError(f"heads are attention heads: use component attention, not {spec.component.value}")
        if not spec.heads:
            raise InputError("empty head list")
        for head in spec.heads:
            if not 0 <= head < n_heads:
                raise InputError(f"head {head} out of range (model has {n_heads} heads: 0-{n_heads - 1})")
    return spec if layers == spec.layers else spec.model_copy(update={"layers": layers})


def expand_specs(req: AblationRequest, n_layers: int, n_heads: int) -> list[AblationSpec]:
    """The sweep points a request asks for, validated against the model."""
    if req.ablations is not None:
        specs = list(req.ablations)
    else:
        layers = list(range(n_layers)) if req.layers is None else list(req.layers)
        if not layers:
            raise InputError("empty layer list")
        if req.mode == "multi":
            specs = [AblationSpec(layers=sorted(set(layers)), component=req.component, heads=req.heads)]
        elif req.mode == "grid":
            if req.heads is not None:
                raise InputError("the layer x component grid does not take heads")
            specs = [AblationSpec(layers=[x], component=c) for x in layers for c in ComponentType
                     if c != ComponentType.BLOCK]
        else:
            specs = [AblationSpec(layers=[x], component=req.component, heads=req.heads) for x in layers]
    return [check_spec(s, n_layers, n_heads) for s in specs]


def spec_sites(spec: AblationSpec) -> list[SiteKey]:
    sites: list[SiteKey] = []
    comps = spec.components or [spec.component] * len(spec.layers)
    for layer, comp in zip(spec.layers, comps):
        if spec.heads is not None:
            sites += [(layer, "attn_out", h) for h in spec.heads]
            continue
        if comp in (ComponentType.ATTENTION, ComponentType.BOTH) and (layer, "attn_out", None) not in sites:
            sites.append((layer, "attn_out", None))
        if comp in (ComponentType.MLP, ComponentType.BOTH) and (layer, "mlp_out", None) not in sites:
            sites.append((layer, "mlp_out", None))
        if comp == ComponentType.BLOCK and (layer, "block_out", None) not in sites:
            sites.append((layer, "block_out", None))
    return sites


def spec_interventions(spec: AblationSpec, method: str, means: dict[SiteKey, list[float]] | None,
                       row: int | None = None) -> list[Intervention]:
    out = []
    for key in spec_sites(spec):
        layer, kind, head = key
        vector = None
        if method == "mean":
            if means is None or key not in means:
                raise InputError("mean ablation needs reference prompts")
            vector = means[key]
        out.append(Intervention(site=Site(layer=layer, kind=SiteKind(kind)), op=method, head=head, row=row,
                                vector=vector))
    return out


# -- mean activations ------------------------------------------------------------------------
def mean_activations(hm: HookedModel, reference_rows: Sequence[Sequence[int]], sites: set[SiteKey],
                     cancel: Callable[[], bool] | None = None) -> dict[SiteKey, list[float]]:
    """Mean of each site's activation over every position of every reference prompt."""
    if not reference_rows:
        raise InputError("mean ablation needs reference prompts (--reference)")
    layers = sorted({s[0] for s in sites})
    sums: dict[SiteKey, mx.array] = {}
    count = 0
    for ids in reference_rows:
        kinds = {SiteKind(kind) if head is None else SiteKind.attn_heads for _, kind, head in sites}
        out = hm.forward(Batch.from_lists([ids]), logits="none", cancel=cancel,
                         capture=CaptureSpec(kinds=tuple(kinds), layers=layers))
        for key in sites:
            layer, kind, head = key
            if head is None:
                val = out.captures[f"blocks.{layer}.{kind}"][0].astype(mx.float32).sum(axis=0)
            else:  # the head's output before the output projection
                val = out.captures[f"blocks.{layer}.attn_heads"][0, :, head, :].astype(mx.float32).sum(axis=0)
            sums[key] = val if key not in sums else sums[key] + val
        mx.eval(*sums.values())
        count += len(ids)
    return {k: cast(list[float], (v / count).tolist()) for k, v in sums.items()}  # 1-D: a list of floats


