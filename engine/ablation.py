"""Ablation studies: interventions in the hooked forward (never weight edits), batched and prefix-reusing.

A study is a list of *sweep points* (``AblationSpec``: some layers, a component or some heads),
each run on one or more prompts with greedy generation and the KV cache.

How a sweep runs (``strategy="batched"``):

1. The prompts of equal token length form one group (no padding, so batched rows compute what a
   lone run computes). For each group, one un-ablated forward pass over the prompt fills a KV
   cache and keeps the residual entering every layer at which some sweep point starts.
2. Every sweep point becomes one row of ONE batch (plus a baseline row per prompt); each row
   carries its own ablation as ``Intervention(row=r)``. Below a row's first ablated layer its
   prompt activations equal the baseline's, so they are not recomputed: the prompt is pushed
   through the stack one layer at a time, and a row joins the batch at its first ablated layer,
   starting from the stored baseline residual; below that layer its KV cache is the baseline's.
3. All rows then generate together, one batched forward per token, with the ablations on.

``strategy="sequential"`` runs every sweep point alone (one full generation each, no reuse); it is
the reference that the batched path must reproduce token for token, and the benchmark baseline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import mlx.core as mx

from engine.criteria import make_criterion
from engine.errors import Cancelled, InputError
from engine.generate import RowOutput, collect_step, generate_ids
from engine.hooks import (
    Batch,
    CaptureSpec,
    HookedModel,
    Intervention,
    Site,
    SiteKind,
)
from engine.layer_lists import check_layer
from engine.models import LoadedModel
from engine.results.ablation import (
    AblationOutput,
    AblationPoint,
    AblationRequest,
    AblationResult,
    AblationSpec,
    ComponentType,
)

Progress = Callable[[str, int, int, str, Any], None]
SiteKey = tuple[int, str, "int | None"]  # (layer, "attn_out"|"mlp_out", head)


# -- sweep points ----------------------------------------------------------------------------
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
    return {k: (v / count).tolist() for k, v in sums.items()}


# -- the batched core -------------------------------------------------------------------------
class _LayerCache:
    """A KV cache for one layer that grows by concatenation (no 256-step buffer to copy around)."""

    def __init__(self, keys: mx.array | None = None, values: mx.array | None = None) -> None:
        self.keys, self.values = keys, values
        self.offset = 0 if keys is None else keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        self.offset += keys.shape[2]
        return self.keys, self.values


class _KV:
    """What ``HookedModel.forward`` reads from a ``KVState``: per-layer caches, padding, offset."""

    def __init__(self, n_layers: int, rows: int, offset: int = 0) -> None:
        self.caches: list[Any] = [_LayerCache() for _ in range(n_layers)]
        self.pad = [0] * rows
        self.offset = offset


def _staggered_pass(hm: HookedModel, ids: mx.array, kv: _KV, starts: Sequence[int], ref: Sequence[int],
                    ivs: Sequence[Sequence[Intervention]], row_copy: Callable[[Intervention, int], Intervention],
                    cancel: Callable[[], bool] | None, on_layer: Callable[[int, int], None] | None) -> mx.array:
    """One pass of ``ids`` [R, T] through the stack where row r is computed only from layer
    ``starts[r]`` on; below that it equals row ``ref[r]`` (which starts at 0), whose residual it
    takes when it joins and whose new keys/values fill its cache. Extends ``kv`` by T tokens.
    Returns the final residual of every row [R, T, D]."""
    n = hm.n_layers
    R, T = ids.shape
    offset = kv.offset
    everyone = list(range(R))
    active: list[int] = [r for r in range(R) if starts[r] == 0]
    pos = {r: j for j, r in enumerate(active)}
    h_act: mx.array | None = None
    for layer in range(n):
        join = [r for r in range(R) if starts[r] == layer and layer > 0]
        if join:
            assert h_act is not None
            h_new = h_act[mx.array([pos[ref[r]] for r in join], dtype=mx.int32)]
            h_act = mx.concatenate([h_act, h_new], axis=0)
            for r in join:
                pos[r] = len(active)
                active.append(r)
        A = len(active)
        full = kv.caches[layer]
        tmp = _KV(n, A, offset)
        if offset:
            k_old, v_old = full.keys, full.values
            if active != everyone:
                sel = mx.array(active, dtype=mx.int32)
                k_old, v_old = k_old[sel], v_old[sel]
            tmp.caches[layer] = _LayerCache(k_old, v_old)
        layer_ivs = [row_copy(iv, j) for j, r in enumerate(active) for iv in ivs[r] if iv.site.layer == layer]
        ids_act = ids if active == everyone else ids[mx.array(active, dtype=mx.int32)]
        out = hm.forward(Batch(ids_act, [0] * A, [offset + T] * A), h=h_act, start_layer=layer,
                         stop_layer=layer + 1, kv=tmp, logits="none",  # type: ignore[arg-type]
                         interventions=layer_ivs, cancel=cancel)
        h_act = out.resid
        tc = tmp.caches[layer]
        k_new, v_new = tc.keys[..., offset:offset + T, :], tc.values[..., offset:offset + T, :]
        src = [pos[r] if r in pos else pos[ref[r]] for r in range(R)]
        if src != everyone:
            sel = mx.array(src, dtype=mx.int32)
            k_new, v_new = k_new[sel], v_new[sel]
        full.update_and_fetch(k_new, v_new)
        if on_layer:
            mx.eval(h_act, full.keys, full.values)
            on_layer(layer + 1, n)
    kv.offset = offset + T
    assert h_act is not None
    src = [pos[r] if r in pos else pos[ref[r]] for r in range(R)]
    return h_act if src == everyone else h_act[mx.array(src, dtype=mx.int32)]


def run_group_batched(hm: HookedModel, prompt_ids: Sequence[Sequence[int]],
                      rows: Sequence[tuple[int, list[Intervention]]], max_tokens: int, *,
                      stop_ids: Sequence[int] = (), cancel: Callable[[], bool] | None = None,
                      on_layer: Callable[[int, int], None] | None = None,
                      on_step: Callable[[int, int], None] | None = None
                      ) -> tuple[list[RowOutput], list[RowOutput]]:
    """Greedy generation for every row at once; row = (prompt index, its interventions, ``row=None``).

    Returns (baseline output per prompt, output per row). All prompts must have one token length.
    One batch holds a baseline row per prompt and every ablated row. A row is computed only from
    its first intervened layer on while its tokens so far equal its baseline's (prompt included):
    below that layer it would compute exactly what the baseline computes, so it takes the
    baseline's residual and keys/values instead. Once its generated token differs, it runs the
    whole stack from then on.
    """
    if max_tokens < 1:
        raise InputError("max tokens must be at least 1")
    n = hm.n_layers
    S = len(prompt_ids[0])
    if any(len(p) != S for p in prompt_ids):
        raise ValueError("run_group_batched needs prompts of one token length")
    P = len(prompt_ids)
    all_rows = [(p, []) for p in range(P)] + [(p, list(ivs)) for p, ivs in rows]
    Rt = len(all_rows)
    ref = [p for p, _ in all_rows]  # baseline row of prompt p is row p
    ivs = [r[1] for r in all_rows]
    first = [0 if r < P else min((iv.site.layer for iv in ivs[r]), default=n) for r in range(Rt)]
    diverged = [False] * Rt
    # HookedModel caches intervention vectors by id(): reuse one copy per (intervention, batch row)
    # and keep it alive for the whole call, and drop entries of earlier calls whose ids may be reused
    hm._vec_cache.clear()
    copies: dict[tuple[int, int], Intervention] = {}

    def row_copy(iv: Intervention, row: int) -> Intervention:
        key = (id(iv), row)
        if key not in copies:
            copies[key] = iv.model_copy(update={"row": row})
        return copies[key]

    kv = _KV(n, Rt)
    ids = mx.array([list(prompt_ids[p]) for p, _ in all_rows], dtype=mx.int32)
    h = _staggered_pass(hm, ids, kv, first, ref, ivs, row_copy, cancel, on_layer)
    stops = set(stop_ids)
    outs = [RowOutput([], "max_tokens") for _ in range(Rt)]
    done = [False] * Rt
    for step in range(max_tokens):
        logits = hm.adapter.lens_logits(hm.model, h[:, -1:, :])[:, -1, :]
        nxt = mx.argmax(logits, axis=-1)
        toks = nxt.tolist()
        for r in range(P, Rt):
            diverged[r] = diverged[r] or toks[r] != toks[ref[r]]
        collect_step(outs, done, toks, stops)
        if on_step:
            on_step(step + 1, max_tokens)
        if all(done) or step == max_tokens - 1:
            break
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        starts = [0 if diverged[r] else first[r] for r in range(Rt)]
        h = _staggered_pass(hm, nxt.astype(mx.int32)[:, None], kv, starts, ref, ivs, row_copy, cancel, None)
    return outs[:P], outs[P:]


# -- the study --------------------------------------------------------------------------------
def _diverged_at(base: list[int], ids: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(base, ids)):
        if a != b:
            return i
    return None if len(base) == len(ids) else min(len(base), len(ids))


def _output(lm: LoadedModel, prompt: str, o: RowOutput, base: RowOutput | None,
            judge: Callable[[str], bool] | None) -> AblationOutput:
    tok = lm.tokenizer
    ids = o.ids[:-1] if o.stopped == "eos" and o.ids and o.ids[-1] in tok.eos_ids else list(o.ids)
    text = tok.decode(ids)
    return AblationOutput(prompt=prompt, text=text, token_ids=list(o.ids), stopped=o.stopped,
                          passed=judge(text) if judge is not None else None,
                          diverged_at=_diverged_at(base.ids, o.ids) if base is not None else None)


def run_ablation(lm: LoadedModel, req: AblationRequest, cancel: Callable[[], bool] | None = None,
                 progress: Progress | None = None, *, strategy: str = "batched",
                 criterion_fn: Callable[[str], bool] | None = None, chunk_size: int | None = None
                 ) -> AblationResult:
    """Run the study ``req`` asks for. ``criterion_fn`` (Python API) overrides ``req.criterion``.

    ``chunk_size`` splits the sweep into batches of that many points (the TUI fills its grid as
    each finishes; ``progress("sweep", done, total, msg, partial_points)``)."""
    t0 = time.perf_counter()
    tok = lm.tokenizer
    hm = HookedModel(lm)
    info = lm.info
    specs = expand_specs(req, hm.n_layers, info.num_heads)
    notes: list[str] = []
    use_chat = req.chat and tok.chat_template is not None
    if req.chat and tok.chat_template is None:
        notes.append("model has no chat template: raw prompts used")
    # prompts and their judges
    if req.prompts:
        cases = [(c.prompt, c.expected) for c in req.prompts]
        for p, e in cases:
            if p == "" or e == "":
                raise InputError("each --prompts entry needs a prompt and an expected answer (prompt:expected)")
        judges: list[Callable[[str], bool] | None] = [(lambda t, e=e: e in t) for _, e in cases]
        description = "expected substring per prompt"
    else:
        if not req.prompt:
            raise InputError("empty prompt")
        cases = [(req.prompt, "")]
        if criterion_fn is not None:
            judges, description = [criterion_fn], "custom criterion"
        elif req.criterion:
            fn, description = make_criterion(req.criterion)
            judges = [fn]
        else:
            judges, description = [None], "none"
    prompts = [p for p, _ in cases]
    ids = [tok.prepare(p, chat=use_chat) for p in prompts]
    means = None
    if req.method == "mean":
        if not req.reference:
            raise InputError("mean ablation needs reference prompts (--reference \"p1|p2\" or @file)")
        if any(r == "" for r in req.reference):
            raise InputError("empty reference prompt")
        sites = {s for spec in specs for s in spec_sites(spec)}
        means = mean_activations(hm, [tok.prepare(r, chat=use_chat) for r in req.reference], sites, cancel)
    spec_ivs = [spec_interventions(s, req.method, means) for s in specs]
    stop_ids = tok.eos_ids
    base_out: list[RowOutput | None] = [None] * len(prompts)
    outs: list[list[RowOutput | None]] = [[None] * len(prompts) for _ in specs]

    def step_cb(i: int, total: int) -> None:
        if progress:
            progress("token", i, total, "ablate: generating", None)

    def layer_cb(i: int, total: int) -> None:
        if progress:
            progress("layer", i, total, "ablate: prompt through the stack", None)

    def build_points(upto: int) -> list[AblationPoint]:
        pts = []
        for si in range(upto):
            pts.append(AblationPoint(spec=specs[si], outputs=[
                _output(lm, prompts[pi], outs[si][pi], base_out[pi], judges[pi])  # type: ignore[arg-type]
                for pi in range(len(prompts))]))
        return pts

    if strategy == "batched" and hm.state_layers:
        strategy = "sequential"  # the batched sweep reuses per-layer keys/values, which state-space layers lack
        notes.append(f"{info.model_type}: state-space layers keep no per-layer keys/values to share, "
                     "so sweep points run one by one")
    if strategy == "sequential":
        total = len(prompts) * (1 + len(specs))
        done = 0
        for pi, row in enumerate(ids):
            base_out[pi] = generate_ids(hm, [row], req.max_tokens, stop_ids=stop_ids, cancel=cancel)[0]
            done += 1
            for si, ivs in enumerate(spec_ivs):
                outs[si][pi] = generate_ids(hm, [row], req.max_tokens, interventions=ivs, stop_ids=stop_ids,
                                            cancel=cancel)[0]
                done += 1
                if progress:
                    progress("sweep", done, total, "ablate: sequential runs", None)
    elif strategy == "batched":
        groups: dict[int, list[int]] = {}
        for pi, row in enumerate(ids):
            groups.setdefault(len(row), []).append(pi)
        size = chunk_size or max(1, len(specs))
        chunks = [list(range(i, min(i + size, len(specs)))) for i in range(0, len(specs), size)] or [[]]
        done = 0
        for ci, chunk in enumerate(chunks):
            for members in groups.values():
                rows: list[tuple[int, list[Intervention]]] = []
                keys: list[tuple[int, int]] = []
                for local, pi in enumerate(members):
                    for si in chunk:
                        rows.append((local, spec_ivs[si]))
                        keys.append((si, pi))
                base_res, res = run_group_batched(hm, [ids[pi] for pi in members], rows, req.max_tokens,
                                                  stop_ids=stop_ids, cancel=cancel, on_layer=layer_cb,
                                                  on_step=step_cb)
                if ci == 0:
                    for pi, o in zip(members, base_res):
                        base_out[pi] = o
                for (si, pi), o in zip(keys, res):
                    outs[si][pi] = o
            done += len(chunk)
            if progress:
                progress("sweep", done, len(specs), "ablate: sweep points", build_points(done))
    else:
        raise InputError(f"unknown strategy {strategy!r} (batched or sequential)")
    baseline = [_output(lm, prompts[pi], base_out[pi], None, judges[pi])  # type: ignore[arg-type]
                for pi in range(len(prompts))]
    return AblationResult(model_id=info.model_id, num_layers=hm.n_layers, request=req, chat_template_used=use_chat,
                          notes=notes, criterion_description=description, baseline=baseline,
                          points=build_points(len(specs)), strategy=strategy,
                          elapsed_s=time.perf_counter() - t0)
