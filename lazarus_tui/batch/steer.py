"""`lazarus --batch steer`: extract a steering direction and/or generate with it added.

Direction (exactly one): ``--extract --positive P --negative N`` (pipe lists or @files, paired
line by line), ``-d FILE.npz``, or ``--neuron I`` (one-hot residual dimension, needs ``-l``).
``-o FILE.npz`` saves an extracted direction; any other ``-o`` writes the result JSON.
Coefficients: ``-c C`` or ``--compare "-2,-1,0,1,2"``; ``--layers`` makes a layer x coefficient
grid. Every setting is one row of one batched generation. See docs/steering.md.
"""

from __future__ import annotations

from typing import Any

from lazarus_tui.batch import flags as F
from lazarus_tui.batch.common import (
    ArgumentParser,
    JobRunner,
    add_chat_args,
    add_model_args,
    emit,
    err,
    fix_negative_values,
    model_header,
    out,
)
from lazarus_tui.inputs import parse_floats, parse_layers, split_prompts

_VALUE_FLAGS = ("--compare", "-c", "--coefficient", "--position", "-l", "--layer")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch steer", description="activation steering: extract a direction, "
                       "generate with coef * unit(direction) * s added to a layer's output")
    add_model_args(p)
    p.add_argument("-p", "--prompts", "--prompt", dest="prompts", default=None, help="'a|b' or @file")
    p.add_argument("-d", "--direction", default=None, help="a direction .npz (steer --extract or probe)")
    p.add_argument("--neuron", type=F.integer(0, 1_000_000), default=None, help="steer along one residual dimension (one-hot)")
    p.add_argument("-l", "--layer", type=F.layer, default=None,
                   help="layer (overrides the file's; extraction default: the middle layer)")
    p.add_argument("--layers", default=None, help="layer grid, e.g. 6,10,14 or 8-12 (one row per layer x coef)")
    p.add_argument("-c", "--coefficient", type=F.real(-1000, 1000), default=1.0, help="strength, in units of s (default 1)")
    p.add_argument("--compare", default=None, help='coefficient list, e.g. "-2,-1,0,1,2"')
    p.add_argument("--position", type=F.position, default=None,
                   help="steer only this prompt position (negative from the end); default every position")
    p.add_argument("--extract", action="store_true", help="extract a direction from --positive/--negative")
    p.add_argument("--positive", default=None, help="positive prompts: 'a|b' or @file")
    p.add_argument("--negative", default=None, help="negative prompts, paired with --positive")
    p.add_argument("--method", choices=("mean", "pca"), default="mean")
    p.add_argument("--name", default=None, help="the direction's name (saved in the file)")
    p.add_argument("--positive-label", default="positive")
    p.add_argument("--negative-label", default="negative")
    p.add_argument("-n", "--max-tokens", type=F.max_tokens, default=50)
    p.add_argument("-t", "--temperature", type=F.temperature, default=0.0)
    p.add_argument("--seed", type=F.seed, default=0)
    p.add_argument("--criterion", default=None,
                   help="score outputs: substring, 'words:a,b', @wordfile, positive, negative or sentiment")
    add_chat_args(p)
    p.add_argument("--one-at-a-time", action="store_true",
                   help="generate each setting separately (same outputs, slower; for comparison)")
    p.add_argument("-o", "--output", type=F.output_file, default=None,
                   help="FILE.npz: save the extracted direction; else result JSON")
    p.add_argument("--json", action="store_true", help="print the result model as JSON on stdout")
    return p


def _inputs(args) -> tuple[list[int] | None, list[str] | None, list[float], bool]:
    """The flags' combinations checked (exit 2 before any model loads): the layer grid, the prompts,
    the coefficients, and whether ``-o`` is a direction file."""
    from engine.errors import InputError

    sources = [args.extract, args.direction is not None, args.neuron is not None]
    if sum(sources) != 1:
        raise InputError("give exactly one direction: --extract (with --positive/--negative), -d FILE.npz, "
                         "or --neuron I")
    npz_out = args.output is not None and args.output.endswith(".npz")
    if npz_out and not args.extract:
        raise InputError("-o FILE.npz saves an extracted direction; it needs --extract")
    grid = parse_layers(args.layers) if args.layers else None
    if grid and args.layer is not None and not args.extract:
        raise InputError("give -l/--layer or --layers, not both")
    prompts = split_prompts(args.prompts) if args.prompts is not None else None
    if prompts is not None and any(x == "" for x in prompts):
        raise InputError("empty prompt")
    if prompts is None and not args.extract:
        raise InputError("-p/--prompts is required to steer")
    if args.neuron is not None and args.layer is None and not grid:
        raise InputError("--neuron needs -l/--layer (or --layers)")
    coefs = parse_floats(args.compare) if args.compare is not None else [args.coefficient]
    if not coefs:
        raise InputError("--compare needs at least one coefficient")
    return grid, prompts, coefs, npz_out


def _extract_request(args) -> Any:
    """The ExtractRequest of ``--extract`` (None without it)."""
    from engine.errors import InputError
    from engine.results.steering import ExtractRequest

    if not args.extract:
        return None
    if args.positive is None or args.negative is None:
        raise InputError("--extract needs --positive and --negative")
    pos, neg = split_prompts(args.positive), split_prompts(args.negative)
    if len(pos) != len(neg):
        raise InputError(f"--positive and --negative must pair up: {len(pos)} positive, {len(neg)} negative")
    return ExtractRequest(model=args.model, positive=pos, negative=neg, layer=args.layer, method=args.method,
                          chat=args.chat, name=args.name or f"{args.positive_label} vs {args.negative_label}",
                          positive_label=args.positive_label, negative_label=args.negative_label)


