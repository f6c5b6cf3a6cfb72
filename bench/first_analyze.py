"""The first `analyze` in a fresh process against the first plain forward in a fresh process.

Budget (issue 19): the first all-layer lens of a new process costs at most 0.7 s more than that
process's first plain forward of the same prompt (``model(ids)``, mlx-lm's own call). Everything
a first lens pays once — the statistics kernels (numba's cache), graph building, the cached
transposed head — counts; the model load does not (both sides load the same way first).

Each round starts two fresh interpreters, one per side, in alternating order; the printed figures
are medians over the rounds, with wall and CPU seconds of the timed call alone.

    .venv/bin/python bench/first_analyze.py [--model smollm2-135m] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The capital of France is"

CHILD = r"""
import json, sys, time
import engine  # BLAS before mlx
import mlx.core as mx
from engine.models import load
from engine.lens import analyze
from engine.results.analyze import AnalyzeRequest
side, model, prompt = sys.argv[1:4]
lm = load(model)
req = AnalyzeRequest(prompt=prompt, layer_strategy="all", track_tokens=[" Paris"], top_k=5)
ids = mx.array([lm.tokenizer.encode(prompt)])
w0, c0 = time.perf_counter(), time.process_time()
if side == "forward":
    mx.eval(lm.model(ids))
else:
    r = analyze(lm, req)
print(json.dumps({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}))
"""


def one(side: str, model: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", CHILD, side, model, PROMPT], capture_output=True, text=True,
                          cwd=ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"forward": [], "analyze": []}
    for i in range(args.rounds):
        for side in (("forward", "analyze") if i % 2 == 0 else ("analyze", "forward")):
            runs[side].append(one(side, args.model))
    med = {s: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu")} for s, rs in runs.items()}
    extra = [a["wall"] - f["wall"] for f, a in zip(runs["forward"], runs["analyze"])]
    print(f"# first call in a fresh process — {args.model}, {args.rounds} rounds, \"{PROMPT}\"")
    for s in ("forward", "analyze"):
        print(f"{s:<8} wall {med[s]['wall'] * 1e3:7.1f} ms   cpu {med[s]['cpu'] * 1e3:7.1f} ms")
    print(f"first analyze - first forward: median {statistics.median(extra):.3f} s "
          f"[{min(extra):.3f}-{max(extra):.3f}] (budget 0.7 s)")


if __name__ == "__main__":
    main()
