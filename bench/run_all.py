"""lazarus against the PyTorch tools researchers would otherwise use, side by side (issue 9).

    .venv/bin/python bench/run_all.py [--model smollm2-135m] [--quick] [--only W1,W4] [--json PATH]

(`make bench` installs the peers, `pip install -e '.[bench]'`, and runs this.)

A process pair: one worker process holds the lazarus model (MLX, float32), the other the same
GGUF file loaded by transformers (PyTorch, float32, ``torch.set_num_threads`` = the BLAS threads
lazarus uses), with nnsight wrapping that model. The parent sends each job to one worker at a
time and alternates the contenders round-robin, so load from other processes falls on all of
them alike; every time is measured inside the worker; the median is reported. Before timing,
each workload checks that both sides compute the same thing (top-5 per layer, generated tokens,
activations).

Workloads: W1 logit lens, W2 MLP ablation sweep, W3 steering compare, W4 activation collection,
W5 cold-process load + first lens. The "limit x" column is the time divided by the workload's
FLOPs at the GEMM rate MLX measures on this machine (``lazarus --batch doctor``): 1.0 would be
pure matmul at full speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import workloads as W


class Worker:
    def __init__(self, side: str, model: str, threads: int) -> None:
        import worker

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker.main, args=(child, side, model, threads), daemon=True)
        self.proc.start()
        self.side = side
        self.ready = self.conn.recv()

    def call(self, method: str, **kwargs):
        self.conn.send((method, kwargs))
        rep = self.conn.recv()
        if rep["error"]:
            raise RuntimeError(f"{self.side}.{method} failed:\n{rep['error']}")
        return rep

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.terminate()


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def alternate(jobs: dict[str, tuple[Worker, str, dict]], repeats: int, warmup: int = 1,
              first: dict[str, dict] | None = None, max_s: float | None = None) -> dict[str, dict]:
    """Round-robin: each repetition runs every contender once. Median seconds, max peak RSS.

    ``first``: replies of a repetition already run (the correctness check), counted as one.
    ``max_s``: no new repetition starts after this many seconds (at least one always runs)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        for w, method, kw in jobs.values():
            w.call(method, **kw)
    secs: dict[str, list[float]] = {k: [] for k in jobs}
    hwm: dict[str, float] = {k: 0.0 for k in jobs}
    for k, rep in (first or {}).items():
        secs[k].append(rep["seconds"])
        hwm[k] = rep["hwm_mb"] or 0.0
    for i in range(repeats - (1 if first else 0)):
        if max_s is not None and (i > 0 or first) and time.perf_counter() - t0 > max_s:
            break
        for name, (w, method, kw) in jobs.items():
            rep = w.call(method, **kw)
            secs[name].append(rep["seconds"])
            hwm[name] = max(hwm[name], rep["hwm_mb"] or 0.0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "runs": v, "peak_rss_mb": hwm[k]}
            for k, v in secs.items()}


def table(title: str, rows: dict[str, dict], ref: str, flops: float | None, gflops: float,
          floor: str = "") -> str:
    """Markdown table: contender, median, ratio to ``ref`` (contender time / lazarus time), limit x, RSS."""
    lines = [f"### {title}", "",
             "| contender | median | (min) | vs lazarus | limit × | peak RSS |", "|---|---|---|---|---|---|"]
    base = rows[ref]["median_s"]
    for name, r in rows.items():
        ratio = "1" if name == ref else f"{r['median_s'] / base:.2f}× slower" if r["median_s"] >= base \
            else f"{base / r['median_s']:.2f}× faster"
        limit = f"{r['median_s'] / (flops / (gflops * 1e9)):.1f}" if flops else "–"
        lines.append(f"| {name} | {r['median_s']:.3f} s | {r['min_s']:.3f} s | {ratio} | {limit} | "
                     f"{r['peak_rss_mb']:.0f} MiB |")
    if flops:
        lines += ["", (f"FLOPs {flops / 1e9:.2f} G → limit {flops / (gflops * 1e9) * 1e3:.1f} ms at "
                       f"{gflops:.1f} GFLOP/s{floor}")]
    return "\n".join(lines)


