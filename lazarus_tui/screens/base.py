"""The common frame of every workbench screen: model bar on top, body, footer.

Screens subclass ``WorkbenchScreen``, set ``TITLE``/``HELP``/``HOME`` and implement
``compose_body``. They compose and wire only: computation lives in ``engine/``
and is reached through ``self.app.engine`` (an ``EngineClient``) as a ``Job``
that ``run_job`` awaits inside a worker.

The focus model (docs/tui.md, "Keys and focus") lives here, in one place:

* a text field (``Input``) types every printable key; single-key actions (letters, digits,
  ``/``, ``[``, ``?``) act only when focus is outside text fields, and the footer lists only
  the keys that act where the focus is (Textual drops the bindings a focused field consumes);
* ``esc`` cancels the screen's running request, from anywhere (the footer then says *Cancel*);
  when nothing runs, ``esc`` in a text field leaves it for the screen's main view (``HOME``), so
  every single-key action is one ``esc`` away;
* focusing a field never selects its text (the next key would erase it);
* a finished run moves the focus only when the user is not typing in a field (``focus_view``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import ComposeResult
from textual.binding import ActiveBinding, Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Checkbox, Footer, Input, Static, TextArea

from engine.errors import Cancelled, LazarusError
from engine.session import Job
from lazarus_tui.widgets.messages import EngineProgress
from lazarus_tui.widgets.model_bar import ModelBar

TEXT_FIELDS = (Input, TextArea)
_NAMED_CHARACTERS = {"slash": "/", "minus": "-", "plus": "+"}  # names Textual's key_to_character misses


def typed_in_fields(key: str) -> bool:
    """Whether a text field types ``key`` (a printable character) rather than letting it act."""
    from textual.keys import key_to_character

    character = key_to_character(key) or _NAMED_CHARACTERS.get(key)
    return character is not None and character.isprintable()

# Screen width / height classes for the layout rules in styles/app.tcss: `-narrow` below 120
# columns (panes stack or switch), `-short` below 32 rows (charts shrink).
WIDTH_CLASSES = [(0, "-narrow"), (120, "-wide")]
HEIGHT_CLASSES = [(0, "-short"), (32, "-tall")]



# the keys every screen with a prompt / a batch twin offers
FOCUS_PROMPT = Binding("slash", "focus_prompt", "Prompt", key_display="/")
BATCH_TWIN = Binding("b", "twin", "Batch twin")
# ... and the lens and tracking screens, with the lens toggle (widgets/lens_choice.toggle_lens)
LENS_SCREEN_KEYS = (FOCUS_PROMPT, BATCH_TWIN, Binding("t", "toggle_lens", "Lens"))


def chat_checkbox(typed: str = "prompt") -> Checkbox:
    """A screen's *chat template* checkbox, off by default (the one rule, docs/tui.md); ``chat()`` reads it."""
    return Checkbox("chat", value=False, id="chat", tooltip=f"apply the model's chat template (off: the {typed} as typed)")

