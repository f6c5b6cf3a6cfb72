"""The logit lens over every layer vs one plain forward pass of the same prompt.

Budget (issue 19; issue 3 set 1.15x on a slower host): the all-layer lens on the 5-token prompt
costs at most 1.2x one plain forward, paired. "Plain forward" is the model's own ``model(ids)``
(logits at every position, as mlx-lm computes them). The lens runs the hooked forward, keeps only
the needed position, unembeds all layers in one product (on the CPU ``engine/unembed_kernel.py``)
and computes top-k, entropy, KL/JS and full-vocabulary ranks.

    .venv/bin/python bench/lens_overhead.py [--model smollm2-135m] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: E402,F401  (BLAS before mlx)
import mlx.core as mx  # noqa: E402
from common import alternate, machine  # noqa: E402

from engine.lens import analyze  # noqa: E402
from engine.models import load  # noqa: E402
from engine.results.analyze import AnalyzeRequest

LONG = " ".join(f"Fact {i}: the river flows past the old mill toward the sea." for i in range(20))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    lm = load(args.model)
    print(f"# lens overhead — {lm.info.model_id} ({lm.info.num_layers} layers), {machine()}")
    print(f"{'prompt':<10} {'tokens':>6} {'forward ms':>11} {'lens ms':>9} {'ratio':>6} {'paired':>7}  [range]")
    for label, prompt in [("short", "The capital of France is"), ("256-ish", LONG)]:
        ids = lm.tokenizer.encode(prompt)
        x = mx.array([ids])
        req = AnalyzeRequest(prompt=prompt, layer_strategy="all", track_tokens=[" Paris"], top_k=5)
        t = alternate({
            "forward": lambda x=x: mx.eval(lm.model(x)),
            "lens": lambda req=req: analyze(lm, req),
        }, repeats=args.repeats, paired=True)
        pairs = sorted(b / a for a, b in zip(t["forward_all"], t["lens_all"]))
        print(f"{label:<10} {len(ids):>6} {t['forward'] * 1e3:11.1f} {t['lens'] * 1e3:9.1f} "
              f"{t['lens'] / t['forward']:6.2f} {statistics.median(pairs):7.2f}  [{pairs[0]:.2f}-{pairs[-1]:.2f}]")


if __name__ == "__main__":
    main()
