"""`lazarus --batch directions`: are these directions orthogonal?"""

from __future__ import annotations

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import cosine_table, esc
from lazarus_tui.batch.common import ArgumentParser, add_output_args, emit, out


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch directions",
                       description="cosine matrix of saved .npz directions (probe or steering files)")
    p.add_argument("files", nargs="+", help="two or more .npz files (only the 'direction' key is required)")
    p.add_argument("--threshold", type=F.real(0, 1), default=0.1, help="|cos| below this counts as orthogonal")
    add_output_args(p)
    return p


def render(r) -> None:
    out.print(f"Directions ({len(r.directions)}):")
    for d in r.directions:
        meta = ", ".join(x for x in (f"layer {d.layer}" if d.layer is not None else "",
                                     d.method or "", d.model_id or "") if x)
        out.print(esc(f"  {d.name}: dim {d.dim}, norm {d.norm:.4f}" + (f" ({meta})" if meta else "")))
    out.print("")
    out.print(cosine_table("Cosine similarity (normalised directions)", [d.name for d in r.directions], r.cosine))
    orth = [p for p in r.pairs if p.relation == "orthogonal"]
    aligned = [p for p in r.pairs if p.relation == "aligned"]
    out.print(f"\nOrthogonal pairs (|cos| < {r.request.threshold}): {len(orth)}")
    for p in orth:
        out.print(esc(f"  {p.a} ⟂ {p.b}: {p.cosine:+.4f}"))
    out.print(f"Aligned pairs (|cos| > {r.request.aligned_above}): {len(aligned)}")
    for p in aligned:
        out.print(esc(f"  {p.a} ∥ {p.b}: {p.cosine:+.4f}"))
    out.print(f"\nMean |cos| (off-diagonal): {r.mean_abs_cosine:.4f}")
    for w in r.warnings:
        out.print(esc(f"warning: {w}"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.direction_files import compare_directions
    from engine.results.directions import DirectionsRequest

    result = compare_directions(DirectionsRequest(files=args.files, threshold=args.threshold))
    emit(result, args, render)
    return 0
