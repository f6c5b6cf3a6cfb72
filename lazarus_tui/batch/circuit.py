"""`lazarus --batch circuit ...` (also the `circuit` entry point): the circuit toolkit.

Subcommands: dataset {create,show}, collect, analyze, directions, visualize, probes {run,init}.
See docs/circuit.md.
"""

from __future__ import annotations

import argparse
import sys

from rich.table import Table

from engine.errors import InputError
from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.common import ArgumentParser, JobRunner, add_model_args, emit, err, out, write_atomic
from lazarus_tui.inputs import parse_layers

SUBCOMMANDS = ("dataset", "collect", "analyze", "directions", "visualize", "probes")


def _json_args(p: argparse.ArgumentParser, result_file: bool = True) -> None:
    if result_file:
        p.add_argument("-o", "--output", type=F.output_file, default=None, help="write the result as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the result model as JSON on stdout")


def _emit_json_only(result, args) -> None:
    """For commands whose -o is not the JSON result: --json prints; --result writes."""
    text = result.model_dump_json(indent=2)
    if getattr(args, "result", None):
        write_atomic(args.result, text + "\n")
    if args.json:
        sys.stdout.write(text + "\n")


# -- dataset ---------------------------------------------------------------------------------
def dataset_parser() -> ArgumentParser:
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
    t = Table(title="Labels", title_justify="left")
    t.add_column("label")
    t.add_column("count", justify="right")
    for lc in r.labels:
        t.add_row(esc(lc.name), str(lc.count))
    out.print(t)
    t = Table(title="Categories", title_justify="left")
    t.add_column("category")
    t.add_column("count", justify="right")
    for lc in r.categories:
        t.add_row(esc(lc.name), str(lc.count))
    out.print(t)
    if r.samples:
        out.print(f"Samples ({len(r.samples)}):")
        for p in r.samples:
            cat = p.category or ""
            out.print(esc(f"  [{p.label}] {cat:<16} {p.text!r}"))


def dataset_main(argv: list[str]) -> int:
    args = dataset_parser().parse_args(argv)
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


# -- collect ---------------------------------------------------------------------------------
def collect_parser() -> ArgumentParser:
    p = ArgumentParser(prog="circuit collect", description="run a dataset through the model; stream layer "
                       "outputs to .safetensors (resumable: rerun the same command after an interruption)")
    add_model_args(p)
    p.add_argument("-d", "--dataset", required=True, help="dataset file (.json/.jsonl)")
    p.add_argument("-o", "--output", type=F.output_file, required=True, help="activation file (.safetensors added if missing)")
    p.add_argument("--layers", default="all", help="all | decision (depth band 40-75%%) | list such as 8,10 or 20-23")
    p.add_argument("--position", choices=("last", "mean"), default="last",
                   help="last prompt token, or the mean over the prompt's tokens")
    p.add_argument("--batch-size", type=F.integer(1, 1024), default=16)
    p.add_argument("--generate", type=F.integer(0, F.MAX_TOKENS), default=0, metavar="N",
                   help="also generate N tokens per prompt (greedy)")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    p.add_argument("--result", type=F.output_file, default=None, help="write the run summary as JSON to this file")
    _json_args(p, result_file=False)
    return p


def collect_main(argv: list[str]) -> int:
    args = collect_parser().parse_args(argv)
    from engine.circuit.collect import collect
    from engine.circuit.dataset import load_dataset
    from engine.circuit.models import CollectRequest

    ds = load_dataset(args.dataset)  # validate before loading the model
    req = CollectRequest(model=args.model, dataset=args.dataset, output=args.output, layers=args.layers,
                         position=args.position, batch_size=args.batch_size, generate=args.generate, chat=args.chat)
    from engine.distributed import world

    runner = JobRunner(args.model, args.dtype)
    w = world()

    def job(ctx):
        lm = ctx.model()
        return collect(lm, req, ctx.cancelled, lambda d, t: ctx.progress("batch", d, t, "collect: batches"),
                       dataset=ds, world=w)

    r = runner.run(job, "collect")
    if r is None:  # a rank other than 0: rank 0 writes and reports
        return 0
    for w in r.warnings:
        err.print(f"warning: {w}", markup=False)
    _emit_json_only(r, args)
    if not args.json:
        out.print(esc(f"Collected {r.num_prompts} prompts x {len(r.captured_layers)} layers "
                      f"(hidden {r.hidden_size}, {r.request.position} position) from {r.model_id}"))
        out.print(esc(f"  layers: {r.layer_selection} -> {_layer_text(r.captured_layers)}"))
        out.print(f"  batches: {r.batches_total} ({r.batches_computed} computed now, {r.batches_reused} reused "
                  f"from an interrupted run)")
        out.print(f"  {r.seconds:.1f} s, {r.prompts_per_second:.1f} prompts/s")
        out.print(esc(f"  activations: {r.activations_file} ({r.file_bytes / 1e6:.1f} MB)"))
        out.print(esc(f"  metadata:    {r.metadata_file}"))
    return 0


