"""A model's layers split across distributed ranks: the hooked forward as a pipeline (a first step).

Rank ``k`` of ``size`` loads the contiguous layers of its *stage* only (rank 0 the first ones;
``engine.models.load(spec, stage=(rank, size))``: the other blocks' weights are never read), and
keeps the embedding, final norm and unembedding, so a model too large for one machine fits on
several. :func:`pipelined_forward` runs one hooked forward
through the stages: rank 0 embeds and runs its layers, sends the residual to rank 1
(``mx.distributed.send``), which runs its layers from there (``HookedModel.forward(start_layer=,
h=)``), and so on; the last rank unembeds. Each rank captures the sites of its own layers and
applies the interventions at its own layers; at the end every capture and the logits are gathered,
so rank 0 holds what one process's forward returns, and the logit lens of any captured residual
(``adapter.lens_logits``) is computed there as one process computes it.

:func:`pipelined_generate` decodes through the stages (each keeps its layers' KV cache; the last
picks the token and every rank gets it). Not yet: micro-batching (a stage waits while the others
work), batch commands on top. See docs/distributed.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map

from engine.distributed import World, pack, unpack
from engine.errors import Cancelled, InputError
from engine.generate import RowOutput, collect_step
from engine.hooks import Batch, CaptureSpec, ForwardOutput, HookedModel, Intervention, KVState
from engine.mx_values import int_list, tree_leaves


def stage_layers(n_layers: int, rank: int, size: int) -> tuple[int, int]:
    """Layers ``[start, stop)`` of rank ``rank``: contiguous, as even as possible, rank 0 first."""
    base, extra = divmod(n_layers, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def keep_stage(model: Any, adapter: Any, start: int, stop: int) -> int:
    """Drop the weights of every block outside ``[start, stop)`` (zero-size arrays in their place);
    returns the bytes they held. Called by ``engine.models.load(stage=...)`` before the weights are
    evaluated, so the dropped ones are never read from disk."""
    freed = 0
    for i, block in enumerate(adapter.blocks(model)):
        if start <= i < stop:
            continue
        freed += sum(v.nbytes for _, v in tree_leaves(block.parameters()))
        block.update(tree_map(lambda v: mx.zeros((0,), dtype=v.dtype), block.parameters()))
    return freed


def _pack(arrays: dict[str, mx.array]) -> bytes:
    header, blobs, offset = {}, [], 0
    for name, arr in arrays.items():
        a = np.ascontiguousarray(np.array(arr.astype(mx.float32)), dtype="<f4")
        header[name] = [list(a.shape), offset, a.nbytes]
        blobs.append(a.tobytes())
        offset += a.nbytes
    head = json.dumps(header).encode()
    return len(head).to_bytes(8, "little") + head + b"".join(blobs)


def _unpack(payload: bytes) -> dict[str, mx.array]:
    if not payload:
        return {}
    n = int.from_bytes(payload[:8], "little")
    header = json.loads(payload[8:8 + n])
    body = payload[8 + n:]
    return {name: mx.array(np.frombuffer(body[off:off + size], dtype="<f4").reshape(shape))
            for name, (shape, off, size) in header.items()}


def compute_dtype(hm: HookedModel) -> mx.Dtype:
    """The dtype the residual stream runs in (residuals travel between stages in it)."""
    name = hm.lm.info.dtype
    return getattr(mx, name) if name in ("float32", "float16", "bfloat16") else mx.float32


_CANCEL = b"!"


def _recv_residual(hm: HookedModel, world: World, rows: int, width: int) -> mx.array:
    """The residual entering this stage, in the model's own dtype (bit for bit what the previous stage had)."""
    world.meet()
    h = mx.distributed.recv((rows, width, hm.lm.info.hidden_size), compute_dtype(hm), world.rank - 1,
                            group=world.group, stream=mx.cpu)
    mx.eval(h)
    return h


def _send_residual(hm: HookedModel, world: World, h: mx.array) -> None:
    world.meet()
    mx.eval(mx.distributed.send(h.astype(compute_dtype(hm)), world.rank + 1, group=world.group, stream=mx.cpu))


def pipeline_world() -> World:
    """The job whose ranks hold one stage each (``--pipeline``); refuses a run without a launcher."""
    from engine.distributed import launched, world

    if not launched():
        raise InputError("--pipeline splits the model's layers across the ranks of a distributed launcher: "
                         "run it under lazarus-launch -n N (docs/distributed.md)")
    return world()


