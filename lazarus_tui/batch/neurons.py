"""`lazarus --batch neurons`: individual neuron values per prompt."""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc, print_wide
from lazarus_tui.batch.common import ArgumentParser, add_model_args, add_output_args, model_header, out, run_analysis


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch neurons",
                       description="values of single neurons (residual dims, or MLP units with --mlp) per prompt")
    add_model_args(p)
    p.add_argument("-l", "--layer", type=F.layer, default=None)
    p.add_argument("--layers", default=None, help="several layers, e.g. 10,12 or 20-23")
    p.add_argument("-p", "--prompts", required=True, help="prompts a|b|c (not stripped) or @file")
    p.add_argument("-n", "--neurons", default=None, help="neuron indices, e.g. 808,1190")
    p.add_argument("--neuron-names", default=None, help="names for -n, e.g. 'A|B'")
    p.add_argument("--mlp", action="store_true", help="MLP hidden units instead of residual dimensions")
    p.add_argument("--from-direction", default=None, metavar="F.npz", help="top-k dimensions of a direction by |weight|")
    p.add_argument("--top-k", type=F.integer(1, 1_000_000), default=10)
    p.add_argument("--auto-discover", action="store_true", help="rank dimensions by label separation (needs --labels)")
    p.add_argument("--labels", default=None, help="one label per prompt: 'x|y|x' (or x,y,x)")
    p.add_argument("--steer", default=None, metavar="F.npz[:COEF]", help="also show the values under steering")
    p.add_argument("--strength", type=F.real(-1000, 1000), default=None, help="steering coefficient (overrides :COEF)")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    add_output_args(p)
    return p


def render(r, info) -> None:
    model_header(info)
    out.print(f"Site: {r.site} (last position); prompts:")
    for i, p in enumerate(r.prompts):
        lab = f" [{r.labels[i]}]" if r.labels else ""
        out.print(esc(f"  [{i}] {p!r}{lab}"))
    if r.steering:
        out.print(esc(f"Steering: {r.steering}"))
    for layer in dict.fromkeys(n.layer for n in r.neurons):
        rows = [n for n in r.neurons if n.layer == layer]
        t = Table(title=f"Layer {layer}: value per prompt", title_justify="left")
        t.add_column("neuron", justify="right", no_wrap=True)
        extra = "sep" if rows[0].separation is not None else ("weight" if rows[0].weight is not None else None)
        if extra:
            t.add_column(extra, justify="right")
        for i in range(len(r.prompts)):
            t.add_column(f"[{i}]", justify="right")
        for col in ("min", "max", "mean", "std"):
            t.add_column(col, justify="right")
        for n in rows:
            label = f"{n.neuron}" + (f" {esc(n.name)}" if n.name else "")
            cells = [f"{v:+.3f}" for v in n.values]
            if n.steered_values is not None:
                cells = [f"{v:+.3f}→{s:+.3f}" for v, s in zip(n.values, n.steered_values)]
            ex = [f"{n.separation:.2f}"] if extra == "sep" else ([f"{n.weight:+.4f}"] if extra == "weight" else [])
            t.add_row(label, *ex, *cells, f"{n.min:+.3f}", f"{n.max:+.3f}", f"{n.mean:+.3f}", f"{n.std:.3f}")
        print_wide(out, t, 70 + (19 if r.steering else 10) * len(r.prompts))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import InputError
    from engine.results.neurons import NeuronsRequest
    from lazarus_tui.inputs import parse_layers, split_labels, split_prompts

    layers = ([args.layer] if args.layer is not None else []) + (parse_layers(args.layers) if args.layers else [])
    neurons = []
    if args.neurons:
        try:
            neurons = [int(x) for x in args.neurons.split(",") if x.strip()]
        except ValueError as exc:
            raise InputError(f"bad neuron list {args.neurons!r}: expected e.g. 808,1190") from exc
    names = [x for x in args.neuron_names.split("|")] if args.neuron_names else []
    req = NeuronsRequest(model=args.model, prompts=split_prompts(args.prompts), layers=layers, neurons=neurons,
                         neuron_names=names, mlp=args.mlp, from_direction=args.from_direction, top_k=args.top_k,
                         auto_discover=args.auto_discover, labels=split_labels(args.labels) if args.labels else None,
                         steer=args.steer, strength=args.strength, chat=args.chat)
    from engine.distributed import world
    from engine.neurons import run_neurons

    w = world()
    return run_analysis(args, "neurons", lambda lm, ctx: run_neurons(
        lm, req, ctx.cancelled, ctx.counter("blocks", "activations"), world=w), render)
