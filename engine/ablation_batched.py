"""The batched ablation sweep: every sweep point one row of one batch, each row computed only from
its first ablated layer up while its tokens equal its baseline's (see engine.ablation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mlx.core as mx

from engine.errors import Cancelled, InputError
from engine.generate import RowOutput, collect_step
from engine.hooks import Batch, HookedModel, Intervention, KVState
from engine.mx_values import int_list

RowCopy = Callable[[int, int, int], Intervention]  # (row, index in its interventions, batch row) -> copy


def _staggered_pass(hm: HookedModel, ids: mx.array, kv: KVState, starts: Sequence[int], ref: Sequence[int],
                    ivs: Sequence[Sequence[Intervention]], row_copy: RowCopy,
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
        rows = kv.select_rows(active, layers=[layer], concat=True)  # the active rows' keys/values so far
        layer_ivs = [row_copy(r, k, j) for j, r in enumerate(active) for k, iv in enumerate(ivs[r])
                     if iv.site.layer == layer]
        ids_act = ids if active == everyone else ids[mx.array(active, dtype=mx.int32)]
        out = hm.forward(Batch(ids_act, [0] * A, [offset + T] * A), h=h_act, start_layer=layer,
                         stop_layer=layer + 1, kv=rows, logits="none", interventions=layer_ivs, cancel=cancel)
        h_act = out.resid
        k_new, v_new = rows.keys_values(layer, offset, offset + T)
        src = [pos[r] if r in pos else pos[ref[r]] for r in range(R)]
        if src != everyone:
            sel = mx.array(src, dtype=mx.int32)
            k_new, v_new = k_new[sel], v_new[sel]
        kv.extend(layer, k_new, v_new)
        if on_layer:
            mx.eval(h_act, *kv.keys_values(layer))
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
    all_rows: list[tuple[int, list[Intervention]]] = [(p, []) for p in range(P)] + [(p, list(v)) for p, v in rows]
    Rt = len(all_rows)
    ref = [p for p, _ in all_rows]  # baseline row of prompt p is row p
    ivs = [r[1] for r in all_rows]
    first = [0 if r < P else min((iv.site.layer for iv in ivs[r]), default=n) for r in range(Rt)]
    diverged = [False] * Rt
    copies: dict[tuple[int, int, int], Intervention] = {}

    def row_copy(r: int, k: int, row: int) -> Intervention:
        """Row r's k-th intervention bound to batch row ``row``, made once for the whole call."""
        key = (r, k, row)
        if key not in copies:
            copies[key] = ivs[r][k].model_copy(update={"row": row})
        return copies[key]

    kv = KVState(n, [0] * Rt, concat=True)  # rows are copied out of it at every layer of every step
    ids = mx.array([list(prompt_ids[p]) for p, _ in all_rows], dtype=mx.int32)
    h = _staggered_pass(hm, ids, kv, first, ref, ivs, row_copy, cancel, on_layer)
    stops = set(stop_ids)
    outs = [RowOutput([], "max_tokens") for _ in range(Rt)]
    done = [False] * Rt
    for step in range(max_tokens):
        logits = hm.adapter.lens_logits(hm.model, h[:, -1:, :])[:, -1, :]
        nxt = mx.argmax(logits, axis=-1)
        toks = int_list(nxt)
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
