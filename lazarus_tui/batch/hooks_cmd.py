"""`lazarus --batch hooks`: a low-level look at the capture API."""

from __future__ import annotations

from lazarus_tui.batch.common import ArgumentParser, add_model_args, add_output_args, model_header, out, run_analysis
from lazarus_tui.inputs import parse_layers


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="lazarus --batch hooks", description="shapes, norms and lens top-1 of captured sites")
    add_model_args(p)
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("--layers", default=None, help="e.g. 0,4,8 (default: first, middle, last)")
    p.add_argument("--capture-attention", action="store_true", help="each head's attention from the last position")
    p.add_argument("--last-only", action="store_true", help="capture the last position only")
    p.add_argument("--no-logit-lens", action="store_true")
    add_output_args(p)
    args = p.parse_args(argv)
    from engine.errors import InputError
    from engine.hooks_demo import run_hooks
    from engine.results.hooks import HooksRequest

    if args.prompt == "":
        raise InputError("empty prompt")
    req = HooksRequest(model=args.model, prompt=args.prompt,
                       layers=parse_layers(args.layers) if args.layers else None,
                       capture_attention=args.capture_attention, last_only=args.last_only,
                       logit_lens=not args.no_logit_lens)

    def render(r, info):
        model_header(info)
        out.print(f"Tokens ({len(r.tokens)}): {r.tokens!r}\n")
        for row in r.layers:
            lens = f"  lens top-1 {row.lens_top1!r} ({row.lens_top1_probability:.4f})" if row.lens_top1 is not None else ""
            out.print(f"Layer {row.layer}:{lens}")
            for s in row.sites:
                out.print(f"  {s.site:<24} shape {tuple(s.shape)!s:<16} |x| last {s.norm_last:9.3f}  mean {s.norm_mean:9.3f}")
            for h in row.attention:
                src = ", ".join(f"{tok!r}@{pos} {w:.2f}" for pos, tok, w in h.sources)
                out.print(f"    head {h.head:>2}: {src}")
            out.print("")

    return run_analysis(args, "hooks", lambda lm, ctx: run_hooks(lm, req, ctx.cancelled), render)
