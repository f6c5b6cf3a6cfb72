"""`circuit directions`: directions at one layer, scored on a held-out split, saved as .npz. See docs/circuit.md."""

from __future__ import annotations

from rich.table import Table

from engine.errors import InputError
from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.circuit._common import emit_json_only, layer_text
from lazarus_tui.batch.common import ArgumentParser, out


def build_parser() -> ArgumentParser:
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


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.circuit.activations import load_activations
    from engine.circuit.directions import extract

    acts = load_activations(args.activations)
    layer = args.layer
    if layer is None:
        if len(acts.layers) != 1:
            raise InputError(f"--layer is required: {args.activations} holds layers {layer_text(acts.layers)}")
        layer = acts.layers[0]
    r = extract(acts, layer, args.method, args.per_tool, args.output, args.seed)
    emit_json_only(r, args)
    if not args.json:
        render_directions(r)
    return 0
