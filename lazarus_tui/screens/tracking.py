"""Token-tracking screen: tracked tokens' probability and rank per layer; generation tracking."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal, Vertical
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from engine.results.analyze import AnalyzeRequest, LayerStrategy
from engine.results.tracking import TrackGenerationRequest
from lazarus_tui.screens.base import LENS_SCREEN_KEYS, WorkbenchScreen, chat_checkbox, notify_analyze_twin
from lazarus_tui.widgets.charts import TrackedTokenChart
from lazarus_tui.widgets.generation_grid import GenerationGrid
from lazarus_tui.widgets.lens_choice import LensPanel, toggle_lens
from lazarus_tui.widgets.messages import EngineProgress
from lazarus_tui.widgets.prompt_input import PromptInput
from lazarus_tui.widgets.rank_table import RankTable


class TrackingScreen(WorkbenchScreen):
    TITLE = "Token tracking"
    HOME = "#rank-table"
    PANES = ("#token-chart", "#rank-table", "#gen-box")
    RESULTS = ("#token-chart", "#rank-table", "#gen-box")
    HELP = """\
# Token tracking

Track chosen tokens through the layers at the last prompt position: the chart shows each
token's probability per layer (vertical line: the layer where it becomes top-1, its
*emergence* layer), the table its full-vocabulary rank.

Add a token in the *track* field: the exact vocabulary entry that will be tracked is shown
(a leading space matters: `" Paris"` is not `"Paris"`); if the text is several tokens, the
first is tracked and you are warned.

**Generation tracking**: generate N tokens greedily, then see for every generated token at
which layer it became top-1 (grid cell = its rank at that layer; green = rank 1; *settled* =
the layer from which it stays top-1).

