"""`lazarus --batch patch`: activation patching from a source prompt into a target prompt."""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.common import (
    ArgumentParser,
    add_model_args,
    add_output_args,
    fix_negative_values,
    model_header,
    out,
    run_analysis,
)
from lazarus_tui.inputs import parse_layers


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch patch",
                       description="write the source's layer-L output into the target's run; report the target's "
                                   "next-token distribution")
    add_model_args(p)
    p.add_argument("--source", required=True, help="source prompt (its activation is copied)")
    p.add_argument("--target", required=True, help="target prompt (patched)")
    p.add_argument("-l", "--layer", type=F.layer, default=None, help="one layer to patch")
    p.add_argument("--layers", default=None, help="sweep: layers to patch one at a time, e.g. 0-29")
    p.add_argument("--position", default="last", help="last (default), all, or a token index (may be negative)")
    p.add_argument("--blend", type=F.real(0, 1), default=1.0,
                   help="1 = replace (default); a in [0,1] writes (1-a)*target + a*source")
    p.add_argument("--top-k", type=F.top_k, default=5)
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    add_output_args(p)
    return p


def render(r, info) -> None:
    model_header(info)
    req = r.request
    out.print(esc(f"Source: {req.source!r} -> {r.source_answer!r} ({r.source_top[0].probability:.4f})"))
    out.print(esc(f"Target: {req.target!r} -> {r.target_answer!r} ({r.target_top[0].probability:.4f})"))
    mode = "replace" if req.blend == 1.0 else f"blend {req.blend:g}"
    out.print(f"Patching layer output at position {req.position} ({mode})\n")
    t = Table(title="Patched target: next-token prediction per layer", title_justify="left")
    for col in ("Layer", "top-1", "p", "P(src ans)", "rank", "P(tgt ans)", "rank", "flipped"):
        t.add_column(col, justify="left" if col == "top-1" else "right")
    for pl in r.layers:
        t.add_row(str(pl.layer), esc(repr(pl.top[0].token)), f"{pl.top[0].probability:.4f}",
                  f"{pl.source_answer_prob:.4f}", str(pl.source_answer_rank), f"{pl.target_answer_prob:.4f}",
                  str(pl.target_answer_rank), "[green]yes[/green]" if pl.source_answer_top1 else "no")
    out.print(t)
    if r.flipped_layers:
        out.print(esc(f"Source answer {r.source_answer!r} becomes top-1 when patching layers {r.flipped_layers}"))
    else:
        out.print(esc(f"Source answer {r.source_answer!r} never becomes top-1"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(fix_negative_values(argv, ("--position",)))
    from engine.errors import InputError
    from engine.results.patch import PatchRequest

    if args.layer is None and args.layers is None:
        raise InputError("give -l/--layer or --layers")
    layers = ([args.layer] if args.layer is not None else []) + (parse_layers(args.layers) if args.layers else [])
    req = PatchRequest(model=args.model, source=args.source, target=args.target, layers=layers,
                       position=args.position, blend=args.blend, top_k=args.top_k, chat=args.chat)
    from engine.patching import patch

    return run_analysis(args, "patch", lambda lm, ctx: patch(lm, req, ctx.cancelled), render)
