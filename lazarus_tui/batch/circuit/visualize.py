"""`circuit visualize`: PNG charts, and the same charts in the terminal. See docs/circuit.md."""

from __future__ import annotations

import sys

from engine.errors import InputError
from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.common import ArgumentParser, out


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="circuit visualize", description="PNG charts and the same charts in the terminal")
    p.add_argument("-a", "--activations", required=True)
    p.add_argument("--layer", type=F.layer, default=None, help="layer for PCA/UMAP (default: best probe layer)")
    p.add_argument("-o", "--output", type=F.output_dir, required=True, metavar="DIR", help="directory for the PNG files")
    p.add_argument("--pca", action="store_true")
    p.add_argument("--umap", action="store_true")
    p.add_argument("--probes", action="store_true")
    p.add_argument("--all", action="store_true", help="every chart (the default when none is chosen)")
    p.add_argument("--analysis", default=None, metavar="FILE.json",
                   help="a saved 'circuit analyze -o' result for this file (skips recomputing PCA and probes)")
    p.add_argument("--no-terminal", action="store_true", help="do not print the terminal charts")
    p.add_argument("--seed", type=F.seed, default=0)
    p.add_argument("--json", action="store_true")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.circuit.activations import load_activations
    from engine.circuit.visualize import visualize

    everything = args.all or not (args.pca or args.umap or args.probes)
    acts = load_activations(args.activations)
    analysis = None
    if args.analysis:
        from pydantic import ValidationError

        from engine.fileio import read_text
        from engine.results.circuit import AnalyzeResult

        try:
            analysis = AnalyzeResult.model_validate_json(read_text(args.analysis, "analysis file"))
        except ValidationError as exc:
            raise InputError(f"{args.analysis} is not a circuit analyze result: {exc.errors()[0]['msg']}") from None
    r = visualize(acts, args.output, args.layer, pca=everything or args.pca, umap=everything or args.umap,
                  probes=everything or args.probes, seed=args.seed, analysis=analysis)
    if args.json:
        sys.stdout.write(r.model_dump_json(indent=2) + "\n")
        return 0
    if not args.no_terminal:
        import re

        for chart in r.terminal_charts:
            if not sys.stdout.isatty():
                chart = re.sub(r"\x1b\[[0-9;]*m", "", chart)
            sys.stdout.write(chart + "\n\n")
    out.print(f"Layer {r.layer}; wrote {len(r.files)} PNG files:")
    for f in r.files:
        out.print(esc(f"  {f}"))
    return 0
