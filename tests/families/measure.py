"""Cost of each tiny family's native forward: ``python -m tests.families.measure [family ...]``.

Prints a Markdown table (the one in README.md): parameters, build time, the first forward
(includes MLX's compilation of the family's fused functions), a warm 25-token forward, one
decode step through mlx-lm's own cache, and MLX's peak memory for the warm forward.
"""

from __future__ import annotations

import statistics
import sys
import time

import engine  # noqa: F401  (loads the BLAS before mlx)
import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.models.cache import make_prompt_cache

from tests.families.factory import FAMILIES, build_tiny, tiny_tokenizer

PROMPT = "The capital of France is Paris. one two three four five six seven"


def _ms(fn, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        mx.eval(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(name: str, ids: list[int]) -> dict[str, float]:
    t0 = time.perf_counter()
    model, _ = build_tiny(name)
    build = (time.perf_counter() - t0) * 1e3
    x = mx.array([ids])
    first = _ms(lambda: model(x))
    mx.reset_peak_memory()
    warm = _ms(lambda: model(x), repeat=5)
    peak = mx.get_peak_memory() / 2**20
    cache = make_prompt_cache(model)
    mx.eval(model(x, cache=cache))
    step = _ms(lambda: model(mx.array([[ids[-1]]]), cache=cache), repeat=5)
    params = sum(v.size for _, v in tree_flatten(model.parameters()))
    return {"params": params, "build": build, "first": first, "warm": warm, "step": step, "peak": peak}


def main(argv: list[str]) -> None:
    ids = tiny_tokenizer().encode(PROMPT)
    print(f"| family | params | build ms | first fwd ms | warm fwd ms ({len(ids)} tok) | decode step ms | peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in argv or FAMILIES:
        r = measure(name, ids)
        print(f"| {name} | {r['params'] / 1e3:.0f}k | {r['build']:.0f} | {r['first']:.0f} | {r['warm']:.1f} "
              f"| {r['step']:.1f} | {r['peak']:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
