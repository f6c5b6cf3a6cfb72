"""`lazarus --batch attribute`: every site's effect on a metric from one backward pass (AtP, AtP*)."""

from __future__ import annotations

import shlex
from typing import Any

from rich.table import Table

from lazarus_tui.batch import flags
from lazarus_tui.batch._analysis_common import esc
from lazarus_tui.batch.common import ArgumentParser, add_model_args, add_output_args, model_header, out, run_analysis
from lazarus_tui.inputs import parse_layers


def build_parser() -> ArgumentParser:
    from engine.results.attribution import TOP_MAX, VERIFY_MAX

    p = ArgumentParser(prog="lazarus --batch attribute",
                       description="attribution patching: estimate, for every site, metric(corrupt run with that "
                                   "site from the clean run) - metric(corrupt run), from one backward pass")
    add_model_args(p)
    p.add_argument("--clean", required=True, help="clean prompt (its activations are the ones written in)")
    p.add_argument("--corrupt", required=True, help="corrupted prompt (same number of tokens)")
    p.add_argument("--target", required=True, help="token whose metric is read at the corrupt run's last position")
    p.add_argument("--baseline", default=None, help="second token for --metric logit-diff")
    p.add_argument("--metric", default="logprob", choices=["logprob", "logit-diff", "prob"],
                   help="log p(target) (default), logit(target)-logit(baseline), or p(target)")
    p.add_argument("--sites", default="resid_post,attn_out,mlp_out",
                   help="comma list of resid_pre,resid_post,attn_out,mlp_out,heads,neurons")
    p.add_argument("--layers", default=None, help="layers, e.g. 0-29 or 5,8 (default: all)")
    p.add_argument("--top", type=flags.integer(1, TOP_MAX), default=None,
                   help="keep the N largest |estimate| sites (default: all; neurons: the 1000 largest)")
    p.add_argument("--verify", type=flags.integer(0, VERIFY_MAX), default=0, metavar="K",
                   help="patch the K largest sites for real and compare")
    p.add_argument("--chat", action="store_true", help="apply the chat template")
    add_output_args(p)
    return p


def request_from_args(args: Any) -> Any:
    from engine.attribution import parse_sites
    from engine.errors import InputError
    from engine.results.attribution import AttributeRequest

    if args.metric == "logit-diff" and args.baseline is None:
        raise InputError("--metric logit-diff needs --baseline TOKEN")
    return AttributeRequest(model=args.model, clean=args.clean, corrupt=args.corrupt, target=args.target,
                            baseline=args.baseline, metric=args.metric, sites=parse_sites(args.sites),
                            layers=parse_layers(args.layers) if args.layers else None, top=args.top,
                            verify=args.verify, chat=args.chat)


def twin_command(req: Any) -> str:
    """The batch command line that runs ``req`` (the TUI's ``b``)."""
    parts = ["lazarus", "--batch", "attribute"]
    if req.model:
        parts += ["-m", req.model]
    parts += ["--clean", req.clean, "--corrupt", req.corrupt, "--target", req.target]
    if req.baseline is not None:
        parts += ["--baseline", req.baseline]
    if req.metric != "logprob":
        parts += ["--metric", req.metric]
    parts += ["--sites", ",".join(req.sites)]
    if req.layers is not None:
        parts += ["--layers", ",".join(str(x) for x in req.layers)]
    if req.top is not None:
        parts += ["--top", str(req.top)]
    if req.verify:
        parts += ["--verify", str(req.verify)]
    if req.chat:
        parts.append("--chat")
    return " ".join(shlex.quote(x) for x in parts)


def _where(s: Any) -> str:
    extra = f" head {s.head}" if s.head is not None else f" neuron {s.neuron}" if s.neuron is not None else ""
    return f"{s.site}{extra}"


def render(r: Any, info: Any, shown: int = 25) -> None:
    model_header(info)
    req = r.request
    name = {"logprob": "log p", "prob": "p", "logit-diff": "logit diff"}[req.metric]
    what = f"{name}({r.target_token!r}" + (f" - {r.baseline_token!r})" if r.baseline_token else ")")
    out.print(esc(f"Clean:   {req.clean!r}  {what} = {r.clean_metric:.4f}"))
    out.print(esc(f"Corrupt: {req.corrupt!r}  {what} = {r.corrupt_metric:.4f}"))
    out.print(f"{r.n_estimates} estimates ({', '.join(req.sites)}) in {r.seconds:.2f}s\n")
    t = Table(title=f"Largest estimated effects (of {len(r.sites)} kept)", title_justify="left")
    for col in ("#", "site", "pos", "token", "estimate"):
        t.add_column(col, justify="left" if col in ("site", "token") else "right")
    for i, s in enumerate(r.sites[:shown], 1):
        t.add_row(str(i), esc(_where(s)), str(s.position), esc(repr(r.corrupt_tokens[s.position])),
                  f"{s.estimate:+.4f}")
    out.print(t)
    if r.verified:
        v = Table(title="Verification: real activation patching of the top sites", title_justify="left")
        for col in ("site", "pos", "estimate", "real", "patched metric"):
            v.add_column(col, justify="left" if col == "site" else "right")
        for s in r.verified:
            v.add_row(esc(_where(s)), str(s.position), f"{s.estimate:+.4f}", f"{s.real:+.4f}",
                      f"{s.patched_metric:.4f}")
        out.print(v)
        corr = ("n/a (fewer than 3 sites or constant values)" if r.verify_pearson is None else
                f"Pearson {r.verify_pearson:.3f}, Spearman {r.verify_spearman:.3f}")
        out.print(f"Estimate vs real over {len(r.verified)} sites: {corr}")
    for note in r.notes:
        out.print(esc(f"note: {note}"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    req = request_from_args(args)
    from engine.attribution import attribute

    return run_analysis(args, "attribute",
                        lambda lm, ctx: attribute(lm, req, ctx.cancelled, ctx.counter("verify", "real patching")), render)
