"""Ablation screen: a layer × component grid; toggle cells and run them together, or sweep a
column with the grid filling live; baseline vs ablated text side by side; a results table over
several prompts with expected answers (the difficulty gradient).

Wiring only: the study is ``engine.ablation.run_ablation`` on the engine thread
(``EngineClient.ablate``), awaited by an exclusive worker; the grid and tables are widgets.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Static

from engine.errors import InputError
from engine.results.ablation import AblationRequest, AblationSpec, PromptCase
from lazarus_tui.screens.base import BATCH_TWIN, FOCUS_PROMPT, WorkbenchScreen, chat_checkbox, show_twin
from lazarus_tui.widgets.ablation_grid import AblationGrid, Cell, ResultsTable
from lazarus_tui.widgets.messages import EngineProgress
from lazarus_tui.widgets.prompt_input import PromptInput

SWEEP_CHUNK = 5  # sweep points per batch: the grid fills in steps of this many layers


def _clip(text: str, width: int = 400) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class AblationScreen(WorkbenchScreen):
    TITLE = "Ablation"
    HOME = "#grid"
    RESULTS = ("#grid", ".ablation-side")
    HELP = """\
# Ablation

Zero a layer's MLP output, attention output, or both while the model generates (greedy, KV
cache, every position), and compare with the un-ablated baseline.

* **grid**: rows are layers, columns mlp / attention / both. **space** toggles a cell into the
  current set (`[x]`); **enter** runs the set as ONE ablation (all toggled cells together;
  nothing toggled = the baseline only). **s** sweeps the highlighted column: every layer
  alone, the grid filling as batches finish.
* a cell shows **✓/✗** (the criterion on the output; `2/3` over several prompts) and
  **dN**, the first generated token that differs from the baseline (`=`: identical).
* **criterion**: `function_call`, `sorry`, `refusal`, `positive`, `negative`, `re:REGEX`, or
  any other text = that substring must appear.
* **prompts with answers** (`p:exp|p:exp`, split at the last `:`): the difficulty gradient;
  each prompt passes when its expected answer appears, and the table shows every prompt.
* the panes show the highlighted cell's baseline and ablated text side by side.

