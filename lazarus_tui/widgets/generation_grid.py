"""``GenerationGrid``: generated positions × layers, the chosen token's rank in each cell."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from lazarus_tui.widgets.rank_strip import rank_style


def _cell(rank: int) -> Text:
    label = "1" if rank == 1 else ("·" if rank > 999 else str(rank) if rank < 10 else "+")
    return Text(f"{label:^3}", style=rank_style(rank) + " black")


class GenerationGrid(DataTable):
    """Row per generated token; columns: the token, its emergence layer, then one cell per layer."""

    def __init__(self, **kwargs: Any) -> None:
        # no padding between cells: a layer is 3 columns, so 30 layers and the token fit in 130
        super().__init__(cursor_type="row", cell_padding=0, **kwargs)
        self.result: Any = None

    def show(self, result: Any) -> None:
        self.result = result
        self.clear(columns=True)
        for label in ("# ", "token ", "top-1 at ", "settled "):
            self.add_column(label)
        for layer in range(result.num_layers):
            self.add_column(f"{layer:^3}", width=3)
        for p in result.positions:
            em = "-" if p.emergence_layer is None else str(p.emergence_layer)
            st = "-" if p.settled_layer is None else str(p.settled_layer)
            self.add_row(f"{p.index} ", f"{p.token!r} ", em, st, *(_cell(r) for r in p.ranks), key=str(p.index))
