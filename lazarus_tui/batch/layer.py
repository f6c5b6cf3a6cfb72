"""`lazarus --batch layer`: cosine geometry of prompts' last-position layer outputs."""

from __future__ import annotations

from lazarus_tui.batch._analysis_common import cosine_table, esc, short
from lazarus_tui.batch.common import ArgumentParser, add_model_args, add_output_args, model_header, out, run_analysis
from lazarus_tui.inputs import parse_layers, split_labels, split_prompts


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch layer",
                       description="per layer: N x N cosine matrix of the prompts' last-position outputs")
    add_model_args(p)
    p.add_argument("-p", "--prompts", required=True, help="prompts a|b|c (not stripped) or @file")
    p.add_argument("-l", "--labels", default=None, help="one label per prompt: a,b,c or a|b|c")
    p.add_argument("--layers", default=None, help="layers, e.g. 2,4,6 or 20-23 (default: every 4th + last)")
    p.add_argument("-a", "--attention", action="store_true",
                   help="also show where the last position attends (top tokens, mean over heads)")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    add_output_args(p)
    return p


def _stat(value: float | None, fmt: str = ".4f") -> str:
    return "n/a" if value is None else format(value, fmt)


def render(r, info) -> None:
    model_header(info)
    names = [f"{short(p, 28)}" + (f" [{lab}]" if r.labels else "") for p, lab in
             zip(r.prompts, r.labels or [""] * len(r.prompts))]
    out.print(esc(f"Prompts ({len(r.prompts)}), last tokens: {r.last_tokens!r}") + "\n")
    for ls in r.layers:
        out.print(cosine_table(f"Layer {ls.layer}: cosine similarity (last position)", names, ls.cosine))
        if r.labels:
            sil = f", silhouette {ls.silhouette:.3f}" if ls.silhouette is not None else ""
            out.print(f"  within-label {_stat(ls.within_label)}  between-label {_stat(ls.between_label)}  "
                      f"separation {_stat(ls.separation, '+.4f')}{sil}")
        for at in ls.attention:
            tops = ", ".join(f"{t!r}@{pos} {w:.2f}" for t, pos, w in zip(at.tokens, at.positions, at.weights))
            out.print(esc(f"  attention [{at.prompt_index}] last -> {tops}"))
        out.print("")
    if r.label_note:
        out.print(esc(f"Note: {r.label_note}."))
    elif r.labels:
        out.print("=== Separation by layer ===")
        for ls in r.layers:
            out.print(f"  Layer {ls.layer:>2}: {ls.separation:+.4f}")
        out.print(f"Best separation at layer {r.best_layer}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.representations import layer_analysis
    from engine.results.layers import LayerRequest

    req = LayerRequest(model=args.model, prompts=split_prompts(args.prompts),
                       labels=split_labels(args.labels) if args.labels else None,
                       layers=parse_layers(args.layers) if args.layers else None,
                       attention=args.attention, chat=args.chat)
    from engine.distributed import world

    w = world()
    return run_analysis(args, "layer", lambda lm, ctx: layer_analysis(
        lm, req, ctx.cancelled, ctx.counter("blocks", "activations"), world=w), render)