def _layer_text(layers: list[int]) -> str:
    from engine.circuit.activations import _ranges

    return _ranges(list(layers))


# -- analyze ---------------------------------------------------------------------------------
def analyze_parser() -> ArgumentParser:
    p = ArgumentParser(prog="circuit analyze", description="per-layer PCA, binary/category probes, "
                       "optional UMAP and k-means")
    p.add_argument("-a", "--activations", required=True, help="activation file from circuit collect")
    p.add_argument("--layer", type=F.layer, default=None, help="one layer (default: every collected layer)")
    p.add_argument("--layers", default=None, help="several layers, e.g. 8,10 or 20-23")
    p.add_argument("--umap", action="store_true", help="UMAP embedding at the layer (or the best layer)")
    p.add_argument("--kmeans", action="store_true", help="k-means silhouette and ARI vs categories")
    p.add_argument("--seed", type=F.seed, default=0)
    _json_args(p)
    return p


def render_analyze(r) -> None:
    out.print(esc(f"Activations: {r.activations_file} ({r.model_id}), {r.num_prompts} prompts"))
    out.print(esc("  labels: " + ", ".join(f"{k} {v}" for k, v in r.label_counts.items())))
    out.print(esc("  categories: " + ", ".join(f"{k} {v}" for k, v in r.category_counts.items())))
    t = Table(title="Geometry by layer (held-out = 25% stratified test split; CV = stratified k-fold)",
              title_justify="left")
    cols = ["Layer", "PCA 90%", "PCA 95%", "PC1", "bin held", "bin CV", "cat held", "cat CV"]
    kmeans = any(g.kmeans_silhouette is not None for g in r.layers)
    if kmeans:
        cols += ["k-means sil", "ARI"]
    for c in cols:
        t.add_column(c, justify="right")
    for g in r.layers:
        bp, cp = g.binary_probe, g.category_probe
        row = [str(g.layer), str(g.dims_90), str(g.dims_95), f"{g.variance_explained[0]:.3f}",
               f"{bp.heldout_accuracy:.3f}" + ("*" if g.layer == r.best_layer else ""), f"{bp.cv_accuracy:.3f}",
               f"{cp.heldout_accuracy:.3f}" if cp else "-", f"{cp.cv_accuracy:.3f}" if cp else "-"]
        if kmeans:
            row += [f"{g.kmeans_silhouette:.3f}" if g.kmeans_silhouette is not None else "-",
                    f"{g.kmeans_ari:.3f}" if g.kmeans_ari is not None else "-"]
        t.add_row(*row)
    out.print(t)
    b = next(g for g in r.layers if g.layer == r.best_layer)
    out.print(f"Binary baseline (majority): {b.binary_probe.baseline:.3f}")
    out.print(f"Best layer (binary probe): {r.best_layer} (held-out {b.binary_probe.heldout_accuracy:.3f}, "
              f"CV {b.binary_probe.cv_accuracy:.3f})")
    if r.best_category_layer is not None:
        c = next(g for g in r.layers if g.layer == r.best_category_layer).category_probe
        out.print(f"Best layer (category probe, {c.classes} classes, baseline {c.baseline:.3f}): "
                  f"{r.best_category_layer} (held-out {c.heldout_accuracy:.3f}, CV {c.cv_accuracy:.3f})")
    for g in r.layers:
        if g.umap is not None:
            out.print(f"UMAP embedding computed at layer {g.layer} ({len(g.umap)} points; in --json / -o)")
    for n in r.notes:
        out.print(esc(f"note: {n}"))


def analyze_main(argv: list[str]) -> int:
    args = analyze_parser().parse_args(argv)
    from engine.circuit.activations import load_activations
    from engine.circuit.geometry import analyze

    acts = load_activations(args.activations)
    layers = parse_layers(args.layers) if args.layers else None
    r = analyze(acts, layer=args.layer, layers=layers, umap=args.umap, kmeans=args.kmeans, seed=args.seed)
    emit(r, args, render_analyze)
    return 0


# -- directions ------------------------------------------------------------------------------
def directions_parser() -> ArgumentParser:
    p = ArgumentParser(prog="circuit directions", description="extract directions at one layer; held-out "
                       "accuracy and separation; .npz files readable by steer -d and directions")
    p.add_argument("-a", "--activations", required=True)
    p.add_argument("--layer", type=F.layer, default=None, help="the layer (required when the file has several)")
    p.add_argument("--method", choices=("diff_means", "lda", "probe_weights", "pca"), default="diff_means")
    p.add_argument("--per-tool", action="store_true", help="one direction per category (tool), one-vs-rest")
    p.add_argument("-o", "--output", type=F.output_dir, default=None, metavar="DIR", help="directory for the .npz files")
    p.add_argument("--seed", type=F.seed, default=0)
    p.add_argument("--result", type=F.output_file, default=None, help="write the result as JSON to this file")
    p.add_argument("--json", action="store_true")
    return p


