"""`circuit analyze`: per-layer PCA, binary/category probes, optional UMAP and k-means. See docs/circuit.md."""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.circuit._common import json_args
from lazarus_tui.batch.common import ArgumentParser, emit, out
from lazarus_tui.inputs import parse_layers


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="circuit analyze", description="per-layer PCA, binary/category probes, "
                       "optional UMAP and k-means")
    p.add_argument("-a", "--activations", required=True, help="activation file from circuit collect")
    p.add_argument("--layer", type=F.layer, default=None, help="one layer (default: every collected layer)")
    p.add_argument("--layers", default=None, help="several layers, e.g. 8,10 or 20-23")
    p.add_argument("--umap", action="store_true", help="UMAP embedding at the layer (or the best layer)")
    p.add_argument("--kmeans", action="store_true", help="k-means silhouette and ARI vs categories")
    p.add_argument("--seed", type=F.seed, default=0)
    json_args(p)
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
    best, cat = r.at(r.best_layer), r.at(r.best_category_layer)
    if best is not None and (b := best.binary_probe) is not None:
        out.print(f"Binary baseline (majority): {b.baseline:.3f}")
        out.print(f"Best layer (binary probe): {r.best_layer} (held-out {b.heldout_accuracy:.3f}, "
                  f"CV {b.cv_accuracy:.3f})")
    if cat is not None and (c := cat.category_probe) is not None:
        out.print(f"Best layer (category probe, {c.classes} classes, baseline {c.baseline:.3f}): "
                  f"{r.best_category_layer} (held-out {c.heldout_accuracy:.3f}, CV {c.cv_accuracy:.3f})")
    for g in r.layers:
        if g.umap is not None:
            out.print(f"UMAP embedding computed at layer {g.layer} ({len(g.umap)} points; in --json / -o)")
    for n in r.notes:
        out.print(esc(f"note: {n}"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.circuit.activations import load_activations
    from engine.circuit.geometry import analyze

    acts = load_activations(args.activations)
    layers = parse_layers(args.layers) if args.layers else None
    r = analyze(acts, layer=args.layer, layers=layers, umap=args.umap, kmeans=args.kmeans, seed=args.seed)
    emit(r, args, render_analyze)
    return 0
