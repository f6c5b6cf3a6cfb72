"""`lazarus --batch generate`: greedy (or sampled) generation with the KV cache."""

from __future__ import annotations

from lazarus_tui.batch import flags as F
from lazarus_tui.batch.common import (
    ArgumentParser,
    add_chat_args,
    add_model_args,
    add_output_args,
    model_header,
    out,
    pipeline_stage,
    run_analysis,
)
from lazarus_tui.inputs import split_prompts


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="lazarus --batch generate", description="generate text, optionally comparing formats")
    add_model_args(p)
    p.add_argument("-p", "--prompts", "--prompt", dest="prompts", required=True, help="'a|b' or @file")
    p.add_argument("-n", "--max-tokens", type=F.max_tokens, default=10)
    p.add_argument("-t", "--temperature", type=F.temperature, default=0.0)
    p.add_argument("--seed", type=F.seed, default=0)
    p.add_argument("--compare-format", action="store_true", help="with and without a trailing space")
    p.add_argument("--show-tokens", action="store_true")
    add_chat_args(p)
    p.add_argument("--pipeline", action="store_true",
                   help="under a distributed launcher: split the model's layers across the ranks "
                        "(for models larger than one machine; docs/distributed.md)")
    add_output_args(p)
    args = p.parse_args(argv)
    from engine.errors import InputError
    from engine.generate import run_generate
    from engine.results.generate import GenerateRequest

    prompts = split_prompts(args.prompts)
    if any(x == "" for x in prompts):
        raise InputError("empty prompt")
    req = GenerateRequest(model=args.model, prompts=prompts, max_tokens=args.max_tokens,
                          temperature=args.temperature, seed=args.seed, chat=args.chat,
                          compare_format=args.compare_format, show_tokens=args.show_tokens)
    stage = pipeline_stage(args.pipeline)

    def render(r, info):
        model_header(info)
        out.print(f"Chat template: {'applied' if r.chat_template_used else 'not applied (raw prompt)'}\n")
        for g in r.generations:
            label = f" [{g.variant}]" if g.variant else ""
            out.print(f"Prompt{label}: {g.prompt!r}")
            out.print(f"Output: {g.text!r}  ({len(g.tokens)} tokens, stopped: {g.stopped})")
            if args.show_tokens:
                for i, t in enumerate(g.tokens):
                    out.print(f"  {i:>3}: {t.token!r:<20} id {t.token_id}")
            if g.arithmetic:
                a = g.arithmetic
                found = f"found, starting at token {a['onset_token']}" if a["found"] else "NOT found"
                out.print(f"Expected answer {a['expected']}: {found}")
            out.print("")

    return run_analysis(args, "generate", lambda lm, ctx: run_generate(
        lm, req, ctx.cancelled, lambda i, n: ctx.progress("token", i, n, "generate: tokens"), pipeline=stage),
        render, stage)
