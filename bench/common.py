"""Timing helpers for bench/ scripts: alternate the contenders, report medians and ratios from one run."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def alternate(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1,
              paired: bool = False) -> dict[str, Any]:
    """Median seconds per contender, run round-robin so machine noise hits all of them alike.
    With ``paired`` the result also holds every round's time as ``<name>_all`` (same order for
    every contender), for ratios taken within a round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    if paired:
        out.update({f"{k}_all": v for k, v in times.items()})
    return out


def machine() -> str:
    import os

    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
