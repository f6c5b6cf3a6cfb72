"""Circuit screen: pick a labelled dataset, collect activations with live progress (Esc cancels,
a rerun resumes), then browse per-layer PCA and probe results.

Wiring only: datasets, collection and analysis are ``EngineClient.circuit_dataset`` /
``circuit_collect`` / ``circuit_analyze`` jobs (``engine/circuit`` on the engine thread); the
views are ``widgets.circuit_views``.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, OptionList, ProgressBar, Select, Static
from textual.widgets.option_list import Option
from textual_plotext import PlotextPlot

from engine.circuit.probe_data import BUILTIN
from engine.results.circuit import CollectRequest
from lazarus_tui.screens.base import BATCH_TWIN, WorkbenchScreen, show_twin
from lazarus_tui.widgets.circuit_views import (
    DatasetCounts,
    GeometryTable,
    PcaCurveChart,
    PcaDimsChart,
    ProbeAccuracyChart,
)
from lazarus_tui.widgets.messages import EngineProgress

SOURCES: list[tuple[str, str]] = [
    ("tool_calling", "tool-calling (per-tool / no-tool)"),
    ("arithmetic", "arithmetic (count)"),
    *((f"probe:{p['name']}", f"probe {p['name']} ({p['probe_category']})") for p in BUILTIN),
    ("file", "file: the dataset path above"),
]
LAYER_MODES = [("all layers", "all"), ("decision", "decision"), ("list →", "list")]


def default_workdir() -> Path:
    """``$LAZARUS_CACHE/circuit`` or ``~/.cache/lazarus/circuit`` (datasets and activation files)."""
    root = os.environ.get("LAZARUS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "lazarus") / "circuit"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "x"


class CircuitScreen(WorkbenchScreen):
    TITLE = "Circuit"
    HOME = "#ci-table"
    PANES = ("#ci-left", "#ci-bottom", "#ci-charts")
    RESULTS = ("#ci-right",)
    HELP = """\
# Circuit

The circuit toolkit (`lazarus --batch circuit`, docs/circuit.md) on the current model.

1. **dataset**: pick a generator in the list and press **enter** (tool-calling with its
   per-tool / no-tool counts, arithmetic with its count, or one of the 8 built-in probe
   datasets, written by `probes init`), or type a `.json`/`.jsonl` file in *dataset* and press
   **enter**. The counts per label and category appear under the list.
2. **collect** (`c` / `ctrl+r` / *Collect*): layers (all, the decision band, or a list such as
   `3,10,20` / `20-23`), position (last token or mean), batch size, output (blank: a file
   under ~/.cache/lazarus/circuit named after dataset, model, layers and position). The bar
   fills per batch. **esc** cancels; collecting again with the same settings resumes: finished
   batches are reused, not recomputed.
3. **analyze** runs after each collect (`a`: analyze the output file again): per layer, PCA
   (components for 90/95% of the variance) and binary / category probes (held-out 25% and CV)
   against the majority baseline.

