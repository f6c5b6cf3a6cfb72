"""Flag value types: every number and output path is checked where argparse reads it.

``type=integer(1, 1000)`` / ``type=real(0, 100)`` / ``type=output_file`` make argparse refuse a
bad value at once, naming the flag and its range (one line, exit 2), before any model loads.
Reals must be finite. The ranges match the request models' own limits (engine/results/), so a
value that passes here never reaches the user as a pydantic error.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

SEED_MAX = 2**32 - 1  # NumPy's and MLX's seed range
MAX_TOKENS = 4096  # generation length limit of every generating request
POSITION_MAX = 1_000_000  # |position|; the prompt's real length is checked once it is tokenized


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in ({_num(lo)}, {_num(hi)}]" if lo_open else f"from {_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f"> {_num(lo)}" if lo_open else f">= {_num(lo)}"
    if hi is not None:
        return f"<= {_num(hi)}"
    return "any value"


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An int in [lo, hi]."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {_range_text(lo, hi, False)}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_range_text(lo, hi, False)}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def real(lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {_range_text(lo, hi, lo_open)}, got {text!r}") from None
        below = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or below or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be a finite number {_range_text(lo, hi, lo_open)}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def _output(directory: bool) -> Callable[[str], str]:
    def parse(text: str) -> str:
        from engine.errors import InputError
        from engine.fileio import check_output

        if text == "":
            raise argparse.ArgumentTypeError("empty path")
        try:
            check_output(text, directory=directory)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    parse.__name__ = "directory" if directory else "file"
    return parse


output_file = _output(False)
output_dir = _output(True)

seed = integer(0, SEED_MAX)
top_k = integer(1, 1000)
max_tokens = integer(1, MAX_TOKENS)
temperature = real(0, 100)
position = integer(-POSITION_MAX, POSITION_MAX)
layer = integer(0, 100_000)  # the model's own layer count is checked once it loads
