"""What the circuit subcommands share: their JSON flags and outputs, and layer lists as text."""

from __future__ import annotations

import argparse
import sys

from lazarus_tui.batch import flags as F
from lazarus_tui.batch.common import write_atomic


def json_args(p: argparse.ArgumentParser, result_file: bool = True) -> None:
    if result_file:
        p.add_argument("-o", "--output", type=F.output_file, default=None, help="write the result as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the result model as JSON on stdout")


def emit_json_only(result, args) -> None:
    """For commands whose -o is not the JSON result: --json prints; --result writes."""
    text = result.model_dump_json(indent=2)
    if getattr(args, "result", None):
        write_atomic(args.result, text + "\n")
    if args.json:
        sys.stdout.write(text + "\n")


def layer_text(layers: list[int]) -> str:
    from engine.circuit.activations import _ranges

    return _ranges(list(layers))
