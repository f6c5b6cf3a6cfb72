"""``RankTable``: per layer, each tracked token's rank and probability; emergence layer marked."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable


class RankTable(DataTable):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.result: Any = None

    def show(self, result: Any) -> None:
        self.result = result
        self.clear(columns=True)
        evs = result.token_evolutions
        self.add_column("layer", key="layer")
        self.add_column("lens top-1", key="top")
        for ev in evs:
            self.add_column(f"{ev.token!r} rank", key=f"rank-{ev.token}")
            self.add_column("p", key=f"p-{ev.token}")
        for lp in result.layer_predictions:
            cells: list[Any] = [str(lp.layer_idx), repr(lp.top_token)]
            for ev in evs:
                rank = ev.layer_ranks[lp.layer_idx]
                style = "bold green" if lp.layer_idx == ev.emergence_layer else ("green" if rank == 1 else "")
                mark = " ◆" if lp.layer_idx == ev.emergence_layer else ""
                cells += [Text(f"{rank}{mark}", style=style), f"{ev.layer_probabilities[lp.layer_idx]:.4f}"]
            self.add_row(*cells, key=str(lp.layer_idx))