Keys of the fields and views (the screen's own keys are listed below):

| key | action |
|---|---|
| `enter` (prompt) | run the lens with the tracked tokens |
| `enter` (track) | add the token |
| `delete` (tracked list) | remove the highlighted token |
| `enter` (N) or `ctrl+g` | generate N tokens and track them |
"""
    BINDINGS = [
        Binding("ctrl+l", "toggle_log", "Log scale"),
        Binding("ctrl+g", "generate", "Generate"),
        *LENS_SCREEN_KEYS,
    ]

    def action_twin(self) -> None:
        """The lens line (tracked tokens) and, when the grid shows one, the generate-and-track line."""
        from lazarus_tui.batch.track_generation import twin_command

        gen = self.generation
        notify_analyze_twin(self, self.result, [twin_command(gen.request, gen.model_id)] if gen is not None else [])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracked: list[str] = []
        self.result: Any = None
        self.generation: Any = None
        self.lens = "logit"

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="controls"):
            yield PromptInput(placeholder="prompt (enter to run)", id="prompt")
            yield Label("track")
            yield Input(placeholder='token, e.g. " Paris"', id="add-token", classes="medium")
            yield Label("N")
            yield Input("8", type="integer", id="gen-n", classes="small")
            yield chat_checkbox()
        with Horizontal(classes="main"):
            with Vertical(id="tt-left"):
                yield OptionList(id="tracked")
                yield Static(id="lookup-note")
                yield LensPanel(id="lens-panel")
            with Container(id="tt-right"):
                yield TrackedTokenChart(id="token-chart")
                yield RankTable(id="rank-table")
                with Vertical(id="gen-box"):
                    yield Static("generation tracking: enter a number in N (or ctrl+g) to generate and track",
                                 id="gen-summary")
                    yield GenerationGrid(id="gen-grid")

    def on_mount(self) -> None:
        self.action_focus_prompt()
        self.query_one(LensPanel).show(self.lens)

    def action_toggle_lens(self) -> None:
        toggle_lens(self)
        if self.result is not None:
            self.run_lens()
        if self.generation is not None:
            self.action_generate()

    # -- tracked tokens ----------------------------------------------------------------------
    @on(Input.Submitted, "#add-token")
    def add_token(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value == "":
            self.notify("type a token to track", severity="warning")
            return
        event.input.value = ""  # now, not when the lookup returns: a token typed meanwhile is its own
        self.lookup_token(event.value)

    @work(group="lookup")  # not exclusive: tokens added in quick succession are each looked up (in order)
    async def lookup_token(self, text: str) -> None:
        out = await self.run_job("lookup", self.app.engine.lookup(text), "lookup")  # type: ignore[attr-defined]
        if out is None:
            return
        tid, pieces = out
        note = f"{text!r} → token {tid} {pieces[0]!r}"
        if len(pieces) > 1:
            note = f"{text!r} is {len(pieces)} tokens {pieces}: tracking the first, {pieces[0]!r} (id {tid})"
            self.notify(note, title="several tokens", severity="warning")
        self.query_one("#lookup-note", Static).update(note)
        if text not in self.tracked:
            self.tracked.append(text)
            self.query_one("#tracked", OptionList).add_option(Option(tracked_label(text, tid, pieces[0])))
        if self.query_one("#prompt", PromptInput).value:
            self.run_lens()

    def on_key(self, event: Any) -> None:
        ol = self.query_one("#tracked", OptionList)
        if event.key in ("delete", "backspace") and ol.has_focus and ol.highlighted is not None:
            idx = ol.highlighted
            ol.remove_option_at_index(idx)
            del self.tracked[idx]
            event.stop()
            if self.result is not None:
                self.run_lens()

    # -- lens with tracked tokens ------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def prompt_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#prompt", PromptInput).remember(event.value)
        self.run_lens()

    def run_lens(self) -> None:
        req = AnalyzeRequest(prompt=self.query_one("#prompt", PromptInput).value, layer_strategy=LayerStrategy.ALL,
                             track_tokens=list(self.tracked), top_k=5, chat=self.chat(), lens=self.lens)
        self.lens_worker(req)

    @work(exclusive=True, group="tracking")
    async def lens_worker(self, req: AnalyzeRequest) -> None:
        job = self.app.engine.analyze(req, on_progress=self.progress_sink("tracking"))  # type: ignore[attr-defined]
        result = await self.run_job("tracking", job, "track")
        if result is None:
            return
        self.result = result
        self.query_one(LensPanel).show(result.request.lens, result.lens)
        self.label_results(tracked=", ".join(repr(t) for t in self.tracked) or "none")
        self.query_one(TrackedTokenChart).show(self.result.token_evolutions)
        self.query_one(RankTable).show(self.result)
        if not self.tracked:
            self.notify("add tokens to track in the 'track' field", severity="information", timeout=3)

    def action_toggle_log(self) -> None:
        chart = self.query_one(TrackedTokenChart)
        chart.log_scale = not chart.log_scale

    # -- generation tracking -----------------------------------------------------------------
    @on(Input.Submitted, "#gen-n")
    def gen_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_generate()

    def action_generate(self) -> None:
        try:
            req = TrackGenerationRequest(prompt=self.query_one("#prompt", PromptInput).value,
                                         max_new_tokens=int(self.query_one("#gen-n", Input).value or 8),
                                         chat=self.chat(), lens=self.lens)
        except (ValidationError, ValueError) as exc:
            msg = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            self.notify(f"N: {msg}", title="bad request", severity="error")
            return
        self.generation_worker(req)

    @work(exclusive=True, group="generation")
    async def generation_worker(self, req: TrackGenerationRequest) -> None:
        self.query_one("#gen-summary", Static).update("generating…")
        job = self.app.engine.track_generation(req, on_progress=self.progress_sink("generation"))  # type: ignore[attr-defined]
        res = await self.run_job("generation", job, "generate+track")
        if res is None:
            self.query_one("#gen-summary", Static).update("generation tracking: no result")
            return
        self.generation = res
        self.query_one(LensPanel).show(res.request.lens, res.lens)
        self.label_results(generated=len(res.positions))
        self.query_one(GenerationGrid).show(res)
        self.query_one("#gen-summary", Static).update(
            f"generated {len(res.positions)} tokens ({res.stopped}): {res.text!r} · rows: generated tokens, "
            f"cells: rank of the chosen token at each layer")

    def on_engine_progress(self, message: EngineProgress) -> None:
        ev = message.event
        what = {"tracking": "track", "generation": "generate+track"}.get(message.group)
        if what:
            self.status = f"{what}: {ev.stage} {ev.done}/{ev.total}"


def tracked_label(text: str, tid: int, piece: str) -> str:
    """A tracked token's line in the list: the vocabulary entry and its id, and what was typed only
    when it differs (the first of several tokens), so the 24-column list of a narrow terminal fits."""
    return f"{piece!r} #{tid}" if piece == text else f"{text!r} → {piece!r} #{tid}"
