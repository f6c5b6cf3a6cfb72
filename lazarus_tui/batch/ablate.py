"""`lazarus --batch ablate`: zero/mean ablation sweeps of MLP, attention or heads (batched, prefix-reusing)."""

from __future__ import annotations

import json
import sys

from lazarus_tui.batch import flags as F
from lazarus_tui.batch.common import (
    ArgumentParser,
    JobRunner,
    add_chat_args,
    add_model_args,
    add_output_args,
    emit,
    model_header,
    out,
)
from lazarus_tui.inputs import parse_layers, parse_prompt_cases, split_prompts

COMPONENTS = ("mlp", "attention", "both", "block")


def parse_heads(text: str) -> list[int]:
    from engine.errors import InputError

    try:
        heads = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InputError(f"bad head list {text!r}: expected e.g. 0,3") from exc
    if not heads:
        raise InputError(f"empty head list {text!r}")
    return heads


def parse_cells(text: str) -> list[tuple[int, str]]:
    """``"3:mlp,5:attention"`` → [(3, "mlp"), (5, "attention")]: a hand-picked set ablated together."""
    from engine.errors import InputError

    cells = []
    for part in (x.strip() for x in text.split(",")):
        if not part:
            continue
        layer, _, comp = part.partition(":")
        if comp not in COMPONENTS or not layer.strip().isdigit():
            raise InputError(f"bad cell {part!r}: expected LAYER:COMPONENT, e.g. 3:mlp,5:attention")
        cells.append((int(layer), comp))
    if not cells:
        raise InputError(f"empty cell list {text!r}")
    return cells


def build_request(args) -> object:
    from engine.errors import InputError
    from engine.results.ablation import AblationRequest, PromptCase

    if args.component is not None and args.component not in COMPONENTS:
        raise InputError(f"unknown component {args.component!r} (choose mlp, attention, both or block)")
    heads = parse_heads(args.heads) if args.heads is not None else None
    component = args.component or ("attention" if heads is not None else "mlp")
    if heads is not None and component != "attention":
        raise InputError("--heads ablates attention heads: use --component attention (or leave it out)")
    if args.multi and args.grid:
        raise InputError("--multi and --grid exclude each other")
    layers = parse_layers(args.layers) if args.layers is not None else None
    cases = parse_prompt_cases(args.prompts) if args.prompts is not None else None
    if cases is None and not args.prompt:
        raise InputError("give a prompt (-p) or --prompts \"prompt:expected|...\"")
    reference: list[str] = []
    if args.method == "mean":
        if not args.reference:
            raise InputError("--method mean needs --reference \"p1|p2\" (or @file)")
        reference = split_prompts(args.reference)
        if any(r == "" for r in reference):
            raise InputError("empty reference prompt")
    elif args.reference:
        raise InputError("--reference is only used with --method mean")
    if args.criterion and args.criterion.startswith("re:"):
        import re

        try:
            re.compile(args.criterion[3:])
        except re.error as exc:
            raise InputError(f"bad regex in criterion {args.criterion!r}: {exc}") from exc
    ablations = None
    if getattr(args, "cells", None):
        from engine.results.ablation import AblationSpec

        if args.layers or args.heads or args.multi or args.grid or args.component:
            raise InputError("--cells is the whole set: no --layers/--component/--heads/--multi/--grid")
        cells = parse_cells(args.cells)
        ablations = [AblationSpec(layers=[x for x, _ in cells], components=[c for _, c in cells])]
    return AblationRequest(
        ablations=ablations, model=args.model, prompt=None if cases else args.prompt,
        criterion="" if cases else (args.criterion or ""),
        prompts=[PromptCase(prompt=p, expected=e) for p, e in cases] if cases else None,
        component=component, heads=heads, layers=layers,
        mode="multi" if args.multi else "grid" if args.grid else "sweep",
        method=args.method, reference=reference, chat=args.chat, max_tokens=args.max_tokens)