Keys of the fields and views (the screen's own keys are listed below):

| key | action |
|---|---|
| `enter` | build / load the dataset (list, path) |
| `up` / `down` (table) | move through layers: the layer's PCA variance curve |
"""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "collect", "Collect"),
        Binding("ctrl+r", "collect", "Collect", show=False, priority=True),
        Binding("a", "analyze", "Analyze"),
        BATCH_TWIN,
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workdir: Path = default_workdir()
        self.summary: Any = None  # DatasetSummary
        self.dataset_twin: str | None = None
        self.request: CollectRequest | None = None
        self.collect_result: Any = None
        self.result: Any = None  # AnalyzeResult
        self.current_layer: int | None = None
        self.twin = ""

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="controls"):
            yield Label("dataset")
            yield Input(placeholder="dataset file (.json/.jsonl), enter loads it", id="ci-path")
            yield Select(LAYER_MODES, value="all", allow_blank=False, id="ci-layers")
            yield Input("20-23", id="ci-list", classes="small")
            yield Select([("last", "last"), ("mean", "mean")], value="last", allow_blank=False,
                         id="ci-position")
        with Horizontal(classes="main"):
            with VerticalScroll(id="ci-left"):
                yield OptionList(*(Option(title, id=key) for key, title in SOURCES), id="ci-sources")
                with Horizontal(classes="ci-opts"):
                    yield Label("per-tool")
                    yield Input("25", type="integer", id="ci-per-tool", classes="small")
                    yield Label("no-tool")
                    yield Input("100", type="integer", id="ci-no-tool", classes="small")
                with Horizontal(classes="ci-opts"):
                    yield Label("count")
                    yield Input("100", type="integer", id="ci-count", classes="small")
                    yield Label("seed")
                    yield Input("42", type="integer", id="ci-seed", classes="small")
                with Horizontal(classes="ci-opts"):
                    yield Label("batch")
                    yield Input("16", type="integer", id="ci-batch", classes="small")
                    yield Label("out")
                    yield Input(id="ci-output")
                yield DatasetCounts("pick a dataset: a generator (enter) or a file path", id="ci-counts")
                yield ProgressBar(id="ci-progress", show_eta=False)
                yield Button("Collect + analyze (c)", id="ci-collect", variant="primary")
            with Vertical(id="ci-right"):
                with Horizontal(id="ci-charts"):
                    with Vertical(classes="ci-chart"):
                        yield ProbeAccuracyChart(id="ci-acc")
                        yield Static(id="ci-acc-legend", classes="ci-legend")
                    with Vertical(classes="ci-chart"):
                        yield PcaDimsChart(id="ci-dims")
                        yield Static(id="ci-dims-legend", classes="ci-legend")
                with Horizontal(id="ci-bottom"):
                    yield GeometryTable(id="ci-table")
                    with Vertical(classes="ci-chart", id="ci-curve-box"):
                        yield PcaCurveChart(id="ci-curve")
                        yield Static(id="ci-curve-legend", classes="ci-legend")
        yield Static("", id="ci-summary")

    def on_mount(self) -> None:
        self.query_one("#ci-sources", OptionList).focus()
        self.update_output_placeholder()

    def _int(self, id_: str, default: int) -> int:
        value = self.query_one(f"#{id_}", Input).value.strip()
        return int(value) if value.lstrip("-").isdigit() else default

    # -- dataset -----------------------------------------------------------------------------
    @on(OptionList.OptionSelected, "#ci-sources")
    def source_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.choose_source(event.option.id)

    @on(Input.Submitted, "#ci-path")
    def path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.choose_source("file")

    def choose_source(self, source: str) -> None:
        opts = {"per_tool": self._int("ci-per-tool", 25), "no_tool": self._int("ci-no-tool", 100),
                "count": self._int("ci-count", 100), "seed": self._int("ci-seed", 42)}
        path = self.query_one("#ci-path", Input).value.strip() or None
        self.load_dataset(source, path, opts)

    @work(exclusive=True, group="circuit-dataset")
    async def load_dataset(self, source: str, path: str | None, opts: dict[str, int]) -> None:
        datasets = self.workdir / "datasets"
        target = datasets / "probes" if source.startswith("probe:") else datasets
        job = self.app.engine.circuit_dataset(source, str(target), path, opts)  # type: ignore[attr-defined]
        summary = await self.run_job("dataset", job, "dataset")
        if summary is None:
            return
        self.summary = summary
        if source == "tool_calling":
            self.dataset_twin = (f"circuit dataset create -o {shlex.quote(summary.path)} --per-tool "
                                 f"{opts['per_tool']} --no-tool {opts['no_tool']} --seed {opts['seed']}")
        elif source == "arithmetic":
            self.dataset_twin = (f"circuit dataset create -o {shlex.quote(summary.path)} --kind arithmetic "
                                 f"--count {opts['count']} --seed {opts['seed']}")
        elif source.startswith("probe:"):
            self.dataset_twin = f"circuit probes init -o {shlex.quote(str(target))}"
        else:
            self.dataset_twin = None
        self.query_one("#ci-path", Input).value = summary.path
        self.query_one(DatasetCounts).show(summary)
        self.update_output_placeholder()

    # -- collect -----------------------------------------------------------------------------
    def layer_spec(self) -> str:
        mode = self.query_one("#ci-layers", Select).value
        return self.query_one("#ci-list", Input).value.strip() if mode == "list" else str(mode)

    def default_output(self) -> str:
        stem = Path(self.summary.path).stem if self.summary is not None else "dataset"
        info = getattr(self.app, "model_info", None)
        model = Path(getattr(info, "model_id", None) or "model").name
        position = self.query_one("#ci-position", Select).value
        return str(self.workdir / _slug(f"{stem}_{model}_{self.layer_spec()}_{position}"))

    def update_output_placeholder(self) -> None:
        out = Path(self.default_output())
        self.query_one("#ci-output", Input).placeholder = f"blank: {out.name} in {str(out.parent).replace(str(Path.home()), '~')}"
        self.check_stale()

    def check_stale(self) -> None:
        """Results on screen from other collect settings (dataset, layers, position) are stale."""
        c = self.collect_result
        if self.result is None or c is None or c.activations_file != self.result.activations_file:
            return
        now = (self.summary.path if self.summary else None, self.layer_spec(),
               self.query_one("#ci-position", Select).value)
        then = (c.request.dataset, c.request.layers, c.request.position)
        if now != then:
            self.mark_stale(f"settings now {now[1]} / {now[2]} on {Path(now[0] or '?').name}; c collects with them")
        elif self.stale_reason and self.stale_reason.startswith("settings now"):
            self.label_results(**{k: v for k, v in self.provenance.items() if k not in ("model", "chat template")})

    @on(Select.Changed)
    def setting_changed(self) -> None:
        self.update_output_placeholder()

    @on(Input.Changed, "#ci-list")
    def list_changed(self) -> None:
        self.update_output_placeholder()

    def build_request(self) -> CollectRequest | None:
        if self.summary is None:
            self.notify("pick a dataset first (a generator in the list, or a file path)", title="collect",
                        severity="warning")
            return None
        out = self.query_one("#ci-output", Input).value.strip() or self.default_output()
        try:
            req = CollectRequest(dataset=self.summary.path, output=str(Path(out).expanduser()),
                                 layers=self.layer_spec() or "all",
                                 position=self.query_one("#ci-position", Select).value,
                                 batch_size=self._int("ci-batch", 16))
        except ValidationError as exc:
            err = exc.errors()[0]
            self.notify(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", title="collect", severity="error")
            return None
        if not self.query_one("#ci-output", Input).value.strip():
            Path(req.output).parent.mkdir(parents=True, exist_ok=True)  # the default directory
        return req

    @on(Input.Submitted, "#ci-output, #ci-batch, #ci-list")
    def settings_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_collect()

    @on(Button.Pressed, "#ci-collect")
    def collect_pressed(self) -> None:
        self.action_collect()

    def action_collect(self) -> None:
        req = self.build_request()
        if req is not None:
            self.run_collect(req)

    @work(exclusive=True, group="circuit")
    async def run_collect(self, req: CollectRequest) -> None:
        self.request = req
        bar = self.query_one("#ci-progress", ProgressBar)
        bar.update(total=None, progress=0)
        summary = self.query_one("#ci-summary", Static)
        summary.update(f"collecting {self.summary.total} prompts → {req.output}…")
        job = self.app.engine.circuit_collect(req, on_progress=self.progress_sink("collect"))  # type: ignore[attr-defined]
        res = await self.run_job("collect", job, "collect")
        if res is None:
            summary.update("collect stopped: collect again (c) with the same settings to resume from the "
                           "finished batches")
            return
        self.collect_result = res
        bar.update(total=res.batches_total, progress=res.batches_total)
        for w in res.warnings:
            self.notify(w, title="collect", severity="warning")
        await self.analyze_file(res.activations_file)

    def action_analyze(self) -> None:
        out = self.query_one("#ci-output", Input).value.strip() or self.default_output()
        self.run_analyze(str(Path(out).expanduser()))

    @work(exclusive=True, group="circuit")
    async def run_analyze(self, path: str) -> None:
        await self.analyze_file(path)

    async def analyze_file(self, path: str) -> None:
        self.result = self.query_one(GeometryTable).result = None  # rows stream in as layers finish
        job = self.app.engine.circuit_analyze(path, on_progress=self.progress_sink("analyze"))  # type: ignore[attr-defined]
        r = await self.run_job("analyze", job, "analyze")
        if r is None:
            return
        self.result = r
        c = self.collect_result if self.collect_result is not None and \
            self.collect_result.activations_file == r.activations_file else None
        self.label_results(prompts=r.num_prompts, layers=c.request.layers if c else None,
                           position=c.request.position if c else None, file=Path(r.activations_file).name)
        self.query_one(GeometryTable).show(r)
        self.current_layer = r.best_layer if r.best_layer is not None else r.layers[0].layer
        self.show_layer(self.current_layer)
        self.query_one(GeometryTable).select_layer(self.current_layer)
        if self.narrow():
            self.show_pane(1)  # the whole view switches to the results (`v` goes back)
        self.focus_view(self.query_one(GeometryTable))
        self.query_one("#ci-summary", Static).update(self.summary_text())

    def summary_text(self) -> str:
        r, c = self.result, self.collect_result
        parts = []
        if c is not None and c.activations_file == r.activations_file:
            parts.append(f"{c.num_prompts} prompts × {len(c.captured_layers)} layers ({c.request.position}) · "
                         f"{c.batches_total} batches ({c.batches_computed} computed, {c.batches_reused} reused) · "
                         f"{c.seconds:.1f}s")
        else:
            parts.append(f"{r.num_prompts} prompts × {len(r.layers)} layers")
        best, cat = r.at(r.best_layer), r.at(r.best_category_layer)
        if best is not None and (b := best.binary_probe) is not None:
            parts.append(f"best binary layer {r.best_layer} (held-out {b.heldout_accuracy:.3f}, "
                         f"baseline {b.baseline:.3f})")
        if cat is not None and (cp := cat.category_probe) is not None:
            parts.append(f"best category layer {r.best_category_layer} ({cp.heldout_accuracy:.3f}, "
                         f"{cp.classes} classes, baseline {cp.baseline:.3f})")
        return " · ".join(parts)

    def on_engine_progress(self, message: EngineProgress) -> None:
        ev = message.event
        if message.group not in ("collect", "analyze") or ev.stage not in ("batch", "layer", "load"):
            return
        if ev.stage != "load":
            self.query_one("#ci-progress", ProgressBar).update(total=ev.total, progress=ev.done)
        table = self.query_one(GeometryTable)
        if message.group == "analyze" and ev.stage == "layer" and ev.payload and table.result is None:
            table.show_rows(ev.payload)  # the layers finished so far (a late event never hides the result)
        unit = {"batch": "batch", "layer": "layer"}.get(ev.stage, ev.message)
        self.status = f"{message.group}: {unit} {ev.done}/{ev.total}"

    # -- browsing ----------------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#ci-table")
    def layer_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.result is None or event.row_key is None or event.row_key.value is None:
            return
        self.current_layer = int(str(event.row_key.value))
        self.show_layer(self.current_layer)

    def show_layer(self, layer: int) -> None:
        for name in ("acc", "dims", "curve"):
            chart = self.query_one(f"#ci-{name}", PlotextPlot)
            chart.show(self.result, layer)  # type: ignore[attr-defined]
            self.query_one(f"#ci-{name}-legend", Static).update(chart.legend_markup())  # type: ignore[attr-defined]

    # -- batch twin --------------------------------------------------------------------------
    def twin_lines(self) -> list[str]:
        lines = [f"lazarus --batch {self.dataset_twin}"] if self.dataset_twin else []
        req = self.build_request() if self.summary is not None else self.request
        if req is not None:
            info = getattr(self.app, "model_info", None)
            model = f" -m {shlex.quote(info.model_id)}" if getattr(info, "model_id", None) else ""
            lines.append(f"lazarus --batch circuit collect{model} -d {shlex.quote(req.dataset)} -o "
                         f"{shlex.quote(req.output)} --layers {shlex.quote(req.layers)} --position {req.position} "
                         f"--batch-size {req.batch_size}")
            out = req.output if req.output.endswith(".safetensors") else req.output + ".safetensors"
            lines.append(f"lazarus --batch circuit analyze -a {shlex.quote(out)}")
        return lines

    def action_twin(self) -> None:
        lines = self.twin_lines()
        if not lines:
            self.notify("pick a dataset first", title="batch twin", severity="warning")
            return
        show_twin(self, lines)
