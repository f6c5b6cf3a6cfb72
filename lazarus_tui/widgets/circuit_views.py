"""Views of the Circuit screen: dataset counts, the per-layer geometry table and plotext charts
(probe accuracy per layer, PCA dims for 90/95% per layer, one layer's PCA variance curve).

View-only: every number comes from the engine's result models (``engine.results.circuit``:
``DatasetSummary``, ``AnalyzeResult``, ``LayerGeometry``). Each chart keeps the series it drew
in ``series`` (name -> (xs, ys)) so tests can compare them with the engine's numbers.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual.widgets import DataTable, Static

from lazarus_tui.widgets.charts import LayerChart

GEOMETRY_COLUMNS = ("layer", "PCA 90%", "PCA 95%", "PC1", "bin held", "bin CV", "cat held", "cat CV")


def _bar(count: int, total: int, width: int = 12) -> str:
    n = 0 if total <= 0 else max(1 if count else 0, round(width * count / total))
    return "█" * n


class DatasetCounts(Static):
    """A dataset summary: name, kind, total, counts per label and per category."""

    def show(self, s: Any) -> None:
        total = s.total
        lines = [f"[b]{escape(s.name)}[/b] ({escape(s.kind)}) · {total} prompts",
                 f"[dim]{escape(s.path)}[/dim]", "[b]labels[/b]"]
        width = max([len(lc.name) for lc in [*s.labels, *s.categories]] + [5])
        for i, lc in enumerate(s.labels):
            lines.append(f" {i} {escape(lc.name):<{width}} {lc.count:>4} [green]{_bar(lc.count, total)}[/green]")
        if [c.name for c in s.categories] != [lc.name for lc in s.labels]:
            lines.append("[b]categories[/b]")
            for lc in s.categories:
                lines.append(f"   {escape(lc.name):<{width}} {lc.count:>4} [cyan]{_bar(lc.count, total)}[/cyan]")
        self.update("\n".join(lines))


def _acc(score: Any, field: str, best: bool = False) -> Text | str:
    if score is None:
        return "-"
    return Text(f"{getattr(score, field):.3f}" + ("*" if best else ""), style="bold green" if best else "")


class GeometryTable(DataTable):
    """One row per analysed layer (row key = the layer); ``*``: the best binary / category layer."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.result: Any = None

    def on_mount(self) -> None:
        for column in GEOMETRY_COLUMNS:
            self.add_column(column, key=column)

    def show(self, r: Any) -> None:
        self.result = r
        self._fill(r.layers, r.best_layer, r.best_category_layer)

    def show_rows(self, layers: list[Any]) -> None:
        """The layers finished so far, while the analysis runs (best layers are marked at the end)."""
        self._fill(layers, None, None)

    def _fill(self, layers: list[Any], best: int | None, best_cat: int | None) -> None:
        self.clear()
        for g in layers:
            bp, cp = g.binary_probe, g.category_probe
            self.add_row(str(g.layer), str(g.dims_90), str(g.dims_95), f"{g.variance_explained[0]:.3f}",
                         _acc(bp, "heldout_accuracy", g.layer == best), _acc(bp, "cv_accuracy"),
                         _acc(cp, "heldout_accuracy", g.layer == best_cat), _acc(cp, "cv_accuracy"),
                         key=str(g.layer))

    def select_layer(self, layer: int) -> None:
        if self.result is not None:
            rows = [g.layer for g in self.result.layers]
            if layer in rows:
                self.move_cursor(row=rows.index(layer))


