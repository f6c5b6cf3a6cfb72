"""The Textual app: one mode per screen, global bindings, model loading.

The app talks to the engine only through an ``EngineClient`` (or a fake with the same
methods, injected by tests); it never imports MLX.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from lazarus_tui.screens import ScreenEntry, screen_entries
from lazarus_tui.screens.help import HelpScreen, keys_markdown
from lazarus_tui.screens.model_picker import ModelPicker
from lazarus_tui.widgets.messages import EngineDied, EngineProgress


def screenshot_dir() -> Path:
    """Where the palette's Screenshot goes: ``$LAZARUS_CACHE/screenshots`` or ``~/.cache/lazarus/screenshots``."""
    root = os.environ.get("LAZARUS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "lazarus") / "screenshots"


def screen_commands(app: App[Any], screen: Screen) -> Iterable[SystemCommand]:
    """Every binding of ``screen`` as a palette command (reachable whatever has the focus)."""
    seen: set[str] = set()
    for _, b in screen._bindings:  # the merged class BINDINGS
        if b.action in seen or b.action in ("leave_field",):
            continue
        seen.add(b.action)
        title = getattr(screen, "TITLE", "Screen")
        yield SystemCommand(f"{title}: {b.description or b.action}",
                            f"{b.tooltip or b.description} (key {app.get_key_display(b)})",
                            partial(app.run_action, b.action, screen))


class LazarusApp(App[int]):
    TITLE = "lazarus"
    CSS_PATH = "styles/app.tcss"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("m", "pick_model", "Model"),
        # screen keys (see lazarus_tui.screens): digits when no text field has focus,
        # F-keys always (priority), even while typing a prompt
        *(Binding(str(i), f"screen_key('{i}')", show=False) for i in range(1, 10)),
        *(Binding(f"f{i}", f"screen_key('{i}')", show=False, priority=True) for i in range(1, 10)),
    ]

    model_info: reactive[Any] = reactive(None)
    engine_status: reactive[str] = reactive("")

    def __init__(self, engine: Any, *, model: str | None = None, dtype: str | None = None,
                 load_on_start: bool = True, lens_file: str | None = None) -> None:
        super().__init__()
        self.lens_file = lens_file  # the tuned lens the `t` toggle reads (None: the model's default file)
        self.engine = engine
        self.blas = engine.blas()
        self.start_model = model
        self.start_dtype = dtype
        self.load_on_start = load_on_start
        self.entries: list[ScreenEntry] = screen_entries()
        for entry in self.entries:
            self.add_mode(entry.name, entry.screen)

    def on_mount(self) -> None:
        self.switch_mode(self.entries[0].name)
        if hasattr(self.engine, "on_engine_death"):
            self.engine.on_engine_death(lambda reason: self.post_message(EngineDied(reason)))
            self.set_interval(2.0, self.engine.ensure_running)
        if self.load_on_start:
            if hasattr(self.engine, "yield_to_ui"):
                self.engine.yield_to_ui()
            self.load_model(self.start_model, self.start_dtype)

    # -- global actions ----------------------------------------------------------------------
    def action_screen_key(self, key: str) -> None:
        from lazarus_tui.screens.twin_dialog import TwinDialog

        entry = next((e for e in self.entries if e.key == key), None)
        if entry is not None and isinstance(self.screen, TwinDialog):
            self.pop_screen()  # the twin dialog is read-only: a screen key closes it and goes on
        if entry is not None and not isinstance(self.screen, (HelpScreen, ModelPicker)):
            self.switch_mode(entry.name)

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        self.push_screen(HelpScreen(getattr(screen, "HELP", "") or f"# {screen.__class__.__name__}",
                                    keys_markdown(self, screen)))

    def action_pick_model(self) -> None:
        if isinstance(self.screen, ModelPicker):
            return

        def chosen(spec: str | None) -> None:
            if spec:
                self.load_model(spec, None)
        self.push_screen(ModelPicker(), chosen)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for entry in self.entries:
            yield SystemCommand(f"Screen: {entry.title}", f"switch to the {entry.title} screen (key {entry.key})",
                                partial(self.switch_mode, entry.name))
        yield SystemCommand("Load model…", "pick a bundled, cached or local model (key m)", self.action_pick_model)
        yield from screen_commands(self, screen)

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        """The palette's "Screenshot": an SVG in ``screenshot_dir()`` (made if missing); the
        notification says where, or why it could not be written."""
        target = Path(path) if path else screenshot_dir()
        try:
            target.mkdir(parents=True, exist_ok=True)
            saved = self.save_screenshot(filename, str(target), time_format)
        except OSError as exc:
            self.notify(f"could not write to {target}: {exc.strerror or exc}", title="Screenshot", severity="error")
            return None
        self.notify(f"saved {saved}", title="Screenshot", timeout=8)
        return saved

    # -- model loading -----------------------------------------------------------------------
    @work(exclusive=True, group="load-model")
    async def load_model(self, spec: str | None, dtype: str | None) -> None:
        """Load on the engine thread; the UI stays live, the model bar shows progress."""
        name = spec or "default model"
        self.engine_status = f"loading {name}…"
        job = self.engine.load(spec, dtype, on_progress=lambda ev: self.post_message(EngineProgress("load", ev)))
        try:
            info = await job
        except Exception as exc:  # noqa: BLE001  (a failed load is a notification, not a crash)
            self.engine_status = f"load failed: {name}"
            self.notify(str(exc) or type(exc).__name__, title="model load", severity="error", timeout=10)
            return
        self.model_info = info
        self.engine_status = f"ready · loaded in {info.load_seconds:.1f}s"
        # Everything alive now (app, widgets, tokenizer, model wrappers) lives as long as the app:
        # move it out of the collector's reach, so full collections stay short and cannot stall
        # the UI for hundreds of milliseconds while the engine works.
        import gc

        gc.collect()
        gc.freeze()

    def on_engine_died(self, message: EngineDied) -> None:
        self.engine_status = "engine restarted"
        self.notify(f"The engine thread stopped ({message.reason}). A new one was started; "
                    "the request it was running failed, run it again.", title="engine restarted",
                    severity="error", timeout=15)

    def on_engine_progress(self, message: EngineProgress) -> None:
        ev = message.event
        if message.group == "load":
            pct = f" {100 * ev.done // ev.total}%" if ev.total else ""
            self.engine_status = f"loading: {ev.message}{pct}"
