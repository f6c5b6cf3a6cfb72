"""`lazarus` entry point. ``--batch`` is dispatched before Textual is imported."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run lazarus in-process and return its exit code (tests call this)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["introspect"]:  # the original toolkit's spelling: `lazarus introspect <command> ...`
        from lazarus_tui.batch import dispatch

        return dispatch(argv[1:])
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


def run() -> None:
    """The `lazarus` console script. The engine threads are stopped at exit
    (``engine.session.close_all_sessions``), so the interpreter finalises normally."""
    sys.exit(main())


def run_circuit() -> None:
    """The `circuit` console script."""
    sys.exit(circuit_main())


if __name__ == "__main__":
    run()
