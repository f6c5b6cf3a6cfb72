"""The lens toggle (`t`) shared by the lens and tracking screens: logit lens ↔ tuned lens.

The tuned lens read is ``tuned:FILE`` for the app's ``--lens FILE``, else ``tuned`` (the model's
default file, written by ``lazarus --batch tuned-lens train -m MODEL``). The engine checks the
file's model binding; a refusal comes back as the job's error and the toggle returns to logit.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from textual.widgets import Static


class LensPanel(Static):
    """Which lens is on, and (tuned) the file's model binding."""

    def show(self, spec: str, binding: Any = None) -> None:
        if spec == "logit":
            self.update("lens: [b]logit[/b] (t: tuned lens)")
            return
        if binding is None:
            self.update(f"lens: [b]tuned[/b] {escape(spec)} (t: logit lens)")
            return
        self.update(f"lens: [b]tuned[/b] (t: logit lens)\n{escape(binding.path)}\n"
                    f"trained for {escape(binding.model_id)} · weights {binding.weights_hash}\n"
                    f"{binding.num_layers} layers · hidden {binding.hidden_size} · {binding.dtype}\n"
                    f"{binding.tokens} positions, {binding.steps} steps · {escape(binding.corpus)}")


def tuned_spec(app: Any) -> str:
    path = getattr(app, "lens_file", None)
    return f"tuned:{path}" if path else "tuned"


def toggle_lens(screen: Any) -> None:
    """`t` on ``screen``: its ``lens`` switches (logit ↔ tuned) and its LensPanel shows the new one."""
    screen.lens = tuned_spec(screen.app) if screen.lens == "logit" else "logit"
    screen.query_one(LensPanel).show(screen.lens)
