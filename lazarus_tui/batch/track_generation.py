"""`lazarus --batch track-generation`: generate N tokens greedily, then lens every layer at every
generated position (``engine.tracking.track_generation``): the Token tracking screen's grid."""

from __future__ import annotations

import shlex

from lazarus_tui.batch import flags as F
from lazarus_tui.batch.common import (
    ArgumentParser,
    add_chat_args,
    add_model_args,
    add_output_args,
    model_header,
    out,
    run_analysis,
)


def twin_command(req, model: str | None = None) -> str:
    """The line that makes the same request (the Token tracking screen's twin, with the N field)."""
    parts = ["lazarus", "--batch", "track-generation"]
    if model or req.model:
        parts += ["-m", model or req.model]
    parts += ["-p", req.prompt, "-n", str(req.max_new_tokens)]
    if req.chat:
        parts.append("--chat")
    if req.lens != "logit":
        parts += ["--lens", req.lens]
    return shlex.join(parts)


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="lazarus --batch track-generation",
                       description="generate N tokens, then each generated token's rank at every layer")
    add_model_args(p)
    p.add_argument("-p", "--prompt", required=True)
    from engine.results.tracking import MAX_TRACKED_GENERATION

    p.add_argument("-n", "--max-new-tokens", type=F.integer(1, MAX_TRACKED_GENERATION), default=8)
    p.add_argument("--lens", default="logit", help="logit (default), tuned:FILE or tuned (docs/lens.md)")
    add_chat_args(p)
    add_output_args(p)
    args = p.parse_args(argv)
    from engine.errors import InputError
    from engine.results.tracking import TrackGenerationRequest
    from engine.tracking import track_generation

    if not args.prompt:
        raise InputError("empty prompt")
    from engine.tuned_lens import parse_lens_spec

    req = TrackGenerationRequest(model=args.model, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                                 chat=args.chat, lens=parse_lens_spec(args.lens))
    def render(r, info):
        model_header(info)
        out.print(f"Generated {len(r.positions)} tokens ({r.stopped}): {r.text!r}")
        if r.lens is not None:
            out.print(f"Tuned lens: {r.lens.path} (trained for {r.lens.model_id}, weights {r.lens.weights_hash})")
        out.print("rank of each generated token at each layer (1 = top-1)\n")
        out.print(f"{'#':>3}  {'token':<14} {'top-1 at':>8} {'settled':>8}  ranks by layer 0..{r.num_layers - 1}")
        for g in r.positions:
            em = "-" if g.emergence_layer is None else str(g.emergence_layer)
            st = "-" if g.settled_layer is None else str(g.settled_layer)
            out.print(f"{g.index:>3}  {g.token!r:<14} {em:>8} {st:>8}  {' '.join(str(x) for x in g.ranks)}",
                      markup=False)

    return run_analysis(args, "track-generation", lambda lm, ctx: track_generation(
        lm, req, ctx.cancelled, lambda stage, d, t: ctx.progress(stage, d, t, stage)), render)
