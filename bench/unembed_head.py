"""The lens's unembedding product: ``engine.unembed_kernel`` against MLX's matmul (OpenBLAS here).

For each row count, h [rows, hidden] @ W.T with W the stored [vocab, hidden] float32 matrix of a
real head's shape (random values), alternated in one process; prints the medians and their ratio.
Both read W in place (no transposed copy).

    .venv/bin/python bench/unembed_head.py [--rows 1,5,18,30,64,256] [--repeats 9]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import engine  # noqa: F401  (BLAS before mlx)
import mlx.core as mx
import numpy as np
from common import alternate, machine

from engine.unembed_kernel import unembed

HEADS = {"smollm2-135m": (49_152, 576), "gemma3-270m": (262_144, 640)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,5,18,30,64,256")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--heads", default=",".join(HEADS))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"# unembedding product, MLX matmul vs engine.unembed_kernel — {machine()}")
    print(f"{'head':<14} {'rows':>5} {'mlx ms':>8} {'kernel ms':>10} {'ratio':>6}")
    for name in args.heads.split(","):
        vocab, hidden = HEADS[name]
        w = rng.standard_normal((vocab, hidden), dtype=np.float32)
        wm = mx.array(w)
        for n in (int(x) for x in args.rows.split(",")):
            h = rng.standard_normal((n, hidden), dtype=np.float32)
            hm = mx.array(h)
            t = alternate({"mlx": lambda hm=hm, wm=wm: mx.eval(hm @ wm.T), "kernel": lambda h=h, w=w: unembed(h, w)},
                          repeats=args.repeats)
            print(f"{name:<14} {n:>5} {t['mlx'] * 1e3:8.1f} {t['kernel'] * 1e3:10.1f} {t['mlx'] / t['kernel']:6.2f}")


if __name__ == "__main__":
    main()
