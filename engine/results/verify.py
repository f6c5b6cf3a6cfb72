"""Result models of ``verify`` (the hooked forward against the model's own)."""

from __future__ import annotations

from pydantic import computed_field

from engine.results.base import SCHEMA_VERSION, Frozen


class VerifyPrompt(Frozen):
    label: str
    num_tokens: int
    max_abs_diff: float
    passed: bool


class VerifyResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    dtype: str
    tolerance: float
    prompts: list[VerifyPrompt]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.prompts)