def _short(text: str, width: int = 60) -> str:
    r = repr(text)
    return r if len(r) <= width else r[: width - 1] + "…"


def _mark(passed: bool | None) -> str:
    return "-" if passed is None else ("[green]✓[/green]" if passed else "[red]✗[/red]")


def render(r, info, verbose: bool) -> None:
    from rich.table import Table

    model_header(info)
    out.print(f"Chat template: {'applied' if r.chat_template_used else 'not applied (raw prompt)'}")
    for note in r.notes:
        out.print(f"Note: {note}")
    req = r.request
    method = "zero" if req.method == "zero" else f"mean over {len(req.reference)} reference prompt(s)"
    out.print(f"Ablation: {method}; {len(r.points)} sweep point(s); {r.strategy} in {r.elapsed_s:.1f} s")
    if req.prompts:
        out.print("\nDifficulty gradient (✓ = expected answer in the output):")
        t = Table(show_lines=False)
        t.add_column("Ablation")
        for c in req.prompts:
            t.add_column(f"{c.prompt!r} → {c.expected}")
        rows = [("none (baseline)", r.baseline)] + [(p.label, p.outputs) for p in r.points]
        for label, outs in rows:
            cells = []
            for o in outs:
                first = o.text.strip().splitlines()[0] if o.text.strip() else ""
                cells.append(f"{_mark(o.passed)} {first[:24]}")
            t.add_row(label, *cells)
        out.print(t)
        if verbose:
            for label, outs in rows:
                for o in outs:
                    div = "" if o.diverged_at is None or label.startswith("none") else f" (diverged at token {o.diverged_at})"
                    out.print(f"{label} | {o.prompt!r}: {o.text!r}{div}", markup=False)
        return
    base = r.baseline[0]
    out.print(f"Criterion: {r.criterion_description}")
    out.print(f"\nPrompt: {base.prompt!r}")
    out.print(f"Baseline: {base.text!r}  {_mark(base.passed)}", markup=True)
    t = Table()
    t.add_column("Ablation")
    t.add_column("Pass")
    t.add_column("Diverged at", justify="right")
    t.add_column("Output")
    for p in r.points:
        o = p.outputs[0]
        div = "identical" if o.diverged_at is None else str(o.diverged_at)
        t.add_row(p.label, _mark(o.passed), div, repr(o.text) if verbose else _short(o.text))
    out.print(t)
    if base.passed is not None:
        flips = r.causal_layers
        out.print(f"Flips the criterion ({'pass→fail' if base.passed else 'fail→pass'}): "
                  f"{', '.join(flips) if flips else 'none'}")
    changed = [p.label for p in r.points if p.outputs[0].diverged_at is not None]
    out.print(f"Changes the output: {len(changed)} of {len(r.points)}")


def jsonl_lines(r) -> list[str]:
    lines = [json.dumps({"label": "baseline", "baseline": True, "layers": [], "component": None, "heads": None,
                         "outputs": [o.model_dump() for o in r.baseline]})]
    for p in r.points:
        lines.append(json.dumps({"label": p.label, "baseline": False, "layers": p.spec.layers,
                                 "component": p.spec.component.value, "heads": p.spec.heads,
                                 "outputs": [o.model_dump() for o in p.outputs]}))
    return lines


