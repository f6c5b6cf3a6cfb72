"""``LayerTable``: one row per captured layer of a lens result, filled live as layers arrive."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

COLUMNS = ("layer", "top-1", "p", "entropy", "norm", "top-k")


def tok(text: str) -> str:
    """A token as shown in tables: quoted, with whitespace made visible."""
    return repr(text)


class LayerTable(DataTable):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.result: Any = None

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column, key=column)

    def start(self, layers: list[int]) -> None:
        """Placeholder rows for a request under way."""
        self.result = None
        self.clear()
        for layer in layers:
            self.add_row(str(layer), Text("…", style="dim"), "", "", "", "", key=str(layer))

    def progress(self, done_layers: int) -> None:
        """Mark rows whose block has run (layers < done_layers) as computed."""
        for row_key in list(self.rows):
            layer = int(str(row_key.value))
            if layer < done_layers:
                self.update_cell(row_key, "top-1", Text("computed", style="dim green"))

    def show_rows(self, rows: list[Any]) -> None:
        """Finished layers of a request under way (``LayerPredictionResult``s), in order."""
        if self.result is not None:
            return
        shown = {str(k.value) for k in self.rows}
        for lp in rows:
            key = str(lp.layer_idx)
            cells = (Text(tok(lp.top_token)), f"{lp.top_probability:.4f}", f"{lp.entropy:.3f}",
                     f"{lp.entropy_normalized:.2f}", ", ".join(f"{tok(t.token)} {t.probability:.3f}"
                                                               for t in lp.predictions[1:]))
            if key in shown:
                for column, value in zip(COLUMNS[1:], cells):
                    self.update_cell(key, column, value)
            else:
                self.add_row(key, *cells, key=key)

    def show(self, result: Any) -> None:
        self.result = result
        self.clear()
        mkl = result.max_kl_transition
        for lp in result.layer_predictions:
            marks = []
            style = ""
            if lp.layer_idx == result.decision_layer:
                marks.append("decision")
                style = "bold green"
            if mkl is not None and lp.layer_idx == mkl.to_layer:
                marks.append("max KL")
                style = style or "bold yellow"
            label = Text(f"{lp.layer_idx}{' *' if marks else ''}", style=style)
            rest = ", ".join(f"{tok(t.token)} {t.probability:.3f}" for t in lp.predictions[1:])
            self.add_row(label, Text(tok(lp.top_token), style=style), f"{lp.top_probability:.4f}",
                         f"{lp.entropy:.3f}", f"{lp.entropy_normalized:.2f}", rest, key=str(lp.layer_idx))

    def row_texts(self, index: int) -> list[str]:
        """The cells of row ``index`` as plain text (tests, screenshots)."""
        return [str(c.plain if isinstance(c, Text) else c) for c in self.get_row_at(index)]
