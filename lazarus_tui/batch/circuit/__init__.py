"""`lazarus --batch circuit ...` (also the `circuit` entry point): the circuit toolkit.

Subcommands: dataset {create,show}, collect, analyze, directions, visualize, probes {run,init}; each
lives in its own module here, with ``build_parser()`` and ``main(argv)``. See docs/circuit.md.
"""

from __future__ import annotations

import importlib

from engine.errors import InputError

SUBCOMMANDS = ("dataset", "collect", "analyze", "directions", "visualize", "probes")


def usage() -> str:
    return "usage: circuit {" + ",".join(SUBCOMMANDS) + "} [options]   (circuit NAME -h for help)"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        raise InputError(f"unknown subcommand {name!r}; {usage()}")
    return importlib.import_module(f"{__name__}.{name}").main(rest)