def _diverge(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def same_top5(a: list[list[int]], b: list[list[int]]) -> tuple[bool, int]:
    """(final layer's top-5 equal as sets, number of layers whose top-1 agrees)."""
    return sorted(a[-1]) == sorted(b[-1]), sum(x[0] == y[0] for x, y in zip(a, b))


def cold(side: str, model: str, threads: int, env: dict | None = None, gguf: str | None = None) -> dict:
    cmd = [sys.executable, str(BENCH / "cold_start.py"), "--side", side, "--model", model, "--threads", str(threads)]
    if gguf:
        cmd += ["--gguf", gguf]
    cmd += ["--t0", repr(time.time())]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600,
                         check=False)
    for line in out.stdout.splitlines():
        if line.startswith("COLD "):
            return json.loads(line[5:])
    raise RuntimeError(f"cold start {side} failed:\n{out.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (match the BLAS threads of MLX)")
    ap.add_argument("--quick", action="store_true", help="1 repetition each, fewer cold starts (smoke test)")
    ap.add_argument("--only", default="W1,W2,W3,W4,W5")
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write every measurement here")
    args = ap.parse_args()
    only = set(args.only.upper().split(","))
    q = args.quick
    t_all = time.perf_counter()
    report: dict = {"model": args.model, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
                               f"Python {platform.python_version()}", "load_start": loadavg(), "workloads": {}}
    md: list[str] = []

    lz = Worker("lazarus", args.model, args.threads)
    pt = Worker("torch", args.model, args.threads) if only - {"W5"} else None
    info = lz.call("info")["result"]
    cfg, gflops = info["cfg"], info["gemm_gflops"]
    report.update(gemm_gflops=gflops, gemv_gbps=info["gemv_gbps"], mlx=info["mlx"], cfg=cfg, blas=info["blas"])
    if pt is not None:
        report["torch"] = pt.call("info")["result"]
    pr = lz.call("prompts")["result"]
    print(f"# lazarus vs PyTorch peers — {cfg['model_id']} ({cfg['num_layers']} layers, {cfg['dtype']}), "
          f"{report['machine']}, MLX {info['mlx']}, torch {report.get('torch', {}).get('torch', '-')} "
          f"({args.threads} threads), GEMM {gflops:.1f} GFLOP/s, "
          f"batch-1 GEMV {info['gemv_gbps']:.1f} GB/s, load avg {loadavg()}\n# MLX BLAS: {info['blas']}",
          flush=True)

    weight_bytes = 4 * (W.block_params(cfg) + cfg["vocab_size"] * cfg["hidden_size"])

    def record(key: str, title: str, res: dict, flops: float | None, extra: dict, passes: int = 0) -> None:
        """``passes``: sequential passes over all weights an ideal batched run needs (batch-1-like work
        is bound by streaming the weights, not by FLOPs)."""
        floor = ""
        if passes:
            ms = passes * weight_bytes / (info["gemv_gbps"] * 1e9) * 1e3
            floor = (f"; weight-streaming floor {ms:.0f} ms ({passes} pass{'es' if passes > 1 else ''} over "
                     f"{weight_bytes / 2**20:.0f} MiB at {info['gemv_gbps']:.1f} GB/s)")
        report["workloads"][key] = {"results": res, "flops": flops, "load_after": loadavg(), "floor": floor,
                                    **extra}
        md.append(table(title, res, "lazarus", flops, gflops, floor) + f"\n\nload average after: {loadavg()}")
        print("\n" + md[-1], flush=True)
        for k, v in extra.items():
            print(f"  {k}: {v}", flush=True)

    if "W1" in only:
        for label, text, reps, cap in [("short", W.SHORT, 7, 60), ("256 tokens", pr["long_text"], 5, 90)]:
            a = lz.call("lens", prompt=text)["result"]
            b = pt.call("lens_hidden_states", prompt=text)["result"]
            c = pt.call("lens_nnsight", prompt=text)["result"]
            n = a["n_tokens"]
            checks = {"tokens": [n, b["n_tokens"]],
                      "final top-5 equal (hidden_states, nnsight)": [same_top5(a["top5"], b["top5"])[0],
                                                                     same_top5(a["top5"], c["top5"])[0]],
                      f"layers with equal top-1 (of {len(a['top5'])})": [same_top5(a["top5"], b["top5"])[1],
                                                                            same_top5(a["top5"], c["top5"])[1]]}
            jobs = {"lazarus": (lz, "lens", {"prompt": text}),
                    "transformers output_hidden_states": (pt, "lens_hidden_states", {"prompt": text}),
                    "nnsight logit lens": (pt, "lens_nnsight", {"prompt": text})}
            if label == "short" and args.threads > 1:  # diagnostic: torch's sensitivity to other load
                jobs["(diagnostic) transformers output_hidden_states, 1 torch thread"] = (
                    pt, "lens_hidden_states", {"prompt": text, "threads": 1})
            res = alternate(jobs, 1 if q else reps, max_s=cap)
            flops = W.forward_flops(cfg, n) + W.unembed_flops(cfg, cfg["num_layers"])
            record(f"W1 {label}", f"W1 logit lens, all {cfg['num_layers']} layers, {label} prompt ({n} tokens)",
                   res, flops, checks, passes=1)

    if "W2" in only:
        jobs = {"lazarus": (lz, "ablation", {"ids": pr["ablation_ids"]}),
                "transformers hooks, sequential generate": (pt, "ablation", {"ids": pr["ablation_ids"],
                                                                             "eos": pr["eos_ids"]})}
        first = {k: w.call(m, **kw) for k, (w, m, kw) in jobs.items()}  # check; counts as repetition 1
        oa, ob = (first[k]["result"]["outputs"] for k in jobs)
        checks = {"runs with identical tokens (baseline + layers)": f"{sum(x == y for x, y in zip(oa, ob))}/{len(oa)}"}
        res = alternate(jobs, 1 if q else 3, warmup=0, first=first, max_s=150)
        n = len(pr["ablation_ids"])
        flops = (cfg["num_layers"] + 1) * W.generation_flops(cfg, n, W.ABLATION_TOKENS)
        record("W2", f"W2 MLP zero-ablation sweep, {cfg['num_layers']} layers + baseline, "
                     f"{W.ABLATION_TOKENS} greedy tokens each ({n}-token prompt)", res, flops, checks,
               passes=W.ABLATION_TOKENS)

    if "W3" in only:
        setup = lz.call("steer_setup")["result"]
        eos = pr["eos_ids"]
        jobs = {"lazarus": (lz, "steer", {"setup": setup}),
                "transformers hook, one generate per coefficient":
                    (pt, "steer", {"setup": setup, "eos": eos, "batched": False}),
                "transformers hook, batched generate (5 rows)":
                    (pt, "steer", {"setup": setup, "eos": eos, "batched": True})}
        first = {k: w.call(m, **kw) for k, (w, m, kw) in jobs.items()}  # check; counts as repetition 1
        outs = [first[k]["result"]["outputs"] for k in jobs]
        checks = {"identical outputs (loop, batched)": [f"{sum(x == y for x, y in zip(outs[0], o))}/{len(o)}"
                                                        for o in outs[1:]],
                  "first differing token (coefficient: index)": [
                      {c: _diverge(x, y) for c, x, y in zip(W.STEER_COEFS, outs[0], o) if x != y} for o in outs[1:]],
                  "scale s": round(setup["scale"], 2)}
        res = alternate(jobs, 1 if q else 3, warmup=0, first=first, max_s=150)
        n = len(setup["ids"])
        flops = len(W.STEER_COEFS) * W.generation_flops(cfg, n, W.STEER_TOKENS)
        record("W3", f"W3 steering compare, {len(W.STEER_COEFS)} coefficients × {W.STEER_TOKENS} tokens, layer "
                     f"{W.STEER_LAYER} ({n}-token chat prompt)", res, flops, checks,
               passes=W.STEER_TOKENS)

    if "W4" in only:
        import numpy as np

        prompts = W.collect_prompts()
        rows = pr["collect_ids"]
        ids_peer = pt.call("collect_ids", prompts=prompts)["result"]
        a = lz.call("collect", rows=rows, batch=W.COLLECT_BATCH, pad_id=pr["pad_id"], return_array=True)
        b = pt.call("collect", prompts=prompts, batch=W.COLLECT_BATCH, return_array=True)
        xa, xb = a["result"]["array"], b["result"]["array"]
        rel = float(np.linalg.norm(xa - xb) / np.linalg.norm(xb))
        per_layer = np.linalg.norm(xa - xb, axis=(0, 2)) / np.linalg.norm(xb, axis=(0, 2))
        del xa, xb, a, b
        checks = {"same token ids": ids_peer == rows, "shape": [len(rows), cfg["num_layers"], cfg["hidden_size"]],
                  "relative difference (all, worst layer)": [f"{rel:.1e}", f"{float(per_layer.max()):.1e}"]}
        res = alternate({"lazarus": (lz, "collect", {"rows": rows, "batch": W.COLLECT_BATCH, "pad_id": pr["pad_id"]}),
                         "transformers output_hidden_states": (pt, "collect", {"prompts": prompts,
                                                                                "batch": W.COLLECT_BATCH})},
                        1 if q else 3, warmup=0, max_s=120)
        tokens = sum(len(r) for r in rows)
        flops = sum(W.forward_flops(cfg, len(r)) for r in rows)
        for r in res.values():
            r["prompts_per_s"] = len(rows) / r["median_s"]
        record("W4", f"W4 activation collection, {len(rows)} prompts ({tokens} tokens, batches of "
                     f"{W.COLLECT_BATCH}), last-position residual at every layer", res, flops,
               {**checks, "prompts/s": {k: round(v["prompts_per_s"], 1) for k, v in res.items()}})

    lz.close()
    if pt is not None:
        pt.close()

    if "W5" in only:
        reps = 1 if q else args.cold_repeats
        runs: dict[str, list[dict]] = {"lazarus": [], "transformers": []}
        t_cold = time.perf_counter()
        for i in range(reps):
            if i and time.perf_counter() - t_cold > 150:
                break
            for side, got in runs.items():
                got.append(cold(side, args.model, args.threads))
        from side_torch import gguf_path

        with tempfile.TemporaryDirectory() as tmp:  # lazarus' first load ever: converts the GGUF
            d, f = gguf_path(args.model)
            first = cold("lazarus", args.model, args.threads, env={"LAZARUS_CACHE": tmp}, gguf=str(Path(d) / f))
        lines = ["### W5 cold process: load from the local GGUF, then the first logit-lens result", "",
                 "| contender | imports | model loaded | first lens result | peak RSS | load vs lazarus |",
                 "|---|---|---|---|---|---|"]
        keys = ("imports", "loaded", "first_lens", "peak_rss_mb")
        med = {side: {k: statistics.median(r[k] for r in v) for k in keys} for side, v in runs.items()}
        med["lazarus, first load ever (converts the GGUF)"] = {k: first[k] for k in
                                                                ("imports", "loaded", "first_lens", "peak_rss_mb")}
        base = med["lazarus"]["loaded"]
        for name, m in med.items():
            ratio = "1" if name == "lazarus" else f"{m['loaded'] / base:.1f}×"
            lines.append(f"| {name} | {m['imports']:.2f} s | {m['loaded']:.2f} s | {m['first_lens']:.2f} s | "
                         f"{m['peak_rss_mb']:.0f} MiB | {ratio} |")
        tops = {s: [r["top5"] for r in v] for s, v in runs.items()}
        agree = all(t == tops["lazarus"][0] for ts in tops.values() for t in ts)
        lines += ["", (f"(seconds since the process was started, medians of {len(runs['lazarus'])}; "
                       f"final top-5 equal: {agree}; load average after: {loadavg()})")]
        report["workloads"]["W5"] = {"runs": runs, "first_load": first, "medians": med}
        md.append("\n".join(lines))
        print("\n" + md[-1], flush=True)

    report["load_end"] = loadavg()
    report["total_s"] = time.perf_counter() - t_all
    print(f"\ntotal {report['total_s']:.0f} s, load average {report['load_start']} -> {report['load_end']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=lambda o: None))
        Path(args.json).with_suffix(".md").write_text("\n\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
