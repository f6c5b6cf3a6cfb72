"""The common frame of every workbench screen: model bar on top, body, footer.

Screens subclass ``WorkbenchScreen``, set ``TITLE``/``HELP`` and implement
``compose_body``. They compose and wire only: computation lives in ``engine/``
and is reached through ``self.app.engine`` (an ``EngineClient``) as a ``Job``
that ``run_job`` awaits inside a worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer

from engine.errors import Cancelled, LazarusError
from engine.session import Job
from lazarus_tui.widgets.messages import EngineProgress
from lazarus_tui.widgets.model_bar import ModelBar


class WorkbenchScreen(Screen):
    TITLE = "lazarus"
    HELP = ""  # markdown shown by `?`
    BINDINGS = [Binding("escape", "cancel_job", "Cancel", show=True)]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: dict[str, Job[Any]] = {}  # group -> running engine job

    def compose(self) -> ComposeResult:
        yield ModelBar()
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    # -- engine jobs -------------------------------------------------------------------------
    def progress_sink(self, group: str) -> Any:
        """An ``on_progress`` callback for the engine thread: posts coalescing messages."""
        return lambda event: self.post_message(EngineProgress(group, event))

    async def run_job(self, group: str, job: Job[Any], label: str) -> Any | None:
        """Await ``job`` (call from an exclusive worker). Returns its result, or None when it
        failed or was cancelled; failures become notifications, never exceptions."""
        app: Any = self.app
        self.jobs[group] = job
        app.engine_status = f"{label}…"
        try:
            result = await job
        except asyncio.CancelledError:  # superseded by a newer request (exclusive worker) or screen closed
            job.cancel()
            raise
        except Cancelled:
            app.engine_status = f"{label}: cancelled"
            return None
        except LazarusError as exc:
            app.engine_status = f"{label}: failed"
            self.notify(str(exc), title=label, severity="error")
            return None
        except Exception as exc:  # noqa: BLE001  (an engine bug must not crash the app)
            app.engine_status = f"{label}: failed"
            self.notify(f"{type(exc).__name__}: {exc}", title=label, severity="error")
            return None
        finally:
            if self.jobs.get(group) is job:
                del self.jobs[group]
        app.engine_status = f"{label}: done"
        return result

    def action_cancel_job(self) -> None:
        """Esc: cancel every running request of this screen (the engine stops at its next check)."""
        if not self.jobs:
            return
        for job in list(self.jobs.values()):
            job.cancel()
        self.notify("cancelled", timeout=2)


def notify_analyze_twin(screen: Any, result: Any) -> None:
    """Show the `lazarus --batch analyze` line that makes ``result``'s request (the `b` key)."""
    from lazarus_tui.batch.analyze import twin_command

    if result is None:
        screen.notify("run a request first", title="batch twin", severity="warning")
        return
    screen.notify(twin_command(result.request, result.model_id), title="batch twin", timeout=10)
