"""Logit-lens screen: prompt → the lens per layer, live table, chart, rank strip."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Select, Static

from engine.results.analyze import AnalyzeRequest, LayerStrategy
from lazarus_tui.screens.base import LENS_SCREEN_KEYS, WorkbenchScreen, chat_checkbox, notify_analyze_twin
from lazarus_tui.widgets.charts import ProbabilityChart
from lazarus_tui.widgets.layer_table import LayerTable, tok
from lazarus_tui.widgets.lens_choice import LensPanel, toggle_lens
from lazarus_tui.widgets.messages import EngineProgress
from lazarus_tui.widgets.prompt_input import PromptInput
from lazarus_tui.widgets.rank_strip import RankStrip
from lazarus_tui.widgets.token_strip import TokenStrip

STRATEGIES = [("all layers", LayerStrategy.ALL.value), ("every 4th + last", LayerStrategy.EVENLY_SPACED.value),
              ("first & last", LayerStrategy.FIRST_LAST.value)]


class LensScreen(WorkbenchScreen):
    TITLE = "Logit lens"
    HOME = "#layers"
    PANES = ("#layers", ".side")
    RESULTS = ("#layers", ".side", "#ranks", "#summary")
    HELP = """\
# Logit lens

Type a prompt and press **enter**: each layer's residual stream at the chosen position is
put through the model's final norm and unembedding. The table fills as layers finish.

* **top-1 / p**: the layer's most likely next token and its probability
* **entropy / norm**: entropy in nats, and divided by ln(vocab); below 0.3 counts as confident
* **decision** layer (green, `*`): the first confident layer whose top-1 is the final prediction
* **max KL** (yellow, `*`): the layer after the largest KL jump between consecutive layers
* the strip under the table: the final token's rank at each layer (green = rank 1)