def pipelined_forward(hm: HookedModel, batch: Batch, world: World, *, capture: CaptureSpec | None = None,
                      interventions: Sequence[Intervention] = (), logits: Literal["all", "last", "none"] = "last",
                      embedding_scale: float | None = None) -> ForwardOutput | None:
    """One hooked forward through the ranks' stages (see the module doc). Rank 0 returns the whole
    ``ForwardOutput`` (captures and logits float32); the other ranks return ``None``."""
    start, stop = stage_layers(hm.n_layers, world.rank, world.size)
    last = world.rank == world.size - 1
    own = [iv for iv in interventions if start <= iv.site.layer < stop]
    h_in = _recv_residual(hm, world, *batch.ids.shape) if world.rank > 0 else None
    out = hm.forward(batch, capture=capture, interventions=own, start_layer=start, h=h_in,
                     stop_layer=None if last else stop, logits=logits if last else "none",
                     embedding_scale=embedding_scale)
    if not last:
        assert out.resid is not None  # a forward that stops before the last layer returns its residual
        _send_residual(hm, world, out.resid)
    mine = dict(out.captures)
    if last and out.logits is not None:
        mine["__logits__"] = out.logits
    parts = world.gather_bytes(_pack(mine))
    if not world.root:
        return None
    merged: dict[str, mx.array] = {}
    for p in parts:
        merged.update(_unpack(p))
    out_logits = merged.pop("__logits__", None)
    return ForwardOutput(out_logits, merged, None)


def pipelined_generate(hm: HookedModel, rows: Sequence[Sequence[int]], max_new_tokens: int, world: World, *,
                       interventions: Sequence[Intervention] = (), temperature: float = 0.0, seed: int = 0,
                       stop_ids: Sequence[int] = (), cancel: Callable[[], bool] | None = None
                       ) -> list[RowOutput] | None:
    """``engine.generate.generate_ids`` through the stages: each rank keeps the KV cache of its own
    layers; the last rank picks each token (greedy, or sampled with the same random stream) and every
    rank receives it for the next step. Rank 0 returns the outputs; the other ranks ``None``."""
    if max_new_tokens < 1:
        raise InputError("max tokens must be at least 1")
    start, stop = stage_layers(hm.n_layers, world.rank, world.size)
    last = world.rank == world.size - 1
    own = [iv for iv in interventions if start <= iv.site.layer < stop]
    batch = Batch.from_lists(rows, hm.lm.tokenizer.batch_pad_id)
    kv = KVState(hm.n_layers, batch.pad)
    key = mx.random.key(seed)
    stops = set(stop_ids)
    outs = [RowOutput([], "max_tokens") for _ in rows]
    done = [False] * len(rows)
    step_batch = batch
    for step in range(max_new_tokens):
        h_in = _recv_residual(hm, world, *step_batch.ids.shape) if world.rank > 0 else None
        offset = kv.offset
        out = hm.forward(step_batch, interventions=own, kv=kv, start_layer=start, h=h_in,
                         stop_layer=None if last else stop, logits="last" if last else "none")
        payload = b""
        if last:
            assert out.logits is not None  # logits="last"
            logits = out.logits[:, -1, :]
            if temperature > 0:
                key, sub = mx.random.split(key)
                nxt = mx.random.categorical(logits.astype(mx.float32) / temperature, key=sub)
            else:
                nxt = mx.argmax(logits, axis=-1)
            payload = pack(int_list(nxt))
        else:
            kv.offset = offset + step_batch.ids.shape[1]  # the forward advances it only at the last layer
            assert out.resid is not None  # a forward that stops before the last layer returns its residual
            _send_residual(hm, world, out.resid)
        if cancel is not None and cancel():  # every rank checks here, so all stop at the same step
            payload = _CANCEL
        got = world.gather_bytes(payload)
        if _CANCEL in got:
            raise Cancelled("cancelled")
        toks = unpack(got[-1])
        collect_step(outs, done, toks, stops)
        if all(done) or step == max_new_tokens - 1:
            break
        step_batch = Batch(mx.array(toks, dtype=mx.int32)[:, None], kv.pad, batch.lengths)
    return outs if world.root else None
