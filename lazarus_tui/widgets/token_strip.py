"""``TokenStrip``: the prompt's tokens, the lens position highlighted."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class TokenStrip(Static):
    def show(self, tokens: list[str], position: int) -> None:
        text = Text("tokens: ", style="dim")
        for i, t in enumerate(tokens):
            style = "bold reverse" if i == position else ""
            text.append(f"{i}:{t!r}", style=style)
            text.append(" ")
        self.update(text)
