"""Helpers shared by the analysis commands (layer, probe, neurons, compare, ...)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from engine.errors import InputError


def split_labels(text: str) -> list[str]:
    """``a|b|c`` or ``a,b,c`` (the seed's layer example uses commas); labels are stripped."""
    sep = "|" if "|" in text else ","
    labels = [x.strip() for x in text.split(sep)]
    if any(x == "" for x in labels):
        raise InputError(f"empty label in {text!r}")
    return labels


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


def two_model_header(out, label: str, info) -> None:
    out.print(f"{label}: {info.model_id}  ({info.family}, {info.num_layers} layers, hidden {info.hidden_size}, "
              f"vocab {info.vocab_size}, {info.dtype})")
