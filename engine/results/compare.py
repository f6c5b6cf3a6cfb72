"""Request and result models of ``compare`` (the logit lens on two models)."""

from __future__ import annotations

from pydantic import Field

from engine.results.base import SCHEMA_VERSION, Frozen, LensSpec, TokenPrediction


class CompareRequest(Frozen):
    kind: str = "compare"
    model1: str | None = None
    model2: str | None = None
    dtype1: str = "auto"
    dtype2: str = "auto"
    prompt: str
    top_k: int = Field(5, ge=1, le=1000)
    track: list[str] = []
    chat: bool = False
    lens1: LensSpec = "logit"  # model 1's lens (AnalysisConfig.lens)
    lens2: LensSpec = "logit"  # model 2's (a tuned lens is bound to one model)


class CompareRow(Frozen):
    depth: float  # relative depth (layer+1)/num_layers of model 1's layer
    layer1: int
    layer2: int
    top1_model1: TokenPrediction
    top1_model2: TokenPrediction
    same_top1: bool | None  # None when tokenizers differ (token ids not comparable; texts compared)
    kl_1_2: float | None  # KL(P1 || P2), only when tokenizers match


class CompareTracked(Frozen):
    token: str
    emergence_model1: int | None
    emergence_model2: int | None
    rank_final_model1: int
    rank_final_model2: int
    prob_final_model1: float
    prob_final_model2: float


class CompareResult(Frozen):
    schema_version: int = SCHEMA_VERSION
    model1_id: str
    model2_id: str
    request: CompareRequest
    num_layers1: int
    num_layers2: int
    alignment: str  # "by layer index" or "by relative depth"
    same_tokenizer: bool
    tokens1: list[str]
    tokens2: list[str]
    final1: list[TokenPrediction]
    final2: list[TokenPrediction]
    rows: list[CompareRow]
    tracked: list[CompareTracked]
    final_kl: float | None