Keys of the fields and views (the screen's own keys are listed below):

| key | action |
|---|---|
| `enter` (prompt) | run the lens |
| `up`/`down` (prompt) | prompt history |
| `up`/`down` (table) | move through layers; `enter` shows a layer's full top-k and KL to the next |
"""
    BINDINGS = [
        Binding("left_square_bracket", "position(-1)", "Prev pos"),
        Binding("right_square_bracket", "position(1)", "Next pos"),
        *LENS_SCREEN_KEYS,
    ]

    def action_twin(self) -> None:
        notify_analyze_twin(self, self.result)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result: Any = None
        self.final_ranks: dict[int, int] = {}
        self.lens = "logit"

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="controls"):
            yield PromptInput(placeholder="prompt (enter to run)", id="prompt")
            yield Select(STRATEGIES, value=LayerStrategy.ALL.value, allow_blank=False, id="strategy")
            yield Label("top-k")
            yield Input("5", type="integer", id="top-k", classes="small")
            yield Label("pos")
            yield Input("-1", type="integer", id="position", classes="small")
            yield chat_checkbox()
        yield TokenStrip(id="tokens")
        with Horizontal(classes="main"):
            yield LayerTable(id="layers")
            with Vertical(classes="side"):
                yield ProbabilityChart(id="chart")
                yield LensPanel(id="lens-panel")
                yield Static("enter on a layer: its full top-k and the KL to the next layer", id="detail")
        yield RankStrip(id="ranks")
        yield Static(id="summary")

    def on_mount(self) -> None:
        self.action_focus_prompt()
        self.query_one(LensPanel).show(self.lens)

    def action_toggle_lens(self) -> None:
        toggle_lens(self)
        if self.result is not None:
            self.run_analysis(self.result.request.model_copy(update={"lens": self.lens}))

    # -- requests ----------------------------------------------------------------------------
    def build_request(self) -> AnalyzeRequest:
        return AnalyzeRequest(
            prompt=self.query_one("#prompt", PromptInput).value,
            layer_strategy=self.query_one("#strategy", Select).value,
            top_k=int(self.query_one("#top-k", Input).value or 5),
            position=int(self.query_one("#position", Input).value or -1),
            lens=self.lens,
            chat=self.chat(),
        )

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#prompt", PromptInput).remember(self.query_one("#prompt", PromptInput).value)
        try:
            req = self.build_request()
        except (ValidationError, ValueError) as exc:
            self.notify(str(exc).splitlines()[0] if not isinstance(exc, ValidationError)
                        else exc.errors()[0]["msg"], title="bad request", severity="error")
            return
        self.run_analysis(req)

    @work(exclusive=True, group="lens")
    async def run_analysis(self, req: AnalyzeRequest) -> None:
        table = self.query_one(LayerTable)
        table.start([])
        self.query_one("#summary", Static).update("")
        job = self.app.engine.analyze(req, on_progress=self.progress_sink("lens"))  # type: ignore[attr-defined]
        result = await self.run_job("lens", job, "analyze")
        if result is None:
            return
        self.show_result(result, result.final_token_ranks)

    def on_engine_progress(self, message: EngineProgress) -> None:
        ev = message.event
        if message.group != "lens" or ev.stage != "layer":
            return
        table = self.query_one(LayerTable)
        if table.result is None and ev.payload:
            table.show_rows(ev.payload)  # the layers finished so far, with their real numbers
        self.status = f"analyze: layer {ev.done}/{ev.total}"

    def show_result(self, result: Any, final_ranks: dict[int, int]) -> None:
        self.result, self.final_ranks = result, final_ranks
        self.label_results(position=result.position, layers=result.request.layer_strategy.value)
        self.query_one(LayerTable).show(result)
        self.query_one(ProbabilityChart).show(result)
        self.query_one(RankStrip).show(result.predicted_token, final_ranks)
        self.query_one(TokenStrip).show(result.tokens, result.position)
        self.query_one(LensPanel).show(result.request.lens, result.lens)
        mkl = result.max_kl_transition
        dec = "none" if result.decision_layer is None else f"layer {result.decision_layer}"
        kl = "" if mkl is None else f" · max KL: {mkl.from_layer}→{mkl.to_layer} ({mkl.kl_divergence:.3f})"
        self.query_one("#summary", Static).update(
            f"prediction [b]{tok(result.predicted_token)}[/b] p={result.predicted_probability:.3f} · "
            f"decision: {dec}{kl} · position {result.position} {tok(result.tokens[result.position])}")

    @on(Select.Changed, "#strategy")
    def strategy_changed(self, event: Select.Changed) -> None:
        if self.result is None:
            return
        if event.value != self.result.request.layer_strategy.value:
            self.mark_stale(f"layers now {event.value}; enter reruns")
        elif self.stale_reason and self.stale_reason.startswith("layers now"):
            self.label_results(position=self.result.position, layers=self.result.request.layer_strategy.value)

    # -- browsing ----------------------------------------------------------------------------
    @on(DataTable.RowSelected, "#layers")
    @on(DataTable.RowHighlighted, "#layers")
    def layer_chosen(self, event: Any) -> None:
        if self.result is None or event.row_key is None or event.row_key.value is None:
            return
        layer = int(str(event.row_key.value))
        lp = next((x for x in self.result.layer_predictions if x.layer_idx == layer), None)
        if lp is None:
            return
        lines = [f"[b]layer {layer}[/b]  entropy {lp.entropy:.3f} ({lp.entropy_normalized:.2f})"]
        lines += [f"{t.rank:>3}. {tok(t.token):<16} {t.probability:.4f}" for t in lp.predictions]
        nxt = next((t for t in self.result.layer_transitions if t.from_layer == layer), None)
        if nxt is not None:
            lines.append(f"KL to layer {nxt.to_layer}: {nxt.kl_divergence:.4f} · JS {nxt.js_divergence:.4f}"
                         + (" · top-1 changes" if nxt.top_token_changed else ""))
        self.query_one("#detail", Static).update("\n".join(lines))

    def action_position(self, step: int) -> None:
        if self.result is None:
            return
        n = len(self.result.tokens)
        pos = max(0, min(n - 1, self.result.position + step))
        self.query_one("#position", Input).value = str(pos)
        self.run_analysis(self.result.request.model_copy(update={"position": pos}))
