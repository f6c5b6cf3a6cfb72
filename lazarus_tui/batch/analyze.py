"""`lazarus --batch analyze`: the logit lens, as the seed documents it."""

from __future__ import annotations

from lazarus_tui.batch import flags as F
from lazarus_tui.batch.common import (
    ArgumentParser,
    add_chat_args,
    add_model_args,
    add_output_args,
    bar,
    model_header,
    out,
    pipeline_stage,
    run_analysis,
)
from lazarus_tui.inputs import parse_layers


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch analyze", description="logit lens: what each layer predicts")
    add_model_args(p)
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("--all-layers", action="store_true", help="capture every layer")
    p.add_argument("-s", "--layer-step", type=F.integer(1, 100_000), default=4)
    p.add_argument("--layer-strategy", default=None, help="all|evenly_spaced|first_last|custom")
    p.add_argument("--layers", default=None, help="custom layers, e.g. 0,4,8 or 20-23")
    p.add_argument("-t", "--track", action="append", default=[], help="token to track (repeatable)")
    p.add_argument("--top-k", type=F.top_k, default=5)
    p.add_argument("--embedding-scale", type=F.real(0, 1e4, lo_open=True), default=None)
    p.add_argument("--pipeline", action="store_true",
                   help="under a distributed launcher: split the model's layers across the ranks "
                        "(for models larger than one machine; docs/distributed.md)")
    p.add_argument("--position", type=F.position, default=-1, help="prompt position to read (default: last)")
    p.add_argument("--lens", default="logit", help="logit (default), tuned:FILE, or tuned (the model's default "
                   "file; lazarus --batch tuned-lens train)")
    add_chat_args(p)
    add_output_args(p)
    return p


def request_from_args(args):
    from engine.errors import InputError
    from engine.results.analyze import AnalyzeRequest, LayerStrategy

    strategy = args.layer_strategy
    if strategy is None:
        strategy = "all" if args.all_layers else ("custom" if args.layers else "evenly_spaced")
    try:
        strategy = LayerStrategy(strategy.lower())
    except ValueError as exc:
        raise InputError(f"unknown layer strategy {args.layer_strategy!r} "
                         f"(choose from {', '.join(s.value for s in LayerStrategy)})") from exc
    if args.prompt == "":
        raise InputError("empty prompt")
    for t in args.track:
        if t == "":
            raise InputError("tracked token is empty")
    layers = parse_layers(args.layers) if args.layers else None
    from engine.tuned_lens import parse_lens_spec

    parse_lens_spec(args.lens)
    return AnalyzeRequest(model=args.model, prompt=args.prompt, layer_strategy=strategy, layer_step=args.layer_step,
                          custom_layers=layers, top_k=args.top_k, track_tokens=args.track,
                          embedding_scale=args.embedding_scale, chat=args.chat, position=args.position,
                          lens=args.lens)


def render(r, info) -> None:
    model_header(info)
    out.print(f"Analyzing: {r.prompt!r}\n")
    out.print(f"Tokens ({len(r.tokens)}): {r.tokens!r}")
    if r.position != len(r.tokens) - 1:
        out.print(f"Position: {r.position} ({r.tokens[r.position]!r})")
    out.print(f"Captured layers: {r.captured_layers}\n")
    out.print("=== Final Prediction ===")
    for tp in r.final_prediction:
        out.print(f"  {tp.probability:.4f} {bar(tp.probability):<50} {tp.token!r}")
    if r.lens is not None:
        b = r.lens
        out.print(f"\nTuned lens: {b.path} (trained for {b.model_id}, weights {b.weights_hash}, {b.tokens} positions)")
    out.print(f"\n=== {'Tuned' if r.lens is not None else 'Logit'} Lens (top prediction at each layer) ===")
    out.print(f"  {'Layer':>5}  {'top-1':<16} {'p':>7} {'entropy':>8} {'norm':>5}  top-k")
    for lp in r.layer_predictions:
        mark = "*" if lp.layer_idx == r.decision_layer else " "
        rest = ", ".join(f"{t.token!r} {t.probability:.3f}" for t in lp.predictions[1:])
        out.print(f"{mark} {lp.layer_idx:>5}  {lp.top_token!r:<16} {lp.top_probability:7.4f} {lp.entropy:8.3f} "
                  f"{lp.entropy_normalized:5.2f}  {rest}")
    if r.token_evolutions:
        out.print("\n=== Token Evolution ===")
        for ev in r.token_evolutions:
            out.print(f"Token {ev.token!r} (id {ev.token_id}):")
            if ev.note:
                out.print(f"  note: {ev.note}")
            for layer, prob in ev.layer_probabilities.items():
                out.print(f"  Layer {layer:>2}: {prob:.4f} {bar(prob, 56):<56} (rank {ev.layer_ranks[layer]})")
            if ev.emergence_layer is not None:
                out.print(f"  --> Becomes top-1 at layer {ev.emergence_layer}")
            else:
                out.print("  --> Never top-1 in the captured layers")
    out.print("")
    if r.decision_layer is not None:
        out.print(f"Decision layer: {r.decision_layer} (first confident layer whose top-1 is the final {r.predicted_token!r})")
    else:
        out.print("Decision layer: none (no captured layer is confident in the final prediction)")
    t = r.max_kl_transition
    if t is not None:
        out.print(f"Max KL transition: layers {t.from_layer} -> {t.to_layer} "
                  f"(KL {t.kl_divergence:.3f}, JS {t.js_divergence:.3f})")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    req = request_from_args(args)
    from engine.distributions import prepare
    from engine.lens import analyze

    prepare()  # compiled while the model loads

    stage = pipeline_stage(args.pipeline)
    return run_analysis(args, "analyze", lambda lm, ctx: analyze(
        lm, req, ctx.cancelled, lambda layer, n: ctx.progress("layer", layer + 1, n, "analyze: layers"),
        pipeline=stage), render, stage)


def twin_command(req, model: str | None = None) -> str:
    """The `lazarus --batch analyze` line that makes the same request (the TUI's `b` key)."""
    import shlex

    parts = ["lazarus", "--batch", "analyze"]
    if model or req.model:
        parts += ["-m", model or req.model]
    parts += ["-p", req.prompt]
    strategy = req.layer_strategy.value
    if strategy == "all":
        parts.append("--all-layers")
    elif strategy == "custom":
        parts += ["--layers", ",".join(str(x) for x in req.custom_layers or [])]
    elif strategy == "first_last":
        parts += ["--layer-strategy", "first_last"]
    elif req.layer_step != 4:
        parts += ["-s", str(req.layer_step)]
    for t in req.track_tokens:
        parts += ["-t", t]
    if req.top_k != 5:
        parts += ["--top-k", str(req.top_k)]
    if req.position != -1:
        parts += ["--position", str(req.position)]
    if req.chat:
        parts.append("--chat")
    if req.embedding_scale is not None:
        parts += ["--embedding-scale", str(req.embedding_scale)]
    if req.lens != "logit":
        parts += ["--lens", req.lens]
    return shlex.join(parts)
