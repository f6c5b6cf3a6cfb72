"""verify: the hooked forward against the model's own forward, logit by logit.

Several prompts, one longer than 600 tokens (past Gemma 3's 512-token sliding
window), each run three ways: the model's own ``__call__``, the hooked forward
with no captures, and the hooked forward capturing every site of every layer
(which computes attention in the open). Passes when every max |Δlogit| is
under the tolerance (1e-4 in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mlx.core as mx

from engine.hooks import Batch, CaptureSpec, HookedModel, KVState
from engine.models import LoadedModel
from engine.mx_values import item_float
from engine.results.verify import VerifyPrompt, VerifyResult

LONG_PROMPT = " ".join(
    f"Line {i}: the {c} fox jumps over {n} lazy dogs near the river."
    for i, (c, n) in enumerate(zip(["quick", "brown", "red", "sly", "old"] * 8, range(3, 43)))
)  # ~700 tokens: past Gemma 3's 512-token window, and no longer (the logits grow with S x vocab)


def verify_prompts() -> list[tuple[str, str]]:
    return [
        ("short", "The capital of France is"),
        ("mixed", "Résumé: 12 + 30 = 42\n\n  naïve café, 東京 🤗 <- unicode"),
        ("long", LONG_PROMPT),
    ]


def _max_abs_diff(a: mx.array, b: mx.array, chunk: int = 64) -> float:
    """max |a - b| over [1, S, vocab] logits, a few positions at a time: the whole difference
    of two long-prompt logit tensors (and its abs) would be gigabytes more."""
    worst = 0.0
    for s in range(0, a.shape[1], chunk):
        part = mx.abs(a[:, s:s + chunk] - b[:, s:s + chunk].astype(mx.float32)).max()
        worst = _worst(worst, item_float(part))
    return worst


def _worst(a: float, b: float) -> float:
    """The larger difference; NaN wins (it must fail the check, as mx.maximum would make it)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def hooked_vs_own(hm: HookedModel, ids: list[int], cancel: Callable[[], bool] | None = None,
                  on_pass: Callable[[int], None] | None = None) -> tuple[float, mx.array, mx.Dtype]:
    """(max |Δlogit|, the model's own logits [1, S, vocab] in float32, the dtype the model computes
    in): the hooked forward, plain and capturing every site (attention in the open), against the
    model's own forward on ``ids``; NaN when a logit is NaN. ``on_pass(k)``: k of the three passes
    are done (0 to 3). ``verify`` and the load-time probe (``engine.family_check``) both use it."""
    lm = hm.lm
    if on_pass:
        on_pass(0)
    own = lm.adapter.reference_logits(lm.model, mx.array([ids]))
    native = own.astype(mx.float32)  # [1, S, vocab]
    mx.eval(native)
    if on_pass:
        on_pass(1)
    # one logits tensor at a time next to the model's own (Gemma's long prompt: 0.7 GB each)
    plain = hm.forward(Batch.from_lists([ids]), logits="all", cancel=cancel).logits
    assert plain is not None  # logits="all"
    d = _max_abs_diff(native, plain)
    del plain
    if on_pass:
        on_pass(2)
    every = CaptureSpec(kinds=hm.site_kinds, layers=None, positions="last")
    opened = hm.forward(Batch.from_lists([ids]), logits="all", capture=every, cancel=cancel).logits
    assert opened is not None  # logits="all"
    d = _worst(d, _max_abs_diff(native, opened))
    del opened
    if on_pass:
        on_pass(3)
    return d, native, own.dtype


def run_verify(lm: LoadedModel, tolerance: float = 1e-4, cancel: Callable[[], bool] | None = None,
               on_prompt: Callable[[int, int, str], None] | None = None) -> VerifyResult:
    hm = HookedModel(lm)
    rows = []
    prompts = verify_prompts()
    for i, (label, text) in enumerate(prompts):
        if on_prompt:
            on_prompt(i, len(prompts), label)
        ids = lm.tokenizer.encode(text)
        d, native, _ = hooked_vs_own(hm, ids, cancel)
        if len(ids) < 64:  # the KV cache, token by token after a prefill
            kv = KVState(hm.n_layers, [0])
            hm.forward(Batch.from_lists([ids[:2]]), kv=kv, logits="none")
            for j in range(2, len(ids)):
                step = hm.forward(Batch(mx.array([[ids[j]]]), [0], [len(ids)]), kv=kv).logits
                assert step is not None  # logits="last" (the default)
                d = _worst(d, _max_abs_diff(native[:, j:j + 1], step[:, :1]))
        rows.append(VerifyPrompt(label=label, num_tokens=len(ids), max_abs_diff=d, passed=d < tolerance))
    return VerifyResult(model_id=lm.info.model_id, dtype=lm.info.dtype, tolerance=tolerance, prompts=rows)
