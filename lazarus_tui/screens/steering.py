"""Steering screen (placeholder until the steering engineer replaces this module)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from lazarus_tui.screens.base import WorkbenchScreen


class SteeringScreen(WorkbenchScreen):
    TITLE = "Steering"
    HELP = """\
# Steering (coming soon)

Extract a direction from contrasting prompt pairs at a layer, then add it (scaled by
a coefficient) to the residual stream while generating. The batch twin is
`lazarus --batch steer`.
"""

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="placeholder"):
            yield Static("[b]Steering[/b] — coming soon", classes="placeholder-title")
            yield Static(
                "Extract a direction from positive/negative prompt pairs at a layer,\n"
                "then add it with a coefficient while generating, and compare the outputs\n"
                "across coefficients.\n\n"
                "Meanwhile: lazarus --batch steer --help"
            )
