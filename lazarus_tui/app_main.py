"""``lazarus`` without ``--batch``: parse ``-m/--model`` and ``--dtype``, run the TUI."""

from __future__ import annotations

import argparse


def run_app(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="lazarus", description="terminal workbench for LM interpretability "
                                "(headless commands: lazarus --batch <command>)")
    p.add_argument("-m", "--model", default=None, help="bundled alias, .gguf file, model directory or hub id "
                   "(default: smollm2-135m)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16", "native", "q4", "q8"])
    p.add_argument("--lens", default=None, metavar="FILE", help="tuned lens file for the `t` toggle on the lens and "
                   "tracking screens (default: the model's own, from lazarus --batch tuned-lens train)")
    args = p.parse_args(argv)

    from lazarus_tui.app import LazarusApp
    from lazarus_tui.engine_client import EngineClient

    client = EngineClient(model=args.model, dtype=args.dtype)
    try:
        app = LazarusApp(client, model=args.model, dtype=args.dtype, lens_file=args.lens)
        app.run()
    finally:
        client.close()  # cancel and join the engine thread (engine.session.close_all_sessions)
    return app.return_code or 0
