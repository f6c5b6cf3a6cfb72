"""The header line of every screen: the loaded model's facts and the engine's status."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Static


def describe_model(info: Any, blas: str) -> str:
    if info is None:
        return "no model loaded"
    # first after the family, where a narrow bar still shows it: the model type is not in the test suite
    untested = " [yellow](untested family, checked at load)[/yellow]" if info.family_check else ""
    return (f"[b]{info.model_id}[/b]  {info.family}{untested} · {info.num_layers} layers · hidden {info.hidden_size} · "
            f"vocab {info.vocab_size} · {info.dtype} · {info.device} · BLAS {blas}")


class ModelBar(Horizontal):
    """Reads ``app.model_info`` / ``app.engine_status`` (model loading) and the screen's own
    ``status`` (its requests): one screen's job never shows on another."""

    def compose(self) -> ComposeResult:
        yield Static(id="model-title")
        yield Static(id="model-facts")
        yield Static(id="engine-status")

    def on_mount(self) -> None:
        app: Any = self.app
        self.query_one("#model-title", Static).update(f"[b]lazarus[/b] · {self.screen.TITLE}")  # type: ignore[attr-defined]
        self.watch(app, "model_info", self._info, init=True)
        self.watch(app, "engine_status", self._app_status, init=True)
        if hasattr(self.screen, "status"):
            self.watch(self.screen, "status", self._screen_status, init=True)

    def _info(self, info: Any) -> None:
        self.query_one("#model-facts", Static).update(describe_model(info, getattr(self.app, "blas", "")))

    # The latest news wins: the app's (model loading, engine restarted) or this screen's own job.
    def _app_status(self, status: str) -> None:
        self.query_one("#engine-status", Static).update(status)

    def _screen_status(self, status: str) -> None:
        if status:
            self.query_one("#engine-status", Static).update(status)