class WorkbenchScreen(Screen):
    TITLE = "lazarus"
    HELP = ""  # markdown shown by `?` above the key tables generated from the bindings
    HOME = ""  # selector of the main view: `esc` in a text field goes there
    # Side-by-side panes (selectors); below 120 columns one is shown at a time and `v` switches.
    PANES: tuple[str, ...] = ()
    # Selectors of the widgets showing results: dimmed when the results are stale.
    RESULTS: tuple[str, ...] = ()
    PROMPT = "#prompt"  # selector of the screen's main text field (`/` focuses it)
    HORIZONTAL_BREAKPOINTS = WIDTH_CLASSES
    VERTICAL_BREAKPOINTS = HEIGHT_CLASSES
    BINDINGS = [
        Binding("escape", "leave_field", "Leave field", tooltip="leave the text field for the main view"),
        Binding("escape", "cancel_job", "Cancel", tooltip="cancel the running request"),
        Binding("v", "switch_pane", "Switch view",
                tooltip="narrow terminals (< 120 columns): show the next pane (table, chart, …)"),
    ]

    status: reactive[str] = reactive("")  # this screen's engine work, shown in its model bar

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: dict[str, Job[Any]] = {}  # group -> running engine job
        self.provenance: dict[str, Any] = {}  # what the shown results were computed with
        self.stale_reason: str | None = None

    def compose(self) -> ComposeResult:
        yield ModelBar()
        yield from self.compose_body()
        yield Static(id="provenance")
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def _on_mount(self) -> None:
        self.watch(self.app, "model_info", self._model_for_results, init=False)
        for i, selector in enumerate(self.PANES):
            for w in self.query(selector):
                w.add_class("pane")
                w.set_class(i == 0, "-shown")

    def action_focus_prompt(self) -> None:
        self.query_one(self.PROMPT).focus()

    # -- results: where they came from, stale when that changes ------------------------------------
    def chat(self) -> bool:
        """The screen's *chat template* checkbox (off by default: the one rule, docs/tui.md)."""
        found = self.query("#chat, #f-chat")
        return bool(found and found.first().value)

    def label_results(self, **settings: Any) -> None:
        """Record and show what the results on screen were computed with (model, chat, layer…)."""
        info = getattr(self.app, "model_info", None)
        self.provenance = {"model": getattr(info, "model_id", "?"), "chat template": "on" if self.chat() else "off",
                           **settings}
        self.stale_reason = None
        for selector in self.RESULTS:
            for w in self.query(selector):
                w.remove_class("-stale")
        self._show_provenance()

    def mark_stale(self, why: str) -> None:
        """The shown results no longer match the screen's settings: dim them and say why."""
        if not self.provenance:
            return
        self.stale_reason = why
        for selector in self.RESULTS:
            for w in self.query(selector):
                w.add_class("-stale")
        self._show_provenance()

    def _show_provenance(self) -> None:
        facts = " · ".join(f"{k} {v}" if k != "model" else str(v) for k, v in self.provenance.items()
                           if v is not None and v != "")
        line = self.query_one("#provenance", Static)
        line.set_class(bool(self.provenance), "-shown")
        line.set_class(self.stale_reason is not None, "-stale")
        if self.stale_reason is not None:
            line.update(f"[b]STALE[/b] ({self.stale_reason}) · results from {facts} · rerun to refresh")
        else:
            line.update(f"results from {facts}")

    def _model_for_results(self, info: Any) -> None:
        model = getattr(info, "model_id", None)
        if self.provenance and model is not None and model != self.provenance.get("model"):
            self.mark_stale(f"the model is now {model}")

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        if event.checkbox.id in ("chat", "f-chat") and self.provenance:
            state = "on" if event.value else "off"
            if state != self.provenance.get("chat template"):
                self.mark_stale(f"chat template now {state}")
            elif self.stale_reason and self.stale_reason.startswith("chat template"):
                self.label_results(**{k: v for k, v in self.provenance.items()
                                      if k not in ("model", "chat template")})

    # -- panes (narrow terminals) ------------------------------------------------------------
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    def shown_pane(self) -> int:
        return next((i for i, sel in enumerate(self.PANES) if self.query(sel) and
                     self.query(sel).first().has_class("-shown")), 0)

    def show_pane(self, index: int) -> None:
        """Show pane ``index`` (narrow layout); the focus follows when its widget is hidden."""
        for i, selector in enumerate(self.PANES):
            for w in self.query(selector):
                w.set_class(i == index, "-shown")
        focused = self.focused
        pane_of_focus = None if focused is None else next(
            (a for a in focused.ancestors_with_self if a.has_class("pane")), None)
        if self.narrow() and (focused is None or (pane_of_focus is not None and not pane_of_focus.has_class("-shown"))):
            pane = self.query(self.PANES[index]).first()
            target = pane if pane.focusable else next(
                (w for w in pane.query("*") if w.focusable and not isinstance(w, TEXT_FIELDS)), None)
            if target is not None:
                target.focus()

    def reveal(self, widget: Widget) -> None:
        """Show the pane holding ``widget`` (narrow layout), so the focus never goes out of sight."""
        for i, selector in enumerate(self.PANES):
            for pane in self.query(selector):
                if pane is widget or pane in widget.ancestors:
                    if not pane.has_class("-shown"):
                        self.show_pane(i)
                    return

    def action_switch_pane(self) -> None:
        if self.PANES:
            self.show_pane((self.shown_pane() + 1) % len(self.PANES))

    # -- focus -------------------------------------------------------------------------------
    def in_text_field(self) -> bool:
        return isinstance(self.focused, TEXT_FIELDS)

    def set_focus(self, widget: Widget | None, scroll_visible: bool = True, from_app_focus: bool = False) -> None:
        if isinstance(widget, Input):
            widget.select_on_focus = False  # tabbing into a filled field must not arm it for erasure
        super().set_focus(widget, scroll_visible, from_app_focus)

    def home_view(self) -> Widget | None:
        """The main view (``HOME``), or the first focusable widget that is not a text field."""
        if self.HOME:
            found = self.query(self.HOME)
            if found and found.first().focusable:
                return found.first()
        return next((w for w in self.focus_chain if not isinstance(w, TEXT_FIELDS)), None)

    def focus_view(self, widget: Widget) -> None:
        """Move the focus to ``widget`` after a run, unless the user is typing in a text field."""
        if not self.in_text_field():
            widget.focus()

    @property
    def active_bindings(self) -> dict[str, ActiveBinding]:
        """Textual's active bindings with the app's own (q quit, ? help, m model) first: the footer
        lists them in this order and cuts what does not fit, so at 80 columns it kept the screen's
        keys and dropped the way out and the way to the key list. Only the order changes."""
        merged = super().active_bindings
        app_first = {key: b for key, b in merged.items() if b.node is self.app}
        return {**app_first, **{key: b for key, b in merged.items() if b.node is not self.app}}

    def _typed_actions(self) -> set[str]:
        """Actions whose every key is typed by a text field: they never act from one."""
        keys: dict[str, list[bool]] = {}
        for _, b in self._bindings:
            keys.setdefault(b.action, []).append(typed_in_fields(b.key) and not b.priority)
        return {a for a, typed in keys.items() if all(typed)}

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.in_text_field() and action in self._typed_actions():
            return False  # the field types the key; the footer must not offer it
        if action == "leave_field":  # esc: while a request runs it cancels, from anywhere
            return self.in_text_field() and not self.jobs
        if action == "switch_pane":
            return bool(self.PANES) and self.narrow()
        if action == "cancel_job":
            return True if self.jobs else (False if self.in_text_field() else None)
        return True

    def action_leave_field(self) -> None:
        view = self.home_view()
        if view is not None:
            self.reveal(view)
            view.focus()
        else:
            self.set_focus(None)

    def on_descendant_focus(self) -> None:
        self.refresh_bindings()  # the footer follows the focus (text field or view)

    def on_descendant_blur(self) -> None:
        self.refresh_bindings()

    # -- engine jobs -------------------------------------------------------------------------
    def progress_sink(self, group: str) -> Any:
        """An ``on_progress`` callback for the engine thread: posts coalescing messages."""
        return lambda event: self.post_message(EngineProgress(group, event))

    async def run_job(self, group: str, job: Job[Any], label: str) -> Any | None:
        """Await ``job`` (call from an exclusive worker). Returns its result, or None when it
        failed or was cancelled; failures become notifications, never exceptions."""
        self.jobs[group] = job
        self.refresh_bindings()
        self.status = f"{label}…"
        try:
            result = await job
        except asyncio.CancelledError:  # superseded by a newer request (exclusive worker) or screen closed
            job.cancel()
            raise
        except Cancelled:
            self.status = f"{label}: cancelled"
            return None
        except LazarusError as exc:
            self.status = f"{label}: failed"
            self.notify(str(exc), title=label, severity="error")
            return None
        except Exception as exc:  # noqa: BLE001  (an engine bug must not crash the app)
            self.status = f"{label}: failed"
            self.notify(f"{type(exc).__name__}: {exc}", title=label, severity="error")
            return None
        finally:
            if self.jobs.get(group) is job:
                del self.jobs[group]
            self.refresh_bindings()
        self.status = f"{label}: done"
        return result

    def action_cancel_job(self) -> None:
        """Esc: cancel every running request of this screen (the engine stops at its next check)."""
        if not self.jobs:
            return
        for job in list(self.jobs.values()):
            job.cancel()
        self.notify("cancelled", timeout=2)


def show_twin(screen: Any, lines: list[str]) -> None:
    """The `b` key: the batch command lines that reproduce ``screen``, in the twin dialog."""
    from lazarus_tui.screens.twin_dialog import TwinDialog

    screen.twin = "\n".join(lines)
    screen.app.push_screen(TwinDialog(lines, screen.TITLE))


def notify_analyze_twin(screen: Any, result: Any, extra: list[str] | None = None) -> None:
    """The `lazarus --batch analyze` line that makes ``result``'s request (plus ``extra`` lines)."""
    from lazarus_tui.batch.analyze import twin_command

    lines = ([twin_command(result.request, result.model_id)] if result is not None else []) + list(extra or [])
    if not lines:
        screen.notify("run a request first", title="batch twin", severity="warning")
        return
    show_twin(screen, lines)
