"""Load an optimized BLAS before MLX, on Linux.

The ``mlx-cpu`` wheel links a reference BLAS (about 5 GFLOP/s float32 GEMM on a
small x86 machine). Loading OpenBLAS with ``RTLD_GLOBAL`` before ``mlx.core`` is
first imported makes the dynamic linker resolve MLX's ``cblas_sgemm`` to
OpenBLAS instead, about 30x faster. ``LAZARUS_BLAS=/path/to/lib.so`` picks the
library, ``LAZARUS_BLAS=none`` disables the preload. Nothing happens on macOS,
where MLX uses Accelerate.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
FIX_HINT = "install OpenBLAS (Debian/Ubuntu: apt-get install libopenblas0-pthread) or set LAZARUS_BLAS=/path/to/libopenblas.so"


@dataclass(frozen=True)
class BlasState:
    """What happened at preload time."""

    platform: str
    requested: str | None  # the LAZARUS_BLAS value, if any
    loaded: str | None  # the path we loaded with RTLD_GLOBAL
    error: str | None  # why nothing was loaded


_state: BlasState | None = None
_warned = False


def _find() -> str | None:
    for path in _CANDIDATES:
        if Path(path).exists():
            return path
    name = ctypes.util.find_library("openblas")
    return name


def preload() -> BlasState:
    """Load the BLAS once per process; idempotent. Must run before ``import mlx.core``."""
    global _state
    if _state is not None:
        return _state
    if not sys.platform.startswith("linux"):
        _state = BlasState(sys.platform, None, None, None)
        return _state
    requested = os.environ.get("LAZARUS_BLAS")
    if requested and requested.lower() == "none":
        _state = BlasState("linux", requested, None, "disabled by LAZARUS_BLAS=none")
        return _state
    path = requested or _find()
    if not path:
        _state = BlasState("linux", requested, None, "no OpenBLAS found")
        _warn(f"lazarus: no optimized BLAS found; MLX matmuls will be ~30x slower: {FIX_HINT}")
        return _state
    # OpenBLAS's idle worker threads spin ~0.1 s after each call by default, taking a core from the
    # NumPy / compiled work that follows MLX work (the lens statistics ran ~1.7x slower right after
    # the unembedding matmul); 2**4 cycles makes them sleep at once. Measured neutral for the
    # forward pass and decoding here (docs/PERFORMANCE.md). Set OPENBLAS_THREAD_TIMEOUT to override.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    # Several ranks of one distributed job on this host share its cores (engine/distributed.py).
    from engine.distributed import blas_threads

    if (threads := blas_threads()) is not None:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        _state = BlasState("linux", requested, None, f"could not load {path}: {exc}")
        _warn(f"lazarus: could not load BLAS {path} ({exc}); {FIX_HINT}")
        return _state
    _state = BlasState("linux", requested, path, None)
    return _state


def _warn(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        print(message, file=sys.stderr)


def state() -> BlasState:
    return preload()


def mapped_blas_libraries() -> list[str]:
    """BLAS-looking shared libraries mapped into this process (Linux), for `doctor`."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    found: list[str] = []
    for line in maps.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and "blas" in parts[-1].lower() and parts[-1] not in found:
            found.append(parts[-1])
    return found


def describe() -> str:
    """One line naming the BLAS that serves MLX's GEMM."""
    st = preload()
    if st.platform == "darwin":
        return "Accelerate (macOS)"
    if st.loaded:
        return f"OpenBLAS ({st.loaded})"
    return f"reference BLAS bundled with mlx-cpu ({st.error})"
