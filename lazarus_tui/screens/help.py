"""``?``: the current screen's help, with its key tables generated from the live bindings.

The prose comes from the screen's ``HELP``; every key table is built here from the screen's
and the app's ``BINDINGS`` and the screen list (``screen_entries``), so the help cannot drift
from what the keys do.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown


def _field_keys() -> set[str]:
    """Keys a text field binds itself (arrows, home, backspace…): they act only outside fields."""
    from textual.widgets import Input

    return {k.strip() for b in Input.BINDINGS if isinstance(b, Binding) for k in b.key.split(",")}


def where(binding: Binding) -> str:
    from lazarus_tui.screens.base import typed_in_fields

    if binding.action == "leave_field":
        return "in text fields, when nothing runs"
    if binding.action == "cancel_job":
        return "everywhere, while a request runs"
    if binding.priority or not (typed_in_fields(binding.key) or binding.key in _field_keys()):
        return "everywhere"
    return "outside text fields (`esc` first)"


def _rows(app: Any, bindings: list[Binding]) -> list[str]:
    rows: dict[str, tuple[list[str], str, str]] = {}
    for b in bindings:
        what = ": ".join(x for x in (b.description, b.tooltip) if x) or b.action
        if b.action.startswith("screen_key") or b.system or not b.description:
            continue
        entry = rows.setdefault(f"{b.action}|{what}", ([], what, where(b)))
        display = app.get_key_display(b)
        if display not in entry[0]:
            entry[0].append(display)
        if entry[2] != where(b):  # several keys, some typed in fields (`c` and `ctrl+r`)
            rows[f"{b.action}|{what}"] = (entry[0], what, "everywhere (the `ctrl` key) / outside text fields")
    return [f"| {' '.join(f'`{k}`' for k in keys)} | {what} | {w} |" for keys, what, w in rows.values()]


def keys_markdown(app: Any, screen: Any) -> str:
    head = ["| key | action | works |", "|---|---|---|"]
    parts: list[str] = []
    screen_rows = _rows(app, [b for _, b in screen._bindings
                              if b.action != "switch_pane" or getattr(screen, "PANES", ())])  # the merged class BINDINGS
    if screen_rows:
        parts += [f"## Keys on {getattr(screen, 'TITLE', 'this screen')}", "", *head, *screen_rows, ""]
    entries = getattr(app, "entries", [])
    everywhere = [f"| {' '.join(f'`{k}`' for k in (e.key, 'f' + e.key))} | {e.title} screen | "
                  f"`f{e.key}` everywhere, `{e.key}` outside text fields |" for e in entries]
    everywhere += _rows(app, [b for _, b in app._bindings])
    parts += ["## Everywhere", "", *head, *everywhere, "",
              ("A text field types every printable key; `esc` leaves it for the screen's main view, "
               "where the single-key actions act. The footer lists the keys that act where the focus is.")]
    return "\n".join(parts)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def __init__(self, text: str, keys: str = "") -> None:
        super().__init__()
        self.text = text
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(self.text + "\n\n" + self.keys)