class _Chart(LayerChart):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result: Any = None
        self.at_layer: int | None = None
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.legend: list[tuple[str, str, str]] = []  # (name, colour, marker) of the drawn lines

    def show(self, result: Any, layer: int | None = None) -> None:
        self.result, self.at_layer = result, layer
        self.replot()

    def _line(self, name: str, xs: list[Any], ys: list[float], color: str, mark: str = "━") -> None:
        """A line without a plotext label (plotext's legend would cover the top-left of the plot);
        ``legend_markup()`` lists it instead."""
        self.series[name] = (list(xs), list(ys))
        self.legend.append((name, color, mark))
        self.plt.plot(xs, ys, marker="braille", color=color)

    def _level(self, name: str, xs: list[Any], y: float, color: str) -> None:
        """A constant (a baseline): plotext's hline, which spans the plot exactly."""
        self.series[name] = (list(xs), [y] * len(xs))
        self.legend.append((name, color, "─"))
        self.plt.hline(y, color)

    def legend_markup(self) -> str:
        return "  ".join(f"[{color}]{mark}[/{color}] {escape(name)}" for name, color, mark in self.legend)

    def replot(self) -> None:
        self.series, self.legend = {}, []
        super().replot()


class ProbeAccuracyChart(_Chart):
    """Binary probe held-out and CV accuracy, category probe held-out accuracy, and the majority
    baselines (flat lines), per layer; a vertical line at the highlighted layer."""

    def draw(self) -> None:
        plt, r = self.plt, self.result
        plt.title("probe accuracy by layer")
        plt.xlabel("layer")
        plt.ylim(0, 1.05)
        if r is None or not r.layers:
            return
        xs = [g.layer for g in r.layers]
        self.layer_axis(xs)
        if all(g.binary_probe is not None for g in r.layers):
            self._line("binary held-out", xs, [g.binary_probe.heldout_accuracy for g in r.layers], "green")
            self._line("binary CV", xs, [g.binary_probe.cv_accuracy for g in r.layers], "cyan")
            base = r.layers[0].binary_probe.baseline
            self._level("binary baseline", xs, base, "green")
        cat = [g for g in r.layers if g.category_probe is not None]
        if cat:
            self._line(f"category held-out ({cat[0].category_probe.classes} classes)", [g.layer for g in cat],
                       [g.category_probe.heldout_accuracy for g in cat], "magenta")
            self._level("category baseline", [g.layer for g in cat], cat[0].category_probe.baseline, "magenta")
        if len(xs) == 1:
            plt.xlim(xs[0] - 1, xs[0] + 1)
        if self.at_layer is not None:
            plt.vline(self.at_layer, "orange")


class PcaDimsChart(_Chart):
    """Principal components needed for 90% and 95% of the variance, per layer."""

    def draw(self) -> None:
        plt, r = self.plt, self.result
        plt.title("PCA dims for 90% / 95% by layer")
        plt.xlabel("layer")
        if r is None or not r.layers:
            return
        xs = [g.layer for g in r.layers]
        self.layer_axis(xs)
        self._line("dims 90%", xs, [g.dims_90 for g in r.layers], "cyan")
        self._line("dims 95%", xs, [g.dims_95 for g in r.layers], "red")
        plt.ylim(0, max(g.dims_95 for g in r.layers) + 1)
        if len(xs) == 1:
            plt.xlim(xs[0] - 1, xs[0] + 1)
        if self.at_layer is not None:
            plt.vline(self.at_layer, "orange")


class PcaCurveChart(_Chart):
    """One layer's PCA: cumulative and per-component variance ratio (first 50 components), with
    the 90% / 95% levels."""

    def geometry(self) -> Any:
        r = self.result
        if r is None or self.at_layer is None:
            return None
        return next((g for g in r.layers if g.layer == self.at_layer), None)

    def draw(self) -> None:
        plt, g = self.plt, self.geometry()
        plt.ylim(0, 1.02)
        plt.xlabel("component")
        if g is None:
            plt.title("PCA variance")
            return
        plt.title(f"layer {g.layer} PCA: 90% in {g.dims_90}, 95% in {g.dims_95}")
        xs = list(range(1, len(g.cumulative_variance) + 1))
        self.layer_axis(xs)
        self._line("cumulative", xs, g.cumulative_variance, "green")
        self._line("per component", xs, g.variance_explained, "cyan")
        self._level("90%", xs, 0.9, "magenta")
        self._level("95%", xs, 0.95, "red")