def _extract_only(args, extract, npz_out: bool) -> int:
    from engine.distributed import env_rank
    from engine.steering import run_extract

    if env_rank() != 0:
        return 0  # under a distributed launcher rank 0 extracts alone

    def job(ctx):
        lm = ctx.model()
        result, _ = run_extract(lm, extract, ctx.cancelled, save_to=args.output if npz_out else None)
        return lm.info, result

    info, result = JobRunner(args.model, args.dtype).run(job, "extract")
    if not npz_out and args.output is None and not args.json:
        err.print("[dim]direction not saved: give -o FILE.npz to keep it[/dim]")
    emit(result, _json_args(args, npz_out), lambda r: render_extract(info, r))
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(fix_negative_values(list(argv), _VALUE_FLAGS))
    from engine.results.steering import SteerRequest
    from engine.steering import run_extract, run_steer

    grid, prompts, coefs, npz_out = _inputs(args)
    extract = _extract_request(args)
    if prompts is None:
        return _extract_only(args, extract, npz_out)

    layers = grid if grid else ([args.layer] if args.layer is not None and not args.extract else None)
    req = SteerRequest(model=args.model, prompts=prompts, coefficients=coefs, layers=layers, position=args.position,
                       max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed, chat=args.chat,
                       criterion=args.criterion, batched=not args.one_at_a_time,
                       direction_file=args.direction, neuron=args.neuron)

    from engine.distributed import env_rank, launched, world
    from engine.steering_split import splits

    if launched() and not splits(req) and env_rank() != 0:
        return 0  # rank 0 runs it alone
    w = world() if launched() and splits(req) else None

    def job(ctx):
        lm = ctx.model()
        direction = None
        saved = None
        if extract is not None:
            save_to = args.output if npz_out and (w is None or w.root) else None
            ex, direction = run_extract(lm, extract, ctx.cancelled, save_to=save_to)
            saved = ex.saved_to
        if w is not None and w.active:
            from engine.steering_split import run_steer_distributed

            return lm.info, run_steer_distributed(lm, req, w, ctx.cancelled, direction,
                                                  lambda d, n: ctx.progress("parts", d, n, "steer: parts")), saved
        return lm.info, run_steer(lm, req, ctx.cancelled, lambda i, n: ctx.progress("token", i, n, "steer: tokens"),
                                  direction=direction), saved

    info, result, saved = JobRunner(args.model, args.dtype).run(job, "steer")
    if result is None:  # a rank other than 0
        return 0
    if saved:
        err.print(f"[dim]saved direction {saved}[/dim]")
    emit(result, _json_args(args, npz_out), lambda r: render_steer(info, r))
    return 0


def _json_args(args, npz_out: bool):
    """``-o`` is the direction file when it ends in .npz: then no JSON file is written."""
    import argparse

    return argparse.Namespace(output=None if npz_out else args.output, json=args.json)


def _direction_lines(d) -> list[str]:
    lines = [f"Direction: {d.name} ({d.source}{': ' + d.path if d.path else ''})",
             (f"  Method: {d.method}   Layer: {d.layer}   Norm: {d.norm:.4f}   Hidden size: {d.hidden_size}"
              f"   From model: {d.model_id}")]
    if d.positive_prompts:
        lines.append(f"  Pairs: {len(d.positive_prompts)} ({d.positive_label} vs {d.negative_label})"
                     + ("" if d.chat is None else f", chat template {'on' if d.chat else 'off'}"))
    return lines


def render_extract(info, r) -> None:
    model_header(info)
    for line in _direction_lines(r.direction):
        out.print(line)
    if r.direction.layer_separation:
        out.print("\nSeparation per layer (||mean diff|| / mean norm; LOO cosine; LOO pair accuracy):")
        top = max(s.separation for s in r.direction.layer_separation) or 1.0
        for s in r.direction.layer_separation:
            cons = "" if s.consistency is None else f"  cos {s.consistency:+.3f}  acc {s.pair_accuracy:.2f}"
            mark = "  <- chosen" if s.layer == r.direction.layer else ""
            out.print(f"  Layer {s.layer:>2}: {s.separation:.4f} {'#' * round(30 * s.separation / top):<30}"
                      f"{cons}{mark}")
    if r.saved_to:
        out.print(f"\nSaved: {r.saved_to}")


def render_steer(info, r) -> None:
    model_header(info)
    for line in _direction_lines(r.direction):
        out.print(line)
    req = r.request
    where = "every position" if req.position is None else f"prompt position {req.position}"
    out.print(f"  Applied: coef * unit(direction) * s at layer output ({where}), every generated token")
    out.print(f"Chat template: {'applied' if r.chat_template_used else 'not applied (raw prompt)'}")
    out.print(f"Generation: {len(r.outputs)} settings in {'one batch' if req.batched else 'separate runs'}, "
              f"{r.generation_seconds:.2f} s\n")
    prompt = None
    for o in r.outputs:
        if o.prompt != prompt:
            prompt = o.prompt
            out.print(f"Prompt: {prompt!r}")
        crit = ""
        if o.criterion is not None:
            crit = f"  {o.criterion.criterion}: {o.criterion.score:g} ({'pass' if o.criterion.passed else 'fail'})"
        div = "" if o.diverged_at is None else f"  diverges at token {o.diverged_at}"
        out.print(f"  layer {o.layer:>2}  coef {o.coefficient:+g}  (s={o.scale:.1f}, |added|={o.added_norm:.1f})"
                  f"  projection {o.projection:+.2f} (mean {o.mean_projection:+.2f}){crit}{div}")
        out.print(f"    {o.text!r}")
    out.print("")
