"""Steering screen: extract a direction from contrastive prompts, pick a layer from the pair
separation chart, then steer a prompt live (← → change the strength; each change re-generates
a short continuation, cancelling the previous one) or side by side for a coefficient list.

Composition and wiring only: extraction and generation are ``EngineClient.steer_extract`` /
``steer`` jobs (``engine.steering`` on the engine thread), awaited by exclusive workers.
"""

from __future__ import annotations

import shlex
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Select, Static

from lazarus_tui.screens.base import BATCH_TWIN, WorkbenchScreen, chat_checkbox, show_twin
from lazarus_tui.widgets.charts import LayerChart
from lazarus_tui.widgets.messages import EngineProgress
from lazarus_tui.widgets.prompt_input import PromptInput

STEP = 0.05  # strength change per arrow key, in units of s (one typical token norm)


class SeparationChart(LayerChart):
    """Pair separation (||mean diff|| / mean norm) per layer; the chosen layer marked."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.separation: list[Any] = []
        self.steer_layer: int | None = None

    def show(self, separation: list[Any], layer: int | None) -> None:
        self.separation, self.steer_layer = list(separation), layer
        self.replot()

    def draw(self) -> None:
        plt = self.plt
        plt.title("pair separation by layer ([ ] pick the layer)")
        plt.xlabel("layer")
        if self.separation:
            xs = [s.layer for s in self.separation]
            self.layer_axis(xs)
            plt.plot(xs, [s.separation for s in self.separation], label="separation", marker="braille")
            cons = [s.consistency for s in self.separation]
            if all(c is not None for c in cons):
                plt.plot(xs, cons, label="LOO cosine", marker="braille")
            if self.steer_layer is not None:
                plt.vline(self.steer_layer, "green")


class StrengthBar(Static, can_focus=True):
    """The current strength; focused, ← → change it."""


class SteeringScreen(WorkbenchScreen):
    TITLE = "Steering"
    HOME = "#strength"
    RESULTS = ("#sep-chart", "#live", "#compare-out")
    HELP = """\
# Steering

1. Type **positive** and **negative** prompts (`a|b|c`, or `@file` with one prompt per line;
   they pair up in order), optionally a **layer** (blank = the middle one), and press **enter**:
   the direction is extracted at every layer in one pass, and the chart shows how well each
   layer separates the pairs (`[`/`]` moves the layer).
2. Type a **prompt** and press **enter**: a short continuation is generated with
   `strength * unit(direction) * s` added to the layer's output (s = the mean per-token norm of
   that layer on the prompt, position 0 excluded). **←/→** change the strength by 0.05 and
   re-generate live (the previous generation is cancelled).
3. **c**: side-by-side outputs for the coefficient list, in one batch.

