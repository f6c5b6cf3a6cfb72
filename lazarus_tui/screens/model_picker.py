"""``m``: choose a model (bundled aliases, cached/local files, or a typed path / hub id)."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option


class ModelPicker(ModalScreen[str | None]):
    """Dismisses with the chosen model spec (or None); the app then loads it on the engine thread."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Label("[b]Load a model[/b]  (enter: load · esc: close)")
            yield OptionList(id="picker-list")
            yield Input(placeholder="or a .gguf path, model directory or hub id (org/name)", id="picker-path")

    def on_mount(self) -> None:
        self.fill()

    @work(exclusive=True, group="picker")
    async def fill(self) -> None:
        app: Any = self.app
        rows = await app.engine.list_models()
        current = app.model_info.model_id if app.model_info is not None else None
        opts = []
        for row in rows:
            state = "" if row.get("present") else " (not pulled: fetched on load)"
            mark = "● " if row["name"] == current else "  "
            opts.append(Option(f"{mark}{row['name']}  [dim]{row['kind']} · {row['description']}{state}[/dim]",
                               id=row["name"]))
        ol = self.query_one(OptionList)
        ol.add_options(opts)
        ol.highlighted = 0
        ol.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
