"""Workbench screen: pick an analysis (layer, probe, patch, ...), fill its request in a form
generated from the request model, run it on the engine, see tables and charts.

Wiring only: the analyses and their forms are described in ``lazarus_tui.analyses``, the form
is ``widgets.request_form``, the result views ``widgets.analysis_views``; the computation is an
``EngineClient.analysis`` job (``engine/`` functions on the engine thread).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, OptionList, Static
from textual.widgets.option_list import Option

from engine.errors import InputError
from lazarus_tui.analyses import ANALYSES, BY_NAME, Analysis, build_request, twin_command
from lazarus_tui.screens.base import BATCH_TWIN, WorkbenchScreen, show_twin
from lazarus_tui.widgets.analysis_views import summary_for, views_for
from lazarus_tui.widgets.messages import EngineProgress
from lazarus_tui.widgets.request_form import RequestForm


class AnalysisWorkbenchScreen(WorkbenchScreen):
    TITLE = "Workbench"
    HOME = "#wb-list"
    PANES = ("#wb-left", "#wb-out")
    RESULTS = ("#wb-views",)
    HELP = """\
# Workbench

The analyses of `lazarus --batch` in one place: **layer** (cosine matrix of prompts per
layer), **format-sensitivity**, **probe** (linear probe accuracy per layer), **neurons**,
**directions** (cosines of saved .npz directions), **compare** (two models' lens side by
side), **weight-diff**, **activation-diff** and **patch** (activation patching per layer).

1. pick an analysis in the list (↑ ↓, enter moves to its form);
2. fill the form: the fields are the request's (`a|b|c` or `@file` prompts, layers `5,8` or
   `20-23`, blank model = the current one);
3. **enter** in any field (or *Run*) runs it on the engine; **esc** cancels.

Results are tables (cosine matrices as coloured heatmaps: red low, green high) and charts.

Keys of the fields and views (the screen's own keys are listed below):

| key | action |
|---|---|
| `enter` | run (in the form) / go to the form (in the list) |
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        BATCH_TWIN,
        Binding("l", "focus_list", "Analyses"),
        Binding("ctrl+r", "run", "Run", priority=True),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.analysis: Analysis = ANALYSES[0]
        self.result: Any = None
        self.request: Any = None
        self.twin = ""

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="main"):
            with Vertical(id="wb-left"):
                yield OptionList(*(Option(a.title, id=a.name) for a in ANALYSES), id="wb-list")
                yield Static(self.analysis.about, id="wb-about")
                yield RequestForm(id="wb-form")
                yield Button("Run (enter)", id="wb-run", variant="primary")
            with VerticalScroll(id="wb-out"):
                yield Static("pick an analysis, fill the form, press enter", id="wb-summary")
                yield Vertical(id="wb-views")

    async def on_mount(self) -> None:
        await self.query_one(RequestForm).build(self.analysis)
        self.query_one("#wb-list", OptionList).focus()

    # -- choosing ----------------------------------------------------------------------------
    async def choose(self, name: str) -> None:
        current = self.query_one(RequestForm).analysis
        if current is not None and current.name == name:
            return
        self.analysis = BY_NAME[name]
        listing = self.query_one("#wb-list", OptionList)
        index = [a.name for a in ANALYSES].index(name)
        if listing.highlighted != index:  # only when called from code: the list posts a new highlight
            listing.highlighted = index
        self.query_one("#wb-about", Static).update(self.analysis.about)
        await self.query_one(RequestForm).build(self.analysis)

    @on(OptionList.OptionHighlighted, "#wb-list")
    async def highlighted(self, event: OptionList.OptionHighlighted) -> None:
        # Keys typed faster than a form builds queue several highlights; only the list's current one
        # counts. Choosing a stale one would move the highlight back, post another highlight, and the
        # two would rebuild the form in turn forever (UI thread at 100%, memory growing).
        if event.option.id and event.option_index == event.option_list.highlighted:
            await self.choose(event.option.id)

    @on(OptionList.OptionSelected, "#wb-list")
    async def selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            await self.choose(event.option.id)
        first = self.query_one(RequestForm).query("Input, Checkbox, Select").first()
        first.focus()

    def action_focus_list(self) -> None:
        self.query_one("#wb-list", OptionList).focus()

    # -- running -----------------------------------------------------------------------------
    def build(self) -> Any | None:
        """The request from the form, or None (with a notification) when it is bad."""
        try:
            return build_request(self.analysis, self.query_one(RequestForm).values())
        except InputError as exc:
            self.notify(str(exc).splitlines()[0], title=self.analysis.name, severity="error")
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ()))
            self.notify(f"{where}: {err['msg']}" if where else err["msg"], title=self.analysis.name, severity="error")
        return None

    @on(Input.Submitted, "#wb-form Input")
    def submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_run()

    @on(Button.Pressed, "#wb-run")
    def pressed(self) -> None:
        self.action_run()

    def action_run(self) -> None:
        req = self.build()
        if req is not None:
            self.run_analysis(self.analysis, req)

    @work(exclusive=True, group="workbench")
    async def run_analysis(self, analysis: Analysis, req: Any) -> None:
        self.request = req
        self.query_one("#wb-summary", Static).update(f"[dim]{analysis.name}: running…[/dim]")
        job = self.app.engine.analysis(req, on_progress=self.progress_sink("wb"))  # type: ignore[attr-defined]
        result = await self.run_job("wb", job, analysis.name)
        if result is None:
            self.query_one("#wb-summary", Static).update(f"{analysis.name}: no result (see the notification)")
            return
        self.result = result
        self.label_results(analysis=analysis.name, layers=",".join(map(str, getattr(req, "layers", None) or [])))
        views = self.query_one("#wb-views", Vertical)
        await views.remove_children()
        await views.mount_all(views_for(result))
        if self.narrow():
            self.show_pane(1)  # the whole view switches to the result (`v` goes back to the form)
        self.query_one("#wb-summary", Static).update(f"[b]{analysis.name}[/b] · {summary_for(result)}")

    def on_engine_progress(self, message: EngineProgress) -> None:
        ev = message.event
        if message.group == "wb":
            total = f" {ev.done}/{ev.total}" if ev.total else ""
            self.status = f"{self.analysis.name}: {ev.message}{total}"

    # -- batch twin --------------------------------------------------------------------------
    def action_twin(self) -> None:
        req = self.request if self.request is not None and self.request.kind == self.analysis.name else self.build()
        if req is None:
            return
        info = getattr(self.app, "model_info", None)
        show_twin(self, [twin_command(BY_NAME[req.kind], req, getattr(info, "model_id", None))])
