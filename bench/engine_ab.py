"""Two versions of the engine side by side: this checkout against a git ref (default ``main``).

    .venv/bin/python bench/engine_ab.py [--ref main] [--model smollm2-135m] [--repeats 7] [--only lens,forward]

The ref's tree is exported (``git archive``) to a temporary directory; one worker process
(bench/worker.py, the lazarus side of bench/run_all.py) imports the engine from there, the other
from this checkout. The parent alternates them round-robin and prints, per workload, both medians
and the median of the per-round ratios (this / ref), in wall time and in process CPU time (steadier on a
busy machine): machine load falls on both alike, and which side runs first alternates. Each
workload first checks that both compute the same tokens.

Workloads: the lens over all layers (short and 256-token prompts: W1), a plain hooked forward
(logits at the last position), the batched MLP zero-ablation sweep (W2), batched steering (W3),
activation collection (W4, 64 prompts).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import workloads as W


def _rooted(root: str, conn, model: str) -> None:
    os.chdir(root)
    sys.path[:] = [root, str(BENCH)] + [p for p in sys.path if p not in (root, str(ROOT), "")]
    import worker

    worker.main(conn, "lazarus", model, 0)


class Side:
    def __init__(self, root: Path, model: str) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_rooted, args=(str(root), child, model), daemon=True)
        self.proc.start()
        self.conn.recv()

    def call(self, method: str, **kw):
        self.conn.send((method, kw))
        rep = self.conn.recv()
        if rep["error"]:
            raise RuntimeError(rep["error"])
        return rep

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="main")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--only", default="lens,forward,ablation,steer,collect")
    args = ap.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        ref_root = Path(tmp) / "ref"
        ref_root.mkdir()
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.ref, "engine", "lazarus_tui", "tests/data"],
                             check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(ref_root)], input=tar, check=True)
        sides = {"ref": Side(ref_root, args.model), "this": Side(ROOT, args.model)}
        pr = sides["this"].call("prompts")["result"]
        collect = pr["collect_ids"][:64]
        jobs = {
            "lens short": ("lens", {"prompt": W.SHORT}),
            "lens 256": ("lens", {"prompt": pr["long_text"]}),
            "forward 256": ("forward", {"ids": pr["long_ids"]}),
            "forward short": ("forward", {"ids": pr["short_ids"]}),
            "W2 ablation": ("ablation", {"ids": pr["ablation_ids"]}),
            "W3 steering": ("steer", {}),
            "W4 collect 64": ("collect", {"rows": collect, "batch": 64, "pad_id": pr["pad_id"]}),
        }
        setups = {}
        if any(j[0] == "steer" for j in jobs.values()) and "steer" in only:
            setups = {k: s.call("steer_setup")["result"] for k, s in sides.items()}
        print(f"# engine A/B: this checkout / {args.ref}, {args.model}, {args.repeats} rounds; load "
              f"{os.getloadavg()[0]:.2f}")
        print(f"{'workload':<15} {'ref ms':>9} {'this ms':>9} {'ratio':>6}  [range]      "
              f"{'ref cpu':>9} {'this cpu':>9} {'ratio':>6}  [range]   (wall, then process CPU time)")
        for name, (method, kw) in jobs.items():
            if method not in only:
                continue
            runs: dict[str, list[float]] = {"ref": [], "this": []}
            cpu: dict[str, list[float]] = {"ref": [], "this": []}
            results = {}
            for r in range(args.repeats + 1):
                order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]  # no order bias
                for key, side in order:
                    kws = {"setup": setups[key]} if method == "steer" else kw
                    rep = side.call(method, **kws)
                    if r == 0:
                        results[key] = rep["result"]
                    else:
                        runs[key].append(rep["seconds"])
                        cpu[key].append(rep["cpu_seconds"])
            same = results["ref"] == results["this"]
            ratios = sorted(b / a for a, b in zip(runs["ref"], runs["this"]))
            cratios = sorted(b / a for a, b in zip(cpu["ref"], cpu["this"]))
            print(f"{name:<15} {statistics.median(runs['ref']) * 1e3:9.1f} {statistics.median(runs['this']) * 1e3:9.1f} "
                  f"{statistics.median(ratios):6.2f}  [{ratios[0]:.2f}-{ratios[-1]:.2f}]  "
                  f"{statistics.median(cpu['ref']) * 1e3:9.1f} {statistics.median(cpu['this']) * 1e3:9.1f} "
                  f"{statistics.median(cratios):6.2f}  [{cratios[0]:.2f}-{cratios[-1]:.2f}]"
                  + ("" if same else "  RESULTS DIFFER"))
        for s in sides.values():
            s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
