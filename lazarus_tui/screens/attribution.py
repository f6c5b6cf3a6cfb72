"""Attribution screen: every site's estimated effect (attribution patching) as coloured grids, the
top sites table, real patching of the top K on demand, and one head's attention pattern.

Wiring only: the estimates are ``engine.attribution.attribute`` and the pattern
``engine.attribution.attention_pattern`` on the engine thread (``EngineClient.analysis``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Select, Static

from engine.errors import InputError
from engine.results.attribution import AttentionRequest, AttributeRequest
from lazarus_tui.screens.base import BATCH_TWIN, FOCUS_PROMPT, WorkbenchScreen, chat_checkbox, show_twin
from lazarus_tui.widgets.attribution_views import RESID_KINDS, HeadsGrid, PatternView, ResidHeatmap, TopSites
from lazarus_tui.widgets.messages import EngineProgress


class AttributionScreen(WorkbenchScreen):
    TITLE = "Attribution"
    HELP = """\
# Attribution

Attribution patching: for every site, an estimate of how much the metric (read at the corrupted
prompt's last position) changes when that site's activation is taken from the clean run,
∂metric/∂a · (a_clean − a_corrupt), from two forward passes and one backward pass
(docs/attribution.md).

* **fields**: clean and corrupted prompts (same number of tokens), target token, baseline token
  (for logit-diff), metric, sites (`resid_pre,resid_post,attn_out,mlp_out,heads,neurons`), K.
* **heatmap**: layers × positions of one residual kind (`k` cycles the kinds); red raises the
  metric, blue lowers it.
* **heads grid**: layers × heads, the head's output estimate summed over positions (`h` shows
  the query-key part instead: AtP*). **enter** on a head shows its attention pattern.
* **top sites**: the largest |estimates|; after `r`, the real effect of patching each.
* **chat**: off, the prompts go to the model as typed (on: the chat template; the twin has `--chat`).
* below 120 columns one view at a time: `v` cycles top sites → heatmap → heads grid → pattern.

