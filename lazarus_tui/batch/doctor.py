"""`lazarus --batch doctor`: MLX, device, BLAS, measured GEMM rate, model cache, load time."""

from __future__ import annotations

import platform
import sys
import time

from lazarus_tui.batch.common import ArgumentParser, out


def gemm_gflops(n: int = 1024, repeats: int = 8) -> float:
    """Measured float32 GEMM rate (n³ matmul), best of ``repeats``."""
    import mlx.core as mx

    a = mx.random.normal((n, n), key=mx.random.key(0))
    b = mx.random.normal((n, n), key=mx.random.key(1))
    mx.eval(a, b)
    mx.eval(a @ b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(a @ b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main(argv: list[str]) -> int:
    p = ArgumentParser(prog="lazarus --batch doctor", description="check MLX, BLAS speed and the model cache")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-load", action="store_true", help="skip timing a model load from the cache")
    args = p.parse_args(argv)
    import mlx.core as mx

    import engine  # noqa: F401  (BLAS first)
    from engine import blas
    from engine.models import device_name, registry

    report: dict = {
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "mlx_version": mx.__version__,
        "device": device_name(),
        "blas": blas.describe() if sys.platform.startswith("linux") else None,
        "blas_loaded": blas.state().loaded,
        "gemm_gflops_fp32_1024": round(gemm_gflops(), 1),
        "models": registry.cache_listing(),
    }
    if not args.no_load and registry.is_verified(registry.DEFAULT_MODEL):
        from engine.models import load

        load(registry.DEFAULT_MODEL)  # a first load may convert; time the cached one
        t = time.perf_counter()
        load(registry.DEFAULT_MODEL)
        report["default_model_load_seconds"] = round(time.perf_counter() - t, 2)
    if args.json:
        import json

        print(json.dumps(report, indent=2))
        return 0
    out.print(f"lazarus doctor  (Python {report['python']}, {report['platform']})")
    out.print(f"  MLX:     {report['mlx_version']}")
    out.print(f"  Device:  {report['device']}")
    if report["blas"] is not None:
        out.print(f"  BLAS:    {report['blas']}")
    out.print(f"  GEMM:    {report['gemm_gflops_fp32_1024']} GFLOP/s (float32, 1024³)")
    if "default_model_load_seconds" in report:
        out.print(f"  Load:    {registry.DEFAULT_MODEL} from cache in {report['default_model_load_seconds']} s")
    out.print(f"  Cache:   {registry.models_dir()}")
    for row in report["models"]:
        state = ("verified" if row["verified"] else "present") if row["present"] else "not pulled"
        size = f"{row['size_mb']} MiB" if row["size_mb"] is not None else ""
        out.print(f"    {row['name']:<40} {row['kind']:<9} {state:<10} {size}")
    return 0
