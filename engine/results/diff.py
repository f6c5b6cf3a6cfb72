"""Request and result models of the two-model diffs: ``weight-diff`` and ``activation-diff``."""

from __future__ import annotations

from pydantic import computed_field

from engine.results.base import SCHEMA_VERSION, Frozen


class TwoModelRequest(Frozen):
    """The two models a diff reads (None: the current model) and their dtypes."""

    kind: str
    base: str | None = None
    finetuned: str | None = None
    base_dtype: str = "auto"
    finetuned_dtype: str = "auto"


class TwoModelResult(Frozen):
    """The two models a diff read, as loaded."""

    schema_version: int = SCHEMA_VERSION
    base_model_id: str
    finetuned_model_id: str
    base_dtype: str
    finetuned_dtype: str


class WeightDiffRequest(TwoModelRequest):
    kind: str = "weight-diff"
    flag_above: float = 0.1


class MatrixDiff(Frozen):
    layer: int | None  # None for embedding / unembedding / final norm
    matrix: str
    shape: list[int]
    base_norm: float
    diff_norm: float
    relative: float
    flagged: bool


class WeightDiffResult(TwoModelResult):
    request: WeightDiffRequest
    matrices: list[MatrixDiff]
    notes: list[str] = []

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_relative(self) -> float:
        return max((m.relative for m in self.matrices), default=0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flagged_count(self) -> int:
        return sum(m.flagged for m in self.matrices)


class ActivationDiffRequest(TwoModelRequest):
    kind: str = "activation-diff"
    prompts: list[str]
    layers: list[int] | None = None
    chat: bool = False


class PromptActivationDiff(Frozen):
    prompt: str
    cosine_by_layer: dict[int, float]
    relative_l2_by_layer: dict[int, float]  # ||h_b - h_a|| / ||h_a||


class ActivationDiffResult(TwoModelResult):
    request: ActivationDiffRequest
    layers: list[int]
    prompts: list[PromptActivationDiff]
    mean_cosine_by_layer: dict[int, float]
