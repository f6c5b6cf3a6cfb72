"""`lazarus` entry point. ``--batch`` is dispatched before Textual is imported."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
