"""`lazarus --batch weight-diff`: relative Frobenius norm of weight differences per matrix."""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import add_pair_args, esc, print_wide, run_pair, two_model_header
from lazarus_tui.batch.common import ArgumentParser, add_output_args, out

_HEAD = {"attn_norm": "ln_attn", "post_attn_norm": "ln_post", "pre_ff_norm": "ln_preff", "post_ff_norm": "ln_postff"}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch weight-diff",
                       description="||W_f - W_b|| / ||W_b|| per layer and matrix (same architecture required)")
    add_pair_args(p)
    p.add_argument("--flag", type=F.real(0, 1e6), default=0.1, help="flag matrices whose relative difference exceeds this")
    add_output_args(p)
    return p


def render(r, infos) -> None:
    two_model_header(out, infos)
    out.print("")
    names = [m for m in dict.fromkeys(x.matrix for x in r.matrices if x.layer is not None)]
    layers = sorted({x.layer for x in r.matrices if x.layer is not None})
    grid = {(x.layer, x.matrix): x for x in r.matrices}
    t = Table(title="Relative weight difference ||W_f - W_b|| / ||W_b|| (red: > flag)", title_justify="left")
    t.add_column("Layer", justify="right", no_wrap=True)
    for n in names:
        t.add_column(_HEAD.get(n, n), justify="right", no_wrap=True)
    for layer in layers:
        cells = []
        for n in names:
            m = grid.get((layer, n))
            cells.append("" if m is None else (f"[red]{m.relative:.3f}[/red]" if m.flagged else f"{m.relative:.3f}"))
        t.add_row(str(layer), *cells)
    print_wide(out, t, 12 + 10 * len(names))
    out.print("  " + ", ".join(f"{v} = {k}" for k, v in _HEAD.items() if k in names))
    for m in r.matrices:
        if m.layer is None:
            out.print(esc(f"{m.matrix}: {m.relative:.4f}" + ("  FLAGGED" if m.flagged else "")))
    out.print(f"\nMax relative difference: {r.max_relative:.4f}; flagged (> {r.request.flag_above}): "
              f"{r.flagged_count} of {len(r.matrices)}")
    for note in r.notes:
        out.print(esc(f"note: {note}"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.diff import weight_diff
    from engine.results.diff import WeightDiffRequest

    dtype2 = args.dtype2 or args.dtype
    req = WeightDiffRequest(base=args.base, finetuned=args.finetuned or args.base, base_dtype=args.dtype,
                            finetuned_dtype=dtype2, flag_above=args.flag)
    return run_pair(args, args.base, args.finetuned, dtype2, lambda a, b, ctx: weight_diff(a, b, req, ctx.cancelled),
                    "weight-diff", render)
