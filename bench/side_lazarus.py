"""The lazarus side of bench/run_all.py: each job is one call of the engine's own API.

Imported only inside its worker process (``engine`` first: OpenBLAS before MLX).
"""

from __future__ import annotations

import time

import engine  # noqa: F401  (BLAS before mlx)

# isort: split
import mlx.core as mx
import numpy as np
import workloads as W


def gemv_gbps(rows: int = 576, cols: int = 49152, repeats: int = 8) -> float:
    """Weight-streaming rate of a batch-1 matmul (x [1, rows] @ W [rows, cols], float32), GB/s, best of
    ``repeats``: what a decode step, which reads every weight once, can at best achieve."""
    w = mx.random.normal((rows, cols), key=mx.random.key(0))
    x = mx.random.normal((1, rows), key=mx.random.key(1))
    mx.eval(w, x, x @ w)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mx.eval(x @ w)
        best = min(best, time.perf_counter() - t)
    return rows * cols * 4 / best / 1e9


class LazarusSide:
    name = "lazarus"

    def __init__(self, model: str) -> None:
        from engine.hooks import HookedModel
        from engine.models import load

        self.lm = load(model)
        self.hm = HookedModel(self.lm)
        self.direction = None
        i = self.lm.info
        self.cfg = {"num_layers": i.num_layers, "hidden_size": i.hidden_size,
                    "intermediate_size": i.intermediate_size, "num_heads": i.num_heads,
                    "num_kv_heads": i.num_kv_heads, "head_dim": i.head_dim, "vocab_size": i.vocab_size,
                    "model_id": i.model_id, "dtype": i.dtype}

    # -- set-up (untimed) ------------------------------------------------------------------
    def info(self) -> dict:
        from engine import blas
        from lazarus_tui.batch.doctor import gemm_gflops

        return {"cfg": self.cfg, "gemm_gflops": gemm_gflops(), "gemv_gbps": gemv_gbps(), "mlx": mx.__version__,
                "blas": blas.describe()}

    def prompts(self) -> dict:
        tok = self.lm.tokenizer
        long_ids = tok.encode(W.LONG)[:W.LONG_TOKENS]
        return {"short_ids": tok.prepare(W.SHORT, chat=False), "long_ids": long_ids,
                "long_text": tok.decode(long_ids[1:] if tok.add_bos and long_ids[:1] == [tok.bos_id] else long_ids),
                "ablation_ids": tok.prepare(W.ABLATION_PROMPT, chat=False),
                "collect_ids": [tok.prepare(p, chat=False) for p in W.collect_prompts()],
                "pad_id": tok.pad_id or 0, "eos_ids": list(tok.eos_ids)}

    def steer_setup(self) -> dict:
        """The direction (4 sentiment pairs, layer 10, mean) and the vectors each coefficient adds."""
        from pathlib import Path

        from engine.steering import SteeringDirection, prompt_scale

        data = Path(__file__).resolve().parents[1] / "tests" / "data"
        pos = (data / "steering_positive.txt").read_text().splitlines()[:4]
        neg = (data / "steering_negative.txt").read_text().splitlines()[:4]
        self.direction = SteeringDirection.extract(self.lm, pos, neg, layer=W.STEER_LAYER, chat=True)
        ids = self.lm.tokenizer.prepare(W.STEER_PROMPT, chat=True)
        s = float(prompt_scale(self.hm, [ids], [W.STEER_LAYER])[0, 0])
        unit = self.direction.unit(W.STEER_LAYER).astype(np.float32)
        return {"ids": ids, "unit": unit.tolist(), "factors": [c * s for c in W.STEER_COEFS], "scale": s}

    # -- timed jobs ------------------------------------------------------------------------
    def lens(self, prompt: str, ids: list[int] | None = None) -> dict:
        from engine.lens import analyze
        from engine.results.analyze import AnalyzeRequest

        r = analyze(self.lm, AnalyzeRequest(prompt=prompt, layer_strategy="all", top_k=5))
        return {"n_tokens": len(r.token_ids), "top5": [[p.token_id for p in lp.predictions] for lp in r.layer_predictions]}

    def forward(self, ids: list[int]) -> dict:
        """One plain hooked forward, logits at the last position."""
        from engine.hooks import Batch

        out = self.hm.forward(Batch.from_lists([ids]), logits="last")
        return {"top": int(mx.argmax(out.logits[0, -1]).item())}

    def ablation(self, ids: list[int]) -> dict:
        from engine.ablation import run_ablation
        from engine.results.ablation import AblationRequest

        req = AblationRequest(prompt=W.ABLATION_PROMPT, criterion="Paris", component="mlp", chat=False,
                              max_tokens=W.ABLATION_TOKENS)
        res = run_ablation(self.lm, req, strategy="batched")
        return {"outputs": [res.baseline[0].token_ids] + [p.outputs[0].token_ids for p in res.points]}

    def steer(self, setup: dict) -> dict:
        from engine.steering import steer_generate

        res = steer_generate(self.lm, W.STEER_PROMPT, self.direction, coefficients=list(W.STEER_COEFS),
                             max_tokens=W.STEER_TOKENS, chat=True, batched=True)
        return {"outputs": [o.token_ids for o in res.outputs]}

    def collect(self, rows: list[list[int]], batch: int, pad_id: int, return_array: bool = False) -> dict:
        from engine.hooks import Batch, CaptureSpec, SiteKind

        n = self.hm.n_layers
        spec = CaptureSpec(kinds=(SiteKind.resid_post,), layers=None, positions="last")
        parts = []
        for i in range(0, len(rows), batch):
            out = self.hm.forward(Batch.from_lists(rows[i:i + batch], pad_id), capture=spec, logits="none")
            acts = mx.stack([out.captures[f"blocks.{layer}.resid_post"][:, -1] for layer in range(n)], axis=1)
            parts.append(np.array(acts.astype(mx.float32)))  # [b, layers, hidden] in host memory
        arr = np.concatenate(parts)
        return {"shape": list(arr.shape), **({"array": arr} if return_array else {})}