def twin_command(req) -> str:
    """The batch command line that runs ``req`` (the TUI's ``b``)."""
    import shlex

    parts = ["lazarus", "--batch", "ablate"]
    if req.model:
        parts += ["-m", req.model]
    if req.prompts:
        parts += ["-p", "x", "--prompts", "|".join(f"{c.prompt}:{c.expected}" for c in req.prompts)]
    else:
        parts += ["-p", req.prompt or ""]
        if req.criterion:
            parts += ["-c", req.criterion]
    if req.ablations is not None and len(req.ablations) == 1 and req.ablations[0].components is not None:
        spec = req.ablations[0]
        parts += ["--cells", ",".join(f"{x}:{c.value}" for x, c in zip(spec.layers, spec.components))]
    elif req.ablations is not None:
        layers = sorted({x for s in req.ablations for x in s.layers})
        comps = {s.component.value for s in req.ablations}
        parts += ["--layers", ",".join(str(x) for x in layers), "--multi"]
        if len(comps) == 1:
            parts += ["--component", comps.pop()]
        else:
            parts += ["--component", "both"]
    else:
        if req.layers is not None:
            parts += ["--layers", ",".join(str(x) for x in req.layers)]
        parts += ["--component", req.component.value]
        if req.heads is not None:
            parts += ["--heads", ",".join(str(h) for h in req.heads)]
        if req.mode == "multi":
            parts.append("--multi")
        elif req.mode == "grid":
            parts.append("--grid")
    if req.method == "mean":
        parts += ["--method", "mean", "--reference", "|".join(req.reference)]
    if req.chat:
        parts.append("--chat")
    parts += ["--max-tokens", str(req.max_tokens)]
    return " ".join(shlex.quote(x) for x in parts)


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="lazarus --batch ablate",
                       description="ablate MLP/attention/heads per layer (sweep), together (--multi) or as a grid")
    add_model_args(p)
    p.add_argument("-p", "--prompt", default=None, help="the prompt (ignored with --prompts)")
    p.add_argument("-c", "--criterion", default=None,
                   help="function_call|sorry|positive|negative|refusal, re:REGEX, or a substring")
    p.add_argument("--component", default=None,
                   help="mlp (default), attention, both, or block (everything the block adds: whole-layer ablation)")
    p.add_argument("--heads", default=None, help="attention heads to ablate at each listed layer, e.g. 0,3")
    p.add_argument("--layers", default=None, help="5 | 5,8 | 20-23 (default: every layer)")
    p.add_argument("--multi", action="store_true", help="ablate all listed layers together")
    p.add_argument("--grid", action="store_true", help="layer x component grid (mlp, attention, both)")
    p.add_argument("--cells", default=None, help="one ablation of these cells together: '3:mlp,5:attention'")
    p.add_argument("--prompts", default=None, help="difficulty gradient: 'p1:exp1|p2:exp2' or @file")
    p.add_argument("--method", choices=("zero", "mean"), default="zero")
    p.add_argument("--reference", default=None, help="reference prompts for --method mean: 'p1|p2' or @file")
    add_chat_args(p)
    p.add_argument("-n", "--max-tokens", type=F.max_tokens, default=60)
    p.add_argument("-v", "--verbose", action="store_true", help="full outputs")
    p.add_argument("--jsonl", action="store_true", help="one JSON line per sweep point (baseline first)")
    add_output_args(p)
    args = p.parse_args(argv)
    req = build_request(args)
    from engine.ablation import run_ablation
    from engine.distributed import world

    runner = JobRunner(args.model, args.dtype)
    w = world()

    def job(ctx):
        lm = ctx.model()
        if w.active:  # under a distributed launcher: prompts or sweep points shared among the ranks
            from engine.ablation_split import run_ablation_distributed

            return lm.info, run_ablation_distributed(lm, req, w, ctx.cancelled,
                                                     lambda d, n: ctx.progress("parts", d, n, "ablate: parts"))
        return lm.info, run_ablation(lm, req, ctx.cancelled,
                                     lambda stage, i, n, msg, payload: ctx.progress(stage, i, n, msg))

    info, result = runner.run(job, "ablate")
    if result is None:  # a rank other than 0: rank 0 reports
        return 0
    if args.jsonl:
        from lazarus_tui.batch.common import write_atomic

        if args.output:
            write_atomic(args.output, result.model_dump_json(indent=2) + "\n")
        sys.stdout.write("\n".join(jsonl_lines(result)) + "\n")
        return 0
    emit(result, args, lambda r: render(r, info, args.verbose))
    return 0
