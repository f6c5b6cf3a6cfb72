"""Result views of the Workbench analyses: tables, coloured heatmap tables and plotext charts.

``views_for(result)`` returns the widgets for one result (by ``result.request.kind``) and
``summary_for(result)`` its one-paragraph summary. View-only: every number comes from the
engine's result model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.color import Color
from rich.text import Text
from textual.widget import Widget
from textual.widgets import DataTable, Static

from lazarus_tui.widgets.charts import LayerChart


def _short(text: str, width: int = 24) -> str:
    r = repr(text)
    return r if len(r) <= width else r[: width - 1] + "…"


def heat_style(value: float, lo: float, hi: float) -> str:
    """Red (lo) → yellow → green (hi) background, black text."""
    t = 0.0 if hi <= lo else min(1.0, max(0.0, (value - lo) / (hi - lo)))
    r, g = (255, int(80 + 175 * t * 2)) if t < 0.5 else (int(255 - 200 * (t - 0.5) * 2), 255 - int(55 * (t - 0.5) * 2))
    return f"black on {Color.from_rgb(r, min(g, 255), 80).name}"


class ValueTable(DataTable):
    """A plain table: ``ValueTable(columns, rows, title=...)``; cells may be Rich ``Text``."""

    def __init__(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], **kwargs: Any) -> None:
        super().__init__(cursor_type="none", zebra_stripes=True, **kwargs)
        self._columns, self._rows = list(columns), [list(r) for r in rows]
        self.styles.height = min(len(self._rows) + 2, 24)

    def on_mount(self) -> None:
        self.add_columns(*(Text(c) for c in self._columns))
        for row in self._rows:  # plain Text: user strings like "[text]" are not markup
            self.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in row))

    def texts(self) -> list[list[str]]:
        """All cells as plain text (tests)."""
        return [[c.plain if isinstance(c, Text) else str(c) for c in row] for row in self._rows]


class HeatmapTable(ValueTable):
    """A matrix as a table whose cells are coloured by value (``lo`` red … ``hi`` green; ``reverse``:
    ``lo`` green … ``hi`` red)."""

    def __init__(self, names: Sequence[str], matrix: Sequence[Sequence[float]], *, lo: float, hi: float,
                 columns: Sequence[str] | None = None, fmt: str = "{:.3f}", reverse: bool = False,
                 **kwargs: Any) -> None:
        cols = list(columns) if columns is not None else [str(i) for i in range(len(matrix[0]) if matrix else 0)]
        rows = [[name, *(Text(fmt.format(v), style=heat_style(lo + hi - v if reverse else v, lo, hi)) for v in row)]
                for name, row in zip(names, matrix)]
        super().__init__(["", *cols], rows, **kwargs)
        self.matrix = [list(r) for r in matrix]


class LineChart(LayerChart):
    """Series over layers: ``LineChart(title, xs, {name: ys}, vlines=[...])``."""

    def __init__(self, title: str, xs: Sequence[float], series: dict[str, Sequence[float]], *,
                 xlabel: str = "layer", ylim: tuple[float, float] | None = None, vlines: Sequence[float] = (),
                 bars: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title, self.xs, self.series = title, list(xs), {k: list(v) for k, v in series.items()}
        self.xlabel, self.ylim, self.vlines, self.bars = xlabel, ylim, list(vlines), bars

    def draw(self) -> None:
        plt = self.plt
        plt.title(self.title)
        plt.xlabel(self.xlabel)
        if self.ylim is not None:
            plt.ylim(*self.ylim)
        if all(float(x).is_integer() for x in self.xs):
            self.layer_axis(self.xs)
        for name, ys in self.series.items():
            if self.bars:
                plt.bar(self.xs, ys, label=name)
            else:
                plt.plot(self.xs, ys, label=name, marker="braille")
        for x in self.vlines:
            plt.vline(x, "green")


def _title(text: str) -> Static:
    return Static(f"[b]{text}[/b]", classes="view-title")


# -- per analysis ------------------------------------------------------------------------------
def _layer(r: Any) -> list[Widget]:
    names = [_short(p, 22) + (f" [{lab}]" if r.labels else "") for p, lab in
             zip(r.prompts, r.labels or [""] * len(r.prompts))]
    out: list[Widget] = []
    if r.label_note:
        out.append(Static(f"note: {r.label_note}", markup=False))
    elif r.labels:
        xs = [ls.layer for ls in r.layers]
        out.append(LineChart("label separation (within − between cosine) by layer", xs,
                             {"separation": [ls.separation for ls in r.layers]},
                             vlines=[r.best_layer] if r.best_layer is not None else []))
    for ls in r.layers:
        stats = [f"{name} {value:{fmt}}" for name, value, fmt in
                 (("within", ls.within_label, ".3f"), ("between", ls.between_label, ".3f"),
                  ("separation", ls.separation, "+.3f"), ("silhouette", ls.silhouette, ".3f")) if value is not None]
        extra = "".join(f" · {x}" for x in stats)
        out.append(_title(f"layer {ls.layer}: cosine (last position){extra}"))
        out.append(HeatmapTable(names, ls.cosine, lo=0.0, hi=1.0, classes="heatmap", id=f"cos-{ls.layer}"))
        for at in ls.attention:
            tops = ", ".join(f"{t!r}@{p} {w:.2f}" for t, p, w in zip(at.tokens, at.positions, at.weights))
            out.append(Static(f"  attention [{at.prompt_index}] last → {tops}", markup=False))
    return out


def _format(r: Any) -> list[Widget]:
    xs = [fl.layer for fl in r.layers]
    return [
        LineChart("format sensitivity by layer", xs, {"separation": [fl.separation for fl in r.layers],
                                                      "mean pair cos": [fl.mean_pair_cosine for fl in r.layers]}),
        ValueTable(["layer", "within", "between", "separation", "mean pair cos"],
                   [[fl.layer, f"{fl.within_label:.4f}", f"{fl.between_label:.4f}", f"{fl.separation:+.4f}",
                     f"{fl.mean_pair_cosine:.4f}"] for fl in r.layers]),
        _title("pairs: cos(with space, without space)"),
        HeatmapTable([_short(p.base, 26) for p in r.pairs],
                     [[p.cosine_by_layer[x] for x in xs] for p in r.pairs], lo=0.0, hi=1.0,
                     columns=[f"L{x}" for x in xs]),
        Static(r.note, classes="view-note"),
    ]


def _probe(r: Any) -> list[Widget]:
    xs = [pl.layer for pl in r.layers]
    out: list[Widget] = [
        LineChart("probe accuracy by layer (stratified CV; AUC of out-of-fold predictions)", xs,
                  {"CV accuracy": [pl.cv_accuracy for pl in r.layers], "AUC": [pl.heldout_auc for pl in r.layers]},
                  ylim=(0.0, 1.05), vlines=[r.best_layer], id="probe-chart"),
        ValueTable(["layer", "CV acc", "± std", "F1", "AUC", "folds"],
                   [[Text(f"{pl.layer}{' *' if pl.layer == r.best_layer else ''}",
                          style="bold green" if pl.layer == r.best_layer else ""),
                     f"{pl.cv_accuracy:.3f}", f"{pl.cv_std:.3f}", f"{pl.heldout_f1:.3f}", f"{pl.heldout_auc:.3f}",
                     pl.folds] for pl in r.layers], id="probe-table"),
    ]
    if r.test_predictions:
        out.append(_title("test prompts"))
        out.append(ValueTable(["prompt", "label", f"P({r.request.label_a})", "projection"],
                              [[_short(t.prompt, 40), t.label, f"{t.probability_a:.3f}", f"{t.projection:+.3f}"]
                               for t in r.test_predictions]))
    return out


def _neurons(r: Any) -> list[Widget]:
    cols = ["layer", "neuron", "sep/weight", *(f"[{i}]" for i in range(len(r.prompts))), "min", "max", "mean", "std"]
    rows = []
    for n in r.neurons:
        score = n.separation if n.separation is not None else n.weight
        vals = n.values if n.steered_values is None else [f"{a:+.2f}→{b:+.2f}" for a, b in
                                                          zip(n.values, n.steered_values)]
        rows.append([n.layer, n.name or n.neuron, "" if score is None else f"{score:.3f}",
                     *(v if isinstance(v, str) else f"{v:+.3f}" for v in vals),
                     f"{n.min:+.3f}", f"{n.max:+.3f}", f"{n.mean:+.3f}", f"{n.std:.3f}"])
    legend = "  ".join(f"[{i}] {_short(p, 30)}" + (f" [{r.labels[i]}]" if r.labels else "")
                       for i, p in enumerate(r.prompts))
    return [Static(legend, markup=False, classes="view-note"), ValueTable(cols, rows)]


def _directions(r: Any) -> list[Widget]:
    names = [d.name for d in r.directions]
    return [
        _title("cosine between directions (normalised)"),
        HeatmapTable(names, r.cosine, lo=-1.0, hi=1.0),
        ValueTable(["a", "b", "cosine", "relation"], [[p.a, p.b, f"{p.cosine:+.4f}", p.relation] for p in r.pairs]),
        *(Static(f"warning: {w}", classes="view-note") for w in r.warnings),
    ]


def _weight_diff(r: Any) -> list[Widget]:
    layered = [m for m in r.matrices if m.layer is not None]
    layers = sorted({m.layer for m in layered})
    names = list(dict.fromkeys(m.matrix for m in layered))
    cell = {(m.layer, m.matrix): m.relative for m in layered}
    hi = max(r.max_relative, 1e-12)
    out: list[Widget] = [
        LineChart("relative weight difference by layer (max and mean over the block's matrices)", layers,
                  {"max": [max(cell.get((x, n), 0.0) for n in names) for x in layers],
                   "mean": [sum(cell.get((x, n), 0.0) for n in names) / len(names) for x in layers]}),
        _title("||W_f − W_b|| / ||W_b|| per layer and matrix (green 0 … red max)"),
        HeatmapTable([str(x) for x in layers], [[cell.get((x, n), 0.0) for n in names] for x in layers],
                     lo=0.0, hi=hi, columns=names, reverse=True, id="wd-heat"),
    ]
    other = [m for m in r.matrices if m.layer is None]
    if other:
        out.append(ValueTable(["matrix", "relative", "flagged"],
                              [[m.matrix, f"{m.relative:.4f}", "yes" if m.flagged else ""] for m in other]))
    out += [Static(n, classes="view-note") for n in r.notes]
    return out


def _activation_diff(r: Any) -> list[Widget]:
    xs = list(r.layers)
    return [
        LineChart("cosine(base, fine-tuned) of the last-position output by layer", xs,
                  {"mean": [r.mean_cosine_by_layer[x] for x in xs],
                   **{f"[{i}]": [p.cosine_by_layer[x] for x in xs] for i, p in enumerate(r.prompts[:4])}}),
        HeatmapTable([str(x) for x in xs], [[p.cosine_by_layer[x] for p in r.prompts] + [r.mean_cosine_by_layer[x]]
                                            for x in xs], lo=min(r.mean_cosine_by_layer.values(), default=0.0),
                     hi=1.0, columns=[f"[{i}] {_short(p.prompt, 18)}" for i, p in enumerate(r.prompts)] + ["mean"],
                     fmt="{:.4f}"),
    ]


def _compare(r: Any) -> list[Widget]:
    out: list[Widget] = []
    kls = [row.kl_1_2 for row in r.rows]
    if all(k is not None for k in kls):
        out.append(LineChart("KL(model 1 || model 2) by layer", [row.layer1 for row in r.rows], {"KL": kls}))
    rows = [[f"{row.depth:.2f}", row.layer1, Text(repr(row.top1_model1.token), style="green" if row.same_top1 else ""),
             f"{row.top1_model1.probability:.3f}", row.layer2,
             Text(repr(row.top1_model2.token), style="green" if row.same_top1 else "yellow"),
             f"{row.top1_model2.probability:.3f}", "" if row.kl_1_2 is None else f"{row.kl_1_2:.3f}"]
            for row in r.rows]
    out.append(ValueTable(["depth", "L1", "model 1 top-1", "p", "L2", "model 2 top-1", "p", "KL"],
                          rows, id="compare-table"))
    if r.tracked:
        out.append(ValueTable(["token", "emerges m1", "emerges m2", "rank m1", "rank m2", "p m1", "p m2"],
                              [[repr(t.token), t.emergence_model1, t.emergence_model2, t.rank_final_model1,
                                t.rank_final_model2, f"{t.prob_final_model1:.4f}", f"{t.prob_final_model2:.4f}"]
                               for t in r.tracked]))
    return out


def _patch(r: Any) -> list[Widget]:
    xs = [pl.layer for pl in r.layers]
    return [
        LineChart(f"patch effect by layer: P(source answer {r.source_answer!r}) and P(target answer "
                  f"{r.target_answer!r})", xs, {"P(src)": [pl.source_answer_prob for pl in r.layers],
                                                 "P(tgt)": [pl.target_answer_prob for pl in r.layers]},
                  ylim=(0.0, 1.0)),
        ValueTable(["layer", "top-1", "p", "P(src)", "rank", "P(tgt)", "rank", "flipped"],
                   [[pl.layer, repr(pl.top[0].token), f"{pl.top[0].probability:.4f}", f"{pl.source_answer_prob:.4f}",
                     pl.source_answer_rank, f"{pl.target_answer_prob:.4f}", pl.target_answer_rank,
                     Text("yes", style="bold green") if pl.source_answer_top1 else "no"] for pl in r.layers]),
    ]


VIEWS: dict[str, Callable[[Any], list[Widget]]] = {
    "layer": _layer, "format-sensitivity": _format, "probe": _probe, "neurons": _neurons,
    "directions": _directions, "weight-diff": _weight_diff, "activation-diff": _activation_diff,
    "compare": _compare, "patch": _patch,
}


def views_for(result: Any) -> list[Widget]:
    return VIEWS[result.request.kind](result)


def summary_for(r: Any) -> str:
    kind = r.request.kind
    if kind == "layer":
        best = f" · best separation at layer {r.best_layer}" if r.best_layer is not None else ""
        return f"{len(r.prompts)} prompts, last tokens {r.last_tokens!r} · {len(r.layers)} layers{best}"
    if kind == "format-sensitivity":
        top = max(r.layers, key=lambda fl: fl.separation)
        return f"most format-sensitive layer: {top.layer} (separation {top.separation:+.4f})"
    if kind == "probe":
        return (f"best layer {r.best_layer} · direction ({r.method}) at layer {r.direction_layer}: CV accuracy "
                f"{r.accuracy:.3f}, separation {r.separation:.3f}, norm {r.direction_norm:.3f}")
    if kind == "neurons":
        return f"site {r.site} · {len(r.neurons)} neurons · {len(r.prompts)} prompts" + (
            f" · {r.steering}" if r.steering else "")
    if kind == "directions":
        return f"{len(r.directions)} directions · mean |cos| {r.mean_abs_cosine:.4f}"
    if kind == "weight-diff":
        return (f"{r.base_model_id} ({r.base_dtype}) vs {r.finetuned_model_id} ({r.finetuned_dtype}) · max relative "
                f"{r.max_relative:.4f} · flagged {r.flagged_count} of {len(r.matrices)}")
    if kind == "activation-diff":
        worst = min(r.mean_cosine_by_layer, key=r.mean_cosine_by_layer.get)
        return (f"{r.base_model_id} ({r.base_dtype}) vs {r.finetuned_model_id} ({r.finetuned_dtype}) · most "
                f"divergent layer {worst} (mean cosine {r.mean_cosine_by_layer[worst]:.4f})")
    if kind == "compare":
        kl = f" · final KL {r.final_kl:.4f}" if r.final_kl is not None else " · tokenizers differ: no KL"
        return (f"{r.model1_id} vs {r.model2_id} · aligned {r.alignment}{kl} · final top-1 "
                f"{r.final1[0].token!r} vs {r.final2[0].token!r}")
    if kind == "patch":
        flips = f"becomes top-1 at layers {r.flipped_layers}" if r.flipped_layers else "never becomes top-1"
        return (f"source → {r.source_answer!r}, target → {r.target_answer!r} · the source answer {flips}")
    return kind
