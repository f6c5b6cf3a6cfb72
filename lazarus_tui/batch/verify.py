"""`lazarus --batch verify`: the hooked forward equals the model's own logits."""

from __future__ import annotations

from lazarus_tui.batch import flags as F
from lazarus_tui.batch.common import ArgumentParser, JobRunner, add_model_args, add_output_args, emit, out


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="lazarus --batch verify", description="compare hooked vs native logits")
    add_model_args(p)
    add_output_args(p)
    p.add_argument("--tolerance", type=F.real(0, 1e6, lo_open=True), default=1e-4)
    args = p.parse_args(argv)
    from engine.verify import run_verify

    runner = JobRunner(args.model, args.dtype)

    def job(ctx):
        lm = ctx.model()
        return run_verify(lm, args.tolerance, ctx.cancelled,
                          lambda i, n, label: ctx.progress("prompt", i, n, f"verify: {label}"))

    result = runner.run(job, "verify")

    def render(r):
        out.print(f"verify {r.model_id} ({r.dtype}): hooked forward vs the model's own logits")
        for row in r.prompts:
            mark = "PASS" if row.passed else "FAIL"
            out.print(f"  {row.label:<6} {row.num_tokens:>5} tokens  max |Δlogit| = {row.max_abs_diff:.3e}  {mark}")
        out.print(f"{'PASS' if r.passed else 'FAIL'} (tolerance {r.tolerance:g})")

    emit(result, args, render)
    return 0 if result.passed else 1
