"""The batch twin (`b`): the `lazarus --batch …` command lines that reproduce the screen, in a
dialog: shown whole and selectable, `c` copies them (Textual's clipboard, OSC 52), `s` saves
them as an executable shell script in ``twins_dir()`` and says where."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static, TextArea


def twins_dir() -> Path:
    """``$LAZARUS_CACHE/twins`` or ``~/.cache/lazarus/twins``."""
    root = os.environ.get("LAZARUS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "lazarus") / "twins"


def script_text(lines: list[str], title: str) -> str:
    return "#!/bin/sh\n# lazarus batch twin of the " + title + " screen\nset -e\n" + "\n".join(lines) + "\n"


def save_script(lines: list[str], title: str, directory: Path | None = None) -> Path:
    """Write the script atomically (temp file, then rename), executable; returns its path."""
    from engine.fileio import write_atomic

    directory = directory or twins_dir()
    directory.mkdir(parents=True, exist_ok=True)
    slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
    path = directory / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}.sh"
    text = script_text(lines, title)
    write_atomic(path, lambda fh: fh.write(text))
    path.chmod(0o755)
    return path


class TwinDialog(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy", "Copy"),
        Binding("s", "save", "Save as script"),
        Binding("escape,q", "app.pop_screen", "Close"),
    ]
    DEFAULT_CSS = """
    TwinDialog { align: center middle; }
    TwinDialog #twin-box { width: 100%; max-width: 160; height: auto; max-height: 100%; margin: 0 1;
                           border: thick $primary; background: $surface; padding: 0 1; }
    TwinDialog #twin-text { height: auto; max-height: 20; }
    TwinDialog #twin-note { color: $text-muted; height: auto; }
    """

    def __init__(self, lines: list[str], title: str) -> None:
        super().__init__()
        self.lines = list(lines)
        self.title_text = title
        self.saved: Path | None = None

    @property
    def command(self) -> str:
        return "\n".join(self.lines)

    def compose(self) -> ComposeResult:
        with Vertical(id="twin-box"):
            yield Static(f"[b]batch twin[/b] of {self.title_text}: the same request, headless")
            area = TextArea(self.command, read_only=True, soft_wrap=True, show_line_numbers=False, id="twin-text")
            yield area
            yield Static("c copies · s saves a shell script · select with the mouse or shift+arrows · esc closes",
                         id="twin-note")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#twin-text", TextArea).focus()

    def action_copy(self) -> None:
        area = self.query_one("#twin-text", TextArea)
        self.app.copy_to_clipboard(area.selected_text or self.command)
        self.notify("copied to the clipboard", title="batch twin", timeout=3)

    def action_save(self) -> None:
        try:
            self.saved = save_script(self.lines, self.title_text)
        except OSError as exc:
            self.notify(f"could not save: {exc.strerror or exc}", title="batch twin", severity="error")
            return
        self.notify(f"saved {self.saved}", title="batch twin", timeout=8)
