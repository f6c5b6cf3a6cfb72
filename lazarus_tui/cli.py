"""`lazarus` entry point. ``--batch`` is dispatched before Textual is imported."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Run lazarus in-process and return its exit code (tests call this)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--batch" in argv:
        argv.remove("--batch")
        from lazarus_tui.batch import dispatch

        return dispatch(argv)
    from lazarus_tui.app_main import run_app

    return run_app(argv)


def circuit_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from lazarus_tui.batch import dispatch

    return dispatch(["circuit", *argv])


def _leave(code: int) -> None:
    """Exit without interpreter finalisation, after stopping the engine threads.

    MLX can abort the process while Python finalises ("terminate called without an
    active exception", SIGABRT) once an engine thread has run MLX work, even when
    that thread has already stopped. Our own state is written by then (outputs are
    renamed into place atomically), so the process leaves with its real exit code.
    """
    from engine.distributed import finish as finish_distributed
    from engine.session import _close_all_sessions

    _close_all_sessions()
    finish_distributed()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run() -> None:
    """The `lazarus` console script."""
    _leave(main())


def run_circuit() -> None:
    """The `circuit` console script."""
    _leave(circuit_main())


if __name__ == "__main__":
    run()
