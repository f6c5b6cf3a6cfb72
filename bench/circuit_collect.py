"""Peak memory and throughput of `circuit collect` (all layers, last position).

For each dataset size: load the model, reset the process's peak-RSS counter (Linux:
``echo 5 > /proc/self/clear_refs`` resets VmHWM), collect, read VmHWM. "Beyond the model" =
peak RSS during collection minus RSS with the model loaded. Run:

    .venv/bin/python bench/circuit_collect.py [--sizes 250,1000] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: F401  (BLAS before mlx)
from engine.limits import process_memory


def _status(field: str) -> int:
    b = process_memory(field)
    if b is None:
        raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")
    return b


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="250,1000")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    from engine.circuit.collect import collect
    from engine.circuit.dataset import save_dataset, tool_calling
    from engine.results.circuit import CollectRequest
    from engine.models import load

    lm = load(args.model)
    print(f"model {lm.info.model_id}: {lm.info.num_layers} layers, hidden {lm.info.hidden_size}, {lm.info.dtype}")
    print(f"{'prompts':>8} {'layers':>6} {'s':>7} {'prompts/s':>10} {'file MB':>8} {'RSS model MB':>13} "
          f"{'peak MB':>8} {'beyond model MB':>16}")
    for n in [int(x) for x in args.sizes.split(",")]:
        per_tool = n // 10
        ds = tool_calling(per_tool=per_tool, no_tool=n - 6 * per_tool, seed=0, warnings=[])
        with tempfile.TemporaryDirectory() as d:
            save_dataset(ds, Path(d) / "ds.json")
            base = _status("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
            t0 = time.perf_counter()
            r = collect(lm, CollectRequest(dataset=str(Path(d) / "ds.json"), output=str(Path(d) / "acts"),
                                           layers="all", batch_size=args.batch_size))
            dt = time.perf_counter() - t0
            peak = _status("VmHWM")
        print(f"{n:>8} {len(r.captured_layers):>6} {dt:>7.1f} {n / dt:>10.1f} {r.file_bytes / 1e6:>8.1f} "
              f"{base / 1e6:>13.0f} {peak / 1e6:>8.0f} {(peak - base) / 1e6:>16.0f}")
    print(f"ru_maxrss over the whole run (includes loading): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:.0f} MB")


if __name__ == "__main__":
    main()
