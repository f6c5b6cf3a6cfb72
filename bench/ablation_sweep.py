"""Ablation sweep: ONE batch with prefix reuse vs the sequential way (one full generation per layer).

    .venv/bin/python bench/ablation_sweep.py [--chat] [--tokens 12] [--model smollm2-135m]

A 30-layer MLP zero-ablation sweep (plus the baseline) with greedy generation on
"The capital of France is". Prints both wall times, the ratio, and checks that every sweep
point generated exactly the same tokens both ways (exit 1 if not).
"""

from __future__ import annotations

import argparse
import sys
import time

import engine  # noqa: F401  (BLAS before mlx)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--prompt", default="The capital of France is")
    p.add_argument("--tokens", type=int, default=12)
    p.add_argument("--chat", action="store_true", help="use the chat template (default: raw prompt)")
    args = p.parse_args()
    from engine.ablation import run_ablation
    from engine.results.ablation import AblationRequest
    from engine.models import load

    lm = load(args.model)
    req = AblationRequest(prompt=args.prompt, criterion="Paris", component="mlp", chat=args.chat,
                          max_tokens=args.tokens)
    run_ablation(lm, req.model_copy(update={"layers": [0], "max_tokens": 1}))  # warm-up
    t = time.perf_counter()
    seq = run_ablation(lm, req, strategy="sequential")
    t_seq = time.perf_counter() - t
    t = time.perf_counter()
    bat = run_ablation(lm, req, strategy="batched")
    t_bat = time.perf_counter() - t
    same = ([o.token_ids for o in seq.baseline] == [o.token_ids for o in bat.baseline]
            and all([o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
                    for a, b in zip(seq.points, bat.points)))
    n_prompt = len(lm.tokenizer.prepare(args.prompt, chat=bat.chat_template_used))
    print(f"model {lm.info.model_id}, {len(bat.points)} layers (MLP zero), {args.tokens} tokens, "
          f"{'chat template' if bat.chat_template_used else 'raw prompt'} ({n_prompt} prompt tokens)")
    print(f"sequential (one full generation per layer + baseline): {t_seq:.2f} s")
    print(f"batched (one batch, prefix reuse):                      {t_bat:.2f} s")
    print(f"speed-up: {t_seq / t_bat:.1f}x")
    changed = sum(p.outputs[0].diverged_at is not None for p in bat.points)
    print(f"outputs identical: {'yes' if same else 'NO'} ({changed} of {len(bat.points)} ablations change the output)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
