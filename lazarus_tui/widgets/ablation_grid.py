"""Ablation widgets: the layer × component grid, and the results table (difficulty gradient).

``AblationGrid``: one row per layer, columns mlp / attention / both. ``space`` toggles a cell
into the current set (shown ``[x]``); result cells show pass/fail (green ✓ / red ✗, or the pass
count over several prompts) and the first generated token index where the output diverged
from the baseline (``=`` when it never did).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

COMPONENTS = ("mlp", "attention", "both")
Cell = tuple[int, str]  # (layer, component)
CELL_WIDTH = 11


def outcome(outputs: list[Any]) -> tuple[str, str]:
    """(label, style) of one sweep point's outputs: pass/fail (count) and the divergence index."""
    passed = [o.passed for o in outputs if o.passed is not None]
    divs = [o.diverged_at for o in outputs if o.diverged_at is not None]
    div = f"d{min(divs)}" if divs else "="
    if not passed:
        return div, "bold" if divs else "dim"
    n_ok = sum(passed)
    if len(outputs) == 1:
        mark = "✓" if n_ok else "✗"
    else:
        mark = f"{n_ok}/{len(passed)}"
    style = "bold white on dark_green" if n_ok == len(passed) else "bold white on red3" if n_ok == 0 \
        else "bold black on yellow"
    return f"{mark} {div}", style


class AblationGrid(DataTable):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("space", "toggle", "Toggle cell")]

    class Toggled(Message):
        def __init__(self, cells: list[Cell]) -> None:
            super().__init__()
            self.cells = cells

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="cell", zebra_stripes=True, **kwargs)
        self.n_layers = 0
        self.selected: set[Cell] = set()
        self.results: dict[Cell, tuple[str, str]] = {}  # cell -> (label, style)
        self.pending: set[Cell] = set()

    def setup(self, n_layers: int) -> None:
        """(Re)build the rows for a model with ``n_layers`` layers; clears the set and results."""
        if n_layers == self.n_layers and self.row_count:
            return
        self.n_layers = n_layers
        self.selected.clear()
        self.results.clear()
        self.pending.clear()
        self.clear(columns=True)
        for comp in COMPONENTS:
            self.add_column(comp, key=comp, width=CELL_WIDTH)
        for layer in range(n_layers):
            self.add_row(*(self._render(layer, c) for c in COMPONENTS), key=str(layer), label=f"L{layer}")

    @property
    def current(self) -> Cell | None:
        if not self.row_count:
            return None
        row, col = self.cursor_coordinate
        return row, COMPONENTS[min(col, len(COMPONENTS) - 1)]

    def _render(self, layer: int, comp: str) -> Text:
        mark = "[x]" if (layer, comp) in self.selected else "   "
        if (layer, comp) in self.pending:
            return Text(f"{mark} …".ljust(CELL_WIDTH), style="dim")
        label, style = self.results.get((layer, comp), ("", ""))
        return Text(f"{mark} {label}".ljust(CELL_WIDTH), style=style)

    def _refresh_cell(self, cell: Cell) -> None:
        layer, comp = cell
        if 0 <= layer < self.n_layers:
            self.update_cell(str(layer), comp, self._render(layer, comp))

    def action_toggle(self) -> None:
        cell = self.current
        if cell is None:
            return
        self.selected.symmetric_difference_update({cell})
        self._refresh_cell(cell)
        self.post_message(self.Toggled(sorted(self.selected)))

    def mark_pending(self, cells: list[Cell]) -> None:
        for cell in cells:
            self.results.pop(cell, None)
            self.pending.add(cell)
            self._refresh_cell(cell)

    def reset_results(self) -> None:
        """Forget every result (a new prompt or criterion); the toggled set stays."""
        self.results.clear()
        self.pending.clear()
        for layer in range(self.n_layers):
            for comp in COMPONENTS:
                self._refresh_cell((layer, comp))

    def clear_pending(self) -> None:
        cells, self.pending = list(self.pending), set()
        for cell in cells:
            self._refresh_cell(cell)

    def set_result(self, cell: Cell, outputs: list[Any]) -> None:
        self.pending.discard(cell)
        self.results[cell] = outcome(outputs)
        self._refresh_cell(cell)

    def cell_text(self, cell: Cell) -> str:
        """The plain text of a cell (tests)."""
        return self._render(*cell).plain.strip()


class ResultsTable(DataTable):
    """Rows: the baseline and each sweep point; columns: the prompts (with their expected answer)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)

    def show(self, cases: list[tuple[str, str]], baseline: list[Any] | None, points: list[Any]) -> None:
        self.clear(columns=True)
        self.add_column("ablation", key="ablation")
        for i, (prompt, expected) in enumerate(cases):
            head = f"{prompt!r} → {expected}" if expected else repr(prompt)
            self.add_column(head if len(head) <= 34 else head[:33] + "…", key=f"p{i}")
        rows = ([("none (baseline)", baseline)] if baseline else []) + [(p.label, p.outputs) for p in points]
        for label, outputs in rows:
            cells = []
            for o in outputs:
                mark = "" if o.passed is None else ("✓ " if o.passed else "✗ ")
                style = "" if o.passed is None else ("green" if o.passed else "red")
                text = repr(o.text.strip())
                cells.append(Text(mark + (text if len(text) <= 30 else text[:29] + "…"), style=style))
            self.add_row(label, *cells)
