"""One side of the process pair of bench/run_all.py: loads a model once, then runs the jobs the
parent sends over a pipe, timing each inside the process and reporting its peak RSS.

Peak RSS per job: the kernel's high-water mark (VmHWM) is reset before each job by writing 5 to
/proc/self/clear_refs, so each job reports the peak of the process during that job (weights
included, since they stay resident).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

BENCH = str(Path(__file__).resolve().parent)


def _status(field: str) -> float | None:
    from engine.limits import process_memory

    b = process_memory(field)
    return None if b is None else b / 2**20  # MiB


def _reset_hwm() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def main(conn, side: str, model: str, threads: int) -> None:
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    t = time.perf_counter()
    if side == "lazarus":
        from side_lazarus import LazarusSide

        obj = LazarusSide(model)
    else:
        from side_torch import TorchSide

        obj = TorchSide(model, threads)
    conn.send({"load_s": time.perf_counter() - t, "rss_mb": _status("VmRSS"), "hwm_mb": _status("VmHWM")})
    while True:
        msg = conn.recv()
        if msg is None:  # leave without interpreter finalisation (MLX may abort or linger there)
            conn.close()
            os._exit(0)
        method, kwargs = msg
        _reset_hwm()
        err = None
        res = None
        t = time.perf_counter()
        c = time.process_time()
        try:
            res = getattr(obj, method)(**kwargs)
        except Exception:  # noqa: BLE001  (reported to the parent, which prints it)
            err = traceback.format_exc()
        dt = time.perf_counter() - t
        conn.send({"seconds": dt, "cpu_seconds": time.process_time() - c, "result": res, "error": err, "hwm_mb": _status("VmHWM"),
                   "rss_mb": _status("VmRSS")})
