"""Attribution widgets: coloured tables for estimates (layers × positions, layers × heads), the top
sites with their verification, and one head's attention pattern (query × key).

Colour: red for a positive estimate (the clean activation raises the metric), blue for negative,
brighter with |value| relative to the largest |value| in the table.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

RESID_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out")


def heat(value: float, vmax: float, fmt: str = "{:+.2f}") -> Text:
    """``value`` as text on a background whose strength is |value| / vmax (red +, blue -)."""
    a = 0.0 if vmax <= 0 else min(1.0, abs(value) / vmax)
    level = round(a * 200)
    bg = f"rgb({55 + level},40,40)" if value > 0 else f"rgb(40,40,{55 + level})" if value < 0 else "rgb(40,40,40)"
    return Text(fmt.format(value), style=f"bold white on {bg}" if a > 0.5 else f"white on {bg}", justify="right")


def _label(token: str, pos: int) -> str:
    t = token.replace("\n", "\\n")
    return f"{pos}:{t[:8]}"


def resid_grid(result: Any, kind: str) -> dict[tuple[int, int], float]:
    """(layer, position) -> estimate for one residual kind."""
    return {(int(s.site.split(".")[1]), s.position): s.estimate for s in result.sites
            if s.site.endswith("." + kind) and s.head is None and s.neuron is None}


def heads_grid(result: Any, kind: str = "attn_heads") -> dict[tuple[int, int], float]:
    """(layer, head) -> estimate summed over positions (kind attn_heads: the head's output;
    attn_pattern: its query-key part)."""
    out: dict[tuple[int, int], float] = defaultdict(float)
    for s in result.sites:
        if s.head is not None and s.site.endswith("." + kind):
            out[(int(s.site.split(".")[1]), s.head)] += s.estimate
    return dict(out)


def _empty(table: DataTable, why: str) -> None:
    """No data for this view in the result: one column saying why (and how to get it)."""
    table.clear(columns=True)
    table.add_column(why, key="why")


class ResidHeatmap(DataTable):
    """Layers (rows) × positions (columns) of one residual site kind."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="cell", **kwargs)
        self.values: dict[tuple[int, int], float] = {}

    def show(self, result: Any, kind: str) -> None:
        self.clear(columns=True)
        self.values = resid_grid(result, kind)
        self.add_column(kind, key="layer")
        for p, tok in enumerate(result.corrupt_tokens):
            self.add_column(_label(tok, p), key=f"p{p}")
        vmax = max((abs(v) for v in self.values.values()), default=0.0)
        layers = sorted({layer for layer, _ in self.values})
        for layer in layers:
            cells = [heat(self.values[(layer, p)], vmax) if (layer, p) in self.values else Text("")
                     for p in range(len(result.corrupt_tokens))]
            self.add_row(Text(f"L{layer}"), *cells, key=str(layer))

    def empty(self, why: str) -> None:
        self.values = {}
        _empty(self, why)


class HeadsGrid(DataTable):
    """Layers (rows) × heads (columns): estimates summed over positions."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="cell", **kwargs)
        self.values: dict[tuple[int, int], float] = {}
        self.row_layers: list[int] = []

    def show(self, result: Any, kind: str = "attn_heads") -> None:
        self.clear(columns=True)
        self.values = heads_grid(result, kind)
        self.add_column("head" if kind == "attn_heads" else "q·k", key="layer")
        for h in range(result.n_heads):
            self.add_column(f"H{h}", key=f"h{h}")
        vmax = max((abs(v) for v in self.values.values()), default=0.0)
        self.row_layers = sorted({layer for layer, _ in self.values})
        for layer in self.row_layers:
            self.add_row(Text(f"L{layer}"), *[heat(self.values.get((layer, h), 0.0), vmax)
                                              for h in range(result.n_heads)], key=str(layer))

    def empty(self, why: str) -> None:
        self.values, self.row_layers = {}, []
        _empty(self, why)

    def current(self) -> tuple[int, int] | None:
        """(layer, head) under the cursor."""
        row, col = self.cursor_coordinate
        if not self.row_layers or col < 1 or row >= len(self.row_layers):
            return None
        return self.row_layers[row], col - 1


class TopSites(DataTable):
    """The largest estimates, with the real effect once verified."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)

    def show(self, result: Any, n: int = 40) -> None:
        self.clear(columns=True)
        for col in ("#", "site", "pos", "token", "head/neuron", "estimate", "real"):
            self.add_column(col, key=col)
        real = {(v.site, v.position, v.head, v.neuron): v.real for v in result.verified}
        for i, s in enumerate(result.sites[:n], 1):
            unit = f"h{s.head}" if s.head is not None else f"n{s.neuron}" if s.neuron is not None else ""
            r = real.get((s.site, s.position, s.head, s.neuron))
            self.add_row(str(i), s.site, str(s.position), repr(result.corrupt_tokens[s.position]), unit,
                         Text(f"{s.estimate:+.4f}", justify="right"),
                         Text("" if r is None else f"{r:+.4f}", justify="right"))


class PatternView(DataTable):
    """One head's attention probabilities: queries (rows) × keys (columns)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="cell", **kwargs)

    def show(self, pattern: Any) -> None:
        self.clear(columns=True)
        labels = [_label(tok, k) for k, tok in enumerate(pattern.tokens)]
        # widths given, not measured: DataTable measures content after a refresh, so a screenshot
        # (or a user) could catch the first column at its header's width
        self.add_column("q \\ k", key="q", width=max(len("q \\ k"), *map(len, labels)))
        for k, label in enumerate(labels):
            self.add_column(label, key=f"k{k}", width=max(4, len(label)))
        for q, row in enumerate(pattern.weights):
            self.add_row(Text(labels[q]), *[heat(w, 1.0, "{:.2f}") for w in row])