Keys of the fields and views (the screen's own keys are listed below):

| key | action |
|---|---|
| arrows | move in the grid |
| `space` | toggle the cell |
| `enter` | run the toggled cells together (also from any field) |
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sweep", "Sweep column"),
        BATCH_TWIN,
        FOCUS_PROMPT,
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result: Any = None  # the last complete AblationResult
        self.request: AblationRequest | None = None  # the last request sent
        self.baseline: list[Any] | None = None  # baseline outputs of the current context
        self.cell_outputs: dict[Cell, tuple[str, list[Any]]] = {}  # cell -> (point label, outputs)
        self.context: tuple[Any, ...] | None = None  # what the shown results were computed for
        self.job_id: int | None = None
        self.twin = ""

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="controls"):
            yield PromptInput(placeholder="prompt (enter runs the toggled cells)", id="prompt")
            yield Label("criterion")
            yield Input(placeholder="Paris | refusal | re:…", id="criterion", classes="medium")
            yield Label("tokens")
            yield Input("20", type="integer", id="tokens", classes="small")
            yield chat_checkbox()
        with Horizontal(classes="controls"):
            yield Label("prompts with answers")
            yield Input(placeholder="difficulty gradient: 10 * 10 =:100|45 * 45 =:2025 (replaces prompt + criterion)",
                        id="cases")
        with Horizontal(classes="main"):
            yield AblationGrid(id="grid")
            with Vertical(classes="ablation-side"):
                with Horizontal(id="panes"):
                    yield Static("baseline", id="base-pane", classes="text-pane")
                    yield Static("ablated", id="abl-pane", classes="text-pane")
                yield ResultsTable(id="results")
        yield Static("space toggles a cell · enter runs the set · s sweeps a column", id="summary")

    def on_mount(self) -> None:
        self.watch(self.app, "model_info", self._model_changed, init=True)
        self.query_one(AblationGrid).focus()  # grid keys at once; `/` or tab goes to the prompt

    def _model_changed(self, info: Any) -> None:
        if info is not None:  # a new model: old results no longer apply
            grid = self.query_one(AblationGrid)
            grid.setup(info.num_layers)
            grid.reset_results()
            self.cell_outputs.clear()
            self.baseline = self.result = self.context = None

    # -- requests ----------------------------------------------------------------------------
    def _cases(self) -> list[tuple[str, str]]:
        from lazarus_tui.inputs import parse_prompt_cases

        text = self.query_one("#cases", Input).value.strip()
        return parse_prompt_cases(text) if text else []

    def build_request(self, *, ablations: list[AblationSpec] | None = None, component: str = "mlp"
                      ) -> AblationRequest:
        """The request for the form's prompt(s), criterion and options (raises InputError)."""
        prompt = self.query_one("#prompt", PromptInput).value
        criterion = self.query_one("#criterion", Input).value.strip()
        cases = self._cases()
        if not cases and not prompt.strip():
            raise InputError("type a prompt (or prompts with answers)")
        if criterion.startswith("re:"):
            try:
                re.compile(criterion[3:])
            except re.error as exc:
                raise InputError(f"bad regex in criterion {criterion!r}: {exc}") from exc
        try:
            tokens = int(self.query_one("#tokens", Input).value or 20)
        except ValueError as exc:
            raise InputError("max tokens must be a number") from exc
        if not 1 <= tokens <= 4096:
            raise InputError("max tokens must be between 1 and 4096")
        info = getattr(self.app, "model_info", None)
        return AblationRequest(
            model=getattr(info, "model_id", None), prompt=None if cases else prompt,
            criterion="" if cases else criterion,
            prompts=[PromptCase(prompt=p, expected=e) for p, e in cases] or None,
            component=component, ablations=ablations, chat=self.chat(),
            max_tokens=tokens)

    def set_request(self) -> AblationRequest:
        cells = sorted(self.query_one(AblationGrid).selected)
        spec = AblationSpec(layers=[x for x, _ in cells], components=[c for _, c in cells])
        return self.build_request(ablations=[spec] if cells else [])

    def _run_context(self, req: AblationRequest) -> tuple[Any, ...]:
        return (req.prompt, req.criterion, req.prompts, req.chat, req.max_tokens)

    def _bad(self, exc: Exception, title: str) -> None:
        self.notify(str(exc).splitlines()[0], title=title, severity="error")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#prompt", PromptInput).remember(self.query_one("#prompt", PromptInput).value)
        self.action_run_set()

    @on(DataTable.CellSelected, "#grid")
    def grid_enter(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self.action_run_set()

    def action_run_set(self) -> None:
        try:
            req = self.set_request()
        except (InputError, ValueError) as exc:
            self._bad(exc, "ablate")
            return
        cells = sorted(self.query_one(AblationGrid).selected)
        self.run_study(req, cells, None, f"ablate {len(cells)} cells together" if cells else "baseline")

    def action_sweep(self) -> None:
        grid = self.query_one(AblationGrid)
        cell = grid.current
        if cell is None:
            return
        component = cell[1]
        try:
            req = self.build_request(component=component)
        except (InputError, ValueError) as exc:
            self._bad(exc, "sweep")
            return
        cells = [(layer, component) for layer in range(grid.n_layers)]
        self.run_study(req, cells, SWEEP_CHUNK, f"sweep {component}")

    # -- running -----------------------------------------------------------------------------
    def _start(self, req: AblationRequest, cells: list[Cell]) -> None:
        grid = self.query_one(AblationGrid)
        grid.clear_pending()
        if self._run_context(req) != self.context:  # a new prompt/criterion: old results no longer apply
            self.context, self.baseline = self._run_context(req), None
            self.cell_outputs.clear()
            grid.reset_results()
        grid.mark_pending(cells)
        self.request = req

    @work(exclusive=True, group="ablate")
    async def run_study(self, req: AblationRequest, cells: list[Cell], chunk: int | None, label: str) -> None:
        self._start(req, cells)
        job = self.app.engine.ablate(req, on_progress=self.progress_sink("ablate"),  # type: ignore[attr-defined]
                                     chunk_size=chunk)
        self.job_id = job.id
        try:
            result = await self.run_job("ablate", job, label)
        finally:
            self.query_one(AblationGrid).clear_pending()
        if result is None:
            self._summarise(None, label + ": stopped (cells done so far are kept)")
            return
        self.result, self.baseline = result, result.baseline
        self.label_results(criterion=req.criterion or ("prompts with answers" if req.prompts else "none"),
                           tokens=req.max_tokens)
        self._apply_points(result.points, cells)
        self._summarise(result, label)

    def on_engine_progress(self, message: EngineProgress) -> None:
        ev = message.event
        if message.group != "ablate" or ev.job_id != self.job_id:
            return
        if ev.stage == "sweep" and ev.payload:
            self._apply_points(ev.payload, None)
        self.status = f"ablate: {ev.message.removeprefix('ablate: ')} {ev.done}/{ev.total}"

    def _apply_points(self, points: list[Any], set_cells: list[Cell] | None) -> None:
        grid = self.query_one(AblationGrid)
        for p in points:
            spec = p.spec
            if spec.components is not None:  # the toggled set: its one result on each of its cells
                cells = [(x, c.value) for x, c in zip(spec.layers, spec.components)]
            elif len(spec.layers) == 1 and spec.heads is None:
                cells = [(spec.layers[0], spec.component.value)]
            else:
                cells = list(set_cells or [])
            for cell in cells:
                self.cell_outputs[cell] = (p.label, p.outputs)
                grid.set_result(cell, p.outputs)
        self._show_table(points)
        self.show_detail()

    def _show_table(self, points: list[Any]) -> None:
        req = self.request
        if req is None:
            return
        cases = [(c.prompt, c.expected) for c in req.prompts] if req.prompts else [(req.prompt or "", req.criterion)]
        self.query_one(ResultsTable).show(cases, self.baseline, points)

    def _summarise(self, result: Any, label: str) -> None:
        if result is None:
            self.query_one("#summary", Static).update(label)
            return
        base = result.baseline[0]
        flips = result.causal_layers
        changed = sum(1 for p in result.points if any(o.diverged_at is not None for o in p.outputs))
        crit = result.criterion_description or "none"
        self.query_one("#summary", Static).update(
            f"{label} · criterion: {crit} · baseline {'✓' if base.passed else '✗' if base.passed is False else '-'} "
            f"· changes the output: {changed} of {len(result.points)}"
            + (f" · flips pass/fail: {', '.join(flips[:6])}{'…' if len(flips) > 6 else ''}" if flips else "")
            + f" · {result.elapsed_s:.1f}s")

    # -- browsing ----------------------------------------------------------------------------
    @on(DataTable.CellHighlighted, "#grid")
    def cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        self.show_detail()

    def show_detail(self) -> None:
        cell = self.query_one(AblationGrid).current
        base_pane, abl_pane = self.query_one("#base-pane", Static), self.query_one("#abl-pane", Static)
        if self.baseline:
            base_pane.update("[b]baseline[/b]\n" + "\n".join(
                f"{'✓ ' if o.passed else '✗ ' if o.passed is False else ''}{_clip(o.text.strip())}"
                for o in self.baseline))
        else:
            base_pane.update("[b]baseline[/b]\n[dim]shown when a run completes[/dim]")
        got = self.cell_outputs.get(cell) if cell else None
        if got is None:
            where = f"L{cell[0]} {cell[1]}" if cell else ""
            abl_pane.update(f"[b]ablated {where}[/b]\n[dim]no result for this cell yet[/dim]")
            return
        label, outputs = got
        abl_pane.update(f"[b]ablated {label}[/b]\n" + "\n".join(
            f"{'✓ ' if o.passed else '✗ ' if o.passed is False else ''}"
            f"{'identical' if o.diverged_at is None else f'diverges at token {o.diverged_at}'}: "
            f"{_clip(o.text.strip())}" for o in outputs))

    # -- batch twin --------------------------------------------------------------------------
    def action_twin(self) -> None:
        from lazarus_tui.batch.ablate import twin_command

        req = self.request
        if req is None:
            try:
                req = self.set_request()
            except (InputError, ValueError) as exc:
                self._bad(exc, "batch twin")
                return
        show_twin(self, [twin_command(req)])
