"""Ablation screen (placeholder until the ablation engineer replaces this module)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from lazarus_tui.screens.base import WorkbenchScreen


class AblationScreen(WorkbenchScreen):
    TITLE = "Ablation"
    HELP = """\
# Ablation (coming soon)

Zero a layer's MLP or attention output (or single heads) during generation and see
how the output changes: a sweep over layers, several layers together, or a
pass/fail table over prompts. The batch twin is `lazarus --batch ablate`.
"""

    def compose_body(self) -> ComposeResult:
        with Vertical(classes="placeholder"):
            yield Static("[b]Ablation[/b] — coming soon", classes="placeholder-title")
            yield Static(
                "Zero a layer's MLP / attention output (or single heads) while generating,\n"
                "sweep over layers, and compare each output with the baseline:\n"
                "first diverging token, pass/fail against an expected answer.\n\n"
                "Meanwhile: lazarus --batch ablate --help"
            )
