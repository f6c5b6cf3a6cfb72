"""Benchmark: a 5-coefficient steering compare, batched (one batch, one row per coefficient)
versus one generation at a time, on the bundled SmolLM2. Prints both times and the ratio measured
in this one run, and checks that the outputs are identical.

    .venv/bin/python bench/steering_compare.py [--tokens 20] [--layer 10] [--raw] [--repeat 2]

The two modes alternate (--repeat times) and the best time of each is kept, so a burst of
load from other processes does not land on one mode only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: F401  (BLAS before mlx)
from engine.models import load
from engine.steering import SteeringDirection, steer_generate

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--layer", type=int, default=10)
    ap.add_argument("--coefficients", default="-0.5,-0.25,0,0.25,0.5")
    ap.add_argument("--prompt", default="Tell me about your weekend.")
    ap.add_argument("--raw", action="store_true", help="skip the chat template")
    ap.add_argument("--repeat", type=int, default=2, help="alternate the two modes this many times; best of each")
    args = ap.parse_args()
    coefs = [float(x) for x in args.coefficients.split(",")]

    lm = load(args.model)
    pos = (DATA / "steering_positive.txt").read_text().splitlines()[:4]
    neg = (DATA / "steering_negative.txt").read_text().splitlines()[:4]
    d = SteeringDirection.extract(lm, pos, neg, layer=args.layer, chat=not args.raw)
    kw = dict(coefficients=coefs, max_tokens=args.tokens, chat=not args.raw)
    steer_generate(lm, args.prompt, d, **{**kw, "max_tokens": 2})  # warm-up (compilation, caches)

    times: dict[bool, list[float]] = {True: [], False: []}
    results = {}
    for _ in range(args.repeat):
        for batched in (False, True):
            t = time.perf_counter()
            results[batched] = steer_generate(lm, args.prompt, d, batched=batched, **kw)
            times[batched].append(time.perf_counter() - t)
    one, batch = min(times[False]), min(times[True])
    same = [a.token_ids == b.token_ids for a, b in zip(results[False].outputs, results[True].outputs)]
    print(f"model {lm.info.model_id} ({lm.info.dtype}, {lm.info.device}), layer {args.layer}, "
          f"{len(coefs)} coefficients x {args.tokens} tokens, chat template {'off' if args.raw else 'on'}")
    print(f"one at a time: {one:.2f} s")
    print(f"batched:       {batch:.2f} s")
    print(f"ratio:         {one / batch:.2f}x")
    print(f"identical outputs: {all(same)} ({sum(same)}/{len(same)})")
    for o in results[True].outputs:
        print(f"  {o.coefficient:+.2f}  {o.text!r}")
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
