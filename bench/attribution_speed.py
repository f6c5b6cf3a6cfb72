"""Attribution patching vs real activation patching, on SmolLM2 (issue: speed).

    .venv/bin/python bench/attribution_speed.py [--model smollm2-135m] [--repeats 3]

Times, in one process (median of ``--repeats`` after a warm-up):
  1. ``patch --layers 0-29`` (the 30-layer resid_post sweep at the last position: 30 sites);
  2. attribution of every resid_pre, resid_post, attn_out and mlp_out site (layers x positions);
  3. the same plus heads (output and query-key part) and neurons;
  4. real patching of every site of (2), in batches (``--verify`` with K = all of them), and from its
     per-site rate the time real patching of every site of (3) would take.
Prints one markdown table row per measurement, for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import engine  # noqa: F401  (BLAS before mlx)

CLEAN, CORRUPT, TARGET = "The capital of France is", "The capital of Italy is", " Paris"


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from engine.results.patch import PatchRequest
    from engine.attribution import attribute
    from engine.results.attribution import AttributeRequest
    from engine.models import load
    from engine.patching import patch

    lm = load(args.model)
    n = lm.info.num_layers
    t_patch, _ = timed(lambda: patch(lm, PatchRequest(source=CLEAN, target=CORRUPT, layers=list(range(n)))),
                       args.repeats)
    base = AttributeRequest(clean=CLEAN, corrupt=CORRUPT, target=TARGET,
                            sites=["resid_pre", "resid_post", "attn_out", "mlp_out"])
    t_resid, r_resid = timed(lambda: attribute(lm, base), args.repeats)
    full = base.model_copy(update={"sites": [*base.sites, "heads", "neurons"]})
    t_full, r_full = timed(lambda: attribute(lm, full), args.repeats)
    k = r_resid.n_estimates
    t = time.perf_counter()
    verified = attribute(lm, base.model_copy(update={"verify": k}))
    t_real = time.perf_counter() - t - verified.seconds
    per_site = t_real / k
    load = os.getloadavg()[0]
    print(f"model {lm.info.model_id} ({n} layers, {lm.info.dtype}, {lm.info.device}), "
          f"{len(r_resid.clean_tokens)}-token pair, load average {load:.1f}, median of {args.repeats}")
    print("| measurement | sites | time | vs 30-layer patch sweep |")
    print("|---|---|---|---|")
    print(f"| `patch --layers 0-{n - 1}` (resid_post, last position) | {n} | {t_patch:.2f} s | 1.00x |")
    print(f"| attribute resid_pre,resid_post,attn_out,mlp_out | {r_resid.n_estimates} | {t_resid:.2f} s | "
          f"{t_resid / t_patch:.2f}x |")
    print(f"| attribute + heads (output, query-key) + neurons | {r_full.n_estimates} | {t_full:.2f} s | "
          f"{t_full / t_patch:.2f}x |")
    print(f"| real patching of the {k} residual/attention/MLP sites (batches of 32) | {k} | {t_real:.2f} s | "
          f"{t_real / t_patch:.2f}x (attribution is {t_real / t_resid:.0f}x faster) |")
    n_real = r_full.n_estimates  # every estimate would be one patched run
    print(f"| real patching of all {n_real} sites incl. heads and neurons (extrapolated at "
          f"{per_site * 1000:.1f} ms/site) | {n_real} | ~{per_site * n_real:.0f} s | "
          f"attribution is ~{per_site * n_real / t_full:.0f}x faster |")
    print(f"verification over the {k} sites: Pearson {verified.verify_pearson:.3f}, "
          f"Spearman {verified.verify_spearman:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
