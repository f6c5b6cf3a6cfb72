"""`circuit collect`: run a dataset through the model and stream layer outputs to .safetensors (resumable).
See docs/circuit.md."""

from __future__ import annotations

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.circuit._common import emit_json_only, json_args, layer_text
from lazarus_tui.batch.common import ArgumentParser, add_model_args, err, out, run_on_model


def build_parser() -> ArgumentParser:
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
    json_args(p, result_file=False)
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.circuit.collect import collect
    from engine.circuit.dataset import load_dataset
    from engine.results.circuit import CollectRequest

    ds = load_dataset(args.dataset)  # validate before loading the model
    req = CollectRequest(model=args.model, dataset=args.dataset, output=args.output, layers=args.layers,
                         position=args.position, batch_size=args.batch_size, generate=args.generate, chat=args.chat)
    from engine.distributed import world

    w = world()
    _, r = run_on_model(args, "collect", lambda lm, ctx: collect(
        lm, req, ctx.cancelled, lambda d, t: ctx.progress("batch", d, t, "collect: batches"), dataset=ds, world=w))
    if r is None:  # a rank other than 0: rank 0 writes and reports
        return 0
    for warning in r.warnings:
        err.print(f"warning: {warning}", markup=False)
    emit_json_only(r, args)
    if not args.json:
        out.print(esc(f"Collected {r.num_prompts} prompts x {len(r.captured_layers)} layers "
                      f"(hidden {r.hidden_size}, {r.request.position} position) from {r.model_id}"))
        out.print(esc(f"  layers: {r.layer_selection} -> {layer_text(r.captured_layers)}"))
        out.print(f"  batches: {r.batches_total} ({r.batches_computed} computed now, {r.batches_reused} reused "
                  f"from an interrupted run)")
        out.print(f"  {r.seconds:.1f} s, {r.prompts_per_second:.1f} prompts/s")
        out.print(esc(f"  activations: {r.activations_file} ({r.file_bytes / 1e6:.1f} MB)"))
        out.print(esc(f"  metadata:    {r.metadata_file}"))
    return 0
