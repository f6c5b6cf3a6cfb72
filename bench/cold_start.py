"""W5 of bench/run_all.py: a cold process loads the model from the local GGUF and computes its
first logit-lens result (all layers, "The capital of France is").

    python bench/cold_start.py --side lazarus|transformers [--model smollm2-135m] [--t0 EPOCH]

Prints one JSON line: seconds since ``--t0`` (the parent's clock just before it started this
process, so interpreter start-up and imports count) at: imports done, model loaded, first lens
result; and the final top-5. ``--side lazarus`` loads through the converted cache (what every
load after the first does); ``LAZARUS_CACHE`` pointing at an empty folder makes it the first load
ever (the GGUF is dequantized and cached). transformers has no such cache: it dequantizes the GGUF
on every load.
"""

from __future__ import annotations

import time

T_START = time.time()

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHORT = "The capital of France is"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", required=True, choices=["lazarus", "transformers"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--gguf", help="lazarus: load this .gguf path instead of the alias")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--t0", type=float, default=None)
    args = ap.parse_args()
    t0 = args.t0 or T_START
    marks = {}
    if args.side == "lazarus":
        import engine  # noqa: F401  (BLAS before mlx)
        from engine.lens import analyze
        from engine.models import load
        from engine.results.analyze import AnalyzeRequest

        marks["imports"] = time.time() - t0
        lm = load(args.gguf or args.model)
        marks["loaded"] = time.time() - t0
        r = analyze(lm, AnalyzeRequest(prompt=SHORT, layer_strategy="all", top_k=5))
        top5 = [p.token_id for p in r.final_prediction]
    else:
        import torch
        import transformers  # noqa: F401
        from side_torch import load_hf

        marks["imports"] = time.time() - t0
        hf, tok = load_hf(args.model, args.threads)
        marks["loaded"] = time.time() - t0
        with torch.inference_mode():
            ids = tok(SHORT, return_tensors="pt").input_ids
            out = hf.model(ids, output_hidden_states=True)
            hs = torch.stack([h[0, -1] for h in out.hidden_states[1:-1]] + [out.last_hidden_state[0, -1]])
            logits = hf.lm_head(torch.cat([hf.model.norm(hs[:-1]), hs[-1:]]))
            top5 = logits.softmax(-1).topk(5, dim=-1).indices[-1].tolist()
    marks["first_lens"] = time.time() - t0
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("COLD " + json.dumps({**marks, "top5": top5, "peak_rss_mb": rss}), flush=True)


if __name__ == "__main__":
    main()
