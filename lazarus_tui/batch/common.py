"""Shared pieces of the headless commands: parsing, output, progress, running jobs.

stdout is data (the Rich rendering or ``--json``); stderr is narration and
progress. User errors are one line and exit code 2; model-load errors exit 3;
Ctrl-C exits 130; ``-o FILE`` is written by engine.fileio (temp file and rename, or written
through to a device or FIFO). docs/errors.md lists the exit codes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from engine.errors import InputError


class _Out(Console):
    """stdout's console: a reader that goes away (``| head``) ends the command like ``--json`` does
    (lazarus_tui.batch.dispatch: exit 0, quietly), not with Rich's own exit 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


out = _Out(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (InputError, exit 2), and refuses text
    that is not valid UTF-8 (Python keeps such argv bytes as surrogate escapes)."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{self.prog}: {message}")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        from engine.fileio import check_utf8

        ns, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            value = getattr(ns, action.dest, None)
            what = f"{self.prog}: argument {'/'.join(action.option_strings) or action.dest}"
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    check_utf8(item, what)
        return ns, extras


def add_model_args(p: argparse.ArgumentParser, flag: tuple[str, ...] = ("-m", "--model")) -> None:
    p.add_argument(*flag, dest="model", default=None,
                   help="bundled alias (smollm2-135m default, gemma3-270m), .gguf file, model dir or hub id")
    p.add_argument("--dtype", default="auto", help="auto|float32|float16|bfloat16|native|q4|q8 (auto: float32 on CPU)")


def add_chat_args(p: argparse.ArgumentParser) -> None:
    """The product's one chat-template rule (docs/tui.md): prompts go to the model as typed unless
    ``--chat`` asks for the model's chat template; ``--raw`` names the default explicitly."""
    chat = p.add_mutually_exclusive_group()
    chat.add_argument("--chat", action="store_true", help="apply the model's chat template")
    chat.add_argument("--raw", action="store_true", help="prompts as typed (the default)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    from lazarus_tui.batch.flags import output_file

    p.add_argument("-o", "--output", type=output_file, default=None, help="write the result as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the result model as JSON on stdout")


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
    from engine.fileio import write_text

    write_text(path, text)


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
    if info.family_check:
        out.print(f"  Family check: {info.family_check}")
    out.print("")


def bar(p: float, width: int = 50) -> str:
    return "#" * int(round(max(0.0, min(1.0, p)) * width))


_RUNNERS: list[JobRunner] = []


def close_runners() -> None:
    """Stop the engine threads this command started (dispatch calls it when a command ends), so
    that in-process runs (tests, the API) do not keep a thread and its models alive forever."""
    if not _RUNNERS:
        return
    while _RUNNERS:
        session = _RUNNERS.pop().session
        # the command's jobs are over: the thread only has to wake up and end (slow on a busy
        # machine, so no "waiting" line for that); a step still running gets shutdown()'s
        if not session.close(cancel=True, timeout=5.0):
            session.shutdown()
    import gc

    gc.collect()  # a failed job's traceback holds its model in a reference cycle


class JobRunner:
    """Runs engine jobs with a Rich progress bar on stderr; Ctrl-C cancels the job."""

    def __init__(self, model: str | None, dtype: str, quiet: bool = False) -> None:
        from engine.distributed import env_rank, launched
        from engine.session import EngineSession

        self.session = EngineSession(model, dtype)
        _RUNNERS.append(self)
        # under a distributed launcher stderr is a pipe to the launcher; it passes the terminal's width
        # (COLUMNS) when it runs on one, and rank 0 then draws the combined progress through it
        self.console = err
        if launched() and env_rank() == 0 and os.environ.get("COLUMNS", "0").strip() not in ("", "0"):
            self.console = Console(stderr=True, highlight=False, soft_wrap=True, force_terminal=True)
        self.rank = env_rank()  # under a distributed launcher only rank 0 narrates
        self.quiet = (quiet or env_rank() != 0
                      or self.console is err and not sys.stderr.isatty()
                      and os.environ.get("LAZARUS_PROGRESS") != "1")

    def run(self, fn: Callable[[Any], Any], label: str) -> Any:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), console=self.console, transient=True, disable=self.quiet)
        tasks: dict[str, Any] = {}

        def on_progress(ev: Any) -> None:
            key = ev.stage
            desc = ev.message or f"{label}: {ev.stage}"
            if key not in tasks:
                tasks[key] = progress.add_task(desc, total=ev.total or None)
            progress.update(tasks[key], completed=ev.done, total=ev.total or None, description=desc)

        pressed: list[float] = []  # when each Ctrl-C arrived

        def interrupt(signum: int, frame: Any) -> None:
            # Only note it: the loop below does the rest. Printing here re-entered Rich's console
            # in the middle of its own write (the main thread prints the hint): the console's
            # buffer still held the hint, so it reached stderr a second time before "interrupted".
            pressed.append(time.monotonic())

        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, interrupt)
        try:
            job = self.session.submit(fn, name=label, on_progress=on_progress)
            with progress:
                return self._wait(job, pressed)
        finally:
            signal.signal(signal.SIGINT, previous)

    def _wait(self, job: Any, pressed: list[float]) -> Any:
        """First Ctrl-C: the job stops at its next check (Cancelled, exit 130); if it has not within
        a second, say once that a second Ctrl-C leaves at once (MLX cannot be stopped mid-step)."""
        hinted = False
        while True:
            if pressed:
                job.cancel()
            if len(pressed) > 1:
                from engine.session import leave_now

                if self.rank == 0:
                    err.print("interrupted", markup=False)
                leave_now(130)
            try:
                return job.result(timeout=0.1)
            except TimeoutError:
                if pressed and not hinted and time.monotonic() - pressed[0] > 1.0:
                    hinted = True
                    if self.rank == 0:
                        err.print("stopping after the current step (Ctrl-C again to stop now)", markup=False)

    def model(self) -> Any:
        return self.run(lambda ctx: ctx.model(), "loading model")


def pipeline_stage(enabled: bool) -> Any:
    """``--pipeline``: this rank's stage of a model split across a distributed launcher's ranks
    (docs/distributed.md; refused without a launcher); None without the flag."""
    if not enabled:
        return None
    from engine.pipeline import pipeline_world

    return pipeline_world()


def run_on_model(args: argparse.Namespace, label: str, analysis: Callable[[Any, Any], Any],
                 stage: Any = None) -> tuple[Any, Any]:
    """The one-model commands' job: load ``args.model`` (only ``stage``'s layers with ``--pipeline``)
    on the engine thread and return ``(model info, analysis(model, ctx))``."""

    def job(ctx: Any) -> tuple[Any, Any]:
        if stage is None:
            lm = ctx.model()
        else:
            from engine.models import load

            lm = load(args.model, args.dtype, stage=(stage.rank, stage.size))
        return lm.info, analysis(lm, ctx)

    return JobRunner(args.model, args.dtype).run(job, label)


def run_analysis(args: argparse.Namespace, label: str, analysis: Callable[[Any, Any], Any],
                 render: Callable[[Any, Any], None], stage: Any = None) -> int:
    """``run_on_model``, then print ``render(result, info)`` (or ``--json`` / ``-o``). A result of None
    is a rank other than 0 under a distributed launcher (or a pipeline stage): rank 0 reports."""
    info, result = run_on_model(args, label, analysis, stage)
    if result is not None:
        emit(result, args, lambda r: render(r, info))
    return 0

