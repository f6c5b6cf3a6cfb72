"""Helpers shared by the analysis commands (layer, probe, neurons, compare, ...)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table


def short(text: str, width: int = 24) -> str:
    r = repr(text)
    return r if len(r) <= width else r[: width - 1] + "…"


def esc(text: object) -> str:
    """User text made safe for Rich markup."""
    return escape(str(text))


def cosine_table(title: str, names: Sequence[str], matrix: Sequence[Sequence[float]]) -> Table:
    t = Table(title=title, show_lines=False, title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("", overflow="fold")
    for i in range(len(names)):
        t.add_column(str(i), justify="right")
    for i, (name, row) in enumerate(zip(names, matrix)):
        cells = []
        for j, v in enumerate(row):
            style = "dim" if i == j else ("green" if v > 0.9 else ("red" if v < 0.5 else ""))
            cells.append(f"[{style}]{v:.3f}[/{style}]" if style else f"{v:.3f}")
        t.add_row(str(i), escape(name), *cells)
    return t


def two_model_header(out, infos, labels: tuple[str, str] = ("Base", "Fine-tuned")) -> None:
    """One line per model of a two-model command (``run_pair``'s ``infos``)."""
    for label, info in zip(labels, infos):
        out.print(f"{label}: {info.model_id}  ({info.family}, {info.num_layers} layers, hidden {info.hidden_size}, "
                  f"vocab {info.vocab_size}, {info.dtype})")


def add_pair_args(p, first: tuple[str, ...] = ("-b", "--base"), second: tuple[str, ...] = ("-f", "--finetuned"),
                  dest: tuple[str, str] = ("base", "finetuned")) -> None:
    """Two models and their dtypes (``--dtype``, ``--dtype2``): e.g. SmolLM2 float32 vs SmolLM2 q4."""
    p.add_argument(*first, dest=dest[0], default=None, help="first model (default: smollm2-135m)")
    p.add_argument(*second, dest=dest[1], default=None, help="second model (default: the first one)")
    p.add_argument("--dtype", dest="dtype", default="auto",
                   help="first model's dtype: auto|float32|float16|bfloat16|q4|q8")
    p.add_argument("--dtype2", dest="dtype2", default=None, help="second model's dtype (default: --dtype)")


def load_pair(ctx, spec1, dtype1: str, spec2, dtype2: str):
    """Load both models on the engine thread (inside a JobRunner job)."""
    total = 2
    ctx.progress("models", 0, total, "loading model 1")
    a = ctx.model(spec1, dtype1)
    ctx.progress("models", 1, total, "loading model 2")
    b = ctx.model(spec2 if spec2 is not None else spec1, dtype2)
    ctx.progress("models", 2, total, "models loaded")
    return a, b


def run_pair(args, spec1, spec2, dtype2: str, analysis, label: str, render) -> int:
    """The two-model commands' body: load both models on the engine thread, run
    ``analysis(model1, model2, ctx)``, then print (``render(result, (info1, info2))``) or emit JSON."""
    from lazarus_tui.batch.common import JobRunner, emit

    runner = JobRunner(spec1, args.dtype)

    def job(ctx):
        a, b = load_pair(ctx, spec1, args.dtype, spec2, dtype2)
        return (a.info, b.info), analysis(a, b, ctx)

    infos, result = runner.run(job, label)
    if result is None:  # a rank other than 0 under a distributed launcher: rank 0 reports
        return 0
    emit(result, args, lambda r: render(r, infos))
    return 0


def print_wide(out, renderable, min_width: int) -> None:
    """Print a wide table at its natural width even when stdout is not a terminal (default 80 columns)."""
    if out.width >= min_width:
        out.print(renderable)
        return
    from rich.console import Console

    wide = Console(width=min_width, highlight=False, soft_wrap=True, force_terminal=out.is_terminal,
                   color_system=out.color_system, no_color=out.no_color)
    with wide.capture() as cap:
        wide.print(renderable)
    out.file.write(cap.get())
