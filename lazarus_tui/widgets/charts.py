"""plotext charts (textual-plotext): lens curves and tracked-token probabilities."""

from __future__ import annotations

import math
from typing import Any

from textual.reactive import reactive
from textual_plotext import PlotextPlot


def integer_ticks(xs: list[float], slots: int) -> list[int]:
    """Whole-number ticks (layers, components) covering ``xs``: at most ``slots`` of them, on a
    step of 1, 2, 5, 10, 20… so a 30-layer axis reads 0 5 10 … 25 29 rather than 0.0 7.2 14.5."""
    if not xs:
        return []
    lo, hi = math.floor(min(xs)), math.ceil(max(xs))
    slots = max(2, slots)
    step = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10**9) if (hi - lo) / s < slots)
    ticks = [t for t in range(lo - lo % step, hi + 1, step) if t >= lo]
    if not ticks or ticks[0] != lo:
        ticks = [lo] + [t for t in ticks if (t - lo) * 2 > step]  # the first layer too, without crowding
    if ticks[-1] != hi and ((hi - ticks[-1]) * 2 > step or len(ticks) == 1):
        ticks.append(hi)  # the last layer is always labelled when there is room
    elif ticks[-1] != hi:
        ticks[-1] = hi
    return ticks


class LayerChart(PlotextPlot):
    """A chart drawn from scratch, on mount, on resize and on every ``replot()``: subclasses keep
    what to show as attributes and draw it in ``draw()`` (with ``self.plt``), calling
    ``layer_axis(xs)`` for an x axis of whole numbers."""

    def on_mount(self) -> None:
        self.replot()

    def on_resize(self) -> None:
        self.replot()  # integer ticks are spaced for the width

    def layer_axis(self, xs: list[float]) -> None:
        ticks = integer_ticks(list(xs), (self.size.width - 8) // 6 if self.size.width else 8)
        if ticks:
            self.plt.xticks(ticks, [str(t) for t in ticks])

    def replot(self) -> None:
        self.plt.clear_data()
        self.plt.clear_figure()
        self.draw()
        self.refresh()

    def draw(self) -> None:  # pragma: no cover - overridden
        pass


class ProbabilityChart(LayerChart):
    """Top-1 probability and normalised entropy per captured layer of a lens result."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result: Any = None

    def show(self, result: Any) -> None:
        self.result = result
        self.replot()

    def draw(self) -> None:
        plt = self.plt
        plt.title("top-1 probability and normalised entropy by layer")
        plt.xlabel("layer")
        plt.ylim(0, 1)
        r = self.result
        if r is not None:
            xs = [lp.layer_idx for lp in r.layer_predictions]
            self.layer_axis(xs)
            plt.plot(xs, [lp.top_probability for lp in r.layer_predictions], label="top-1 p", marker="braille")
            plt.plot(xs, [lp.entropy_normalized for lp in r.layer_predictions], label="entropy/ln V",
                     marker="braille")
            if r.decision_layer is not None:
                plt.vline(r.decision_layer, "green")
            mkl = r.max_kl_transition
            if mkl is not None:
                plt.vline(mkl.to_layer, "orange")


def legend_label(ev: Any) -> str:
    """What is tracked: the vocabulary entry (the first piece when the text is several tokens)."""
    piece = ev.pieces[0] if ev.pieces else ev.token
    return repr(piece) if len(ev.pieces) <= 1 else f"{piece!r} (first of {ev.token!r})"


class TrackedTokenChart(LayerChart):
    """Each tracked token's probability per layer; ``log_scale`` plots log10 p."""

    log_scale: reactive[bool] = reactive(False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.evolutions: list[Any] = []

    def show(self, evolutions: list[Any]) -> None:
        self.evolutions = list(evolutions)
        self.replot()

    def watch_log_scale(self, _: bool) -> None:
        self.replot()

    def draw(self) -> None:
        plt = self.plt
        plt.title("tracked tokens: " + ("log10 probability" if self.log_scale else "probability") + " by layer")
        plt.xlabel("layer")
        if not self.log_scale:
            plt.ylim(0, 1)
        self.layer_axis(sorted({x for ev in self.evolutions for x in ev.layer_probabilities}))
        for ev in self.evolutions:
            xs = sorted(ev.layer_probabilities)
            ys = [ev.layer_probabilities[x] for x in xs]
            if self.log_scale:
                ys = [math.log10(max(y, 1e-12)) for y in ys]
            plt.plot(xs, ys, label=legend_label(ev), marker="braille")
            if ev.emergence_layer is not None:
                plt.vline(ev.emergence_layer)
