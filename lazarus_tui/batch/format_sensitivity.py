"""`lazarus --batch format-sensitivity`: does a trailing space change the representation?"""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch._analysis_common import esc, short
from lazarus_tui.batch.common import ArgumentParser, add_model_args, add_output_args, model_header, out, run_analysis
from lazarus_tui.inputs import parse_layers, split_prompts


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch format-sensitivity",
                       description="compare b + ' ' against b.rstrip() for each prompt, per layer")
    add_model_args(p)
    p.add_argument("-p", "--prompts", "--prompt", dest="prompts", required=True,
                   help="base prompts a|b|c (trailing whitespace is normalised) or @file")
    p.add_argument("--layers", default=None, help="layers (default: every 4th + last)")
    p.add_argument("-s", "--summary-only", action="store_true", help="only the per-layer summary")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    add_output_args(p)
    return p


def render(r, info, summary_only: bool) -> None:
    model_header(info)
    out.print(f"Note: {r.note}\n")
    if not summary_only:
        for pair in r.pairs:
            out.print(esc(f"Prompt {short(pair.base, 40)}: last token with space {pair.last_token_with_space!r}, "
                          f"without {pair.last_token_without_space!r}"))
            out.print("  " + "  ".join(f"L{layer}: {c:.3f}" for layer, c in pair.cosine_by_layer.items()))
        out.print("")
    t = Table(title="Format sensitivity by layer (with vs without trailing space)", title_justify="left")
    for col in ("Layer", "within-format", "between-format", "separation", "mean pair cos"):
        t.add_column(col, justify="right")
    for fl in r.layers:
        t.add_row(str(fl.layer), f"{fl.within_label:.4f}", f"{fl.between_label:.4f}", f"{fl.separation:+.4f}",
                  f"{fl.mean_pair_cosine:.4f}")
    out.print(t)
    worst = max(r.layers, key=lambda fl: fl.separation)
    out.print(f"Most format-sensitive layer: {worst.layer} (separation {worst.separation:+.4f})")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.representations import format_sensitivity
    from engine.results.layers import FormatSensitivityRequest

    req = FormatSensitivityRequest(model=args.model, prompts=split_prompts(args.prompts),
                                   layers=parse_layers(args.layers) if args.layers else None, chat=args.chat)
    from engine.distributed import world

    w = world()
    return run_analysis(args, "format-sensitivity", lambda lm, ctx: format_sensitivity(
        lm, req, ctx.cancelled, ctx.counter("blocks", "activations"), world=w),
        lambda r, info: render(r, info, args.summary_only))
