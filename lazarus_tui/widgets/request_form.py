"""``RequestForm``: a form generated from an analysis request model (``lazarus_tui.analyses``).

One row per request field: a label and an Input (text, numbers, ``a|b`` lists, layer lists),
a Checkbox (bool) or a Select (Literal). ``values()`` returns the raw form values, which
``analyses.build_request`` turns into the request.
"""

from __future__ import annotations

from typing import Any

from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Select

from lazarus_tui.analyses import Analysis, form_fields, hint, initial_text


class RequestForm(VerticalScroll):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.analysis: Analysis | None = None

    async def build(self, analysis: Analysis) -> None:
        """Replace the fields with those of ``analysis``'s request model."""
        self.analysis = analysis
        await self.remove_children()
        rows = []
        for ff in form_fields(analysis):
            wid = f"f-{ff.name}"
            label = ff.name.replace("_", " ")
            if ff.kind == "bool":
                text = analysis.example.get(ff.name, "")
                widget: Any = Checkbox(label, value=bool(text) or bool(ff.default), id=wid)
                rows.append(Horizontal(Label(""), widget, classes="form-row"))
                continue
            if ff.kind == "choice":
                value = initial_text(analysis, ff) or ff.choices[0]
                widget = Select([(c, c) for c in ff.choices], value=value, allow_blank=False, id=wid)
            else:
                widget = Input(initial_text(analysis, ff), placeholder=hint(analysis, ff), id=wid,
                               tooltip=hint(analysis, ff) or None)
            rows.append(Horizontal(Label(label), widget, classes="form-row"))
        await self.mount_all(rows)

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.analysis is None:
            return out
        for ff in form_fields(self.analysis):
            widget = self.query_one(f"#f-{ff.name}")
            out[ff.name] = widget.value
        return out

    def set_value(self, name: str, value: Any) -> None:
        """Fill a field (tests, scripts)."""
        self.query_one(f"#f-{name}").value = value  # type: ignore[attr-defined]