def render_directions(r) -> None:
    out.print(esc(f"Directions at layer {r.layer} ({r.method}) from {r.activations_file}"))
    t = Table(title="Held-out: fitted on 75%, scored on the other 25%", title_justify="left")
    for c in ("direction (+ vs -)", "norm", "train/test", "acc", "sep", "train sep"):
        t.add_column(c, justify="left" if c.startswith("direction") else "right")
    for d in r.directions:
        t.add_row(esc(f"{d.positive} vs {d.negative}"), f"{d.norm:.2f}", f"{d.n_train}/{d.n_test}",
                  f"{d.heldout_accuracy:.3f}", f"{d.heldout_separation:.2f}", f"{d.train_separation:.2f}")
    out.print(t)
    out.print("acc: test projections thresholded at the cut that best splits the training projections; "
              "sep: (mean+ - mean-) / pooled std")
    if r.cosine:
        from lazarus_tui.batch._analysis_common import cosine_table

        out.print(cosine_table("Cosine between directions", [d.positive for d in r.directions], r.cosine))
    files = [d.file for d in r.directions if d.file]
    if files:
        out.print(f"Saved {len(files)} direction files (steer -d FILE, directions FILE...):")
        for f in files:
            out.print(esc(f"  {f}"))


def directions_main(argv: list[str]) -> int:
    args = directions_parser().parse_args(argv)
    from engine.circuit.activations import load_activations
    from engine.circuit.directions import extract

    acts = load_activations(args.activations)
    layer = args.layer
    if layer is None:
        if len(acts.layers) != 1:
            raise InputError(f"--layer is required: {args.activations} holds layers {_layer_text(acts.layers)}")
        layer = acts.layers[0]
    r = extract(acts, layer, args.method, args.per_tool, args.output, args.seed)
    _emit_json_only(r, args)
    if not args.json:
        render_directions(r)
    return 0


# -- visualize -------------------------------------------------------------------------------
def visualize_parser() -> ArgumentParser:
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


def visualize_main(argv: list[str]) -> int:
    args = visualize_parser().parse_args(argv)
    from engine.circuit.activations import load_activations
    from engine.circuit.visualize import visualize

    everything = args.all or not (args.pca or args.umap or args.probes)
    acts = load_activations(args.activations)
    analysis = None
    if args.analysis:
        from pydantic import ValidationError

        from engine.circuit.models import AnalyzeResult
        from engine.fileio import read_text

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


# -- probes ----------------------------------------------------------------------------------
def probes_parser() -> ArgumentParser:
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
    _json_args(r)
    i = sub.add_parser("init", help="write the built-in probe datasets to a directory for editing")
    i.add_argument("-o", "--output", type=F.output_dir, required=True, metavar="DIR")
    return p


def render_probes(r) -> None:
    out.print(esc(f"Probe battery on {r.model_id}: {len(r.probes)} probes, layers {_layer_text(r.captured_layers)}, "
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
    out.print(f"CV accuracy by layer ({_layer_text(r.captured_layers)}; █ = 1.0):")
    for p in r.probes:
        spark = "".join(blocks[min(8, int(round(s.cv_accuracy * 8)))] for s in p.layers)
        out.print(esc(f"  {p.name:<{width}} {spark}"))


def probes_main(argv: list[str]) -> int:
    args = probes_parser().parse_args(argv)
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

    runner = JobRunner(args.model, args.dtype)
    w = world()

    def job(ctx):
        lm = ctx.model()
        return run_battery(lm, layers, args.datasets, args.category, args.threshold, args.chat, args.seed,
                           ctx.cancelled, lambda s, d, t: ctx.progress(s, d, t, f"probes: {s}"), world=w)

    r = runner.run(job, "probes")
    if r is None:  # a rank other than 0
        return 0
    emit(r, args, render_probes)
    return 0


# -- dispatch --------------------------------------------------------------------------------
def usage() -> str:
    return "usage: circuit {" + ",".join(SUBCOMMANDS) + "} [options]   (circuit NAME -h for help)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    handlers = {"dataset": dataset_main, "collect": collect_main, "analyze": analyze_main,
                "directions": directions_main, "visualize": visualize_main, "probes": probes_main}
    if name not in handlers:
        raise InputError(f"unknown subcommand {name!r}; {usage()}")
    return handlers[name](rest)