Keys of the fields and views (the screen's own keys are listed below):

| key | action |
|---|---|
| `enter` | run (from any field) |
| `enter` (heads grid) | attention pattern of that head |
"""
    PROMPT = "#clean"
    HOME = "#top"
    PANES = ("#top", "#heatmap", "#heads", "#pattern-box")
    RESULTS = ("#attr-main", "#summary")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "verify", "Real patching of top K", tooltip="patch the top K sites for real, side by side"),
        Binding("k", "next_kind", "Heatmap kind", tooltip="the next residual kind in the heatmap"),
        Binding("h", "heads_kind", "Heads: out/qk", tooltip="heads grid: the head's output ⇄ its query-key part"),
        Binding("p", "pattern_prompt", "Pattern prompt", tooltip="attention pattern: clean ⇄ corrupted prompt"),
        BATCH_TWIN,
        FOCUS_PROMPT,
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.result: Any = None
        self.request: AttributeRequest | None = None
        self.pattern: Any = None
        self.kind = "resid_post"
        self.heads_kind = "attn_heads"
        self.pattern_of = "clean"
        self.head: tuple[int, int] | None = None
        self.twin = ""

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="controls"):
            yield Label("clean", classes="wide-only")
            yield Input("The capital of France is", id="clean", classes="prompt-half")
            yield Label("corrupt", classes="wide-only")
            yield Input("The capital of Italy is", id="corrupt", classes="prompt-half")
        with Horizontal(classes="controls"):
            yield Label("target", classes="wide-only")
            yield Input(" Paris", id="target", classes="medium")
            yield Label("baseline", classes="wide-only")
            yield Input("", id="baseline", classes="medium", tooltip="second token for logit-diff")
            yield Select([(m, m) for m in ("logprob", "logit-diff", "prob")], value="logprob", allow_blank=False,
                         id="metric")
            yield Label("sites", classes="wide-only")
            yield Input("resid_post,attn_out,mlp_out,heads", id="sites")
            yield Label("K", classes="wide-only")
            yield Input("10", type="integer", id="k", classes="small", tooltip="sites patched for real by r")
            yield chat_checkbox("prompts")
        with Grid(id="attr-main"):
            yield ResidHeatmap(id="heatmap")
            yield TopSites(id="top")
            yield HeadsGrid(id="heads")
            with Vertical(id="pattern-box"):
                yield Static("attention pattern: enter on a head", id="pattern-title")
                yield PatternView(id="pattern")
        yield Static("enter runs · r patches the top K for real · b batch twin", id="summary")

    def on_mount(self) -> None:
        self.query_one("#clean", Input).focus()
        for id_, title in (("clean", "clean"), ("corrupt", "corrupt"), ("target", "target"), ("baseline", "baseline"),
                           ("sites", "sites"), ("k", "K")):
            self.query_one(f"#{id_}", Input).border_title = title  # the label where the narrow layout has none

    # -- requests ----------------------------------------------------------------------------
    def build_request(self, verify: int = 0) -> AttributeRequest:
        from engine.attribution import parse_sites

        def val(name: str) -> str:
            return self.query_one(f"#{name}", Input).value

        if not val("clean").strip() or not val("corrupt").strip():
            raise InputError("type a clean and a corrupted prompt")
        if val("target") == "":
            raise InputError("type a target token")
        metric = str(self.query_one("#metric", Select).value)
        baseline = val("baseline") or None
        if metric == "logit-diff" and baseline is None:
            raise InputError("logit-diff needs a baseline token")
        info = getattr(self.app, "model_info", None)
        return AttributeRequest(model=getattr(info, "model_id", None), clean=val("clean"), corrupt=val("corrupt"),
                                target=val("target"), baseline=baseline, metric=metric,  # type: ignore[arg-type]
                                sites=parse_sites(val("sites")), verify=verify, chat=self.chat())

    def _k(self) -> int:
        try:
            k = int(self.query_one("#k", Input).value or 10)
        except ValueError as exc:
            raise InputError("K must be a number") from exc
        if k < 1:
            raise InputError("K must be at least 1")
        return k

    def _bad(self, exc: Exception, title: str) -> None:
        self.notify(str(exc).splitlines()[0], title=title, severity="error")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_run()

    def action_run(self, verify: bool = False) -> None:
        try:
            req = self.build_request(self._k() if verify else 0)
        except (InputError, ValueError) as exc:
            self._bad(exc, "attribute")
            return
        self.run_attribution(req)

    def action_verify(self) -> None:
        self.action_run(verify=True)

    @work(exclusive=True, group="attribute")
    async def run_attribution(self, req: AttributeRequest) -> None:
        self.request = req
        label = f"attribute{' + verify top ' + str(req.verify) if req.verify else ''}"
        job = self.app.engine.analysis(req, on_progress=self.progress_sink("attribute"))  # type: ignore[attr-defined]
        result = await self.run_job("attribute", job, label)
        if result is None:
            return
        self.result = result
        self.pattern = None
        self.show_result()
        self.label_results(metric=req.metric, target=repr(req.target), sites=",".join(req.sites),
                           verified=req.verify or None)

    def on_engine_progress(self, message: EngineProgress) -> None:
        ev = message.event
        if message.group == "attribute" and ev.total:
            self.app.engine_status = f"attribute: real patching {ev.done}/{ev.total}"  # type: ignore[attr-defined]

    # -- showing -----------------------------------------------------------------------------
    def show_result(self) -> None:
        r = self.result
        if r is None:
            return
        kinds = self._resid_kinds()
        if kinds and self.kind not in kinds:
            self.kind = kinds[0]
        heat = self.query_one(ResidHeatmap)
        if kinds:
            heat.show(r, self.kind)
        else:
            heat.empty("no residual sites: add resid_post (or resid_pre, attn_out, mlp_out) to sites")
        heads = self.query_one(HeadsGrid)
        if "heads" in r.request.sites:
            heads.show(r, self.heads_kind)
        else:
            heads.empty("no heads: add heads to sites")
        self.query_one(TopSites).show(r)
        name = {"logprob": "log p", "prob": "p", "logit-diff": "logit diff"}[r.request.metric]
        text = (f"{name}({r.target_token!r}{' - ' + repr(r.baseline_token) if r.baseline_token else ''}): "
                f"clean {r.clean_metric:.4f} · corrupt {r.corrupt_metric:.4f} · {r.n_estimates} estimates in "
                f"{r.seconds:.2f}s")
        if r.verified:
            corr = ("n/a" if r.verify_pearson is None else
                    f"Pearson {r.verify_pearson:.3f} Spearman {r.verify_spearman:.3f}")
            text += f" · verified {len(r.verified)}: {corr}"
        if r.notes:
            text += " · " + "; ".join(r.notes)
        self.query_one("#summary", Static).update(text)

    def _resid_kinds(self) -> list[str]:
        r = self.result
        return [] if r is None else [k for k in RESID_KINDS if k in r.request.sites]

    def action_next_kind(self) -> None:
        kinds = self._resid_kinds()
        if kinds:
            self.kind = kinds[(kinds.index(self.kind) + 1) % len(kinds)] if self.kind in kinds else kinds[0]
            self.show_result()

    def action_heads_kind(self) -> None:
        self.heads_kind = "attn_pattern" if self.heads_kind == "attn_heads" else "attn_heads"
        self.show_result()

    # -- attention pattern -------------------------------------------------------------------
    @on(DataTable.CellSelected, "#heads")
    def head_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        head = self.query_one(HeadsGrid).current()
        if head is not None:
            self.head = head
            self.fetch_pattern()

    def action_pattern_prompt(self) -> None:
        self.pattern_of = "corrupt" if self.pattern_of == "clean" else "clean"
        if self.head is not None:
            self.fetch_pattern()

    @work(exclusive=True, group="pattern")
    async def fetch_pattern(self) -> None:
        if self.head is None or self.request is None:
            return
        info = getattr(self.app, "model_info", None)
        if info is not None and self.result is not None and info.model_id != self.result.model_id:
            self.notify(f"the results are from {self.result.model_id}: rerun (enter) first", title="attention pattern",
                        severity="warning")  # the pattern would load that model again
            return
        layer, head = self.head
        prompt = self.request.clean if self.pattern_of == "clean" else self.request.corrupt
        req = AttentionRequest(model=self.request.model, prompt=prompt, layer=layer, head=head,
                               chat=self.request.chat)
        pattern = await self.run_job("pattern", self.app.engine.analysis(req), "attention pattern")  # type: ignore[attr-defined]
        if pattern is None:
            return
        self.pattern = pattern
        self.query_one("#pattern-title", Static).update(
            f"attention pattern L{layer} H{head} on the {self.pattern_of} prompt (p: the other prompt)")
        self.query_one(PatternView).show(pattern)
        if self.narrow():
            self.show_pane(self.PANES.index("#pattern-box"))

    # -- batch twin --------------------------------------------------------------------------
    def action_twin(self) -> None:
        from lazarus_tui.batch.attribute import twin_command

        req = self.request
        if req is None:
            try:
                req = self.build_request()
            except (InputError, ValueError) as exc:
                self._bad(exc, "batch twin")
                return
        show_twin(self, [twin_command(req)])
