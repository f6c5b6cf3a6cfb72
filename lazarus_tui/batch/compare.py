"""`lazarus --batch compare`: the logit lens of two models side by side."""

from __future__ import annotations

from rich.table import Table

from lazarus_tui.batch import flags as F
from lazarus_tui.batch._analysis_common import esc, run_pair, two_model_header
from lazarus_tui.batch.common import ArgumentParser, add_output_args, out


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="lazarus --batch compare", description="logit lens of two models on one prompt")
    p.add_argument("-m1", "--model1", dest="model1", default=None, help="first model (default: smollm2-135m)")
    p.add_argument("-m2", "--model2", dest="model2", default=None, help="second model (default: the first one)")
    p.add_argument("--dtype", default="auto", help="model 1's dtype (auto|float32|float16|bfloat16|q4|q8)")
    p.add_argument("--dtype2", default=None, help="model 2's dtype (default: --dtype)")
    p.add_argument("-p", "--prompt", required=True)
    p.add_argument("--top-k", type=F.top_k, default=5)
    p.add_argument("--track", default=None, help="tokens to track, comma-separated: ' Paris, London'")
    p.add_argument("--chat", action="store_true", help="apply each model's chat template")
    p.add_argument("--lens", default="logit", help="model 1's lens: logit (default), tuned:FILE or tuned")
    p.add_argument("--lens2", default="logit", help="model 2's lens (default: logit; a tuned lens is bound to one "
                   "model, so `-m1 X --lens tuned:F` alone compares X's tuned lens with its logit lens)")
    add_output_args(p)
    return p


def render(r, infos) -> None:
    two_model_header(out, infos, ("Model 1", "Model 2"))
    out.print(esc(f"\nPrompt: {r.request.prompt!r}"))
    out.print(esc(f"Tokens 1 ({len(r.tokens1)}): {r.tokens1!r}"))
    if r.tokens2 != r.tokens1:
        out.print(esc(f"Tokens 2 ({len(r.tokens2)}): {r.tokens2!r}"))
    out.print(f"Layers aligned {r.alignment}; tokenizers {'match' if r.same_tokenizer else 'differ (no KL)'}\n")
    t = Table(title="=== Final Prediction ===", title_justify="left")
    for col in ("#", "model 1", "p", "model 2", "p"):
        t.add_column(col, justify="left" if "model" in col else "right")
    for i, (a, b) in enumerate(zip(r.final1, r.final2)):
        t.add_row(str(i + 1), esc(repr(a.token)), f"{a.probability:.4f}", esc(repr(b.token)), f"{b.probability:.4f}")
    out.print(t)
    lenses = (r.request.lens1, r.request.lens2)
    title = ("=== Logit Lens side by side (top-1 per layer) ===" if lenses == ("logit", "logit") else
             esc(f"=== Lens side by side (top-1 per layer; model 1: {lenses[0]}, model 2: {lenses[1]}) ==="))
    t = Table(title=title, title_justify="left")
    for col in ("depth", "L1", "model 1 top-1", "p", "L2", "model 2 top-1", "p", "KL(1||2)"):
        t.add_column(col, justify="left" if "top-1" in col else "right")
    for row in r.rows:
        same = row.same_top1 if row.same_top1 is not None else row.top1_model1.token == row.top1_model2.token
        style = "green" if same else ""
        a = esc(repr(row.top1_model1.token))
        b = esc(repr(row.top1_model2.token))
        t.add_row(f"{row.depth:.2f}", str(row.layer1), f"[{style}]{a}[/{style}]" if style else a,
                  f"{row.top1_model1.probability:.3f}", str(row.layer2), f"[{style}]{b}[/{style}]" if style else b,
                  f"{row.top1_model2.probability:.3f}", "" if row.kl_1_2 is None else f"{row.kl_1_2:.3f}")
    out.print(t)
    if r.final_kl is not None:
        out.print(f"Final-layer KL(model 1 || model 2): {r.final_kl:.4f}")
    if r.tracked:
        out.print("\n=== Tracked tokens: emergence layer (first layer at rank 1) ===")
        for tr in r.tracked:
            e1 = "never" if tr.emergence_model1 is None else f"layer {tr.emergence_model1}"
            e2 = "never" if tr.emergence_model2 is None else f"layer {tr.emergence_model2}"
            out.print(esc(f"  {tr.token!r}: model 1 {e1} (final rank {tr.rank_final_model1}, p {tr.prob_final_model1:.4f}); "
                          f"model 2 {e2} (final rank {tr.rank_final_model2}, p {tr.prob_final_model2:.4f})"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from engine.compare import compare
    from engine.results.compare import CompareRequest

    track = [t for t in args.track.split(",")] if args.track else []
    dtype2 = args.dtype2 or args.dtype
    from engine.tuned_lens import parse_lens_spec

    req = CompareRequest(model1=args.model1, model2=args.model2 or args.model1, dtype1=args.dtype, dtype2=dtype2,
                         prompt=args.prompt, top_k=args.top_k, track=track, chat=args.chat,
                         lens1=parse_lens_spec(args.lens), lens2=parse_lens_spec(args.lens2))
    return run_pair(args, args.model1, args.model2, dtype2, lambda a, b, ctx: compare(a, b, req, ctx.cancelled),
                    "compare", render)
