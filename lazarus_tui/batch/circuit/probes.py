"""`circuit probes {run,init}`: probe batteries (per-layer CV accuracy, emergence layer per probe). See docs/circuit.md."""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.circuit._common import json_args, layer_text
from lazarus_tui.batch.common import ArgumentParser, add_model_args, out, run_analysis
from lazarus_tui.inputs import parse_layers


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="circuit probes", description="probe batteries: per-layer CV accuracy and "
                       "emergence layer per probe")
    sub = p.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    r = sub.add_parser("run", help="run the battery (built-in, or the datasets in --datasets DIR)")
    add_model_args(r)
    r.add_argument("--layers", default=None, help="layers to probe (default: all)")
    r.add_argument("--datasets", default=None, metavar="DIR", help="probe datasets (default: built-in)")
    r.add_argument("--category", default=None, help="syntactic | semantic | decision")
    r.add_argument("--threshold", type=F.real(0, 1, lo_open=True), default=0.75, help="CV accuracy that counts as emerged")
    r.add_argument("--chat", action="store_true")
    r.add_argument("--seed", type=F.seed, default=0)
    json_args(r)
    i = sub.add_parser("init", help="write the built-in probe datasets to a directory for editing")
    i.add_argument("-o", "--output", type=F.output_dir, required=True, metavar="DIR")
    return p


def render_probes(r) -> None:
    out.print(esc(f"Probe battery on {r.model_id}: {len(r.probes)} probes, layers {layer_text(r.captured_layers)}, "
                  f"{r.forwards} batched forwards (all layers each), threshold {r.threshold}"))
    t = Table(title="Stratigraphy (CV accuracy vs majority baseline)", title_justify="left")
    for c in ("probe", "category", "n", "base", "emerges", "peak", "peak acc"):
        t.add_column(c, justify="left" if c in ("probe", "category") else "right")
    for p in r.probes:
        t.add_row(esc(p.name), p.category, str(p.n_prompts), f"{p.baseline:.2f}",
                  "-" if p.emergence_layer is None else str(p.emergence_layer), str(p.peak_layer),
                  f"{p.peak_accuracy:.3f}")
    out.print(t)
    blocks = " ▁▂▃▄▅▆▇█"
    width = max(len(p.name) for p in r.probes)
    out.print(f"CV accuracy by layer ({layer_text(r.captured_layers)}; █ = 1.0):")
    for p in r.probes:
        spark = "".join(blocks[min(8, int(round(s.cv_accuracy * 8)))] for s in p.layers)
        out.print(esc(f"  {p.name:<{width}} {spark}"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.circuit.probes import init_datasets, run_battery

    if args.action == "init":
        files = init_datasets(args.output)
        out.print(esc(f"wrote {len(files)} probe datasets to {args.output}:"))
        for f in files:
            out.print(esc(f"  {f}"))
        return 0
    layers = parse_layers(args.layers) if args.layers else None
    from engine.circuit.probes import load_battery

    load_battery(args.datasets, args.category)  # validate before loading the model
    from engine.distributed import world

    w = world()
    return run_analysis(args, "probes", lambda lm, ctx: run_battery(
        lm, layers, args.datasets, args.category, args.threshold, args.chat, args.seed, ctx.cancelled,
        lambda s, d, t: ctx.progress(s, d, t, f"probes: {s}"), world=w), lambda r, info: render_probes(r))
