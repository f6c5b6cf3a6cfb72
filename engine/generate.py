"""Generation with the KV cache through the hooked forward.

Interventions given to ``generate_ids`` stay on for the prompt and for every
generated token. Rows of a batch are left-padded and generated together; a row
that reaches an end token stops collecting while the others continue.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from engine.errors import Cancelled, InputError
from engine.hooks import Batch, HookedModel, Intervention, KVState
from engine.models import LoadedModel
from engine.results.generate import GeneratedToken, GenerateRequest, GenerateResult, Generation


@dataclass
class RowOutput:
    ids: list[int]
    stopped: str  # "eos" | "max_tokens"


def generate_ids(
    hm: HookedModel,
    rows: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    interventions: Sequence[Intervention] = (),
    temperature: float = 0.0,
    seed: int = 0,
    stop_ids: Sequence[int] = (),
    cancel: Callable[[], bool] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    kv: KVState | None = None,
    first_logits: mx.array | None = None,
    sample_rows: tuple[int, int] | None = None,
) -> list[RowOutput]:
    """Generate up to ``max_new_tokens`` for each row. With ``kv`` and ``first_logits`` the prompt
    was already run (prefix reuse): generation starts from those logits [B, vocab].

    ``sample_rows=(first, total)``: these rows are rows ``first..first+B-1`` of a batch of ``total``
    rows split across distributed ranks; each step draws the whole batch's random numbers (the Gumbel
    noise ``mx.random.categorical`` adds, same key) and keeps these rows, so a part samples exactly
    what the whole batch samples (given the same logits)."""
    if max_new_tokens < 1:
        raise InputError("max tokens must be at least 1")
    pad_id = hm.lm.tokenizer.batch_pad_id
    batch = Batch.from_lists(rows, pad_id)
    B = len(rows)
    if kv is None or first_logits is None:
        kv = KVState(hm.n_layers, batch.pad)
        out = hm.forward(batch, interventions=interventions, kv=kv, logits="last", cancel=cancel)
        logits = out.logits[:, -1, :]  # [B, vocab]
    else:
        logits = first_logits
    key = mx.random.key(seed)
    stops = set(stop_ids)
    outs = [RowOutput([], "max_tokens") for _ in range(B)]
    done = [False] * B
    for step in range(max_new_tokens):
        if temperature > 0:
            key, sub = mx.random.split(key)
            scaled = logits.astype(mx.float32) / temperature
            if sample_rows is None:
                nxt = mx.random.categorical(scaled, key=sub)
            else:  # categorical == argmax(logits + gumbel(shape, key)); the noise of the whole batch
                first, total = sample_rows
                noise = mx.random.gumbel((total, scaled.shape[-1]), key=sub)[first:first + B]
                nxt = mx.argmax(scaled + noise, axis=-1)
        else:
            nxt = mx.argmax(logits, axis=-1)
        collect_step(outs, done, nxt.tolist(), stops)
        if on_step:
            on_step(step + 1, max_new_tokens)
        if all(done) or step == max_new_tokens - 1:
            break
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        step_batch = Batch(nxt.astype(mx.int32)[:, None], kv.pad, batch.lengths)
        logits = hm.forward(step_batch, interventions=interventions, kv=kv, logits="last").logits[:, -1, :]
    return outs


def collect_step(outs: list[RowOutput], done: list[bool], toks: Sequence[int], stops: set[int]) -> None:
    """Append this step's token to every row still running; a row that produced a stop token ends."""
    for b, t in enumerate(toks):
        if done[b]:
            continue
        outs[b].ids.append(int(t))
        if t in stops:
            done[b] = True
            outs[b].stopped = "eos"


_ARITH = re.compile(r"^\s*(-?\d+)\s*([-+*/x×])\s*(-?\d+)\s*=\s*$")


def arithmetic_check(prompt: str, pieces: Sequence[str]) -> dict | None:
    """For ``A op B =`` prompts: the expected answer, whether it appears, and at which token it starts."""
    m = _ARITH.match(prompt)
    if not m:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if op == "+":
        value: float = a + b
    elif op == "-":
        value = a - b
    elif op in "*x×":
        value = a * b
    else:
        if b == 0:
            return None
        value = a / b
        value = int(value) if value == int(value) else round(value, 6)
    expected = str(value)
    text = "".join(pieces)
    at = text.find(expected)
    onset = None
    if at >= 0:
        length = 0
        for i, p in enumerate(pieces):
            length += len(p)
            if length > at:
                onset = i
                break
    return {"expected": expected, "found": at >= 0, "onset_token": onset}


def run_generate(lm: LoadedModel, req: GenerateRequest, cancel: Callable[[], bool] | None = None,
                 on_step: Callable[[int, int], None] | None = None, pipeline: Any = None) -> GenerateResult | None:
    """Generate for every prompt (and format variant). ``pipeline``: a ``World`` whose ranks each hold
    one stage of ``lm``'s layers (engine/pipeline.py); rank 0 gets the result, the others ``None``."""
    if not req.prompts or any(p == "" for p in req.prompts):
        raise InputError("empty prompt")
    tok = lm.tokenizer
    use_chat = req.chat and tok.chat_template is not None
    variants: list[tuple[str, str]] = []
    for p in req.prompts:
        if req.compare_format:
            variants += [(p.rstrip() + " ", "with trailing space"), (p.rstrip(), "without trailing space")]
        else:
            variants.append((p, ""))
    formatted = [tok.apply_chat_template(p) if use_chat else p for p, _ in variants]
    rows = [tok.encode(f) for f in formatted]
    hm = HookedModel(lm)
    if pipeline is not None:
        from engine.pipeline import pipelined_generate

        outs = pipelined_generate(hm, rows, req.max_tokens, pipeline, temperature=req.temperature, seed=req.seed,
                                  stop_ids=tok.eos_ids, cancel=cancel)
        if outs is None:
            return None
    else:
        outs = generate_ids(hm, rows, req.max_tokens, temperature=req.temperature, seed=req.seed,
                            stop_ids=tok.eos_ids, cancel=cancel, on_step=on_step)
    gens = []
    for (p, variant), f, o in zip(variants, formatted, outs):
        ids = [i for i in o.ids if not (o.stopped == "eos" and i == o.ids[-1] and i in tok.eos_ids)]
        pieces = tok.pieces(ids)
        gens.append(Generation(prompt=p, variant=variant, formatted_prompt=f, text=tok.decode(ids),
                               tokens=[GeneratedToken(token=s, token_id=i) for s, i in zip(pieces, ids)],
                               stopped=o.stopped, arithmetic=arithmetic_check(p, pieces)))
    return GenerateResult(model_id=lm.info.model_id, request=req, chat_template_used=use_chat, generations=gens)
