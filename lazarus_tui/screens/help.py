"""``?``: the current screen's help and its keys, in a modal."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

GLOBAL_KEYS = """
## Everywhere

| key | action |
|---|---|
| `1`–`4` | switch screen (lens, tracking, ablation, steering) when no text field has focus |
| `f1`–`f4` | switch screen, also while typing |
| `ctrl+p` | command palette |
| `m` | pick and load another model |
| `?` | this help |
| `esc` | cancel the running request |
| `q` | quit |
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(self.text + "\n" + GLOBAL_KEYS)
