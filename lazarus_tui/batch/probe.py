"""`lazarus --batch probe`: linear probes per layer, direction extraction."""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.common import (
    ArgumentParser,
    add_model_args,
    add_output_args,
    bar,
    emit,
    err,
    model_header,
    out,
    run_on_model,
)
from lazarus_tui.inputs import parse_layers, split_prompts


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch probe",
                       description="logistic-regression probes per layer (stratified k-fold CV)")
    add_model_args(p)
    p.add_argument("--class-a", required=True, help="class A prompts a|b|c or @file (the positive class)")
    p.add_argument("--class-b", required=True, help="class B prompts a|b|c or @file")
    p.add_argument("--label-a", default="A")
    p.add_argument("--label-b", default="B")
    p.add_argument("-t", "--test", default=None, help="prompts to score with the trained probe (a|b or @file)")
    p.add_argument("-l", "--layer", type=F.layer, default=None,
                   help="layer for the direction and the test prompts (default: the best layer)")
    p.add_argument("--layers", default=None, help="layers to probe (default: all)")
    p.add_argument("--save-direction", type=F.output_file, default=None, metavar="FILE.npz", help="write the direction (.npz)")
    p.add_argument("--method", choices=("logistic", "difference"), default="logistic",
                   help="direction: logistic coefficients or normalised class-mean difference")
    p.add_argument("--seed", type=F.seed, default=0, help="CV shuffling seed")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    add_output_args(p)
    return p


def render(r, info) -> None:
    model_header(info)
    req = r.request
    out.print(esc(f"Class A ({req.label_a}): {len(req.class_a)} prompts; class B ({req.label_b}): "
                  f"{len(req.class_b)} prompts; {r.layers[0].folds}-fold stratified CV"))
    t = Table(title="Probe accuracy by layer (held-out = out-of-fold predictions)", title_justify="left")
    for col in ("Layer", "CV acc", "± std", "F1", "AUC", ""):
        t.add_column(col, justify="right" if col else "left")
    for pl in r.layers:
        mark = " *" if pl.layer == r.best_layer else ""
        t.add_row(str(pl.layer), f"{pl.cv_accuracy:.3f}", f"{pl.cv_std:.3f}", f"{pl.heldout_f1:.3f}",
                  f"{pl.heldout_auc:.3f}", bar(pl.cv_accuracy, 30) + mark)
    out.print(t)
    out.print(f"Best layer: {r.best_layer} (CV accuracy {max(pl.cv_accuracy for pl in r.layers):.3f})")
    out.print(f"Direction ({r.method}) at layer {r.direction_layer}: norm {r.direction_norm:.4f}, "
              f"CV accuracy {r.accuracy:.3f}, separation {r.separation:.3f} (pooled-std units)")
    if r.test_predictions:
        out.print("\n=== Test prompts ===")
        for tp in r.test_predictions:
            out.print(esc(f"  {tp.label:<12} P({req.label_a})={tp.probability_a:.3f}  proj {tp.projection:+.3f}  "
                          f"{tp.prompt!r}"))
    if r.saved_to:
        out.print(esc(f"\nSaved direction: {r.saved_to}"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.probe import run_probe, save_probe_direction
    from engine.results.probe import ProbeRequest

    req = ProbeRequest(model=args.model, class_a=split_prompts(args.class_a), class_b=split_prompts(args.class_b),
                       label_a=args.label_a, label_b=args.label_b,
                       layers=parse_layers(args.layers) if args.layers else None, layer=args.layer,
                       method=args.method, test=split_prompts(args.test) if args.test else [], chat=args.chat,
                       seed=args.seed)
    from engine.distributed import world

    w = world()
    info, result = run_on_model(args, "probe", lambda lm, ctx: run_probe(
        lm, req, ctx.cancelled, lambda i, n: ctx.progress("layer", i + 1, n, "probe: layers"), w))
    if result is None:  # a rank other than 0 under a distributed launcher: rank 0 reports
        return 0
    if args.save_direction:
        result = save_probe_direction(result, args.save_direction)
        if args.json:
            err.print(f"saved direction {result.saved_to}", markup=False)
    emit(result, args, lambda r: render(r, info))
    return 0
