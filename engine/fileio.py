"""Writing result files so that an interrupted run never leaves a half-written file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def write_atomic(path: str | Path, write: Callable[[IO[Any]], None], binary: bool = False) -> Path:
    """Call ``write(fh)`` on a temp file next to ``path``, then rename it into place."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def save_npz_atomic(path: str | Path, fields: dict[str, Any]) -> Path:
    """``np.savez`` of plain arrays (no pickles), atomically."""
    return write_atomic(path, lambda fh: np.savez(fh, **fields), binary=True)
