"""Item 5 of issue 9: where lazarus' slowest paths (generation: W2 ablation sweep, W3 steering)
spend their time, and two load-time changes measured on the real engine paths.

    .venv/bin/python bench/profile_decode.py [--model smollm2-135m] [--repeats 3]

Variants, each on its own copy of the model, alternated round-robin:

- ``as is``: the engine unchanged.
- ``pre-transposed``: every ``nn.Linear`` weight [out, in] replaced by a transposed *view* of a
  contiguous [in, out] copy (``mx.contiguous(w.T).T``). ``nn.Linear`` computes ``x @ w.T``, which
  then reads a row-major matrix: the same numbers, the same results bit for bit (checked), and
  the CPU BLAS no longer multiplies by a transposed operand.
- ``+ head``: also the generation head (final norm + unembedding in ``HookedModel.forward``) through
  a cached contiguous transposed unembedding, as ``engine.lens.fast_lens_logits`` already does
  for the lens (here through an adapter wrapper).

Result on 2026-11-27 (docs/PERFORMANCE.md, item 5): no robust gain on a quiet machine.

Prints ms per decode step (batch 1 and 5), the 256-token prefill, and the W2/W3 engine calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: F401  (BLAS before mlx)

# isort: split
import mlx.core as mx
import workloads as W
from mlx import nn


def pretranspose(model) -> None:
    for _, m in model.named_modules():
        if isinstance(m, nn.Linear):
            m.weight = mx.contiguous(m.weight.T).T
    mx.eval(model.parameters())


class FastHead:
    """The model's adapter, with ``lens_logits`` through a cached contiguous [hidden, vocab] matrix."""

    def __init__(self, adapter, model) -> None:
        self._a = adapter
        w = model.model.embed_tokens.weight if adapter.tied_embeddings else model.lm_head.weight
        self._wt = mx.contiguous(w.T)
        mx.eval(self._wt)

    def __getattr__(self, name):
        return getattr(self._a, name)

    def lens_logits(self, model, h):
        logits = model.model.norm(h) @ self._wt
        if self._a.final_logit_softcap:
            c = self._a.final_logit_softcap
            logits = mx.tanh(logits / c) * c
        return logits


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from engine.ablation import run_ablation
    from engine.results.ablation import AblationRequest
    from engine.generate import generate_ids
    from engine.hooks import HookedModel
    from engine.models import load
    from engine.steering import SteeringDirection, steer_generate

    lms = {"as is": load(args.model), "pre-transposed": load(args.model), "+ head": load(args.model)}
    pretranspose(lms["pre-transposed"].model)
    pretranspose(lms["+ head"].model)
    lms["+ head"].adapter = FastHead(lms["+ head"].adapter, lms["+ head"].model)
    base = lms["as is"]
    tok = base.tokenizer
    data = Path(__file__).resolve().parents[1] / "tests" / "data"
    pos = (data / "steering_positive.txt").read_text().splitlines()[:4]
    neg = (data / "steering_negative.txt").read_text().splitlines()[:4]
    d = SteeringDirection.extract(base, pos, neg, layer=W.STEER_LAYER, chat=True)
    chat_ids = tok.prepare(W.STEER_PROMPT, chat=True)
    long_ids = mx.array([tok.encode(W.LONG)[:W.LONG_TOKENS]])
    areq = AblationRequest(prompt=W.ABLATION_PROMPT, criterion="Paris", component="mlp", chat=False,
                           max_tokens=W.ABLATION_TOKENS)

    def decode(lm, rows: int, n: int = 16) -> float:
        hm = HookedModel(lm)
        t = time.perf_counter()
        generate_ids(hm, [chat_ids] * rows, n)
        return time.perf_counter() - t

    jobs = {
        "generate 16 tokens, batch 1 (s)": lambda lm: decode(lm, 1),
        "generate 16 tokens, batch 5 (s)": lambda lm: decode(lm, 5),
        "prefill 256 tokens, model.model (s)": lambda lm: _timed(lambda: mx.eval(lm.model.model(long_ids))),
        "W2 run_ablation batched (s)": lambda lm: _timed(lambda: run_ablation(lm, areq, strategy="batched")),
        "W3 steer_generate batched (s)": lambda lm: _timed(lambda: steer_generate(
            lm, W.STEER_PROMPT, d, coefficients=list(W.STEER_COEFS), max_tokens=W.STEER_TOKENS, chat=True)),
    }
    # same outputs, bit for bit
    ref = None
    for name, lm in lms.items():
        logits = lm.model(mx.array([chat_ids]))
        hm = HookedModel(lm)
        out = hm.forward(_batch(chat_ids), logits="last").logits
        toks = steer_generate(lm, W.STEER_PROMPT, d, coefficients=list(W.STEER_COEFS), max_tokens=W.STEER_TOKENS,
                              chat=True).outputs
        got = (logits, out, [o.token_ids for o in toks])
        if ref is None:
            ref = got
        else:
            same = (mx.array_equal(ref[0], got[0]).item(), mx.array_equal(ref[1], got[1]).item(), ref[2] == got[2])
            print(f"{name}: model logits, hooked logits, W3 tokens identical to 'as is': {same}")
    print(f"# {args.model}, load average {Path('/proc/loadavg').read_text().split()[0]}")
    print(f"{'':38}" + "".join(f"{k:>16}" for k in lms))
    for label, job in jobs.items():
        for lm in lms.values():  # warm-up
            job(lm)
        times = {k: [] for k in lms}
        for _ in range(args.repeats):
            for k, lm in lms.items():
                times[k].append(job(lm))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{label:38}" + "".join(f"{med[k]:16.3f}" for k in lms)
              + f"   ({med['as is'] / med['+ head']:.2f}x)", flush=True)
    print(f"# load average {Path('/proc/loadavg').read_text().split()[0]}")
    return 0


def _batch(ids):
    from engine.hooks import Batch

    return Batch.from_lists([ids])


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    sys.exit(main())
