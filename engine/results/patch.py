"""Request and result models of ``patch`` (activation patching)."""

from __future__ import annotations

from pydantic import Field, computed_field

from engine.results.base import SCHEMA_VERSION, Frozen, TokenPrediction


class PatchRequest(Frozen):
    kind: str = "patch"
    model: str | None = None
    source: str
    target: str
    layers: list[int]
    position: str = "last"  # "last", "all" or an integer prompt position
    blend: float = Field(1.0, ge=0.0, le=1.0)  # 1 = replace; a = (1-a)*target + a*source
    top_k: int = Field(5, ge=1, le=1000)
    chat: bool = False


class PatchLayer(Frozen):
    layer: int
    top: list[TokenPrediction]
    source_answer_prob: float
    source_answer_rank: int
    target_answer_prob: float
    target_answer_rank: int
    source_answer_top1: bool


class PatchResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    request: PatchRequest
    source_tokens: list[str]
    target_tokens: list[str]
    source_top: list[TokenPrediction]
    target_top: list[TokenPrediction]
    source_answer: str
    target_answer: str
    layers: list[PatchLayer]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flipped_layers(self) -> list[int]:
        return [pl.layer for pl in self.layers if pl.source_answer_top1]
