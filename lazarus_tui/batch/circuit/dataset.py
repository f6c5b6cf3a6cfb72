"""`circuit dataset {create,show}`: labelled prompt datasets (tool calling, arithmetic, binary, contrastive).
See docs/circuit.md."""

from __future__ import annotations

import sys

from rich.table import Table

from engine.errors import InputError
from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.common import ArgumentParser, err, out


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="circuit dataset", description="create or show labelled prompt datasets")
    sub = p.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    c = sub.add_parser("create", help="build a dataset and save it (JSON, or JSONL for a .jsonl name)")
    c.add_argument("-o", "--output", type=F.output_file, required=True, help="dataset file (.json or .jsonl)")
    c.add_argument("--kind", choices=("tool_calling", "arithmetic", "binary", "contrastive"), default="tool_calling")
    c.add_argument("--per-tool", type=F.integer(0, 100_000), default=25, help="tool_calling: prompts per tool (default 25)")
    c.add_argument("--no-tool", type=F.integer(0, 100_000), default=100,
                   help="tool_calling: prompts needing no tool (default 100)")
    c.add_argument("--tools", default=None, help="tool_calling: comma list of tools (default: all six)")
    c.add_argument("--count", type=F.integer(1, 100_000), default=100, help="arithmetic: number of prompts")
    c.add_argument("--ops", default="+-*", help="arithmetic: operations from +-*")
    c.add_argument("--positive", default=None, help="binary/contrastive: file, one positive prompt per line")
    c.add_argument("--negative", default=None, help="binary/contrastive: file, one negative prompt per line")
    c.add_argument("--label-positive", default="positive")
    c.add_argument("--label-negative", default="negative")
    c.add_argument("--name", default=None, help="dataset name")
    c.add_argument("--seed", type=F.seed, default=42)
    c.add_argument("--json", action="store_true", help="print the dataset summary as JSON")
    s = sub.add_parser("show", help="counts per label and category, and sample prompts")
    s.add_argument("dataset")
    s.add_argument("--samples", type=F.integer(0, 100_000), default=10)
    s.add_argument("--json", action="store_true")
    return p


def render_summary(r) -> None:
    out.print(esc(f"Dataset {r.name} ({r.kind}): {r.total} prompts  [{r.path}]"))
    for title, column, counts in (("Labels", "label", r.labels), ("Categories", "category", r.categories)):
        t = Table(title=title, title_justify="left")
        t.add_column(column)
        t.add_column("count", justify="right")
        for lc in counts:
            t.add_row(esc(lc.name), str(lc.count))
        out.print(t)
    if r.samples:
        out.print(f"Samples ({len(r.samples)}):")
        for p in r.samples:
            cat = p.category or ""
            out.print(esc(f"  [{p.label}] {cat:<16} {p.text!r}"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.circuit import dataset as D

    if args.action == "show":
        ds = D.load_dataset(args.dataset)
        r = D.summarize(ds, args.dataset, args.samples)
        if args.json:
            sys.stdout.write(r.model_dump_json(indent=2) + "\n")
        else:
            render_summary(r)
        return 0
    warnings: list[str] = []
    if args.kind == "tool_calling":
        tools = [t.strip() for t in args.tools.split(",") if t.strip()] if args.tools else None
        ds = D.tool_calling(args.per_tool, args.no_tool, args.seed, tools, warnings)
    elif args.kind == "arithmetic":
        ds = D.arithmetic(args.count, args.seed, args.ops)
    else:
        if not args.positive or not args.negative:
            raise InputError(f"--kind {args.kind} needs --positive FILE and --negative FILE")
        ds = D.binary(args.positive, args.negative, args.label_positive, args.label_negative,
                      contrastive=args.kind == "contrastive", name=args.name)
    if args.name:
        ds = ds.model_copy(update={"name": args.name})
    path = D.save_dataset(ds, args.output)
    for w in warnings:
        err.print(f"warning: {w}", markup=False)
    r = D.summarize(ds, str(path), samples=0 if args.json else 5)
    if args.json:
        sys.stdout.write(r.model_dump_json(indent=2) + "\n")
    else:
        render_summary(r)
        err.print(f"saved {path}", markup=False)
    return 0
