"""Shared pieces of the headless commands: parsing, output, progress, running jobs.

stdout is data (the Rich rendering or ``--json``); stderr is narration and
progress. User errors are one line and exit code 2; model-load errors exit 3;
Ctrl-C exits 130; ``-o FILE`` is written to a temp file and renamed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from engine.errors import Cancelled, InputError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (InputError, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message}")


def add_model_args(p: argparse.ArgumentParser, flag: tuple[str, ...] = ("-m", "--model")) -> None:
    p.add_argument(*flag, dest="model", default=None,
                   help="bundled alias (smollm2-135m default, gemma3-270m), .gguf file, model dir or hub id")
    p.add_argument("--dtype", default="auto", help="auto|float32|float16|bfloat16|native|q4|q8 (auto: float32 on CPU)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default=None, help="write the result as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the result model as JSON on stdout")


def split_prompts(text: str) -> list[str]:
    """``a|b|c`` → three prompts, NOT stripped; ``@file`` → one prompt per line (trailing spaces kept)."""
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.exists():
            raise InputError(f"prompt file not found: {path}")
        return [line.rstrip("\r\n") for line in path.read_text().splitlines() if line.rstrip("\r\n") != ""]
    return text.split("|")


def parse_layers(text: str) -> list[int]:
    """``5``, ``5,8``, ``20-23`` and mixtures. Range checks happen against the model."""
    from engine.layer_lists import parse_layers as parse

    return parse(text)


def check_layers(layers: list[int], n_layers: int) -> list[int]:
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise InputError(f"layer {layer} out of range (model has {n_layers} layers: 0-{n_layers - 1})")
    return layers


def parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InputError(f"bad number list {text!r}: expected e.g. -2,-1,0,1,2") from exc


def fix_negative_values(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """Let ``--compare -2,-1,0`` parse: argparse would read ``-2,...`` as an option."""
    fixed: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in flags and i + 1 < len(argv):
            fixed.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        fixed.append(a)
        i += 1
    return fixed


def write_atomic(path: str, text: str) -> None:
    from engine.fileio import write_atomic as write

    target = Path(path)
    if target.parent and not target.parent.exists():
        raise InputError(f"output directory does not exist: {target.parent}")
    write(target, lambda fh: fh.write(text))


def emit(result: Any, args: argparse.Namespace, render: Callable[[Any], None]) -> None:
    """Print human output (or JSON) and save ``-o``."""
    text = result.model_dump_json(indent=2)
    if getattr(args, "output", None):
        write_atomic(args.output, text + "\n")
    if getattr(args, "json", False):
        sys.stdout.write(text + "\n")
    else:
        render(result)
        if getattr(args, "output", None):
            err.print(f"[dim]saved {args.output}[/dim]")


def model_header(info: Any) -> None:
    out.print(f"Model: {info.model_id}")
    out.print(f"  Family: {info.family}")
    out.print(f"  Layers: {info.num_layers}")
    out.print(f"  Hidden size: {info.hidden_size}")
    out.print(f"  Vocab size: {info.vocab_size}")
    out.print(f"  Tied embeddings: {info.tied_embeddings}")
    out.print(f"  Dtype: {info.dtype} on {info.device}")
    out.print("")


def bar(p: float, width: int = 50) -> str:
    return "#" * int(round(max(0.0, min(1.0, p)) * width))


class JobRunner:
    """Runs engine jobs with a Rich progress bar on stderr; Ctrl-C cancels the job."""

    def __init__(self, model: str | None, dtype: str, quiet: bool = False) -> None:
        from engine.session import EngineSession

        self.session = EngineSession(model, dtype)
        self.quiet = quiet or not sys.stderr.isatty() and os.environ.get("LAZARUS_PROGRESS") != "1"

    def run(self, fn: Callable[[Any], Any], label: str) -> Any:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), console=err, transient=True, disable=self.quiet)
        tasks: dict[str, Any] = {}

        def on_progress(ev: Any) -> None:
            key = ev.stage
            desc = ev.message or f"{label}: {ev.stage}"
            if key not in tasks:
                tasks[key] = progress.add_task(desc, total=ev.total or None)
            progress.update(tasks[key], completed=ev.done, total=ev.total or None, description=desc)

        job = self.session.submit(fn, name=label, on_progress=on_progress)
        previous = signal.getsignal(signal.SIGINT)
        asked: list[float] = []  # when Ctrl-C was pressed

        def interrupt(signum: int, frame: Any) -> None:
            """First Ctrl-C: the job stops at its next check (exit 130). A second one while a single
            long MLX step still runs: leave at once (MLX cannot be stopped mid-step)."""
            if asked:
                from engine.session import leave_now

                err.print("interrupted", markup=False)
                leave_now(130)
            asked.append(time.monotonic())
            job.cancel()

        signal.signal(signal.SIGINT, interrupt)
        try:
            with progress:
                while True:
                    try:
                        return job.result(timeout=0.1)
                    except TimeoutError:
                        if len(asked) == 1 and time.monotonic() - asked[0] > 1.0:
                            asked.append(0.0)  # say it once
                            err.print("stopping after the current step (Ctrl-C again to stop now)", markup=False)
        finally:
            signal.signal(signal.SIGINT, previous)

    def model(self) -> Any:
        return self.run(lambda ctx: ctx.model(), "loading model")


def run_or_cancel(fn: Callable[[], int]) -> int:
    try:
        return fn()
    except Cancelled:
        err.print("interrupted")
        return 130
