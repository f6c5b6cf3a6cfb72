"""Switching models back and forth through one ``EngineSession`` must not grow memory (issue 19).

Loads model A, then B, then A, ... (``--switches`` loads after the first), each made the session's
current model and used by one logit lens, and prints the process's RSS after each switch with the
models the session holds and MLX's active/cache memory. With the session's LRU of two
(``KEEP_MODELS``) A and B are each loaded once; ``--keep 1`` makes every switch drop the other
model and load again, which shows that a dropped model's memory really goes back. Run:

    .venv/bin/python bench/model_switch_rss.py [--a smollm2-135m] [--b gemma3-270m] [--switches 10] [--keep 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: F401  (BLAS before mlx)
from engine.limits import process_memory


def rss_mib(field: str = "VmRSS") -> float:
    """``field`` of /proc/self/status (VmRSS: now, VmHWM: peak) in MiB (Linux)."""
    b = process_memory(field)
    if b is None:
        raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")
    return b / 2**20


def switch_rss(a: str, b: str, switches: int, keep: int | None = None,
               prompt: str = "The capital of France is") -> list[dict[str, float | str | int]]:
    """One row per load (the first, then ``switches`` more): model, seconds, RSS, peak, models held."""
    import mlx.core as mx

    import engine.session as session_mod
    from engine.lens import analyze
    from engine.results.analyze import AnalyzeRequest

    if keep is not None:
        session_mod.KEEP_MODELS = keep
    session = session_mod.EngineSession(a)
    rows: list[dict[str, float | str | int]] = []
    try:
        for i in range(switches + 1):
            spec = a if i % 2 == 0 else b
            t0 = time.perf_counter()
            session.load(spec).result()
            session.run(lambda ctx, s=spec: analyze(ctx.model(), AnalyzeRequest(prompt=prompt, model=s)))
            held = session.run(lambda ctx: len(ctx.session._models))
            rows.append({"switch": i, "model": spec, "seconds": round(time.perf_counter() - t0, 2),
                         "rss_mib": round(rss_mib()), "peak_mib": round(rss_mib("VmHWM")), "held": held,
                         "mlx_active_mib": round(mx.get_active_memory() / 2**20),
                         "mlx_cache_mib": round(mx.get_cache_memory() / 2**20)})
    finally:
        session.close(cancel=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", default="smollm2-135m")
    ap.add_argument("--b", default="gemma3-270m")
    ap.add_argument("--switches", type=int, default=10)
    ap.add_argument("--keep", type=int, default=None, help="models the session keeps (default: KEEP_MODELS)")
    args = ap.parse_args()
    print(f"start: RSS {rss_mib():.0f} MiB")
    rows = switch_rss(args.a, args.b, args.switches, args.keep)
    print(f"{'switch':>6} {'model':<14} {'s':>6} {'RSS MiB':>8} {'peak MiB':>8} {'held':>4} {'mlx active':>10} {'mlx cache':>9}")
    for r in rows:
        print(f"{r['switch']:>6} {r['model']:<14} {r['seconds']:>6} {r['rss_mib']:>8} {r['peak_mib']:>8} {r['held']:>4} "
              f"{r['mlx_active_mib']:>10} {r['mlx_cache_mib']:>9}")
    # the same model's rows after the first two loads should sit at the same RSS
    for name in (args.a, args.b):
        seen = [int(r["rss_mib"]) for r in rows[2:] if r["model"] == name]
        if seen:
            print(f"{name}: RSS after its switches {min(seen)}..{max(seen)} MiB (spread {max(seen) - min(seen)} MiB)")


if __name__ == "__main__":
    main()