Keys of the fields and views (the screen's own keys are listed below):

| key | action |
|---|---|
| `enter` | extract (in the prompt lists) / generate (in the prompt) |
| `←` `→` (strength bar) | strength −/+ 0.05, live |
"""
    DEFAULT_CSS = """
    SteeringScreen #sep-chart { height: 1fr; min-height: 6; }
    SteeringScreen #live { height: auto; min-height: 3; border: round $accent; padding: 0 1; }
    SteeringScreen #strength { width: 26; padding: 1 1 0 1; }
    SteeringScreen #strength:focus { text-style: bold reverse; }
    SteeringScreen #compare-out { height: auto; }
    SteeringScreen #steer-out { height: auto; max-height: 50%; }
    SteeringScreen .steer-col { width: 1fr; height: auto; border: round $panel; padding: 0 1; }
    SteeringScreen #positive, SteeringScreen #negative { width: 1fr; }
    SteeringScreen #method { width: 14; }
    SteeringScreen.-short #sep-chart { min-height: 7; }
    SteeringScreen.-short #steer-out { height: 1fr; max-height: 100%; }
    SteeringScreen.-narrow .wide-only { display: none; }
    SteeringScreen.-narrow #strength { width: 23; }
    SteeringScreen.-narrow #method { width: 12; }
    """
    BINDINGS = [
        Binding("left", "strength(-1)", "Weaker"),
        Binding("right", "strength(1)", "Stronger"),
        Binding("left_square_bracket", "layer(-1)", "Prev layer"),
        Binding("right_square_bracket", "layer(1)", "Next layer"),
        Binding("c", "compare", "Compare"),
        BATCH_TWIN,
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direction: Any = None  # engine.steering.SteeringDirection (numpy only)
        self.steer_layer: int | None = None
        self.strength: float = 0.0
        self.live_result: Any = None
        self.compare_result: Any = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="controls"):
            yield Input(placeholder="positive prompts: a|b or @file", id="positive")
            yield Input(placeholder="negative prompts (paired)", id="negative")
            yield Label("layer")
            yield Input("", placeholder="mid", type="integer", id="layer", classes="small")
            yield Select([("mean", "mean"), ("pca", "pca")], value="mean", allow_blank=False, id="method")
            yield chat_checkbox()
        yield SeparationChart(id="sep-chart")
        with Horizontal(classes="controls"):
            yield PromptInput(placeholder="prompt to steer (enter to generate)", id="prompt")
            yield StrengthBar(self._strength_text(), id="strength")
            yield Label("tokens", classes="wide-only")
            yield Input("16", type="integer", id="tokens", classes="small", tooltip="tokens to generate")
            yield Label("compare", classes="wide-only")
            yield Input("-0.3,0,0.3", id="compare", classes="medium", tooltip="coefficients for c (side by side)")
        yield Static("extract a direction, then type a prompt", id="live")
        with VerticalScroll(id="steer-out"):
            yield Horizontal(id="compare-out")

    def on_mount(self) -> None:
        self.query_one("#positive", Input).focus()
        for id_, title in (("tokens", "n"), ("compare", "compare")):
            self.query_one(f"#{id_}", Input).border_title = title  # the label where the narrow layout has none

    # -- state -------------------------------------------------------------------------------
    def _strength_text(self) -> str:
        return f"strength {self.strength:+.2f} (← →)"

    def _tokens(self) -> int:
        try:
            return max(1, int(self.query_one("#tokens", Input).value or 16))
        except ValueError:
            return 16


    def _prompt(self) -> str:
        return self.query_one("#prompt", PromptInput).value

    # -- extraction --------------------------------------------------------------------------
    @on(Input.Submitted, "#positive, #negative, #layer")
    def extract_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_extract()

    def action_extract(self) -> None:
        from engine.errors import InputError
        from engine.results.steering import ExtractRequest
        from lazarus_tui.inputs import split_prompts

        try:
            pos = split_prompts(self.query_one("#positive", Input).value)
            neg = split_prompts(self.query_one("#negative", Input).value)
            layer_text = self.query_one("#layer", Input).value.strip()
            req = ExtractRequest(positive=pos, negative=neg, layer=int(layer_text) if layer_text else None,
                                 method=self.query_one("#method", Select).value, chat=self.chat())
        except (InputError, ValueError) as exc:
            self.notify(str(exc).splitlines()[0], title="extract", severity="error")
            return
        self.run_extract(req)

    @work(exclusive=True, group="steer-extract")
    async def run_extract(self, req: Any) -> None:
        d = await self.run_job("extract", self.app.engine.steer_extract(req), "extract")  # type: ignore[attr-defined]
        if d is None:
            return
        self.direction, self.steer_layer = d, d.layer
        self.query_one("#layer", Input).value = str(d.layer)
        self.query_one(SeparationChart).show(d.layer_separation, d.layer)
        self.label_results(layer=d.layer, pairs=len(d.positive_prompts))
        self.query_one("#live", Static).update(f"direction extracted at layer {d.layer} "
                                               f"({len(d.positive_prompts)} pairs, norm {d.norm:.2f}); "
                                               "type a prompt and press enter")
        if self._prompt():
            self.regenerate()

    # -- live steering -----------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def prompt_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#prompt", PromptInput).remember(self._prompt())
        self.regenerate()

    def _request(self, coefficients: list[float]) -> Any:
        from engine.results.steering import SteerRequest

        return SteerRequest(prompts=[self._prompt()], coefficients=coefficients, layers=[self.steer_layer],
                            max_tokens=self._tokens(), chat=self.chat())

    def regenerate(self) -> None:
        if self.direction is None:
            self.notify("extract a direction first", title="steer", severity="warning")
            return
        if not self._prompt():
            return
        self.query_one("#live", Static).update(f"[dim]generating at strength {self.strength:+.2f}…[/dim]")
        self.run_live(self._request([round(self.strength, 4)]))

    @work(exclusive=True, group="steer-live")
    async def run_live(self, req: Any) -> None:
        job = self.app.engine.steer(req, self.direction, on_progress=self.progress_sink("live"))  # type: ignore[attr-defined]
        res = await self.run_job("live", job, "steer")
        if res is None:
            return
        self.live_result = res
        o = res.outputs[0]
        self.label_results(layer=o.layer, strength=f"{o.coefficient:+.2f}")
        self.query_one("#live", Static).update(
            f"[b]layer {o.layer} · strength {o.coefficient:+.2f}[/b] (s={o.scale:.1f}, |added|={o.added_norm:.1f}, "
            f"projection {o.mean_projection:+.2f})\n{o.text}")

    def action_strength(self, step: int) -> None:
        self.strength = round(self.strength + step * STEP, 4)
        self.query_one(StrengthBar).update(self._strength_text())
        self.regenerate()

    def action_layer(self, step: int) -> None:
        if self.direction is None or self.steer_layer is None:
            return
        n = len(self.direction.per_layer) or (self.steer_layer + 1)
        self.steer_layer = max(0, min(n - 1, self.steer_layer + step))
        self.query_one("#layer", Input).value = str(self.steer_layer)
        self.query_one(SeparationChart).show(self.direction.layer_separation, self.steer_layer)
        if self.compare_result is not None:
            self.mark_stale(f"layer now {self.steer_layer}: the side-by-side outputs are from layer "
                            f"{self.compare_result.outputs[0].layer}")
        self.regenerate()

    def on_engine_progress(self, message: EngineProgress) -> None:
        if message.group == "live" and message.event.stage == "token":
            ev = message.event
            self.status = f"steer: token {ev.done}/{ev.total}"

    # -- compare -----------------------------------------------------------------------------
    def action_compare(self) -> None:
        from engine.errors import InputError
        from lazarus_tui.inputs import parse_floats

        if self.direction is None or not self._prompt():
            self.notify("extract a direction and type a prompt first", title="compare", severity="warning")
            return
        try:
            coefs = parse_floats(self.query_one("#compare", Input).value)
        except InputError as exc:
            self.notify(str(exc), title="compare", severity="error")
            return
        if coefs:
            self.run_compare(self._request(coefs))

    @work(exclusive=True, group="steer-compare")
    async def run_compare(self, req: Any) -> None:
        res = await self.run_job("compare", self.app.engine.steer(req, self.direction), "compare")  # type: ignore[attr-defined]
        if res is None:
            return
        self.compare_result = res
        self.label_results(layer=res.outputs[0].layer, compare=",".join(f"{o.coefficient:g}" for o in res.outputs))
        box = self.query_one("#compare-out", Horizontal)
        await box.remove_children()
        await box.mount_all([
            Vertical(Static(f"[b]{o.coefficient:+g}[/b]  proj {o.mean_projection:+.2f}"), Static(o.text),
                     classes="steer-col")
            for o in res.outputs])

    # -- batch twin --------------------------------------------------------------------------
    def twin_command(self) -> str:
        q = shlex.quote
        parts = ["lazarus", "--batch", "steer", "--extract",
                 "--positive", q(self.query_one("#positive", Input).value),
                 "--negative", q(self.query_one("#negative", Input).value)]
        if self.steer_layer is not None:
            parts += ["-l", str(self.steer_layer)]
        if self.query_one("#method", Select).value != "mean":
            parts += ["--method", "pca"]
        if self._prompt():
            parts += ["-p", q(self._prompt())]
            coefs = self.query_one("#compare", Input).value.strip()
            parts += ["--compare", q(coefs)] if self.compare_result is not None and coefs else \
                ["-c", f"{self.strength:g}"]
            parts += ["-n", str(self._tokens())]
        if self.chat():
            parts.append("--chat")
        return " ".join(parts)

    def action_twin(self) -> None:
        show_twin(self, [self.twin_command()])
