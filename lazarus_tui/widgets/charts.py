"""plotext charts (textual-plotext): lens curves and tracked-token probabilities."""

from __future__ import annotations

import math
from typing import Any

from textual.reactive import reactive
from textual_plotext import PlotextPlot


class LayerChart(PlotextPlot):
    """A chart drawn from scratch, on mount and on every ``replot()``: subclasses keep what to show
    as attributes and draw it in ``draw()`` (with ``self.plt``)."""

    def on_mount(self) -> None:
        self.replot()

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
            plt.plot(xs, [lp.top_probability for lp in r.layer_predictions], label="top-1 p", marker="braille")
            plt.plot(xs, [lp.entropy_normalized for lp in r.layer_predictions], label="entropy/ln V",
                     marker="braille")
            if r.decision_layer is not None:
                plt.vline(r.decision_layer, "green")
            mkl = r.max_kl_transition
            if mkl is not None:
                plt.vline(mkl.to_layer, "orange")


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
        for ev in self.evolutions:
            xs = sorted(ev.layer_probabilities)
            ys = [ev.layer_probabilities[x] for x in xs]
            if self.log_scale:
                ys = [math.log10(max(y, 1e-12)) for y in ys]
            plt.plot(xs, ys, label=repr(ev.token), marker="braille")
            if ev.emergence_layer is not None:
                plt.vline(ev.emergence_layer)
