"""`lazarus --batch activation-diff`: how far apart are two models' layer outputs?"""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch._analysis_common import add_pair_args, esc, run_pair, short, two_model_header
from lazarus_tui.batch.common import ArgumentParser, add_output_args, out
from lazarus_tui.inputs import parse_layers, split_prompts


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch activation-diff",
                       description="cosine between two models' last-position layer outputs, per prompt and layer")
    add_pair_args(p)
    p.add_argument("-p", "--prompts", required=True, help="prompts a|b|c (not stripped) or @file")
    p.add_argument("--layers", default=None, help="layers (default: all)")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    add_output_args(p)
    return p


def render(r, infos) -> None:
    two_model_header(out, infos)
    out.print("")
    t = Table(title="Cosine(base, fine-tuned) of the last-position layer output", title_justify="left")
    t.add_column("Layer", justify="right")
    for i, p in enumerate(r.prompts):
        t.add_column(esc(f"[{i}] {short(p.prompt, 22)}"), justify="right")
    t.add_column("mean", justify="right")
    for layer in r.layers:
        cells = [f"{p.cosine_by_layer[layer]:.4f}" for p in r.prompts]
        t.add_row(str(layer), *cells, f"{r.mean_cosine_by_layer[layer]:.4f}")
    out.print(t)
    low = min(r.layers, key=lambda layer: r.mean_cosine_by_layer[layer])
    out.print(f"Most divergent layer: {low} (mean cosine {r.mean_cosine_by_layer[low]:.4f}, "
              f"mean relative L2 {sum(p.relative_l2_by_layer[low] for p in r.prompts) / len(r.prompts):.4f})")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.diff import activation_diff
    from engine.distributed import world
    from engine.results.diff import ActivationDiffRequest

    dtype2 = args.dtype2 or args.dtype
    req = ActivationDiffRequest(base=args.base, finetuned=args.finetuned or args.base, base_dtype=args.dtype,
                                finetuned_dtype=dtype2, prompts=split_prompts(args.prompts),
                                layers=parse_layers(args.layers) if args.layers else None, chat=args.chat)
    w = world()
    return run_pair(args, args.base, args.finetuned, dtype2,
                    lambda a, b, ctx: activation_diff(a, b, req, ctx.cancelled, ctx.counter("blocks", "activations"),
                                                    world=w),
                    "activation-diff", render)
